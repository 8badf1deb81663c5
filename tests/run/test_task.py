"""`zipfast train --method bptvlm|bar|blackvip` and `zipfast compare` set an image-method run up
alike (zipfast.run.task.fit): the task's method defaults and
BlackVIP encoder, BAR/BlackVIP's template; older checkpoints resume with the template they ran;
the generated task's cache folder; compare's checks before anything loads."""

import json
import os
import stat

import pytest

from conftest import write_tiny_image_folder
from zipfast.run.checkpoint import CHECKPOINT_NAME, read_checkpoint, write_checkpoint
from zipfast.cli import main
from zipfast.evaluate.zeroshot import DEFAULT_TEMPLATE, template_for

TINY = ["--model", "zipfast-tiny", "--pretrained", "none", "--shots", "2", "--batch-size", "4", "--device", "cpu",
        "--no-progress", "--precision", "fp32"]
BAR = ["--method", "bar", "--method-opt", "q=2"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPFAST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    """An image folder named like a dataset with its own hand-written template."""
    return write_tiny_image_folder(tmp_path_factory.mktemp("data") / "eurosat")


def report(out):
    return json.loads((out / "report.json").read_text())


def test_the_template_rule_falls_back_to_the_default_for_a_plain_folder(tmp_path):
    assert template_for(str(tmp_path / "my_photos")) == DEFAULT_TEMPLATE
    assert template_for("synthetic-images") == DEFAULT_TEMPLATE
    assert template_for("/data/eurosat/") == template_for("eurosat") != DEFAULT_TEMPLATE


def test_train_and_compare_use_the_datasets_template(eurosat, tmp_path, capsys):
    out = tmp_path / "train"
    assert main(["train", "--data", str(eurosat), "--budget", "6", *TINY, *BAR, "--output-dir", str(out)]) == 0
    assert report(out)["template"] == template_for("eurosat")
    cmp = tmp_path / "cmp"
    assert main(["compare", "--data", str(eurosat), "--methods", "bar", "--seeds", "1", "--budget", "12",
                 "--eval-every", "6", "--model", "zipfast-tiny", "--pretrained", "none", "--shots", "2",
                 "--batch-size", "4", "--device", "cpu", "--no-progress", "--method-opt", "bar.q=2",
                 "--output-dir", str(cmp)]) == 0, capsys.readouterr().err
    run = json.loads((cmp / "runs.jsonl").read_text().splitlines()[0])
    assert run["report"]["template"] == template_for("eurosat")


def test_an_older_checkpoint_resumes_with_the_template_it_ran(eurosat, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(eurosat), *TINY, *BAR, "--output-dir", str(out)]
    assert main([*argv, "--budget", "6"]) == 0
    ck = read_checkpoint(out / CHECKPOINT_NAME)
    assert ck.fingerprint["template"] == template_for("eurosat")
    # an image-trainer (v1 layout) checkpoint of before the template was recorded: its run used the default one
    old = {k: v for k, v in ck.fingerprint.items() if k != "template"}
    v1 = {k: v for k, v in ck.state.items() if k not in ("point", "method")}
    v1.update(format="zipfast-image-checkpoint-v1", template=DEFAULT_TEMPLATE, batches=ck.state["step"])
    write_checkpoint(out / CHECKPOINT_NAME, v1, old)
    capsys.readouterr()
    assert main([*argv, "--budget", "12", "--resume", str(out)]) == 0
    err = capsys.readouterr().err
    rep = report(out)
    assert rep["queries"] == 12 and rep["template"] == DEFAULT_TEMPLATE
    note = [a for a in rep["adjustments"] if a.startswith("template:")]
    assert len(note) == 1 and repr(DEFAULT_TEMPLATE) in note[0] and repr(template_for("eurosat")) in note[0]
    assert f"warning: {note[0]}" in err  # logged as well


def test_train_on_synthetic_images_gets_the_tasks_bptvlm_dims(cache, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic-images", "--method", "bptvlm", "--method-opt", "pop_size=2",
                 "--budget", "2", "--shots", "1", "--device", "cpu", "--no-progress", "--output-dir", str(out)]) == 0
    rep = report(out)
    assert rep["param_dim"] == 400 and rep["method_config"]["intrinsic_dim_l"] == 200
    assert any("intrinsic_dim_v=200" in a for a in rep["adjustments"])


def test_train_on_synthetic_images_uses_the_tasks_blackvip_encoder(cache, tmp_path, capsys):
    # the hub encoder cannot load here: the task's small random encoder needs nothing downloaded
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic-images", "--method", "blackvip", "--method-opt", "sp_avg=1",
                 "--method-opt", "src_dim=98", "--budget", "2", "--shots", "1", "--device", "cpu", "--no-progress",
                 "--output-dir", str(out)]) == 0, capsys.readouterr().err
    assert report(out)["queries"] == 2


def test_eval_rebuilds_blackvips_encoder_from_the_checkpoint_and_takes_an_override(cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic-images", "--method", "blackvip", "--method-opt", "sp_avg=1",
                 "--budget", "2", "--shots", "1", "--device", "cpu", "--no-progress", "--output-dir", str(out)]) == 0
    trained = report(out)["test_acc"]
    capsys.readouterr()
    ckpt = str(out / CHECKPOINT_NAME)
    assert main(["eval", ckpt, "--device", "cpu"]) == 0  # the task's own encoder, rebuilt: the same accuracy
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["test_acc"] == pytest.approx(trained, abs=1e-4)
    assert main(["eval", ckpt, "--device", "cpu", "--blackvip-encoder", "none"]) == 2  # another encoder: refused
    err = capsys.readouterr().err
    assert "BlackVIP encoder" in err and "Traceback" not in err


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_the_generated_folder_gets_the_umasks_directory_mode(cache, mask):
    from zipfast.data import synthetic

    before = os.umask(mask)
    try:
        root = synthetic.folder()
    finally:
        os.umask(before)
    assert stat.S_IMODE(root.stat().st_mode) == 0o777 & ~mask


def test_an_unwritable_cache_names_the_cache_and_zipfast_cache(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("")
    bad = tmp_path / "afile" / "cache"
    monkeypatch.setenv("ZIPFAST_CACHE", str(bad))
    assert main(["compare", "--data", "synthetic-images", "--methods", "bar", "--budget", "12", "--no-progress",
                 "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "ZIPFAST_CACHE" in err and "--output-dir" not in err


def test_compare_names_its_own_option_when_blackvips_encoder_cannot_load(cache, tmp_path, capsys):
    empty = tmp_path / "encoder"
    empty.mkdir()
    assert main(["compare", "--data", "synthetic-images", "--methods", "blackvip", "--budget", "10", "--no-progress",
                 "--method-opt", f"blackvip.encoder={empty}", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--method-opt blackvip.encoder=DIR" in err and "blackvip.encoder=none" in err and str(empty) in err
    assert "--blackvip-encoder" not in err


def test_compare_checks_the_data_folder_before_loading_an_encoder(tmp_path, capsys):
    empty = tmp_path / "encoder"
    empty.mkdir()
    missing = tmp_path / "no-such-folder"
    assert main(["compare", "--data", str(missing), "--methods", "blackvip", "--budget", "10", "--no-progress",
                 "--method-opt", f"blackvip.encoder={empty}", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"dataset root '{missing}' does not exist" in err and "encoder" not in err


@pytest.mark.parametrize("argv,message", [
    (["--methods", "zip,zsclip,zip"], "--methods: zip given more than once"),
    (["--seeds", "1,2,1"], "--seeds: repeated seed(s) 1"),
    (["--seeds", ","], "--seeds: no seed given"),
])
def test_compare_refuses_repeated_methods_and_seeds(argv, message, tmp_path, capsys):
    assert main(["compare", "--budget", "20", "--no-progress", "--output-dir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not tmp_path.joinpath("compare.csv").exists()
