"""ZIPTrainer on the planted task: learning, query accounting, determinism, resume."""

import json

import pytest
import torch

from zipfast import ZIPTrainer
from zipfast import reference as ref
from zipfast.config import TrainConfig
from zipfast.data.planted import make_planted_task, planted_model
from zipfast.optim import SPSA
from zipfast.engine.towers import TextTower


@pytest.fixture(scope="module")
def planted():
    model, tok = planted_model(0)
    return model, tok


def small_cfg(**kw):
    base = dict(model="zipfast-planted", pretrained="none", dataset="planted", n_ctx=4, intrinsic_dim=40,
                rank=2, batch_size=16, budget=40, seed=3, checkpoint_every=0)
    base.update(kw)
    return TrainConfig(**base)


def small_trainer(planted, out=None, **kw):
    model, tok = planted
    task = make_planted_task(TextTower(model), tok, n_ctx=4, shots=4, test_per_class=5, seed=0)
    return ZIPTrainer(model, task.classnames, small_cfg(**kw), task, tokenizer=tok, output_dir=out, progress=False)


def test_planted_task_training_learns(planted, tmp_path):
    """Default ZIP settings (m=8, d=500, r=5, q=5) on the EuroSAT planted task, 400 queries.
    Measured (seed 1): test accuracy 12.3 % → 59.3 % (fp32) / 12.2 % → 60.0 % (bf16, the CPU
    default); mean loss of the first 5 steps 3.73 → last 5 steps 1.37."""
    model, tok = planted
    task = make_planted_task(TextTower(model), tok, seed=0)
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=400, seed=1)
    tr = ZIPTrainer(model, task.classnames, cfg, task, tokenizer=tok, output_dir=tmp_path, progress=False)
    before = tr.evaluate()
    report = tr.fit()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert before < 20
    assert report["test_acc"] > 40
    assert report["queries"] == 400 and len(log) == 40
    first, last = sum(r["loss"] for r in log[:5]) / 5, sum(r["loss"] for r in log[-5:]) / 5
    assert last < first - 1.5, (first, last)
    assert all(set(r) >= {"step", "queries", "loss", "train_acc", "a_k", "c_k", "grad_norm", "clipped"} for r in log)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["test_acc"] == report["test_acc"] and saved["seed"] == 1 and "torch" in saved["versions"]


@pytest.mark.parametrize("budget,expected", [(40, 40), (36, 36), (37, 36), (12, 12), (10, 10)])
def test_query_accounting_never_exceeds_budget(planted, budget, expected):
    tr = small_trainer(planted, budget=budget)
    calls = []
    real = tr.engine.losses

    def counting(ctx, feats, labels):
        calls.append(ctx.shape[0])
        return real(ctx, feats, labels)

    tr.engine.losses = counting
    report = tr.fit()
    assert sum(calls) == report["queries"] == tr.queries == expected
    assert all(k % 2 == 0 and k <= 10 for k in calls)


def test_same_seed_same_trajectory_and_other_seed_differs(planted):
    a, b, c = (small_trainer(planted, seed=s) for s in (3, 3, 4))
    for t in (a, b, c):
        t.fit()
    assert torch.equal(a.w, b.w)
    assert not torch.equal(a.w, c.w)


@pytest.mark.parametrize("opt_type", ["spsa-clip", "spsa-gc"])
def test_resume_is_bit_for_bit(planted, tmp_path, opt_type):
    full = small_trainer(planted, tmp_path / "full", budget=60, opt_type=opt_type)
    full.fit()
    half = small_trainer(planted, tmp_path / "half", budget=30, opt_type=opt_type)
    half.fit()
    resumed = small_trainer(planted, tmp_path / "half", budget=60, opt_type=opt_type)
    resumed.load_checkpoint(tmp_path / "half" / "checkpoint.safetensors")
    assert resumed.step == 3 and resumed.queries == 30
    resumed.fit()
    assert torch.equal(resumed.w, full.w)
    assert resumed.queries == full.queries == 60
    log_full = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    log_res = [json.loads(x) for x in (tmp_path / "half" / "log.jsonl").read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert strip(log_res) == strip(log_full)


def quadratic(W, target):
    return ((W - target) ** 2).sum(-1)


@pytest.mark.parametrize("perturbation", ["philox", "official"])
@pytest.mark.parametrize("opt_type", ["spsa-clip", "spsa", "spsa-gc"])
def test_optimiser_matches_reference_formulas(opt_type, perturbation):
    from zipfast.ops.perturb import reference as perturb_ref

    dim, q = 7, 3
    params = (1.0, 0.01, 0.05, 0.4, 0.1)
    opt = SPSA(torch.zeros(dim), opt_type, q, params, moms=0.8, seed=5, perturbation=perturbation)
    gen = torch.Generator().manual_seed(5)
    target = torch.linspace(-3, 3, dim)
    w_ref, m = torch.zeros(dim), None
    o, c, a, alpha, gamma = params
    for k in range(1, 4):
        cand = opt.ask(1000)
        info = opt.tell(quadratic(cand, target))
        w = opt.point
        # philox: the counter stream (seed, stream 0, step k); official: the generator's draw order
        z = perturb_ref.perturb(5, 0, k, q, dim) if perturbation == "philox" else ref.segmented_uniform(q, dim, gen)
        ck, ak = ref.c_k(k, c, gamma), ref.a_k(k, a, o, alpha)
        lo = quadratic(ref.antithetic_candidates(w_ref, z, ck), target)
        g = ref.spsa_estimate(lo[:q], lo[q:], z, ck)
        if opt_type == "spsa-clip":
            d, _ = ref.clip_to_intrinsic_dim(g)
        elif opt_type == "spsa-gc":
            d, m = ref.gc_direction(g, m, 0.8, k)
        else:
            d = g
        w_ref = w_ref - ak * d
        torch.testing.assert_close(w, w_ref, rtol=1e-6, atol=1e-7)
        assert info["a_k"] == pytest.approx(ak) and info["c_k"] == pytest.approx(ck)
    assert quadratic(w, target) < quadratic(torch.zeros(dim), target)


def test_partial_last_step_uses_fewer_pairs():
    opt = SPSA(torch.zeros(5), "spsa-clip", 5, seed=0)
    cand = opt.ask(5)  # 5 queries left: 2 pairs
    assert cand.shape == (4, 5)
    with pytest.raises(ValueError, match="expected 4 losses"):
        opt.tell(torch.zeros(10))
    assert opt.ask(1).shape == (0, 5)  # no pair fits: K = 0


def test_hook_time_is_not_training_time_and_the_final_point_reuses_the_final_evaluation(planted, monkeypatch):
    """On a fake clock (the run loop's time.perf_counter): each round takes ROUND s, each hook call
    (on_start, after each round, on_end) HOOK s. Training time is exactly the rounds' time."""
    from types import SimpleNamespace

    from zipfast.run import loop as run_loop

    ROUND, HOOK = 1.0, 1000.0
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(run_loop, "time", SimpleNamespace(perf_counter=lambda: clock.now))

    class SlowHook:
        """A step hook that takes HOOK s at the start, after each round and at the end."""

        def __init__(self):
            self.calls, self.end_acc, self.times = 0, None, []

        def on_start(self, trainer):
            clock.now += HOOK

        def __call__(self, trainer, rec):
            self.calls += 1
            self.times.append((rec["step"], rec["time_s"]))
            clock.now += HOOK

        def on_end(self, trainer, test_acc):
            self.end_acc = test_acc
            clock.now += HOOK

    tr = small_trainer(planted, budget=30)
    hook = SlowHook()
    tr.step_hooks.append(hook)
    evaluations = []
    real = tr.evaluate
    tr.evaluate = lambda *a: evaluations.append(1) or real(*a)
    real_round = tr._round

    def timed_round(remaining):
        clock.now += ROUND
        return real_round(remaining)

    tr._round = timed_round
    report = tr.fit()
    assert hook.calls == report["steps"] >= 3  # ≥ 5 × HOOK of hooks in all
    assert clock.now >= (report["steps"] + 2) * HOOK  # the hooks did advance the clock
    assert report["wall_time_s"] == report["steps"] * ROUND, report["wall_time_s"]  # hooks' time excluded, exactly
    assert hook.times == [(k, k * ROUND) for k in range(1, report["steps"] + 1)]  # and from each round's time_s
    assert hook.end_acc == report["test_acc"] and len(evaluations) == 1  # on_end gets it, not a second pass
