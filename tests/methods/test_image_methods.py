"""BPT-VLM, BAR and BlackVIP: one step's arithmetic by hand, query accounting, determinism
and bit-exact resume, a short run that improves, official yaml keys (tiny models, generated
image folder; BlackVIP's encoder is a randomly initialised ViT-MAE built from a small config)."""

import math

import numpy as np
import pytest
import torch

from image_fixtures import tiny_clip, tiny_mae_config
from zipfast.config import ConfigError, TrainConfig
from zipfast.data.imagefolder import FewShotImageFolder
from zipfast.data.pixels import DecodedPixelSource, PixelSource, write_synthetic_image_folder
from zipfast.data.transforms import DEFAULT_CHOICES
from zipfast.config import load_official_image, method_options as method_config
from zipfast.optim import BARGradientFree, PyCMA, SPSAGC
from zipfast.run.checkpoint import CheckpointMismatchError
from zipfast.run.trainer import Trainer
from zipfast.spaces import BPTVLMSpace

# --------------------------------------------------------------------------- optimisers by hand


def test_bar_step_by_hand():
    w0 = torch.tensor([0.5, -1.0, 2.0])
    opt = BARGradientFree(w0, q=2, beta=0.1, lrs=(10.0, 0.1), decay=0.9, total_steps=10, seed=3)
    cand = opt.ask(100)
    assert cand.shape == (3, 3) and torch.equal(cand[0], w0)
    u = (cand[1:] - w0) / 0.1
    assert torch.allclose(u.norm(dim=1), torch.ones(2), atol=1e-6)  # unit directions
    info = opt.tell(torch.tensor([1.0, 1.2, 0.7]))
    a1 = 9.9 * (1 - 1 / 9) ** 0.9 + 0.1  # T = 10 steps · 0.9
    g = (3 / 2) * ((1.2 - 1.0) / 0.1 * u[0] + (0.7 - 1.0) / 0.1 * u[1])
    assert math.isclose(info["lr"], a1, rel_tol=1e-12) and info["loss"] == 1.0
    assert torch.allclose(opt.point, w0 - a1 * g, atol=1e-5)
    assert math.isclose(opt.lr(9), 0.1) and math.isclose(opt.lr(50), 0.1)  # decayed to the final rate


def test_bar_asks_one_plus_q_and_cuts_to_the_allowance():
    opt = BARGradientFree(torch.zeros(4), q=5, seed=0)
    assert opt.ask(100).shape[0] == 6
    opt.tell(torch.ones(6))
    assert opt.ask(3).shape[0] == 3  # 1 + 2 directions
    opt.tell(torch.ones(3))
    assert opt.ask(1).shape[0] == 0  # a pivot alone cannot move w


def test_blackvip_spsa_gc_step_by_hand():
    w0 = torch.tensor([0.1, -0.2, 0.3, 0.0])
    opt = SPSAGC(w0, sp_avg=2, spsa_params=(1.0, 0.01, 0.01, 0.4, 0.1), moms=0.8, seed=5)
    cand = opt.ask(100)
    assert cand.shape == (4, 4)
    c1 = 0.01  # c / 1^γ
    z1, z2 = (cand[0] - w0) / c1, (cand[2] - w0) / c1
    assert torch.allclose(cand[1], w0 - c1 * z1) and torch.allclose(cand[3], w0 - c1 * z2)  # +1, −1, +2, −2
    assert ((z1.abs() >= 0.5 - 1e-4) & (z1.abs() <= 1 + 1e-4)).all()  # segmented uniform
    losses = torch.tensor([2.0, 1.0, 1.5, 1.7])
    info = opt.tell(losses)
    g = ((2.0 - 1.0) / (2 * c1 * z1) + (1.5 - 1.7) / (2 * c1 * z2)) / 2
    a1 = 0.01 / (1 + 1.0) ** 0.4
    assert torch.allclose(opt.point, w0 - a1 * (g + 0.8 * g), rtol=1e-4)  # step 1: m = ĝ, direction ĝ + b1·m
    assert math.isclose(info["loss"], (1.5 + 1.7) / 2, rel_tol=1e-6)  # the last pair, as officially
    assert opt.ask(3).shape[0] == 2  # one pair fits in 3 queries


def test_pycma_is_pycma_with_the_official_options_and_isolates_numpy():
    import cma

    outer = np.random.get_state()[1].copy()
    opt = PyCMA(6, popsize=5, sigma=1.0, seed=7, cma_budget=100)
    fit = [3.0, 1.0, 2.0, 5.0, 4.0]
    part = opt.ask(2)  # one generation asked and told in two parts
    opt.tell(torch.tensor(fit[:2]))
    first = torch.cat([part, opt.ask(3)])
    info = opt.tell(torch.tensor(fit[2:]))
    assert np.array_equal(np.random.get_state()[1], outer)  # the caller's numpy RNG is untouched
    es = cma.CMAEvolutionStrategy(6 * [0], 1.0, inopts={"seed": 7, "popsize": 5, "maxiter": 20, "verbose": -1})
    sols = es.ask()
    assert torch.equal(first, torch.from_numpy(np.stack(sols)).float())
    es.tell(sols, fit)
    assert info["generation"] == 1 and torch.equal(opt.mean, torch.from_numpy(es.mean))
    assert torch.equal(opt.point, first[1]) and opt.best_f == 1.0  # the best candidate seen


def test_pycma_state_replays_bit_exact_with_a_partial_generation():
    a = PyCMA(5, popsize=4, seed=2, cma_budget=100)
    for g in range(3):
        a.tell(torch.arange(4.0) * (g + 1) - a.ask(4).sum(1))
    a.tell(a.ask(2).sum(1))  # half a generation told
    sd = a.state_dict()
    assert sd["history"].shape == (3, 4) and sd["partial"].shape == (2,)
    b = PyCMA(5, popsize=4, seed=2, cma_budget=100)
    b.load_state_dict(sd)
    assert torch.equal(a.ask(2), b.ask(2)) and torch.equal(a.point, b.point)
    with pytest.raises(ValueError, match="seed"):
        PyCMA(5, popsize=4, seed=3, cma_budget=100).load_state_dict(sd)


def test_bptvlm_projection_scalings_by_hand():
    emb = torch.tensor([[1.0, -1.0], [1.0, -1.0]])  # mean 0, std 1
    conv = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)  # mean 2, std 1
    s = BPTVLMSpace.projection_stats(emb, conv, dim_l=4, dim_v=3072, sigma=2.0)
    assert math.isclose(s["std_l"], 1 / (2 * 2)) and s["mu_l"] == 0.0
    assert math.isclose(s["mu_v"], 2.0) and math.isclose(s["std_v"], 2.0)
    g = torch.Generator().manual_seed(0)
    space = BPTVLMSpace.create(torch.randn(300, 8, generator=g), 0.1 + 0.02 * torch.randn(16, 3, 4, 4, generator=g),
                               n_tokens_l=5, n_tokens_v=5, dim_l=200, dim_v=300, sigma=1.0, generator=g)
    y = torch.randn(2, 500, generator=g)
    assert torch.allclose(space.text_ctx(y), (y[:, :200] @ space.proj_l.T).view(2, 5, 8))
    assert torch.allclose(space.visual_tokens(y), (y[:, 200:] @ space.proj_v.T).view(2, 5, 16))
    assert abs(float(space.proj_v.mean()) - 0.1 * 3072 / 300) < 0.05  # mu_V = mean(conv1) · 3072 / d_V
    assert abs(float(space.proj_l.std()) * 200 ** 0.5 - 1) < 0.05  # std(emb) = 1, so std_L = 1 / √d_L


# --------------------------------------------------------------------------- trainers on tiny models


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = write_synthetic_image_folder(tmp_path_factory.mktemp("synthetic"), n_classes=3, per_class=10, size=32)
    return FewShotImageFolder.from_root(root, shots=4, seed=1)


@pytest.fixture(scope="module")
def models():
    return {"zipfast-tiny": tiny_clip("zipfast-tiny"), "zipfast-tiny224": tiny_clip("zipfast-tiny224")}


SETTINGS = {  # method → (model, INPUT.SIZE, method settings, batch size)
    "bar": ("zipfast-tiny", 26, dict(frame_size=32), 8),
    "bptvlm": ("zipfast-tiny", 32, dict(intrinsic_dim_l=40, intrinsic_dim_v=30, pop_size=5), 8),
    "blackvip": ("zipfast-tiny224", 224, dict(src_dim=98, sp_avg=2), 3),
}


def make(method, models, folder, budget, output_dir=None, seed=1, batch_size=None, augment="tensor",
         transforms=DEFAULT_CHOICES, precision="fp32", **overrides):
    name, size, mc, bs = SETTINGS[method]
    model, tok = models[name]
    cfg = TrainConfig(method=method, model=name, pretrained="none", budget=budget, batch_size=batch_size or bs, shots=4, seed=seed,
                      image_size=size, precision=precision, device="cpu", checkpoint_every=2, augment=augment,
                      transforms=transforms,
                      sp_avg=1)  # sp_avg is ZIP's; only its budget check would apply here
    enc = None
    if method == "blackvip":
        from zipfast.spaces.coordinator import load_coordinator_encoder

        enc = load_coordinator_encoder("vit-mae-base", "none", seed=0, config=tiny_mae_config())
    return Trainer(model, folder.classnames, cfg, folder, tok, options=method_config(method, **{**mc, **overrides}),
                   encoder=enc, output_dir=output_dir, progress=False)


def records(path):
    import json

    return [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]


def test_bar_query_accounting_is_one_plus_q_and_exact(models, folder, tmp_path):
    tr = make("bar", models, folder, budget=20, output_dir=tmp_path)
    tr.fit()
    assert [r["queries"] for r in records(tmp_path)] == [6, 12, 18, 20]  # 1 + q = 6, then 1 + 1 at the end
    assert tr.queries == 20 and tr.batches == 4


def test_blackvip_query_accounting(models, folder, tmp_path):
    tr = make("blackvip", models, folder, budget=9, output_dir=tmp_path)  # 2 pairs = 4 queries a step
    tr.fit()
    assert [r["queries"] for r in records(tmp_path)] == [4, 8]  # 1 query left: no pair fits
    assert tr.queries == 8


def test_bptvlm_queries_per_candidate_are_minibatches_per_epoch(models, folder, tmp_path):
    # 12 training images, batch 4 → 3 minibatches (queries) per candidate; population 5
    tr = make("bptvlm", models, folder, budget=40, output_dir=tmp_path, batch_size=4)
    assert tr.cost == 3
    tr.fit()
    recs = records(tmp_path)
    assert [r["queries"] for r in recs] == [15, 30, 39]  # the last generation: 3 of 5 candidates, never told
    assert [r["step"] for r in recs] == [1, 2, 3] and recs[-1]["partial"] and recs[-1]["evaluated"] == 3
    assert tr.optimizer.step == 2 and tr.batches == 39


@pytest.mark.parametrize("method,augment", [("bar", "tensor"), ("bar", "pil"), ("bptvlm", "tensor"),
                                            ("blackvip", "tensor")])
def test_resume_is_bit_exact(method, augment, models, folder, tmp_path):
    budgets = {"bar": (12, 24), "bptvlm": (10, 20), "blackvip": (8, 16)}[method]
    full = make(method, models, folder, budgets[1], output_dir=tmp_path / "full", augment=augment)
    assert type(full.source) is (DecodedPixelSource if augment == "tensor" else PixelSource)
    full.fit()
    half = make(method, models, folder, budgets[0], output_dir=tmp_path / "half", augment=augment)
    half.fit()
    resumed = make(method, models, folder, budgets[1], output_dir=tmp_path / "half", augment=augment)
    resumed.load_checkpoint(tmp_path / "half" / "checkpoint.safetensors")
    resumed.fit()
    assert torch.equal(full.optimizer.point, resumed.optimizer.point)
    a, b = records(tmp_path / "full"), records(tmp_path / "half")
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in a]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in b]
    if method == "blackvip":
        for (m1, v1), (m2, v2) in zip(full.space.running, resumed.space.running):
            assert torch.equal(m1, m2) and torch.equal(v1, v2)
    other = make(method, models, folder, budgets[1], seed=2, augment=augment)
    with pytest.raises(CheckpointMismatchError, match="seed"):
        other.load_checkpoint(tmp_path / "half" / "checkpoint.safetensors")
    if method == "bar":  # the other augmentation path draws other views: another trajectory
        other = make(method, models, folder, budgets[1], augment={"tensor": "pil", "pil": "tensor"}[augment])
        with pytest.raises(CheckpointMismatchError, match="augment"):
            other.load_checkpoint(tmp_path / "half" / "checkpoint.safetensors")


def test_transforms_off_the_official_list_run_on_pil_and_say_so(models, folder):
    tr = make("bar", models, folder, 6, transforms=("random_resized_crop", "normalize"))
    assert type(tr.source) is PixelSource
    assert tr.fit()["adjustments"] == [
        "augment tensor -> pil (INPUT.TRANSFORMS ['random_resized_crop', 'normalize'] runs on the PIL path only)"]
    assert make("bar", models, folder, 6).report()["adjustments"] == []


# Test loss (the method's own objective: focal for BAR, CE otherwise) after / before a short run,
# measured on this task (seed 1, seed 2), augment tensor: bar 120 queries 0.67, 0.58; bptvlm 60 queries 0.70, 0.84;
# blackvip 40 queries 0.53, 0.27 (augment pil: 0.70, 0.57; 0.81, 0.71; 0.42, 0.32). The models are random, so the
# loss, not accuracy, is what moves.
@pytest.mark.parametrize("method,budget,ratio", [("bar", 120, 0.85), ("bptvlm", 60, 0.92), ("blackvip", 40, 0.6)])
def test_short_run_improves_test_loss(method, budget, ratio, models, folder):
    tr = make(method, models, folder, budget)
    _, before = tr.test_metrics()
    tr.fit()
    _, after = tr.test_metrics()
    assert after < ratio * before, (before, after)


def test_deterministic_per_seed(models, folder):
    a, b = make("bar", models, folder, 12), make("bar", models, folder, 12)
    a.fit(), b.fit()
    assert torch.equal(a.optimizer.point, b.optimizer.point)
    c = make("bar", models, folder, 12, seed=2)
    c.fit()
    assert not torch.equal(a.optimizer.point, c.optimizer.point)


# --------------------------------------------------------------------------- official yaml keys

BAR_YAML = """\
INPUT:
  SIZE: (194, 194)
TRAINER:
  BASIC:
    OPT_TYPE: "spsa-gc"
    SP_AVG: 5
  BAR:
    METHOD: 'reprogramming'
    FRAME_SIZE: 224
    SMOOTH: 0.01
    SIMGA: 1.0
    LRS: [10.0,0.1]
    FOCAL_G: 2.0
MODEL:
  BACKBONE:
    NAME: "ViT-B/16"
"""
BPTVLM_YAML = """\
TRAINER:
  BPTVLM:
    TOKENS_L: 5
    TOKENS_V: 5
    INTRINSIC_DIM_L: 2000
    INTRINSIC_DIM_V: 2000
    SIGMA: 1
    POP_SIZE: 15
"""
BLACKVIP_YAML = """\
TRAINER:
  BASIC:
    OPT_TYPE: "spsa-gc"
    SP_AVG: 5
  BLACKVIP:
    METHOD: "coordinator"
    PT_BACKBONE: 'vit-mae-base'
    SRC_DIM: 1568
    E_OUT_DIM: 0
    SPSA_PARAMS: [1.0, 0.01, 0.01, 0.4, 0.1]
    MOMS: 0.8
    P_EPS: 1.0
"""


@pytest.mark.parametrize("trainer,text", [("BAR", BAR_YAML), ("BPTVLM", BPTVLM_YAML), ("BlackVIP", BLACKVIP_YAML)])
def test_official_yaml_keys_load(trainer, text, tmp_path):
    path = tmp_path / "vit_b16.yaml"
    path.write_text(text)
    method, shared, mc = load_official_image(path, ["DATASET.NUM_SHOTS", "16", "TRAINER.BASIC.MAX_API_CALLS", "5000"],
                                             trainer=trainer)
    assert shared["budget"] == 5000 and shared["shots"] == 16
    if method == "bar":
        assert shared["image_size"] == 194 and mc.frame_size == 224 and mc.lrs == (10.0, 0.1) and mc.q == 5
        assert mc.decaying == 0.9 and mc.focal_g == 2.0 and mc.smooth == 0.01
    elif method == "bptvlm":
        assert (mc.tokens_l, mc.tokens_v, mc.intrinsic_dim_l, mc.intrinsic_dim_v, mc.pop_size, mc.sigma) == \
            (5, 5, 2000, 2000, 15, 1.0)
    else:
        assert mc.src_dim == 1568 and mc.spsa_params == (1.0, 0.01, 0.01, 0.4, 0.1) and mc.moms == 0.8


def test_official_defaults_are_train_py_not_the_yaml():
    _, _, mc = load_official_image(None, [], trainer="BlackVIP")
    assert mc.spsa_params == (1.0, 0.005, 0.01, 0.4, 0.2) and mc.moms == 0.9
    _, _, bar = load_official_image(None, [], trainer="BAR")
    assert bar.lrs == (0.01, 0.0001)


@pytest.mark.parametrize("key,value,match", [
    ("TRAINER.BAR.SIGMA", "1.0", "TRAINER.BAR.SIGMA.*SIMGA"),  # the official key is spelled SIMGA
    ("TRAINER.BPTVLM.POPSIZE", "10", "TRAINER.BPTVLM.POPSIZE"),
    ("TRAINER.BLACKVIP.PT_BACKBONE", "dino-resnet-50", "PT_BACKBONE 'dino-resnet-50'"),
    ("TRAINER.BAR.METHOD", "padding", "TRAINER.BAR.METHOD 'padding'"),
    ("TRAINER.BPTVLM.POP_SIZE", "1", "POP_SIZE must be at least 2"),
])
def test_bad_official_keys_are_refused_by_name(key, value, match):
    trainer = {"BAR": "BAR", "BPTVLM": "BPTVLM", "BLACKVIP": "BlackVIP"}[key.split(".")[1]]
    with pytest.raises(ConfigError, match=match):
        load_official_image(None, [key, value], trainer=trainer)


def test_unknown_trainer_is_refused():
    with pytest.raises(ConfigError, match="TRAINER.NAME 'VPOUR'"):
        load_official_image(None, [], trainer="VPOUR")


@pytest.mark.parametrize("method,opts", [("bar", []), ("bptvlm", ["--method-opt", "pop_size=4", "--method-opt",
                                                                  "intrinsic_dim_l=20", "--method-opt",
                                                                  "intrinsic_dim_v=20"])])
def test_cli_method_flag_trains_on_an_image_folder(method, opts, folder, capsys):
    import json

    from zipfast.cli import main

    argv = ["train", "--data", str(folder.root), "--model", "zipfast-tiny", "--pretrained", "none", "--budget", "12",
            "--batch-size", "8", "--shots", "4", "--no-progress", "--precision", "fp32", "--method", method, *opts]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["method"] == method and out["queries"] == 12


def test_cli_image_method_refuses_the_planted_task(capsys):
    from zipfast.cli import main

    assert main(["train", "--data", "planted", "--budget", "12", "--method", "blackvip", "--no-progress"]) == 2
    assert "needs images" in capsys.readouterr().err


# ------------------------------------------------------------------ the official trainers' behaviours


@pytest.mark.parametrize("best,kept,best_f", [("epoch", 1, 1.8), ("running", 0, 0.5)])
def test_bptvlm_best_prompt_rule_on_scripted_losses(best, kept, best_f):
    # Candidate 0: minibatch losses 0.5 then 3.5 (fitness 2.00); candidate 1: 1.8 twice (fitness 1.80).
    # The official run_epoch compares the running mean after each minibatch, so it keeps candidate 0.
    opt = PyCMA(4, popsize=2, seed=3, cma_budget=100, best=best)
    cand = opt.ask(2)
    opt.tell(torch.tensor([[0.5, 3.5], [1.8, 1.8]]))
    assert torch.equal(opt.point, cand[kept]) and opt.best_f == pytest.approx(best_f)
    assert opt.history == [[2.0, pytest.approx(1.8)]]  # pycma is told the full-epoch fitness either way
    restored = PyCMA(4, popsize=2, seed=3, cma_budget=100, best=best)
    restored.load_state_dict(opt.state_dict())
    assert torch.equal(restored.point, opt.point)
    with pytest.raises(ValueError, match="best"):  # a state of the other rule is refused by name
        PyCMA(4, popsize=2, seed=3, cma_budget=100, best="epoch" if best == "running" else "running"
              ).load_state_dict(opt.state_dict())


def test_bptvlm_official_surface_keeps_the_running_mean_best(models, folder, monkeypatch):
    assert load_official_image(None, [], trainer="BPTVLM")[2].best == "running"
    assert method_config("bptvlm").best == "epoch"
    tr = make("bptvlm", models, folder, budget=8 * 5, batch_size=4, best="running")  # 3 minibatches per candidate
    assert tr.optimizer.best == "running" and tr.cost == 3
    seen = []
    real = tr.optimizer.tell
    monkeypatch.setattr(tr.optimizer, "tell", lambda losses, *a: seen.append(losses.clone()) or real(losses, *a))
    tr.fit()
    assert seen and all(s.shape[1] == tr.cost for s in seen)  # every minibatch loss reaches the rule
    running = torch.cat(seen).cumsum(1) / torch.arange(1, tr.cost + 1)
    assert tr.optimizer.best_f == pytest.approx(float(running.min()))


def test_an_older_bptvlm_checkpoint_resumes_with_the_lowest_fitness_rule(models, folder, tmp_path):
    from zipfast.run.checkpoint import CHECKPOINT_NAME, read_checkpoint, write_checkpoint

    tr = make("bptvlm", models, folder, budget=10, output_dir=tmp_path)
    tr.fit()
    ck = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    # as main wrote it before `best` was a setting: no such key in the fingerprint nor the optimiser state
    assert ck.fingerprint["method_config"].pop("best") == ck.state["optimizer"].pop("best") == "epoch"
    write_checkpoint(tmp_path / CHECKPOINT_NAME, ck.state, ck.fingerprint)
    again = make("bptvlm", models, folder, budget=10, output_dir=tmp_path)
    again.load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert torch.equal(again.optimizer.point, tr.optimizer.point) and again.queries == tr.queries
    with pytest.raises(Exception, match="best"):  # the running rule is another trajectory: refused by name
        make("bptvlm", models, folder, budget=10, output_dir=tmp_path, best="running").load_checkpoint(
            tmp_path / CHECKPOINT_NAME)


def test_blackvip_trainer_runs_its_queries_at_the_query_precision(models, folder, monkeypatch):
    # On CUDA the official surface asks fp16 (query_precision); CPU bf16 stands in for it here.
    import zipfast.methods.blackvip as bv

    plain = make("blackvip", models, folder, budget=8)
    plain.fit()
    monkeypatch.setattr(bv, "query_precision", lambda options, device: "bf16")
    tr = make("blackvip", models, folder, budget=8, autocast="official")
    asked = []
    real = tr.engine.features
    monkeypatch.setattr(tr.engine, "features", lambda *a, **k: asked.append(k.get("precision")) or real(*a, **k))
    tr.fit()
    assert asked[:tr.step] == ["bf16"] * tr.step and tr.step == 2
    report = tr.report()
    assert report["query_precision"] == "bf16" and report["precision"] == "fp32"
    assert not torch.equal(tr.optimizer.point, plain.optimizer.point)
    asked.clear()
    tr.test_predictions()
    assert asked and set(asked) == {None}  # the test split at the run's precision, as the official test()


@pytest.mark.parametrize("method,precision,used", [("bptvlm", "fp16", "bf16"), ("bar", "auto", "fp32")])
def test_image_reports_list_precision_substitutions_and_op_fallbacks(models, folder, method, precision, used):
    # fp16 on a CPU runs bf16 (both engines of BPT-VLM); BAR's auto runs fp32: each is in report["fallbacks"]
    tr = make(method, models, folder, budget=6, precision=precision)
    report = tr.report()
    (fb,) = [f for f in report["fallbacks"] if f["what"] == "precision"]
    assert (fb["requested"], fb["used"]) == (precision, used) and fb["why"]
    assert report["precision"] == used and all("what" in f for f in report["fallbacks"])


@pytest.mark.parametrize("method", ["bptvlm", "bar", "blackvip"])
def test_every_image_method_reports_the_one_schema(models, folder, method):
    from zipfast.run.loop import REPORT_KEYS

    report = make(method, models, folder, budget=6).fit()
    assert tuple(report) == REPORT_KEYS and report["method_config"] and report["versions"]["zipfast"]


@pytest.mark.parametrize("method", ["bar", "bptvlm"])
def test_image_trainer_reads_the_minibatches_its_optimiser_names(models, folder, method, monkeypatch):
    # one seam closed: the optimiser names the minibatch (BPT-VLM: the candidate) for every trainer
    tr = make(method, models, folder, budget=12 if method == "bar" else 20)
    named, read = [], []
    real_ask, real_batch = tr.optimizer.ask, tr.evaluator._batch
    monkeypatch.setattr(tr.optimizer, "ask", lambda n: named.append(tr.optimizer.batch_index) or real_ask(n))
    monkeypatch.setattr(tr.evaluator, "_batch", lambda t: read.append(t) or real_batch(t))
    tr.fit()
    if method == "bar":
        assert read == named == [1, 2]
    else:  # candidate c (1-based) reads minibatches (c − 1)·cost + 1 … c·cost
        first = [(c - 1) * tr.cost + 1 for c in named]
        assert read[0] == first[0] and sorted(set(read)) == list(range(1, tr.batches + 1))
