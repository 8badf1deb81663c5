"""Throughput of one ZIP step (K candidate queries) on workload W and its scalings.

Groups (pytest-benchmark `group`):
  floor    sustained matmul rate of this machine on the text tower's shapes (start and end of the run)
  W        the official structure (reference) and the cumulative optimisations on W
  scaling  the default fast engine over n_cls ∈ {10, 100, 1000} × K ∈ {2, 10, 40}
  prefix_attention  the engine with the old (per-class copies) vs the new shared-prefix attention

Run with `make bench` (then `python bench/report.py` writes bench/results/latest.md).
Rounds are few on purpose (the whole suite should take minutes on a 2-core CPU); the slow
cases run 1–3 rounds of one full step each.
"""

from __future__ import annotations

import os

import pytest
import torch

from zipfast.engine.batched import BatchedEngine
from zipfast.engine.text import ReferenceEngine, losses_from_logits

from bench_workload import K_W, SEED, image_features, make_ctx, run_case, tower_cost, workload_info

IMAGE_BATCH = int(os.environ.get("ZIPFAST_BENCH_IMAGE_BATCH", "8"))
FLOOR_TOKENS = (690, 4096)  # W's token count per step, and a large-batch shape
EST_RATE = 150e9  # FLOP/s (≈ this 2-core machine, fp32), only used to pick the number of rounds


def plan(tower, tokens_computed: int) -> tuple[int, int]:
    """(rounds, warmup_rounds) from the estimated step time, so that the suite stays short."""
    est = tokens_computed * 2 * tower_cost(tower)["P_layers"] / EST_RATE
    if est < 0.2:
        return 10, 1
    if est < 1.0:
        return 5, 1
    if est < 5.0:
        return 3, 1
    if est < 20.0:
        return 2, 0
    return 1, 0


# --------------------------------------------------------------------------- floor: matmul rate


def _floor(benchmark, tower, precision, n_tokens, stage):
    """One transformer layer's matmuls (qkv, out-proj, MLP up, MLP down) on n_tokens rows.

    FLOPs per round = 2·n_tokens·12·D² (exactly one layer's share of 2·P_layers per token).
    """
    D = tower.width
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(n_tokens, D, generator=g).to(dtype)
    h = torch.randn(n_tokens, 4 * D, generator=g).to(dtype)
    ws = [torch.randn(D, 3 * D, generator=g).to(dtype), torch.randn(D, D, generator=g).to(dtype),
          torch.randn(D, 4 * D, generator=g).to(dtype), torch.randn(4 * D, D, generator=g).to(dtype)]

    def fn():
        torch.mm(x, ws[0])
        torch.mm(x, ws[1])
        torch.mm(x, ws[2])
        torch.mm(h, ws[3])

    flops = 2 * n_tokens * 12 * D * D
    rounds = (15 if n_tokens < 2000 else 5) // (1 if stage == "start" else 2)
    info = {"kind": "floor", "stage": stage, "precision": precision, "n_tokens": n_tokens,
            "shapes": f"[{n_tokens},{D}]@[{D},{3 * D}], [{n_tokens},{D}]@[{D},{D}], "
                      f"[{n_tokens},{D}]@[{D},{4 * D}], [{n_tokens},{4 * D}]@[{4 * D},{D}]",
            "flops_per_round": flops}
    run_case(benchmark, fn, info, rounds=rounds, warmup_rounds=2)
    benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9


@pytest.mark.benchmark(group="floor")
@pytest.mark.parametrize("n_tokens", FLOOR_TOKENS)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_floor_start(benchmark, tower, precision, n_tokens):
    _floor(benchmark, tower, precision, n_tokens, "start")


# --------------------------------------------------------------------------- W: reference


@pytest.mark.benchmark(group="W")
def test_reference_text(benchmark, tower, class_prompts):
    """ReferenceEngine.losses: K sequential candidates, 77 positions, cached image features."""
    prompts, source = class_prompts(10)
    engine = ReferenceEngine(tower, prompts)
    ctx = make_ctx(K_W)
    feats, labels = image_features(10)
    info = workload_info(tower, prompts, K_W, engine, case="reference (text only)", names=source,
                         n_images=feats.shape[0], image_side="cached features")
    run_case(benchmark, lambda: engine.losses(ctx, feats, labels), info, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="W")
def test_reference_full(benchmark, clip, tower, class_prompts):
    """The official structure: per query, re-encode the image minibatch and encode the K=1 prompts
    over 77 positions. The image minibatch is kept SMALL (IMAGE_BATCH images of 224×224) so the
    case stays short; the real official minibatch is larger, i.e. this under-states its cost."""
    model = clip[0]
    prompts, source = class_prompts(10)
    engine = ReferenceEngine(tower, prompts)
    ctx = make_ctx(K_W)
    g = torch.Generator().manual_seed(SEED + 2)
    images = torch.randn(IMAGE_BATCH, 3, 224, 224, generator=g)
    labels = torch.randint(0, 10, (IMAGE_BATCH,), generator=g)

    def step():
        out = []
        for k in range(ctx.shape[0]):
            with torch.no_grad():
                img = model.encode_image(images)
            out.append(losses_from_logits(engine.logits(ctx[k:k + 1], img), labels))
        return out

    info = workload_info(tower, prompts, K_W, engine, case="reference (full, images per query)", names=source,
                         image_batch=IMAGE_BATCH, image_size=224, n_images=IMAGE_BATCH,
                         image_side=f"image tower re-run per query on {IMAGE_BATCH} images",
                         note="flops_per_step/floor count the text side only")
    run_case(benchmark, step, info, rounds=1, warmup_rounds=0)


# --------------------------------------------------------------------------- W: cumulative optimisations

W_CASES = {
    "batched": dict(truncate=False, shared_prefix=False),
    "+truncation": dict(truncate=True, shared_prefix=False),
    "+shared_prefix": dict(),
    "+bf16": dict(precision="bf16"),
}


@pytest.mark.benchmark(group="W")
@pytest.mark.parametrize("case", list(W_CASES))
def test_W(benchmark, tower, class_prompts, case):
    prompts, source = class_prompts(10)
    engine = BatchedEngine(tower, prompts, **W_CASES[case])
    ctx = make_ctx(K_W)
    feats, labels = image_features(10)
    info = workload_info(tower, prompts, K_W, engine, case=case, names=source, n_images=feats.shape[0],
                         image_side="cached features")
    rounds, warmup = plan(tower, info["tokens_computed"])
    run_case(benchmark, lambda: engine.losses(ctx, feats, labels), info, rounds=rounds, warmup_rounds=warmup)


# --------------------------------------------------------------------------- scaling

SCALING = [(n, K, "fp32") for n in (10, 100, 1000) for K in (2, 10, 40)] + [(1000, 10, "bf16")]


@pytest.mark.benchmark(group="scaling")
@pytest.mark.parametrize("n_cls,K,precision", SCALING, ids=[f"n{n}-K{K}-{p}" for n, K, p in SCALING])
def test_scaling(benchmark, tower, class_prompts, n_cls, K, precision):
    prompts, source = class_prompts(n_cls)
    engine = BatchedEngine(tower, prompts, precision=precision)
    ctx = make_ctx(K)
    feats, labels = image_features(n_cls)
    info = workload_info(tower, prompts, K, engine, case=f"n_cls={n_cls} K={K} {precision}", names=source,
                         n_images=feats.shape[0], image_side="cached features")
    rounds, warmup = plan(tower, info["tokens_computed"])
    run_case(benchmark, lambda: engine.losses(ctx, feats, labels), info, rounds=rounds, warmup_rounds=warmup)


# --------------------------------------------------------------------------- prefix attention: before / after

# The shared-prefix attention op (zipfast/ops/prefix_attention), A/B in one run on the default
# engine: "reference" = the per-class copies of the prefix keys/values concatenated with each
# suffix (the engine before the op), "torch" = batched matmuls + log-sum-exp merge (no copies).
PREFIX_AB = [(n, 10, backend) for n in (10, 100, 1000) for backend in ("reference", "torch")]


@pytest.mark.benchmark(group="prefix_attention")
@pytest.mark.parametrize("n_cls,K,backend", PREFIX_AB, ids=[f"n{n}-K{K}-{b}" for n, K, b in PREFIX_AB])
def test_prefix_attention_ab(benchmark, tower, class_prompts, monkeypatch, n_cls, K, backend):
    monkeypatch.setenv("ZIPFAST_BACKEND_PREFIX_ATTENTION", backend)
    prompts, source = class_prompts(n_cls)
    engine = BatchedEngine(tower, prompts)
    assert engine.prefix_attention_backend == backend
    ctx = make_ctx(K)
    feats, labels = image_features(n_cls)
    info = workload_info(tower, prompts, K, engine, case=f"n_cls={n_cls} K={K} prefix_attention={backend}",
                         names=source, n_images=feats.shape[0], image_side="cached features")
    rounds, warmup = plan(tower, info["tokens_computed"])
    run_case(benchmark, lambda: engine.losses(ctx, feats, labels), info, rounds=rounds, warmup_rounds=warmup)


# --------------------------------------------------------------------------- floor again (the machine is shared)


@pytest.mark.benchmark(group="floor")
@pytest.mark.parametrize("n_tokens", FLOOR_TOKENS)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_floor_end(benchmark, tower, precision, n_tokens):
    _floor(benchmark, tower, precision, n_tokens, "end")
