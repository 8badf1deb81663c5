"""The method registry through the trainer: options, one engine pass per round, budget, resume, learning."""

import json

import pytest
import torch

from zipfast import ZIPTrainer
from zipfast.config import ConfigError, TrainConfig
from zipfast.data.planted import make_planted_task, planted_model
from zipfast.methods import METHODS, SHARPZO_RELEASED, MethodOptionError, resolve_options
from zipfast.optim.protocol import Optimizer
from zipfast.engine.towers import TextTower
from zipfast.evaluate import zeroshot

SMALL_SHARPZO = {"dim": 24, "popsize": 8, "grad_dirs": 2, "change_point": 2, "prune_interval": 3, "std": 0.05}


@pytest.fixture(scope="module")
def planted():
    return planted_model(0)


@pytest.fixture(scope="module")
def small_task(planted):
    model, tok = planted
    return make_planted_task(TextTower(model), tok, n_ctx=4, shots=4, test_per_class=5, seed=0)


def trainer(planted, task, out=None, **kw):
    model, tok = planted
    base = dict(model="zipfast-planted", pretrained="none", dataset="planted", n_ctx=task.ctx0.shape[0],
                intrinsic_dim=40, rank=2, batch_size=16, budget=60, seed=3, checkpoint_every=0)
    base.update(kw)
    return ZIPTrainer(model, task.classnames, TrainConfig(**base), task, tokenizer=tok, output_dir=out, progress=False)


def count_calls(tr):
    calls, real = [], tr.engine.losses

    def counting(ctx, feats, labels):
        calls.append(ctx.shape[0])
        return real(ctx, feats, labels)

    tr.engine.losses = counting
    return calls


def test_options_defaults_presets_and_errors():
    o = resolve_options("sharpzo")
    assert (o.popsize, o.sigma0, o.rho, o.mu, o.lr, o.dim, o.mask_end, o.grad_estimator) == \
        (40, 0.4, 0.1, 1e-3, 1e-3, 512, "top", "rge")
    r = resolve_options("sharpzo", {"preset": "released", "change_point": "7"})
    assert r.grad_estimator == "cge" and r.mask_end == "bottom" and r.accumulate and r.change_point == 7
    assert r.rho == pytest.approx(SHARPZO_RELEASED["rho"])
    assert resolve_options("zo-sgd", {"lr": "0.01", "pairs": 2}) == resolve_options("zo-sgd", {"lr": 0.01, "pairs": 2})
    with pytest.raises(MethodOptionError, match=r"unknown option\(s\) 'popsize' for method 'zo-sgd'"):
        resolve_options("zo-sgd", {"popsize": 3})
    with pytest.raises(MethodOptionError, match="sharpzo.popsize must be a int, got 'many'"):
        resolve_options("sharpzo", {"popsize": "many"})
    with pytest.raises(MethodOptionError, match="keep_fraction must be in"):
        resolve_options("sharpzo", {"keep_fraction": 0})
    with pytest.raises(ConfigError, match="method must be one of zip, sharpzo, zo-sgd, zip-cma, zsclip, bptvlm, bar, blackvip; got .cma."):
        TrainConfig(method="cma").validate()
    for bad in ("no placeholder", "{} {}", "{0} and {}", "a {name}", "{"):  # each would fail only when formatted
        with pytest.raises(ConfigError, match="zsclip.template must be a text with exactly one"):
            TrainConfig(method="zsclip", method_options={"template": bad}).validate()
    z = resolve_options("zip-cma")
    assert (z.popsize, z.sigma0, z.point) == (20, 0.03, "mean")
    with pytest.raises(MethodOptionError, match="zip-cma.point must be mean or best"):
        resolve_options("zip-cma", {"point": "median"})


def test_cmaes_population_of_40_is_one_engine_pass_and_budget_is_exact(planted, small_task):
    tr = trainer(planted, small_task, method="sharpzo", method_options={**SMALL_SHARPZO, "popsize": 40}, budget=110)
    calls = count_calls(tr)
    report = tr.fit()
    # generation = probe (2·grad_dirs = 4) + population (40), both one pass; then stage 2:
    # mask round (4) + steps of 1 pair (2), a mask round every 3 steps
    assert calls[:4] == [4, 40, 4, 40]
    assert calls[4:] == [4, 2, 2, 2, 4, 2, 2, 2, 2]  # the third mask round (6) no longer fits: skipped
    assert sum(calls) == report["queries"] == tr.queries == 110


class Greedy(Optimizer):
    """Asks for more than the budget has left (a broken optimiser)."""

    name = "greedy"

    def __init__(self, dim):
        self.dim, self.step = dim, 0

    @property
    def point(self):
        return torch.zeros(self.dim)

    def ask(self, remaining):
        return torch.zeros(remaining + 1, self.dim)

    def state_dict(self):  # the protocol's checkpoint contract (the trainer snapshots it before each ask)
        return {"step": self.step}


def test_trainer_never_spends_more_than_the_budget(planted, small_task):
    tr = trainer(planted, small_task, budget=20)
    tr.optimizer = Greedy(tr.space.dim)
    calls = count_calls(tr)
    with pytest.raises(RuntimeError, match="greedy asked for 21 candidates with only 20 queries left"):
        tr.fit()
    assert calls == [] and tr.queries == 0


@pytest.mark.parametrize("method,budget,expected", [("zo-sgd", 37, 36), ("sharpzo", 41, 40), ("zip", 13, 12),
                                                    ("zip-cma", 47, 47)])  # 20 + 20 + 7 candidates
def test_every_method_stops_at_the_budget(planted, small_task, method, budget, expected):
    opts = SMALL_SHARPZO if method == "sharpzo" else {}
    tr = trainer(planted, small_task, method=method, method_options=opts, budget=budget)
    calls = count_calls(tr)
    report = tr.fit()
    assert sum(calls) == report["queries"] == expected
    assert report["method"] == method


# Half budgets end on a round the shorter run did not cut (as ZIP's budget multiples of 10): SharpZO's
# stage 1 ends inside the first half (24 queries), stage 2 spans both halves.
@pytest.mark.parametrize("method,opts,half_budget,budget", [
    ("zo-sgd", {"pairs": 2}, 36, 80),
    ("sharpzo", SMALL_SHARPZO, 34, 80),  # 2 × (4 + 8), then [mask 4, 2, 2, 2] per 3 steps
    ("sharpzo", {**SMALL_SHARPZO, "preset": "released", "dim": 8, "change_point": 1, "prune": True,
                 "prune_interval": 4}, 48, 96),  # 16 + 8, then [cge mask 16, 2, 2, 2, 2] per 4 steps
    ("zip-cma", {"popsize": 6}, 30, 66),  # generations of 6; the CMA-ES state replayed from its fitness history
])
def test_determinism_and_bit_exact_resume_through_the_checkpoint(planted, small_task, tmp_path, method, opts,
                                                                 half_budget, budget):
    full = trainer(planted, small_task, tmp_path / "full", method=method, method_options=opts, budget=budget)
    full.fit()
    again = trainer(planted, small_task, method=method, method_options=opts, budget=budget)
    again.fit()
    assert torch.equal(full.w, again.w)
    other = trainer(planted, small_task, method=method, method_options=opts, budget=budget, seed=4)
    other.fit()
    assert not torch.equal(full.w, other.w)
    half = trainer(planted, small_task, tmp_path / "half", method=method, method_options=opts, budget=half_budget)
    half.fit()
    resumed = trainer(planted, small_task, tmp_path / "half", method=method, method_options=opts, budget=budget)
    resumed.load_checkpoint(tmp_path / "half" / "checkpoint.safetensors")
    assert resumed.queries == half.queries
    resumed.fit()
    assert torch.equal(resumed.w, full.w) and resumed.queries == full.queries
    read = lambda p: [{k: v for k, v in json.loads(x).items() if k != "time_s"}  # noqa: E731
                      for x in p.read_text().splitlines()]
    assert read(tmp_path / "half" / "log.jsonl") == read(tmp_path / "full" / "log.jsonl")


def test_checkpoint_of_another_method_is_refused(planted, small_task, tmp_path):
    trainer(planted, small_task, tmp_path / "z", budget=20).fit()
    other = trainer(planted, small_task, method="zo-sgd", budget=20)
    with pytest.raises(ValueError, match="method='zip' \\(checkpoint\\) vs 'zo-sgd'"):
        other.load_checkpoint(tmp_path / "z" / "checkpoint.safetensors")


def test_zero_shot_spends_no_queries_and_scores_the_template(planted, small_task, tmp_path):
    tr = trainer(planted, small_task, tmp_path / "zs", method="zsclip")
    report = tr.fit()
    assert report["queries"] == 0 and report["steps"] == 0 and report["template"] == "a photo of a {}."
    model, tok = planted
    txt = zeroshot.text_features(TextTower(model), tok, small_task.classnames, "a photo of a {}.")
    logits = tr.engine.logits_from_text(small_task.test_features, txt)
    expect = 100.0 * float((logits.argmax(-1) == small_task.test_labels).float().mean())
    assert report["test_acc"] == pytest.approx(expect)
    custom = trainer(planted, small_task, method="zsclip", method_options={"template": "{} texture."})
    assert custom.template == "{} texture." and not torch.equal(custom.evaluator.zeroshot_text, tr.evaluator.zeroshot_text)


def test_zero_shot_template_table():
    assert zeroshot.template_for("/data/eurosat") == "a centered satellite photo of {}."
    assert zeroshot.template_for("DescribableTextures") == "{} texture."
    assert zeroshot.template_for("/data/food-101/") == "a photo of {}, a type of food."
    assert zeroshot.template_for("planted") == zeroshot.template_for("/data/unknown") == "a photo of a {}."


@pytest.mark.parametrize("method,opts,budget,floor", [
    # measured (seed 1, from 12.2 %): zo-sgd 400 queries → 47.2 % fp32 / 46.7 % bf16; sharpzo 500 queries
    # (6 generations, then stage 2) → 42.0 % fp32 / 44.7 % bf16. Floors keep > 15 points of margin.
    ("zo-sgd", {}, 400, 30.0),
    ("sharpzo", {"change_point": 6}, 500, 25.0),
    ("zip-cma", {}, 400, 40.0),  # measured 57.6 % (seed 1)
])
def test_short_planted_run_improves_over_its_start(planted, method, opts, budget, floor):
    model, tok = planted
    task = make_planted_task(TextTower(model), tok, seed=0)
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=budget, seed=1,
                      method=method, method_options=opts, checkpoint_every=0)
    tr = ZIPTrainer(model, task.classnames, cfg, task, tokenizer=tok, progress=False)
    before = tr.evaluate()
    after = tr.fit()["test_acc"]
    assert before < 15 and after > floor, (before, after)


def test_sharpzo_released_preset_starts_from_a_photo_of_a(planted, small_task):
    # The release's context: the token embeddings of its 4 words (not zipfast's random N_CTX tokens).
    from zipfast.data.sources import FeatureSource
    from zipfast.engine.towers import init_context_from_text

    model, tok = planted
    t = small_task
    data = FeatureSource(t.train_features, t.train_labels, t.test_features, t.test_labels)
    cfg = dict(model="zipfast-planted", pretrained="none", dataset="features", n_ctx=8, batch_size=16, budget=60,
               seed=3, checkpoint_every=0, method="sharpzo")
    released = ZIPTrainer(model, t.classnames, TrainConfig(**cfg, method_options={"preset": "released", "dim": 24}),
                          data, tokenizer=tok, progress=False)
    want = init_context_from_text(TextTower(model), tok, "a photo of a")
    assert released.evaluator.n_ctx == 4 and torch.equal(released.space.ctx0.cpu(), want)
    paper = ZIPTrainer(model, t.classnames, TrainConfig(**cfg, method_options={"dim": 24}), data, tokenizer=tok,
                       progress=False)
    assert paper.evaluator.n_ctx == 8 and not torch.equal(paper.space.ctx0[:4].cpu(), want)
    own = ZIPTrainer(model, t.classnames, TrainConfig(**cfg, ctx_init="a satellite photo of",
                                                     method_options={"preset": "released", "dim": 24}),
                     data, tokenizer=tok, progress=False)
    assert own.evaluator.n_ctx == 4 and not torch.equal(own.space.ctx0.cpu(), want)  # TRAINER.ZIP.CTX_INIT wins


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_checks_its_backend_in_one_place(method):
    from zipfast.methods import BACKENDS, engine_backends

    towers = METHODS[method].towers
    for backend in BACKENDS:
        fits = all(BACKENDS[backend][("text", "image").index(t)] for t in towers)
        if fits:
            TrainConfig(method=method, backend=backend).validate()
            assert set(engine_backends(method, backend)) == set(towers)
        else:  # an image engine name for a text method, or for BPT-VLM, which needs both engines
            with pytest.raises(ConfigError, match=f"backend {backend!r} does not apply to method {method!r}"):
                TrainConfig(method=method, backend=backend).validate()
    with pytest.raises(ConfigError, match="backend 'nonsense' does not apply.*choose one of auto"):
        TrainConfig(method=method, backend="nonsense").validate()
    # precision and options are checked by the same validation, for every method
    with pytest.raises(ConfigError, match="'fp17'"):
        TrainConfig(method=method, precision="fp17").validate()
    with pytest.raises(ConfigError, match="'nonsense'"):
        TrainConfig(method=method, method_options={"nonsense": 1}).validate()


@pytest.mark.parametrize("argv", [["--data", "planted", "--backend", "nonsense"],
                                  ["--data", "planted", "--method", "sharpzo", "--backend", "image-batched"],
                                  ["--data", "planted", "--method", "bptvlm", "--backend", "image-reference"]])
def test_a_bad_backend_exits_2_naming_it(argv, tmp_path, capsys):
    from zipfast.cli import main

    assert main(["train", *argv, "--budget", "10", "--no-progress", "--output-dir", str(tmp_path / "o")]) == 2
    backend = argv[argv.index("--backend") + 1]
    assert f"backend {backend!r}" in capsys.readouterr().err


@pytest.mark.parametrize("method", [m for m, spec in METHODS.items() if spec.towers == ("text",)])
def test_every_text_method_reports_the_one_schema(planted, small_task, method):
    from zipfast.run.loop import REPORT_KEYS

    opts = SMALL_SHARPZO if method == "sharpzo" else {}
    report = trainer(planted, small_task, method=method, method_options=opts, budget=20).fit()
    assert tuple(report) == REPORT_KEYS
    assert report["query_precision"] == report["precision"] and report["activation"] == "gelu"
