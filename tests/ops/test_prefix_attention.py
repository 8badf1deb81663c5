"""prefix_attention (zipfast/ops/prefix_attention): reference vs PyTorch LSE form vs Triton
(interpreter on CPU), odd shapes, NaN-poisoned outputs, fp32 relative error ≤ 1e-5."""

import os

import pytest
import torch

from zipfast.ops import registry
from zipfast.ops.prefix_attention import reference, torch_lse

from .conftest import rel_err

# (K, H, C, P, S, hd, mode): mode "causal" (Tq = S) or "eot" (one query row per class at a
# mixed suffix position, as in the engine's final block)
CASES = [
    (1, 1, 1, 1, 1, 1, "causal"),
    (1, 2, 1, 9, 6, 64, "causal"),
    (3, 2, 5, 3, 7, 24, "causal"),
    (5, 3, 4, 9, 6, 40, "eot"),
    (2, 1, 7, 2, 11, 17, "eot"),
    (7, 4, 3, 5, 4, 33, "causal"),
]
IDS = [f"K{K}-H{H}-C{C}-P{P}-S{S}-hd{hd}-{m}" for K, H, C, P, S, hd, m in CASES]
HAVE_TRITON_TARGET = torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def make(K, H, C, P, S, hd, mode, seed=0, layout="contiguous"):
    g = torch.Generator().manual_seed(seed * 1009 + K * 31 + C)
    kp, vp = (torch.randn(K, H, P, hd, generator=g) for _ in range(2))
    if layout == "token-major":  # strided views of a [K, C, S, 3, H, hd] projection, as the engine makes
        qkv = torch.randn(K, C, S, 3, H, hd, generator=g).permute(3, 0, 4, 1, 2, 5)
        q, ks, vs = qkv[0], qkv[1], qkv[2]
    else:
        q, ks, vs = (torch.randn(K, H, C, S, hd, generator=g) for _ in range(3))
    q_pos = None
    if mode == "eot":  # each class's query row sits at its own (mixed) suffix position
        q_pos = torch.randint(0, S, (C, 1), generator=g)
        q = q.gather(3, q_pos.view(1, 1, C, 1, 1).expand(K, H, C, 1, hd))
    return q, kp, vp, ks, vs, q_pos


def poisoned_run(fn, *args, monkeypatch=None, **kw):
    """Run fn with torch.empty poisoned to NaN: an output element the kernel forgets to write fails."""
    real_empty = torch.empty

    def nan_empty(*a, **k):
        t = real_empty(*a, **k)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", nan_empty)
    try:
        return fn(*args, **kw)
    finally:
        monkeypatch.setattr(torch, "empty", real_empty)


def expected_by_loop(q, kp, vp, ks, vs, q_pos):
    """A third, independent formulation: one candidate/class/head at a time, plain softmax."""
    K, H, C, Tq, hd = q.shape
    S = ks.shape[-2]
    out = torch.empty(K, H, C, Tq, hd, dtype=torch.float64)
    pos = torch.arange(S).expand(C, S) if q_pos is None else q_pos
    for k in range(K):
        for h in range(H):
            for c in range(C):
                for i in range(Tq):
                    keys = torch.cat([kp[k, h], ks[k, h, c, : pos[c, i] + 1]]).double()
                    vals = torch.cat([vp[k, h], vs[k, h, c, : pos[c, i] + 1]]).double()
                    w = torch.softmax(keys @ q[k, h, c, i].double() / hd ** 0.5, 0)
                    out[k, h, c, i] = w @ vals
    return out


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_equals_independent_loop(case):
    args = make(*case)
    assert rel_err(reference.prefix_attention(*args), expected_by_loop(*args)) <= 1e-6


@pytest.mark.parametrize("layout", ["contiguous", "token-major"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_lse_equals_reference(case, layout, monkeypatch):
    args = make(*case, seed=1, layout=layout)
    want = reference.prefix_attention(*args)
    got = poisoned_run(torch_lse.prefix_attention, *args, monkeypatch=monkeypatch)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert not torch.isnan(got).any()
    assert rel_err(got, want) <= 1e-5


def test_torch_lse_bf16_error_is_like_torch_own():
    """bf16 inputs: the LSE form's error against the fp32 reference is at most about twice the
    error of the reference computed in bf16 itself (flash-attention's rule)."""
    args32 = make(4, 2, 6, 9, 6, 64, "causal", seed=3)
    args16 = [a.bfloat16() if a is not None and a.is_floating_point() else a for a in args32]
    want = reference.prefix_attention(*args32)
    base = rel_err(reference.prefix_attention(*args16).float(), want)  # bf16 inputs and output, fp32 math
    got = torch_lse.prefix_attention(*args16)
    assert got.dtype == torch.bfloat16
    assert rel_err(got.float(), want) <= 2 * base


@pytest.mark.gpu  # also run by `make test-gpu` (compiled for the GPU there)
@pytest.mark.skipif(not HAVE_TRITON_TARGET, reason="no CUDA device and TRITON_INTERPRET is not 1")
@pytest.mark.parametrize("layout", ["contiguous", "token-major"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_triton_equals_reference(case, layout, monkeypatch):
    from zipfast.ops.prefix_attention import triton_kernel

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    args = [a.to(dev) if a is not None else a for a in make(*case, seed=2, layout=layout)]
    want = reference.prefix_attention(*args)
    got = poisoned_run(triton_kernel.prefix_attention, *args, monkeypatch=monkeypatch)
    assert got.shape == want.shape and not torch.isnan(got).any()
    assert rel_err(got, want) <= 1e-5


def test_registry_choice_and_forcing(monkeypatch):
    for var in ("ZIPFAST_BACKEND", "ZIPFAST_BACKEND_PREFIX_ATTENTION"):
        monkeypatch.delenv(var, raising=False)
    backend, fn = registry.resolve("prefix_attention", "cpu")
    assert backend == "torch" and fn is torch_lse.prefix_attention
    monkeypatch.setenv("ZIPFAST_BACKEND_PREFIX_ATTENTION", "reference")
    assert registry.resolve("prefix_attention", "cpu")[1] is reference.prefix_attention
    monkeypatch.setenv("ZIPFAST_BACKEND_PREFIX_ATTENTION", "cuda")
    with pytest.raises(registry.BackendUnavailableError, match="no cuda implementation"):
        registry.resolve("prefix_attention", "cpu")


@pytest.mark.gpu  # also run by `make test-gpu` (compiled for the GPU there)
@pytest.mark.skipif(not HAVE_TRITON_TARGET, reason="no CUDA device and TRITON_INTERPRET is not 1")
def test_triton_custom_op_registration():
    """zipfast::prefix_attention_triton passes torch.library's checks (schema, fake implementation)."""
    from zipfast.ops.prefix_attention import triton_kernel  # noqa: F401  (registers the op)

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    q, kp, vp, ks, vs, q_pos = make(2, 2, 3, 4, 5, 16, "eot", seed=4)
    args = [t.to(dev) for t in (q, kp, vp, ks, vs)] + [q_pos.to(dev, torch.int32), 0.25]
    torch.library.opcheck(torch.ops.zipfast.prefix_attention_triton.default, args,
                          test_utils=("test_schema", "test_faketensor"))
