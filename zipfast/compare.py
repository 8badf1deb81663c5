"""`zipfast compare`: several methods × seeds on one task, the same query budget for all.

Each run is an ordinary `ZIPTrainer` run of one method (zipfast.methods); a step hook
evaluates test accuracy on the optimiser's current point every `eval_every` queries
(cheap: the test image features are cached, one text pass per evaluation). Writes, in
the output directory:

- compare.png: test accuracy vs queries, mean over seeds with a min–max band per method
  (zero-shot CLIP, 0 queries, as a horizontal line);
- compare.md / compare.csv: per method, final test accuracy mean ± std over seeds, the
  queries to first reach each target accuracy (at the evaluation granularity; mean over
  the seeds that reached it, and how many did), training wall time and queries/s;
- runs.jsonl: one record per run (method, seed, report, curve).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

from .config import TrainConfig

DEFAULT_METHODS = ("zip", "sharpzo", "zo-sgd", "zsclip")


class EvalCurve:
    """Step hook: (queries, test accuracy %) at 0 and each time `every` more queries are spent."""

    def __init__(self, every: int):
        self.every, self.points, self.eval_s = every, [], 0.0
        self._next = every

    def start(self, trainer) -> None:
        self._eval(trainer, 0)

    def _eval(self, trainer, queries: int) -> None:
        t = time.perf_counter()
        self.points.append((queries, trainer.evaluate()))
        self.eval_s += time.perf_counter() - t

    def __call__(self, trainer, rec: dict) -> None:
        if rec["queries"] >= self._next:
            self._eval(trainer, rec["queries"])
            while self._next <= rec["queries"]:
                self._next += self.every

    def finish(self, trainer, final_acc: float) -> None:
        if not self.points or self.points[-1][0] != trainer.queries:
            self.points.append((trainer.queries, final_acc))


def first_reach(points, target: float):
    """Queries of the first evaluation with accuracy ≥ target, or None."""
    return next((q for q, acc in points if acc >= target), None)


def run_one(cfg: TrainConfig, build_run: Callable, eval_every: int, progress: bool, cache: dict | None = None) -> dict:
    from .trainer import ZIPTrainer

    # The frozen model and the task do not depend on the method; on the planted task not on the seed either.
    key = (cfg.model, cfg.pretrained, cfg.dataset, cfg.shots, cfg.test_per_class, cfg.context_tokens,
           None if cfg.dataset.startswith("planted") else cfg.seed)
    cache = {} if cache is None else cache
    if key not in cache:
        cache[key] = build_run(cfg)
    model, tokenizer, classnames, data = cache[key]
    trainer = ZIPTrainer(model, classnames, cfg, data, tokenizer=tokenizer, progress=progress)
    curve = EvalCurve(eval_every)
    curve.start(trainer)
    trainer.step_hooks.append(curve)
    report = trainer.fit()
    curve.finish(trainer, report["test_acc"])
    train_s = max(report["wall_time_s"] - curve.eval_s, 0.0)  # the hook's evaluations are not training
    return {"method": cfg.method, "seed": cfg.seed, "test_acc": report["test_acc"], "queries": report["queries"],
            "steps": report["steps"], "train_s": round(train_s, 3), "curve": curve.points,
            "report": {k: report[k] for k in ("param_dim", "backend", "precision", "device", "template")}}


def compare(base: TrainConfig, build_run: Callable, methods: Sequence[str] = DEFAULT_METHODS,
            seeds: Sequence[int] = (1, 2, 3), eval_every: int = 250, targets: Sequence[float] = (50, 60, 70),
            method_options: dict | None = None, output_dir=None, progress: bool = True) -> list[dict]:
    """Run every method × seed with base's task, model and budget; write the outputs; return the runs.

    method_options: {method: {option: value}}. build_run(cfg) → (model, tokenizer, classnames, data).
    """
    method_options = method_options or {}
    cfgs = [dataclasses.replace(base, method=m, seed=s, method_options=dict(method_options.get(m, {})),
                                output_dir="").validate() for m in methods for s in seeds]
    runs, cache = [], {}
    for i, cfg in enumerate(cfgs, 1):
        if progress:
            print(f"[{i}/{len(cfgs)}] {cfg.method} seed {cfg.seed}", flush=True)
        runs.append(run_one(cfg, build_run, eval_every, progress, cache))
    rows = summarise(runs, methods, targets)
    if output_dir is not None:
        write_outputs(Path(output_dir), runs, rows, targets, base)
    return runs


def summarise(runs: list[dict], methods: Sequence[str], targets: Sequence[float]) -> list[dict]:
    rows = []
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        accs = [r["test_acc"] for r in rs]
        row = {"method": m, "seeds": len(rs), "test_acc_mean": statistics.fmean(accs),
               "test_acc_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
               "queries": rs[0]["queries"] if rs else 0,
               "train_s_mean": statistics.fmean(r["train_s"] for r in rs)}
        row["queries_per_s"] = (row["queries"] / row["train_s_mean"]) if row["train_s_mean"] > 0 else None
        for t in targets:
            reached = [q for q in (first_reach(r["curve"], t) for r in rs) if q is not None]
            row[f"q_to_{t:g}"] = statistics.fmean(reached) if reached else None
            row[f"n_reached_{t:g}"] = len(reached)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], targets: Sequence[float]) -> str:
    head = ["method", "test acc % (mean ± std)"] + [f"queries to {t:g} %" for t in targets] + \
        ["queries", "train time s", "queries/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"{r['test_acc_mean']:.1f} ± {r['test_acc_std']:.1f}"]
        for t in targets:
            q, n = r[f"q_to_{t:g}"], r[f"n_reached_{t:g}"]
            cells.append("–" if q is None else f"{q:.0f} ({n}/{r['seeds']})")
        qps = r["queries_per_s"]
        cells += [str(r["queries"]), f"{r['train_s_mean']:.1f}", "–" if not qps else f"{qps:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], methods: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        if rs[0]["queries"] == 0:
            acc = statistics.fmean(r["test_acc"] for r in rs)
            ax.axhline(acc, ls="--", lw=1.2, color="grey", label=f"{m} (0 queries)")
            continue
        qs = sorted({q for r in rs for q, _ in r["curve"]})
        series = [[_at(r["curve"], q) for q in qs] for r in rs]
        mean = [statistics.fmean(v) for v in zip(*series)]
        line, = ax.plot(qs, mean, lw=1.8, label=m)
        ax.fill_between(qs, [min(v) for v in zip(*series)], [max(v) for v in zip(*series)],
                        color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("queries")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _at(curve, q):
    """Accuracy of the last evaluation at or before q (a step function)."""
    acc = curve[0][1]
    for qq, a in curve:
        if qq > q:
            break
        acc = a
    return acc


def write_outputs(out: Path, runs, rows, targets, base: TrainConfig) -> None:
    from .io import save_text

    out.mkdir(parents=True, exist_ok=True)
    methods = [r["method"] for r in rows]
    save_text("".join(json.dumps(r) + "\n" for r in runs), out / "runs.jsonl")
    save_text(markdown_table(rows, targets), out / "compare.md")
    with open(out / "compare.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "compare.csv.tmp").replace(out / "compare.csv")
    seeds = sorted({r["seed"] for r in runs})
    title = f"{base.dataset or 'task'}: test accuracy vs queries ({len(seeds)} seeds, mean and min–max)"
    plot(runs, methods, out / "compare.png", title)
