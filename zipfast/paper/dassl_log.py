"""`log.txt` in Dassl's format, so CoOp's and Dassl's `parse_test_res.py` aggregate zipfast runs.

Dassl tees stdout into `<output dir>/log.txt` (a new `log.txt-<time>` when one exists) and its
classification evaluator prints the block

    => result
    * total: 1,000
    * correct: 812
    * accuracy: 81.2%
    * error: 18.8%
    * macro_f1: 80.9%

after "Finish training" for a trained run or alone for an --eval-only run. "Finish training" is
the official trainer's line (Dassl ≥ 0.6.1) and the end signal of CoOp's parse_test_res.py
since its commit 859f068 and of Dassl's tools/parse_test_res.py. Older copies of those scripts
wait for "Finished training" (Dassl ≤ 0.6.0) and find nothing in the official logs or these;
their --test-log mode (end signal "=> result") reads both kinds of log.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import torch

# parse_test_res.py's pattern for a metric keyword (the official default keyword is "accuracy").
RESULT_REGEX = r"\* {keyword}: ([\.\deE+-]+)%"
END_TRAINING = "Finish training"
END_TEST = "=> result"


def metric_regex(keyword: str = "accuracy") -> re.Pattern:
    return re.compile(RESULT_REGEX.format(keyword=keyword))


def macro_f1(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Macro F1 (%) over the labels present in `true` (sklearn's f1_score(average="macro", labels=unique(true)))."""
    labels = torch.unique(true)
    f1 = []
    for c in labels.tolist():
        tp = int(((pred == c) & (true == c)).sum())
        fp = int(((pred == c) & (true != c)).sum())
        fn = int(((pred != c) & (true == c)).sum())
        f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return 100.0 * sum(f1) / max(len(f1), 1)


def result_block(pred: torch.Tensor, true: torch.Tensor) -> tuple[str, float]:
    """(Dassl's evaluator block, accuracy in %) for predictions and labels [M]."""
    total, correct = int(true.numel()), int((pred == true).sum())
    acc = 100.0 * correct / total
    text = ("=> result\n"
            f"* total: {total:,}\n"
            f"* correct: {correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {100.0 - acc:.1f}%\n"
            f"* macro_f1: {macro_f1(pred, true):.1f}%")
    return text, acc


class DasslLog:
    """Lines written to `<dir>/log.txt` (Dassl's naming) and echoed to stdout."""

    def __init__(self, output_dir, echo: bool = True):
        self.path = None
        self.echo = echo
        if output_dir:
            d = Path(output_dir)
            d.mkdir(parents=True, exist_ok=True)
            path = d / "log.txt"
            if path.exists():  # Dassl's setup_logger keeps the old log and starts a dated one
                path = d / ("log.txt" + time.strftime("-%Y-%m-%d-%H-%M-%S"))
            self.path = path
            self._f = open(path, "a", encoding="utf-8")
        self.start = time.time()

    def __call__(self, text: str = "") -> None:
        if self.echo:
            print(text, file=sys.stdout, flush=True)
        if self.path is not None:
            self._f.write(text + "\n")
            self._f.flush()

    def elapsed(self) -> None:
        secs = int(round(time.time() - self.start))
        self(f"Elapsed: {secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}")

    def close(self) -> None:
        if self.path is not None:
            self._f.close()
