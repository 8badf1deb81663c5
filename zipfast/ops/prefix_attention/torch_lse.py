"""prefix_attention in PyTorch without copying the prefix per class (Hydragen / FlashInfer
cascade attention): the queries of all C classes of candidate k meet k's prefix keys in ONE
matmul per (k, head), each class's queries meet its own suffix keys in a small batched
matmul, and the two partial softmaxes are merged through their log-sum-exps:

    o = (e^{l₁}·o₁ + e^{l₂}·o₂) / (e^{l₁} + e^{l₂}),   l = log Σ exp(scores)

computed with one shared row maximum m, so o = (p₁·V₁ + p₂·V₂) / (Σp₁ + Σp₂) with
p = exp(scores − m): the same numbers, one division.
"""

from __future__ import annotations

import torch

from .reference import causal_positions


def prefix_attention(q, k_prefix, v_prefix, k_suffix, v_suffix, q_pos=None, scale=None):
    """Same contract as `reference.prefix_attention` (head-major q [K, H, C, Tq, hd] → o alike).

    Scores, maxima and sums are fp32; the two value matmuls run in the inputs' dtype.
    """
    K, H, C, Tq, hd = q.shape
    P, S = k_prefix.shape[-2], k_suffix.shape[-2]
    scale = hd ** -0.5 if scale is None else scale
    s1 = torch.matmul(q.reshape(K, H, C * Tq, hd), k_prefix.transpose(-1, -2)).float().view(K, H, C, Tq, P)
    s2 = torch.matmul(q, k_suffix.transpose(-1, -2)).float()  # [K, H, C, Tq, S]
    if q_pos is None and Tq == S:
        hidden = torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1)  # [Tq, S]: causal
    else:
        q_pos = causal_positions(C, Tq, S, q.device) if q_pos is None else q_pos
        hidden = torch.arange(S, device=q.device).view(1, 1, S) > q_pos.unsqueeze(-1)  # [C, Tq, S]
    s2.masked_fill_(hidden, float("-inf"))
    m = torch.maximum(s1.amax(-1, keepdim=True), s2.amax(-1, keepdim=True))  # finite: every row sees the prefix
    p1 = s1.sub_(m).mul_(scale).exp_()
    p2 = s2.sub_(m).mul_(scale).exp_()
    den = p1.sum(-1, keepdim=True) + p2.sum(-1, keepdim=True)
    o = torch.matmul(p1.to(v_prefix.dtype).view(K, H, C * Tq, P), v_prefix).view(K, H, C, Tq, hd).float()
    o.add_(torch.matmul(p2.to(v_suffix.dtype), v_suffix)).div_(den)
    return o.to(q.dtype)
