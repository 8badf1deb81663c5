"""End-to-end tests of the `zipfast` command: train, eval, the official-config path, info, demo."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zipfast.cli import main

from conftest import OFFICIAL_YAML  # noqa: E402

TINY = ["--model", "zipfast-tiny", "--pretrained", "none", "--shots", "2", "--batch-size", "4",
        "--device", "cpu", "--no-progress"]


def _last_json(text: str) -> dict:
    """The last line of stdout that is a JSON object."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in output:\n{text}")


def test_train_then_eval(tiny_image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", str(tiny_image_folder), "--budget", "20", "--output-dir", str(out), *TINY])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for name in ("report.json", "log.jsonl", "checkpoint.safetensors"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))

    report = json.loads((out / "report.json").read_text())
    assert report["queries"] == 20 and report["steps"] == 2 and report["budget"] == 20
    assert isinstance(report["test_acc"], (int, float)) and 0 <= report["test_acc"] <= 100
    assert report["n_classes"] == 3
    printed = _last_json(captured.out)
    assert printed["queries"] == 20 and printed["test_acc"] == pytest.approx(report["test_acc"])

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in log] == [1, 2]
    assert [r["queries"] for r in log] == [10, 20]
    assert all(math.isfinite(r["loss"]) for r in log)

    rc = main(["eval", str(out / "checkpoint.safetensors"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    ev = _last_json(captured.out)
    assert ev["step"] == 2 and ev["queries"] == 20
    assert ev["test_acc"] == pytest.approx(report["test_acc"], abs=1e-3)


def test_train_official_config(tiny_image_folder, tmp_path, capsys):
    yaml_path = tmp_path / "vit_b16.yaml"
    yaml_path.write_text(OFFICIAL_YAML)
    out = tmp_path / "run"
    rc = main(["train", "--config-file", str(yaml_path), "--data", str(tiny_image_folder),
               "--output-dir", str(out), *TINY,
               "TRAINER.BASIC.MAX_API_CALLS", "10", "TRAINER.ZIP.N_CTX", "4",
               "TRAINER.ZIP.INTRINSIC_DIM", "40", "TRAINER.ZIP.RANK", "2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    cfg = report["config"]
    assert (cfg["n_ctx"], cfg["intrinsic_dim"], cfg["rank"], cfg["budget"]) == (4, 40, 2, 10)
    assert (cfg["model"], cfg["pretrained"], cfg["batch_size"], cfg["shots"]) == ("zipfast-tiny", "none", 4, 2)
    assert cfg["sp_avg"] == 5 and cfg["spsa_params"] == [1.0, 0.01, 0.01, 0.4, 0.1]
    assert report["queries"] == 10 and report["steps"] == 1
    assert 0 <= report["test_acc"] <= 100


def test_info_subprocess():
    script = Path(sys.executable).parent / "zipfast"
    cmd = [str(script), "info"] if script.is_file() else [sys.executable, "-m", "zipfast.cli", "info"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert "torch-reference" in res.stdout
    assert "default device" in res.stdout and "ZIPFAST_SELFCHECK=1" in res.stdout


def test_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "zipfast.cli", "--help"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    for cmd in ("train", "eval", "demo", "info"):
        assert cmd in res.stdout


def test_demo_small_budget(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--budget", "40", "--no-progress", "--device", "cpu", "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "test accuracy before" in captured.out
    assert "after" in captured.out
    assert "queries: 40" in captured.out
    assert (out / "report.json").is_file() and (out / "checkpoint.safetensors").is_file()


def test_feature_bank_trains_and_is_deterministic(tiny_image_folder, tmp_path):
    """--feature-bank 3: every training image's 3 views are encoded once; steps sample them."""
    import json

    from zipfast.cli import main

    reports = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert main(["train", "--data", str(tiny_image_folder), "--model", "zipfast-tiny", "--pretrained", "none",
                     "--budget", "20", "--shots", "2", "--batch-size", "4", "--feature-bank", "3",
                     "--output-dir", str(out), "--no-progress"]) == 0
        reports.append(json.loads((out / "report.json").read_text()))
    assert reports[0]["config"]["feature_bank"] == 3 and reports[0]["queries"] == 20
    assert reports[0]["train_loss"] == reports[1]["train_loss"]
