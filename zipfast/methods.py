"""The method registry: `--method zip|zip-cma|sharpzo|zo-sgd|zsclip|bptvlm|bar|blackvip` → space + optimiser.

Each method has one options section with documented defaults (ZIP's are the flat
`TrainConfig` fields of the official TRAINER.ZIP / TRAINER.BASIC keys; the others are
dataclasses here, set through `TrainConfig.method_options` / `--method-opt KEY=VALUE`).
Every method's query cost per round is stated in `Method.cost`.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from . import image_options
from .image_optim import PyCMA
from .optim import SPSA
from .optim.protocol import Optimizer
from .optim.sharpzo import GRAD_ESTIMATORS, MASK_ENDS, SharpZO
from .optim.zo_sgd import ZOSGD
from .space import ProjectionSpace, ZIPSpace


class MethodOptionError(ValueError):
    """A method option is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class ZIPOptions:
    """ZIP has no options here: it reads the flat TrainConfig fields (opt_type, sp_avg, spsa_params, moms,
    n_ctx, intrinsic_dim, rank)."""


@dataclass(frozen=True)
class ZOSGDOptions:
    """MeZO-style ZO-SGD on ZIP's space: `pairs` Gaussian antithetic pairs per step (2·pairs queries),
    perturbation scale `mu`, constant step size `lr`."""

    pairs: int = 5
    mu: float = 0.01
    lr: float = 1e-3


@dataclass(frozen=True)
class SharpZOOptions:
    """SharpZO (paper version by default). `dim`: intrinsic dimension d of w; `std`: entry std of the
    projection A [m·D, d]; `init_text`: the words whose token embeddings are the initial context
    (empty: the run's context, TRAINER.ZIP.CTX_INIT or random N_CTX tokens); the rest as
    `zipfast.optim.sharpzo.SharpZO`. `preset="released"` starts from the released code's settings
    instead (explicit options still win)."""

    preset: str = "paper"
    dim: int = 512
    std: float = 1.0
    popsize: int = 40
    sigma0: float = 0.4
    rho: float = 0.1
    change_point: int = 50
    grad_estimator: str = "rge"
    grad_dirs: int = 5
    grad_mu: float = 1e-3
    mu: float = 1e-3
    lr: float = 1e-3
    pairs: int = 1
    prune: bool = True
    prune_interval: int = 200
    keep_fraction: float = 0.1
    mask_end: str = "top"
    accumulate: bool = False
    bound: float = 0.0
    popsize_rows: bool = False
    init_text: str = ""


# The released code's run script (EuroSAT): coordinate-wise ĝ (2d queries, ε = 1e-3), no pruning
# (--prompt_trainer zo), accumulated stage-2 direction, bounds ±5, change point 100 generations.
# Its ε* has norm ρ/√40 (ĝ is normalised over a [40, d] copy); rho below reproduces that. It starts
# from the 4 tokens of "a photo of a", and its stage-2 parameter is [popsize, d] from the second step.
SHARPZO_RELEASED = {"grad_estimator": "cge", "grad_mu": 1e-3, "prune": False, "mask_end": "bottom",
                    "accumulate": True, "bound": 5.0, "change_point": 100, "rho": 0.1 / 40 ** 0.5,
                    "popsize_rows": True, "init_text": "a photo of a"}


@dataclass(frozen=True)
class ZIPCMAOptions:
    """CMA-ES (pycma, the wrapper BPT-VLM runs: `zipfast.image_optim.PyCMA`) on ZIP's low-rank space, from
    ZIP's initial point: `popsize` candidates per generation, all on one minibatch, initial step size
    `sigma0`; `point` is what is tested and checkpointed as the prompt: the distribution's mean, or the
    best candidate seen ("best", BPT-VLM's rule)."""

    popsize: int = 20
    sigma0: float = 0.03  # of 0.03, 0.1, 0.3 the best on the planted task (docs/methods.md); not tuned on real data
    point: str = "mean"


@dataclass(frozen=True)
class ZeroShotOptions:
    """Zero-shot CLIP: `template` with "{}" for the class name; empty = the dataset's official template
    when its name is known (zipfast.datasets.specs), else "a photo of a {}."."""

    template: str = ""


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    options: type
    cost: str  # queries per round, for the docs and `zipfast compare`
    towers: tuple = ("text",)  # the query engines a candidate runs: "text", "image" or both


# --backend names → (text engine, image engine). A method uses the engines of its towers; a name
# that selects no engine of its towers is refused by name (exit 2), never passed on.
BACKENDS = {"auto": ("torch-batched", "image-batched"),
            "torch-batched": ("torch-batched", "image-batched"),
            "torch-reference": ("torch-reference", "image-reference"),
            "image-batched": (None, "image-batched"),
            "image-reference": (None, "image-reference")}


def engine_backends(method: str, backend: str) -> dict[str, str]:
    """{tower: engine backend} of `method` under --backend `backend`, e.g. {"text": "torch-batched"}.
    MethodOptionError names the backend and the choices when it fits none of the method's towers."""
    towers = METHODS[method].towers
    pair = BACKENDS.get(backend) if isinstance(backend, str) else None
    choices = [b for b, (t, i) in BACKENDS.items() if ("text" not in towers or t) and ("image" not in towers or i)]
    if pair is None or backend not in choices:
        raise MethodOptionError(f"backend {backend!r} does not apply to method {method!r} (its query engines: "
                                f"{' and '.join(towers)}); choose one of {', '.join(choices)}")
    return {tower: pair[("text", "image").index(tower)] for tower in towers}


METHODS: dict[str, Method] = {
    "zip": Method("zip", "ZIP: low-rank Fastfood space, clipped SPSA (the official defaults)", ZIPOptions,
                  "2·sp_avg = 10 per step"),
    "zo-sgd": Method("zo-sgd", "ZO-SGD: Gaussian two-point estimator on ZIP's space, no clipping", ZOSGDOptions,
                     "2·pairs = 10 per step"),
    "sharpzo": Method("sharpzo", "SharpZO: sharpness-aware CMA-ES, then sparse ZO-SGD with Z-pruning",
                      SharpZOOptions, "stage 1: 2·grad_dirs + popsize = 50 per generation (cge: 2·d + popsize); "
                                      "stage 2: 2·pairs = 2 per step, + 2·grad_dirs every P steps"),
    "zip-cma": Method("zip-cma", "ZIP's low-rank Fastfood space searched by CMA-ES (an ablation of ZIP's optimiser)",
                      ZIPCMAOptions, "popsize = 20 per generation"),
    "zsclip": Method("zsclip", "zero-shot CLIP: a hand-written template prompt", ZeroShotOptions, "0"),
    # image-side methods: trained by zipfast.image_trainer.ImagePromptTrainer (they need images)
    "bptvlm": Method("bptvlm", "BPT-VLM: CMA-ES over 5 text + 5 visual prompt tokens (2,000 + 2,000 dims)",
                     image_options.BPTVLMConfig, "pop_size × minibatches per epoch = 15 per generation",
                     ("text", "image")),
    "bar": Method("bar", "BAR: a reprogramming frame around the image, one-sided random gradient-free",
                  image_options.BARConfig, "1 + q = 6 per step", ("image",)),
    "blackvip": Method("blackvip", "BlackVIP: input-dependent visual prompt (MAE encoder + decoder), SPSA-GC",
                       image_options.BlackVIPConfig, "2·sp_avg = 10 per step", ("image",)),
}
IMAGE_METHODS = image_options.METHODS


def _coerce(name: str, field: dataclasses.Field, value: Any) -> Any:
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
        raise MethodOptionError(f"method option {name}.{field.name} must be a {kind}, got {value!r}")
    return float(value) if kind == "float" else tuple(value) if kind == "tuple" else value


def resolve_options(method: str, overrides: Mapping[str, Any] | None = None):
    """The validated options dataclass of `method` with `overrides` applied."""
    if method not in METHODS:
        raise MethodOptionError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    cls = METHODS[method].options
    fields = {f.name: f for f in dataclasses.fields(cls)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        known = ", ".join(fields) or "none"
        raise MethodOptionError(f"unknown option(s) {', '.join(map(repr, unknown))} for method {method!r} "
                                f"(its options: {known})")
    values = {k: _coerce(method, fields[k], v) for k, v in overrides.items()}
    if method == "sharpzo" and values.get("preset", "paper") == "released":
        values = {**SHARPZO_RELEASED, **values}
    if method in image_options.METHODS:
        try:
            return image_options.validate(method, cls(**values))
        except image_options.ImageOptionError as e:
            raise MethodOptionError(str(e)) from e
    opts = cls(**values)
    _check_ranges(method, opts)
    return opts


def _check_ranges(method: str, o) -> None:
    def need(cond, field, what):
        if not cond:
            raise MethodOptionError(f"method option {method}.{field} must be {what}, got {getattr(o, field)!r}")

    if isinstance(o, ZOSGDOptions):
        need(o.pairs >= 1, "pairs", ">= 1")
        need(o.mu > 0, "mu", "> 0")
        need(o.lr > 0, "lr", "> 0")
    if isinstance(o, SharpZOOptions):
        need(o.preset in ("paper", "released"), "preset", "paper or released")
        for f in ("dim", "popsize", "grad_dirs", "pairs", "prune_interval"):
            need(getattr(o, f) >= 1, f, ">= 1")
        need(o.popsize >= 2, "popsize", ">= 2")
        for f in ("std", "sigma0", "grad_mu", "mu", "lr"):
            need(getattr(o, f) > 0, f, "> 0")
        need(o.rho >= 0, "rho", ">= 0")
        need(o.change_point >= 0, "change_point", ">= 0")
        need(o.bound >= 0, "bound", ">= 0 (0 = unbounded)")
        need(0 < o.keep_fraction <= 1, "keep_fraction", "in (0, 1]")
        need(o.grad_estimator in GRAD_ESTIMATORS, "grad_estimator", " or ".join(GRAD_ESTIMATORS))
        need(o.mask_end in MASK_ENDS, "mask_end", " or ".join(MASK_ENDS))
    if isinstance(o, ZIPCMAOptions):
        need(o.popsize >= 2, "popsize", ">= 2")
        need(o.sigma0 > 0, "sigma0", "> 0")
        need(o.point in ("mean", "best"), "point", "mean or best")
    if isinstance(o, ZeroShotOptions):
        need(o.template == "" or "{}" in o.template, "template", 'a text containing "{}"')


def init_text(config) -> str:
    """The words the context starts from: TRAINER.ZIP.CTX_INIT (ctx_init), else the method's own
    `init_text` option where it has one (SharpZO's released preset: "a photo of a"), else ""."""
    if config.ctx_init.replace("_", " ").strip():
        return config.ctx_init
    return getattr(resolve_options(config.method, config.method_options), "init_text", "")


def build(config, ctx0: torch.Tensor, seed_for: Callable[[int], int], tags) -> tuple[Any, Optimizer | None]:
    """(parameter space, optimiser) of config.method starting from ctx0 [m, D]; zsclip → (None, None).

    seed_for(tag) derives a seed; tags = (space, params, optimiser) tags.
    """
    space_tag, params_tag, optim_tag = tags
    opts = resolve_options(config.method, config.method_options)
    if config.method == "zsclip":
        return None, None
    gen = lambda tag: torch.Generator().manual_seed(seed_for(tag))  # noqa: E731
    if config.method == "sharpzo":
        space = ProjectionSpace.create(ctx0, opts.dim, opts.std, gen(space_tag))
        kw = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)
              if f.name not in ("preset", "dim", "std", "init_text")}
        return space, SharpZO(space.init_params(), seed=seed_for(optim_tag), **kw)
    space = ZIPSpace.create(ctx0, config.intrinsic_dim, config.rank, gen(space_tag))
    w0 = space.init_params(gen(params_tag))
    if config.method == "zip-cma":  # pycma's maxiter is unbounded: the trainer's budget ends the run
        seed = seed_for(optim_tag) % (2 ** 32 - 1) + 1  # pycma seeds numpy's legacy RNG: 1 … 2^32 − 1
        return space, PyCMA(space.dim, opts.popsize, opts.sigma0, seed=seed, cma_budget=2 ** 62, x0=w0,
                            report=opts.point)
    if config.method == "zo-sgd":
        return space, ZOSGD(w0, opts.pairs, opts.mu, opts.lr, seed=seed_for(optim_tag))
    return space, SPSA(w0, config.opt_type, config.sp_avg, config.spsa_params, config.moms, seed=seed_for(optim_tag),
                       perturbation=config.perturbation)


def space_from_state_dict(sd: dict, device):
    """Rebuild a checkpointed parameter space (its kind follows from its keys)."""
    cls = ProjectionSpace if "proj" in sd else ZIPSpace
    return cls.from_state_dict(sd, device)
