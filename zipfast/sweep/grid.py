"""The grid of `zipfast sweep`: what the user gives → a list of runs (`RunSpec`) → their `TrainConfig`s.

Keys of a grid (`sweep_keys`), each typed by the setting it varies:

- a flat `TrainConfig` field that a method's run reads beyond its task (`Method.config_keys`: the context
  n_ctx / ctx_init, ZIP's space intrinsic_dim / rank, ZIP's SPSA opt_type / perturbation / sp_avg / moms,
  the minibatch batch_size), and the elements of spsa_params by name (o, c, a, alpha, gamma);
- a method option, bare (`lr`) or as `METHOD.OPTION` (`zo-sgd.lr`); list options (bar.lrs,
  blackvip.spsa_params) are refused: set them once with --method-opt.

Not keys: what defines the task, the model, the data or the output (dataset, model, shots, image_size, …),
how a run is computed or recorded (precision, backend, device, num_workers, log_every, …: a selection over
them would choose numerics or bookkeeping, not a search setting), the budget (every run of a sweep gets the
same one), seed (--seeds) and method (--methods).

Which method a key applies to (`split_grid`): a bare key applies to every chosen method that takes it (as a
flat field its run reads, or as one of its options); `METHOD.KEY` to that method only; a key no chosen
method takes is an error. So `--methods zip,zo-sgd --grid rank=1,3 a=0.1,0.01` varies rank for both and a
(an SPSA element, which ZO-SGD does not read) for ZIP only; a method no key applies to runs once per seed at
its settings.

Every refusal is one `ConfigError` line naming the bad item and what to do. Nothing read executes code:
grid files are read with `yaml.safe_load`, values are parsed by pattern, never evaluated.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import itertools
import logging
import math
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Mapping, Sequence

import yaml

from zipfast.config.train import INT_MAX, SPSA_PARAM_NAMES, TrainConfig
from zipfast.errors import ConfigError
from zipfast.methods import METHODS

log = logging.getLogger("zipfast.sweep")

MAX_RUNS = 100_000  # runs of one sweep (grid points × seeds, all methods): more is a typo, not a plan
MAX_SEEDS = 10_000
MAX_FILE_BYTES = 1 << 20  # a grid file is a few lines; a larger one is the wrong file
NAME_LIMIT = 120  # RunSpec.name's length at most (a folder name; file systems allow 255 bytes)
_SEED_PART = len("-seed") + len(str(INT_MAX))  # the room config_key leaves for the seed
_SHOWN = 60  # characters of a bad value a message quotes

# Fields refused as keys with a reason of their own; the others that no method lists are the task's or the
# run's bookkeeping (the module docstring).
_NOT_KEYS = {"seed": "seeds come from --seeds (e.g. --seeds 1-3)",
             "method": "methods come from --methods",
             "method_options": "a method option is a key of its own, METHOD.OPTION (e.g. zo-sgd.lr)",
             "budget": "every run of a sweep gets the same query budget: set it once with --budget",
             "spsa_params": f"vary its elements by name: {', '.join(SPSA_PARAM_NAMES)} (e.g. a=0.1,0.01)"}
_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_INT = re.compile(r"[+-]?[0-9]{1,25}", re.ASCII)
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,6})?", re.ASCII)
_SEED = re.compile(r"([0-9]+)(?:\s*-\s*([0-9]+))?", re.ASCII)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]", re.ASCII)  # a folder name keeps these characters only


# ------------------------------------------------------------------------------ keys


def _kind(f: dataclasses.Field) -> str:
    """'int', 'float', 'str', 'bool' or 'tuple' (annotations are strings under `from __future__`)."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return "tuple" if kind.startswith("tuple") else kind


@functools.lru_cache(maxsize=None)  # the registry is fixed; callers never change the dict
def _method_keys(name: str) -> dict[str, str]:
    """{key: kind} of a method: its flat keys (spsa_params as its elements), then its options."""
    m = METHODS[name]
    keys: dict[str, str] = {}
    for field in m.config_keys:
        if field == "spsa_params":
            keys.update(dict.fromkeys(SPSA_PARAM_NAMES, "float"))
        else:
            keys[field] = _kind(_TRAIN_FIELDS[field])
    for f in dataclasses.fields(m.options):
        keys.setdefault(f.name, _kind(f))  # no method names an option after a flat key it reads (tested)
    return keys


def _flat_keys(name: str) -> set[str]:
    fields = METHODS[name].config_keys
    return {k for f in fields for k in (SPSA_PARAM_NAMES if f == "spsa_params" else (f,))}


def sweep_keys(method: str | None = None) -> list[str]:
    """The keys a method's grid takes, sorted; method None: every bare key and every METHOD.OPTION."""
    if method is not None:
        return sorted(k for k, kind in _method_keys(_method(method, "sweep keys")).items() if kind != "tuple")
    bare = {k for m in METHODS for k, kind in _method_keys(m).items() if kind != "tuple"}
    return sorted(bare) + sorted(f"{m}.{k}" for m in METHODS for k, kind in _method_keys(m).items()
                                 if kind != "tuple" and k not in _flat_keys(m))


def _method(name: Any, where: str) -> str:
    if not isinstance(name, str) or name not in METHODS:
        raise ConfigError(f"{where}: unknown method {_show(name)}{_suggest(name, METHODS)}; choose one of "
                          f"{', '.join(METHODS)}")
    return name


def _resolve(key: Any, where: str) -> str:
    """The kind of `key`'s values, or ConfigError saying why it is not a sweep key."""
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"{where}: empty or non-text key {_show(key)}; expected KEY=v1,v2,... (e.g. a=0.1,0.01)")
    if "." in key:
        scope, _, name = key.partition(".")
        method = _method(scope, f"{where} {_show(key)}")
        kinds = {method: _method_keys(method)[name]} if name in _method_keys(method) else {}
        if not kinds:
            raise ConfigError(f"{where}: method {method} takes no key {_show(name)}"
                              f"{_suggest(name, sweep_keys(method))}; its keys: {', '.join(sweep_keys(method)) or 'none'}")
    else:
        kinds = {m: k for m in METHODS if (k := _method_keys(m).get(key))}
        if not kinds or key in _NOT_KEYS:
            if key in _TRAIN_FIELDS:
                why = _NOT_KEYS.get(key, "it sets the task, the model, the data or how a run is computed or "
                                         "recorded, not its search: set it once for the whole sweep")
                raise ConfigError(f"{where}: {key} is not a sweep key ({why})")
            raise ConfigError(f"{where}: unknown key {_show(key)}{_suggest(key, sweep_keys())}; keys are the TrainConfig "
                              f"fields a method reads (e.g. intrinsic_dim, rank, batch_size), the spsa_params elements "
                              f"{', '.join(SPSA_PARAM_NAMES)}, or method options (lr or METHOD.OPTION, e.g. zo-sgd.lr)")
    kind = next(iter(kinds.values()))  # an option name means one type in every method that has it (tested)
    if kind == "tuple":
        raise ConfigError(f"{where}: {key} is a list option; a grid of lists is not supported: set it once with "
                          f"--method-opt")
    return kind


# ------------------------------------------------------------------------------ values


def _show(value: Any) -> str:
    """A value as a message quotes it: repr (one line whatever it holds), shortened."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _suggest(name: Any, known: Iterable[str]) -> str:
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name[:100], list(known), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _typed(kind: str, value: Any, key: str, where: str) -> Any:
    """`value` (text, or a YAML scalar) as `kind`, or ConfigError naming key and value."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{where}: {key} value {_show(value)} is not {what}")

    text = value.strip() if isinstance(value, str) else None
    if kind == "int":
        out = int(text) if text is not None and _INT.fullmatch(text) else value
        if isinstance(out, bool) or not isinstance(out, int):
            raise bad("an integer")
        if abs(out) > INT_MAX:
            raise ConfigError(f"{where}: {key} value {_show(value)} is too large: at most 2^63 - 1 = {INT_MAX}")
        return out
    if kind == "float":
        out = float(text) if text is not None and _FLOAT.fullmatch(text) else value
        if isinstance(out, bool) or not isinstance(out, (int, float)):
            raise bad("a number")
        try:
            out = float(out)
        except OverflowError:  # an integer beyond any float
            out = math.inf
        if not math.isfinite(out):
            raise bad("a finite number")
        return out
    if kind == "bool":
        if text is not None and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if not isinstance(value, str) or not value.strip():
        raise bad("a non-empty text")
    return value


def _values(kind: str, values: Any, key: str, where: str) -> list:
    """The typed values of one key: at least one, each once."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (list, tuple)):
        raise ConfigError(f"{where}: {key} takes a list of values, got {_show(values)}")
    if not values:
        raise ConfigError(f"{where}: {key} has no values; give at least one (e.g. {key}=v1,v2)")
    typed, seen = [], set()
    for v in values:
        t = _typed(kind, v, key, where)
        if t in seen:
            raise ConfigError(f"{where}: {key} value {_show(v)} is given more than once; give each value once")
        seen.add(t)
        typed.append(t)
    return typed


def _add(grid: dict, key: Any, values: Any, where: str) -> None:
    kind = _resolve(key, where)
    if key in grid:
        raise ConfigError(f"{where}: key {key} is given twice; give each key once with all its values (KEY=v1,v2)")
    grid[key] = _values(kind, values, key, where)


def _entries(item: str) -> list[str]:
    """One --grid item → its KEY=values texts; whitespace separates them, and may follow a comma."""
    out: list[str] = []
    for token in item.split():
        if "=" not in token and out and (out[-1].endswith(",") or token.startswith(",")):
            out[-1] += token  # "a=1, 2": the value list goes on
        elif "=" not in token:
            raise ConfigError(f"--grid: {_show(token)} has no '='; expected KEY=v1,v2,... (e.g. --grid a=0.1,0.01)")
        else:
            out.append(token)
    if not out:
        raise ConfigError(f"--grid: empty item {_show(item)}; expected KEY=v1,v2,... (e.g. --grid a=0.1,0.01)")
    return out


def _check_size(grid: Mapping[str, list], where: str) -> None:
    """ConfigError when the grid points any one method could get exceed MAX_RUNS (before seeds)."""
    for m in METHODS:
        keys = _method_keys(m)
        n = 1
        for key, values in grid.items():
            scope, dot, name = key.partition(".")
            if (dot and scope == m) or (not dot and key in keys):
                n *= len(values)
        if n > MAX_RUNS:
            raise ConfigError(f"{where}: {n:,} grid points for method {m}, more than {MAX_RUNS:,}; give fewer values")


def parse_grid(items: Sequence[str] | str) -> dict[str, list]:
    """--grid items ["KEY=v1,v2,...", "K1=... K2=..."] → {KEY: [typed values]}, keys in the given order.

    KEY is a sweep key (module docstring): bare or METHOD.KEY; values are typed by the setting. Raises
    ConfigError (one line) for an item without '=', an unknown or refused key, an empty value, a value of
    the wrong type, a value or key given twice, or more than MAX_RUNS points for one method.
    """
    if isinstance(items, str):
        items = [items]
    grid: dict[str, list] = {}
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"--grid takes KEY=v1,v2,... text, got {_show(item)}")
        for entry in _entries(item):
            key, _, text = entry.partition("=")
            raws = text.split(",")
            if any(not r.strip() for r in raws):
                raise ConfigError(f"--grid {_show(entry)}: an empty value; give KEY=v1,v2,... with no empty entries")
            _add(grid, key.strip(), raws, "--grid")
    _check_size(grid, "--grid")
    return grid


def _check_methods(methods: Any, where: str) -> list[str]:
    if isinstance(methods, str) or not isinstance(methods, (list, tuple)) or not methods:
        raise ConfigError(f"{where}: the methods must be a non-empty list of {', '.join(METHODS)}; got {_show(methods)}")
    for m in methods:
        _method(m, where)
    dup = [m for i, m in enumerate(methods) if m in methods[:i]]
    if dup:
        raise ConfigError(f"{where}: method {dup[0]} is given more than once; name each method once")
    return list(methods)


def split_grid(grid: Mapping[str, list], methods: Sequence[str], where: str = "--grid") -> dict[str, dict[str, list]]:
    """{key: values} (bare or METHOD.KEY) → {method: {key: values}} for `methods`, in their order.

    A bare key goes to every method that takes it, METHOD.KEY to METHOD only (it must be among `methods`);
    ConfigError for a key no method takes or one given twice for a method (e.g. lr and zo-sgd.lr).
    """
    methods = _check_methods(methods, where)
    out: dict[str, dict[str, list]] = {m: {} for m in methods}
    origin: dict[tuple[str, str], str] = {}
    for key, values in grid.items():
        _resolve(key, where)
        scope, dot, name = key.partition(".")
        if dot:
            if scope not in out:
                raise ConfigError(f"{where}: {key} is for method {scope}, which is not among the methods "
                                  f"({', '.join(methods)}); add it to the methods or drop the key")
            targets = [scope]
        else:
            name = key
            targets = [m for m in methods if key in _method_keys(m)]
            if not targets:
                takers = [m for m in METHODS if key in _method_keys(m)]
                raise ConfigError(f"{where}: no chosen method ({', '.join(methods)}) takes {key}; it is a key of "
                                  f"{', '.join(takers)}")
        for m in targets:
            if (m, name) in origin:
                raise ConfigError(f"{where}: {name} is given twice for method {m} (as {origin[m, name]} and {key}); "
                                  "give it once")
            origin[m, name] = key
            out[m][name] = _values(_method_keys(m)[name], values, key, where)
    return {m: dict(sorted(g.items())) for m, g in out.items()}


def paper_grid(method: str) -> dict[str, list]:
    """{key: values} of the ZIP paper's search space for `method` (its Method.paper_grid), or ConfigError
    where it is not built in."""
    m = METHODS[_method(method, "paper grid")]
    if not m.paper_grid:
        have = [n for n, mm in METHODS.items() if mm.paper_grid]
        raise ConfigError(f"the ZIP paper's search space for {method} is not built in (it is for {', '.join(have)}); "
                          f"give {method}'s grid with --grid KEY=v1,v2,... (keys: {', '.join(sweep_keys(method))})")
    return {k: list(v) for k, v in m.paper_grid.items()}


# ------------------------------------------------------------------------------ seeds


def _check_seeds(seeds: Any, where: str) -> list[int]:
    if isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {_show(seeds)}")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"{where}: {len(seeds):,} seeds, more than {MAX_SEEDS:,}; give fewer")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= INT_MAX:
            raise ConfigError(f"{where}: seed {_show(s)} is not an integer in 0 … 2^63 - 1")
    seen: set[int] = set()
    for s in seeds:
        if s in seen:
            raise ConfigError(f"{where}: seed {s} is given more than once; give each seed once")
        seen.add(s)
    return list(seeds)


def parse_seeds(text: str, where: str = "--seeds") -> list[int]:
    """'1,2,3' or '1-5' or '1-3,7' → [seeds], in the given order; ConfigError (one line) for a negative, a
    non-integer, one above 2^63 - 1, a repeated seed, a backwards range or more than MAX_SEEDS."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: no seed given; give integers such as 1,2,3 or a range 1-5")
    seeds: list[int] = []
    for token in (t.strip() for t in text.split(",")):
        m = _SEED.fullmatch(token)
        if not m:
            what = "is negative: seeds are integers >= 0" if token.startswith("-") else "is not an integer"
            raise ConfigError(f"{where}: {_show(token)} {what}; give integers such as 1,2,3 or a range 1-5")
        if any(len(g) > len(str(INT_MAX)) for g in m.groups() if g):
            raise ConfigError(f"{where}: {_show(token)} is too large: seeds are at most 2^63 - 1 = {INT_MAX}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if max(lo, hi) > INT_MAX:
            raise ConfigError(f"{where}: {_show(token)} is too large: seeds are at most 2^63 - 1 = {INT_MAX}")
        if hi < lo:
            raise ConfigError(f"{where}: range {_show(token)} runs backwards; write it low-high (e.g. 1-5)")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise ConfigError(f"{where}: more than {MAX_SEEDS:,} seeds ({_show(token)}); give fewer")
        seeds.extend(range(lo, hi + 1))
    return _check_seeds(seeds, where)


# ------------------------------------------------------------------------------ runs


def _fmt(value: Any) -> str:
    """A value in a folder name: numbers as Python writes them (repr: shortest round trip), text kept to
    safe characters (+ a hash of the text where any was replaced, so names stay unique)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    safe = _UNSAFE.sub("_", text)[:24]
    return safe if safe == text else f"{safe}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: method (str), seed (int) and values ((key, typed value), … sorted by key): the
    grid point. `name` is its folder name, `config_key` the same without the seed (what a selection
    compares across seeds)."""

    method: str
    seed: int
    values: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        values = self.values.items() if isinstance(self.values, Mapping) else self.values
        object.__setattr__(self, "values", tuple(sorted((tuple(kv) for kv in values), key=lambda kv: kv[0])))

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    @property
    def config_key(self) -> str:
        """'zip-a0.01-alpha0.4-…-rank5': deterministic, unique per (method, values); longer than
        NAME_LIMIT with the seed: a readable prefix and a hash of the whole."""
        full = "-".join([self.method, *(f"{k}{_fmt(v)}" for k, v in self.values)])
        room = NAME_LIMIT - _SEED_PART
        if len(full) <= room:
            return full
        digest = hashlib.sha256(repr((self.method, self.values)).encode()).hexdigest()[:10]
        return f"{full[: room - 11].rstrip('-._')}-{digest}"

    @property
    def name(self) -> str:
        """The run's folder name: config_key + '-seed<seed>'."""
        return f"{self.config_key}-seed{self.seed}"


def expand(grid_by_method: Mapping[str, Mapping[str, list]], seeds: Sequence[int]) -> list[RunSpec]:
    """The runs of {method: {key: values}} × seeds: methods in the given order, then the grid points (the
    Cartesian product over the sorted keys, values in their order), then seeds. A method with an empty
    grid runs once per seed. ConfigError for a key the method does not take, a bad value, more than
    MAX_RUNS runs (named) or two runs of one folder name."""
    seeds = _check_seeds(list(seeds) if isinstance(seeds, (list, tuple, range)) else seeds, "seeds")
    if not isinstance(grid_by_method, Mapping) or not grid_by_method:
        raise ConfigError(f"grid: expected {{method: {{key: values}}}} with at least one method, got "
                          f"{_show(grid_by_method)}")
    typed: dict[str, list[tuple[str, list]]] = {}
    total = 0
    for method, grid in grid_by_method.items():
        _method(method, "grid")
        if not isinstance(grid, Mapping):
            raise ConfigError(f"grid of {method}: expected {{key: values}}, got {_show(grid)}")
        kinds = _method_keys(method)
        keys = []
        for key in sorted(grid, key=str):
            if kinds.get(key) in (None, "tuple"):
                _resolve(f"{method}.{key}", "grid")  # raises, naming why
            keys.append((key, _values(kinds[key], grid[key], f"{method}.{key}", "grid")))
        typed[method] = keys
        total += math.prod(len(v) for _, v in keys) * len(seeds)
    if total > MAX_RUNS:
        raise ConfigError(f"the sweep has {total:,} runs (grid points × {len(seeds)} seeds), more than "
                          f"{MAX_RUNS:,}; give fewer values or seeds")
    specs = [RunSpec(method, seed, tuple(zip([k for k, _ in keys], point)))
             for method, keys in typed.items()
             for point in itertools.product(*(v for _, v in keys))
             for seed in seeds]
    names: dict[str, RunSpec] = {}
    for spec in specs:
        if spec.name in names:  # only text values that differ by what a folder name cannot hold
            raise ConfigError(f"grid: runs {names[spec.name].values!r} and {spec.values!r} would share the folder "
                              f"{spec.name}; make their values differ in letters, digits or ._+-")
        names[spec.name] = spec
    return specs


def _apply(spec: RunSpec, base: TrainConfig, method_options: Mapping[str, Mapping] | None) -> TrainConfig:
    method = _method(spec.method, f"run {spec.name}")
    flat = _flat_keys(method)
    if method_options is not None:
        options = dict(method_options.get(method) or {})
    else:  # base's options belong to base's method
        options = dict(base.method_options) if base.method == method and isinstance(base.method_options, dict) else {}
    changes: dict[str, Any] = {}
    spsa = dict(zip(SPSA_PARAM_NAMES, base.spsa_params))
    kinds = _method_keys(method)
    for key, value in spec.values:
        if kinds.get(key) in (None, "tuple"):
            _resolve(f"{method}.{key}", f"run {spec.name}")  # raises, naming why
        if key in SPSA_PARAM_NAMES and key in flat:
            spsa[key] = value
        elif key in flat:
            changes[key] = value
        else:
            options[key] = value
    if len(spsa) == len(SPSA_PARAM_NAMES):  # else base's own spsa_params are malformed: validate() says so
        changes["spsa_params"] = tuple(spsa[k] for k in SPSA_PARAM_NAMES)
    cfg = dataclasses.replace(base, **changes, method=method, seed=spec.seed, method_options=options)
    return cfg.validate()


def apply(spec: RunSpec, base: TrainConfig, method_options: Mapping[str, Mapping] | None = None) -> TrainConfig:
    """base with the run's flat fields, spsa_params elements, method, seed and method options set; validated.

    method_options: {method: {option: value}} fixed for the whole sweep (--method-opt METHOD.KEY=VALUE),
    the grid's options over them; None: base.method_options where base.method is the run's method.
    ConfigError names the run (an invalid combination, e.g. rank > intrinsic_dim // n_ctx). Checks that
    need the model (ZIP's Fastfood length, memory) happen when the run is built.
    """
    try:
        return _apply(spec, base, method_options)
    except ConfigError as exc:
        raise ConfigError(f"run {spec.name}: {exc}") from None


def check_runs(specs: Sequence[RunSpec], base: TrainConfig, *, skip_invalid: bool = False,
               method_options: Mapping[str, Mapping] | None = None) -> tuple[list[RunSpec], list[str]]:
    """(valid runs, one line per skipped configuration) of `specs` on `base` (each as `apply` makes it).

    By default any invalid configuration refuses the sweep: ConfigError (one line) naming how many,
    the first three and why. skip_invalid: drop them instead, log one line, and return their reasons.
    """
    verdict: dict[tuple, str | None] = {}
    reasons: list[str] = []
    for spec in specs:
        key = (spec.method, spec.values)
        if key not in verdict:
            try:
                _apply(spec, base, method_options)
                verdict[key] = None
            except ConfigError as exc:
                verdict[key] = f"{spec.config_key}: {exc}"
                reasons.append(verdict[key])
    valid = [s for s in specs if verdict[(s.method, s.values)] is None]
    if reasons:
        shown = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")
        what = f"{len(reasons)} of {len(verdict)} grid configurations ({len(specs) - len(valid)} runs)"
        if not skip_invalid:
            raise ConfigError(f"{what} are invalid for these settings: {shown}; change the grid or skip them")
        log.warning("skipping %s, invalid for these settings: %s", what, shown)
    return valid, reasons


# ------------------------------------------------------------------------------ grid file


def _label(path: Any) -> str:
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    return text if text.isprintable() else repr(text)


class _Loader(yaml.SafeLoader):
    """yaml.safe_load's loader (no tag runs code: a !!python tag is refused) that also refuses a key given
    twice in one mapping, where safe_load would keep the last silently."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # YAML merge keys (<<) first, as the safe loader does
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, Hashable):
                    continue  # the safe loader refuses it below
                if key in seen:
                    raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                            f"found the key {_show(key)} twice", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Any, where: str) -> Any:
    try:
        info = os.stat(path)
    except (OSError, ValueError, TypeError) as exc:
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else "cannot be read"
        raise ConfigError(f"{where}: {reason.lower()}; give the path of a YAML grid file") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise ConfigError(f"{where}: not a regular file; give the path of a YAML grid file")
    if info.st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: {info.st_size:,} bytes, more than a grid file's {MAX_FILE_BYTES:,}; "
                          "give the YAML grid file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        return yaml.load(raw.decode("utf-8"), Loader=_Loader)  # safe_load's loader: a !!python tag is refused
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({os.strerror(exc.errno) if exc.errno else exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except yaml.YAMLError as exc:  # one line: the parser's message spans several
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(exc).split())[:300]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nests deeper than any grid file") from None


def _as_values(value: Any) -> Any:
    """A YAML entry's values: a list, or one scalar as a list of one."""
    return [value] if isinstance(value, (str, int, float, bool)) else value


def load_grid_file(path, methods: Sequence[str] | None = None) -> tuple[dict[str, dict[str, list]], list[int] | None,
                                                                      list[str] | None]:
    """(grid_by_method, seeds or None, the file's methods or None) from a YAML grid file:

        methods: [zip, zo-sgd]        # optional: else `methods` (--methods), else the grid's method sections
        seeds: [1, 2, 3]              # optional; or "1-3"
        grid:                         # "paper" (each method's paper_grid), or a mapping of:
          rank: [1, 3]                #   a key for every method that takes it
          zip: {a: [0.1, 0.01]}       #   a method's own keys (or "paper": its paper grid)

    Read with yaml.safe_load only. ConfigError (one line) names the file and the bad entry.
    """
    where = f"grid file {_label(path)}"
    data = _read_yaml(path, where)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with methods, seeds and grid; got {type(data).__name__}")
    for key in data:
        if key not in ("methods", "seeds", "grid"):
            raise ConfigError(f"{where}: unknown entry {_show(key)}{_suggest(key, ('methods', 'seeds', 'grid'))}; "
                              "a grid file holds methods, seeds and grid")
    file_methods = None
    if "methods" in data:
        given = data["methods"]
        given = [m.strip() for m in given.split(",")] if isinstance(given, str) else given
        file_methods = _check_methods(given, f"{where}: methods")
    seeds = None
    if "seeds" in data:
        s = data["seeds"]
        seeds = (parse_seeds(s, f"{where}: seeds") if isinstance(s, str)
                 else _check_seeds([s] if isinstance(s, int) and not isinstance(s, bool) else s, f"{where}: seeds"))
    chosen = file_methods or (list(methods) if methods else None)
    spec = data.get("grid")
    grid: dict[str, list] = {}
    sections: list[str] = []
    try:
        if spec == "paper":
            if not chosen:
                raise ConfigError("grid: paper needs the methods (methods: [...] in the file, or --methods)")
            for m in _check_methods(chosen, "methods"):
                for name, values in paper_grid(m).items():
                    _add(grid, f"{m}.{name}", values, "grid")
        elif isinstance(spec, dict):
            for key, value in spec.items():
                if isinstance(key, str) and key in METHODS and (isinstance(value, dict) or value in ("paper", None)):
                    sub = paper_grid(key) if value == "paper" else (value or {})
                    sections.append(key)
                    for name, values in sub.items():
                        _add(grid, f"{key}.{name}", _as_values(values), "grid")
                elif isinstance(key, str) and key in METHODS:
                    raise ConfigError(f"{key} is a method: give its keys as a mapping ({key}: {{KEY: [v1, v2]}}) "
                                      "or paper")
                else:
                    _add(grid, key, _as_values(value), "grid")
        elif spec is not None:
            raise ConfigError(f"grid must be paper or a mapping of keys to values, got {_show(spec)}")
        if not chosen:
            if any("." not in k for k in grid) or not sections:
                raise ConfigError("no methods named: add methods: [...] to the file or pass --methods")
            chosen = sections
        _check_size(grid, "grid")
        return split_grid(grid, chosen, "grid"), seeds, file_methods
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# ------------------------------------------------------------------------------ the command line

# The TrainConfig fields a grid may set: they differ between a sweep's runs by design
GRID_FIELDS = tuple(sorted({f for m in METHODS.values() for f in m.config_keys}))
DEFAULT_METHODS, DEFAULT_SEEDS = ("zip",), (1,)


def from_command_line(items: Sequence[str], methods: Sequence[str] | None,
                      seeds: str | None) -> tuple[dict[str, dict[str, list]], list[int], list[str]]:
    """(grid_by_method, seeds, methods) of `zipfast sweep`'s --grid items, --methods and --seeds.

    An item is `paper` (each method's paper_grid), a grid file (*.yaml / *.yml: load_grid_file; its
    methods and seeds apply unless --methods / --seeds are given) or KEY=v1,v2 (parse_grid). KEY items
    replace the axes of the same key that paper or a file gave. Defaults: zip, seed 1, no grid (one run
    per method and seed at its settings)."""
    if not all(isinstance(i, str) and i.strip() for i in items):  # argparse gives [] for `--grid=--`
        raise ConfigError("--grid: an empty item; give KEY=v1,v2 (e.g. a=0.1,0.01), paper or a grid file (*.yaml)")
    files = [i for i in items if i.strip().lower().endswith((".yaml", ".yml"))]
    paper = any(i.strip() == "paper" for i in items)
    keys = [i for i in items if i not in files and i.strip() != "paper"]
    if len(files) > 1:
        raise ConfigError(f"--grid: {len(files)} grid files given ({', '.join(map(_label, files))}); give one")
    by_method: dict[str, dict[str, list]] = {}
    file_seeds = file_methods = None
    if files:
        by_method, file_seeds, file_methods = load_grid_file(files[0], methods)
    chosen = _check_methods(list(methods or file_methods or list(by_method) or DEFAULT_METHODS), "--methods")
    by_method = {m: dict(by_method.get(m, {})) for m in chosen}
    if paper:
        for m in chosen:
            by_method[m].update(paper_grid(m))
    if keys:
        for m, axes in split_grid(parse_grid(keys), chosen).items():
            by_method[m].update(axes)
    seed_list = parse_seeds(seeds) if seeds is not None else list(file_seeds or DEFAULT_SEEDS)
    for m, axes in by_method.items():
        _check_size(axes, f"--grid ({m})")
    return {m: dict(sorted(a.items())) for m, a in by_method.items()}, seed_list, chosen
