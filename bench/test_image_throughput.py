"""Throughput of the image-side engine: batched vs one-candidate reference (ViT-B/16, random init).

Workload (seeded): open_clip ViT-B-16 (random weights after torch.manual_seed(0)), B = 32
images of 224 px (random, normalised), EuroSAT's 10 class names, fp32.

Groups:
  image-floor     sustained fp32 matmul rate on one image-tower layer's shapes (32·197 tokens × 768)
  image-engine    the image pass alone, K ∈ {10, 15}, BAR's frame (pixels, 194 px inside 224);
                  reference = K sequential candidates (the `tokens` prompt is available too)
  image-step      a whole step: BlackVIP (K = 10; MAE ViT-B encoder random-init, decoder,
                  CLIP image pass) and BPT-VLM (K = 15; text + image)

FLOPs per step count the useful work of the batched engine (what a step must compute):
image tower 2·T·(12·W²)·layers + attention 4·T²·W·layers + patch embedding per image, K·B
images; BlackVIP adds one encoder pass per image (the reference repeats it per candidate);
BPT-VLM adds the cost-model text tokens. Run: pytest bench/test_image_throughput.py
--benchmark-json=bench/results/image_latest.json (about 15 min on the 2-core CPU).
"""

from __future__ import annotations

import pytest
import torch

from bench_workload import SEED, classnames, run_case
from zipfast.engine.batched import BatchedEngine
from zipfast.engine.text import ReferenceEngine
from zipfast.engine.image import BatchedImageEngine, ReferenceImageEngine
from zipfast.engine.towers import ImageTower
from zipfast.spaces import BPTVLMSpace, ReprogrammingFrame
from zipfast.engine.towers import ClassPrompts, TextTower

B = 32


def vit_flops(tokens: int, width: int, layers: int, patches: int, patch_px: int = 16) -> int:
    """FLOPs of one image through a ViT: per layer 2·T·12·W² (qkv, out, MLP) + 4·T²·W (scores, values)."""
    return layers * (2 * tokens * 12 * width * width + 4 * tokens * tokens * width) + \
        2 * patches * 3 * patch_px * patch_px * width


@pytest.fixture(scope="module")
def image_tower(clip):
    return ImageTower(clip[0])


def _images(n=B, size=224):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(SEED + 2))


def _tower_flops(tower: ImageTower, extra_tokens=0) -> int:
    v = tower.visual
    return vit_flops(tower.n_tokens + extra_tokens, tower.width, len(v.transformer.resblocks), tower.n_tokens - 1)


def _rounds(est_s):
    return (2, 0) if est_s < 20 else (1, 0)


@pytest.mark.benchmark(group="image-floor")
def test_image_floor(benchmark, image_tower):
    W, n = image_tower.width, B * image_tower.n_tokens
    g = torch.Generator().manual_seed(SEED)
    x, h = torch.randn(n, W, generator=g), torch.randn(n, 4 * W, generator=g)
    ws = [torch.randn(W, 3 * W, generator=g), torch.randn(W, W, generator=g), torch.randn(W, 4 * W, generator=g),
          torch.randn(4 * W, W, generator=g)]

    def fn():
        torch.mm(x, ws[0]), torch.mm(x, ws[1]), torch.mm(x, ws[2]), torch.mm(h, ws[3])

    info = {"kind": "floor", "stage": "image", "precision": "fp32", "n_tokens": n, "flops_per_round": 2 * n * 12 * W * W}
    run_case(benchmark, fn, info, rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="image-engine")
@pytest.mark.parametrize("K", [10, 15])
@pytest.mark.parametrize("prompt", ["frame"])  # tokens: covered by the BPT-VLM step below
@pytest.mark.parametrize("engine", ["reference", "batched"])
def test_image_engine(benchmark, clip, image_tower, engine, prompt, K):
    model = clip[0]
    if prompt == "frame":
        prompter, extra = ReprogrammingFrame(224, 194), 0
        x = _images(size=194)
    else:
        prompter = BPTVLMSpace.create(model.token_embedding.weight, model.visual.conv1.weight,
                                      generator=torch.Generator().manual_seed(SEED))
        extra, x = prompter.n_tokens_v, _images()
    w = torch.randn(K, prompter.dim, generator=torch.Generator().manual_seed(SEED)) * 0.1
    eng = (ReferenceImageEngine if engine == "reference" else BatchedImageEngine)(image_tower, "fp32")
    flops = K * B * _tower_flops(image_tower, extra)
    info = {"K": K, "B": B, "prompt": prompt, "engine": eng.name, "precision": "fp32", "flops_per_step": flops,
            "config": {"engine": eng.name, "precision": "fp32"}}
    run_case(benchmark, lambda: eng.features(prompter, w, x), info, *_rounds(flops / 150e9))


@pytest.fixture(scope="module")
def mae():
    from zipfast.spaces.coordinator import load_coordinator_encoder

    return load_coordinator_encoder("vit-mae-base", "none", seed=SEED)  # ViT-MAE-base architecture, random weights


@pytest.mark.benchmark(group="image-step")
@pytest.mark.parametrize("engine", ["reference", "batched"])
def test_blackvip_step(benchmark, image_tower, mae, engine):
    from zipfast.spaces.coordinator import CoordinatorPrompter

    K = 10
    p = CoordinatorPrompter(mae, mae.z_dim, 1568, 1.0)
    w = torch.stack([p.init_params(torch.Generator().manual_seed(i)) for i in range(K)])
    x = _images()
    eng = (ReferenceImageEngine if engine == "reference" else BatchedImageEngine)(image_tower, "fp32")
    enc = vit_flops(197, 768, 12, 196)
    flops = K * B * _tower_flops(image_tower) + B * enc
    info = {"K": K, "B": B, "prompt": "coordinator", "engine": eng.name, "precision": "fp32", "flops_per_step": flops,
            "config": {"engine": eng.name, "precision": "fp32"}, "encoder_passes_per_step": B if engine == "batched"
            else K * B}
    run_case(benchmark, lambda: eng.features(p, w, x), info, *_rounds(flops / 150e9))


@pytest.mark.benchmark(group="image-step")
@pytest.mark.parametrize("engine", ["reference", "batched"])
def test_bptvlm_step(benchmark, clip, image_tower, engine):
    model, tokenizer = clip
    K = 15
    text = TextTower(model)
    prompts = ClassPrompts.build(text, tokenizer, classnames(10)[0], 5)
    space = BPTVLMSpace.create(model.token_embedding.weight, model.visual.conv1.weight,
                               generator=torch.Generator().manual_seed(SEED))
    y = torch.randn(K, space.dim, generator=torch.Generator().manual_seed(SEED)) * 0.1
    x = _images()
    if engine == "reference":
        teng, ieng = ReferenceEngine(text, prompts, "fp32"), ReferenceImageEngine(image_tower, "fp32")
    else:
        teng, ieng = BatchedEngine(text, prompts, "fp32"), BatchedImageEngine(image_tower, "fp32")

    def step():
        t = teng.text_features(space.text_ctx(y))
        return ieng.features(space, y, x), t

    T = int(prompts.eot.max()) + 1
    s = T - 6
    text_tokens = K * (6 + prompts.n_cls * s)
    flops = K * B * _tower_flops(image_tower, 5) + text_tokens * 2 * 12 * 12 * 512 * 512
    info = {"K": K, "B": B, "prompt": "bptvlm", "engine": ieng.name, "precision": "fp32", "flops_per_step": flops,
            "config": {"engine": ieng.name, "text_engine": teng.name, "precision": "fp32"}}
    run_case(benchmark, step, info, *_rounds(flops / 150e9))
