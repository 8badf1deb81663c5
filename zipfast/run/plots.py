"""The accuracy-vs-queries panel drawn by `zipfast compare` and `zipfast bench-paper`, so both plots
read the same: per method the mean over seeds with a min–max band, zero-shot as a dashed line."""

from __future__ import annotations

import statistics


def step_at(curve, q):
    """Accuracy of the last evaluation at or before q (a step function)."""
    acc = curve[0][1]
    for qq, a in curve:
        if qq > q:
            break
        acc = a
    return acc


def draw_accuracy(ax, curves: dict, zero_shot: dict | None = None) -> None:
    """On a matplotlib Axes: curves {label: [[(queries, acc %), …] per seed]} as the mean over seeds
    with a min–max band; zero_shot {label: acc %} (a method that spends no query) as grey dashed
    lines labelled "<label> (0 queries)". A curve's colour is C<i>, i its position in `curves`,
    so that panels drawn from the same dict agree even where a method has no curve."""
    for i, (label, runs) in enumerate(curves.items()):
        runs = [r for r in runs if r]
        if not runs:
            continue
        qs = sorted({q for r in runs for q, _ in r})
        series = [[step_at(r, q) for q in qs] for r in runs]
        ax.plot(qs, [statistics.fmean(v) for v in zip(*series)], lw=1.8, color=f"C{i}", label=label)
        ax.fill_between(qs, [min(v) for v in zip(*series)], [max(v) for v in zip(*series)],
                        color=f"C{i}", alpha=0.15, lw=0)
    for label, acc in (zero_shot or {}).items():
        ax.axhline(acc, ls="--", lw=1.2, color="grey", label=f"{label} (0 queries)")
    ax.set_xlabel("queries")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
