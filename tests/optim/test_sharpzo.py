"""SharpZO: stage-1 and stage-2 arithmetic, stage switch, masks, ε*, query costs, determinism, resume."""

import numpy as np
import pytest
import torch

from zipfast.optim.sharpzo import SharpZO, keep_mask, sharpness_eps, zpruning_score, zscore


def quad(target):
    return lambda X: ((X - target) ** 2).sum(-1)


def run_rounds(opt, f, n, remaining=10**6):
    stats = []
    for _ in range(n):
        cand = opt.ask(remaining)
        if len(cand) == 0:
            break
        stats.append(opt.tell(f(cand)))
    return stats


def test_eps_has_norm_rho_and_zero_gradient_gives_zero():
    g = torch.tensor([3.0, -4.0, 0.0, 12.0])
    eps = sharpness_eps(g, 0.1)
    assert float(eps.norm()) == pytest.approx(0.1, rel=1e-6)
    torch.testing.assert_close(eps, g / 13 * 0.1)
    assert torch.equal(sharpness_eps(torch.zeros(4), 0.1), torch.zeros(4))


def test_zpruning_score_and_masks_select_the_documented_end():
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.0, 2.0, 1.5, -0.5, 1.0])
    g = torch.tensor([0.1, -0.5, 2.0, 0.3, -1.0, 4.0, 0.2, 0.6, -0.1, 0.0])
    a = g.abs()
    expect = w.abs() ** 2 * (a - a.mean()) / (a.std(unbiased=False) + 1e-8)
    s = zpruning_score(w, g)
    torch.testing.assert_close(s, expect)
    assert float(zscore(a).mean()) == pytest.approx(0.0, abs=1e-6)
    for frac, k in ((0.3, 3), (0.1, 1), (0.25, 2), (1.0, 10)):
        top, bottom = keep_mask(s, frac, "top"), keep_mask(s, frac, "bottom")
        assert int(top.sum()) == int(bottom.sum()) == k
        assert set(top.unique().tolist()) <= {0.0, 1.0}
        if k < 10:
            assert s[top.bool()].min() >= s[~top.bool()].max()
            assert s[bottom.bool()].max() <= s[~bottom.bool()].min()


def test_stage1_generation_arithmetic_by_hand():
    """Probe: 2·grad_dirs candidates θ ± μ_g u_j; ε* = ρ ĝ/‖ĝ‖; population: pycma's x_i + ε*."""
    d, target = 6, torch.linspace(-1, 1, 6)
    f = quad(target)
    opt = SharpZO(torch.zeros(d), popsize=8, sigma0=0.3, rho=0.1, change_point=5, grad_dirs=3, grad_mu=1e-2, seed=4)
    gen = torch.Generator().manual_seed(4)
    u = torch.randn(3, d, generator=gen)
    probe = opt.ask(1000)
    torch.testing.assert_close(probe, torch.cat([1e-2 * u, -1e-2 * u]))
    lp = f(probe)
    st = opt.tell(lp)
    g = ((lp[:3] - lp[3:]) / 2e-2).unsqueeze(-1).mul(u).mean(0)
    eps = 0.1 * g / g.norm()
    torch.testing.assert_close(opt.eps, eps)
    assert st["eps_norm"] == pytest.approx(0.1, rel=1e-5) and st["phase"] == "probe"
    # the population: pycma's samples (private seeded RNG) shifted by ε*
    import cma

    rng = np.random.Generator(np.random.PCG64(4))
    es = cma.CMAEvolutionStrategy(np.zeros(d), 0.3, {"popsize": 8, "seed": np.nan, "verbose": -10, "verb_log": 0,
                                                     "randn": lambda *s: rng.standard_normal(s)})
    xs = es.ask()
    pop = opt.ask(1000)
    assert pop.shape == (8, d)
    torch.testing.assert_close(pop, torch.as_tensor(np.asarray(xs), dtype=torch.float32) + eps)
    fit = f(pop)
    st = opt.tell(fit)
    es.tell(xs, [float(v) for v in fit.double()])
    np.testing.assert_array_equal(opt.es.mean, es.mean)
    assert st["generation"] == 1 and opt.point.dtype == torch.float32
    torch.testing.assert_close(opt.point, torch.as_tensor(es.mean, dtype=torch.float32))


def test_stage_switch_at_change_point_then_sparse_zo_sgd_by_hand():
    d = 20
    f = quad(torch.ones(d))
    opt = SharpZO(torch.zeros(d), popsize=6, change_point=3, grad_dirs=2, pairs=1, mu=1e-2, lr=0.05,
                  prune_interval=4, keep_fraction=0.25, seed=1)
    for gen in range(3):
        assert opt.stage == 1
        for k in (4, 6):  # probe (2·grad_dirs) then the population
            cand = opt.ask(10**6)
            assert len(cand) == k
            opt.tell(f(cand))
    mean = opt.point.clone()
    cand = opt.ask(10**6)  # the first stage-2 round: the mask's gradient estimate at the stage-1 mean
    assert opt.stage == 2 and opt.switch_reason == "change point" and len(cand) == 4
    torch.testing.assert_close(opt.w, mean)
    opt.tell(f(cand))
    assert int(opt.mask.sum()) == 5  # ⌊0.25·20⌋
    # one stage-2 step by hand: z ~ N(0, I) from the optimiser's generator, masked
    state = opt.generator.get_state()
    z = torch.randn(1, d, generator=torch.Generator().set_state(state))
    cand = opt.ask(10**6)
    zm = z * opt.mask
    torch.testing.assert_close(cand, torch.cat([mean + 1e-2 * zm, mean - 1e-2 * zm]))
    L = f(cand)
    opt.tell(L)
    expect = mean - 0.05 * ((L[0] - L[1]) / 2e-2) * zm[0]
    torch.testing.assert_close(opt.point, expect)
    assert torch.equal(opt.point[opt.mask == 0], mean[opt.mask == 0])  # masked coordinates never move
    run_rounds(opt, f, 3)
    # stage-2 steps 0..3 done → step 4 starts with a mask round again (every P = 4 steps)
    assert opt.j == 4 and len(opt.ask(10**6)) == 4


def test_released_option_costs_2d_plus_population_per_generation():
    d, pop = 16, 40
    f = quad(torch.zeros(d) + 0.5)
    opt = SharpZO(torch.zeros(d), popsize=pop, grad_estimator="cge", grad_mu=1e-3, change_point=2, seed=0,
                  prune=False)
    assert opt.generation_cost() == 2 * d + pop
    probe = opt.ask(10**6)
    assert probe.shape == (2 * d, d)
    torch.testing.assert_close(probe, torch.cat([1e-3 * torch.eye(d), -1e-3 * torch.eye(d)]))
    L = f(probe)
    opt.tell(L)
    g = (L[:d] - L[d:]) / 2e-3  # one difference quotient per coordinate
    torch.testing.assert_close(opt.g_last, g)
    assert opt.ask(10**6).shape == (pop, d)


def test_budget_cut_switches_stage_early_and_final_step_fits():
    f = quad(torch.ones(8))
    kw = dict(popsize=10, grad_dirs=2, change_point=100, prune=False, pairs=3, seed=0)
    opt = SharpZO(torch.zeros(8), **kw)
    assert len(opt.ask(13)) == 6  # 13 < 4 + 10: no generation fits → stage 2, 3 pairs
    assert opt.stage == 2 and opt.switch_reason.startswith("budget")
    opt.discard()
    assert len(opt.ask(5)) == 4  # cut to 2 pairs
    opt.discard()
    assert len(opt.ask(1)) == 0  # no antithetic pair fits: K = 0
    fits = SharpZO(torch.zeros(8), **kw)
    probe = fits.ask(14)  # exactly one generation fits
    assert len(probe) == 4 and fits.stage == 1
    fits.tell(f(probe))
    assert len(fits.ask(10)) == 10  # the population, paid for when the probe was asked


def test_same_seed_same_trajectory_whatever_the_global_numpy_state():
    f = quad(torch.linspace(0, 1, 10))

    def trajectory(seed, np_seed):
        np.random.seed(np_seed)
        opt = SharpZO(torch.zeros(10), popsize=6, grad_dirs=2, change_point=3, prune_interval=2, seed=seed)
        run_rounds(opt, f, 12)
        return opt.point

    a, b, c = trajectory(1, 0), trajectory(1, 999), trajectory(2, 0)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("cut", [3, 5, 8])  # mid stage 1 (after a probe / after a population), in stage 2
def test_state_dict_round_trip_is_bit_exact(cut):
    f = quad(torch.linspace(-1, 1, 10))
    kw = dict(popsize=6, grad_dirs=2, change_point=3, prune_interval=2, keep_fraction=0.3, accumulate=True, seed=7)
    full = SharpZO(torch.zeros(10), **kw)
    run_rounds(full, f, 14)
    half = SharpZO(torch.zeros(10), **kw)
    run_rounds(half, f, cut)
    sd = half.state_dict()
    sd = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sd.items()}
    resumed = SharpZO(torch.zeros(10), **kw)
    resumed.load_state_dict(sd)
    run_rounds(resumed, f, 14 - cut)
    assert torch.equal(resumed.point, full.point) and resumed.step == full.step == 14


def test_load_refuses_other_settings():
    opt = SharpZO(torch.zeros(4), popsize=4, seed=0)
    other = SharpZO(torch.zeros(4), popsize=6, seed=0)
    with pytest.raises(ValueError, match="popsize"):
        other.load_state_dict(opt.state_dict())


# ------------------------------------------------------------------ the release's [popsize, d] stage-2 parameter


def released_stage2(theta, g_c, f, popsize, mu, lr, steps, gen):
    """The released main_sharpzo.py's stage 2 (prompt_trainer zo), written out: its parameter P is
    theta [d] at the first step; grad_tmp G starts as the [popsize, d] coordinate-gradient copy
    (identical rows g_c) and is never reset; each step draws z of P's shape, queries the row mean
    of P ± μz, adds g·z to G (broadcast) and sets P ← P − lr·G. Returns the row means of P."""
    P, G, means = theta.clone(), g_c.expand(popsize, -1).clone(), []
    for _ in range(steps):
        z = torch.randn(P.shape, generator=gen)
        plus, minus = (P + mu * z).reshape(-1, theta.numel()).mean(0), (P - mu * z).reshape(-1, theta.numel()).mean(0)
        g = (f(plus) - f(minus)) / (2 * mu)
        G = G + g * z
        P = P - lr * G
        means.append(P.reshape(-1, theta.numel()).mean(0))
    return means


@pytest.mark.parametrize("rows", [True, False])
def test_stage2_row_mean_perturbation_equals_the_release(rows):
    d, popsize, target = 6, 5, torch.linspace(-1, 1, 6)
    f = quad(target)
    opt = SharpZO(torch.zeros(d), popsize=popsize, sigma0=0.3, rho=0.05, change_point=1, grad_estimator="cge",
                  grad_mu=1e-3, mu=1e-2, lr=0.05, prune=False, accumulate=True, popsize_rows=rows, seed=2)
    run_rounds(opt, f, 2)  # one generation: its probe (2d queries) and its population; the next ask switches
    theta, g_c = opt.point.clone(), opt.g_last.clone()  # the stage-1 mean and the last coordinate gradient
    gen = torch.Generator()
    gen.set_state(opt.generator.get_state())
    want = released_stage2(theta, g_c, f, popsize, 1e-2, 0.05, 6, gen)
    ours = []
    for _ in range(6):
        opt.tell(f(opt.ask(10**6)))
        assert opt.stage == 2
        ours.append(opt.w.clone())
    same = all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(ours, want))
    assert same == rows  # one Gaussian row per step is not what the release computes from the second step on
    assert torch.allclose(ours[0], want[0], rtol=1e-5, atol=1e-6)  # the first step draws one row either way


def test_released_preset_sets_the_release_behaviours():
    from zipfast.methods import SHARPZO_RELEASED, resolve_options

    o = resolve_options("sharpzo", {"preset": "released"})
    assert o.popsize_rows and o.init_text == "a photo of a" and o.accumulate and o.grad_estimator == "cge"
    assert {k: getattr(o, k) for k in SHARPZO_RELEASED} == SHARPZO_RELEASED
    paper = resolve_options("sharpzo", {})
    assert not paper.popsize_rows and paper.init_text == ""
    assert resolve_options("sharpzo", {"preset": "released", "popsize_rows": False}).popsize_rows is False
