"""Triton kernel of `reference.perturb`: same Philox stream, same float maps, bit for bit.

Philox4x32-10 is Triton's own (`triton.language.random.philox_impl`, the generator of
`tl.rand`). The Gaussian polynomials use only correctly rounded operations (`div_rn`,
`sqrt_rn`); kernels that call them launch with `enable_fp_fusion=False` so no multiply-add
is contracted into an FMA. The `@triton.jit` helpers here are reused by the candidates and
spsa_update kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.random import philox_impl

from zipfast.ops.perturb import reference as ref

DIST_CODES = ref.DIST_CODES  # segmented 0, gaussian 1, rademacher 2
LAUNCH = {"enable_fp_fusion": False}


@triton.jit
def _log_unit(u):
    bits = u.to(tl.int32, bitcast=True)
    e = ((bits >> 23) & 0xFF) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True)
    big = m > 1.41421354
    m = tl.where(big, m * 0.5, m)
    e = tl.where(big, e + 1, e).to(tl.float32)
    s = tl.div_rn(m - 1.0, m + 1.0)
    s2 = s * s
    p = 0.111111112 + s2 * 0.0909090936
    p = 0.142857149 + s2 * p
    p = 0.200000003 + s2 * p
    p = 0.333333343 + s2 * p
    p = 1.0 + s2 * p
    lnm = (s + s) * p
    return e * 0.693359375 + (e * -0.000212194442 + lnm)


@triton.jit
def _cos_2pi(u):
    a = tl.abs(u - 0.5)
    hi = a > 0.25
    b = tl.where(hi, 0.5 - a, a)
    sgn = tl.where(hi, 1.0, -1.0)
    sw = b > 0.125
    x = tl.where(sw, 0.25 - b, b)
    th = x * 6.28318548
    t2 = th * th
    c = 2.48015876e-05 + t2 * -2.755732e-07
    c = -0.00138888892 + t2 * c
    c = 0.0416666679 + t2 * c
    c = -0.5 + t2 * c
    c = 1.0 + t2 * c
    s = -0.000198412701 + t2 * 2.75573188e-06
    s = 0.00833333377 + t2 * s
    s = -0.166666672 + t2 * s
    s = 1.0 + t2 * s
    s = th * s
    return sgn * tl.where(sw, s, c)


@triton.jit
def z_at(seed, stream, step, j, i, DIST: tl.constexpr):
    """The perturbation value at coordinate i (uint32 tensor) of pair j at `step`."""
    zero = i * 0
    r0, r1, r2, r3 = philox_impl(i, zero + j, zero + step, zero, zero + seed, zero + stream, 10)
    if DIST == 0:
        mag = ((r0 >> 9) + (1 << 23)).to(tl.float32) * 5.9604644775390625e-08
        z = tl.where((r1 >> 31) == 1, -mag, mag)
    elif DIST == 2:
        z = 1.0 - 2.0 * (r1 >> 31).to(tl.float32)
    else:
        u1 = ((r2 >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08
        u2 = (r3 >> 8).to(tl.float32) * 5.9604644775390625e-08
        z = tl.sqrt_rn(-2.0 * _log_unit(u1)) * _cos_2pi(u2)
    return z


@triton.jit
def load_counters(seed_ptr, step_ptr):
    """(seed mod 2^32, step mod 2^32) as uint32 scalars, read from int64 device tensors."""
    seed = (tl.load(seed_ptr) & 0xFFFFFFFF).to(tl.uint32)
    step = (tl.load(step_ptr) & 0xFFFFFFFF).to(tl.uint32)
    return seed, step


@triton.jit
def _perturb_kernel(out_ptr, seed_ptr, step_ptr, stream, dim, DIST: tl.constexpr, BLOCK: tl.constexpr):
    j = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    seed, step = load_counters(seed_ptr, step_ptr)
    z = z_at(seed, stream.to(tl.uint32), step, j.to(tl.uint32), offs.to(tl.uint32), DIST)
    tl.store(out_ptr + j * dim + offs, z, mask=offs < dim)


@triton.jit
def _words_kernel(out_ptr, ctr_ptr, key_ptr):
    """Raw Philox4x32-10 blocks (for the known-answer tests): out[t, :] = philox(ctr[t], key[t])."""
    t = tl.program_id(0)
    c0 = tl.load(ctr_ptr + 4 * t).to(tl.uint32)
    c1 = tl.load(ctr_ptr + 4 * t + 1).to(tl.uint32)
    c2 = tl.load(ctr_ptr + 4 * t + 2).to(tl.uint32)
    c3 = tl.load(ctr_ptr + 4 * t + 3).to(tl.uint32)
    k0 = tl.load(key_ptr + 2 * t).to(tl.uint32)
    k1 = tl.load(key_ptr + 2 * t + 1).to(tl.uint32)
    r0, r1, r2, r3 = philox_impl(c0, c1, c2, c3, k0, k1, 10)
    tl.store(out_ptr + 4 * t, r0.to(tl.int64))
    tl.store(out_ptr + 4 * t + 1, r1.to(tl.int64))
    tl.store(out_ptr + 4 * t + 2, r2.to(tl.int64))
    tl.store(out_ptr + 4 * t + 3, r3.to(tl.int64))


def philox4x32(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 blocks: counter [n, 4], key [n, 2] int64 (uint32 values) → [n, 4] int64."""
    out = torch.full_like(counter, -1)
    _words_kernel[(counter.shape[0],)](out, counter.contiguous(), key.contiguous())
    return out


def perturb(seed: torch.Tensor, step: torch.Tensor, stream: int, q: int, dim: int, dist: str,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """z [q, dim] float32 on seed's device; seed/step int64 tensors (one element each)."""
    out = torch.empty(q, dim, device=step.device, dtype=torch.float32) if out is None else out
    block = min(1024, triton.next_power_of_2(max(dim, 16)))
    _perturb_kernel[(triton.cdiv(dim, block), q)](out, seed, step, stream, dim, DIST_CODES[dist], block, **LAUNCH)
    return out
