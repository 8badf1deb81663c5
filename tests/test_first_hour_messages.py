"""What a new user following the README reads in the first hour: log lines, errors and help that
name the real value and the fix, through the CLI and through the Python API."""

from __future__ import annotations

import logging
import shutil

import pytest

import paper_data
from conftest import write_tiny_image_folder
from zipfast.cli import main
from zipfast.config import TrainConfig
from zipfast.data.imagefolder import DatasetError, FewShotImageFolder


def _help_of(out: str, flag: str) -> str:
    """The help text of `flag` in argparse's output, its lines joined."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(flag + " "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("-")), len(lines))
    return " ".join(line.strip() for line in lines[start:end])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    return err[-1]


# ----------------------------------------------------------------------- 1. the few-shot split's log line


def test_the_split_log_line_says_drawn_then_read_from_the_cache(tmp_path, caplog):
    from zipfast.datasets import build_dataset

    paper_data.eurosat(tmp_path)
    caplog.set_level(logging.INFO, logger="zipfast.datasets")
    build_dataset("eurosat", tmp_path, shots=2, seed=1)
    build_dataset("eurosat", tmp_path, shots=2, seed=1)  # the second read comes from the cache the first wrote
    lines = [r.getMessage() for r in caplog.records if "split for seed" in r.getMessage()]
    cache = tmp_path / "eurosat" / "split_fewshot" / "shot_2-seed_1.zipfast.json"
    assert lines == ["EuroSAT: 2-shot split for seed 1: drawn",
                     f"EuroSAT: 2-shot split for seed 1: read from the zipfast cache {cache}"]


# ----------------------------------------------------------------------- 2. the shots advice works


def test_too_many_shots_advises_a_number_that_leaves_test_images(tmp_path):
    root = write_tiny_image_folder(tmp_path / "flat", per_class=6)
    write_tiny_image_folder(root, classes=("small",), per_class=4, seed=1)
    with pytest.raises(DatasetError) as exc:
        FewShotImageFolder.from_root(root, shots=40, seed=1)
    message = str(exc.value)
    assert message.startswith("class 'small' has 4 image(s): 40 shots and at least one test image need 41")
    assert "lower the shots (--shots / TrainConfig.shots) to at most 3," in message
    ds = FewShotImageFolder.from_root(root, shots=3, seed=1)  # the advice works
    assert len(ds.train) == 4 * 3 and len(ds.test) == 3 * 3 + 1
    with pytest.raises(DatasetError, match="at most 3,"):
        FewShotImageFolder.from_root(root, shots=4, seed=1)


def test_with_a_test_folder_every_training_image_may_be_a_shot(tmp_path):
    write_tiny_image_folder(tmp_path / "split" / "train", per_class=5)
    write_tiny_image_folder(tmp_path / "split" / "test", per_class=2, seed=1)
    with pytest.raises(DatasetError, match=r"has 5 training image\(s\) but 6 shots were requested; lower the shots "
                                           r"\(--shots / TrainConfig.shots\) to at most 5 or add"):
        FewShotImageFolder.from_root(tmp_path / "split", shots=6, seed=1)
    assert len(FewShotImageFolder.from_root(tmp_path / "split", shots=5, seed=1).train) == 3 * 5


def test_cli_too_many_shots_exits_2_with_the_advice(tmp_path, capsys):
    root = write_tiny_image_folder(tmp_path / "flat", per_class=6)
    assert main(["train", "--data", str(root), "--shots", "40", "--model", "zipfast-tiny224", "--pretrained", "none",
                 "--device", "cpu", "--no-progress", "--output-dir", str(tmp_path / "run")]) == 2
    line = _error_line(capsys)
    assert line.startswith("zipfast train: error: class 'annual_crop' has 6 image(s): 40 shots")
    assert "to at most 5," in line


# ----------------------------------------------------------------------- 3. API errors name the setting both ways


def test_api_missing_dataset_root_names_the_flag_and_the_field(tmp_path):
    with pytest.raises(DatasetError) as exc:
        FewShotImageFolder.from_root(tmp_path / "nowhere", shots=1, seed=1)
    assert str(exc.value) == (f"dataset root '{tmp_path / 'nowhere'}' does not exist; check the path "
                              "(--data / TrainConfig.dataset).")


def test_api_trainer_on_a_missing_device_names_the_flag_and_the_field(planted_task):
    from zipfast.errors import DeviceError
    from zipfast.run.trainer import Trainer

    model, tokenizer, task = planted_task
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", n_ctx=4, budget=20,
                      device="cuda:99")
    with pytest.raises(DeviceError) as exc:
        Trainer(model, task.classnames, cfg, task, tokenizer=tokenizer, progress=False)
    assert str(exc.value).startswith("device 'cuda:99' (--device / TrainConfig.device): ")
    assert "\n" not in str(exc.value)


def test_api_trainer_of_an_image_method_on_features_names_the_flag_and_the_field(planted_task):
    from zipfast.errors import ConfigError
    from zipfast.run.trainer import Trainer

    model, tokenizer, task = planted_task
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", n_ctx=4, budget=20,
                      method="bar", device="cpu")
    with pytest.raises(ConfigError) as exc:
        Trainer(model, task.classnames, cfg, task, tokenizer=tokenizer, progress=False)
    assert str(exc.value) == ("method bar (--method / TrainConfig.method) acts on the image tower and needs images: "
                              "pass an image folder (--data / TrainConfig.dataset; got 'planted')")


def test_api_config_validation_names_the_field_not_a_flag():
    from zipfast.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        TrainConfig(shots=-1).validate()
    assert str(exc.value) == "DATASET.NUM_SHOTS (shots) must be a non-negative integer, got -1"


# ----------------------------------------------------------------------- 4. help shows the defaults


@pytest.mark.parametrize("flag, field", [("--budget", "budget"), ("--shots", "shots"), ("--seed", "seed"),
                                         ("--batch-size", "batch_size"), ("--model", "model"),
                                         ("--method", "method"), ("--precision", "precision")])
def test_train_help_shows_the_trainconfig_defaults(flag, field, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside "default: VALUE"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    assert f"default: {getattr(TrainConfig(), field)}" in _help_of(capsys.readouterr().out, flag)


def test_demo_and_compare_help_show_their_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    for cmd, flag, value in (("demo", "--budget", "5000"), ("demo", "--seed", "1"), ("compare", "--shots", "16"),
                             ("compare", "--batch-size", "128")):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = _help_of(capsys.readouterr().out, flag)
        assert f"default: {value}" in text, (cmd, text)


# ----------------------------------------------------------------------- 5. info prints each reason once


def test_info_prints_each_reason_once(capsys):
    from zipfast.env import resolve_device
    from zipfast.ops import table

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    reasons = {r["why_not"] for r in table(resolve_device("auto")) if r["why_not"]}
    assert reasons
    for why in reasons:
        assert out.count(why) == 1, why
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == len(set(lines))


# ----------------------------------------------------------------------- 6. an official layout at --data


def test_api_official_layout_points_to_the_official_surface(tmp_path):
    paper_data.eurosat(tmp_path)
    with pytest.raises(DatasetError) as exc:
        FewShotImageFolder.from_root(tmp_path / "eurosat", shots=1, seed=1)
    assert str(exc.value) == (
        f"'{tmp_path / 'eurosat'}' holds the official EuroSAT layout: run it with `zipfast train --root {tmp_path} "
        "--trainer ZIP --dataset-config-file configs/datasets/eurosat.yaml --config-file "
        "configs/trainers/ZIP/vit_b16.yaml ...` (see docs/official-drop-in.md) or pass an image folder of class "
        "folders (--data / TrainConfig.dataset)")


def test_cli_official_layout_at_data_exits_2_naming_the_command(tmp_path, capsys):
    paper_data.eurosat(tmp_path / "data")
    for data in (tmp_path / "data" / "eurosat", tmp_path / "data"):  # the dataset's folder, or $DATA itself
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        assert main(["train", "--data", str(data), "--model", "zipfast-tiny224", "--pretrained", "none",
                     "--device", "cpu", "--no-progress", "--output-dir", str(tmp_path / "run")]) == 2
        line = _error_line(capsys)
        assert line.startswith(f"zipfast train: error: '{tmp_path / 'data' / 'eurosat'}' holds the official "
                               "EuroSAT layout: run it with `zipfast train --root ")
        assert f"--root {tmp_path / 'data'} --trainer ZIP --dataset-config-file configs/datasets/eurosat.yaml" in line
        assert "no images" not in line


# ----------------------------------------------------------------------- 7. BlackVIP on a 32 px model


def test_cli_blackvip_on_the_32px_tiny_model_names_zipfast_tiny224(tmp_path, capsys, zipfast_cache):
    assert main(["train", "--method", "blackvip", "--data", "synthetic-images", "--model", "zipfast-tiny",
                 "--pretrained", "none", "--budget", "10", "--shots", "1", "--device", "cpu", "--no-progress",
                 "--output-dir", str(tmp_path / "run")]) == 2
    line = _error_line(capsys)
    assert line.startswith("zipfast train: error: BlackVIP's decoder produces 224 px prompts; the image size is 32")
    assert line.endswith("use a model whose image size is 224 (--model / TrainConfig.model), e.g. ViT-B-16-quickgelu, "
                         "or zipfast-tiny224 in place of the tiny demo model zipfast-tiny")
