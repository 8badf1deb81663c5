"""zipfast.reference against explicit dense matrices and hand-computed values."""

import math

import pytest
import torch

from zipfast import reference as ref


def hadamard(n, dtype=torch.float64):
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("n", [1, 2, 8, 64, 512, 1024])
def test_fwht_equals_dense_hadamard(n):
    x = torch.randn(3, 5, n, dtype=torch.float64)
    torch.testing.assert_close(ref.fwht(x), x @ hadamard(n), rtol=1e-12, atol=1e-10)


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power of two, got 640"):
        ref.fwht(torch.zeros(640))


def dense_fastfood(ff: ref.FastfoodParams, i: int, d_t: int):
    """The explicit R^{d_t} → R^D matrix of token i: H G Π H B, cropped and scaled."""
    L, D = ff.L, ff.D
    H = hadamard(L)
    B = torch.diag(ff.B[i].double())
    P = torch.zeros(L, L, dtype=torch.float64)
    P[torch.arange(L), ff.Pi[i]] = 1  # (P v)[j] = v[Π[j]]
    G = torch.diag(ff.G[i].double())
    M = H @ G @ P @ H @ B  # L × L
    scale = ff.divisor[i].double() * math.sqrt(D / L)
    return M[:D, :d_t] / scale


@pytest.mark.parametrize("D", [512, 640, 768, 100])
def test_fastfood_equals_dense_matrices(D):
    g = torch.Generator().manual_seed(D)
    m, d_t = 3, 62
    ff = ref.draw_fastfood(m, D, g)
    assert ff.L == 1 << math.ceil(math.log2(D))
    assert set(ff.B.unique().tolist()) <= {-1.0, 1.0}
    assert all(sorted(p.tolist()) == list(range(ff.L)) for p in ff.Pi)
    torch.testing.assert_close(ff.divisor, torch.sqrt(ff.L * (ff.G ** 2).sum(-1)))
    x = torch.randn(4, m, d_t, dtype=torch.float64)
    got = ref.fastfood_project(x, ff.to(dtype=torch.float64))
    want = torch.stack([x[:, i] @ dense_fastfood(ff, i, d_t).T for i in range(m)], dim=1)
    assert got.shape == (4, m, D)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_param_dim_defaults_and_others():
    assert ref.param_dim(8, 500, 5) == 417
    assert ref.token_intrinsic_dim(500, 8) == 62
    for m, d, r in [(4, 100, 3), (16, 1000, 7), (1, 10, 1)]:
        dt = d // m
        assert ref.param_dim(m, d, r) == m * r + r + dt * r + dt


def test_split_and_init_params_order():
    g = torch.Generator().manual_seed(0)
    w = ref.init_params(8, 500, 5, g)
    u, s, v, sv = ref.split_params(w, 8, 62, 5)
    assert w.shape == (417,)
    assert u.shape == (8, 5) and torch.all(u == 0)
    assert s.shape == (5,) and torch.all(s == 1)
    assert v.shape == (62, 5) and v.std() > 0.5
    assert sv.shape == (62,) and torch.all(sv == 0)
    # flat order U, s, V, shared_V
    w2 = torch.arange(417.0)
    u, s, v, sv = ref.split_params(w2, 8, 62, 5)
    assert u[0, 0] == 0 and s[0] == 40 and v[0, 0] == 45 and sv[0] == 355 and sv[-1] == 416


@pytest.mark.parametrize("m,d,r,D", [(8, 500, 5, 512), (4, 100, 3, 96), (3, 50, 2, 33)])
def test_reconstruction_shapes_and_formula(m, d, r, D):
    g = torch.Generator().manual_seed(1)
    ff = ref.draw_fastfood(m, D, g).to(dtype=torch.float64)
    ctx0 = torch.randn(m, D, generator=g, dtype=torch.float64)
    delta = ref.param_dim(m, d, r)
    W = torch.randn(5, delta, dtype=torch.float64)
    ctx = ref.reconstruct_ctx(W, ctx0, ff, r)
    assert ctx.shape == (5, m, D)
    dt = d // m
    for k in range(5):
        u, s, v, sv = ref.split_params(W[k], m, dt, r)
        Z = u @ torch.diag(s) @ v.T + sv.unsqueeze(0)
        for i in range(m):
            want = ctx0[i] + dense_fastfood(ff, i, dt) @ Z[i]
            torch.testing.assert_close(ctx[k, i], want, rtol=1e-10, atol=1e-12)


def test_zero_u_and_shared_v_give_ctx0_exactly():
    g = torch.Generator().manual_seed(2)
    ff = ref.draw_fastfood(8, 512, g)
    ctx0 = torch.randn(8, 512, generator=g)
    w = ref.init_params(8, 500, 5, g)  # U = 0, shared_V = 0, V random, s = 1
    assert torch.equal(ref.reconstruct_ctx(w[None], ctx0, ff, 5)[0], ctx0)


def test_segmented_uniform_distribution_and_draw_order():
    z = ref.segmented_uniform(5, 4000, torch.Generator().manual_seed(3))
    a = z.abs()
    assert z.shape == (5, 4000)
    assert a.min() >= 0.5 and a.max() < 1.0
    assert abs((z > 0).float().mean().item() - 0.5) < 0.02
    assert abs(a.mean().item() - 0.75) < 0.01
    # official order: per pair δ uniforms, then δ Bernoulli draws
    g = torch.Generator().manual_seed(4)
    z = ref.segmented_uniform(2, 7, g)
    g = torch.Generator().manual_seed(4)
    for j in range(2):
        p = (torch.rand(7, generator=g) + 1) / 2
        b = torch.bernoulli(torch.full((7,), 0.5), generator=g)
        assert torch.equal(z[j], torch.where(b.bool(), -p, p))


def test_spsa_estimate_by_hand():
    z = torch.tensor([[0.5, -1.0, 0.8], [-0.6, 0.7, 1.0]])
    lp = torch.tensor([2.0, 1.5])
    lm = torch.tensor([1.0, 1.7])
    ck = 0.01
    want = torch.tensor([
        ((2.0 - 1.0) / (0.02 * 0.5) + (1.5 - 1.7) / (0.02 * -0.6)) / 2,
        ((2.0 - 1.0) / (0.02 * -1.0) + (1.5 - 1.7) / (0.02 * 0.7)) / 2,
        ((2.0 - 1.0) / (0.02 * 0.8) + (1.5 - 1.7) / (0.02 * 1.0)) / 2,
    ])
    torch.testing.assert_close(ref.spsa_estimate(lp, lm, z, ck), want)
    cand = ref.antithetic_candidates(torch.zeros(3), z, ck)
    torch.testing.assert_close(cand, torch.cat([ck * z, -ck * z]))


def test_clipping_by_hand():
    g = torch.tensor([3.0, 4.0, 0.0, 0.0])  # ‖g‖ = 5, √δ = 2
    out, clipped = ref.clip_to_intrinsic_dim(g)
    assert bool(clipped)
    torch.testing.assert_close(out, torch.tensor([1.2, 1.6, 0.0, 0.0]))
    small = torch.tensor([1.0, 0.0, 0.0, 0.0])
    out, clipped = ref.clip_to_intrinsic_dim(small)
    assert not bool(clipped) and torch.equal(out, small)
    edge = torch.tensor([2.0, 0.0, 0.0, 0.0])  # ‖g‖ = √δ exactly: the official test is ≥
    assert bool(ref.clip_to_intrinsic_dim(edge)[1])


def test_schedules_by_hand():
    o, c, a, alpha, gamma = 1.0, 0.01, 0.01, 0.4, 0.1
    assert ref.a_k(1, a, o, alpha) == pytest.approx(0.01 / 2 ** 0.4)
    assert ref.a_k(10, a, o, alpha) == pytest.approx(0.01 / 11 ** 0.4)
    assert ref.c_k(1, c, gamma) == pytest.approx(0.01)
    assert ref.c_k(500, c, gamma) == pytest.approx(0.01 / 500 ** 0.1)


def test_gc_momentum_formula():
    b1 = 0.8
    g1, g2, g3 = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5]), torch.tensor([-1.0, 3.0])
    d1, m1 = ref.gc_direction(g1, None, b1, 1)
    torch.testing.assert_close(m1, g1)
    torch.testing.assert_close(d1, g1 + b1 * g1)
    d2, m2 = ref.gc_direction(g2, m1, b1, 2)
    torch.testing.assert_close(m2, b1 * g1 + g2)
    torch.testing.assert_close(d2, g2 + b1 * (b1 * g1 + g2))
    d3, m3 = ref.gc_direction(g3, m2, b1, 3)
    torch.testing.assert_close(m3, b1 * (b1 * g1 + g2) + g3)
    torch.testing.assert_close(d3, g3 + b1 * m3)


def test_clip_logits_by_hand():
    img = torch.tensor([[3.0, 4.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logits = ref.clip_logits(img, txt, math.log(100.0))
    torch.testing.assert_close(logits, torch.tensor([[60.0, 80.0]]))
