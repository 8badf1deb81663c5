"""prefix_attention: every class suffix of candidate k attends to k's prefix keys/values and to
its own causal suffix, without copying the prefix per class.

    reference.py     attention over the concatenated [prefix ; suffix] keys/values (the truth)
    torch_lse.py     batched matmuls + log-sum-exp merge (Hydragen / FlashInfer cascade)
    triton_kernel.py one Triton kernel (GPU; CPU only under TRITON_INTERPRET=1, imported lazily)

Layout (head-major): q [K, H, C, Tq, hd], prefix k/v [K, H, P, hd], suffix k/v [K, H, C, S, hd],
q_pos [C, Tq] or None (causal) → o [K, H, C, Tq, hd]. Chosen through `zipfast.ops.registry`.
"""

from zipfast.ops.registry import register, register_check, triton_runtime
from zipfast.ops.prefix_attention import reference, torch_lse

OP = "prefix_attention"


def _triton(*args, **kwargs):
    from zipfast.ops.prefix_attention.triton_kernel import prefix_attention

    return prefix_attention(*args, **kwargs)


register(OP, "triton", _triton, triton_runtime)
register(OP, "torch", torch_lse.prefix_attention)
register(OP, "reference", reference.prefix_attention)


def _selfcheck(fn, device):
    """K=2, H=3, C=5 classes, P=4 prefix and S=7 suffix rows, hd=16: fp32 within 1e-5; on CUDA also
    fp16 and bf16, within twice the reference's own error in that dtype (flash-attention's rule)
    plus 1e-3 of the output's scale."""
    import torch

    from zipfast.ops.selfcheck import compare

    g = torch.Generator().manual_seed(3)
    K, H, C, P, S, hd = 2, 3, 5, 4, 7, 16
    shapes = ((K, H, C, S, hd), (K, H, P, hd), (K, H, P, hd), (K, H, C, S, hd), (K, H, C, S, hd))
    x = [torch.randn(*s, generator=g).to(device) for s in shapes]
    want = reference.prefix_attention(*x)
    problem = compare(fn(*x), want, "prefix_attention fp32", rtol=1e-5)
    if problem or device.type != "cuda":
        return problem
    for dtype in (torch.float16, torch.bfloat16):  # what the engine runs under autocast
        low = [t.to(dtype) for t in x]
        ref_err = float((reference.prefix_attention(*low).float() - want).abs().max())
        err = float((fn(*low).float() - want).abs().max())
        if not err <= 2 * ref_err + 1e-3 * float(want.abs().max()):
            return (f"prefix_attention {dtype}: max error {err:.3g} against fp32, the reference's own "
                    f"{dtype} error {ref_err:.3g}")
    return None


register_check(OP, _selfcheck)
