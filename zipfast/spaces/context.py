"""Parameter spaces: flat vectors w ↦ prompt contexts.

`ZIPSpace`: ZIP's low-rank, Fastfood-projected context (ZIP, ZO-SGD).
`ProjectionSpace`: a dense Gaussian projection p0 + reshape(A·w) (SharpZO).

Separate from the optimiser (which only sees flat vectors w ∈ R^δ) and from the engine
(which only sees contexts ctx ∈ R^{K×m×D}).
"""

from __future__ import annotations

import torch

from zipfast import reference as ref


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


class ProjectionSpace:
    """SharpZO's (and BPT-VLM's) dense random projection: w [K, d] ↦ ctx [K, m, D],
    ctx = p0 + reshape(A·w, m × D), A [m·D, d] fixed with entries N(0, std²).

    p0 [m, D] is the starting context; w = 0 gives p0 exactly.
    """

    def __init__(self, ctx0: torch.Tensor, proj: torch.Tensor, std: float):
        m, D = ctx0.shape
        if proj.shape[0] != m * D:
            raise ValueError(f"projection has {proj.shape[0]} rows, the context needs m·D = {m * D}")
        self.ctx0, self.proj, self.std = ctx0, proj, float(std)
        self.n_ctx, self.width = m, D
        self.dim = proj.shape[1]

    @classmethod
    def create(cls, ctx0: torch.Tensor, dim: int, std: float, generator: torch.Generator):
        m, D = ctx0.shape
        proj = torch.randn(m * D, dim, generator=generator) * std
        return cls(ctx0, proj.to(ctx0.device, ctx0.dtype), std)

    def init_params(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.zeros(self.dim, device=self.ctx0.device)

    def contexts(self, w: torch.Tensor) -> torch.Tensor:
        """w [K, d] (or [d]) → ctx [K, m, D] (or [m, D])."""
        if w.dim() == 1:
            return self.contexts(w.unsqueeze(0))[0]
        w = w.to(self.ctx0.device, self.ctx0.dtype)
        return self.ctx0 + (w @ self.proj.T).view(-1, self.n_ctx, self.width)

    def state_dict(self) -> dict:
        return {"ctx0": self.ctx0.cpu(), "proj": self.proj.cpu(), "std": self.std}

    @classmethod
    def from_state_dict(cls, sd: dict, device="cpu") -> "ProjectionSpace":
        return cls(sd["ctx0"].to(device), sd["proj"].to(device), float(sd["std"]))
