"""perturb: counter-based perturbations z [q, dim] of one step (Philox4x32-10; the stream
and its bit mapping are defined in `reference`).

Implementations: reference/torch (`reference.py`, vectorised PyTorch on any device), triton
(`triton.py`), cuda (`cuda.py` → csrc/kernels/perturb.cu); all bit-identical. Registered as
the custom op `torch.ops.zipfast.perturb` (with a fake implementation) so torch.compile and
CUDA-graph capture treat it as one op; the registry picks the implementation at run time.
"""

from __future__ import annotations

import torch

from zipfast.ops import extension as ext
from zipfast.ops import registry
from zipfast.ops.perturb import reference
from zipfast.ops.perturb.reference import DISTRIBUTIONS

OP = "perturb"


def _torch(seed, step, stream, q, dim, dist):
    return reference.perturb(seed, stream, step, q, dim, dist)


def _triton(seed, step, stream, q, dim, dist):
    from zipfast.ops.perturb.triton import perturb as kernel

    return kernel(seed, step, stream, q, dim, dist)


def _cuda(seed, step, stream, q, dim, dist):
    from zipfast.ops.perturb.cuda import perturb as kernel

    return kernel(seed, step, stream, q, dim, dist)


registry.register(OP, "reference", _torch)
registry.register(OP, "torch", _torch)  # the reference is already the vectorised PyTorch path
registry.register(OP, "triton", _triton, registry.triton_runtime)
registry.register(OP, "cuda", _cuda, ext.available)


def _selfcheck(fn, device):
    """Every distribution on an odd shape [5, 1031]: bit-identical to the reference on `device`."""
    from zipfast.ops.selfcheck import compare, first_problem

    seed, step, stream, q, dim = 0x9E3779B9, 77, 3, 5, 1031
    return first_problem(*(
        compare(fn(as_counter(seed, device), as_counter(step, device), stream, q, dim, dist),
                reference.perturb(seed, stream, step, q, dim, dist, device=device), f"perturb {dist}")
        for dist in DISTRIBUTIONS))


registry.register_check(OP, _selfcheck)


@torch.library.custom_op("zipfast::perturb", mutates_args=())
def perturb_op(seed: torch.Tensor, step: torch.Tensor, stream: int, q: int, dim: int, dist: str) -> torch.Tensor:
    _, fn = registry.resolve(OP, step.device)
    return fn(seed, step, stream, q, dim, dist)


@perturb_op.register_fake
def _(seed, step, stream, q, dim, dist):
    return step.new_empty((q, dim), dtype=torch.float32)


def as_counter(value, device) -> torch.Tensor:
    """An int or integer tensor → int64 tensor [] on `device` (tensors are not synced)."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.int64).reshape(())
    return torch.tensor(int(value), dtype=torch.int64, device=device)


def perturb(seed, step, q: int, dim: int, *, stream: int = 0, dist: str = "segmented", device=None) -> torch.Tensor:
    """z [q, dim] float32: z[j, i] = map_dist(philox4x32_10((i, j, step, 0), (seed, stream))).

    seed, step: ints or int64 device tensors (step is the 1-based optimiser step).
    """
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"unknown perturbation distribution {dist!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    if q < 1 or dim < 1:
        raise ValueError(f"perturb needs q ≥ 1 and dim ≥ 1, got q={q}, dim={dim}")
    if device is None:
        device = step.device if isinstance(step, torch.Tensor) else "cpu"
    return perturb_op(as_counter(seed, device), as_counter(step, device), int(stream) & 0xFFFFFFFF, q, dim, dist)
