"""Periodic test evaluation during training (`--eval-every N` queries; `zipfast compare`'s curves).

For the text-side methods the test image features are encoded once and cached by the data source,
so one evaluation is one text-tower pass plus a matmul; the image-side methods put the test
images through the prompted image tower (zipfast.evaluate). Points go to `<output dir>/curve.jsonl` (when given)
as {"queries", "step", "test_acc"}; evaluations cost no queries and no training time.
"""

from __future__ import annotations

import json
from pathlib import Path

from zipfast.config import ConfigError
from zipfast.io import save_text
from zipfast.run.rundir import truncate_log


CURVE_FILE = "curve.jsonl"


class EvalEvery:
    """A trainer step hook: evaluate at the start, when the query count crosses a multiple of
    `every`, and at the end. The run loop (zipfast.run.loop.BudgetedRun) calls `on_start` once it holds
    the run directory and `on_end` when the budget is spent."""

    def __init__(self, every: int, output_dir=None, resume_point: bool = True):
        """resume_point: on a resume, evaluate again at the resumed query count (`train --resume`: the
        curve shows where it resumed); False keeps the points the file holds up to that count and adds
        none, so a resumed curve equals the uninterrupted one (`zipfast compare`)."""
        if every < 1:
            raise ConfigError(f"--eval-every must be at least 1 query, got {every}")
        self.every, self.resume_point = every, resume_point
        self.path = Path(output_dir) / CURVE_FILE if output_dir else None
        self.points: list[dict] = []
        self._bucket = 0

    def _record(self, trainer, test_acc: float | None = None) -> None:
        acc = trainer.evaluate() if test_acc is None else test_acc
        point = {"queries": trainer.queries, "step": trainer.step, "test_acc": round(acc, 4)}
        self.points.append(point)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(point) + "\n")

    def on_start(self, trainer) -> None:
        """The point before training (0 queries, or the resumed count). The file starts afresh on a
        fresh run and is cut back to the resumed step on a resume, like log.jsonl."""
        if self.path is not None and self.path.exists():
            if trainer.queries == 0:
                save_text("", self.path)
            elif self.resume_point:
                # by queries, not step: BPT-VLM's partial last generation shares its step with the one before
                truncate_log(self.path, trainer.queries - 1, key="queries")  # the start point re-records it
            else:
                # the point at the checkpoint's count, if any, was recorded before the stop: keep it
                truncate_log(self.path, trainer.queries, key="queries")
                self.points = read_curve(self.path.parent)
                self._bucket = trainer.queries // self.every
                return
        self._bucket = trainer.queries // self.every
        self._record(trainer)

    def due(self, trainer) -> bool:
        """Whether this round's end is a point (the query count crossed a multiple of `every`): a fused
        step (zipfast.run.trainer) reads its record, and so calls the hooks, only then."""
        return trainer.queries // self.every > self._bucket

    def __call__(self, trainer, record: dict) -> None:
        bucket = trainer.queries // self.every
        if bucket > self._bucket:
            self._bucket = bucket
            self._record(trainer)

    def on_end(self, trainer, test_acc: float) -> None:
        """The final point (whatever the method's last step size) from the run's final evaluation,
        unless just recorded."""
        if not self.points or self.points[-1]["queries"] != trainer.queries:
            self._record(trainer, test_acc)


def read_curve(output_dir) -> list[dict]:
    path = Path(output_dir) / CURVE_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
