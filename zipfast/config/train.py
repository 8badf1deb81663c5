"""`TrainConfig`: the flat settings of a run, their checks, and `merge_flags`.

Every error is a `ConfigError` that names the offending field, in the official KEY spelling where one
exists (OFFICIAL_KEYS), so a command line copied from the official scripts fails with a message its
author recognises. The method's own options are checked by its file in zipfast.methods.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from zipfast.errors import ConfigError
from zipfast.methods.zip import OFFICIAL_KEYS as ZIP_KEYS


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
    **{k: v for k, v in ZIP_KEYS.items() if k != "precision"},
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
    "precision": ZIP_KEYS["precision"],
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


def _suggest(name: str, known, cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


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
    from zipfast.methods import METHODS, MethodOptionError, engine_backends, resolve_options

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
    from zipfast.methods import get

    check = get(cfg.method).check_config  # a method's own rule on the shared settings (ZIP's one step)
    if check is not None:
        check(cfg)


