"""The frozen CLIP image tower of an open_clip model, driven by pixels or by patch tokens.

Pixel prompts (BAR's frame, BlackVIP's additive prompt) only need `encode_pixels`, which is
open_clip's own `model.visual` and works for every open_clip image tower. Visual prompt
tokens (BPT-VLM) need the token sequence between the positional embedding and `ln_pre`:
`embed` builds [CLS] + patches + positions, the caller appends its tokens, and
`encode_tokens` runs ln_pre → transformer → pooling → projection exactly as open_clip's
`VisionTransformer.forward` does after its own embedding step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zipfast.engine.text_tower import UnsupportedModelError


class ImageTower(nn.Module):
    """model.visual of an open_clip CLIP model.

    encode_pixels(x [N, 3, H, W]) → features [N, E] (not normalised);
    embed(x [N, 3, H, W]) → tokens [N, 1 + G, W] (CLS + patches + positions, before ln_pre);
    encode_tokens(t [N, T, W]) → features [N, E], T ≥ 1 + G (extra tokens after the patches).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        visual = getattr(model, "visual", None)
        if not isinstance(visual, nn.Module):
            raise UnsupportedModelError(f"{type(model).__name__} has no open_clip image tower (.visual)")
        self.visual = visual
        size = getattr(visual, "image_size", None)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size) if size is not None else None
        self.logit_scale = model.logit_scale
        self.token_prompts_ok, self.token_reason = self._token_support(visual)
        self.width = visual.conv1.out_channels if self.token_prompts_ok else None
        self.output_dim = int(visual.output_dim)

    @staticmethod
    def _token_support(v) -> tuple[bool, str]:
        needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "_pool")
        missing = [a for a in needed if getattr(v, a, None) is None]
        if missing:
            return False, f"{type(v).__name__} is not an open_clip VisionTransformer (missing {', '.join(missing)})"
        if getattr(v, "attn_pool", None) is not None:
            return False, "attentional pooling: appended prompt tokens would change the pooled set"
        if getattr(v, "pool_type", "tok") != "tok":
            return False, f"pooling {v.pool_type!r}: visual prompt tokens need CLS-token pooling ('tok')"
        return True, ""

    def require_tokens(self) -> None:
        if not self.token_prompts_ok:
            raise UnsupportedModelError(f"visual prompt tokens are not supported for this image tower: "
                                        f"{self.token_reason}")

    @property
    def n_tokens(self) -> int:
        """1 + G: CLS plus patch tokens of one image."""
        return self.visual.positional_embedding.shape[0]

    def encode_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)

    def encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.ln_pre(x)
        x = v.transformer(x)
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled


def normalize(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features.float(), dim=-1)
