"""Official script lines run through `zipfast train`; Dassl's log.txt read with parse_test_res's regex."""

from __future__ import annotations

import json
import re

import pytest

import paper_data
from paper_runs import TINY, official_configs, register_random_openai_weights
from zipfast.cli import main
from zipfast.paper.dassl_log import macro_f1, metric_regex


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    paper_data.eurosat(root / "DATA")
    paper_data.imagenet(root / "DATA")
    paper_data.ood(root / "DATA")
    return official_configs(root)


@pytest.fixture(autouse=True)
def weights(monkeypatch, workdir):
    register_random_openai_weights(monkeypatch, workdir)
    monkeypatch.chdir(workdir)  # the scripts run from the repository root: relative config paths


def parse_test_res(log_path, end_signal="Finish training", keyword="accuracy"):
    """parse_function of CoOp's parse_test_res.py for one log.txt (the metric after the end signal)."""
    regex, good, value = metric_regex(keyword), False, None
    assert regex.pattern == r"\* accuracy: ([\.\deE+-]+)%"  # the official pattern, verbatim
    for line in log_path.read_text().splitlines():
        line = line.strip()
        if line == end_signal:
            good = True
        m = regex.search(line)
        if m and good:
            value = float(m.group(1))
    return value


def few_shot_line(dataset, seed, out):
    """scripts/few_shot/ZIP.sh's command, `python train.py` replaced by `zipfast train`."""
    return ["train", "--root", "DATA", "--seed", str(seed), "--trainer", "ZIP",
            "--dataset-config-file", f"configs/datasets/{dataset}.yaml",
            "--config-file", "configs/trainers/ZIP/vit_b16.yaml", "--output-dir", out,
            "DATASET.SUBSAMPLE_CLASSES", "all", "DATASET.NUM_SHOTS", "16", "TRAINER.BASIC.MAX_API_CALLS", "5000",
            "TRAINER.ZIP.N_CTX", "8", "TRAINER.ZIP.INTRINSIC_DIM", "500", "TRAINER.ZIP.RANK", "5"]


def test_few_shot_script_line_writes_a_parseable_log(workdir):
    out = "output/basic/ZIP/eurosat/nctx8/seed1"
    assert main(few_shot_line("eurosat", 1, out) + TINY + ["TRAINER.BASIC.MAX_API_CALLS", "30"]) == 0
    log = workdir / out / "log.txt"
    result = json.loads((workdir / out / "result.json").read_text())
    acc = parse_test_res(log)
    assert acc == round(result["accuracy"], 1)
    # the table of docs/data-and-protocols.md: --test-log reads a trained log too; a copy older than CoOp's 859f068 finds nothing
    assert parse_test_res(log, end_signal="=> result") == acc
    assert parse_test_res(log, end_signal="Finished training") is None
    assert result["queries"] == 30 and result["n_classes"] == 4 and result["fewshot_source"] == "drawn"
    text = log.read_text()
    assert re.search(r"^\* total: 12$", text, re.M) and "=> result" in text
    assert (workdir / "DATA" / "eurosat" / "split_fewshot" / "shot_16-seed_1.zipfast.json").is_file()
    # --eval-only of the same prompt (the base2new/xd scripts' form) gives the same accuracy
    assert main(["train", "--root", "DATA", "--seed", "1", "--trainer", "ZIP",
                 "--dataset-config-file", "configs/datasets/eurosat.yaml",
                 "--config-file", "configs/trainers/ZIP/vit_b16.yaml", "--output-dir", "output/eval1",
                 "--model-dir", out, "--load-epoch", "1000", "--eval-only"] + TINY) == 0
    assert parse_test_res(workdir / "output/eval1/log.txt", end_signal="=> result") == acc


def test_base_to_new_scripts(workdir):
    common = ["--root", "DATA", "--seed", "2", "--trainer", "ZIP", "--dataset-config-file",
              "configs/datasets/eurosat.yaml", "--config-file", "configs/trainers/ZIP/vit_b16.yaml"]
    base, new = "output/base2new/base/ZIP/eurosat/nctx8/seed2", "output/base2new/new/ZIP/eurosat/nctx8/seed2"
    assert main(["train", *common, "--output-dir", base, "DATASET.SUBSAMPLE_CLASSES", "base",
                 "DATASET.NUM_SHOTS", "16", *TINY]) == 0
    assert main(["train", *common, "--output-dir", new, "--model-dir", base, "--load-epoch", "1000",
                 "--eval-only", "DATASET.SUBSAMPLE_CLASSES", "new", "DATASET.NUM_SHOTS", "16", *TINY]) == 0
    rb = json.loads((workdir / base / "result.json").read_text())
    rn = json.loads((workdir / new / "result.json").read_text())
    assert (rb["n_classes"], rn["n_classes"]) == (2, 2) and rn["subsample"] == "new"
    assert parse_test_res(workdir / new / "log.txt", end_signal="=> result") == round(rn["accuracy"], 1)


def test_cross_dataset_and_ood_evaluate_an_imagenet_prompt(workdir):
    src = "output/basic/ZIP/imagenet/nctx8/seed1"
    assert main(few_shot_line("imagenet", 1, src) + TINY) == 0
    for target, n_classes in (("eurosat", 4), ("imagenet_a", 2), ("imagenetv2", 4)):
        out = f"output/xd/evaluation/ZIP/{target}/seed1"
        assert main(["train", "--root", "DATA", "--seed", "1", "--trainer", "ZIP", "--dataset-config-file",
                     f"configs/datasets/{target}.yaml", "--config-file", "configs/trainers/ZIP/vit_b16.yaml",
                     "--output-dir", out, "--model-dir", src, "--load-epoch", "1000", "--eval-only",
                     "DATASET.SUBSAMPLE_CLASSES", "all", "DATASET.NUM_SHOTS", "16", *TINY]) == 0
        r = json.loads((workdir / out / "result.json").read_text())
        assert r["n_classes"] == n_classes and r["queries"] == 20


def test_zero_shot_clip_script_line(workdir):
    out = "output/basic/zsclip/ZeroshotCLIP/eurosat"
    assert main(["train", "--root", "DATA", "--trainer", "ZeroshotCLIP", "--dataset-config-file",
                 "configs/datasets/eurosat.yaml", "--config-file", "configs/trainers/ZIP/vit_b16.yaml",
                 "--output-dir", out, "--eval-only", *TINY]) == 0
    text = (workdir / out / "log.txt").read_text()
    assert "a centered satellite photo of {}." in text
    assert parse_test_res(workdir / out / "log.txt", end_signal="=> result") is not None


@pytest.mark.parametrize("trainer, message", [("CoOp", "does not implement yet"), ("Foo", "unknown --trainer 'Foo'")])
def test_other_trainers_are_refused_by_name(workdir, capsys, trainer, message):
    argv = few_shot_line("eurosat", 1, "output/refused")
    argv[argv.index("ZIP")] = trainer
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (workdir / "output/refused").exists()


def test_missing_dataset_and_model_dir_errors(workdir, capsys):
    argv = few_shot_line("resisc45", 1, "output/missing")
    assert main(argv) == 2
    assert "resisc45" in capsys.readouterr().err
    argv = ["train", "--root", "DATA", "--trainer", "ZIP", "--dataset-config-file", "configs/datasets/eurosat.yaml",
            "--model-dir", "output/nothing-here", "--eval-only"]
    assert main(argv) == 2
    assert "output/nothing-here/checkpoint.safetensors" in capsys.readouterr().err


def test_macro_f1_against_a_hand_count():
    import torch

    pred, true = torch.tensor([0, 0, 1, 2, 2, 1]), torch.tensor([0, 1, 1, 2, 0, 1])
    # class 0: tp1 fp1 fn1 → 0.5; class 1: tp2 fp0 fn1 → 0.8; class 2: tp1 fp1 fn0 → 2/3
    assert macro_f1(pred, true) == pytest.approx(100 * (0.5 + 0.8 + 2 / 3) / 3)


def test_pil_reference_augmentation_runs_through_the_official_line(workdir):
    out = "output/pil/seed1"
    argv = few_shot_line("eurosat", 1, out)
    argv[argv.index("--output-dir")] = "--augment"
    argv[argv.index(out)] = "pil"
    argv[1:1] = ["--output-dir", out]
    assert main(argv + TINY) == 0
    cfg = json.loads((workdir / out / "report.json").read_text())["config"]
    assert cfg["augment"] == "pil"


def test_another_method_through_the_official_surface_and_its_eval_only(workdir):
    out = "output/zosgd/seed1"
    argv = few_shot_line("eurosat", 1, out)
    argv[1:1] = ["--method", "zo-sgd"]
    assert main(argv + TINY) == 0
    assert json.loads((workdir / out / "report.json").read_text())["method"] == "zo-sgd"
    assert main(["train", "--root", "DATA", "--seed", "1", "--trainer", "ZIP", "--dataset-config-file",
                 "configs/datasets/imagenet_a.yaml", "--config-file", "configs/trainers/ZIP/vit_b16.yaml",
                 "--output-dir", "output/zosgd-xd", "--model-dir", out, "--eval-only", *TINY]) == 0
    assert parse_test_res(workdir / "output/zosgd-xd/log.txt", end_signal="=> result") is not None


@pytest.mark.parametrize("flag,value", [("--head", "linear"), ("--source-domains", "photo"),
                                        ("--target-domains", "sketch"), ("--visual-backbone", "RN50"),
                                        ("--best_or_last", "best")])
def test_unused_official_flags_are_refused_by_name(tmp_path, capsys, flag, value):
    rc = main(["train", "--data", "planted", "--budget", "20", "--no-progress",
               "--output-dir", str(tmp_path / "out"), flag, value])
    err = capsys.readouterr().err
    assert rc == 2
    assert flag in err and value in err and "no effect" in err
    assert not (tmp_path / "out").exists()  # refused before anything is written
