"""`zipfast train --trainer BAR|BPTVLM|BlackVIP`: the official script lines on a tiny model."""

from __future__ import annotations

import json

import pytest

import paper_data
from paper_runs import image_trainer_configs, official_configs, register_random_openai_weights
from methods.test_image_methods import BAR_YAML, BLACKVIP_YAML, BPTVLM_YAML
from zipfast.cli import main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("official_image")
    paper_data.eurosat(root / "DATA")
    official_configs(root)
    image_trainer_configs(root, {"BAR": BAR_YAML, "BPTVLM": BPTVLM_YAML, "BlackVIP": BLACKVIP_YAML})
    return root


@pytest.fixture(autouse=True)
def weights(monkeypatch, workdir):
    register_random_openai_weights(monkeypatch, workdir)
    monkeypatch.chdir(workdir)


def script_line(trainer, out, *extra):
    """scripts/few_shot/<trainer>.sh's command with `python train.py` → `zipfast train`, plus tiny sizes."""
    return ["train", "--root", "DATA", "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", "configs/datasets/eurosat.yaml",
            "--config-file", f"configs/trainers/{trainer}/vit_b16.yaml", "--output-dir", out, "--no-progress",
            "DATASET.SUBSAMPLE_CLASSES", "all", "DATASET.NUM_SHOTS", "16", "TRAINER.BASIC.MAX_API_CALLS", "5000",
            "MODEL.BACKBONE.NAME", "zipfast-tiny", "DATALOADER.TRAIN_X.BATCH_SIZE", "8", *extra]


@pytest.mark.parametrize("trainer,extra,queries", [
    ("BAR", ["TRAINER.BASIC.MAX_API_CALLS", "14", "TRAINER.BAR.FRAME_SIZE", "32", "INPUT.SIZE", "(26, 26)"], 14),
    ("BPTVLM", ["TRAINER.BASIC.MAX_API_CALLS", "12", "TRAINER.BPTVLM.INTRINSIC_DIM_L", "20",
                "TRAINER.BPTVLM.INTRINSIC_DIM_V", "20", "TRAINER.BPTVLM.POP_SIZE", "4"], 12),
])
def test_official_script_line_trains_and_logs(workdir, trainer, extra, queries):
    out = f"output/basic/{trainer}/eurosat/seed1"
    assert main(script_line(trainer, out) + extra) == 0
    result = json.loads((workdir / out / "result.json").read_text())
    assert result["queries"] == queries and result["trainer"] == trainer.lower()
    log = (workdir / out / "log.txt").read_text()
    assert "* accuracy:" in log and "Finish training" in log
    assert (workdir / out / "checkpoint.safetensors").is_file() and (workdir / out / "log.jsonl").is_file()
    report = json.loads((workdir / out / "report.json").read_text())
    if trainer == "BPTVLM":  # the official trainer's choice of the best prompt
        assert report["method_config"]["best"] == "running"


def test_blackvip_without_weights_names_the_encoder(workdir, capsys):
    argv = script_line("BlackVIP", "output/blackvip")
    argv[argv.index("--no-progress")] = "--blackvip-encoder=./no/such/dir"
    assert main(argv) == 2
    assert "no/such/dir" in capsys.readouterr().err


def test_unknown_image_key_exits_2(workdir, capsys):
    assert main(script_line("BAR", "output/bad") + ["TRAINER.BAR.SIGMA", "1.0"]) == 2
    assert "TRAINER.BAR.SIGMA" in capsys.readouterr().err


def test_official_line_takes_augment_and_reports_config_changes(workdir):
    bpt = ["TRAINER.BASIC.MAX_API_CALLS", "8", "TRAINER.BPTVLM.INTRINSIC_DIM_L", "20",
           "TRAINER.BPTVLM.INTRINSIC_DIM_V", "20", "TRAINER.BPTVLM.POP_SIZE", "4"]
    out = "output/augment/pil"
    argv = script_line("BPTVLM", out) + bpt
    assert main(argv[:1] + ["--augment", "pil"] + argv[1:]) == 0
    report = json.loads((workdir / out / "report.json").read_text())
    assert report["config"]["augment"] == "pil" and report["adjustments"] == ["image_size 224 -> 32 (the model's "
                                                                             "input size)"]
    out = "output/augment/transforms"
    assert main(script_line("BPTVLM", out) + bpt + ["INPUT.TRANSFORMS", "('random_resized_crop', 'normalize')"]) == 0
    report = json.loads((workdir / out / "report.json").read_text())
    assert report["config"]["augment"] == "pil" and report["adjustments"][1].startswith("augment tensor -> pil")
