"""A new user's first hour (issue 16): portable checkpoints (data and weights by content), `--resume
CKPT` alone, seeded random models, --threads, the default run folder, quiet informational lines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures.cli_args import COMMON
from zipfast.cli import main

# a ZIP run on a plain image folder (the generated one, copied), small enough for seconds
TINY = ["--model", "zipfast-tiny224", "--pretrained", "none", "--shots", "2", "--batch-size", "4",
        "--test-per-class", "2", *COMMON, "TRAINER.ZIP.N_CTX", "4", "TRAINER.ZIP.INTRINSIC_DIM", "40",
        "TRAINER.ZIP.RANK", "2"]


@pytest.fixture
def folder(tmp_path):
    """A copy of the generated 4-class image folder at tmp_path/data1."""
    from zipfast.data import synthetic

    return Path(shutil.copytree(synthetic.folder(), tmp_path / "data1"))


def train(*argv) -> int:
    i = next((j for j, a in enumerate(argv) if a.startswith("TRAINER.")), len(argv))
    return main(["train", *TINY[:-6], *argv[:i], *TINY[-6:], *argv[i:]])  # the test's flags win


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_a_moved_dataset_evaluates_and_resumes(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--data", str(folder), "--budget", "20", "--output-dir", str(run)) == 0
    acc = last_json(capsys.readouterr().out)["test_acc"]
    moved = folder.rename(tmp_path / "elsewhere")
    assert main(["eval", str(run / "checkpoint.safetensors"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data1" in err and "is not there any more" in err and "--data" in err
    assert main(["eval", str(run / "checkpoint.safetensors"), "--data", str(moved), "--no-progress"]) == 0
    assert last_json(capsys.readouterr().out)["test_acc"] == pytest.approx(acc)
    # resume at the new path: --resume and --data only, continuing to 40 queries
    assert main(["train", "--resume", str(run / "checkpoint.safetensors"), "--data", str(moved),
                 "--budget", "40", "--no-progress"]) == 0
    assert records(run)[-1]["queries"] == 40


def test_resume_refuses_other_data_at_the_path_naming_what_differs(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--data", str(folder), "--budget", "20", "--output-dir", str(run)) == 0
    capsys.readouterr()
    # the same images under other names: another few-shot split
    cls = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    for img in cls.iterdir():
        img.rename(img.with_name(f"renamed_{img.name}"))
    assert main(["train", "--resume", str(run), "--budget", "40", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "few-shot split differs" in err and "checkpoint" in err
    # other class names: named
    cls.rename(folder / "another_class")
    assert main(["train", "--resume", str(run), "--budget", "40", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "class names differ" in err and "another class" in err


def test_resume_from_the_checkpoint_alone_continues_bit_for_bit(folder, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train("--data", str(folder), "--budget", "40", "--output-dir", str(straight)) == 0
    assert train("--data", str(folder), "--budget", "20", "--output-dir", str(split)) == 0
    # everything else from the checkpoint: model, weights, data, shots, the ZIP space, precision
    assert main(["train", "--resume", str(split / "checkpoint.safetensors"), "--budget", "40", "--no-progress"]) == 0
    capsys.readouterr()
    a, b = records(straight), records(split)
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and len(a) == 4
    from safetensors.torch import load_file

    pa, pb = (load_file(p / "checkpoint.safetensors") for p in (straight, split))
    assert torch.equal(pa["point"], pb["point"])


def test_resume_with_a_flag_that_changes_the_trajectory_is_refused_by_name(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--data", str(folder), "--budget", "20", "--output-dir", str(run)) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--budget", "40", "--seed", "7", "--no-progress"]) == 2
    assert "seed=1 (checkpoint) vs 7 (this run)" in capsys.readouterr().err


def _fingerprint_in_subprocess(name: str) -> str:
    code = ("from zipfast.models import load_clip; from zipfast.run.identity import weights_fingerprint; "
            f"print(weights_fingerprint(load_clip({name!r}, 'none')[0]))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_random_models_are_the_same_in_every_process():
    from zipfast.models import load_clip
    from zipfast.run.identity import weights_fingerprint

    theirs = _fingerprint_in_subprocess("zipfast-tiny")
    torch.manual_seed(1234)  # the global generator's state does not matter
    state = torch.get_rng_state()
    mine = weights_fingerprint(load_clip("zipfast-tiny", "none")[0])
    assert theirs == mine and len(mine) == 64
    assert torch.equal(torch.get_rng_state(), state)  # nor does load_clip move it
    assert weights_fingerprint(load_clip("zipfast-tiny", "none", seed=1)[0]) != mine


def test_a_checkpoint_evaluated_on_other_weights_is_refused_naming_them(folder, tmp_path, capsys):
    from zipfast.models import load_clip

    run = tmp_path / "run"
    assert train("--data", str(folder), "--budget", "20", "--output-dir", str(run)) == 0
    other = tmp_path / "other.pt"
    torch.save(load_clip("zipfast-tiny224", "none", seed=99)[0].state_dict(), other)
    capsys.readouterr()
    assert main(["eval", str(run), "--pretrained", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "frozen model's weights" in err and "zipfast-tiny224" in err and len(err.splitlines()) == 1
    # the same weights from a file at any path are accepted: compared by content, not by the path
    same = tmp_path / "same.pt"
    torch.save(load_clip("zipfast-tiny224", "none", seed=1)[0].state_dict(), same)
    assert main(["eval", str(run), "--pretrained", str(same), "--no-progress"]) == 0


# the planted task's text tower ends in a skinny GEMM that MKL splits by thread unless strict; BAR's
# views go through F.interpolate, whose rounding follows the thread split
@pytest.mark.parametrize("method,precision,data", [("zip", "fp32", "planted"), ("zip", "bf16", "planted"),
                                                   ("bar", "fp32", "images")])
def test_threads_are_recorded_and_runs_do_not_depend_on_them(method, precision, data, folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    before = torch.get_num_threads()
    for threads, out in (("1", one), ("2", two)):
        flags = ["--method", method, "--precision", precision, "--threads", threads, "--output-dir", str(out)]
        if data == "planted":
            assert main(["train", "--data", "planted", "--budget", "60", "--device", "cpu", "--no-progress",
                         *flags]) == 0
        else:
            assert train("--data", str(folder), "--budget", "24", *flags) == 0
    assert torch.get_num_threads() == before  # main() leaves the process's threads as it found them
    reports = [json.loads((p / "report.json").read_text()) for p in (one, two)]
    assert [r["threads"] for r in reports] == [1, 2]
    assert [r["loss"] for r in records(one)] == [r["loss"] for r in records(two)] and records(one)
    assert reports[0]["test_acc"] == reports[1]["test_acc"]


def test_bad_threads_are_named(capsys):
    assert main(["train", "--data", "planted", "--threads", "0"]) == 2
    assert "--threads 0" in capsys.readouterr().err


def test_default_threads_leave_a_core_free(monkeypatch):
    from zipfast import env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(env, "cpu_cores", lambda: 8)
    assert env.default_threads() == 7
    monkeypatch.setattr(env, "cpu_cores", lambda: 1)
    assert env.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert env.default_threads() == 3


def test_train_without_output_dir_writes_a_run_folder_and_says_where(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "planted", "--budget", "10", *COMMON, "TRAINER.ZIP.N_CTX", "4"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("zip-planted-seed1-")
    assert {"log.jsonl", "checkpoint.safetensors", "report.json"} <= {p.name for p in run.iterdir()}
    assert f"runs/{run.name}/" in capsys.readouterr().err


def test_informational_lines_only_with_verbose(tmp_path, capsys):
    import logging

    args = ["train", "--data", "planted", "--budget", "10", "--device", "cpu", "--no-progress"]
    log = logging.getLogger("zipfast.tests")
    assert main([*args, "--output-dir", str(tmp_path / "a"), "TRAINER.ZIP.N_CTX", "4"]) == 0
    log.info("an informational line")
    log.warning("a warning")
    quiet = capsys.readouterr().err
    assert main(["-v", *args, "--output-dir", str(tmp_path / "b"), "TRAINER.ZIP.N_CTX", "4"]) == 0
    log.info("an informational line")
    loud = capsys.readouterr().err
    assert "zipfast: warning: a warning" in quiet and "an informational line" not in quiet
    assert "zipfast: an informational line" in loud


def test_a_flag_after_the_key_value_pairs_is_named(tmp_path, capsys):
    assert main(["train", "--data", "planted", "TRAINER.ZIP.N_CTX", "4", "--model", "zipfast-tiny"]) == 2
    err = capsys.readouterr().err
    assert "--model comes after the KEY VALUE pairs" in err and not (tmp_path / "runs").exists()


_SKINNY_GEMM = """
import sys, torch
if sys.argv[1] == "zipfast":
    import zipfast  # noqa: F401  (sets MKL's strict reproducible mode before the first GEMM)
g = torch.Generator().manual_seed(0)
a, b = torch.randn(10, 256, generator=g), torch.randn(256, 256, generator=g)
out = []
for t in (1, 2):
    torch.set_num_threads(t)
    out.append(a @ b)
print(torch.equal(*out))
"""


def _equal_across_threads(mode: str) -> bool:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    run = subprocess.run([sys.executable, "-c", _SKINNY_GEMM, mode], capture_output=True, text=True, env=env,
                         check=True)
    return run.stdout.strip() == "True"


def test_importing_zipfast_makes_gemms_independent_of_the_thread_count():
    if _equal_across_threads("plain"):
        pytest.skip("this machine's BLAS gives the same bits for 1 and 2 threads anyway")
    assert _equal_across_threads("zipfast")


def test_the_cpu_augmentation_does_not_depend_on_the_thread_count():
    from zipfast.data.gpu_augment import crop_resize_flip, crop_resize_flip_reference

    class Images:  # the DecodedImages interface crop_resize_flip reads
        def __init__(self, imgs):
            self.imgs, self.data = imgs, imgs[0]

        def image(self, i):
            return self.imgs[i]

    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (3, 61, 47), generator=g, dtype=torch.uint8) for _ in range(4)]
    boxes = (torch.tensor([0, 3, 5, 1]), torch.tensor([2, 0, 4, 7]), torch.tensor([50, 41, 37, 60]),
             torch.tensor([40, 33, 29, 39]), torch.tensor([False, True, False, True]))
    before, out, ref = torch.get_num_threads(), [], []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            out.append(crop_resize_flip(Images(imgs), torch.arange(4), boxes, 224, (0.5,) * 3, (0.25,) * 3))
            ref.append(crop_resize_flip_reference(imgs[1], (3, 0, 41, 33), True, 224, (0.5,) * 3, (0.25,) * 3))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out[0], out[1]) and not out[0].isnan().any()
    assert torch.equal(out[0][1], ref[0])  # the one-thread result of the per-view definition
    # (F.interpolate alone, on 2 threads, may round otherwise: why the augmentation runs on one)
    torch.testing.assert_close(ref[1], ref[0], rtol=1e-5, atol=1e-6)


def test_a_refused_run_leaves_the_output_directory_as_it_found_it(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "planted", "--method", "bar"]) == 2  # the default run folder
    assert not (tmp_path / "runs").exists()
    assert main(["train", "--data", "planted", "--method", "bar", "--output-dir", "a/b/c"]) == 2
    assert not (tmp_path / "a").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    assert main(["train", "--data", "planted", "--method", "bar", "--output-dir", "mine"]) == 2
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    # refused after the task loaded: a corrupt image found by the check before the first query
    for img in (folder / "class_0").iterdir():
        img.write_bytes(b"not an image")
    assert train("--data", str(folder), "--method", "bar", "--budget", "20", "--output-dir", "late") == 2
    assert "cannot read image" in capsys.readouterr().err and not (tmp_path / "late").exists()
