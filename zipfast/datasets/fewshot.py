"""Dassl's few-shot sampling and base/new class split, reproduced draw for draw.

The official `train.py` seeds Python's global `random` with SEED before the dataset is built;
the dataset then calls `generate_fewshot_dataset` on train (k shots) and on val (min(k, 4)), which
per label, in order of first appearance, takes `random.sample(items, k)` (all items when fewer).
Here the same draws come from a private `random.Random(seed)`, so nothing else in the process
can shift them and the global RNG is left alone.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from zipfast.datasets.records import Datum

SUBSAMPLES = ("all", "base", "new")


def split_by_label(items: Sequence[Datum]) -> dict[int, list[Datum]]:
    """{label: items of that label}, labels in first-appearance order (Dassl's split_dataset_by_label)."""
    groups: dict[int, list[Datum]] = {}
    for d in items:
        groups.setdefault(d.label, []).append(d)
    return groups


def sample_fewshot(items: Sequence[Datum], k: int, rng: random.Random) -> list[Datum]:
    """k items per label drawn from rng exactly as Dassl's generate_fewshot_dataset (repeat=False)."""
    if k < 1:
        return list(items)
    out: list[Datum] = []
    for group in split_by_label(items).values():
        out.extend(rng.sample(group, k) if len(group) >= k else group)
    return out


def draw_fewshot(train: Sequence[Datum], val: Sequence[Datum] | None, k: int, seed: int,
                 before: Callable[[random.Random], None] | None = None):
    """(train k-shot, val min(k, 4)-shot or None) for SEED = seed.

    before(rng): draws the official dataset makes from the global RNG before sampling (SVHN
    shuffles its folders), replayed so the sampling sees the same RNG state.
    """
    rng = random.Random(seed)
    if before is not None:
        before(rng)
    tr = sample_fewshot(train, k, rng)
    va = None if val is None else sample_fewshot(val, min(k, 4), rng)
    return tr, va


def subsample_classes(*splits: Sequence[Datum], subsample: str = "all") -> list[list[Datum]]:
    """Dassl/CoOp's subsample_classes: labels of the first split sorted, the first ⌈n/2⌉ are
    "base", the rest "new"; the chosen part of every split is kept and relabelled from 0."""
    if subsample not in SUBSAMPLES:
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be one of {', '.join(SUBSAMPLES)}; got {subsample!r}")
    if subsample == "all":
        return [list(s) for s in splits]
    labels = sorted({d.label for d in splits[0]})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabel = {y: i for i, y in enumerate(selected)}
    return [[Datum(d.impath, relabel[d.label], d.classname) for d in s if d.label in relabel] for s in splits]
