"""prefix_attention: every class suffix of candidate k attends to k's prefix keys/values and to
its own causal suffix, without copying the prefix per class.

    reference.py     attention over the concatenated [prefix ; suffix] keys/values (the truth)
    torch_lse.py     batched matmuls + log-sum-exp merge (Hydragen / FlashInfer cascade)
    triton_kernel.py one Triton kernel (GPU; CPU only under TRITON_INTERPRET=1, imported lazily)

Layout (head-major): q [K, H, C, Tq, hd], prefix k/v [K, H, P, hd], suffix k/v [K, H, C, S, hd],
q_pos [C, Tq] or None (causal) → o [K, H, C, Tq, hd]. Chosen through `zipfast.ops.registry`.
"""

from ..registry import register, triton_runtime
from . import reference, torch_lse

OP = "prefix_attention"


def _triton(*args, **kwargs):
    from .triton_kernel import prefix_attention

    return prefix_attention(*args, **kwargs)


register(OP, "triton", _triton, triton_runtime)
register(OP, "torch", torch_lse.prefix_attention)
register(OP, "reference", reference.prefix_attention)
