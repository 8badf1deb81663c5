"""zipfast's settings: the flat `TrainConfig`, and the official ZIP (yacs) config mapped onto it.

Two ways in, one way out:

- our own flags / JSON → `TrainConfig` (`merge_flags`, `TrainConfig.from_dict`);
- the official trainer's yaml files and trailing `KEY VALUE` list → `load_official` → a yacs
  `CfgNode` → `cfg_to_train_config`.

Either way the trainer receives one validated `TrainConfig`. Every error is a `ConfigError`
that names the offending field, in the official KEY spelling where one exists, so a command
line copied from the official scripts fails with a message its author recognises.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import yaml

from .errors import UserError

if TYPE_CHECKING:
    from yacs.config import CfgNode


class ConfigError(UserError):
    """A setting is unknown, of the wrong type, out of range, or unsupported by zipfast."""


OPT_TYPES = ("spsa-clip", "spsa", "spsa-gc")
# ZIP's perturbation stream: counter-based Philox (default, zipfast.ops.perturb) or the official
# torch.Generator draw order (fidelity checks).
PERTURBATIONS = ("philox", "official")
PRECISIONS = ("auto", "fp32", "fp16", "amp", "bf16")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # Dassl's INPUT.INTERPOLATION choices
TRANSFORMS = ("random_resized_crop", "random_flip", "normalize", "center_crop", "resize")
SPSA_PARAM_NAMES = ("o", "c", "a", "alpha", "gamma")
AUGMENTS = ("tensor", "pil")

# TrainConfig field -> the official config key that sets it (used in error messages too).
OFFICIAL_KEYS: dict[str, str] = {
    "model": "MODEL.BACKBONE.NAME",
    "n_ctx": "TRAINER.ZIP.N_CTX",
    "ctx_init": "TRAINER.ZIP.CTX_INIT",
    "intrinsic_dim": "TRAINER.ZIP.INTRINSIC_DIM",
    "rank": "TRAINER.ZIP.RANK",
    "opt_type": "TRAINER.BASIC.OPT_TYPE",
    "sp_avg": "TRAINER.BASIC.SP_AVG",
    "spsa_params": "TRAINER.ZIP.SPSA_PARAMS",
    "moms": "TRAINER.ZIP.MOMS",
    "budget": "TRAINER.BASIC.MAX_API_CALLS",
    "batch_size": "DATALOADER.TRAIN_X.BATCH_SIZE",
    "test_batch_size": "DATALOADER.TEST.BATCH_SIZE",
    "num_workers": "DATALOADER.NUM_WORKERS",
    "shots": "DATASET.NUM_SHOTS",
    "seed": "SEED",
    "image_size": "INPUT.SIZE",
    "interpolation": "INPUT.INTERPOLATION",
    "pixel_mean": "INPUT.PIXEL_MEAN",
    "pixel_std": "INPUT.PIXEL_STD",
    "transforms": "INPUT.TRANSFORMS",
    "precision": "TRAINER.ZIP.PREC",
    "dataset": "DATASET.ROOT",
    "output_dir": "OUTPUT_DIR",
    "log_every": "TRAIN.PRINT_FREQ",
    "checkpoint_every": "TRAIN.CHECKPOINT_FREQ",
}

# ------------------------------------------------------------------------------ TrainConfig


@dataclass
class TrainConfig:
    """The flat settings the trainer uses; defaults are the paper's few-shot setting."""

    model: str = "ViT-B-16-quickgelu"  # OpenAI's ViT-B/16, the paper's backbone (config.OPENAI_BACKBONES)
    pretrained: str = "openai"
    n_ctx: int = 8
    ctx_init: str = ""
    intrinsic_dim: int = 500
    rank: int = 5
    opt_type: str = "spsa-clip"
    perturbation: str = "philox"  # see PERTURBATIONS
    sp_avg: int = 5
    spsa_params: tuple[float, ...] = (1.0, 0.01, 0.01, 0.4, 0.1)  # (o, c, a, alpha, gamma)
    moms: float = 0.8
    budget: int = 5000  # queries; training stops here
    batch_size: int = 128
    test_batch_size: int = 128
    num_workers: int = 0
    shots: int = 16  # 0 = every training image
    seed: int = 1
    image_size: int = 224
    interpolation: str = "bicubic"
    pixel_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    pixel_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    transforms: tuple[str, ...] = ("random_resized_crop", "random_flip", "normalize")
    precision: str = "auto"  # per device, by measurement: see engine.resolve_precision
    backend: str = "auto"
    device: str = "auto"
    dataset: str = ""  # a dataset root path, or a built-in name such as "planted"
    output_dir: str = ""
    log_every: int = 1
    checkpoint_every: int = 50  # steps; 0 = only at the end
    test_per_class: int | None = None
    augment: str = "tensor"  # training views: "tensor" (batched, data.gpu_augment) or "pil" (the reference)
    feature_bank: int = 0  # V > 0: encode V augmented views per training image once, sample per step
    method: str = "zip"  # zip, sharpzo, zo-sgd or zsclip (zipfast.methods)
    method_options: dict = field(default_factory=dict)  # the method's own section (zipfast.methods)

    def __post_init__(self) -> None:
        # JSON and CLI parsers hand over lists; keep the tuple fields hashable and comparable.
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))

    @property
    def context_tokens(self) -> int:
        """Context tokens actually learned: an init text fixes them to its word count, as officially."""
        words = self.ctx_init.replace("_", " ").split()
        return len(words) if words else self.n_ctx

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first bad field; return self so calls can chain."""
        _validate_ints(self)
        _validate_floats(self)
        _validate_choices(self)
        _validate_strings(self)
        _validate_method(self)
        _validate_relations(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy (tuples become lists)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {name: list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, dict) else v
                for name, v in values.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Validated config from `to_dict()` output; missing keys keep their defaults."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"expected a mapping of TrainConfig fields, got {type(d).__name__}")
        _reject_unknown_fields(d, "TrainConfig key")
        return cls(**d).validate()


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(TrainConfig))
_TUPLE_FIELDS = ("spsa_params", "pixel_mean", "pixel_std", "transforms")


def merge_flags(cfg: TrainConfig, **flags: Any) -> TrainConfig:
    """A validated copy of `cfg` with the given flags applied; None means "flag not given"."""
    _reject_unknown_fields(flags, "flag")
    given = {name: value for name, value in flags.items() if value is not None}
    return dataclasses.replace(cfg, **given).validate()


def _reject_unknown_fields(names: Mapping[str, Any], what: str) -> None:
    unknown = sorted(set(names) - _FIELD_NAMES)
    if unknown:
        raise ConfigError(f"unknown {what}(s) {', '.join(map(repr, unknown))}{_suggest(unknown[0], _FIELD_NAMES)}")


# ------------------------------------------------------------------------------ validation


def _label(field: str) -> str:
    key = OFFICIAL_KEYS.get(field)
    return f"{key} ({field})" if key else field


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Integers must fit a signed 64-bit tensor / RNG seed; larger ones fail deep inside torch.
INT_MAX = 2**63 - 1


def _require_int(cfg: TrainConfig, field: str, allow_zero: bool = False) -> None:
    value = getattr(cfg, field)
    if not _is_int(value) or value < (0 if allow_zero else 1):
        what = "a non-negative integer" if allow_zero else "a positive integer"
        raise ConfigError(f"{_label(field)} must be {what}, got {value!r}")
    if value > INT_MAX:
        raise ConfigError(f"{_label(field)} {value} is too large: it must be at most 2^63 - 1 = {INT_MAX}")


def _require_number(label: str, value: Any, ok=lambda v: True, what: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{label} must be a finite number, got {value!r}")
    if not ok(value):
        raise ConfigError(f"{label} must be {what}, got {value!r}")


def _require_numbers(cfg: TrainConfig, field: str, length: int, names: Sequence[str] = ()) -> tuple:
    values = getattr(cfg, field)
    if not isinstance(values, tuple) or len(values) != length:
        raise ConfigError(f"{_label(field)} must be a list of {length} numbers, got {values!r}")
    for i, value in enumerate(values):
        _require_number(_element_label(field, i, names), value)
    return values


def _element_label(field: str, i: int, names: Sequence[str]) -> str:
    key = OFFICIAL_KEYS.get(field, field)
    return f"{key}[{i}] ({names[i] if names else field})"


def _validate_ints(cfg: TrainConfig) -> None:
    for field in ("n_ctx", "intrinsic_dim", "rank", "sp_avg", "budget", "batch_size",
                  "test_batch_size", "image_size", "log_every"):
        _require_int(cfg, field)
    for field in ("shots", "num_workers", "checkpoint_every", "seed", "feature_bank"):
        # seed: the official -1 ("unseeded") has no meaning here: every zipfast run is seeded.
        _require_int(cfg, field, allow_zero=True)
    if cfg.test_per_class is not None:
        _require_int(cfg, "test_per_class")


def _validate_floats(cfg: TrainConfig) -> None:
    spsa = _require_numbers(cfg, "spsa_params", 5, SPSA_PARAM_NAMES)
    # c and a divide / scale every step, so zero would stall or divide by zero.
    rules = {"o": (lambda v: v >= 0, ">= 0"), "c": (lambda v: v > 0, "> 0"),
             "a": (lambda v: v > 0, "> 0"), "alpha": (lambda v: v >= 0, ">= 0"),
             "gamma": (lambda v: v >= 0, ">= 0")}
    for i, (name, value) in enumerate(zip(SPSA_PARAM_NAMES, spsa)):
        ok, what = rules[name]
        _require_number(_element_label("spsa_params", i, SPSA_PARAM_NAMES), value, ok, what)
    _require_number(_label("moms"), cfg.moms, lambda v: 0 <= v < 1, "in [0, 1)")
    _require_numbers(cfg, "pixel_mean", 3)
    for i, value in enumerate(_require_numbers(cfg, "pixel_std", 3)):
        _require_number(_element_label("pixel_std", i, ()), value, lambda v: v > 0, "> 0")


def _validate_choices(cfg: TrainConfig) -> None:
    for field, choices in (("opt_type", OPT_TYPES), ("perturbation", PERTURBATIONS), ("precision", PRECISIONS),
                           ("interpolation", INTERPOLATIONS), ("augment", AUGMENTS)):
        value = getattr(cfg, field)
        if value not in choices:
            raise ConfigError(f"{_label(field)} must be one of {', '.join(choices)}; got {value!r}")
    if not isinstance(cfg.transforms, tuple) or not set(cfg.transforms) <= set(TRANSFORMS):
        raise ConfigError(f"{_label('transforms')} must be a list drawn from "
                          f"{', '.join(TRANSFORMS)}; got {cfg.transforms!r}")


def _validate_strings(cfg: TrainConfig) -> None:
    for field in ("model", "backend", "device"):
        value = getattr(cfg, field)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{_label(field)} must be a non-empty string, got {value!r}")
    for field in ("pretrained", "ctx_init", "dataset", "output_dir"):
        value = getattr(cfg, field)
        if not isinstance(value, str):
            raise ConfigError(f"{_label(field)} must be a string, got {value!r}")


def _validate_method(cfg: TrainConfig) -> None:
    from .methods import METHODS, MethodOptionError, engine_backends, resolve_options

    if not isinstance(cfg.method, str) or cfg.method not in METHODS:  # a list is unhashable
        raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {cfg.method!r}")
    if not isinstance(cfg.method_options, dict):
        raise ConfigError(f"method_options must be a mapping of option names to values, got {cfg.method_options!r}")
    try:
        resolve_options(cfg.method, cfg.method_options)
        engine_backends(cfg.method, cfg.backend)  # the one place a --backend name is checked, for every method
    except MethodOptionError as exc:
        raise ConfigError(str(exc)) from exc


def _validate_relations(cfg: TrainConfig) -> None:
    m = cfg.context_tokens
    tokens = f"{m} context tokens" + (" (the words of ctx_init)" if m != cfg.n_ctx else "")
    if cfg.intrinsic_dim < m:
        raise ConfigError(f"{_label('intrinsic_dim')} {cfg.intrinsic_dim} is smaller than {tokens}: "
                          "each token needs at least one intrinsic coordinate")
    d_t = cfg.intrinsic_dim // m
    if cfg.rank > d_t:
        raise ConfigError(f"{_label('rank')} {cfg.rank} exceeds intrinsic_dim // n_ctx = "
                          f"{cfg.intrinsic_dim} // {m} = {d_t} (the per-token intrinsic size, {tokens})")
    if cfg.method == "zip" and cfg.budget < 2 * cfg.sp_avg:
        raise ConfigError(f"{OFFICIAL_KEYS['budget']}: budget {cfg.budget} is smaller than one step "
                          f"(2*sp_avg = {2 * cfg.sp_avg} queries)")


# ------------------------------------------------------------------------------ official config


def _cfg_node_class():
    try:
        from yacs.config import CfgNode
    except ImportError as exc:  # only the official-config path needs yacs
        raise ImportError("reading official ZIP configs needs yacs: pip install yacs") from exc
    return CfgNode


def _default_tree() -> dict[str, Any]:
    d = TrainConfig()
    return {
        "DATALOADER": {
            "TRAIN_X": {"BATCH_SIZE": d.batch_size},
            "TEST": {"BATCH_SIZE": d.test_batch_size},
            "NUM_WORKERS": d.num_workers,
        },
        "INPUT": {
            "SIZE": (d.image_size, d.image_size),
            "INTERPOLATION": d.interpolation,
            "PIXEL_MEAN": list(d.pixel_mean),
            "PIXEL_STD": list(d.pixel_std),
            "TRANSFORMS": list(d.transforms),
        },
        "OPTIM": {"MAX_EPOCH": _UNSUPPORTED["OPTIM.MAX_EPOCH"][0]},
        "TRAIN": {"PRINT_FREQ": d.log_every, "CHECKPOINT_FREQ": d.checkpoint_every},
        "TRAINER": {
            "NAME": _UNSUPPORTED["TRAINER.NAME"][0],
            "BASIC": {"OPT_TYPE": d.opt_type, "SP_AVG": d.sp_avg, "MAX_API_CALLS": d.budget},
            "ZIP": {
                "PREC": d.precision,
                "N_CTX": d.n_ctx,
                "CTX_INIT": d.ctx_init,
                "SPSA_PARAMS": list(d.spsa_params),
                "MOMS": d.moms,
                "P_EPS": 1.0,  # read by no official ZIP code path; accepted and ignored alike
                "INTRINSIC_DIM": d.intrinsic_dim,
                "RANK": d.rank,
            },
        },
        "MODEL": {"BACKBONE": {"NAME": "ViT-B/16"}, "INIT_WEIGHTS": _UNSUPPORTED["MODEL.INIT_WEIGHTS"][0]},
        "SEED": d.seed,
        "OUTPUT_DIR": d.output_dir,
        "RESUME": _UNSUPPORTED["RESUME"][0],
        "USE_CUDA": True,
        "DATASET": {
            "ROOT": d.dataset,
            "NAME": "",
            "NUM_SHOTS": d.shots,
            "SUBSAMPLE_CLASSES": _UNSUPPORTED["DATASET.SUBSAMPLE_CLASSES"][0],
        },
        "TEST": {"NO_TEST": _UNSUPPORTED["TEST.NO_TEST"][0], "FINAL_MODEL": _UNSUPPORTED["TEST.FINAL_MODEL"][0]},
    }


# Official keys zipfast accepts only at their default: (default, why another value is refused).
_UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "TRAINER.NAME": ("ZIP", "zipfast implements only the ZIP trainer"),
    "OPTIM.MAX_EPOCH": (1000, "zipfast stops on the query budget (TRAINER.BASIC.MAX_API_CALLS), not on epochs"),
    "MODEL.INIT_WEIGHTS": ("", "zipfast cannot start from saved prompt weights"),
    "RESUME": ("", "zipfast cannot resume an official run directory"),
    "DATASET.SUBSAMPLE_CLASSES": ("all", "zipfast trains and tests on all classes (no base/new split)"),
    "TEST.NO_TEST": (False, "zipfast always evaluates the final prompt"),
    "TEST.FINAL_MODEL": ("last_step", "zipfast evaluates the last prompt and keeps no validation split"),
}


def default_cfg() -> "CfgNode":
    """The official ZIP keys (train.py's extend_cfg plus the Dassl keys its files use), at zipfast's defaults."""
    return _cfg_node_class()(_default_tree())


def load_official(config_file: str | os.PathLike | None = None, opts: Sequence[Any] = (),
                  dataset_config_file: str | os.PathLike | None = None) -> "CfgNode":
    """Merge yaml files then a `KEY VALUE` list onto `default_cfg()`, in the official order; frozen."""
    cfg = default_cfg()
    for path in (dataset_config_file, config_file):
        if path is not None and str(path):
            _merge_pairs(cfg, _flatten(_read_yaml(path)), f"in {path}")
    _merge_pairs(cfg, _pairs(opts), "in opts")
    cfg.freeze()
    return cfg


def _read_yaml(path: str | os.PathLike) -> Mapping[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            yield from _flatten(value, key + ".")
        else:
            yield key, value


def _pairs(opts: Sequence[Any]) -> Iterator[tuple[str, Any]]:
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"opts must be KEY VALUE pairs, got an odd number ({len(opts)}) of items: {opts}")
    return zip(map(str, opts[0::2]), opts[1::2])


def _merge_pairs(cfg: "CfgNode", pairs: Iterator[tuple[str, Any]], source: str) -> None:
    for key, raw in pairs:
        node, leaf = _parent(cfg, key, source)
        node[leaf] = _coerce(key, node[leaf], _decode(raw, node[leaf]), raw, source)


def _parent(cfg: "CfgNode", key: str, source: str) -> tuple["CfgNode", str]:
    *path, leaf = key.split(".")
    node = cfg
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        hint = _suggest(key, _leaf_keys(cfg), cutoff=0.85)  # long shared prefixes inflate similarity
        raise ConfigError(f"unknown config key {key!r} ({source}){hint}")
    if isinstance(node[leaf], dict):
        raise ConfigError(f"config key {key!r} ({source}) is a section, not a value")
    return node, leaf


def _leaf_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    return [key for key, _ in _flatten(tree, prefix)]


def _suggest(name: str, known, cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def _decode(raw: Any, old: Any) -> Any:
    """Parse a string the way yacs does (Python literal, else the string itself)."""
    if not isinstance(raw, str):
        return raw
    value = _literal(raw)
    # A path or text such as OUTPUT_DIR 2024 must stay a string, where yacs would reject it.
    return raw if isinstance(old, str) and not isinstance(value, str) else value


class _NonFiniteNames(ast.NodeTransformer):
    """Read nan/inf as floats so validation can reject them by field instead of a type error."""

    VALUES = {"nan": math.nan, "inf": math.inf, "infinity": math.inf}

    def visit_Name(self, node: ast.Name) -> ast.AST:
        value = self.VALUES.get(node.id.lower())
        return node if value is None else ast.copy_location(ast.Constant(value), node)


def _literal(text: str) -> Any:
    try:
        tree = _NonFiniteNames().visit(ast.parse(text.strip(), mode="eval"))
        return ast.literal_eval(tree)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return text


def _coerce(key: str, old: Any, new: Any, raw: Any, source: str) -> Any:
    if isinstance(old, str) and new is None:  # an empty yaml value, e.g. "CTX_INIT:"
        return ""
    if type(new) is type(old):
        return new
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    if type(old) is float and _is_int(new):
        return float(new)
    raise ConfigError(f"type mismatch for config key {key!r} ({source}): expected "
                      f"{type(old).__name__} like {old!r}, got {raw!r}")


# ------------------------------------------------------------------------------ official → TrainConfig

# OpenAI's CLIP models (clip.available_models(), the official MODEL.BACKBONE.NAME values) → the
# open_clip config of the same network. OpenAI's CLIP uses QuickGELU in every MLP (clip/model.py);
# open_clip's plain configs (ViT-B-16, RN50, …) use nn.GELU, so the -quickgelu configs are the match.
OPENAI_BACKBONES = {
    "RN50": "RN50-quickgelu", "RN101": "RN101-quickgelu", "RN50x4": "RN50x4-quickgelu",
    "RN50x16": "RN50x16-quickgelu", "RN50x64": "RN50x64-quickgelu", "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu", "ViT-L/14": "ViT-L-14-quickgelu", "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}


def official_model_name(name: str) -> str:
    """The open_clip name of a --model value: OpenAI's spelling of its CLIP models ("ViT-B/16",
    "ViT-L/14@336px") names OpenAI's network, i.e. the -quickgelu config ("ViT-B-16-quickgelu");
    any other name is open_clip's own (a stray "/" read as "-")."""
    if "/" in name or "@" in name:
        return OPENAI_BACKBONES.get(name, name.replace("/", "-"))
    return name


def official_backbone(name: str) -> str:
    """The open_clip name of an official MODEL.BACKBONE.NAME: the official trainer always builds
    OpenAI's CLIP, so "RN50" is "RN50-quickgelu" there too."""
    return OPENAI_BACKBONES.get(name, official_model_name(name))


def cfg_to_train_config(cfg: "CfgNode", **flag_overrides: Any) -> TrainConfig:
    """Map an official config onto TrainConfig, apply our flags (None = not given), validate."""
    _check_supported(cfg)
    values = _values_from_cfg(cfg)
    if values["budget"] == 0 and flag_overrides.get("budget") is None:
        raise ConfigError("TRAINER.BASIC.MAX_API_CALLS (budget) is 0, which the official trainer reads "
                          "as 'no limit'; zipfast always stops on a query budget, so set "
                          "TRAINER.BASIC.MAX_API_CALLS (the paper uses 5000) or pass budget")
    return merge_flags(TrainConfig(**values), **flag_overrides)


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"config is missing key {key!r}; build it with load_official()")
        node = node[part]
    return node


def _check_supported(cfg: "CfgNode") -> None:
    for key, (default, why) in _UNSUPPORTED.items():
        value = _get(cfg, key)
        if value != default:
            raise ConfigError(f"{key} {value!r} is not supported: {why}; leave it at {default!r}")


def _values_from_cfg(cfg: "CfgNode") -> dict[str, Any]:
    size = tuple(_get(cfg, "INPUT.SIZE"))
    if len(size) != 2 or size[0] != size[1]:
        raise ConfigError(f"INPUT.SIZE (image_size) must be a square (S, S), got {size!r}")
    values = {field: _get(cfg, key) for field, key in OFFICIAL_KEYS.items()}
    values.update(
        model=official_backbone(_get(cfg, "MODEL.BACKBONE.NAME")),
        pretrained="openai",  # the official trainer always loads OpenAI's CLIP weights
        image_size=size[0],
        # DATASET.ROOT is a path; without one, a dataset config's NAME is the best name we have.
        dataset=_get(cfg, "DATASET.ROOT") or _get(cfg, "DATASET.NAME"),
        device="auto" if _get(cfg, "USE_CUDA") else "cpu",
    )
    return values
