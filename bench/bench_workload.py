"""The benchmark workload and its bookkeeping (imported by bench/conftest.py and the benchmarks).

Workload W (fixed, seeded):
open_clip ViT-B-16 text tower (random init after torch.manual_seed(0)), EuroSAT's 10 class
names, ZIP defaults m = 8 context tokens and q = 5 → K = 2q = 10 candidates
(ctx = 0.02·randn(K, 8, 512), seeded), 128 cached image features (random, normalised) and
labels. One benchmark round = one ZIP step = `engine.losses(ctx, feats, labels)` for all K.

Every result records in `extra_info`: the engine config, K, n_cls, the cost-model token count
K·[(1+m) + n_cls·s] (s = T − (1+m), T = max EOT + 1), FLOPs per step
(tokens · 2 · P_layers, P_layers = 12·layers·D²), and queries/s (= K / median step time).
At the end of the session the JSON gets the machine's sustained matmul rate (the `floor`
group, measured in the same run) and, per result, the floor time and measured/floor.
"""

from __future__ import annotations

import torch

from zipfast.data.classnames import CIFAR100, EUROSAT
from zipfast.engine.towers import ClassPrompts, TextTower

MODEL = "ViT-B-16"  # GELU config (the paper: ViT-B-16-quickgelu); kept so results stay comparable
SEED = 0
N_CTX = 8  # m
Q = 5  # perturbation pairs per step → K = 2q candidates
K_W = 2 * Q
N_IMAGES = 128
ADJECTIVES = ["small", "large", "red", "blue", "green", "old", "young", "wild", "dark", "bright"]

# --------------------------------------------------------------------------- workload pieces


def classnames(n: int) -> tuple[list[str], str]:
    """n distinct class names and where they come from.

    10 → EuroSAT, 100 → CIFAR-100; anything else up to 1000 → synthetic "{adjective} {CIFAR-100 name}"
    (e.g. "small apple"), deterministic; fewer than 10/100 → the first n of the real set.
    """
    if n <= len(EUROSAT):
        return EUROSAT[:n], "eurosat"
    if n <= len(CIFAR100):
        return CIFAR100[:n], "cifar100"
    if n > len(ADJECTIVES) * len(CIFAR100):
        raise ValueError(f"at most {len(ADJECTIVES) * len(CIFAR100)} synthetic class names")
    return [f"{a} {c}" for a in ADJECTIVES for c in CIFAR100][:n], "synthetic: adjective x CIFAR-100"


def make_ctx(K: int, n_ctx: int = N_CTX, width: int = 512) -> torch.Tensor:
    """Candidate contexts 0.02·randn(K, m, D), seeded (the same K → the same tensor)."""
    g = torch.Generator().manual_seed(SEED)
    return 0.02 * torch.randn(K, n_ctx, width, generator=g)


def image_features(n_cls: int, n: int = N_IMAGES, dim: int = 512):
    """Cached image features [n, dim] (random, L2-normalised) and labels [n] in [0, n_cls), seeded."""
    g = torch.Generator().manual_seed(SEED + 1)
    feats = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
    labels = torch.randint(0, n_cls, (n,), generator=g)
    return feats, labels


def tower_cost(tower: TextTower) -> dict:
    """layers, D and P_layers = 12·layers·D² read from the model."""
    layers = len(tower.transformer.resblocks)
    D = tower.width
    return {"layers": layers, "width": D, "P_layers": 12 * layers * D * D}


def engine_config(engine) -> dict:
    """The options that define an engine, as recorded in the JSON."""
    cfg = {"engine": engine.name, "precision": engine.precision}
    if engine.name == "torch-batched":
        cfg.update(truncate=engine.T < engine.tower.context_length, shared_prefix=engine.shared_prefix,
                   memory_limit_mb=engine.memory_limit / 2 ** 20, T=engine.T,
                   chunk_tokens=getattr(engine, "chunk_tokens", None),
                   prefix_attention=engine.prefix_attention_backend)
    else:
        cfg.update(truncate=False, shared_prefix=False, T=engine.tower.context_length)
    return cfg


def workload_info(tower: TextTower, prompts: ClassPrompts, K: int, engine=None, **extra) -> dict:
    """The per-result record: config, K, n_cls, cost-model tokens and FLOPs per step."""
    m = prompts.n_ctx
    T = int(prompts.eot.max()) + 1
    s = T - (1 + m)
    C = prompts.n_cls
    cost = tower_cost(tower)
    tokens = K * ((1 + m) + C * s)
    info = {"K": K, "n_cls": C, "m": m, "T": T, "s": s, "tokens_per_step": tokens,
            "flops_per_step": tokens * 2 * cost["P_layers"], **cost}
    if engine is not None:
        cfg = engine_config(engine)
        info["config"] = cfg
        info["precision"] = cfg["precision"]
        # what the engine actually pushes through the transformer (the cost-model count is the useful work)
        if cfg["shared_prefix"]:
            info["tokens_computed"] = K * ((1 + m) + C * (engine.T - (1 + m)))
        else:
            info["tokens_computed"] = K * C * cfg["T"]
    info.update(extra)
    return info


def run_case(benchmark, fn, info: dict, rounds: int, warmup_rounds: int):
    """benchmark.pedantic(fn) and record info + queries/s from the median."""
    benchmark.extra_info.update(info)
    result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    if stats is not None:
        med = stats.median
        benchmark.extra_info["median_s"] = med
        if "K" in info:
            benchmark.extra_info["queries_per_s"] = info["K"] / med
        if "flops_per_step" in info:
            benchmark.extra_info["achieved_gflops"] = info["flops_per_step"] / med / 1e9
    return result
