"""Run groups on CUDA (`make bench-gpu`): the grid of bench/test_group.py on a GPU.

Skipped without a CUDA device: nothing here has run on a GPU on the project's machines.
Same workloads (bench/group_workload.py) with device "cuda", fp32, each round synchronised:
  gpu group-image     ViT-B/16 (random init), generated 10-class 224 px folder, minibatches of
                      128 images, feature_bank = 0: one run's round alone vs group rounds R = 1, 4, 16
  gpu group-planted   planted tower: group round vs the sum of the runs' rounds alone, R = 1, 4, 16, 64
  gpu group-features  ViT-B/16 text tower, cached features: alone vs group R = 1, 4, 16
  gpu group-fused     planted tower, the fused CUDA-graph steps: the group's ONE captured group
                      step vs the sum of each run's own captured step alone, R = 1, 4, 16, 64
The other cases time the plain rounds (the fused step switched off, alone and in the group).
Results: bench/results/gpu.json; `python bench/group_report.py` renders them.
"""

from __future__ import annotations

import pytest
import torch

import group_workload as W

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: run-group GPU timings need a GPU (run `make bench-gpu` on one)")


@pytest.fixture(scope="module")
def vit():
    from zipfast.models import load_clip

    model, tok, _ = load_clip("ViT-B-16", "none", seed=0)
    return model, tok


@pytest.fixture(scope="module")
def folder():
    return W.image_folder()


def _record(benchmark, fn, rounds, **info):
    benchmark.extra_info.update(K=10, device=torch.cuda.get_device_name(), **info)
    if isinstance(fn, W.GroupRound):
        benchmark.extra_info.update(text_engines=fn.text_engines, sources=fn.sources)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=2)
    if benchmark.stats is not None:
        benchmark.extra_info["median_s"] = benchmark.stats.stats.median


@pytest.mark.benchmark(group="gpu group-image")
@pytest.mark.parametrize("case", ["alone", "R=1", "R=4", "R=16"])
def test_gpu_group_image(benchmark, vit, folder, case):
    R = 1 if case == "alone" else int(case[2:])
    trainers = W.image_trainers(R, vit[0], vit[1], folder, device="cuda", batch=128)
    fn = W.AloneRounds(trainers) if case == "alone" else W.GroupRound(trainers)
    _record(benchmark, fn, 5, kind="image", mode="alone" if case == "alone" else "group", R=R, images_per_batch=128)


@pytest.mark.benchmark(group="gpu group-planted")
@pytest.mark.parametrize("mode", ["group", "alone-sum"])
@pytest.mark.parametrize("R", [1, 4, 16, 64])
def test_gpu_group_planted(benchmark, R, mode):
    trainers = W.planted_trainers(R, device="cuda")
    fn = W.GroupRound(trainers) if mode == "group" else W.AloneRounds(trainers)
    _record(benchmark, fn, 20, kind="planted", mode=mode, R=R)


@pytest.mark.benchmark(group="gpu group-fused")
@pytest.mark.parametrize("mode", ["group", "alone-sum"])
@pytest.mark.parametrize("R", [1, 4, 16, 64])
def test_gpu_group_fused(benchmark, R, mode):
    trainers = W.planted_trainers(R, device="cuda")
    fn = W.GroupRound(trainers, fused=True) if mode == "group" else W.AloneRounds(trainers, fused=True)
    assert all(t._fused is not None for t in trainers), "the fused step does not apply"
    _record(benchmark, fn, 20, kind="planted-fused", mode=mode, R=R)


@pytest.mark.benchmark(group="gpu group-features")
@pytest.mark.parametrize("case", ["alone", "R=1", "R=4", "R=16"])
def test_gpu_group_features(benchmark, vit, case):
    R = 1 if case == "alone" else int(case[2:])
    trainers = W.feature_trainers(R, vit[0], vit[1], W.feature_data(), device="cuda")
    fn = W.AloneRounds(trainers) if case == "alone" else W.GroupRound(trainers)
    _record(benchmark, fn, 10, kind="features", mode="alone" if case == "alone" else "group", R=R)
