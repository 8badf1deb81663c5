"""Binding of the CUDA perturb kernel (csrc/kernels/perturb.cu, math in
csrc/include/zipfast/perturb_math.h)."""

from __future__ import annotations

import torch

from zipfast.ops import extension as ext
from zipfast.ops.perturb.reference import DIST_CODES


def perturb(seed: torch.Tensor, step: torch.Tensor, stream: int, q: int, dim: int, dist: str) -> torch.Tensor:
    mod = ext.require_cuda_module()
    out = torch.empty(q, dim, device=step.device, dtype=torch.float32)
    seed, step = seed.to(step.device, torch.int64).contiguous(), step.to(torch.int64).contiguous()
    ext.check_cuda_args(out=out, seed=seed, step=step)
    mod.perturb(out.data_ptr(), seed.data_ptr(), step.data_ptr(), stream & 0xFFFFFFFF, q, dim, DIST_CODES[dist],
                ext.stream_of(out))
    return out
