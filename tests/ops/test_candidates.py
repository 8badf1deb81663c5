"""candidates: the fused op against the composition of reference functions, every implementation."""

import math

import pytest
import torch

from zipfast import reference as ref
from zipfast.ops import candidates as C
from zipfast.ops.candidates import reference as R
from zipfast.ops.perturb import reference as PR

from .conftest import poisoned, rel_err

# (m, D, d, r, q): the paper's shape, odd widths, m = 1, r = 1, d not divisible by m, K = 2q = 2.
SHAPES = [(8, 512, 500, 5, 5), (4, 640, 50, 1, 1), (1, 768, 40, 3, 2), (3, 100, 17, 2, 3)]


def _case(m, D, d, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    ff = ref.draw_fastfood(m, D, g)
    ctx0 = torch.randn(m, D, generator=g) * 0.02
    w = torch.randn(ref.param_dim(m, d, r), generator=g)
    pos = torch.randn(m, D, generator=g) * 0.01
    return ff, ctx0, w, pos


def test_reference_is_the_composition():
    m, D, d, r, q = 3, 100, 17, 2, 3
    ff, ctx0, w, _ = _case(m, D, d, r)
    z = PR.perturb(9, 0, 4, q, w.shape[0])
    want = torch.stack([ref.reconstruct_ctx((w + s * 0.01 * z[j]).unsqueeze(0), ctx0, ff, r)[0]
                        for s in (1, -1) for j in range(q)])
    assert rel_err(R.candidates(w, 9, 4, torch.tensor(0.01), ctx0, ff, r, q), want) < 1e-6


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "m{}-D{}-d{}-r{}-q{}".format(*s))
def test_implementations_match_reference(shape, host, triton_ok):
    from zipfast.ops.candidates import triton as T

    m, D, d, r, q = shape
    ff, ctx0, w, pos = _case(m, D, d, r, seed=sum(shape))
    ck = torch.tensor(0.0137)
    want = R.candidates(w, 21, 6, ck, ctx0, ff, r, q, stream=1)
    out = poisoned(2 * q, m, D)
    assert C.candidates(w, 21, 6, ck, ctx0, ff, r, q, stream=1, out=out) is out
    assert rel_err(out, want) <= 1e-5
    out = poisoned(2 * q, m, D)
    T.candidates(out, w, torch.tensor(21), torch.tensor(6), ck, ctx0, ff.B, ff.Pi, ff.G, ff.divisor, None, 1, q, r,
                 "segmented")
    assert rel_err(out, want) <= 1e-5
    got = torch.from_numpy(host.candidates(w.numpy(), 21, 1, 6, float(ck), 0, q, r, ctx0.numpy(), ff.B.numpy(),
                                           ff.Pi.numpy(), ff.G.numpy(), ff.divisor.numpy(), math.sqrt(D / ff.L)))
    assert rel_err(got, want) <= 1e-5


def test_positions_and_gaussian_triton(triton_ok):
    from zipfast.ops.candidates import triton as T

    m, D, d, r, q = 2, 100, 30, 2, 1
    ff, ctx0, w, pos = _case(m, D, d, r, seed=5)
    ck = torch.tensor(0.02)
    want = R.candidates(w, 3, 2, ck, ctx0, ff, r, q, dist="gaussian", pos=pos)
    out = poisoned(2 * q, m, D)
    T.candidates(out, w, torch.tensor(3), torch.tensor(2), ck, ctx0, ff.B, ff.Pi, ff.G, ff.divisor, pos, 0, q, r,
                 "gaussian")
    assert rel_err(out, want) <= 1e-5


def test_fwht_host_build_matches_reference(host):
    for n in (1, 2, 128, 1024):
        x = torch.randn(3, n, generator=torch.Generator().manual_seed(n))
        assert rel_err(torch.from_numpy(host.fwht(x.numpy())), ref.fwht(x)) == 0.0


def test_bad_input():
    ff, ctx0, w, _ = _case(3, 100, 17, 2)
    with pytest.raises(ValueError, match="out must be"):
        C.candidates(w, 1, 1, 0.01, ctx0, ff, 2, 2, out=torch.empty(3, 3, 100))
    with pytest.raises(ValueError, match="not δ"):
        C.candidates(w[:-1], 1, 1, 0.01, ctx0, ff, 2, 2)
