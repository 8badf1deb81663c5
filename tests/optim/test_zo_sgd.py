"""ZO-SGD (MeZO-style): one step by hand, budget cut, determinism, state round trip."""

import pytest
import torch

from zipfast.optim.zo_sgd import ZOSGD, gaussian_two_point


def f(X):
    return ((X - torch.arange(5.0)) ** 2).sum(-1)


def test_one_step_by_hand():
    w0 = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])
    opt = ZOSGD(w0, pairs=2, mu=0.1, lr=0.01, seed=3)
    z = torch.randn(2, 5, generator=torch.Generator().manual_seed(3))
    cand = opt.ask(100)
    torch.testing.assert_close(cand, torch.stack([w0 + 0.1 * z[0], w0 + 0.1 * z[1], w0 - 0.1 * z[0], w0 - 0.1 * z[1]]))
    L = f(cand)
    stats = opt.tell(L)
    g = ((L[0] - L[2]) / 0.2 * z[0] + (L[1] - L[3]) / 0.2 * z[1]) / 2
    torch.testing.assert_close(opt.point, w0 - 0.01 * g)
    assert stats["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-5)
    assert stats["loss"] == pytest.approx(float(L.mean()), rel=1e-6) and opt.step == 1
    # for a quadratic the central difference is exact: ĝ_j = (∇f · z_j) z_j
    grad = 2 * (w0 - torch.arange(5.0))
    torch.testing.assert_close(gaussian_two_point(L[:2], L[2:], z, 0.1), ((z @ grad).unsqueeze(-1) * z).mean(0),
                               rtol=1e-4, atol=1e-4)


def test_budget_cut_and_empty_ask():
    opt = ZOSGD(torch.zeros(5), pairs=5)
    assert opt.ask(7).shape == (6, 5)
    opt.discard()
    assert opt.ask(1).shape == (0, 5)
    with pytest.raises(RuntimeError, match="without a preceding ask"):
        opt.tell(torch.zeros(2))


def test_descends_deterministic_and_resumes_bit_exact():
    def run(opt, n):
        for _ in range(n):
            opt.tell(f(opt.ask(100)))
        return opt

    a, b = run(ZOSGD(torch.zeros(5), lr=0.02, seed=1), 30), run(ZOSGD(torch.zeros(5), lr=0.02, seed=1), 30)
    assert torch.equal(a.point, b.point) and f(a.point[None]) < 0.5 * f(torch.zeros(1, 5))
    half = run(ZOSGD(torch.zeros(5), lr=0.02, seed=1), 12)
    resumed = ZOSGD(torch.zeros(5), lr=0.02, seed=1)
    resumed.load_state_dict(half.state_dict())
    assert torch.equal(run(resumed, 18).point, a.point)
    with pytest.raises(ValueError, match="lr"):
        ZOSGD(torch.zeros(5), lr=0.5).load_state_dict(half.state_dict())
