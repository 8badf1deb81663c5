"""The up-front estimate of a compare grid: each method's pace measured on a throwaway trainer,
then runs × (queries × s/query + evaluations × s/evaluation), and the lines compare prints."""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

from zipfast.config import TrainConfig

SLOW_S = 30 * 60  # a grid estimated longer than this gets a warning line


def calibrate(trainer) -> tuple[float | None, float]:
    """(s per query, None for a method that spends none; s per test evaluation) of a throwaway
    trainer (its own optimiser: the runs' are untouched), timed here.

    A round of K candidates may share work (ZIP's candidates share one minibatch's image features),
    so it is timed as t1 + (K − 1)·(t2 − t1), t1 and t2 the losses of one and of two candidates
    (each on a new minibatch, after a warm-up one: first calls build caches); when one candidate
    takes over 1 s, K·t1 (no sharing assumed; it spares two slow calls). The evaluation is timed
    once; twice for a method that caches the test features (text-side), whose first evaluation
    encodes them. An image-side method puts the test images through its prompted tower every time.
    """
    per_query = None
    if trainer.optimizer is not None:
        trainer.evaluator.prepare(trainer.space)
        cand = trainer.optimizer.ask(trainer.config.budget // trainer.cost)
        if len(cand) == 0:
            cand = trainer.optimizer.point.detach().clone()[None]
        times = []
        for batch, n in ((1, 1), (2, 1), (3, 2)):  # the warm-up, t1, t2
            if batch == 3 and (times[1] > 1.0 or len(cand) == 1):
                break
            t = time.perf_counter()
            trainer.evaluator.losses(trainer.space, cand[:n], batch)
            times.append(time.perf_counter() - t)
        t1 = times[1]
        extra = max(times[2] - t1, 0.0) if len(times) == 3 else t1
        per_query = (t1 + (len(cand) - 1) * extra) / (len(cand) * trainer.cost)
    t = time.perf_counter()
    trainer.evaluate()
    if not trainer.method.needs_images:
        t = time.perf_counter()
        trainer.evaluate()
    return per_query, time.perf_counter() - t


def estimate(cfgs: Sequence[TrainConfig], states: Sequence[str], task_of: Callable, eval_every: int,
             cache: dict) -> dict:
    """Per method: runs to do, runs finished, queries per run and the estimated seconds of the runs to
    do (queries × s/query + evaluations × s/evaluation, calibrate()'d on one seed per method).
    states: each cfg's run state ("finished" ones are not estimated); task_of(cfg) → (model,
    tokenizer, classnames, data), the runs' own (its time is not counted)."""
    from zipfast.run.trainer import Trainer

    rows, spent = {}, 0.0
    for cfg, st in zip(cfgs, states):
        r = rows.setdefault(cfg.method, {"method": cfg.method, "runs": 0, "finished": 0, "queries": cfg.budget,
                                         "cfg": cfg})
        r["runs" if st != "finished" else "finished"] += 1
    for r in rows.values():
        cfg = r.pop("cfg")
        if not r["runs"]:
            r["s_per_query"] = r["seconds"] = None
            continue
        model, tokenizer, classnames, data = task_of(cfg)
        t = time.perf_counter()
        trainer = Trainer(model, classnames, cfg, data, tokenizer=tokenizer, progress=False, cache=cache)
        r["s_per_query"], s_eval = calibrate(trainer)
        spent += time.perf_counter() - t
        if r["s_per_query"] is None:  # nothing to train (zero-shot CLIP): one evaluation
            r["queries"], r["seconds"] = 0, r["runs"] * s_eval
            continue
        evals = math.ceil(cfg.budget / eval_every) + 1  # EvalEvery's points: 0, each crossing, the end
        r["seconds"] = r["runs"] * (cfg.budget * r["s_per_query"] + evals * s_eval)
    return {"rows": list(rows.values()), "calibration_s": spent}


def duration(seconds: float) -> str:
    """seconds as "40 s", "12 min", "2 h 45 min"."""
    if seconds < 60:
        return f"{max(seconds, 1):.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def estimate_lines(est: dict) -> list[str]:
    """The lines compare prints before its first run: per method the runs, queries per run and
    ≈ time; the total; a warning naming the slow methods when the total passes SLOW_S."""
    rows = est["rows"]
    todo = sum(r["runs"] for r in rows)
    done = sum(r["finished"] for r in rows)
    total = sum(r["seconds"] or 0 for r in rows)
    width = max(len(r["method"]) for r in rows)
    lines = [f"zipfast compare: {todo} run{'s' if todo != 1 else ''} to do" + (f", {done} finished (read back)"
             if done else "") + f"; estimated time ≈ {duration(total)}, from a few candidates and a test "
             f"evaluation per method timed here ({est['calibration_s']:.1f} s; the runs' speed varies with the machine's load)"]
    for r in rows:
        line = f"  {r['method']:<{width}}  {r['runs']} run{'s' if r['runs'] != 1 else ''}"
        if r["runs"]:
            line += f" × {r['queries']:,} queries"
        if r["finished"]:
            line += f" (+{r['finished']} finished)"
        if r["seconds"] is not None:
            pace = r["s_per_query"]
            line += f"  ≈ {duration(r['seconds'])}" if r["seconds"] >= 1 else "  < 1 s"
            if pace:
                line += f"  ({pace * 1000:.1f} ms/query)" if pace < 1 else f"  ({pace:.1f} s/query)"
        lines.append(line)
    if total > SLOW_S:
        slow = sorted((r for r in rows if (r["seconds"] or 0) >= 0.2 * total), key=lambda r: -r["seconds"])
        lines.append(f"zipfast compare: warning: this grid is estimated at ≈ {duration(total)}, mostly "
                     + ", ".join(f"{r['method']} (≈ {duration(r['seconds'])})" for r in slow)
                     + "; to shrink it: fewer queries per run (--budget), leave the slow methods out (--methods), "
                       "or fewer seeds (--seeds)")
    return lines
