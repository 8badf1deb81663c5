"""The text pass of a run group (`BatchedEngine.text_features_many`) launches as many operators for R
runs as for one run, per chunk: its launch count does not grow with R (bench/test_group.py times it).

A launch is a leaf aten operator the CPU profiler records (one kernel on a GPU), view operators
excepted (as_strided, view, ...: metadata only, no kernel; the R runs' inputs are cut apart
by R views). Workload: the planted tower (4 layers, 256 wide), 10 classes, m = 4, K = 10
candidates per run, fp32. Counts measured: 254 launches for R = 1, 4, 16 in one chunk
(661 leaf operators with the views); with the default chunks R = 4 takes 505 (2 chunks).

The pass is cut into chunks of about `chunk_tokens` token rows (2048 by default, a CPU cache
rule, also used on CUDA): with the default, R·K candidates take ceil(R·K / 34) chunks here
(R = 1: 1, 4: 2, 16: 5), each chunk costing the same launches as one run's whole pass.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from zipfast.data.planted import make_planted_task, planted_model
from zipfast.engine.batched import make_engine
from zipfast.engine.towers import ClassPrompts, TextTower

VIEWS = {"aten::as_strided", "aten::view", "aten::_reshape_alias", "aten::alias", "aten::_unsafe_view",
         "aten::slice", "aten::select", "aten::narrow", "aten::expand", "aten::permute", "aten::transpose",
         "aten::t", "aten::unsqueeze", "aten::squeeze", "aten::split", "aten::split_with_sizes", "aten::detach",
         "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg"}
K = 10


def _inside_cat(ev) -> bool:
    anc = ev.cpu_parent
    while anc is not None:
        if anc.name == "aten::cat":
            return True
        anc = anc.cpu_parent
    return False


def launches(fn) -> int:
    """Leaf aten operators (no aten operator inside) that are not views, in one call of fn; aten::cat
    counts as one launch whatever the profiler records inside it (a leaf for one input, views for several)."""
    fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for ev in prof.events()
               if ev.name.startswith("aten::") and ev.name not in VIEWS and not _inside_cat(ev)
               and (ev.name == "aten::cat" or not any(c.name.startswith("aten::") for c in ev.cpu_children)))


@pytest.fixture(scope="module")
def planted():
    torch.manual_seed(0)
    model, tok = planted_model(0)
    tower = TextTower(model)
    task = make_planted_task(tower, tok, n_ctx=4, shots=16, test_per_class=2, seed=0)
    return tower, ClassPrompts.build(tower, tok, task.classnames, 4)


def _contexts(tower, R):
    g = torch.Generator().manual_seed(R)
    return [0.02 * torch.randn(K, 4, tower.width, generator=g) for _ in range(R)]


def test_text_pass_launches_do_not_grow_with_runs(planted):
    """One chunk (chunk_tokens large enough for every run's rows): R = 4 and 16 launch what R = 1 does."""
    tower, prompts = planted
    engine = make_engine("torch-batched", tower, prompts, "fp32", chunk_tokens=1 << 20)
    counts = {R: launches(lambda c=_contexts(tower, R): engine.text_features_many(c)) for R in (1, 4, 16)}
    assert counts[1] > 0
    assert counts[4] == counts[1] and counts[16] == counts[1], counts
    # one run's own pass (text_features) launches the same but the cat of the runs' contexts
    assert launches(lambda c=_contexts(tower, 1)[0]: engine.text_features(c)) == counts[1] - 1


def test_text_pass_launches_per_chunk(planted):
    """Default chunking: R runs launch what ONE pass over their R·K candidates launches (+ the cat of
    the runs' contexts): the count follows the chunks of R·K candidates, never the runs."""
    tower, prompts = planted
    engine = make_engine("torch-batched", tower, prompts, "fp32")
    seq = engine.S if engine.shared_prefix else engine.T
    per_chunk = max(1, engine._rows() // (seq * prompts.n_cls))
    counts = {}
    for R in (1, 4, 16):
        ctxs = _contexts(tower, R)
        counts[R] = launches(lambda c=ctxs: engine.text_features_many(c))
        joined = torch.cat(ctxs)
        one_pass = launches(lambda: engine._pass(joined, per_chunk, prompts.n_cls))
        assert counts[R] == one_pass + 1, (R, counts[R], one_pass)
    assert counts[1] < counts[4] < counts[16]  # 1, 2 and 5 chunks of 34 candidates here
    assert [math.ceil(R * K / per_chunk) for R in (1, 4, 16)] == [1, 2, 5]
