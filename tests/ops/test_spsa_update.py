"""spsa_update: regenerated-z SPSA step, every implementation against the reference."""

import pytest
import torch

from zipfast import reference as ref
from zipfast.ops import spsa_update as SU
from zipfast.ops.perturb import reference as PR
from zipfast.ops.spsa_update import reference as R

from .conftest import poisoned, rel_err

CASES = [(417, 5, 1), (417, 5, 3), (1, 1, 2), (1500, 3, 7), (100, 1, 1)]  # δ, q, step


def _case(dim, q, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(dim, generator=g), torch.randn(dim, generator=g), torch.rand(2 * q, generator=g) * 3


def test_schedules_match_host_formulas():
    for k in (1, 2, 17, 500):
        ak, ck = R.schedules(torch.tensor(k), 0.01, 1.0, 0.4, 0.01, 0.1)
        assert float(ak) == float(torch.tensor(ref.a_k(k, 0.01, 1.0, 0.4)))
        assert float(ck) == float(torch.tensor(ref.c_k(k, 0.01, 0.1)))


@pytest.mark.parametrize("mode", R.MODES)
def test_reference_is_the_composition(mode):
    w, m, L = _case(417, 5)
    k = torch.tensor(3)
    ak, ck = R.schedules(k, 0.01, 1.0, 0.4, 0.01, 0.1)
    z = PR.perturb(9, 0, 3, 5, 417)
    g = ref.spsa_estimate(L[:5], L[5:], z, ck)
    if mode == "spsa-clip":
        d, _ = ref.clip_to_intrinsic_dim(g)
    elif mode == "spsa-gc":
        d, _ = ref.gc_direction(g, m, 0.8, 3)
    else:
        d = g
    w_new, _, stats = R.spsa_update(w, m, L, 9, k, ak, ck, mode=mode)
    assert torch.equal(w_new, w - ak * d)
    assert float(stats[2]) == float(torch.linalg.vector_norm(g))


@pytest.mark.parametrize("mode", R.MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "d{}-q{}-k{}".format(*c))
def test_implementations_match_reference(mode, case, host, triton_ok):
    from zipfast.ops.spsa_update import triton as T

    dim, q, k = case
    w, m, L = _case(dim, q, seed=dim + q + k)
    st = torch.tensor(k)
    ak, ck = R.schedules(st, 0.01, 1.0, 0.4, 0.01, 0.1)
    want = R.spsa_update(w, m, L, 9, st, ak, ck, 2, "segmented", mode, 0.8)
    got_op = SU.spsa_update(w, m, L, 9, st, ak, ck, stream=2, mode=mode)
    outs = (poisoned(dim), poisoned(dim), poisoned(5))
    got_tr = T.spsa_update(w, m, L, torch.tensor(9), st, ak, ck, 2, "segmented", mode, 0.8, outs=outs)
    got_host = [torch.from_numpy(a) for a in host.spsa_update(w.numpy(), m.numpy(), L.numpy(), 9, 2, k, float(ak),
                                                              float(ck), 0, R.MODE_CODES[mode], 0.8)]
    for got in (got_op, got_tr, got_host):
        for a, b in zip(got, want):
            assert rel_err(a, b) <= 1e-5


def test_first_gc_step_ignores_old_momentum():
    w, m, L = _case(50, 2)
    one = torch.tensor(1)
    ak, ck = R.schedules(one, 0.01, 1.0, 0.4, 0.01, 0.1)
    a = R.spsa_update(w, m, L, 1, one, ak, ck, mode="spsa-gc")
    b = R.spsa_update(w, torch.zeros_like(m), L, 1, one, ak, ck, mode="spsa-gc")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_input():
    w, m, L = _case(10, 2)
    with pytest.raises(ValueError, match="losses"):
        SU.spsa_update(w, m, L[:3], 1, 1, 0.1, 0.1)
    with pytest.raises(ValueError, match="'adam'"):
        SU.spsa_update(w, m, L, 1, 1, 0.1, 0.1, mode="adam")
