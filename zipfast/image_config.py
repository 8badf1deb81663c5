"""Settings of the image-side baselines (BPT-VLM, BAR, BlackVIP) and their official yaml keys.

`BPTVLMConfig`, `BARConfig` and `BlackVIPConfig` hold one method's own settings; the shared
ones (model, budget, batch size, shots, seed, input size, precision, …) stay in
`TrainConfig`. Defaults are the values the ZIP paper ran (the official
`configs/trainers/<M>/vit_b16.yaml`). The official config path (`load_official_image`)
starts, like the official train.py, from train.py's built-in defaults, which differ for
BAR (LRS [0.01, 0.0001]) and BlackVIP (SPSA_PARAMS [1, 0.005, 0.01, 0.4, 0.2], MOMS 0.9),
then merges the yaml and the trailing KEY VALUE pairs; unknown keys are refused by name.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Sequence

from . import config as _cfg
from .config import ConfigError, TrainConfig

METHODS = ("bptvlm", "bar", "blackvip")
TRAINER_NAMES = {"BPTVLM": "bptvlm", "BAR": "bar", "BlackVIP": "blackvip"}  # official TRAINER.NAME → method
SECTION = {"bptvlm": "BPTVLM", "bar": "BAR", "blackvip": "BLACKVIP"}


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


CONFIGS = {"bptvlm": BPTVLMConfig, "bar": BARConfig, "blackvip": BlackVIPConfig}


def method_config(method: str, **values: Any):
    """The validated config of `method` with `values` overriding its defaults."""
    if method not in CONFIGS:
        raise ConfigError(f"unknown image method {method!r}; choose one of {', '.join(METHODS)}")
    cls = CONFIGS[method]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {method} setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(names))}")
    return validate(method, cls(**values))


def validate(method: str, c):
    sec = f"TRAINER.{SECTION[method]}"

    def pos_int(name, key):
        v = getattr(c, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{key} ({name}) must be a positive integer, got {v!r}")

    def pos(name, key, allow_zero=False):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 if allow_zero else v > 0):
            raise ConfigError(f"{key} ({name}) must be a {'non-negative' if allow_zero else 'positive'} number, "
                              f"got {v!r}")

    if method == "bptvlm":
        for n, k in (("tokens_l", "TOKENS_L"), ("tokens_v", "TOKENS_V"), ("intrinsic_dim_l", "INTRINSIC_DIM_L"),
                     ("intrinsic_dim_v", "INTRINSIC_DIM_V"), ("pop_size", "POP_SIZE"), ("cma_budget", "BUDGET")):
            pos_int(n, f"{sec}.{k}")
        if c.pop_size < 2:
            raise ConfigError(f"{sec}.POP_SIZE must be at least 2, got {c.pop_size}")
        pos("sigma", f"{sec}.SIGMA")
        pos("bound", f"{sec}.BOUND", allow_zero=True)
    elif method == "bar":
        c.lrs = tuple(c.lrs)
        pos_int("frame_size", f"{sec}.FRAME_SIZE")
        pos_int("q", "TRAINER.BASIC.SP_AVG")
        pos_int("max_epoch", "OPTIM.MAX_EPOCH")
        for n, k in (("smooth", "SMOOTH"), ("sigma", "SIMGA"), ("decaying", "DECAYING")):
            pos(n, f"{sec}.{k}")
        pos("focal_g", f"{sec}.FOCAL_G", allow_zero=True)
        if len(c.lrs) != 2 or not all(isinstance(v, (int, float)) and v >= 0 for v in c.lrs):
            raise ConfigError(f"{sec}.LRS (lrs) must be [initial, final] step sizes ≥ 0, got {c.lrs!r}")
    else:
        c.spsa_params = tuple(c.spsa_params)
        from .prompters.blackvip import BACKBONES

        if c.backbone not in BACKBONES:
            raise ConfigError(f"{sec}.PT_BACKBONE {c.backbone!r} is not supported; choose one of {', '.join(BACKBONES)}")
        pos_int("src_dim", f"{sec}.SRC_DIM")
        pos_int("sp_avg", "TRAINER.BASIC.SP_AVG")
        pos("p_eps", f"{sec}.P_EPS", allow_zero=True)
        if c.opt_type not in ("spsa-gc", "spsa"):
            raise ConfigError(f"TRAINER.BASIC.OPT_TYPE {c.opt_type!r}: BlackVIP runs 'spsa-gc' or 'spsa'")
        if len(c.spsa_params) != 5 or not all(isinstance(v, (int, float)) for v in c.spsa_params) \
                or c.spsa_params[1] <= 0 or c.spsa_params[2] <= 0:
            raise ConfigError(f"{sec}.SPSA_PARAMS must be [o, c, a, alpha, gamma] with c, a > 0, got {c.spsa_params!r}")
        if not 0 <= c.moms < 1:
            raise ConfigError(f"{sec}.MOMS must be in [0, 1), got {c.moms!r}")
    return c


def config_to_dict(c) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(c).items()}


# ------------------------------------------------------------------------------ official yaml

# train.py's extend_cfg values (not the yaml's): what an official run starts from.
_OFFICIAL_DEFAULTS = {
    "BPTVLM": {"PREC": "fp32", "OPT_TYPE": "shallow_cma", "POP_SIZE": 15, "BUDGET": 6000, "BOUND": 0,
               "TOKENS_L": 5, "TOKENS_V": 5, "SIGMA": 1, "INTRINSIC_DIM_L": 2000, "INTRINSIC_DIM_V": 2000},
    "BAR": {"METHOD": "reprogramming", "PREC": "fp32", "LRS": [0.01, 0.0001], "FRAME_SIZE": 224, "SMOOTH": 0.01,
            "SIMGA": 1.0, "DECAYING": 0.9, "FOCAL_G": 2.0},
    "BLACKVIP": {"METHOD": "coordinator", "PT_BACKBONE": "vit-mae-base", "SRC_DIM": 1568, "E_OUT_DIM": 0,
                 "SPSA_PARAMS": [1.0, 0.005, 0.01, 0.4, 0.2], "MOMS": 0.9, "P_EPS": 1.0, "PREC": "fp32"},
}
_FIXED = {"TRAINER.BPTVLM.OPT_TYPE": "shallow_cma", "TRAINER.BAR.METHOD": "reprogramming",
          "TRAINER.BLACKVIP.METHOD": "coordinator"}


def load_official_image(config_file: str | os.PathLike | None = None, opts: Sequence[Any] = (),
                        dataset_config_file: str | os.PathLike | None = None, trainer: str | None = None,
                        return_node: bool = False):
    """Official yaml + KEY VALUE pairs → (method, TrainConfig fields dict, method config)
    (+ the merged yacs node when return_node).

    trainer: the official --trainer name (BPTVLM | BAR | BlackVIP); else TRAINER.NAME decides.
    """
    tree = _cfg._default_tree()
    tree["TRAINER"]["NAME"] = trainer or ""
    tree["TRAINER"]["BASIC"]["OPT_TYPE"] = "spsa-gc"  # train.py's default (ZIP's yaml sets spsa-clip)
    for sec, values in _OFFICIAL_DEFAULTS.items():
        tree["TRAINER"][sec] = dict(values)
    node = _cfg._cfg_node_class()(tree)
    for path in (dataset_config_file, config_file):
        if path is not None and str(path):
            _cfg._merge_pairs(node, _cfg._flatten(_cfg._read_yaml(path)), f"in {path}")
    _cfg._merge_pairs(node, _cfg._pairs(opts), "in opts")
    if trainer:
        node.TRAINER.NAME = trainer
    name = node.TRAINER.NAME
    if name not in TRAINER_NAMES:
        raise ConfigError(f"TRAINER.NAME {name!r} is not an image-side trainer; choose one of "
                          f"{', '.join(TRAINER_NAMES)}")
    method = TRAINER_NAMES[name]
    for key, want in _FIXED.items():
        if _cfg._get(node, key) != want:
            raise ConfigError(f"{key} {_cfg._get(node, key)!r} is not supported; leave it at {want!r}")
    for key, (default, why) in _cfg._UNSUPPORTED.items():
        if key in ("TRAINER.NAME", "OPTIM.MAX_EPOCH"):
            continue
        if _cfg._get(node, key) != default:
            raise ConfigError(f"{key} {_cfg._get(node, key)!r} is not supported: {why}; leave it at {default!r}")
    shared = _cfg._values_from_cfg(node)
    shared["precision"] = _cfg._get(node, f"TRAINER.{SECTION[method]}.PREC") if method != "bptvlm" else \
        node.TRAINER.BPTVLM.PREC
    shared["opt_type"] = TrainConfig.opt_type  # ZIP's optimiser field does not apply here
    s, basic = node.TRAINER[SECTION[method]], node.TRAINER.BASIC
    if method == "bptvlm":
        mc = method_config(method, tokens_l=s.TOKENS_L, tokens_v=s.TOKENS_V, intrinsic_dim_l=s.INTRINSIC_DIM_L,
                           intrinsic_dim_v=s.INTRINSIC_DIM_V, sigma=float(s.SIGMA), pop_size=s.POP_SIZE,
                           cma_budget=s.BUDGET, bound=float(s.BOUND))
    elif method == "bar":
        mc = method_config(method, frame_size=s.FRAME_SIZE, smooth=s.SMOOTH, sigma=s.SIMGA, lrs=tuple(s.LRS),
                           decaying=s.DECAYING, focal_g=s.FOCAL_G, q=basic.SP_AVG, max_epoch=node.OPTIM.MAX_EPOCH)
    else:
        if s.E_OUT_DIM != 0:
            raise ConfigError("TRAINER.BLACKVIP.E_OUT_DIM is read only by the 'coordinator_init' method, which "
                              "zipfast does not implement; leave it at 0")
        mc = method_config(method, backbone=s.PT_BACKBONE, src_dim=s.SRC_DIM, spsa_params=tuple(s.SPSA_PARAMS),
                           moms=s.MOMS, p_eps=s.P_EPS, sp_avg=basic.SP_AVG, opt_type=basic.OPT_TYPE)
    return (method, shared, mc, node) if return_node else (method, shared, mc)


def train_config_from_official(shared: dict, **flags) -> TrainConfig:
    if shared["budget"] == 0 and flags.get("budget") is None:
        raise ConfigError("TRAINER.BASIC.MAX_API_CALLS is 0 (the official 'no limit'); zipfast stops on a query "
                          "budget: set it (the paper uses 5000)")
    return _cfg.merge_flags(TrainConfig(**shared), **flags)
