"""ZIP's parameter space: the low-rank, Fastfood-projected prompt context.

Separate from the optimiser (which only sees flat vectors w ∈ R^δ) and from the engine
(which only sees contexts ctx ∈ R^{K×m×D}).
"""

from __future__ import annotations

import torch

from . import reference as ref


class ZIPSpace:
    """w [K, δ] ↦ ctx [K, m, D] with fixed Fastfood randomness and initial context ctx0 [m, D]."""

    def __init__(self, ctx0: torch.Tensor, intrinsic_dim: int, rank: int, fastfood: ref.FastfoodParams):
        m, D = ctx0.shape
        if intrinsic_dim < m:
            raise ValueError(f"intrinsic_dim {intrinsic_dim} is smaller than the number of context tokens {m}")
        self.ctx0 = ctx0
        self.n_ctx, self.width = m, D
        self.intrinsic_dim, self.rank = intrinsic_dim, rank
        self.d_t = ref.token_intrinsic_dim(intrinsic_dim, m)
        if rank > self.d_t:
            raise ValueError(f"rank {rank} exceeds the per-token intrinsic size d // m = {self.d_t}")
        self.fastfood = fastfood
        self.dim = ref.param_dim(m, intrinsic_dim, rank)

    @classmethod
    def create(cls, ctx0: torch.Tensor, intrinsic_dim: int, rank: int, generator: torch.Generator):
        ff = ref.draw_fastfood(ctx0.shape[0], ctx0.shape[1], generator).to(ctx0.device, ctx0.dtype)
        return cls(ctx0, intrinsic_dim, rank, ff)

    def init_params(self, generator: torch.Generator) -> torch.Tensor:
        return ref.init_params(self.n_ctx, self.intrinsic_dim, self.rank, generator).to(self.ctx0.device)

    def contexts(self, w: torch.Tensor) -> torch.Tensor:
        """w [K, δ] (or [δ]) → ctx [K, m, D] (or [m, D])."""
        if w.dim() == 1:
            return self.contexts(w.unsqueeze(0))[0]
        return ref.reconstruct_ctx(w.to(self.ctx0.dtype), self.ctx0, self.fastfood, self.rank)

    def state_dict(self) -> dict:
        return {"ctx0": self.ctx0.cpu(), "intrinsic_dim": self.intrinsic_dim, "rank": self.rank,
                "fastfood": self.fastfood.to("cpu").state_dict()}

    @classmethod
    def from_state_dict(cls, sd: dict, device="cpu") -> "ZIPSpace":
        ctx0 = sd["ctx0"].to(device)
        ff = ref.FastfoodParams.from_state_dict(sd["fastfood"]).to(device)
        return cls(ctx0, int(sd["intrinsic_dim"]), int(sd["rank"]), ff)


def random_ctx0(n_ctx: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """The few-shot default initial context: N(0, 0.02²) per entry."""
    return torch.randn(n_ctx, width, generator=generator) * 0.02
