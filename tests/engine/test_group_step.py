"""The run group's fused step (zipfast.engine.group_step, zipfast.run.fused_group) with
ZIPFAST_FUSED_STEP=1 on the CPU (eager): every run in the group equals its fused run alone bit for
bit (final point, log records but time_s, report but times), with one text pass per round for all
fused runs; a run poisoned to NaN leaves with NonFiniteLossError, the others go on. The captured
CUDA graph is tested in tests/test_gpu.py (skipped without CUDA)."""

import dataclasses
import logging

import pytest
import torch

from tests.engine import test_step as single
from tests.engine.test_step import PARAMS, _batch, _FakeGraph, rel
from tests.run import test_group as plain_group
from tests.run.test_group import PLANTED, TIMES, _records, _trainer
from zipfast.engine.batched import BatchedEngine
from zipfast.engine.group_step import FusedZIPGroupStep
from zipfast.engine.step import FusedZIPStep
from zipfast.run.group import RunGroup
from zipfast.run.loop import NonFiniteLossError
from zipfast.run.task import load

# ZIP at two step sizes, spsa-gc (momentum) logging every 2nd step with checkpoints every 3rd, a
# second seed whose budget (25) is not a multiple of 2q = 10: its third round is a plain one of 4
RUNS = [dict(seed=1), dict(seed=1, spsa_params=(1.0, 0.01, 0.1, 0.4, 0.1)),
        dict(seed=1, opt_type="spsa-gc", budget=45, log_every=2, checkpoint_every=3), dict(seed=2, budget=25)]


setup = single.setup  # the fused single step's fixture: engine, space, w0, task


@pytest.fixture(scope="module")
def planted_task():
    return load(PLANTED)


@pytest.fixture
def fused_on(monkeypatch):
    monkeypatch.setenv("ZIPFAST_FUSED_STEP", "1")
    torch.set_num_threads(1)


def _alone(task, cfgs, tmp_path):
    out = []
    for i, c in enumerate(cfgs):
        t = _trainer(task, c, tmp_path / f"alone{i}", {})
        rep = t.fit()
        assert t._fused is not None
        out.append((rep, t.w.clone()))
    return out


def test_group_of_fused_runs_equals_each_fused_run_alone(planted_task, tmp_path, fused_on, monkeypatch):
    cfgs = [dataclasses.replace(PLANTED, method="zip", **r) for r in RUNS]
    alone = _alone(planted_task, cfgs, tmp_path)
    passes, builds, many = [], [], BatchedEngine.text_features_many
    monkeypatch.setattr(BatchedEngine, "text_features_many", lambda self, ctxs: passes.append(len(ctxs)) or
                        many(self, ctxs))
    init = FusedZIPGroupStep.__init__
    monkeypatch.setattr(FusedZIPGroupStep, "__init__", lambda self, steps, use_graph=None: builds.append(
        len(steps)) or init(self, steps, use_graph))
    monkeypatch.setattr(FusedZIPStep, "step_fn", lambda self: pytest.fail("a run stepped alone in the group"))
    cache = {}
    group = [_trainer(planted_task, c, tmp_path / f"group{i}", cache) for i, c in enumerate(cfgs)]
    results = RunGroup(group, progress=False).fit()
    for i, (c, (rep, w), got, t) in enumerate(zip(cfgs, alone, results, group)):
        assert isinstance(got, dict), got
        assert torch.equal(t.w, w), i
        assert {k: v for k, v in got.items() if k not in TIMES} == {k: v for k, v in rep.items() if k not in TIMES}
        assert _records(tmp_path / f"group{i}") == _records(tmp_path / f"alone{i}")
    assert [r["queries"] for r in results] == [60, 60, 44, 24]
    # per round ONE text pass for the fused runs (then the plain rounds' own): 4 fused runs twice;
    # run 3's plain round of 4 beside 3 fused; run 2's plain round beside 2; the last fused round
    assert passes == [4, 4, 3, 1, 3, 2, 1, 2]
    assert builds == [4, 3, 2]  # rebuilt each time the set of fused runs changed


def test_a_poisoned_fused_run_leaves_and_the_others_equal_their_runs_alone(planted_task, tmp_path, fused_on):
    cfgs = [dataclasses.replace(PLANTED, method="zip", **r) for r in RUNS[:2] + [dict(seed=2)]]
    alone = _alone(planted_task, cfgs, tmp_path)
    cache = {}
    group = [_trainer(planted_task, c, tmp_path / f"group{i}", cache) for i, c in enumerate(cfgs)]
    ev = group[2].evaluator  # the only run of seed 2: its minibatches are its own
    real = ev.fused_batch

    def poisoned(k):
        feats, labels = real(k)
        return (feats * float("nan"), labels) if k == 3 else (feats, labels)
    ev.fused_batch = poisoned
    results = RunGroup(group, progress=False).fit()
    assert isinstance(results[2], NonFiniteLossError) and "step 3" in str(results[2])
    for i in (0, 1):
        assert torch.equal(group[i].w, alone[i][1])
        assert {k: v for k, v in results[i].items() if k not in TIMES} == \
            {k: v for k, v in alone[i][0].items() if k not in TIMES}
        assert _records(tmp_path / f"group{i}") == _records(tmp_path / f"alone{i}")


def test_fused_group_stopped_by_sigint_resumes_bit_for_bit(planted_task, tmp_path, fused_on, monkeypatch):
    """tests/run/test_group.py's SIGINT test with the ZIP runs on the fused group step (ZO-SGD and
    SharpZO beside them on the plain rounds): every run checkpoints, and resumes bit for bit."""
    sizes, step_fn = [], FusedZIPGroupStep.step_fn
    monkeypatch.setattr(FusedZIPGroupStep, "step_fn", lambda self: sizes.append(len(self.steps)) or step_fn(self))
    plain_group.test_group_stopped_by_sigint_resumes_bit_for_bit(planted_task, tmp_path)
    assert sizes[0] == 3  # the three ZIP runs in one step


def _steps(setup, n=3):
    engine, space, w0, task = setup
    return [FusedZIPStep(space, engine, w0 * (1 + r), seed=7 + r, q=3, batch_size=16,
                         feat_dim=task.train_features.shape[1], spsa_params=PARAMS,
                         opt_type=("spsa-clip", "spsa-gc")[r % 2], use_graph=False) for r in range(n)]


def test_group_step_compiles_without_graph_breaks(setup):
    task = setup[3]
    group, eager = FusedZIPGroupStep(_steps(setup)), FusedZIPGroupStep(_steps(setup))
    compiled = torch.compile(group.step_fn, fullgraph=True, backend="aot_eager")
    for k in (1, 2):
        for s in group.steps + eager.steps:
            s.load(*_batch(task, k))
        compiled()
        eager.step_fn()
        for a, b in zip(group.steps, eager.steps):
            assert rel(a.w, b.w) <= 1e-6 and int(a.step) == k


@pytest.mark.parametrize("how", ["right", "wrong"])
def test_first_group_graph_replay_is_checked_against_the_eager_group_step(setup, monkeypatch, how, tmp_path, caplog):
    from zipfast.ops import registry

    monkeypatch.setenv("ZIPFAST_CACHE", str(tmp_path))
    registry._reset_for_tests()
    task = setup[3]
    eager = FusedZIPGroupStep(_steps(setup), use_graph=False)
    group = FusedZIPGroupStep(_steps(setup), use_graph=True)
    fake = _FakeGraph(group, how)
    if how == "wrong":  # the second run's point off: the check names it
        fake.replay = lambda: (group.step_fn(), group.steps[1].w.__setitem__(0, group.steps[1].w[0] + 1e-3))
    monkeypatch.setattr(group, "_capture", lambda: setattr(group, "graph", fake))
    with caplog.at_level(logging.WARNING, logger="zipfast"):
        for k in range(1, 4):
            batches = [_batch(task, k)] * 3
            group(batches)
            eager(batches)
    trusted = how == "right"
    assert group.use_graph is trusted and (group.graph is not None) is trusted
    for a, b in zip(group.steps, eager.steps):
        assert torch.equal(a.w, b.w) and int(a.step) == 3  # the eager result stands either way
    fb = [f for f in registry.fallbacks() if f["op"] == "fused_group_step"]
    assert bool(fb) is not trusted
    if fb:
        assert "run 1 w" in fb[0]["skipped"]["cuda-graph"]
    registry._reset_for_tests()


def test_group_step_refuses_runs_on_other_engines_or_shapes(setup):
    steps = _steps(setup, 2)
    steps[1].q = 4
    with pytest.raises(ValueError, match="share the engine"):
        FusedZIPGroupStep(steps)


def _curve_trainer(task, cfg, out, cache, every=20):
    from zipfast.run.hooks import EvalEvery

    t = _trainer(task, cfg, out, cache)
    t.step_hooks.append(EvalEvery(every, out))
    return t


def test_eval_every_keeps_the_fused_step_and_its_points_are_the_trajectory_s(planted_task, tmp_path, fused_on):
    """A step hook that says when it is due (EvalEvery) keeps the fused step: the trajectory is the fused
    run's without the hook, and each curve point is the test accuracy of the point at that count."""
    cfg = dataclasses.replace(PLANTED, method="zip", seed=1, log_every=100)
    plain = _trainer(planted_task, cfg, tmp_path / "plain", {})
    ref = plain.fit()
    t = _curve_trainer(planted_task, cfg, tmp_path / "curve", {})
    rep = t.fit()
    assert t._fused is not None and torch.equal(t.w, plain.w)
    assert {k: v for k, v in rep.items() if k not in TIMES} == {k: v for k, v in ref.items() if k not in TIMES}
    points = t.step_hooks[0].points
    assert [p["queries"] for p in points] == [0, 20, 40, 60]
    for p in points[1:]:  # the same run stopped at that budget ends at that point
        short = _trainer(planted_task, dataclasses.replace(cfg, budget=p["queries"]), None, {})
        assert short.fit()["test_acc"] == pytest.approx(p["test_acc"], abs=1e-4)


def test_group_with_eval_every_takes_the_fused_group_step(planted_task, tmp_path, fused_on, monkeypatch):
    cfgs = [dataclasses.replace(PLANTED, method="zip", **r) for r in RUNS]
    alone = []
    for i, c in enumerate(cfgs):
        t = _curve_trainer(planted_task, c, tmp_path / f"alone{i}", {})
        alone.append((t.fit(), t.w.clone(), t.step_hooks[0].points))
    monkeypatch.setattr(FusedZIPStep, "step_fn", lambda self: pytest.fail("a run stepped alone in the group"))
    cache = {}
    group = [_curve_trainer(planted_task, c, tmp_path / f"group{i}", cache) for i, c in enumerate(cfgs)]
    results = RunGroup(group, progress=False).fit()
    for i, ((rep, w, points), got, t) in enumerate(zip(alone, results, group)):
        assert isinstance(got, dict), got
        assert torch.equal(t.w, w), i
        assert {k: v for k, v in got.items() if k not in TIMES} == {k: v for k, v in rep.items() if k not in TIMES}
        assert t.step_hooks[0].points == points and len(points) >= 2
