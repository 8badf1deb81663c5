"""The paper's tables from run folders (accuracy read from log.txt with the official regex), and
accuracy-vs-queries plots from the periodic evaluations."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from zipfast.paper.dassl_log import END_TEST, END_TRAINING, metric_regex
from zipfast.run.hooks import read_curve


def read_accuracy(output_dir) -> float | None:
    """The test accuracy of a run folder's log.txt as parse_test_res.py reads it (the last
    `* accuracy: X%` after "Finish training" or, for an eval-only run, "=> result")."""
    path = Path(output_dir) / "log.txt"
    if not path.is_file():
        return None
    regex, good, value = metric_regex("accuracy"), False, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line in (END_TRAINING, END_TEST):
            good = True
        m = regex.search(line)
        if m and good:
            value = float(m.group(1))
    return value


def mean_std(values) -> tuple[float, float] | None:
    """(mean, population std) as parse_test_res.py (np.std); None when there is nothing."""
    vals = [v for v in values if v is not None]
    return (float(np.mean(vals)), float(np.std(vals))) if vals else None


def fmt(ms) -> str:
    return "–" if ms is None else f"{ms[0]:.1f} ± {ms[1]:.1f}"


def harmonic(b: float, n: float) -> float:
    return 0.0 if b + n == 0 else 2 * b * n / (b + n)


class Table:
    """A header and rows of cells; rendered as markdown and CSV."""

    def __init__(self, title: str, header: list[str]):
        self.title, self.header, self.rows = title, header, []

    def add(self, row: list) -> None:
        self.rows.append([str(c) for c in row])

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.header)
        w.writerows(self.rows)
        return buf.getvalue()

    def write(self, folder, stem: str) -> tuple[Path, Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        md, cs = folder / f"{stem}.md", folder / f"{stem}.csv"
        md.write_text(self.markdown())
        cs.write_text(self.csv())
        return md, cs


def average_row(cells: list) -> tuple[float, float] | None:
    """Mean over datasets of the per-dataset means (the paper's Average column), std over seeds of
    the per-seed averages when every dataset has every seed."""
    means = [c[0] for c in cells if c is not None]
    return (float(np.mean(means)), float("nan")) if means and len(means) == len(cells) else None


def fmt_avg(avg) -> str:
    return "–" if avg is None else (f"{avg[0]:.1f}" if math.isnan(avg[1]) else f"{avg[0]:.1f} ± {avg[1]:.1f}")


def plot_curves(curves: dict, path, title: str) -> Path | None:
    """curves {dataset: {method: [[(queries, acc), …] per seed]}} → one PNG, a panel per dataset,
    mean over seeds with a min–max band."""
    curves = {d: m for d, m in curves.items() if any(any(runs) for runs in m.values())}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, (dataset, methods) in zip(axes.flat, curves.items()):
        for method, runs in methods.items():
            runs = [r for r in runs if r]
            if not runs:
                continue
            q = sorted({p[0] for r in runs for p in r})
            ys = np.array([np.interp(q, [p[0] for p in r], [p[1] for p in r]) for r in runs])
            ax.plot(q, ys.mean(0), label=method)
            if len(runs) > 1:
                ax.fill_between(q, ys.min(0), ys.max(0), alpha=0.2)
        ax.set_title(dataset)
        ax.set_xlabel("queries")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curve_points(output_dir) -> list[tuple[int, float]]:
    return [(p["queries"], p["test_acc"]) for p in read_curve(output_dir)]
