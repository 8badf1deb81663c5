"""prefix_attention in PyTorch without copying the prefix per class (Hydragen / FlashInfer
cascade attention): the queries of all C classes of candidate k meet k's prefix keys in ONE
matmul per (k, head), each class's queries meet its own suffix keys in a small batched
matmul, and the two partial softmaxes are merged through their log-sum-exps:

    o = (e^{l₁}·o₁ + e^{l₂}·o₂) / (e^{l₁} + e^{l₂}),   l = log Σ exp(scores)

computed with one shared row maximum m, so o = (p₁·V₁ + p₂·V₂) / (Σp₁ + Σp₂) with
p = exp(scores − m): the same numbers, one division.
"""

from __future__ import annotations

import functools

import torch

from zipfast.ops.prefix_attention.reference import causal_positions


@functools.lru_cache(maxsize=64)
def _above_diagonal(S: int, device: torch.device) -> torch.Tensor:
    """[S, S] bool, True where suffix key j is after query row i (hidden by the causal mask)."""
    return torch.ones(S, S, dtype=torch.bool, device=device).triu(1)


def _bmm(a, b, alpha):
    """alpha · a @ b over the flattened leading dims (views when a, b are contiguous)."""
    a3, b3 = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    return torch.baddbmm(a3.new_empty(()).expand(a3.shape[0], a3.shape[1], b3.shape[2]), a3, b3,
                         beta=0, alpha=alpha) if alpha != 1 else torch.bmm(a3, b3)


def prefix_attention(q, k_prefix, v_prefix, k_suffix, v_suffix, q_pos=None, scale=None):
    """Same contract as `reference.prefix_attention` (head-major q [K, H, C, Tq, hd] → o alike).

    Softmax statistics are fp32; the four matmuls run in the inputs' dtype.
    """
    K, H, C, Tq, hd = q.shape
    P, S = k_prefix.shape[-2], k_suffix.shape[-2]
    scale = hd ** -0.5 if scale is None else scale
    # scores, scaled inside the matmuls: prefix part one matmul per (k, h) over all C·Tq rows
    s1 = _bmm(q.reshape(K, H, C * Tq, hd), k_prefix.transpose(-1, -2), scale).float().view(K, H, C, Tq, P)
    s2 = _bmm(q, k_suffix.transpose(-1, -2), scale).float().view(K, H, C, Tq, S)
    if q_pos is None and Tq == S:
        s2.masked_fill_(_above_diagonal(S, q.device), float("-inf"))
    else:
        q_pos = causal_positions(C, Tq, S, q.device) if q_pos is None else q_pos
        s2.masked_fill_(torch.arange(S, device=q.device).view(1, 1, S) > q_pos.unsqueeze(-1), float("-inf"))
    m = torch.maximum(s1.amax(-1, keepdim=True), s2.amax(-1, keepdim=True))  # finite: every row sees the prefix
    p1 = s1.sub_(m).exp_()
    p2 = s2.sub_(m).exp_()
    den = p1.sum(-1, keepdim=True).add_(p2.sum(-1, keepdim=True))
    o = _bmm(p1.to(v_prefix.dtype).view(K, H, C * Tq, P), v_prefix, 1).view(K, H, C, Tq, hd).float()
    o.add_(_bmm(p2.to(v_suffix.dtype), v_suffix, 1).view(K, H, C, Tq, hd)).div_(den)
    return o.to(q.dtype)
