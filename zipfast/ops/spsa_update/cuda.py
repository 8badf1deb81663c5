"""Binding of the CUDA spsa_update kernel (csrc/kernels/spsa_update.cu; per-element math in
csrc/include/zipfast/spsa_math.h)."""

from __future__ import annotations

import torch

from zipfast.ops import extension as ext
from zipfast.ops.perturb.reference import DIST_CODES
from zipfast.ops.spsa_update.reference import MODE_CODES


def spsa_update(w, momentum, losses, seed, step, ak, ck, stream, dist, mode, b1):
    mod = ext.require_cuda_module()
    w_out = torch.empty_like(w)
    m_out = torch.empty_like(momentum)
    stats = torch.empty(5, device=w.device, dtype=torch.float32)
    ext.check_cuda_args(w=w, momentum=momentum, losses=losses, seed=seed, step=step, ak=ak, ck=ck)
    mod.spsa_update(w_out.data_ptr(), m_out.data_ptr(), stats.data_ptr(), w.data_ptr(), momentum.data_ptr(),
                    losses.data_ptr(), seed.data_ptr(), step.data_ptr(), ak.data_ptr(), ck.data_ptr(), stream,
                    DIST_CODES[dist], losses.shape[0] // 2, w.shape[0], MODE_CODES[mode], b1, ext.stream_of(w))
    return w_out, m_out, stats
