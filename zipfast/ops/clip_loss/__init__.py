"""clip_loss: per-candidate CLIP cross-entropy and accuracy from text and image features.

text [K, C, E] (not normalised), image [B, E] (not normalised), labels [B], logit_scale []
(log scale) → (loss [K], acc [K] in %). Implementations: reference (`reference.clip_loss`),
torch (`reference.clip_loss_fast`), triton (`triton.py`). No CUDA C++ kernel: on CUDA the
Triton kernel serves. Custom op `torch.ops.zipfast.clip_loss`.
"""

from __future__ import annotations

import torch

from zipfast.ops import registry
from zipfast.ops.clip_loss import reference

OP = "clip_loss"


def _triton(*args):
    from zipfast.ops.clip_loss.triton import clip_loss as kernel

    return kernel(*args)


registry.register(OP, "reference", reference.clip_loss)
registry.register(OP, "torch", reference.clip_loss_fast)
registry.register(OP, "triton", _triton, registry.triton_runtime)


def _selfcheck(fn, device):
    """K=3 candidates × C=7 classes × E=33, B=5 images: loss within 1e-5, accuracy exact."""
    from zipfast.ops.selfcheck import compare, first_problem

    g = torch.Generator().manual_seed(1)
    text, image = torch.randn(3, 7, 33, generator=g).to(device), torch.randn(5, 33, generator=g).to(device)
    labels, scale = torch.tensor([0, 6, 3, 3, 1], device=device), torch.tensor(4.6052, device=device)
    loss, acc = fn(text, image, labels, scale)
    want_loss, want_acc = reference.clip_loss(text, image, labels, scale)
    return first_problem(compare(loss.float(), want_loss, "clip_loss loss", rtol=1e-5),
                         compare(acc.float(), want_acc.float(), "clip_loss accuracy"))


registry.register_check(OP, _selfcheck)


@torch.library.custom_op("zipfast::clip_loss", mutates_args=())
def clip_loss_op(text_features: torch.Tensor, image_features: torch.Tensor, labels: torch.Tensor,
                 logit_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _, fn = registry.resolve(OP, text_features.device)
    loss, acc = fn(text_features, image_features, labels, logit_scale)
    return loss.float(), acc.float()


@clip_loss_op.register_fake
def _(text_features, image_features, labels, logit_scale):
    K = text_features.shape[0]
    return text_features.new_empty(K, dtype=torch.float32), text_features.new_empty(K, dtype=torch.float32)


def clip_loss(text_features: torch.Tensor, image_features: torch.Tensor, labels: torch.Tensor, logit_scale):
    """(loss [K], acc [K] in %) of K candidates' text features on one minibatch."""
    if text_features.dim() != 3 or image_features.dim() != 2 or text_features.shape[-1] != image_features.shape[-1]:
        raise ValueError(f"clip_loss needs text [K, C, E] and image [B, E], got {tuple(text_features.shape)} and "
                         f"{tuple(image_features.shape)}")
    dev = text_features.device
    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=dev).reshape(())
    return clip_loss_op(text_features.float(), image_features.to(dev, torch.float32), labels.to(dev, torch.int64),
                        scale)
