"""The options of the image-side methods (BPT-VLM, BAR, BlackVIP): one dataclass per method.

Defaults are the values the ZIP paper ran (the official configs/trainers/<M>/vit_b16.yaml).
Kept free of zipfast.config so that the method registry (zipfast.methods) can list them
without an import cycle; errors name the official key of the bad setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

METHODS = ("bptvlm", "bar", "blackvip")
SECTION = {"bptvlm": "BPTVLM", "bar": "BAR", "blackvip": "BLACKVIP"}


class ImageOptionError(ValueError):
    """An image-side method setting is unknown, of the wrong type or out of range."""


@dataclass
class BPTVLMConfig:
    tokens_l: int = 5  # TRAINER.BPTVLM.TOKENS_L
    tokens_v: int = 5  # TOKENS_V
    intrinsic_dim_l: int = 2000  # INTRINSIC_DIM_L
    intrinsic_dim_v: int = 2000  # INTRINSIC_DIM_V
    sigma: float = 1.0  # SIGMA: CMA-ES σ0 and the projections' scale
    pop_size: int = 15  # POP_SIZE
    cma_budget: int = 6000  # BUDGET: only sets pycma's maxiter = BUDGET / POP_SIZE
    bound: float = 0.0  # BOUND: > 0 bounds the search to ±BOUND
    # which candidate is tested: "epoch" (lowest fitness) or "running" (the official trainer's rule:
    # lowest running mean after any minibatch; zipfast.image_optim.PyCMA). --trainer BPTVLM: "running"
    best: str = "epoch"


@dataclass
class BARConfig:
    frame_size: int = 224  # TRAINER.BAR.FRAME_SIZE (the input size INPUT.SIZE sits inside)
    smooth: float = 0.01  # SMOOTH: β, the step along each random direction
    sigma: float = 1.0  # SIMGA (sic): std of the direction draw before normalisation
    lrs: tuple = (10.0, 0.1)  # LRS: initial and final step size
    decaying: float = 0.9  # DECAYING: decay over this fraction of the steps, and the decay power
    focal_g: float = 2.0  # FOCAL_G: focal-loss γ
    q: int = 5  # TRAINER.BASIC.SP_AVG: random directions per step (1 + q queries)
    max_epoch: int = 1000  # OPTIM.MAX_EPOCH: with minibatches per epoch, the decay horizon


@dataclass
class BlackVIPConfig:
    backbone: str = "vit-mae-base"  # TRAINER.BLACKVIP.PT_BACKBONE
    encoder: str = ""  # where the encoder comes from: "" = the backbone's hub name, a local dir, or "none"
    src_dim: int = 1568  # SRC_DIM
    spsa_params: tuple = (1.0, 0.01, 0.01, 0.4, 0.1)  # SPSA_PARAMS (o, c, a, alpha, gamma)
    moms: float = 0.8  # MOMS
    p_eps: float = 1.0  # P_EPS
    sp_avg: int = 5  # TRAINER.BASIC.SP_AVG
    opt_type: str = "spsa-gc"  # TRAINER.BASIC.OPT_TYPE
    # "prec": queries run at the run's precision (PREC); "official": under fp16 autocast on CUDA whatever
    # PREC says, as the official trainer (tests stay at PREC; no effect off CUDA). --trainer BlackVIP: "official"
    autocast: str = "prec"


CONFIGS = {"bptvlm": BPTVLMConfig, "bar": BARConfig, "blackvip": BlackVIPConfig}


def method_config(method: str, **values: Any):
    """The validated config of `method` with `values` overriding its defaults."""
    if method not in CONFIGS:
        raise ImageOptionError(f"unknown image method {method!r}; choose one of {', '.join(METHODS)}")
    cls = CONFIGS[method]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ImageOptionError(f"unknown {method} setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(names))}")
    return validate(method, cls(**values))


def validate(method: str, c):
    sec = f"TRAINER.{SECTION[method]}"

    def pos_int(name, key):
        v = getattr(c, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ImageOptionError(f"{key} ({name}) must be a positive integer, got {v!r}")

    def pos(name, key, allow_zero=False):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 if allow_zero else v > 0):
            raise ImageOptionError(f"{key} ({name}) must be a {'non-negative' if allow_zero else 'positive'} number, "
                              f"got {v!r}")

    if method == "bptvlm":
        for n, k in (("tokens_l", "TOKENS_L"), ("tokens_v", "TOKENS_V"), ("intrinsic_dim_l", "INTRINSIC_DIM_L"),
                     ("intrinsic_dim_v", "INTRINSIC_DIM_V"), ("pop_size", "POP_SIZE"), ("cma_budget", "BUDGET")):
            pos_int(n, f"{sec}.{k}")
        if c.pop_size < 2:
            raise ImageOptionError(f"{sec}.POP_SIZE must be at least 2, got {c.pop_size}")
        pos("sigma", f"{sec}.SIGMA")
        pos("bound", f"{sec}.BOUND", allow_zero=True)
        if c.best not in ("epoch", "running"):
            raise ImageOptionError(f"bptvlm option best {c.best!r}: choose epoch (lowest fitness) or running "
                                   "(the official trainer's running-mean rule)")
    elif method == "bar":
        c.lrs = tuple(c.lrs)
        pos_int("frame_size", f"{sec}.FRAME_SIZE")
        pos_int("q", "TRAINER.BASIC.SP_AVG")
        pos_int("max_epoch", "OPTIM.MAX_EPOCH")
        for n, k in (("smooth", "SMOOTH"), ("sigma", "SIMGA"), ("decaying", "DECAYING")):
            pos(n, f"{sec}.{k}")
        pos("focal_g", f"{sec}.FOCAL_G", allow_zero=True)
        if len(c.lrs) != 2 or not all(isinstance(v, (int, float)) and v >= 0 for v in c.lrs):
            raise ImageOptionError(f"{sec}.LRS (lrs) must be [initial, final] step sizes ≥ 0, got {c.lrs!r}")
    else:
        c.spsa_params = tuple(c.spsa_params)
        from .prompters.blackvip import BACKBONES

        if c.backbone not in BACKBONES:
            raise ImageOptionError(f"{sec}.PT_BACKBONE {c.backbone!r} is not supported; choose one of {', '.join(BACKBONES)}")
        pos_int("src_dim", f"{sec}.SRC_DIM")
        pos_int("sp_avg", "TRAINER.BASIC.SP_AVG")
        pos("p_eps", f"{sec}.P_EPS", allow_zero=True)
        if c.opt_type not in ("spsa-gc", "spsa"):
            raise ImageOptionError(f"TRAINER.BASIC.OPT_TYPE {c.opt_type!r}: BlackVIP runs 'spsa-gc' or 'spsa'")
        if len(c.spsa_params) != 5 or not all(isinstance(v, (int, float)) for v in c.spsa_params) \
                or c.spsa_params[1] <= 0 or c.spsa_params[2] <= 0:
            raise ImageOptionError(f"{sec}.SPSA_PARAMS must be [o, c, a, alpha, gamma] with c, a > 0, got {c.spsa_params!r}")
        if c.autocast not in ("prec", "official"):
            raise ImageOptionError(f"blackvip option autocast {c.autocast!r}: choose prec (the run's precision) or "
                                   "official (fp16 autocast on CUDA, as the official trainer)")
        if not 0 <= c.moms < 1:
            raise ImageOptionError(f"{sec}.MOMS must be in [0, 1), got {c.moms!r}")
    return c


def config_to_dict(c) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(c).items()}


