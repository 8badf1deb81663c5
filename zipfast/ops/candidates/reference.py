"""The fused candidates op, as the composition of the reference functions it fuses:

    z    = perturb(seed, stream, step) [q, δ]           (zipfast.ops.perturb.reference)
    W    = [w + c_k z ; w − c_k z]       [2q, δ]         (zipfast.reference.antithetic_candidates)
    ctx  = ctx0 + Fastfood(U·diag(s)·Vᵀ + shared_V)      (zipfast.reference.reconstruct_ctx)
    out  = ctx (+ pos)                   [2q, m, D]

This is also the PyTorch path (already batched over candidates and tokens).
"""

from __future__ import annotations

import torch

from zipfast import reference as ref
from zipfast.ops.perturb import reference as perturb_ref


def candidates(w: torch.Tensor, seed, step, ck: torch.Tensor, ctx0: torch.Tensor, ff: ref.FastfoodParams,
               rank: int, q: int, stream: int = 0, dist: str = "segmented",
               pos: torch.Tensor | None = None) -> torch.Tensor:
    """w [δ], ck [] float32, ctx0 [m, D], pos [m, D] or None → contexts [2q, m, D] float32."""
    z = perturb_ref.perturb(seed, stream, step, q, w.shape[-1], dist, device=w.device)
    ctx = ref.reconstruct_ctx(ref.antithetic_candidates(w, z, ck), ctx0, ff, rank)
    return ctx if pos is None else ctx + pos
