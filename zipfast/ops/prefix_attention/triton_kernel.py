"""prefix_attention as one Triton kernel: a program per (class c, candidate k, head h) loads
k's prefix keys/values (shared by all of k's classes: read, never copied) and c's suffix
keys/values, and merges the two partial softmaxes by their log-sum-exps (shared maximum).

Imported lazily (on first use), so TRITON_INTERPRET=1 set by a test before that point runs
the kernel in Triton's interpreter on CPU. Scores and sums are fp32; with fp32 inputs the
dots run in IEEE fp32 (no TF32), with bf16/fp16 inputs in TF32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from zipfast.ops.prefix_attention.reference import causal_positions


@triton.jit
def _prefix_attention_kernel(
        Q, KP, VP, KS, VS, QPOS, O,
        sq_k, sq_h, sq_c, sq_t, sq_d,
        skp_k, skp_h, skp_p, skp_d,
        svp_k, svp_h, svp_p, svp_d,
        sks_k, sks_h, sks_c, sks_s, sks_d,
        svs_k, svs_h, svs_c, svs_s, svs_d,
        so_k, so_h, so_c, so_t, so_d,
        sqp_c, sqp_t,
        H, Tq, P, S, HD, scale,
        BT: tl.constexpr, BP: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr):
    c = tl.program_id(0)
    kh = tl.program_id(1)
    k = kh // H
    h = kh % H
    t = tl.arange(0, BT)
    p = tl.arange(0, BP)
    s = tl.arange(0, BS)
    d = tl.arange(0, BD)
    dm = d[None, :] < HD
    q = tl.load(Q + k * sq_k + h * sq_h + c * sq_c + t[:, None] * sq_t + d[None, :] * sq_d,
                mask=(t[:, None] < Tq) & dm, other=0.0).to(tl.float32)
    pm = (p[:, None] < P) & dm
    kp = tl.load(KP + k * skp_k + h * skp_h + p[:, None] * skp_p + d[None, :] * skp_d, mask=pm, other=0.0)
    vp = tl.load(VP + k * svp_k + h * svp_h + p[:, None] * svp_p + d[None, :] * svp_d, mask=pm, other=0.0)
    sm = (s[:, None] < S) & dm
    ks = tl.load(KS + k * sks_k + h * sks_h + c * sks_c + s[:, None] * sks_s + d[None, :] * sks_d, mask=sm, other=0.0)
    vs = tl.load(VS + k * svs_k + h * svs_h + c * svs_c + s[:, None] * svs_s + d[None, :] * svs_d, mask=sm, other=0.0)
    qpos = tl.load(QPOS + c * sqp_c + t * sqp_t, mask=t < Tq, other=0)

    s1 = tl.dot(q, tl.trans(kp.to(tl.float32)), input_precision=PREC) * scale  # [BT, BP]: the prefix part
    s1 = tl.where(p[None, :] < P, s1, float("-inf"))
    s2 = tl.dot(q, tl.trans(ks.to(tl.float32)), input_precision=PREC) * scale  # [BT, BS]: the own suffix
    s2 = tl.where((s[None, :] < S) & (s[None, :] <= qpos[:, None]), s2, float("-inf"))
    m = tl.maximum(tl.max(s1, 1), tl.max(s2, 1))  # finite: every row sees ≥ 1 prefix key
    p1 = tl.exp(s1 - m[:, None])
    p2 = tl.exp(s2 - m[:, None])
    den = tl.sum(p1, 1) + tl.sum(p2, 1)
    o = tl.dot(p1, vp.to(tl.float32), input_precision=PREC) + tl.dot(p2, vs.to(tl.float32), input_precision=PREC)
    o = o / den[:, None]
    tl.store(O + k * so_k + h * so_h + c * so_c + t[:, None] * so_t + d[None, :] * so_d,
             o.to(O.dtype.element_ty), mask=(t[:, None] < Tq) & dm)


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))  # tl.dot needs ≥ 16 per dimension


@torch.library.custom_op("zipfast::prefix_attention_triton", mutates_args=())
def _launch(q: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor, k_suffix: torch.Tensor,
            v_suffix: torch.Tensor, q_pos: torch.Tensor, scale: float) -> torch.Tensor:
    K, H, C, Tq, hd = q.shape
    P, S = k_prefix.shape[-2], k_suffix.shape[-2]
    o = torch.empty(K, H, C, Tq, hd, dtype=q.dtype, device=q.device)
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    _prefix_attention_kernel[(C, K * H)](
        q, k_prefix, v_prefix, k_suffix, v_suffix, q_pos, o,
        *q.stride(), *k_prefix.stride(), *v_prefix.stride(), *k_suffix.stride(), *v_suffix.stride(),
        *o.stride(), *q_pos.stride(),
        H, Tq, P, S, hd, scale,
        BT=_block(Tq), BP=_block(P), BS=_block(S), BD=_block(hd), PREC=prec)
    return o


@_launch.register_fake
def _(q, k_prefix, v_prefix, k_suffix, v_suffix, q_pos, scale):
    return q.new_empty(q.shape)


def prefix_attention(q, k_prefix, v_prefix, k_suffix, v_suffix, q_pos=None, scale=None):
    """Same contract as `reference.prefix_attention`; any strides; one launch, through the custom
    op zipfast::prefix_attention_triton (a fake implementation lets torch.compile trace it)."""
    K, H, C, Tq, hd = q.shape
    if k_prefix.shape[-2] < 1:
        raise ValueError("prefix_attention needs a non-empty prefix (P ≥ 1)")
    scale = hd ** -0.5 if scale is None else scale
    q_pos = causal_positions(C, Tq, k_suffix.shape[-2], q.device) if q_pos is None else q_pos
    q_pos = q_pos.to(device=q.device, dtype=torch.int32)
    return torch.ops.zipfast.prefix_attention_triton(q, k_prefix, v_prefix, k_suffix, v_suffix, q_pos, float(scale))
