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

import os
from typing import Any, Sequence

from . import config as _cfg
from .config import ConfigError, TrainConfig
from .image_options import SECTION, ImageOptionError
from .image_options import method_config as _method_config

TRAINER_NAMES = {"BPTVLM": "bptvlm", "BAR": "bar", "BlackVIP": "blackvip"}  # official TRAINER.NAME → method


def method_config(method: str, **values: Any):
    """The validated options of `method` (errors as ConfigError, the config layer's error)."""
    try:
        return _method_config(method, **values)
    except ImageOptionError as e:
        raise ConfigError(str(e)) from e


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
# Where the official trainer computes otherwise than zipfast's default, the official surface follows it:
# BPT-VLM's running-mean choice of the best prompt, BlackVIP's fp16 autocast of every query on CUDA.
OFFICIAL_BEHAVIOUR = {"bptvlm": {"best": "running"}, "bar": {}, "blackvip": {"autocast": "official"}}
_FIXED = {"TRAINER.BPTVLM.OPT_TYPE": "shallow_cma", "TRAINER.BAR.METHOD": "reprogramming",
          "TRAINER.BLACKVIP.METHOD": "coordinator"}


def load_official_image(config_file: str | os.PathLike | None = None, opts: Sequence[Any] = (),
                        dataset_config_file: str | os.PathLike | None = None, trainer: str | None = None,
                        return_node: bool = False):
    """Official yaml + KEY VALUE pairs → (method, TrainConfig fields dict, method config)
    (+ the merged yacs node when return_node). The method config computes as the official trainer
    does (OFFICIAL_BEHAVIOUR): BPT-VLM keeps its best prompt by the running-mean rule, BlackVIP
    runs its queries under fp16 autocast on CUDA.

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
        if key in ("TRAINER.NAME", "OPTIM.MAX_EPOCH", "DATASET.SUBSAMPLE_CLASSES"):  # read by the caller
            continue
        if _cfg._get(node, key) != default:
            raise ConfigError(f"{key} {_cfg._get(node, key)!r} is not supported: {why}; leave it at {default!r}")
    shared = _cfg._values_from_cfg(node)
    shared["precision"] = _cfg._get(node, f"TRAINER.{SECTION[method]}.PREC")
    shared["opt_type"] = TrainConfig.opt_type  # ZIP's optimiser field does not apply here
    s, basic = node.TRAINER[SECTION[method]], node.TRAINER.BASIC
    if method == "bptvlm":
        mc = method_config(method, tokens_l=s.TOKENS_L, tokens_v=s.TOKENS_V, intrinsic_dim_l=s.INTRINSIC_DIM_L,
                           intrinsic_dim_v=s.INTRINSIC_DIM_V, sigma=float(s.SIGMA), pop_size=s.POP_SIZE,
                           cma_budget=s.BUDGET, bound=float(s.BOUND), **OFFICIAL_BEHAVIOUR[method])
    elif method == "bar":
        mc = method_config(method, frame_size=s.FRAME_SIZE, smooth=s.SMOOTH, sigma=s.SIMGA, lrs=tuple(s.LRS),
                           decaying=s.DECAYING, focal_g=s.FOCAL_G, q=basic.SP_AVG, max_epoch=node.OPTIM.MAX_EPOCH,
                           **OFFICIAL_BEHAVIOUR[method])
    else:
        if s.E_OUT_DIM != 0:
            raise ConfigError("TRAINER.BLACKVIP.E_OUT_DIM is read only by the 'coordinator_init' method, which "
                              "zipfast does not implement; leave it at 0")
        mc = method_config(method, backbone=s.PT_BACKBONE, src_dim=s.SRC_DIM, spsa_params=tuple(s.SPSA_PARAMS),
                           moms=s.MOMS, p_eps=s.P_EPS, sp_avg=basic.SP_AVG, opt_type=basic.OPT_TYPE,
                           **OFFICIAL_BEHAVIOUR[method])
    return (method, shared, mc, node) if return_node else (method, shared, mc)


def bar_image_size(frame_size: int) -> int:
    """BAR's image size inside a frame: 194/224 of it, rounded down to even (the official INPUT.SIZE
    194 inside FRAME_SIZE 224)."""
    inner = frame_size * 194 // 224
    return inner - inner % 2


def fit_bar_sizes(cfg: TrainConfig, mcfg, frame_given: bool) -> tuple[TrainConfig, Any, list[str]]:
    """BAR's sizes for a model whose input size is cfg.image_size: the frame is that size (unless
    `frame_given`) and the image inside it `bar_image_size(frame)`. Returns (cfg, mcfg, adjustments):
    a changed frame size is logged and listed for the run report."""
    import dataclasses
    import logging

    notes = []
    if not frame_given and cfg.image_size != mcfg.frame_size:
        notes.append(f"BAR: frame size {mcfg.frame_size} -> {cfg.image_size} (the model's input size)")
        logging.getLogger("zipfast.image").info("%s", notes[-1])
        mcfg = dataclasses.replace(mcfg, frame_size=cfg.image_size)
    return dataclasses.replace(cfg, image_size=bar_image_size(mcfg.frame_size)).validate(), mcfg, notes


def paper_opts(method: str) -> list:
    """KEY VALUE pairs setting the values the paper ran (configs/trainers/<TRAINER>/vit_b16.yaml;
    the method configs' defaults) over train.py's defaults: what `bench-paper` passes for an
    image-side method when no --config-dir is given."""
    d, sec = method_config(method), f"TRAINER.{SECTION[method]}."
    if method == "bptvlm":
        pairs = {"TOKENS_L": d.tokens_l, "TOKENS_V": d.tokens_v, "INTRINSIC_DIM_L": d.intrinsic_dim_l,
                 "INTRINSIC_DIM_V": d.intrinsic_dim_v, "SIGMA": d.sigma, "POP_SIZE": d.pop_size}
        return [x for k, v in pairs.items() for x in (sec + k, _literal(v))]
    if method == "bar":
        pairs = {"FRAME_SIZE": d.frame_size, "SMOOTH": d.smooth, "SIMGA": d.sigma, "LRS": list(d.lrs),
                 "DECAYING": d.decaying, "FOCAL_G": d.focal_g}
        inner = bar_image_size(d.frame_size)  # the image inside the frame: INPUT.SIZE (194, 194) at 224
        extra = ["INPUT.SIZE", f"({inner}, {inner})", "TRAINER.BASIC.SP_AVG", str(d.q)]
    else:
        pairs = {"PT_BACKBONE": d.backbone, "SRC_DIM": d.src_dim, "SPSA_PARAMS": list(d.spsa_params),
                 "MOMS": d.moms, "P_EPS": d.p_eps}
        extra = ["TRAINER.BASIC.SP_AVG", str(d.sp_avg), "TRAINER.BASIC.OPT_TYPE", d.opt_type]
    return [x for k, v in pairs.items() for x in (sec + k, _literal(v))] + extra


def _literal(v) -> str:
    """A KEY VALUE value as the yaml would write it (1 for 1.0: integral settings are ints there)."""
    if isinstance(v, list):
        return "[" + ", ".join(map(_literal, v)) + "]"
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def train_config_from_official(shared: dict, **flags) -> TrainConfig:
    if shared["budget"] == 0 and flags.get("budget") is None:
        raise ConfigError("TRAINER.BASIC.MAX_API_CALLS is 0 (the official 'no limit'); zipfast stops on a query "
                          "budget: set it (the paper uses 5000)")
    return _cfg.merge_flags(TrainConfig(**shared), **flags)
