"""Triton kernel of clip_loss: one program per (candidate k, block of BB images).

Classes are streamed in blocks of BC with an online log-sum-exp and a running first
argmax; text rows are normalised as they are loaded. The kernel writes per-image
cross-entropy and hits [K, B]; the mean over the minibatch is one torch reduction.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _clip_loss_kernel(txt_ptr, img_ptr, lab_ptr, scale_ptr, ce_ptr, hit_ptr, B, C, E,
                      BB: tl.constexpr, BC: tl.constexpr, EP: tl.constexpr):
    k = tl.program_id(0)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    e = tl.arange(0, EP)
    bmask = b < B
    emask = e < E
    img = tl.load(img_ptr + b[:, None] * E + e[None, :], mask=bmask[:, None] & emask[None, :], other=0.0)
    inorm = tl.maximum(tl.sqrt(tl.sum(img * img, axis=1)), 1e-12)
    img = img / inorm[:, None] * tl.exp(tl.load(scale_ptr))
    label = tl.load(lab_ptr + b, mask=bmask, other=0)
    run_max = tl.full((BB,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BB,), tl.float32)
    arg = tl.zeros((BB,), tl.int32)
    picked = tl.zeros((BB,), tl.float32)
    for c0 in range(0, C, BC):
        c = c0 + tl.arange(0, BC)
        cmask = c < C
        txt = tl.load(txt_ptr + (k * C + c[:, None]) * E + e[None, :], mask=cmask[:, None] & emask[None, :], other=0.0)
        tnorm = tl.maximum(tl.sqrt(tl.sum(txt * txt, axis=1)), 1e-12)
        txt = txt / tnorm[:, None]
        logits = tl.dot(img, tl.trans(txt), input_precision="ieee")  # [BB, BC]
        logits = tl.where(cmask[None, :], logits, float("-inf"))
        blk_max = tl.max(logits, axis=1)
        blk_arg = tl.min(tl.where(logits == blk_max[:, None], c[None, :], 2147483647), axis=1)
        arg = tl.where(blk_max > run_max, blk_arg, arg)
        new_max = tl.maximum(run_max, blk_max)
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), axis=1)
        run_max = new_max
        picked += tl.sum(tl.where(c[None, :] == label[:, None], logits, 0.0), axis=1)
    ce = run_max + tl.log(run_sum) - picked
    tl.store(ce_ptr + k * B + b, ce, mask=bmask)
    tl.store(hit_ptr + k * B + b, (arg == label).to(tl.float32), mask=bmask)


def clip_loss(text_features, image_features, labels, logit_scale, outs=None):
    """outs: optional (ce [K, B], hit [K, B]) buffers to write (tests poison them)."""
    K, C, E = text_features.shape
    B = image_features.shape[0]
    if outs is None:
        ce = torch.empty(K, B, device=text_features.device, dtype=torch.float32)
        outs = (ce, torch.empty_like(ce))
    ce, hit = outs
    BB = 16
    BC = min(64, max(16, triton.next_power_of_2(C)))
    EP = max(16, triton.next_power_of_2(E))
    _clip_loss_kernel[(K, triton.cdiv(B, BB))](
        text_features.float().contiguous(), image_features.float().contiguous(), labels.to(torch.int32).contiguous(),
        logit_scale.float().reshape(1), ce, hit, B, C, E, BB, BC, EP)
    return ce.mean(1), hit.mean(1) * 100
