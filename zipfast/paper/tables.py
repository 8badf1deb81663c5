"""The paper's tables from run folders (accuracy read from log.txt with the official regex), and
accuracy-vs-queries plots from the periodic evaluations."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from zipfast.paper.dassl_log import END_TEST, END_TRAINING, metric_regex
from zipfast.run.hooks import read_curve
from zipfast.run.plots import draw_accuracy


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


class Stat(NamedTuple):
    """A table cell's numbers: the mean, the population std over seeds (None where the paper gives
    none: Average, H) and how many values it summarises (seeds; datasets for Average)."""

    mean: float
    std: float | None = None
    n: int | None = None


def mean_std(values) -> Stat | None:
    """(mean, population std, count) as parse_test_res.py (np.std); None when there is nothing."""
    vals = [v for v in values if v is not None]
    return Stat(float(np.mean(vals)), float(np.std(vals)), len(vals)) if vals else None


def fmt(ms) -> str:
    """A cell as the tables show it: mean ± std, the mean alone where there is no std, – where no value."""
    if ms is None:
        return "–"
    return f"{ms[0]:.1f}" if ms[1] is None or math.isnan(ms[1]) else f"{ms[0]:.1f} ± {ms[1]:.1f}"


def harmonic(b: float, n: float) -> float:
    return 0.0 if b + n == 0 else 2 * b * n / (b + n)


def _number(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(round(v, 4))


class Table:
    """A header and rows: `labels` text columns, then accuracy columns whose cells are Stat or None.
    Markdown shows the formatted cells; the CSV adds X_mean, X_std, X_n after each accuracy column X,
    as plain numbers (an empty cell where there is none)."""

    def __init__(self, title: str, header: list[str], labels: int = 1):
        self.title, self.header, self.labels, self.cells = title, header, labels, []

    def add(self, row: list) -> None:
        self.cells.append(list(row))

    @property
    def rows(self) -> list[list[str]]:
        """The formatted cells (as markdown shows them)."""
        return [[str(c) for c in r[:self.labels]] + [fmt(c) for c in r[self.labels:]] for r in self.cells]

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.header[:self.labels] + [f"{h}{s}" for h in self.header[self.labels:]
                                                 for s in ("", "_mean", "_std", "_n")])
        for cells, text in zip(self.cells, self.rows):
            numbers = [[t] + ([""] * 3 if c is None else [_number(c[0]), _number(c[1]), _number(c[2])])
                       for c, t in zip(cells[self.labels:], text[self.labels:])]
            w.writerow(text[:self.labels] + [v for group in numbers for v in group])
        return buf.getvalue()

    def write(self, folder, stem: str) -> tuple[Path, Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        md, cs = folder / f"{stem}.md", folder / f"{stem}.csv"
        md.write_text(self.markdown())
        cs.write_text(self.csv())
        return md, cs


def average_row(cells: list) -> Stat | None:
    """The paper's Average column: the mean over datasets of the per-dataset means, when every
    dataset has one (n: the datasets; no std, as in the paper)."""
    means = [c[0] for c in cells if c is not None]
    return Stat(float(np.mean(means)), None, len(means)) if means and len(means) == len(cells) else None


def plot_curves(curves: dict, path, title: str, zero_shot: dict | None = None) -> Path | None:
    """curves {dataset: {method: [[(queries, acc), …] per seed]}} → one PNG, a panel per dataset drawn as
    `zipfast compare` draws its plot (zipfast.run.plots), with zero_shot {dataset: {method: acc}} as
    dashed lines; one legend for all panels. None when no run recorded a curve."""
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
    legend = {}
    for ax, (dataset, methods) in zip(axes.flat, curves.items()):
        draw_accuracy(ax, methods, (zero_shot or {}).get(dataset))
        ax.set_title(dataset)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    # one legend for all panels, outside them as compare's is outside its axes: no curve hidden
    fig.legend(list(legend.values()), list(legend), fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def curve_points(output_dir) -> list[tuple[int, float]]:
    return [(p["queries"], p["test_acc"]) for p in read_curve(output_dir)]
