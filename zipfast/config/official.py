"""The official (yacs) configs mapped onto `TrainConfig` and the methods' options: one mapping for
every official trainer.

- ZIP and zero-shot CLIP: `load_official` (the official trainer yaml and trailing KEY VALUE list →
  a yacs `CfgNode`) → `cfg_to_train_config`;
- BPT-VLM, BAR, BlackVIP: `load_official_image` (starting, like the official train.py, from its own
  defaults, then the yaml and the pairs) → (method, TrainConfig fields, the method's options), each
  option read from the key its method file names (`Method.official_keys`).

Unknown keys are refused by name; so are values of keys zipfast does not model.
"""

from __future__ import annotations

import ast
import math
import os
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import yaml

from zipfast.config.train import OFFICIAL_KEYS, TrainConfig, _is_int, _suggest, merge_flags
from zipfast.errors import ConfigError
from zipfast.models import OPENAI_BACKBONES, official_backbone, official_model_name  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from yacs.config import CfgNode


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
    except yaml.YAMLError as exc:  # one line: the parser's message spans several
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); pass the official yaml file") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests deeper than any config; pass the official yaml file") from None
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
    flag = next((str(o) for o in opts if str(o).startswith("--")), None)
    if flag is not None:  # argparse hands everything after the first KEY to the pairs
        raise ConfigError(f"{flag} comes after the KEY VALUE pairs: put every --flag before them (the pairs go "
                          "last, as in the official scripts)")
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


# ------------------------------------------------------------------------------ the image-side trainers

_FIXED = {"TRAINER.BPTVLM.OPT_TYPE": "shallow_cma", "TRAINER.BAR.METHOD": "reprogramming",
          "TRAINER.BLACKVIP.METHOD": "coordinator"}


def method_options(method: str, **values: Any):
    """The validated options of `method` with `values` over its defaults (errors as ConfigError)."""
    from zipfast.methods import MethodOptionError, get, make_options

    try:
        return make_options(method, get(method).options, values)
    except MethodOptionError as e:
        raise ConfigError(str(e)) from e


def load_official_image(config_file: str | os.PathLike | None = None, opts: Sequence[Any] = (),
                        dataset_config_file: str | os.PathLike | None = None, trainer: str | None = None,
                        return_node: bool = False):
    """Official yaml + KEY VALUE pairs → (method, TrainConfig fields dict, method options)
    (+ the merged yacs node when return_node). Settings start, like the official train.py, from its
    own defaults (which differ from the yamls for BAR's LRS and BlackVIP's SPSA_PARAMS and MOMS). The
    options compute as the official trainer does (`Method.official_behaviour`): BPT-VLM keeps its best
    prompt by the running-mean rule, BlackVIP runs its queries under fp16 autocast on CUDA.

    trainer: the official --trainer name (BPTVLM | BAR | BlackVIP); else TRAINER.NAME decides.
    """
    from zipfast.methods import IMAGE_TRAINERS as names, get

    tree = _default_tree()
    tree["TRAINER"]["NAME"] = trainer or ""
    tree["TRAINER"]["BASIC"]["OPT_TYPE"] = "spsa-gc"  # train.py's default (ZIP's yaml sets spsa-clip)
    for method in names.values():
        m = get(method)
        tree["TRAINER"][m.official[1]] = dict(m.official_defaults)
    node = _cfg_node_class()(tree)
    for path in (dataset_config_file, config_file):
        if path is not None and str(path):
            _merge_pairs(node, _flatten(_read_yaml(path)), f"in {path}")
    _merge_pairs(node, _pairs(opts), "in opts")
    if trainer:
        node.TRAINER.NAME = trainer
    name = node.TRAINER.NAME
    if name not in names:
        raise ConfigError(f"TRAINER.NAME {name!r} is not an image-side trainer; choose one of {', '.join(names)}")
    method = get(names[name])
    for key, want in _FIXED.items():
        if _get(node, key) != want:
            raise ConfigError(f"{key} {_get(node, key)!r} is not supported; leave it at {want!r}")
    for key, (default, why) in _UNSUPPORTED.items():
        if key in ("TRAINER.NAME", "OPTIM.MAX_EPOCH", "DATASET.SUBSAMPLE_CLASSES"):  # read by the caller
            continue
        if _get(node, key) != default:
            raise ConfigError(f"{key} {_get(node, key)!r} is not supported: {why}; leave it at {default!r}")
    shared = _values_from_cfg(node)
    shared["precision"] = _get(node, f"TRAINER.{method.official[1]}.PREC")
    shared["opt_type"] = TrainConfig.opt_type  # ZIP's optimiser field does not apply here
    if "E_OUT_DIM" in node.TRAINER[method.official[1]] and node.TRAINER[method.official[1]].E_OUT_DIM != 0:
        raise ConfigError("TRAINER.BLACKVIP.E_OUT_DIM is read only by the 'coordinator_init' method, which "
                          "zipfast does not implement; leave it at 0")
    values = {opt: _get(node, key) for opt, key in method.official_keys.items()}
    mc = method_options(method.name, **values, **method.official_behaviour)
    return (method.name, shared, mc, node) if return_node else (method.name, shared, mc)


def paper_opts(method: str) -> list:
    """KEY VALUE pairs setting the values the paper ran (configs/trainers/<TRAINER>/vit_b16.yaml; the
    options' defaults) over train.py's defaults: what `bench-paper` passes for an image-side method
    when no --config-dir is given. A method with a `fit` rule (BAR) also gets INPUT.SIZE, the image
    inside its frame."""
    from zipfast.methods import get

    m, d = get(method), method_options(method)
    pairs = [x for opt in m.paper_keys for x in (m.official_keys[opt], _yaml_value(getattr(d, opt)))]
    if m.fit is not None:
        from zipfast.methods.bar import image_size

        inner = image_size(d.frame_size)  # the image inside the frame: INPUT.SIZE (194, 194) at 224
        pairs += ["INPUT.SIZE", f"({inner}, {inner})"]
    return pairs


def _yaml_value(v) -> str:
    """A KEY VALUE value as the yaml would write it (1 for 1.0: integral settings are ints there)."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(_yaml_value, v)) + "]"
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def train_config_from_official(shared: dict, **flags) -> TrainConfig:
    if shared["budget"] == 0 and flags.get("budget") is None:
        raise ConfigError("TRAINER.BASIC.MAX_API_CALLS is 0 (the official 'no limit'); zipfast stops on a query "
                          "budget: set it (the paper uses 5000)")
    return merge_flags(TrainConfig(**shared), **flags)
