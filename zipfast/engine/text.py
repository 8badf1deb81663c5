"""Query engines: K candidate contexts + one minibatch of image features → K losses.

`ReferenceEngine` is the truth: each candidate is encoded on its own, over all 77 token
positions, through open_clip's own transformer, exactly as the official code does. Faster
engines are implementations of the same contract and are tested against it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from zipfast import reference as ref
from zipfast.env import PRECISIONS, precision_substitution, resolve_precision
from zipfast.engine.towers import ClassPrompts, TextTower

def autocast_for(device: torch.device, precision: str):
    """The autocast context of a precision name; fp32 → no autocast."""
    dtype = PRECISIONS[resolve_precision(precision, device)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Engine:
    """The engine contract: text_features(ctx [K, m, D]) → [K, C, E]; losses and logits follow."""

    name = "engine"

    def __init__(self, tower: TextTower, prompts: ClassPrompts, precision: str = "fp32"):
        if precision not in PRECISIONS and precision != "auto":
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.device = tower.positional_embedding.device
        self.tower, self.prompts = tower, prompts
        self.precision = resolve_precision(precision, self.device)
        self.eot = prompts.eot.to(self.device)
        # what runs differently from what was asked (logged once each; the run report lists them)
        self.fallbacks: list[dict] = []
        why = precision_substitution(precision, self.device)
        if why:
            self.fallbacks.append({"what": "precision", "requested": precision, "used": self.precision, "why": why})

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.tower.logit_scale.detach()

    def text_features(self, ctx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def text_features_many(self, ctxs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Several runs' contexts [K_r, m, D] → their features [K_r, C, E]; an engine that can batch
        them (zipfast.engine.batched) does so with each run's result unchanged."""
        return [self.text_features(c) for c in ctxs]

    def logits_from_text(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """image_features [B, E], text_features [..., C, E] → logits [..., B, C] (fp32)."""
        return ref.clip_logits(image_features.float().to(text_features.device), text_features.float(),
                               self.logit_scale)

    def logits(self, ctx: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """ctx [K, m, D], image_features [B, E] → logits [K, B, C]."""
        return self.logits_from_text(image_features, self.text_features(ctx))

    def losses(self, ctx: torch.Tensor, image_features: torch.Tensor, labels: torch.Tensor):
        """→ (cross-entropy losses [K], training accuracies [K] in %) on one minibatch."""
        return losses_from_logits(self.logits(ctx, image_features), labels)


class ReferenceEngine(Engine):
    """One text-encoder pass per candidate, 77 positions, fp32 unless told otherwise."""

    name = "torch-reference"

    def text_features(self, ctx: torch.Tensor) -> torch.Tensor:
        """ctx [K, m, D] → text features [K, C, E] (float32, not normalised)."""
        out = []
        with torch.no_grad(), autocast_for(self.device, self.precision):
            for k in range(ctx.shape[0]):
                x = self.prompts.assemble(ctx[k].to(self.device))
                out.append(self.tower.encode(x, self.eot).float())
        return torch.stack(out)


def losses_from_logits(logits: torch.Tensor, labels: torch.Tensor):
    """logits [K, B, C], labels [B] → (mean CE per candidate [K], accuracy in % [K])."""
    K, B, C = logits.shape
    ce = F.cross_entropy(logits.reshape(K * B, C), labels.repeat(K), reduction="none").view(K, B).mean(1)
    acc = (logits.argmax(-1) == labels).float().mean(1) * 100
    return ce, acc


