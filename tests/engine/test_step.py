"""The fused ZIP step (zipfast/step.py) against SPSA(perturbation="philox") through the engine."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from zipfast.engine.batched import make_engine
from zipfast.data.planted import make_planted_task, planted_model
from zipfast.optim import SPSA
from zipfast.spaces.context import ZIPSpace
from zipfast.engine.step import FusedZIPStep
from zipfast.engine.towers import ClassPrompts, TextTower

PARAMS = (1.0, 0.01, 0.01, 0.4, 0.1)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model, tok = planted_model(0)
    tower = TextTower(model)
    task = make_planted_task(tower, tok, n_ctx=4, shots=4, test_per_class=2, seed=0)
    prompts = ClassPrompts.build(tower, tok, task.classnames, 4)
    engine = make_engine("torch-batched", tower, prompts, "fp32")
    space = ZIPSpace.create(task.ctx0.float(), 40, 2, torch.Generator().manual_seed(1))
    w0 = space.init_params(torch.Generator().manual_seed(2))
    return engine, space, w0, task


def _batch(task, k, B=16):
    g = torch.Generator().manual_seed(100 + k)
    idx = torch.randint(0, len(task.train_labels), (B,), generator=g)
    return task.train_features[idx].float(), task.train_labels[idx]


def _engine_steps(engine, space, w0, task, n, opt_type, q=3):
    opt = SPSA(w0.clone(), opt_type, q, PARAMS, seed=7, perturbation="philox")
    stats = []
    for k in range(1, n + 1):
        feats, labels = _batch(task, k)
        cand = opt.ask(1000)
        losses, accs = engine.losses(space.contexts(cand), feats, labels)
        stats.append(opt.tell(losses, accs))
    return opt.point, stats


def _fused_steps(engine, space, w0, task, n, opt_type, q=3):
    fused = FusedZIPStep(space, engine, w0, seed=7, q=q, batch_size=16, feat_dim=task.train_features.shape[1],
                         spsa_params=PARAMS, opt_type=opt_type)
    recs = []
    for k in range(1, n + 1):
        fused(*_batch(task, k))
        recs.append(fused.record())
    return fused, recs


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("opt_type", ["spsa-clip", "spsa-gc"])
def test_one_fused_step_equals_the_engine_step(setup, opt_type):
    engine, space, w0, task = setup
    w_ref, stats = _engine_steps(engine, space, w0, task, 1, opt_type)
    fused, recs = _fused_steps(engine, space, w0, task, 1, opt_type)
    assert rel(fused.w, w_ref) <= 1e-5
    assert int(fused.step) == 1
    for key in ("loss", "train_acc", "a_k", "c_k", "grad_norm"):
        assert recs[0][key] == pytest.approx(stats[0][key], rel=1e-5), key
    assert recs[0]["clipped"] == stats[0]["clipped"]


def test_short_trajectory_stays_close(setup):
    """10 steps: both paths compute the same maths in fp32, differing only in summation order
    (≈1e-7 relative per step). ZIP's update is a_k·ĝ with ĝ = ΔL / (2 c_k z), so a loss
    difference error ε becomes an update error of ≈ ε / c_k ≈ 100·ε relative to ĝ; over 10
    steps that stays well below 1e-4 of w (measured: ~1e-6)."""
    engine, space, w0, task = setup
    w_ref, stats = _engine_steps(engine, space, w0, task, 10, "spsa-clip")
    fused, recs = _fused_steps(engine, space, w0, task, 10, "spsa-clip")
    assert rel(fused.w, w_ref) <= 1e-4
    assert [r["clipped"] for r in recs] == [s["clipped"] for s in stats]


def test_step_compiles_without_graph_breaks(setup):
    engine, space, w0, task = setup
    fused = FusedZIPStep(space, engine, w0, seed=7, q=3, batch_size=16, feat_dim=task.train_features.shape[1],
                         spsa_params=PARAMS)
    eager = FusedZIPStep(space, engine, w0, seed=7, q=3, batch_size=16, feat_dim=task.train_features.shape[1],
                         spsa_params=PARAMS)
    compiled = torch.compile(fused.step_fn, fullgraph=True, backend="aot_eager")
    for k in (1, 2):
        feats, labels = _batch(task, k)
        for f in (fused, eager):
            f.feats.copy_(feats)
            f.labels.copy_(labels)
        compiled()
        eager.step_fn()
        assert rel(fused.w, eager.w) <= 1e-6 and int(fused.step) == k


def test_fused_step_through_triton_interpreter(setup):
    """The same step with candidates, clip_loss and spsa_update forced to their Triton kernels."""
    engine, space, w0, task = setup
    w_ref, _ = _engine_steps(engine, space, w0, task, 1, "spsa-clip", q=2)
    code = textwrap.dedent("""
        import os, sys, torch
        sys.path.insert(0, os.getcwd())
        from tests.engine.test_step import setup as _s, _fused_steps
        engine, space, w0, task = _s.__wrapped__()
        fused, _ = _fused_steps(engine, space, w0, task, 1, "spsa-clip", q=2)
        from zipfast.ops import registry
        assert all(registry.resolve(op, "cpu")[0] == "triton" for op in ("candidates", "clip_loss", "spsa_update"))
        torch.save(fused.w, sys.argv[1])
    """)
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"zipfast-step-{os.getpid()}.pt")
    env = dict(os.environ, TRITON_INTERPRET="1", ZIPFAST_BACKEND_CANDIDATES="triton",
               ZIPFAST_BACKEND_CLIP_LOSS="triton", ZIPFAST_BACKEND_SPSA_UPDATE="triton")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", code, out], cwd=root, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    w = torch.load(out, weights_only=True)
    os.unlink(out)
    assert rel(w, w_ref) <= 1e-5


def test_trainer_uses_the_fused_step_when_asked(monkeypatch, tmp_path):
    """ZIPFAST_FUSED_STEP=1 runs the trainer's rounds through FusedZIPStep on CPU (on CUDA it is the
    default, as a captured graph): same trajectory as the plain rounds, same query accounting."""
    from zipfast import ZIPTrainer
    from zipfast.config import TrainConfig

    model, tok = planted_model(0)
    task = make_planted_task(TextTower(model), tok, n_ctx=4, shots=4, test_per_class=5, seed=0)
    cfg = dict(model="zipfast-planted", pretrained="none", dataset="planted", n_ctx=4, intrinsic_dim=40, rank=2,
               batch_size=16, budget=34, seed=3, checkpoint_every=0, precision="fp32", log_every=2)
    runs = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("ZIPFAST_FUSED_STEP", mode)
        tr = ZIPTrainer(model, task.classnames, TrainConfig(**cfg), task, tokenizer=tok, progress=False)
        assert (tr.evaluator.fused(tr.space, tr.optimizer, tr.config, tr.step_hooks) is not None) == (mode == "1")
        report = tr.fit()
        runs[mode] = (tr.w.clone(), report["queries"], tr.step)
    assert runs["0"][1:] == runs["1"][1:] == (34, 4)  # 3 fused steps of 10 queries, then a plain one of 4
    assert rel(runs["1"][0], runs["0"][0]) <= 1e-4


def test_a_bad_fused_step_setting_exits_2_naming_it(monkeypatch, tmp_path, capsys):
    from zipfast.cli import main

    monkeypatch.setenv("ZIPFAST_FUSED_STEP", "garbage")
    assert main(["train", "--data", "planted", "--budget", "20", "--device", "cpu", "--no-progress",
                 "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "ZIPFAST_FUSED_STEP='garbage'" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "log.jsonl").exists()  # named before the run started


def test_fused_step_logs_checkpoints_and_resumes_like_the_plain_rounds(monkeypatch, tmp_path):
    """With an output directory (log_every 2, checkpoint_every 3, budget 64 = 6 steps of 10 queries
    and a last one of 4): the fused run logs and checkpoints the steps the plain run does, and
    resuming from its step-3 checkpoint reaches the plain run's final point."""
    import json
    import shutil

    from zipfast import ZIPTrainer
    from zipfast.run.checkpoint import CHECKPOINT_NAME
    from zipfast.config import TrainConfig

    model, tok = planted_model(0)
    task = make_planted_task(TextTower(model), tok, n_ctx=4, shots=4, test_per_class=5, seed=0)
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", n_ctx=4, intrinsic_dim=40,
                      rank=2, batch_size=16, budget=64, seed=3, checkpoint_every=3, precision="fp32", log_every=2)

    def trainer(mode, out):
        monkeypatch.setenv("ZIPFAST_FUSED_STEP", mode)
        return ZIPTrainer(model, task.classnames, cfg, task, tokenizer=tok, progress=False, output_dir=out)

    def log(out):
        return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]

    runs = {}
    for mode in ("0", "1"):
        out = tmp_path / f"fused{mode}"
        tr = trainer(mode, out)
        saved, save = [], tr.save_checkpoint

        def save_and_keep(path, tr=tr, saved=saved, save=save, out=out):
            save(path)
            saved.append(tr.step)
            shutil.copy(path, out.parent / f"{out.name}-step{tr.step}.safetensors")

        tr.save_checkpoint = save_and_keep
        tr.fit()
        assert (tr._fused is not None) == (mode == "1")
        runs[mode] = tr.w.clone(), log(out), saved
    (w0, log0, saved0), (w1, log1, saved1) = runs["0"], runs["1"]
    assert [r["step"] for r in log0] == [r["step"] for r in log1] == [2, 4, 6, 7]
    assert [r["queries"] for r in log0] == [r["queries"] for r in log1] == [20, 40, 60, 64]
    for a, b in zip(log0, log1):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (a, b)
    assert saved0 == saved1 == [3, 6, 7]  # periodic, then the final checkpoint
    assert rel(w1, w0) <= 1e-4

    out = tmp_path / "fused1"
    shutil.copy(tmp_path / "fused1-step3.safetensors", out / CHECKPOINT_NAME)  # as if it had died after step 3
    resumed = trainer("1", out)
    resumed.load_checkpoint(out / CHECKPOINT_NAME)
    assert resumed.step == 3 and resumed.queries == 30
    resumed.fit()
    assert resumed._fused is not None and resumed.step == 7 and resumed.queries == 64
    assert rel(resumed.w, w0) <= 1e-4
    assert [(r["step"], r["queries"]) for r in log(out)] == [(2, 20), (4, 40), (6, 60), (7, 64)]  # cut back, continued


class _FakeGraph:
    """Stands in for a captured CUDA graph on the CPU: replay() runs the step, optionally wrong."""

    def __init__(self, step, how):
        self.step, self.how = step, how

    def replay(self):
        if self.how == "raise":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        self.step.step_fn()
        if self.how == "wrong":
            self.step.w[0] += 1e-3


@pytest.mark.parametrize("how", ["right", "wrong", "raise"])
def test_first_graph_replay_is_checked_against_the_eager_step(setup, monkeypatch, how, tmp_path, caplog):
    import logging

    from zipfast.ops import registry

    monkeypatch.setenv("ZIPFAST_CACHE", str(tmp_path))
    registry._reset_for_tests()
    engine, space, w0, task = setup
    eager, _ = _fused_steps(engine, space, w0, task, 3, "spsa-clip")
    fused = FusedZIPStep(space, engine, w0, seed=7, q=3, batch_size=16, feat_dim=task.train_features.shape[1],
                         spsa_params=PARAMS, opt_type="spsa-clip", use_graph=True)
    monkeypatch.setattr(fused, "_capture", lambda: setattr(fused, "graph", _FakeGraph(fused, how)))
    with caplog.at_level(logging.WARNING, logger="zipfast"):
        for k in range(1, 4):
            fused(*_batch(task, k))
    trusted = how == "right"
    assert fused.use_graph is trusted and (fused.graph is not None) is trusted
    assert torch.equal(fused.w, eager.w) and int(fused.step) == 3  # the eager result stands either way
    fb = [f for f in registry.fallbacks() if f["op"] == "fused_step"]
    assert bool(fb) is not trusted and any("CUDA graph" in r.message for r in caplog.records) is not trusted
    if fb:
        assert fb[0]["backend"] == "eager" and "self-check failed" in fb[0]["skipped"]["cuda-graph"]
    registry._reset_for_tests()
