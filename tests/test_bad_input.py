"""Bad input fails early with a message that names the problem, and leaves no half-written files."""

import math
import re
import shutil

import pytest
import torch

from zipfast import ZIPTrainer
from zipfast.run.checkpoint import CheckpointError
from zipfast.cli import main
from zipfast.config import ConfigError, TrainConfig
from zipfast.data.imagefolder import DatasetError, FewShotImageFolder
from zipfast.models import ModelLoadError, load_clip
from zipfast.run.trainer import CheckpointMismatchError, NonFiniteLossError, read_checkpoint

TINY = ["--model", "zipfast-tiny", "--pretrained", "none", "--shots", "2", "--batch-size", "4",
        "--budget", "20", "--device", "cpu", "--no-progress"]


def _train_cli(data, out, *extra):
    return main(["train", "--data", str(data), "--output-dir", str(out), *TINY, *extra])


# ------------------------------------------------------------------------------ datasets


def test_missing_dataset_folder(tmp_path, capsys):
    missing = tmp_path / "no_such_dataset"
    assert _train_cli(missing, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "no_such_dataset" in err and "does not exist" in err


def test_empty_dataset_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _train_cli(empty, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "empty" in err and "no class folders" in err


def test_class_with_fewer_images_than_shots(tiny_image_folder, tmp_path, capsys):
    root = shutil.copytree(tiny_image_folder, tmp_path / "data")
    for extra in sorted((root / "forest").glob("*.png"))[1:]:
        extra.unlink()  # forest keeps 1 image; 2 shots are asked for
    with pytest.raises(DatasetError, match=r"class 'forest' has 1 image\(s\): 2 shots and at least one test image need 3"):
        FewShotImageFolder.from_root(root, shots=2, seed=1)
    assert _train_cli(root, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "'forest'" in err and "shots" in err


def test_unreadable_image_file(tiny_image_folder, tmp_path, capsys):
    root = shutil.copytree(tiny_image_folder, tmp_path / "data")
    # Corrupt a test-split image (seed 1 is the default): every one of them is read by evaluation.
    bad = FewShotImageFolder.from_root(root, shots=2, seed=1).test[0][0]
    with open(bad, "wb") as f:
        f.write(b"this is not a PNG \x00\x01\x02" * 8)
    out = tmp_path / "out"
    assert _train_cli(root, out) == 2
    err = capsys.readouterr().err
    assert "cannot read image file" in err and bad in err
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


# ------------------------------------------------------------------------------ models


def test_unknown_model_name():
    with pytest.raises(ModelLoadError, match="unknown model name 'ViT-Q-99'"):
        load_clip("ViT-Q-99", "none")


def test_unknown_model_name_cli(tiny_image_folder, tmp_path, capsys):
    rc = main(["train", "--data", str(tiny_image_folder), "--model", "ViT-Q-99", "--pretrained", "none",
               "--shots", "2", "--output-dir", str(tmp_path / "out"), "--no-progress", "--device", "cpu"])
    assert rc == 2
    assert "ViT-Q-99" in capsys.readouterr().err


def test_pretrained_weights_unavailable_offline(tmp_path, monkeypatch):
    # An empty cache, offline: the weights cannot be fetched; the message says to pass a local file.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError, match="local") as exc:
        load_clip("RN50", "openai")
    assert "RN50" in str(exc.value) and "'openai'" in str(exc.value)


def test_pretrained_path_missing(tmp_path):
    missing = tmp_path / "weights" / "nowhere.pt"
    with pytest.raises(ModelLoadError, match=re.escape(str(missing))):
        load_clip("zipfast-tiny", str(missing))


def test_pretrained_unknown_tag():
    with pytest.raises(ModelLoadError, match="'bogus' is neither a pretrained tag"):
        load_clip("zipfast-tiny", "bogus")


def test_pretrained_local_checkpoint_loads(tmp_path):
    model, _, _ = load_clip("zipfast-tiny", "none")
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded, tokenizer, _ = load_clip("zipfast-tiny", str(path))
    saved = model.state_dict()
    for name in ("token_embedding.weight", "positional_embedding", "text_projection"):
        assert torch.equal(loaded.state_dict()[name], saved[name]), name
    assert torch.equal(loaded.visual.conv1.weight, model.visual.conv1.weight)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert tokenizer(["a photo of a forest"]).shape == (1, 77)


# ------------------------------------------------------------------------------ configuration


def test_budget_smaller_than_one_step():
    with pytest.raises(ConfigError, match="smaller than one step"):
        TrainConfig(budget=9, sp_avg=5).validate()
    TrainConfig(budget=10, sp_avg=5).validate()


def test_budget_smaller_than_one_step_cli(tiny_image_folder, tmp_path, capsys):
    rc = main(["train", "--data", str(tiny_image_folder), "--output-dir", str(tmp_path / "out"),
               "--model", "zipfast-tiny", "--pretrained", "none", "--no-progress",
               "TRAINER.BASIC.MAX_API_CALLS", "9"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "smaller than one step" in err and "MAX_API_CALLS" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides, field", [
    ({"sp_avg": -1}, "sp_avg"),
    ({"spsa_params": (1.0, math.nan, 0.01, 0.4, 0.1)}, r"SPSA_PARAMS\[1\] \(c\)"),
    ({"rank": -2}, "rank"),
])
def test_invalid_hyper_parameters(overrides, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**overrides).validate()


# ------------------------------------------------------------------------------ checkpoints and training


def _planted_cfg(**kw):
    values = dict(model="zipfast-planted", pretrained="none", dataset="planted", budget=40, n_ctx=4,
                  intrinsic_dim=40, rank=2, batch_size=16, device="cpu", backend="auto")
    values.update(kw)
    return TrainConfig(**values)


def _planted_trainer(planted_task, cfg, output_dir=None):
    model, tokenizer, task = planted_task
    return ZIPTrainer(model, task.classnames, cfg, task, tokenizer=tokenizer, output_dir=output_dir,
                      progress=False)


def test_checkpoint_from_another_configuration(planted_task, tmp_path):
    out = tmp_path / "run"
    trainer = _planted_trainer(planted_task, _planted_cfg(budget=20), out)
    trainer.fit()
    ckpt = out / "checkpoint.safetensors"
    assert ckpt.is_file()

    other = _planted_trainer(planted_task, _planted_cfg(budget=20, rank=4))
    with pytest.raises(CheckpointMismatchError, match=r"another configuration.*\brank=2 \(checkpoint\) vs 4"):
        other.load_checkpoint(ckpt)
    assert other.step == 0 and other.queries == 0  # nothing was half-loaded

    same = _planted_trainer(planted_task, _planted_cfg(budget=20))
    same.load_checkpoint(ckpt)
    assert (same.step, same.queries) == (2, 20)


def test_not_a_checkpoint(planted_task, tmp_path):
    trainer = _planted_trainer(planted_task, _planted_cfg())
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a zipfast checkpoint"):
        trainer.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        trainer.load_checkpoint(tmp_path / "missing.pt")


def test_not_a_checkpoint_cli(tmp_path, capsys):
    path = tmp_path / "weights.pt"
    torch.save([1, 2, 3], path)
    assert main(["eval", str(path)]) == 2
    assert "not a zipfast checkpoint" in capsys.readouterr().err


def test_non_finite_loss(planted_task, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = _planted_trainer(planted_task, _planted_cfg(checkpoint_every=1), out)
    real = trainer.engine.losses
    calls = []

    def losses(ctx, feats, labels):
        calls.append(len(ctx))
        loss, acc = real(ctx, feats, labels)
        if len(calls) >= 3:
            loss = torch.full_like(loss, math.nan)
        return loss, acc

    monkeypatch.setattr(trainer.engine, "losses", losses)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3") as exc:
        trainer.fit()
    assert len(calls) == 3
    assert str(out / "checkpoint.safetensors") in str(exc.value)

    sd = read_checkpoint(out / "checkpoint.safetensors")
    assert sd["step"] == 2 and sd["queries"] == 20
    assert torch.isfinite(sd["point"]).all()
    assert not (out / "report.json").exists()
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []

    # The checkpoint resumes cleanly: the log keeps steps 1 and 2 only.
    resumed = _planted_trainer(planted_task, _planted_cfg(checkpoint_every=1), out)
    resumed.load_checkpoint(out / "checkpoint.safetensors")
    assert (resumed.step, resumed.queries) == (2, 20)
    assert torch.equal(resumed.w.cpu(), sd["point"])


def test_a_checkpoint_with_a_non_finite_point_is_refused(tmp_path, capsys):
    from zipfast.run.checkpoint import read_checkpoint, write_checkpoint

    out = tmp_path / "run"
    assert main(["train", "--data", "planted", "--budget", "20", "--device", "cpu", "--no-progress",
                 "--output-dir", str(out)]) == 0
    ck = read_checkpoint(out / "checkpoint.safetensors")
    bad = dict(ck.state, point=torch.full_like(ck.state["point"], float("nan")))
    write_checkpoint(out / "checkpoint.safetensors", bad, ck.fingerprint)  # a valid file, a NaN prompt
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoint.safetensors"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "not a finite float vector" in err and "Traceback" not in err


def test_an_image_method_checkpoint_evaluated_on_features_only_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZIPFAST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bar"
    assert main(["train", "--data", "synthetic-images", "--method", "bar", "--method-opt", "q=1", "--budget", "4",
                 "--shots", "1", "--device", "cpu", "--no-progress", "--output-dir", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoint.safetensors"), "--data", "planted", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "method bar (--method / TrainConfig.method) acts on the image tower and needs images" in err
    assert "Traceback" not in err


def test_pretrained_weights_on_the_planted_tasks_own_model_are_refused_not_ignored(tmp_path, capsys):
    assert main(["train", "--data", "planted", "--pretrained", "/nonexistent.pt", "--budget", "20", "--device", "cpu",
                 "--no-progress", "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "'/nonexistent.pt'" in err and "zipfast-planted" in err and "Traceback" not in err
