"""BPT-VLM's parameter space: one intrinsic vector y = [y_L ; y_V] for text and vision prompts.

Official semantics (LOG-postech/ZIP trainers/bptvlm.py, after BruthYU/BPT-VLM):

- text context [m_L, D] = reshape(A_L · y_L), A_L ∈ R^{m_L·D × d_L} with entries
  N(0, std_L²), std_L = std(token embedding weights) / (√d_L · σ); no initial prompt p0;
- visual prompt tokens [m_V, W] = reshape(A_V · y_V), A_V ∈ R^{m_V·W × d_V} with entries
  N(mu_V, std_V²), mu_V = mean(conv1 weights) · 3072 / d_V,
  std_V = std(conv1 weights) · √(3072 / d_V) · σ; the tokens are appended after all patch
  tokens (after the positional embedding, before ln_pre).

Defaults (TRAINER.BPTVLM): m_L = m_V = 5, d_L = d_V = 2000, σ = 1. The official code draws
A_L then A_V from the global torch RNG; here they come from a seeded generator.
"""

from __future__ import annotations

import torch

from zipfast.errors import UserError

_CONV_SCALE = 3072  # the official constant in the vision projection's mean and std


class BPTVLMSpace:
    """y [K, d_L + d_V] ↦ text contexts [K, m_L, D] and visual prompt tokens [K, m_V, W]."""

    kind = "tokens"

    def __init__(self, proj_l: torch.Tensor, proj_v: torch.Tensor, n_tokens_l: int, n_tokens_v: int):
        self.proj_l, self.proj_v = proj_l.float(), proj_v.float()  # [m_L·D, d_L], [m_V·W, d_V]
        self.n_tokens_l, self.n_tokens_v = n_tokens_l, n_tokens_v
        self.dim_l, self.dim_v = proj_l.shape[1], proj_v.shape[1]
        self.text_width = proj_l.shape[0] // n_tokens_l
        self.vision_width = proj_v.shape[0] // n_tokens_v
        self.dim = self.dim_l + self.dim_v

    @staticmethod
    def projection_stats(token_embedding: torch.Tensor, conv1: torch.Tensor, dim_l: int, dim_v: int,
                         sigma: float) -> dict:
        """The official (mu, std) of both projections from the model's weights."""
        emb, conv = token_embedding.detach().double(), conv1.detach().double()
        return {"mu_l": 0.0, "std_l": float(emb.std(unbiased=False)) / (dim_l ** 0.5 * sigma),
                "mu_v": float(conv.mean()) * _CONV_SCALE / dim_v,
                "std_v": float(conv.std(unbiased=False)) * (_CONV_SCALE / dim_v) ** 0.5 * sigma}

    @classmethod
    def create(cls, token_embedding: torch.Tensor, conv1: torch.Tensor, n_tokens_l: int = 5, n_tokens_v: int = 5,
               dim_l: int = 2000, dim_v: int = 2000, sigma: float = 1.0, generator: torch.Generator | None = None):
        """token_embedding [vocab, D] (text tower), conv1 [W, 3, p, p] (image tower's patch embedding)."""
        for name, v in (("TOKENS_L", n_tokens_l), ("TOKENS_V", n_tokens_v), ("INTRINSIC_DIM_L", dim_l),
                        ("INTRINSIC_DIM_V", dim_v)):
            if not isinstance(v, int) or v < 1:
                raise UserError(f"TRAINER.BPTVLM.{name} must be a positive integer, got {v!r}")
        if not sigma > 0:
            raise UserError(f"TRAINER.BPTVLM.SIGMA must be > 0, got {sigma!r}")
        s = cls.projection_stats(token_embedding, conv1, dim_l, dim_v, sigma)
        D, W = token_embedding.shape[1], conv1.shape[0]
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        proj_l = torch.randn(n_tokens_l * D, dim_l, generator=g) * s["std_l"] + s["mu_l"]
        proj_v = torch.randn(n_tokens_v * W, dim_v, generator=g) * s["std_v"] + s["mu_v"]
        return cls(proj_l, proj_v, n_tokens_l, n_tokens_v)

    def to(self, device) -> "BPTVLMSpace":
        self.proj_l, self.proj_v = self.proj_l.to(device), self.proj_v.to(device)
        return self

    def init_params(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The CMA-ES start: y = 0."""
        return torch.zeros(self.dim)

    def text_ctx(self, y: torch.Tensor) -> torch.Tensor:
        """y [K, dim] → text contexts [K, m_L, D]."""
        y = y.to(self.proj_l.device, torch.float32)
        return (y[:, :self.dim_l] @ self.proj_l.T).view(y.shape[0], self.n_tokens_l, self.text_width)

    def visual_tokens(self, y: torch.Tensor) -> torch.Tensor:
        """y [K, dim] → visual prompt tokens [K, m_V, W]."""
        y = y.to(self.proj_v.device, torch.float32)
        return (y[:, self.dim_l:] @ self.proj_v.T).view(y.shape[0], self.n_tokens_v, self.vision_width)

    def state_dict(self) -> dict:
        return {"proj_l": self.proj_l.cpu(), "proj_v": self.proj_v.cpu(), "n_tokens_l": self.n_tokens_l,
                "n_tokens_v": self.n_tokens_v}

    @classmethod
    def from_state_dict(cls, sd: dict, device="cpu") -> "BPTVLMSpace":
        return cls(sd["proj_l"], sd["proj_v"], int(sd["n_tokens_l"]), int(sd["n_tokens_v"])).to(device)
