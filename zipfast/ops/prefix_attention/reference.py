"""Reference of prefix_attention: attention over the concatenated keys/values [prefix_k ; suffix_c].

Readable, and exactly what the batched engine computed before this op existed: each
candidate's prefix keys/values are copied once per class and concatenated with the class's
own suffix keys/values; query row i of class c sees every prefix key and the suffix keys
j ≤ q_pos[c, i] (PyTorch's masked scaled_dot_product_attention, in the inputs' dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_positions(C: int, Tq: int, S: int, device) -> torch.Tensor:
    """q_pos [C, Tq] of a causal suffix pass (Tq = S): row i sees suffix keys 0..i."""
    if Tq != S:
        raise ValueError(f"q_pos is required when the queries ({Tq} rows) are not the whole suffix ({S} rows)")
    return torch.arange(S, device=device).expand(C, S)


def prefix_attention(q, k_prefix, v_prefix, k_suffix, v_suffix, q_pos=None, scale=None):
    """Shared-prefix attention, head-major layout.

    q [K, H, C, Tq, hd]; k_prefix, v_prefix [K, H, P, hd] (candidate k's prefix, shared by its
    C classes); k_suffix, v_suffix [K, H, C, S, hd]; q_pos [C, Tq] int (suffix position of each
    query row; None → causal, Tq = S); scale: softmax scale (default hd^-1/2).
    → o [K, H, C, Tq, hd] in q's dtype.
    """
    K, H, C, Tq, hd = q.shape
    P, S = k_prefix.shape[-2], k_suffix.shape[-2]
    q_pos = causal_positions(C, Tq, S, q.device) if q_pos is None else q_pos
    k = torch.cat([k_prefix.unsqueeze(2).expand(K, H, C, P, hd), k_suffix], dim=-2)  # [K, H, C, P + S, hd]
    v = torch.cat([v_prefix.unsqueeze(2).expand(K, H, C, P, hd), v_suffix], dim=-2)
    seen = torch.cat([torch.ones(C, Tq, P, dtype=torch.bool, device=q.device),
                      torch.arange(S, device=q.device).view(1, 1, S) <= q_pos.unsqueeze(-1)], dim=-1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=seen, scale=scale)
