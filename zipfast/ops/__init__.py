"""Ops: one folder per op, each holding a readable `reference`, the PyTorch path, the Triton
kernel and the binding of the CUDA kernel (where they exist). `registry` alone decides which
implementation runs; importing this package registers every op.
"""

from zipfast.ops import registry
from zipfast.ops.registry import BackendUnavailableError, fallbacks, format_table, register, resolve, table

__all__ = ["registry", "register", "resolve", "table", "format_table", "fallbacks", "BackendUnavailableError"]

# one line per op: importing it registers its implementations
from zipfast.ops import candidates, clip_loss, perturb, prefix_attention, spsa_update  # noqa: E402,F401
