"""A sweep's selection, tables and plots, from its run records (zipfast.sweep.runner.read_record).

Selection is on the few-shot validation split only (Dassl's min(shots, 4) images per class; the
planted task's own val split): per method, the configuration whose runs' mean validation
accuracy over the seeds is highest, among the configurations whose every seed finished (a
configuration that diverged on a seed is not chosen); ties go to the first in grid order. Its
test accuracy per seed is then reported. The test split never takes part in the choice.

Writes sweep.md (per method: the chosen configuration, its validation and test accuracy per
seed, mean ± std), sweep.csv (one row per configuration, numeric columns) and sweep.png (the
chosen configurations' test-accuracy curves; a heat map of mean validation accuracy over two grid
axes, each cell the best over the other axes).
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Sequence


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def configurations(records: Sequence[dict]) -> list[dict]:
    """One row per (method, configuration) in first-appearance order: its values, seeds, validation
    and test accuracy lists (finished runs), the failed seeds and the mean/std columns."""
    rows: dict[tuple, dict] = {}
    for r in records:
        row = rows.setdefault((r["method"], r["config"]), {"method": r["method"], "config": r["config"],
                                                           "values": r["values"], "seeds": [], "val": [],
                                                           "test": [], "failed": [], "curves": []})
        row["seeds"].append(r["seed"])
        if r.get("error") or r.get("val_acc") is None:
            row["failed"].append(r["seed"])
            continue
        row["val"].append(r["val_acc"])
        row["test"].append(r["test_acc"])
        row["curves"].append(r.get("curve") or [])
    for row in rows.values():
        row["val_mean"], row["val_std"] = _mean_std(row["val"])
        row["test_mean"], row["test_std"] = _mean_std(row["test"])
    return list(rows.values())


def select(rows: Sequence[dict]) -> dict[str, dict]:
    """{method: the chosen configuration's row} (see the module docstring); a method with no
    configuration whose every seed finished is absent."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["failed"] or row["val_mean"] is None:
            continue
        cur = best.get(row["method"])
        if cur is None or row["val_mean"] > cur["val_mean"]:
            best[row["method"]] = row
    return best


def _pm(mean, std) -> str:
    return "–" if mean is None else f"{mean:.1f} ± {std:.1f}"


def markdown(rows: Sequence[dict], chosen: dict[str, dict], wall_s: float | None = None) -> str:
    lines = ["| method | configurations | failed runs | chosen configuration | val acc (%) | test acc per seed (%) "
             "| test acc (%) |", "|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        failed = sum(len(r["failed"]) for r in mine)
        c = chosen.get(method)
        if c is None:
            lines.append(f"| {method} | {len(mine)} | {failed} | none finished on every seed | – | – | – |")
            continue
        values = ", ".join(f"{k}={v}" for k, v in c["values"].items()) or "(defaults)"
        per_seed = ", ".join(f"{s}: {a:.1f}" for s, a in zip([s for s in c["seeds"] if s not in c["failed"]], c["test"]))
        lines.append(f"| {method} | {len(mine)} | {failed} | {values} | {_pm(c['val_mean'], c['val_std'])} | "
                     f"{per_seed} | {_pm(c['test_mean'], c['test_std'])} |")
    if wall_s is not None:
        lines += ["", f"Wall time of this command: {wall_s:.1f} s (runs read back from an earlier command not counted)."]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: Path) -> None:
    keys = sorted({k for r in rows for k in r["values"]})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", *keys, "val_mean", "val_std", "val_n", "test_mean", "test_std", "test_n", "failed"])
        for r in rows:
            w.writerow([r["method"], *(r["values"].get(k, "") for k in keys),
                        *("" if v is None else round(v, 4) for v in (r["val_mean"], r["val_std"])), len(r["val"]),
                        *("" if v is None else round(v, 4) for v in (r["test_mean"], r["test_std"])), len(r["test"]),
                        len(r["failed"])])


def heat_axes(rows: Sequence[dict], method: str, wanted: Sequence[str] | None = None) -> tuple[str, str] | None:
    """The two grid axes of `method` for the heat map: `wanted` if given, else the two with the most
    values (ties: grid order); None when its grid has fewer than two axes of several values."""
    mine = [r for r in rows if r["method"] == method]
    counts: dict[str, set] = {}
    for r in mine:
        for k, v in r["values"].items():
            counts.setdefault(k, set()).add(v)
    if wanted:
        return tuple(wanted) if all(k in counts for k in wanted) else None
    multi = sorted((k for k, vs in counts.items() if len(vs) > 1), key=lambda k: -len(counts[k]))
    return (multi[0], multi[1]) if len(multi) >= 2 else None


def heat_grid(rows: Sequence[dict], method: str, axes: tuple[str, str]):
    """(x values, y values, cells): one row per y value, one column per x value, each the best mean
    validation accuracy over the other axes, or None."""
    mine = [r for r in rows if r["method"] == method and r["val_mean"] is not None and not r["failed"]]
    xs = sorted({r["values"][axes[0]] for r in rows if r["method"] == method})
    ys = sorted({r["values"][axes[1]] for r in rows if r["method"] == method})
    cells = [[None] * len(xs) for _ in ys]
    for r in mine:
        i, j = ys.index(r["values"][axes[1]]), xs.index(r["values"][axes[0]])
        if cells[i][j] is None or r["val_mean"] > cells[i][j]:
            cells[i][j] = r["val_mean"]
    return xs, ys, cells


def plot(rows: Sequence[dict], chosen: dict[str, dict], path: Path, axes: Sequence[str] | None = None) -> bool:
    """sweep.png; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from zipfast.run.plots import draw_accuracy

    methods = list(dict.fromkeys(r["method"] for r in rows))
    heat = [(m, a) for m in methods if (a := heat_axes(rows, m, axes))]
    fig, panels = plt.subplots(1, 1 + len(heat), figsize=(6 + 5 * len(heat), 4.2), squeeze=False)
    ax = panels[0][0]
    curves = {f"{m} (chosen)": [[tuple(p) for p in c] for c in chosen[m]["curves"]] for m in methods if m in chosen}
    draw_accuracy(ax, curves)
    ax.set_title("chosen configuration per method (mean, min–max over seeds)")
    if curves:
        ax.legend(fontsize=8)
    for ax, (m, a) in zip(panels[0][1:], heat):
        xs, ys, cells = heat_grid(rows, m, a)
        data = [[float("nan") if v is None else v for v in row] for row in cells]
        im = ax.imshow(data, origin="lower", cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_yticks(range(len(ys)), [str(y) for y in ys])
        ax.set_xlabel(a[0])
        ax.set_ylabel(a[1])
        for i, row in enumerate(cells):
            for j, v in enumerate(row):
                ax.text(j, i, "×" if v is None else f"{v:.0f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_title(f"{m}: validation accuracy (%), best over the other axes")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(out: Path, records: Sequence[dict], wall_s: float | None = None,
                  axes: Sequence[str] | None = None) -> tuple[list[dict], dict[str, dict], str]:
    """sweep.md, sweep.csv and sweep.png in `out` → (rows, chosen, the markdown table)."""
    from zipfast.io import save_text

    rows = configurations(records)
    chosen = select(rows)
    table = markdown(rows, chosen, wall_s)
    save_text(table, out / "sweep.md")
    write_csv(rows, out / "sweep.csv")
    plot(rows, chosen, out / "sweep.png", axes)
    return rows, chosen, table
