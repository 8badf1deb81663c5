"""perturb: Philox4x32-10 known answers and bit-identity of every implementation."""

import math

import pytest
import torch

from zipfast.ops import perturb as P
from zipfast.ops import registry
from zipfast.ops.perturb import reference as R

from .conftest import bits_equal, poisoned

# Random123 kat_vectors, "philox4x32 10" lines: counter[4], key[2] → output[4].
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
CASES = [  # (seed, stream, step, q, dim)
    (0, 0, 1, 5, 417), (123456789, 3, 77, 3, 100), (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 1, 1), (42, 1, 500, 2, 1031)]


def test_kat_reference():
    ctr = torch.tensor([c for c, _, _ in KAT])
    key = torch.tensor([k for _, k, _ in KAT])
    assert R.philox4x32(ctr, key).tolist() == [list(o) for _, _, o in KAT]


def test_kat_triton(triton_ok):
    from zipfast.ops.perturb import triton as T

    ctr = torch.tensor([c for c, _, _ in KAT])
    key = torch.tensor([k for _, k, _ in KAT])
    assert T.philox4x32(ctr, key).tolist() == [list(o) for _, _, o in KAT]


def test_kat_host_build(host):
    for c, k, o in KAT:
        assert host.philox4x32_10(list(c), list(k)) == list(o)


def test_words_follow_the_documented_counter_layout():
    """z[j, i] of step s is philox((i, j, s, 0), (seed, stream)): check one coordinate by hand."""
    w = R.words(7, 2, 9, 3, 5)
    direct = R.philox4x32(torch.tensor([[4, 2, 9, 0]]), torch.tensor([[7, 2]]))[0]
    assert w[2, 4].tolist() == direct.tolist()
    r0, r1 = int(direct[0]), int(direct[1])
    want = ((r0 >> 9) + 2 ** 23) * 2.0 ** -24 * (-1 if r1 >> 31 else 1)
    assert float(R.perturb(7, 2, 9, 3, 5)[2, 4]) == want


@pytest.mark.parametrize("dist", R.DISTRIBUTIONS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "seed{}-stream{}-step{}-q{}-d{}".format(*c))
def test_bit_identical_across_implementations(dist, case, host, triton_ok):
    from zipfast.ops.perturb import triton as T

    seed, stream, step, q, dim = case
    want = R.perturb(seed, stream, step, q, dim, dist)
    assert bits_equal(P.perturb(seed, step, q, dim, stream=stream, dist=dist), want)  # the dispatched op
    out = poisoned(q, dim)
    T.perturb(torch.tensor(seed), torch.tensor(step), stream, q, dim, dist, out=out)
    assert bits_equal(out, want)
    got = torch.from_numpy(host.perturb(seed, stream, step, q, dim, R.DIST_CODES[dist]))
    assert bits_equal(got, want)


def test_prefix_property_and_independence():
    """A coordinate's value depends only on its counter: shapes are views of one stream."""
    big = R.perturb(5, 0, 3, 4, 300)
    assert torch.equal(R.perturb(5, 0, 3, 2, 100), big[:2, :100])
    for other in (R.perturb(6, 0, 3, 4, 300), R.perturb(5, 1, 3, 4, 300), R.perturb(5, 0, 4, 4, 300)):
        assert (other != big).float().mean() > 0.99
    assert (big[0] != big[1]).float().mean() > 0.99


def test_distributions():
    z = R.perturb(1, 0, 1, 8, 20000, "segmented")
    assert z.abs().min() >= 0.5 and z.abs().max() < 1
    assert abs(float((z > 0).float().mean()) - 0.5) < 0.01
    assert abs(float(z.abs().mean()) - 0.75) < 0.005  # U[0.5, 1)
    r = R.perturb(1, 0, 1, 8, 20000, "rademacher")
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(r, torch.sign(z))  # same sign bit by definition
    g = R.perturb(1, 0, 1, 8, 20000, "gaussian").double()
    assert abs(float(g.mean())) < 0.02 and abs(float(g.std()) - 1) < 0.02
    assert abs(float((g.abs() < 1).double().mean()) - 0.6827) < 0.01


def test_gaussian_polynomials_are_accurate():
    u = (torch.arange(1, 2 ** 16 + 1, dtype=torch.float64) * 2.0 ** -16).float()  # (0, 1]
    ln = R.log_unit(u).double()
    assert float((ln - u.double().log()).abs().max()) < 4e-7 * 17  # a few ulp of |ln u| ≤ 11.1
    v = u - 2.0 ** -16  # [0, 1)
    c = R.cos_2pi(v).double()
    assert float((c - torch.cos(2 * math.pi * v.double())).abs().max()) < 3e-7


def _exact_cos_2pi(u: torch.Tensor) -> torch.Tensor:
    """cos(2π u) in float64 with the argument reduced exactly to |r| ≤ 1/8 (so cos(π/2) is 0, not 6e-17)."""
    u = u.double()
    k = torch.round(4 * u)
    r, k = u - k / 4, k.long() % 4
    c, s = torch.cos(2 * math.pi * r), torch.sin(2 * math.pi * r)
    return torch.where(k == 0, c, torch.where(k == 1, -s, torch.where(k == 2, -c, s)))


def _ulp(x: torch.Tensor) -> torch.Tensor:
    """The float32 ulp at |x| (x float64), as float64."""
    a = x.float().abs()
    return (torch.nextafter(a, torch.tensor(float("inf"))) - a).double()


def test_gaussian_error_bound_holds_for_every_input():
    # z = fl(R̃·C̃) with R̃ = R(1+a), C̃ = C(1+b), so |z − RC| / ulp(RC) < 2^24 (|a| + |b|) + ½ (+ o(2^-24)).
    # a and b are checked over all 2^24 values each uniform takes, which bounds all 2^48 pairs.
    i = torch.arange(2 ** 24, dtype=torch.int64)
    u1 = (i + 1).to(torch.float32) * 2.0 ** -24
    exact_r = torch.sqrt(-2 * torch.log(u1.double()))
    got_r = R._sqrt_rn(-2.0 * R.log_unit(u1)).double()
    a = torch.where(exact_r > 0, (got_r - exact_r).abs() / exact_r, (got_r != 0).double())
    u2 = i.to(torch.float32) * 2.0 ** -24
    exact_c = _exact_cos_2pi(u2)
    got_c = R.cos_2pi(u2).double()
    assert torch.equal(got_c[exact_c == 0], torch.zeros_like(got_c[exact_c == 0]))  # cos(π/2), cos(3π/2) exactly 0
    b = (got_c - exact_c).abs() / exact_c.abs().clamp_min(1e-300)
    a_max, b_max = float(a.max()) * 2 ** 24, float(b.max()) * 2 ** 24
    assert a_max <= 2.63 + 5e-3 and b_max <= 2.84 + 5e-3  # the relative errors stated in the reference
    assert a_max + b_max + 0.5 + 1e-3 < R.GAUSSIAN_MAX_ULP


def test_gaussian_sampled_error_against_exact_box_muller():
    w = R.words(1, 0, 1, 16, 62500)  # 1,000,000 draws
    z = R.gaussian(w[..., 2], w[..., 3]).double()
    u1 = (((w[..., 2] >> 8) + 1).double()) * 2.0 ** -24
    exact = torch.sqrt(-2 * torch.log(u1)) * _exact_cos_2pi(((w[..., 3] >> 8).double() * 2.0 ** -24).float())
    assert torch.equal(z[exact == 0], exact[exact == 0])
    ulps = ((z - exact).abs() / _ulp(exact))[exact != 0]
    assert float(ulps.max()) < R.GAUSSIAN_MAX_ULP
    assert float(ulps.max()) > 2 and 0.001 < float((ulps > 2).double().mean()) < 0.01  # not "~2 ulp": ≈ 0.6 % above


@pytest.mark.parametrize("fn", ["log_unit", "cos_2pi"])
def test_gaussian_polynomials_bit_identical_on_host_build(fn, host):
    u = torch.rand(4096, generator=torch.Generator().manual_seed(3)).clamp_min(2.0 ** -24)
    assert bits_equal(torch.from_numpy(getattr(host, fn)(u.numpy())), getattr(R, fn)(u))


def test_device_tensors_and_compile():
    """Counters as tensors; the custom op compiles without graph breaks."""
    seed, step = torch.tensor(11), torch.tensor(4)
    f = torch.compile(lambda s, k: P.perturb(s, k, 3, 17) * 2, fullgraph=True, backend="aot_eager")
    assert torch.equal(f(seed, step), 2 * R.perturb(11, 0, 4, 3, 17))
    assert torch.equal(f(seed, step + 1), 2 * R.perturb(11, 0, 5, 3, 17))  # fresh draw per step value


def test_registry_and_bad_input(monkeypatch):
    names = {r["backend"] for r in registry.table("cpu") if r["op"] == "perturb" and r["registered"]}
    assert names == {"cuda", "triton", "torch", "reference"}
    monkeypatch.setenv("ZIPFAST_BACKEND_PERTURB", "cuda")
    registry._reset_for_tests()
    with pytest.raises(registry.BackendUnavailableError, match="cuda"):
        P.perturb(1, 1, 1, 4)
    monkeypatch.delenv("ZIPFAST_BACKEND_PERTURB")
    with pytest.raises(ValueError, match="'normal'"):
        P.perturb(1, 1, 1, 4, dist="normal")


def test_forced_triton_backend(monkeypatch, triton_ok):
    monkeypatch.setenv("ZIPFAST_BACKEND_PERTURB", "triton")
    registry._reset_for_tests()
    assert registry.resolve("perturb", "cpu")[0] == "triton"
    assert bits_equal(P.perturb(3, 2, 2, 33, dist="gaussian"), R.perturb(3, 0, 2, 2, 33, "gaussian"))
