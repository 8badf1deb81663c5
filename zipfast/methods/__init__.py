"""The method registry: `--method zip|zip-cma|sharpzo|zo-sgd|zsclip|bptvlm|bar|blackvip`.

A method is one file in this folder: its options (a dataclass with the paper's defaults and a
`check()`), its official yaml keys, its query cost, and `build(task, options, seeds) →
Parts(space, optimizer, evaluator)` (zipfast.methods.base). This registry is the one table keyed
by method name; the trainer, the evaluators, the config and the CLI read what they need from it.
Options are set through `TrainConfig.method_options` / `--method-opt KEY=VALUE` (ZIP's own
settings are the flat `TrainConfig` fields of the official TRAINER.ZIP / TRAINER.BASIC keys).
"""

from __future__ import annotations

from typing import Any, Mapping

from zipfast.methods import bar, blackvip, bptvlm, sharpzo, zip, zip_cma, zo_sgd, zsclip
from zipfast.methods.base import Method, MethodOptionError, Parts, Seeds, make_options, options_dict
from zipfast.methods.sharpzo import SHARPZO_RELEASED

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (zip, sharpzo, zo_sgd, zip_cma, zsclip, bptvlm, bar,
                                                                 blackvip)}
# the methods whose candidates change what the image tower sees: they need images, not features
IMAGE_METHODS = tuple(name for name, m in METHODS.items() if m.needs_images)
TEXT_METHODS = tuple(name for name in METHODS if name not in IMAGE_METHODS)
# official TRAINER.NAME → method, of the image-side trainers (their own yaml sections and keys)
IMAGE_TRAINERS = {m.official[0]: name for name, m in METHODS.items() if m.official and m.official_keys}

# --backend names → (text engine, image engine). A method uses the engines of its towers; a name
# that selects no engine of its towers is refused by name (exit 2), never passed on.
BACKENDS = {"auto": ("torch-batched", "image-batched"),
            "torch-batched": ("torch-batched", "image-batched"),
            "torch-reference": ("torch-reference", "image-reference"),
            "image-batched": (None, "image-batched"),
            "image-reference": (None, "image-reference")}

__all__ = ["METHODS", "IMAGE_METHODS", "TEXT_METHODS", "Method", "MethodOptionError", "Parts", "Seeds", "BACKENDS",
           "engine_backends", "resolve_options", "options_dict", "SHARPZO_RELEASED", "get", "IMAGE_TRAINERS",
           "make_options"]


def get(method: str) -> Method:
    """The registered method, or MethodOptionError naming the choices."""
    if not isinstance(method, str) or method not in METHODS:
        raise MethodOptionError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method]


def engine_backends(method: str, backend: str) -> dict[str, str]:
    """{tower: engine backend} of `method` under --backend `backend`, e.g. {"text": "torch-batched"}.
    MethodOptionError names the backend and the choices when it fits none of the method's towers."""
    towers = get(method).towers
    pair = BACKENDS.get(backend) if isinstance(backend, str) else None
    choices = [b for b, (t, i) in BACKENDS.items() if ("text" not in towers or t) and ("image" not in towers or i)]
    if pair is None or backend not in choices:
        raise MethodOptionError(f"backend {backend!r} does not apply to method {method!r} (its query engines: "
                                f"{' and '.join(towers)}); choose one of {', '.join(choices)}")
    return {tower: pair[("text", "image").index(tower)] for tower in towers}


def resolve_options(method: str, overrides: Mapping[str, Any] | None = None):
    """The validated options dataclass of `method` with `overrides` applied (strings parsed per type)."""
    return make_options(method, get(method).options, overrides)
