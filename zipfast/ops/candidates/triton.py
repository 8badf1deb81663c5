"""Triton kernel of the fused candidates op: one program per (token i, candidate k).

The program regenerates the perturbation coordinates it needs from the counters, forms the
low-rank row Z_i of candidate k, and runs Fastfood in registers: ·B, Walsh–Hadamard
(log2 L butterfly stages by reshape/split/join), Π (tl.gather), ·G, Walsh–Hadamard,
/ (divisor·sqrt(D/L)), + ctx0 (+ pos), written into the output buffer.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from zipfast.reference import token_dim_of
from zipfast.ops.perturb.reference import DIST_CODES
from zipfast.ops.perturb.triton import LAUNCH, load_counters, z_at


@triton.jit
def _cand(w_ptr, idx, k, q, ck, seed, stream, step, mask, DIST: tl.constexpr):
    """Coordinates idx of candidate k: w + c·z_j (k < q) or w − c·z_j, j = k mod q."""
    j = tl.where(k < q, k, k - q)
    z = z_at(seed, stream, step, j.to(tl.uint32), idx.to(tl.uint32), DIST)
    t = ck * z
    wv = tl.load(w_ptr + idx, mask=mask, other=0.0)
    return tl.where(k < q, wv + t, wv - t)


@triton.jit
def _wht(x, L: tl.constexpr, LOG_L: tl.constexpr):
    """Unnormalised Walsh–Hadamard of a [L] register tensor (same butterflies as the reference)."""
    for s in tl.static_range(LOG_L):
        h: tl.constexpr = 1 << s
        y = tl.reshape(x, (L // (2 * h), 2, h))
        y = tl.permute(y, (0, 2, 1))
        a, b = tl.split(y)
        y = tl.permute(tl.join(a + b, a - b), (0, 2, 1))
        x = tl.reshape(y, (L,))
    return x


@triton.jit
def _candidates_kernel(out_ptr, w_ptr, seed_ptr, step_ptr, ck_ptr, ctx0_ptr, b_ptr, pi_ptr, g_ptr, div_ptr,
                       pos_ptr, stream, q, m, dt, D, sqrt_d_over_l,
                       R: tl.constexpr, RP: tl.constexpr, L: tl.constexpr, LOG_L: tl.constexpr,
                       HAS_POS: tl.constexpr, DIST: tl.constexpr):
    i = tl.program_id(0)
    k = tl.program_id(1)
    seed, step = load_counters(seed_ptr, step_ptr)
    stream = stream.to(tl.uint32)
    ck = tl.load(ck_ptr)
    t = tl.arange(0, L)
    rr = tl.arange(0, RP)
    rmask = rr < R
    tmask = t < dt
    u = _cand(w_ptr, i * R + rr, k, q, ck, seed, stream, step, rmask, DIST)
    s = _cand(w_ptr, m * R + rr, k, q, ck, seed, stream, step, rmask, DIST)
    us = tl.where(rmask, u * s, 0.0)
    vidx = m * R + R + t[:, None] * R + rr[None, :]
    v = _cand(w_ptr, vidx, k, q, ck, seed, stream, step, tmask[:, None] & rmask[None, :], DIST)
    z = tl.sum(v * us[None, :], axis=1)
    sv = _cand(w_ptr, m * R + R + dt * R + t, k, q, ck, seed, stream, step, tmask, DIST)
    z = tl.where(tmask, z + sv, 0.0)
    row = i * L + t
    x = _wht(z * tl.load(b_ptr + row), L, LOG_L)
    x = tl.gather(x, tl.load(pi_ptr + row).to(tl.int32), 0)
    x = _wht(x * tl.load(g_ptr + row), L, LOG_L)
    scale = tl.load(div_ptr + i) * sqrt_d_over_l
    dmask = t < D
    y = tl.load(ctx0_ptr + i * D + t, mask=dmask, other=0.0) + x / scale
    if HAS_POS:
        y = y + tl.load(pos_ptr + i * D + t, mask=dmask, other=0.0)
    tl.store(out_ptr + (k * m + i) * D + t, y, mask=dmask)


def candidates(out: torch.Tensor, w, seed, step, ck, ctx0, B, Pi, G, divisor, pos, stream: int, q: int, rank: int,
               dist: str) -> None:
    m, D = ctx0.shape
    L = B.shape[1]
    dt = token_dim_of(w.shape[0], m, rank)
    _candidates_kernel[(m, 2 * q)](
        out, w, seed, step, ck, ctx0, B, Pi, G, divisor, ctx0 if pos is None else pos, stream, q, m, dt, D,
        math.sqrt(D / L), rank, max(2, triton.next_power_of_2(rank)), L, int(math.log2(L)), pos is not None,
        DIST_CODES[dist], **LAUNCH)
