"""Fixtures of the op tests: the Triton interpreter, the (cached) csrc/ build, NaN poisoning.

TRITON_INTERPRET must be set before triton is imported: this conftest is loaded before any
test module of this directory runs, and nothing in zipfast imports triton at import time.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from zipfast.ops import build  # noqa: E402


def poisoned(*shape, dtype=torch.float32):
    """An output buffer full of NaN: a kernel that forgets an element fails the comparison."""
    return torch.full(shape, float("nan"), dtype=dtype)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got − want| / max |want| (NaN anywhere in got → inf: never passes)."""
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return float("inf")
    scale = want.abs().max().clamp_min(1e-30)
    return float((got - want).abs().max() / scale)


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.float().contiguous().view(torch.int32),
                                              b.float().contiguous().view(torch.int32))


@pytest.fixture(scope="session")
def csrc_build():
    """csrc/ built once (CUDA too when nvcc is present), cached under build/csrc-<hash>."""
    try:
        return build.build()
    except build.BuildError as e:
        pytest.fail(f"csrc/ build failed:\n{e}")


@pytest.fixture(scope="session")
def host(csrc_build):
    """The host-compiled kernel math (zipfast._zipfast_host)."""
    return build.load_module(csrc_build.modules["_zipfast_host"])


@pytest.fixture(scope="session")
def triton_ok():
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET is not 1 (set before triton was imported)")
