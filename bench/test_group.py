"""Run groups on the CPU (zipfast.run.group.RunGroup): one group round of R ZIP runs vs a run's round alone.

Runs are built by bench/group_workload.py as `zipfast train` builds them (Trainer → run.task.fit),
with one shared cache dict; they differ only in the SPSA step size (same data seed, so they share
every minibatch). K = 10 candidates per run and round. Groups:

  group-image     the real step: random-init ViT-B/16 (`load_clip("ViT-B-16", "none", seed=0)`), a
                  generated 10-class folder of 224 px images (130 training images), feature_bank = 0
                  (every round encodes its minibatch: the image pass the group shares), fp32.
                  Cases: one run's round alone, group rounds of R = 1, 4, 16. Ratio of interest:
                  group(R) / alone (target on the 2-core CPU: R = 16 ≤ 1.3×).
                  Default: minibatches of 16 images (one ViT-B/16 round ≈ 15-20 s on 2 busy cores).
                  ZIPFAST_BENCH_FULL=1: minibatches of 128 images (one round ≈ 2.5 min there; the
                  file then takes ≈ 15 min). Either way one pedantic round per case: quote ratios,
                  never a single median, and only within one run.
  group-planted   text only, the planted task's tower (4 layers, 256 wide, 128 cached features):
                  group round of R = 1, 4, 16, 64 vs the sum of the same R runs' rounds alone
                  (each run's own round in turn).
  group-features  text only, the ViT-B/16 text tower with cached image features (a FeatureSource,
                  128 × 512): alone (one run) and group rounds of R = 1, 4, 16; the sum alone is R ×
                  the one run's median (the runs' work is identical).

Nothing here asserts a timing. The launch count of the group's text pass (deterministic) is
asserted by tests/engine/test_group_launches.py. Run:

    PYTHONPATH=$PWD python -m pytest bench/test_group.py -q --benchmark-json=bench/results/group-<date>.json
    python bench/group_report.py bench/results/group-<date>.json     # the markdown table
"""

from __future__ import annotations

import pytest
import torch

import group_workload as W
from zipfast.models import load_clip


@pytest.fixture(scope="module")
def vit():
    """(model, tokenizer): random-init ViT-B/16, seeded; one small image pass to warm the kernels."""
    model, tok, _ = load_clip("ViT-B-16", "none", seed=0)
    with torch.no_grad():
        model.encode_image(torch.zeros(2, 3, 224, 224))
    return model, tok


@pytest.fixture(scope="module")
def folder():
    return W.image_folder()


@pytest.fixture(scope="module")
def planted():
    """R → R planted runs (built once per R: both modes time the same runs; building 64 takes a while)."""
    built = {}

    def get(R):
        if R not in built:
            built[R] = W.planted_trainers(R)
        return built[R]
    return get


def _record(benchmark, fn, rounds, warmup, **info):
    benchmark.extra_info.update(K=10, **info)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["median_s"] = benchmark.stats.stats.median


# --------------------------------------------------------------------------- the real step


@pytest.mark.benchmark(group="group-image")
@pytest.mark.parametrize("case", ["alone", "R=1", "R=4", "R=16"])
def test_group_image(benchmark, vit, folder, case):
    model, tok = vit
    if case == "alone":
        fn, R, extra = W.AloneRounds(W.image_trainers(1, model, tok, folder)), 1, {}
    else:
        R = int(case[2:])
        fn = W.GroupRound(W.image_trainers(R, model, tok, folder))
        extra = dict(text_engines=fn.text_engines, sources=fn.sources)
    _record(benchmark, fn, 1, 0, kind="image", mode="alone" if case == "alone" else "group", R=R,
            images_per_batch=W.IMAGE_BATCH, full=W.FULL, **extra)


# --------------------------------------------------------------------------- text only


@pytest.mark.benchmark(group="group-planted")
@pytest.mark.parametrize("mode", ["group", "alone-sum"])
@pytest.mark.parametrize("R", [1, 4, 16, 64])
def test_group_planted(benchmark, planted, R, mode):
    trainers = planted(R)
    fn = W.GroupRound(trainers) if mode == "group" else W.AloneRounds(trainers)
    rounds = max(3, 60 // R)
    extra = dict(text_engines=fn.text_engines, sources=fn.sources) if mode == "group" else {}
    _record(benchmark, fn, rounds, 1, kind="planted", mode=mode, R=R, **extra)


@pytest.mark.benchmark(group="group-features")
@pytest.mark.parametrize("case", ["alone", "R=1", "R=4", "R=16"])
def test_group_features(benchmark, vit, case):
    model, tok = vit
    data = W.feature_data()
    if case == "alone":
        fn, R, extra, rounds = W.AloneRounds(W.feature_trainers(1, model, tok, data)), 1, {}, 3
    else:
        R = int(case[2:])
        fn = W.GroupRound(W.feature_trainers(R, model, tok, data))
        extra, rounds = dict(text_engines=fn.text_engines, sources=fn.sources), (3 if R == 1 else 1)
    _record(benchmark, fn, rounds, 1 if R == 1 else 0, kind="features", mode="alone" if case == "alone" else "group",
            R=R, **extra)
