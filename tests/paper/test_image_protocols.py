"""The paper's base→new, cross-dataset and OOD protocols for BPT-VLM, BAR and BlackVIP: class
subsets, evaluating a trained prompt elsewhere (`load_prompt`, `--eval-only --model-dir`),
refusal of foreign checkpoints, and bench-paper's plan for these trainers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import paper_data
from image_fixtures import tiny_clip
from paper_runs import image_trainer_configs, official_configs, register_random_openai_weights
from methods.test_image_methods import make
from zipfast.run.checkpoint import CheckpointMismatchError
from zipfast.cli import main
from zipfast.datasets import build_dataset
from zipfast.paper.protocols import Plan
from zipfast.paper.tables import read_accuracy

BAR_TINY_YAML = """\
INPUT:
  SIZE: (26, 26)
TRAINER:
  BAR:
    FRAME_SIZE: 32
    LRS: [10.0, 0.1]
"""
BPTVLM_TINY_YAML = """\
TRAINER:
  BPTVLM:
    INTRINSIC_DIM_L: 20
    INTRINSIC_DIM_V: 20
    POP_SIZE: 4
"""
BLACKVIP_TINY_YAML = """\
TRAINER:
  BLACKVIP:
    SRC_DIM: 98
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("image_protocols")
    paper_data.eurosat(root / "DATA")
    paper_data.imagenet(root / "DATA")
    official_configs(root)
    image_trainer_configs(root, {"BAR": BAR_TINY_YAML, "BPTVLM": BPTVLM_TINY_YAML, "BlackVIP": BLACKVIP_TINY_YAML})
    return root


@pytest.fixture()
def cli(monkeypatch, workdir):
    register_random_openai_weights(monkeypatch, workdir)
    monkeypatch.chdir(workdir)
    return workdir


def line(trainer, out, dataset="eurosat", subsample="all", *extra):
    """An official script line (scripts/base_to_new/train_<T>.sh, test_<T>.sh, xd_test_<T>.sh) at tiny sizes."""
    return ["train", "--root", "DATA", "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", f"configs/datasets/{dataset}.yaml",
            "--config-file", f"configs/trainers/{trainer}/vit_b16.yaml", "--output-dir", out, "--no-progress",
            *extra, "DATASET.SUBSAMPLE_CLASSES", subsample, "DATASET.NUM_SHOTS", "16",
            "MODEL.BACKBONE.NAME", "zipfast-tiny", "DATALOADER.TRAIN_X.BATCH_SIZE", "8",
            "TRAINER.BASIC.MAX_API_CALLS", "14"]


def result(folder) -> dict:
    return json.loads((Path(folder) / "result.json").read_text())


# --------------------------------------------------------------------------- base→new through the CLI


def test_bar_base_to_new_script_lines(cli, capsys):
    base = "output/base2new/base/BAR/eurosat/seed1"
    assert main(line("BAR", base, "eurosat", "base")) == 0
    r = result(cli / base)
    assert (r["subsample"], r["n_classes"], r["queries"], r["trainer"]) == ("base", 2, 14, "bar")
    assert "(base classes: 2;" in (cli / base / "log.txt").read_text()
    # the trained prompt evaluated on the classes it was trained on reproduces the run's own test
    again = "output/base2new/again/BAR/eurosat/seed1"
    assert main(line("BAR", again, "eurosat", "base", "--model-dir", base, "--load-epoch", "1000",
                     "--eval-only")) == 0
    assert result(cli / again)["accuracy"] == r["accuracy"] and result(cli / again)["queries"] == 14
    assert read_accuracy(cli / again) == pytest.approx(r["accuracy"], abs=0.01)
    new = "output/base2new/new/BAR/eurosat/seed1"
    assert main(line("BAR", new, "eurosat", "new", "--model-dir", base, "--load-epoch", "1000", "--eval-only")) == 0
    r = result(cli / new)
    assert (r["subsample"], r["n_classes"], r["queries"]) == ("new", 2, 14)
    log = (cli / new / "log.txt").read_text()
    assert "(new classes: 2;" in log and "Test acc:" in log and "=> result" in log
    assert not (cli / new / "checkpoint.safetensors").exists()  # an evaluation writes no checkpoint
    assert main(line("BAR", "output/bad", "eurosat", "half")) == 2
    assert "DATASET.SUBSAMPLE_CLASSES" in capsys.readouterr().err


# --------------------------------------------------------------------------- a prompt evaluated elsewhere


@pytest.fixture(scope="module")
def models():
    return {"zipfast-tiny": tiny_clip("zipfast-tiny"), "zipfast-tiny224": tiny_clip("zipfast-tiny224")}


@pytest.fixture(scope="module")
def folders(workdir):
    def folder(name, subsample):
        return build_dataset(name, workdir / "DATA", shots=4, seed=1, subsample=subsample,
                             write_cache=False).to_image_folder()

    return {"eurosat-base": folder("eurosat", "base"), "imagenet": folder("imagenet", "all")}


BUDGETS = {"bar": 14, "bptvlm": 10, "blackvip": 8}


@pytest.fixture(scope="module")
def trained(models, folders, tmp_path_factory):
    """method → (trainer fitted on EuroSAT's base classes, its checkpoint)."""
    out = {}
    for method, budget in BUDGETS.items():
        d = tmp_path_factory.mktemp(method)
        tr = make(method, models, folders["eurosat-base"], budget, output_dir=d)
        tr.fit()
        out[method] = (tr, d / "checkpoint.safetensors")
    return out


@pytest.mark.parametrize("method", ["bar", "bptvlm", "blackvip"])
def test_load_prompt_on_another_dataset_is_the_trainers_own_evaluation(method, models, folders, trained):
    src, ckpt = trained[method]
    # reference: a trainer on ImageNet (4 classes) built like the source run (seed 1: the same
    # projections for BPT-VLM), given the source's decoder statistics, evaluating its point
    ref = make(method, models, folders["imagenet"], 10)
    if method == "bptvlm":
        assert torch.equal(ref.space.proj_l, src.space.proj_l) and torch.equal(ref.space.proj_v, src.space.proj_v)
    if method == "blackvip":
        ref.space.load_state_dict(src.space.state_dict())
    want_acc, want_loss = ref.test_metrics(src.optimizer.point)
    # a trainer with another seed (other projections, decoder init and statistics) loads the prompt
    other = make(method, models, folders["imagenet"], 10, seed=2)
    _, own_loss = other.test_metrics()
    w = other.load_prompt(ckpt)
    assert torch.equal(w, src.optimizer.point.float().cpu())
    acc, loss = other.test_metrics(w)
    assert acc == want_acc and loss == pytest.approx(want_loss, rel=1e-6, abs=0)
    assert abs(own_loss - want_loss) > 1e-4  # the loaded state, not the trainer's own, made the difference


def test_load_prompt_refuses_other_shapes_and_methods(models, folders, trained):
    _, ckpt = trained["bptvlm"]
    wider = make("bptvlm", models, folders["imagenet"], 10, intrinsic_dim_l=41)
    with pytest.raises(CheckpointMismatchError, match=r"intrinsic_dim_l=40 \(checkpoint\) vs 41"):
        wider.load_prompt(ckpt)
    bar = make("bar", models, folders["imagenet"], 10)
    with pytest.raises(CheckpointMismatchError, match=r"--trainer BPTVLM .*not of --trainer BAR"):
        bar.load_prompt(ckpt)


def test_eval_only_refuses_a_checkpoint_of_another_trainer(cli, trained, capsys, tmp_path):
    _, bptvlm = trained["bptvlm"]
    assert main(line("BAR", str(tmp_path / "a"), "imagenet", "all", "--model-dir", str(bptvlm.parent),
                     "--eval-only")) == 2
    err = capsys.readouterr().err
    assert "--trainer BPTVLM (method 'bptvlm')" in err and "not of --trainer BAR" in err
    zip_run = tmp_path / "zip"
    assert main(["train", "--data", "planted", "--budget", "10", "--output-dir", str(zip_run), "--no-progress"]) == 0
    assert main(line("BlackVIP", str(tmp_path / "b"), "imagenet", "all", "--model-dir", str(zip_run),
                     "--eval-only")) == 2
    err = capsys.readouterr().err
    assert "--trainer ZIP (method 'zip')" in err and "not of --trainer BlackVIP" in err
    zip_line = line("ZIP", str(tmp_path / "c"), "imagenet", "all", "--model-dir", str(bptvlm.parent), "--eval-only")
    assert main(zip_line) == 2
    err = capsys.readouterr().err
    assert "--trainer BPTVLM (method 'bptvlm')" in err and "not of --trainer ZIP" in err
    assert main(line("BAR", str(tmp_path / "d"), "imagenet", "all", "--eval-only")) == 2
    assert "needs --model-dir" in capsys.readouterr().err


# --------------------------------------------------------------------------- bench-paper's plan


def test_plan_stages_for_the_image_trainers(tmp_path):
    official_configs(tmp_path)
    configs = image_trainer_configs(tmp_path, dict.fromkeys(("BAR", "BPTVLM", "BlackVIP"), "{}\n")) / "configs" / "trainers"
    out = tmp_path / "out"

    def stages(protocol, datasets):
        p = Plan(protocol, tmp_path, out, datasets=datasets, seeds=(1,), methods=("zip", "bar", "bptvlm", "blackvip"),
                 config_dir=str(configs), eval_every=5, method_flags={"blackvip": ["--blackvip-encoder", "none"]})
        return [[(j.meta["method"], j.meta["role"], Path(j.output_dir).relative_to(out).as_posix(), j.argv)
                 for j in stage] for stage in p.stages()]

    def value(argv, flag):
        return argv[argv.index(flag) + 1] if flag in argv else None

    few = stages("few-shot", ["eurosat"])[0]
    assert [f for m, _, f, _ in few] == ["basic/ZIP/eurosat/nctx8/seed1", "basic/BAR/eurosat/seed1",
                                         "basic/BPTVLM/eurosat/seed1", "basic/BlackVIP/eurosat/seed1"]
    for (m, _, _, argv), trainer in zip(few, ("ZIP", "BAR", "BPTVLM", "BlackVIP")):
        assert value(argv, "--trainer") == trainer
        assert value(argv, "--config-file") == str(configs / trainer / "vit_b16.yaml")
        assert value(argv, "--eval-every") == "5"
        assert (value(argv, "--blackvip-encoder") == "none") == (m == "blackvip")
        assert "--eval-only" not in argv and value(argv, "DATASET.SUBSAMPLE_CLASSES") == "all"

    train, test = stages("base2new", ["eurosat"])
    bar_train = next(s for s in train if s[0] == "bar")
    bar_test = next(s for s in test if s[0] == "bar")
    assert bar_train[2] == "base2new/base/BAR/eurosat/seed1"
    assert value(bar_train[3], "DATASET.SUBSAMPLE_CLASSES") == "base" and "--eval-only" not in bar_train[3]
    assert bar_test[2] == "base2new/new/BAR/eurosat/seed1" and "--eval-only" in bar_test[3]
    assert value(bar_test[3], "--model-dir") == str(out / bar_train[2])
    assert value(bar_test[3], "DATASET.SUBSAMPLE_CLASSES") == "new"

    for protocol, targets in (("cross-dataset", ["eurosat", "dtd"]), ("ood", ["imagenetv2", "imagenet_a"])):
        train, test = stages(protocol, targets)
        assert [f for m, _, f, _ in train if m == "blackvip"] == ["basic/BlackVIP/imagenet/seed1"]
        evals = [(f, value(a, "--model-dir"), value(a, "DATASET.NAME")) for m, _, f, a in test if m == "blackvip"]
        src = str(out / "basic/BlackVIP/imagenet/seed1")
        names = {"eurosat": "EuroSAT", "dtd": "DescribableTextures", "imagenetv2": "ImageNetV2",
                 "imagenet_a": "ImageNetA"}
        assert evals == [(f"xd/evaluation/BlackVIP/{d}/seed1", src, names[d]) for d in targets]

    (configs / "BAR" / "vit_b16.yaml").unlink()
    with pytest.raises(ValueError, match=r"BAR/vit_b16\.yaml"):
        Plan("few-shot", tmp_path, out, methods=("bar",), config_dir=str(configs))


def _fake_run(folder: Path, acc: float, eval_only=False):
    folder.mkdir(parents=True)
    end = "" if eval_only else "Finish training\n"
    (folder / "log.txt").write_text(f"{end}=> result\n* total: 10\n* accuracy: {acc:.1f}%\n")


def test_tables_include_the_image_trainers(tmp_path):
    p = Plan("cross-dataset", tmp_path, tmp_path, datasets=["eurosat"], seeds=(1, 2), methods=("zip", "bar"))
    for s, (src, tgt) in ((1, (60.0, 30.0)), (2, (62.0, 34.0))):
        _fake_run(p.train_dir("imagenet", s, method="bar"), src)
        _fake_run(p.eval_dir("eurosat", s, "bar"), tgt, eval_only=True)
    rows = p.tables()[0].rows
    assert rows == [["ZIP", "–", "–", "–"], ["BAR", "61.0 ± 1.0", "32.0 ± 2.0", "32.0"]]
    b = Plan("base2new", tmp_path, tmp_path / "b2n", datasets=["eurosat"], seeds=(1,), methods=("blackvip",))
    _fake_run(b.train_dir("eurosat", 1, "base", "blackvip"), 80.0)
    _fake_run(b.eval_dir("eurosat", 1, "blackvip", role="new"), 40.0, eval_only=True)
    t = b.tables()[0]
    assert t.header == ["Dataset", "BlackVIP Base", "BlackVIP New", "BlackVIP H"]
    assert t.rows[0] == ["EuroSAT", "80.0 ± 0.0", "40.0 ± 0.0", f"{2 * 80 * 40 / 120:.1f}"]


def test_bench_paper_base2new_with_bar_end_to_end(cli, tmp_path, capsys):
    weights = cli / "zipfast_tiny_random.pt"  # registered by the cli fixture
    out = tmp_path / "out"
    argv = ["bench-paper", "base2new", "--root", str(cli / "DATA"), "--output", str(out), "--datasets", "eurosat",
            "--seeds", "1", "--methods", "bar", "--config-dir", str(cli / "configs" / "trainers"),
            "--model", "zipfast-tiny", "--pretrained", str(weights), "--no-progress", "--eval-every", "7",
            "TRAINER.BASIC.MAX_API_CALLS", "14", "DATALOADER.TRAIN_X.BATCH_SIZE", "8"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["ran"] == 2 and not summary["failed"]
    b = read_accuracy(out / "base2new/base/BAR/eurosat/seed1")
    n = read_accuracy(out / "base2new/new/BAR/eurosat/seed1")
    assert result(out / "base2new/new/BAR/eurosat/seed1")["subsample"] == "new"
    curve = [json.loads(x) for x in (out / "base2new/base/BAR/eurosat/seed1/curve.jsonl").read_text().splitlines()]
    assert [c["queries"] for c in curve] == [0, 12, 14] and curve[-1]["test_acc"] == pytest.approx(b, abs=0.01)
    assert Path(summary["plot"]).read_bytes()[:4] == b"\x89PNG"
    h = 0.0 if b + n == 0 else 2 * b * n / (b + n)
    assert f"| EuroSAT | {b:.1f} ± 0.0 | {n:.1f} ± 0.0 | {h:.1f} |" in (out / "tables/base2new.md").read_text()


def test_without_config_dir_the_image_trainers_run_the_papers_values(tmp_path):
    from zipfast.config import load_official_image, method_options as method_config
    from zipfast.methods import IMAGE_TRAINERS as TRAINER_NAMES, METHODS, options_dict as config_to_dict

    p = Plan("few-shot", tmp_path, tmp_path / "out", datasets=["eurosat"], seeds=(1,), methods=("zip", "bar", "blackvip"))
    jobs = {j.meta["method"]: j.argv for j in p.stages()[0]}
    assert "--config-file" not in jobs["bar"] and "TRAINER.BAR.LRS" not in jobs["zip"]
    for name, method in TRAINER_NAMES.items():  # the built-in pairs load to the paper's (yaml) values
        argv = jobs.get(method) or Plan("few-shot", tmp_path, tmp_path / "o", datasets=["eurosat"], seeds=(1,),
                                        methods=(method,)).stages()[0][0].argv
        opts = argv[argv.index("DATASET.NAME"):]
        _, shared, mc = load_official_image(None, opts, trainer=name)
        assert config_to_dict(mc) == config_to_dict(method_config(method, **METHODS[method].official_behaviour)), name
        assert shared["image_size"] == (194 if method == "bar" else 224)
    train_py = load_official_image(None, [], trainer="BAR")[2]
    assert train_py.lrs != method_config("bar").lrs  # without the pairs: train.py's defaults differ
