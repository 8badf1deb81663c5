"""The planted task: a known answer planted in a random-init open_clip text tower.

A teacher context ctx* = ctx0 + Δ (Δ a random direction, ‖Δ_i‖ = delta_scale·‖ctx0_i‖, not
inside any method's subspace) defines class features t_k; "image features" are
x = normalise(t_y + σ·ε/√E), ε ~ N(0, I). The student starts from ctx0. Seeded throughout.

Splits, drawn in this order from the one generator: train (`shots` per class), test
(`test_per_class` per class), then the few-shot validation split (min(shots, 4) per class, as
Dassl draws val); val comes last so that train and test are what they were before it existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zipfast.env import check_memory
from zipfast.spaces.context import random_ctx0
from zipfast.engine.towers import ClassPrompts, TextTower
from zipfast.data.classnames import EUROSAT, LABEL_SETS

PLANTED_MODEL = "zipfast-planted"  # 4-layer, 256-wide text tower (the planted-task calibration point)


@dataclass
class PlantedTask:
    """Features [N, E] (L2-normalised) and labels [N] of each split, ctx0 / teacher [m, D]. The
    validation split (val_features [C·v, E], val_labels [C·v]) has v = min(shots, 4) per class."""

    classnames: list
    train_features: torch.Tensor
    train_labels: torch.Tensor
    test_features: torch.Tensor
    test_labels: torch.Tensor
    ctx0: torch.Tensor
    teacher_ctx: torch.Tensor
    val_features: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None


def planted_model(seed: int = 0, name: str = PLANTED_MODEL, logit_scale: float = 100.0):
    """A random-init open_clip model (seeded) with logit scale 100, as in pretrained CLIP.

    Returns (model, tokenizer).
    """
    from zipfast.models import load_clip

    import logging

    quiet = logging.getLogger()  # open_clip warns that a random init has no pretrained weights: intended here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model, tokenizer, _ = load_clip(name, pretrained="none", seed=seed)
    finally:
        quiet.setLevel(level)
    with torch.no_grad():
        model.logit_scale.fill_(torch.log(torch.tensor(logit_scale)).item())
    return model, tokenizer


def make_planted_task(tower: TextTower, tokenizer, classnames=EUROSAT, n_ctx: int = 8, shots: int = 16,
                      test_per_class: int = 100, delta_scale: float = 4.0, sigma: float = 0.7,
                      seed: int = 0) -> PlantedTask:
    if isinstance(classnames, str):
        if classnames not in LABEL_SETS:
            raise ValueError(f"unknown label set {classnames!r}; choose one of {', '.join(LABEL_SETS)}")
        classnames = LABEL_SETS[classnames]
    if shots <= 0 or test_per_class <= 0:
        raise ValueError(f"shots ({shots}) and test_per_class ({test_per_class}) must be positive")
    # The largest tensors are each split's features [classes × n, E] float32 (and their noise, as large):
    # an impossible size is refused here, before any allocation, naming the setting.
    # The shots size two splits, train and val (min(shots, 4) per class): they count together.
    C, E, n_val = len(classnames), tower.embed_dim, val_per_class(shots)
    for flag, n, images, size in (
            ("--test-per-class / TrainConfig.test_per_class", test_per_class, f"{test_per_class:,}", test_per_class),
            ("--shots / TrainConfig.shots", shots, f"({shots:,} train + {n_val} val)", shots + n_val)):
        check_memory(f"{flag} {n} on the planted task ({C} classes × {images} images × {E} floats)", C * size * E * 4,
                     f"lower {flag.split(' /')[0]} (the planted task's defaults are 16 shots and 100 test images per class)")
    g = torch.Generator().manual_seed(seed)
    D = tower.width
    ctx0 = random_ctx0(n_ctx, D, g)
    direction = torch.randn(n_ctx, D, generator=g)
    delta = direction / direction.norm(dim=-1, keepdim=True) * (delta_scale * ctx0.norm(dim=-1, keepdim=True))
    teacher = ctx0 + delta
    prompts = ClassPrompts.build(tower, tokenizer, classnames, n_ctx)
    dev = tower.positional_embedding.device
    with torch.no_grad():
        t = F.normalize(tower.encode(prompts.assemble(teacher.to(dev)), prompts.eot.to(dev)).float().cpu(), dim=-1)
    E = t.shape[-1]

    def split(n_per_class):
        y = torch.arange(len(classnames)).repeat_interleave(n_per_class)
        x = F.normalize(t[y] + sigma * torch.randn(len(y), E, generator=g) / E ** 0.5, dim=-1)
        return x, y

    xtr, ytr = split(shots)
    xte, yte = split(test_per_class)
    xva, yva = split(n_val)  # after test: the train and test draws are unchanged by it
    return PlantedTask(list(classnames), xtr, ytr, xte, yte, ctx0, teacher, xva, yva)


def val_per_class(shots: int) -> int:
    """Images per class of the few-shot validation split: min(shots, 4), as Dassl draws val."""
    return min(shots, 4)
