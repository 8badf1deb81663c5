"""candidates: one fused op from (w, seed, step, c_k) to the 2q antithetic prompt contexts.

perturb → [w + c_k z ; w − c_k z] → U·diag(s)·Vᵀ + shared_V → per-token Fastfood → + ctx0
(+ positional embeddings), written into a given output buffer [2q, m, D] (float32).
Implementations: reference/torch (`reference.py`, the composition of the reference
functions), triton (`triton.py`), cuda (`cuda.py` → csrc/kernels/candidates.cu). Custom op
`torch.ops.zipfast.candidates_` (mutates `out`).
"""

from __future__ import annotations

import torch

from zipfast import reference as ref
from zipfast.ops import extension as ext
from zipfast.ops import registry
from zipfast.ops.perturb import DISTRIBUTIONS, as_counter
from zipfast.ops.candidates import reference

OP = "candidates"


def _torch(out, w, seed, step, ck, ctx0, B, Pi, G, divisor, pos, stream, q, rank, dist):
    ff = ref.FastfoodParams(B, Pi, G, divisor, ctx0.shape[1])
    out.copy_(reference.candidates(w, seed, step, ck, ctx0, ff, rank, q, stream, dist, pos))


def _triton(*args):
    from zipfast.ops.candidates.triton import candidates as kernel

    kernel(*args)


def _cuda(*args):
    from zipfast.ops.candidates.cuda import candidates as kernel

    kernel(*args)


registry.register(OP, "reference", _torch)
registry.register(OP, "torch", _torch)  # the reference is already batched over candidates and tokens
registry.register(OP, "triton", _triton, registry.triton_runtime)
registry.register(OP, "cuda", _cuda, ext.available)

# Fastfood sizes L = 128 and 1024 (D = 100 and 768: padded tails), odd m, q and rank; 1e-5 relative.
SELFCHECK_SHAPES = ((3, 100, 17, 2, 3), (2, 768, 40, 1, 1))  # (m, D, d, rank, q)


def _selfcheck(fn, device):
    from zipfast.ops.selfcheck import compare

    g = torch.Generator().manual_seed(0)
    for m, D, d, rank, q in SELFCHECK_SHAPES:
        ff = ref.draw_fastfood(m, D, g).to(device)
        ctx0 = (torch.randn(m, D, generator=g) * 0.02).to(device)
        w = torch.randn(ref.param_dim(m, d, rank), generator=g).to(device)
        pos = torch.randn(m, D, generator=g).to(device)
        seed, step = as_counter(5, device), as_counter(3, device)
        ck = torch.tensor(0.01, device=device)
        out = torch.full((2 * q, m, D), float("nan"), device=device)
        fn(out, w, seed, step, ck, ctx0, ff.B.float(), ff.Pi.to(torch.int64), ff.G.float(), ff.divisor.float(), pos,
           0, q, rank, "segmented")
        want = reference.candidates(w, seed, step, ck, ctx0, ff, rank, q, 0, "segmented", pos)
        problem = compare(out, want, f"candidates m={m} D={D} q={q}", rtol=1e-5)
        if problem:
            return problem
    return None


registry.register_check(OP, _selfcheck)


@torch.library.custom_op("zipfast::candidates_", mutates_args=("out",))
def candidates_op(out: torch.Tensor, w: torch.Tensor, seed: torch.Tensor, step: torch.Tensor, ck: torch.Tensor,
                  ctx0: torch.Tensor, B: torch.Tensor, Pi: torch.Tensor, G: torch.Tensor, divisor: torch.Tensor,
                  pos: torch.Tensor | None, stream: int, q: int, rank: int, dist: str) -> None:
    _, fn = registry.resolve(OP, out.device)
    fn(out, w, seed, step, ck, ctx0, B, Pi, G, divisor, pos, stream, q, rank, dist)


@candidates_op.register_fake
def _(out, w, seed, step, ck, ctx0, B, Pi, G, divisor, pos, stream, q, rank, dist):
    return None


def candidates(w: torch.Tensor, seed, step, ck, ctx0: torch.Tensor, ff: ref.FastfoodParams, rank: int, q: int, *,
               stream: int = 0, dist: str = "segmented", pos: torch.Tensor | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """The 2q contexts [2q, m, D] of step `step` (1-based) written into `out` (allocated if None).

    w [δ] float32; seed, step: ints or int64 tensors; ck: float or float32 tensor []; ctx0 [m, D];
    ff: the space's Fastfood randomness; pos [m, D] added when given (the engine's positions).
    """
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"unknown perturbation distribution {dist!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    m, D = ctx0.shape
    dt = ref.token_dim_of(w.shape[-1], m, rank)
    if ref.param_dim(m, dt * m, rank) != w.shape[-1] or ff.n_ctx != m or ff.D != D:
        raise ValueError(f"w has length {w.shape[-1]}, which is not δ for m={m}, rank={rank} "
                         f"(or the Fastfood randomness is for {ff.n_ctx}×{ff.D}, ctx0 is {m}×{D})")
    dev = w.device
    if out is None:
        out = torch.empty(2 * q, m, D, device=dev, dtype=torch.float32)
    elif out.shape != (2 * q, m, D) or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of shape {(2 * q, m, D)}, got "
                         f"{tuple(out.shape)} {out.dtype}")
    ck = torch.as_tensor(ck, dtype=torch.float32, device=dev).reshape(())
    candidates_op(out, w.float().contiguous(), as_counter(seed, dev), as_counter(step, dev), ck,
                  ctx0.float().contiguous(), ff.B.float().contiguous(), ff.Pi.to(torch.int64).contiguous(),
                  ff.G.float().contiguous(), ff.divisor.float().contiguous(),
                  None if pos is None else pos.float().contiguous(), int(stream) & 0xFFFFFFFF, q, rank, dist)
    return out
