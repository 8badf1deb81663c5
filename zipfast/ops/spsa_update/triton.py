"""Triton kernel of spsa_update: one program; pass 1 regenerates z and forms ĝ (staged in
the output) and ‖ĝ‖², pass 2 applies clip / momentum and w ← w − a_k·d. Statistics stay
on the device."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from zipfast.ops.perturb.reference import DIST_CODES
from zipfast.ops.perturb.triton import LAUNCH, load_counters, z_at
from zipfast.ops.spsa_update.reference import MODE_CODES


@triton.jit
def _spsa_kernel(w_out_ptr, m_out_ptr, stats_ptr, w_ptr, m_ptr, loss_ptr, seed_ptr, step_ptr, ak_ptr, ck_ptr,
                 stream, q, dim, qf, bound, b1, MODE: tl.constexpr, DIST: tl.constexpr, BLOCK: tl.constexpr):
    seed, step = load_counters(seed_ptr, step_ptr)
    k = tl.load(step_ptr)
    stream = stream.to(tl.uint32)
    ak = tl.load(ak_ptr)
    ck = tl.load(ck_ptr)
    two_ck = 2.0 * ck
    sq = tl.zeros((BLOCK,), tl.float32)
    for i0 in range(0, dim, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        mask = i < dim
        acc = tl.zeros((BLOCK,), tl.float32)
        for j in range(0, q):
            z = z_at(seed, stream, step, tl.cast(j, tl.uint32), tl.cast(i, tl.uint32), DIST)
            diff = tl.load(loss_ptr + j) - tl.load(loss_ptr + q + j)
            acc += tl.div_rn(diff, two_ck * z)
        g = tl.div_rn(acc, qf + tl.zeros((BLOCK,), tl.float32))
        tl.store(w_out_ptr + i, g, mask=mask)
        sq += tl.where(mask, g * g, 0.0)
    norm = tl.sqrt_rn(tl.sum(sq, axis=0))
    clipped = (MODE == 1) & (norm >= bound)
    f = tl.where(clipped, tl.div_rn(bound, norm), 1.0)
    for i0 in range(0, dim, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        mask = i < dim
        g = tl.load(w_out_ptr + i, mask=mask, other=0.0)
        m_old = tl.load(m_ptr + i, mask=mask, other=0.0)
        if MODE == 2:
            m_new = tl.where(k <= 1, g, b1 * m_old + g)
            d = g + b1 * m_new
        else:
            m_new = m_old
            d = g * f
        tl.store(m_out_ptr + i, m_new, mask=mask)
        tl.store(w_out_ptr + i, tl.load(w_ptr + i, mask=mask, other=0.0) - ak * d, mask=mask)
    tl.store(stats_ptr + 0, ak)
    tl.store(stats_ptr + 1, ck)
    tl.store(stats_ptr + 2, norm)
    tl.store(stats_ptr + 3, clipped.to(tl.float32))
    tl.store(stats_ptr + 4, (tl.load(loss_ptr + q - 1) + tl.load(loss_ptr + 2 * q - 1)) * 0.5)


def spsa_update(w, momentum, losses, seed, step, ak, ck, stream, dist, mode, b1, outs=None):
    """outs: optional (w_out [δ], m_out [δ], stats [5]) buffers to write (tests poison them)."""
    dim = w.shape[0]
    if outs is None:
        outs = (torch.empty_like(w), torch.empty_like(momentum), torch.empty(5, device=w.device, dtype=torch.float32))
    w_out, m_out, stats = outs
    block = min(1024, max(16, triton.next_power_of_2(dim)))
    q = losses.shape[0] // 2
    bound = float(torch.tensor(float(dim)).sqrt())  # float32 √δ, as the reference's comparison
    _spsa_kernel[(1,)](w_out, m_out, stats, w, momentum, losses, seed, step, ak, ck, stream, q, dim, float(q), bound,
                       b1, MODE_CODES[mode], DIST_CODES[dist], block, **LAUNCH)
    return w_out, m_out, stats
