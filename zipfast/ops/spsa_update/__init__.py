"""spsa_update: from the 2q losses of step k, regenerate z from the counters, form ĝ, clip
(spsa-clip) or apply momentum (spsa-gc), and step w ← w − a_k·d; all on the device, no host
synchronisation (see `reference` for the exact maths and the stats layout).

Implementations: reference/torch (`reference.py`), triton (`triton.py`), cuda (`cuda.py` →
csrc/kernels/spsa_update.cu). Custom op `torch.ops.zipfast.spsa_update`.
"""

from __future__ import annotations

import torch

from zipfast.ops import extension as ext
from zipfast.ops import registry
from zipfast.ops.perturb import DISTRIBUTIONS, as_counter
from zipfast.ops.spsa_update import reference
from zipfast.ops.spsa_update.reference import MODES, STATS, schedules

OP = "spsa_update"

__all__ = ["spsa_update", "schedules", "MODES", "STATS"]


def _triton(*args):
    from zipfast.ops.spsa_update.triton import spsa_update as kernel

    return kernel(*args)


def _cuda(*args):
    from zipfast.ops.spsa_update.cuda import spsa_update as kernel

    return kernel(*args)


registry.register(OP, "reference", reference.spsa_update)
registry.register(OP, "torch", reference.spsa_update)  # the reference is already vectorised
registry.register(OP, "triton", _triton, registry.triton_runtime)
registry.register(OP, "cuda", _cuda, ext.available)


def _selfcheck(fn, device):
    """Every mode on δ = 417 (ZIP's default) and an odd 53, q = 3: w, momentum and stats within 1e-5."""
    from zipfast.ops.selfcheck import compare

    g = torch.Generator().manual_seed(2)
    for dim in (417, 53):
        w, mom = torch.randn(dim, generator=g).to(device), torch.randn(dim, generator=g).to(device)
        losses = (torch.rand(6, generator=g) + 1).to(device)
        for mode in MODES:
            args = (w, mom, losses, as_counter(9, device), as_counter(4, device), torch.tensor(0.004, device=device),
                    torch.tensor(0.008, device=device), 1, "segmented", mode, 0.8)
            for name, a, b in zip(("w", "momentum", "stats"), fn(*args), reference.spsa_update(*args)):
                problem = compare(a, b, f"spsa_update {mode} δ={dim} {name}", rtol=1e-5)
                if problem:
                    return problem
    return None


registry.register_check(OP, _selfcheck)


@torch.library.custom_op("zipfast::spsa_update", mutates_args=())
def spsa_update_op(w: torch.Tensor, momentum: torch.Tensor, losses: torch.Tensor, seed: torch.Tensor,
                   step: torch.Tensor, ak: torch.Tensor, ck: torch.Tensor, stream: int, dist: str, mode: str,
                   b1: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _, fn = registry.resolve(OP, w.device)
    return fn(w, momentum, losses, seed, step, ak, ck, stream, dist, mode, b1)


@spsa_update_op.register_fake
def _(w, momentum, losses, seed, step, ak, ck, stream, dist, mode, b1):
    return torch.empty_like(w), torch.empty_like(momentum), w.new_empty(5)


def spsa_update(w: torch.Tensor, momentum: torch.Tensor, losses: torch.Tensor, seed, step, ak, ck, *,
                stream: int = 0, dist: str = "segmented", mode: str = "spsa-clip", b1: float = 0.8):
    """→ (w_new [δ], momentum_new [δ], stats [5] = a_k, c_k, ‖ĝ‖, clipped, loss). step: the 1-based k."""
    if mode not in MODES:
        raise ValueError(f"unknown SPSA mode {mode!r}; choose one of {', '.join(MODES)}")
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"unknown perturbation distribution {dist!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    if losses.dim() != 1 or losses.shape[0] < 2 or losses.shape[0] % 2:
        raise ValueError(f"losses must be [2q] with q ≥ 1, got shape {tuple(losses.shape)}")
    if momentum.shape != w.shape:
        raise ValueError(f"momentum has shape {tuple(momentum.shape)}, w {tuple(w.shape)}")
    dev = w.device
    f32 = dict(device=dev, dtype=torch.float32)
    return spsa_update_op(w.float().contiguous(), momentum.float().contiguous(), losses.to(**f32).contiguous(),
                          as_counter(seed, dev), as_counter(step, dev), torch.as_tensor(ak, **f32).reshape(()),
                          torch.as_tensor(ck, **f32).reshape(()), int(stream) & 0xFFFFFFFF, dist, mode, float(b1))
