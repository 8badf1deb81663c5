"""What a method file provides (`Method`), what its `build` returns (`Parts`), and the helpers
method files share: option coercion and range checks, and the seed tags of each kind of run.

A method file (`zipfast/methods/<name>.py`) holds the method's options (a dataclass with
defaults and a `check()`), its official yaml keys, its query cost and
`build(task, options, seeds) -> Parts(space, optimizer, evaluator)`. The registry
(`zipfast.methods.METHODS`) lists the files' `METHOD`s; nothing else is keyed by method name.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

import torch

from zipfast.data.sources import derive_seed


class MethodOptionError(ValueError):
    """A method option is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Method:
    """name: the --method value; options: the options dataclass (defaults = the paper's values);
    cost: queries per round, for the docs and `zipfast compare`; build(task, options, seeds) →
    Parts; towers: the query engines a candidate runs ("text", "image" or both); official:
    (the official TRAINER.NAME that runs it, its yaml section under TRAINER) or None; hint: what to
    change after a non-finite loss. The official yaml surface of an image-side method:
    official_keys (option → full yaml key), official_defaults (its section's values in the official
    train.py), official_behaviour (options the official trainer's computation implies) and
    paper_keys (the options `bench-paper` passes: the paper's values)."""

    name: str
    summary: str
    options: type
    cost: str
    build: Callable[..., "Parts"]
    towers: tuple = ("text",)
    official: tuple[str, str] | None = None
    hint: str = "Lower the method's step sizes (--method-opt) or use precision fp32."
    official_keys: Mapping[str, str] = field(default_factory=dict)
    official_defaults: Mapping[str, Any] = field(default_factory=dict)
    official_behaviour: Mapping[str, Any] = field(default_factory=dict)
    paper_keys: tuple = ()
    # the options that shape a trained prompt: an evaluation elsewhere (zipfast.run.prompt) must share them
    prompt_keys: tuple = ()
    # fit(config, options, model, given) → (config, options, notes): fitting a run to its model where
    # the shared rule (zipfast.evaluate.base.adapt_config) is not enough (BAR's frame); None: that rule
    fit: Callable | None = None
    # task_defaults: {dataset: options} where the paper's defaults do not fit a built-in task's tiny model
    task_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # check_config(config): ConfigError unless the shared settings suit the method (ZIP: one step fits)
    check_config: Callable | None = None
    # resources(config, options, cache) → a pretrained module the space needs (BlackVIP's encoder) or None
    resources: Callable | None = None
    # the flat TrainConfig fields (beyond the task's) a run of this method reads: what `zipfast sweep` may
    # vary for it besides its options (zipfast.sweep.grid); "spsa_params" stands for its five elements
    config_keys: tuple = ()
    # the ZIP paper's hyperparameter search space of the method (Table 16): {sweep key: values}; empty where
    # it is not built in (zipfast.sweep.grid.paper_grid refuses it)
    paper_grid: Mapping[str, tuple] = field(default_factory=dict)

    @property
    def needs_images(self) -> bool:
        """Whether a candidate changes what the image tower sees (the task must give pixels)."""
        return "image" in self.towers


class Parts(NamedTuple):
    """What a method's build returns: the prompt space (None for zero-shot CLIP), the optimiser
    (ask/tell, zipfast.optim.protocol; None for zero-shot CLIP) and the evaluator (zipfast.evaluate)."""

    space: Any
    optimizer: Any
    evaluator: Any


class SeedTags(NamedTuple):
    """The tags `derive_seed(run seed, tag)` uses for a run's independent random streams."""

    space: int
    params: int
    optim: int
    ctx0: int = -1


# The text-side methods' streams (ZIP's space, initial point, optimiser, random initial context) and
# the image-side ones': fixed forever, as checkpoints and pinned trajectories depend on them.
TEXT_SEEDS = SeedTags(space=10, params=12, optim=13, ctx0=11)
IMAGE_SEEDS = SeedTags(space=20, params=21, optim=22)

# Method.config_keys of every method that trains: its queries see minibatches of this size.
MINIBATCH_KEYS = ("batch_size",)


class Seeds:
    """The run seed and what a method derives from it: `seed_for(tag)` and `generator(tag)`."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def seed_for(self, tag: int) -> int:
        return derive_seed(self.seed, tag)

    def generator(self, tag: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed_for(tag))


def coerce(method: str, field: dataclasses.Field, value: Any) -> Any:
    """A --method-opt value (a string, or already typed) as the field's type, or MethodOptionError."""
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    if isinstance(value, str) and kind != "str":
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        if kind == "bool" and isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool), "str": isinstance(value, str),
          "tuple": isinstance(value, (tuple, list))}[kind]
    if not ok:
        raise MethodOptionError(f"method option {method}.{field.name} must be a {kind}, got {value!r}")
    return float(value) if kind == "float" else tuple(value) if kind == "tuple" else value


def make_options(method: str, cls: type, overrides: Mapping[str, Any] | None):
    """cls(**overrides), each value coerced to its field's type, then `check()`ed."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        known = ", ".join(fields) or "none"
        raise MethodOptionError(f"unknown option(s) {', '.join(map(repr, unknown))} for method {method!r} "
                                f"(its options: {known})")
    values = {k: coerce(method, fields[k], v) for k, v in overrides.items()}
    preset = getattr(cls, "preset_values", None)
    if preset is not None:
        values = preset(values)
    opts = cls(**values)
    opts.check()
    return opts


def need(opts, method: str, field: str, cond: bool, what: str) -> None:
    """MethodOptionError naming `method.field` and its value unless cond."""
    if not cond:
        raise MethodOptionError(f"method option {method}.{field} must be {what}, got {getattr(opts, field)!r}")


def options_dict(opts) -> dict:
    """The options as JSON values (tuples as lists): the report's method_config, the fingerprint's."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(opts).items()}
