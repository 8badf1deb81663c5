"""Binding of the CUDA candidates kernel (csrc/kernels/candidates.cu; per-element math in
csrc/include/zipfast/fastfood.h)."""

from __future__ import annotations

import math

import torch

from zipfast.ops import extension as ext
from zipfast.reference import token_dim_of
from zipfast.ops.perturb.reference import DIST_CODES


def candidates(out: torch.Tensor, w, seed, step, ck, ctx0, B, Pi, G, divisor, pos, stream: int, q: int, rank: int,
               dist: str) -> None:
    mod = ext.require_cuda_module()
    m, D = ctx0.shape
    L = B.shape[1]
    dt = token_dim_of(w.shape[0], m, rank)
    ext.check_cuda_args(out=out, w=w, seed=seed, step=step, ck=ck, ctx0=ctx0, B=B, Pi=Pi, G=G, divisor=divisor,
                        pos=pos)
    mod.candidates(out.data_ptr(), w.data_ptr(), seed.data_ptr(), step.data_ptr(), ck.data_ptr(), stream, DIST_CODES[dist],
                   q, m, rank, dt, D, L, ctx0.data_ptr(), B.data_ptr(), Pi.data_ptr(), G.data_ptr(), divisor.data_ptr(),
                   math.sqrt(D / L), ext.ptr(pos), ext.stream_of(out))
