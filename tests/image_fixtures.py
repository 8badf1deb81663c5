"""Tiny seeded models and prompters shared by the image-side tests (no downloads)."""

from __future__ import annotations

import torch

from zipfast.data.planted import planted_model


def tiny_clip(name: str = "zipfast-tiny", seed: int = 0):
    """A random-init open_clip model (seeded, logit scale 100) and its tokenizer."""
    return planted_model(seed, name=name)


def tiny_mae_config(image_size: int = 224):
    """A small ViT-MAE architecture for BlackVIP's encoder (random weights in the tests)."""
    from transformers import ViTMAEConfig

    return ViTMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        image_size=image_size, patch_size=32)


def tiny_coordinator(seed: int = 0, src_dim: int = 98, p_eps: float = 1.0):
    from zipfast.spaces.coordinator import CoordinatorPrompter, load_coordinator_encoder

    enc = load_coordinator_encoder("vit-mae-base", "none", seed=seed, config=tiny_mae_config())
    return CoordinatorPrompter(enc, enc.z_dim, src_dim=src_dim, p_eps=p_eps)


def images(B: int, size: int, seed: int = 0, K: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (B, 3, size, size) if K is None else (K, B, 3, size, size)
    return torch.randn(*shape, generator=g)
