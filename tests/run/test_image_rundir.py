"""The image-side trainers share ZIP's run loop and CLI: the locked run directory, the
fresh/resume/overwrite rules, the log cut back to a resumed checkpoint, clean stops on signals,
the exact CLI resume, --eval-every and `zipfast eval`."""

import json
import os
import shlex
import signal

import pytest
import torch

import zipfast.evaluate.image
from methods.test_image_methods import folder, make, models, records  # noqa: F401 (fixtures)
from zipfast.run.checkpoint import CHECKPOINT_NAME, read_checkpoint
from zipfast.cli import main
from zipfast.run.rundir import RunDir, RunDirBusyError
from zipfast.errors import OutputDirError
from zipfast.run.signals import RunInterrupted


def _strip(recs):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in recs]


def test_a_locked_run_directory_is_refused(models, folder, tmp_path):
    with RunDir(tmp_path / "run"):  # another live run holds it
        tr = make("bar", models, folder, budget=6, output_dir=tmp_path / "run")
        with pytest.raises(RunDirBusyError, match=f"pid {os.getpid()}"):
            tr.fit()
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_a_directory_holding_a_run_needs_resume_or_overwrite(models, folder, tmp_path):
    make("bar", models, folder, budget=6, output_dir=tmp_path).fit()
    with pytest.raises(OutputDirError, match="already holds a run"):
        make("bar", models, folder, budget=6, output_dir=tmp_path).fit()
    tr = make("bar", models, folder, budget=12, output_dir=RunDir(tmp_path, "overwrite"))
    tr.fit()
    assert [r["queries"] for r in records(tmp_path)] == [6, 12]  # the old log is gone, not appended to


@pytest.mark.parametrize("method", ["bar", "blackvip"])
def test_resume_cuts_the_log_back_to_the_checkpoint(method, models, folder, tmp_path):
    """A crash during step 4: the checkpoint is of step 2 (checkpoint_every = 2), the log reaches step 3."""
    budget = {"bar": 24, "blackvip": 16}[method]
    full = make(method, models, folder, budget, output_dir=tmp_path / "full")
    full.fit()
    run = tmp_path / "crashed"
    part = make(method, models, folder, budget, output_dir=run)
    part.step_hooks.append(lambda tr, rec: tr.step == 4 and (_ for _ in ()).throw(SystemExit("killed")))
    with pytest.raises(SystemExit):
        part.fit()
    assert [r["step"] for r in records(run)] == [1, 2, 3]
    assert read_checkpoint(run / CHECKPOINT_NAME).state["step"] == 2
    resumed = make(method, models, folder, budget, output_dir=run)
    resumed.load_checkpoint(run / CHECKPOINT_NAME)
    resumed.fit()
    assert _strip(records(run)) == _strip(records(tmp_path / "full"))  # step 3 logged once, not twice
    assert torch.equal(resumed.optimizer.point, full.optimizer.point)


def test_a_stop_signal_finishes_the_step_and_saves(models, folder, tmp_path, monkeypatch):
    tr = make("bar", models, folder, budget=24, output_dir=tmp_path)
    real = tr.evaluator.losses

    def evaluate(space, cand, batch):
        if tr.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while step 2 runs
        return real(space, cand, batch)

    monkeypatch.setattr(tr.evaluator, "losses", evaluate)
    with pytest.raises(RunInterrupted) as e:
        tr.fit()
    assert (e.value.step, e.value.queries, e.value.exit_code) == (2, 12, 143)
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME).state["queries"] == 12
    assert [r["step"] for r in records(tmp_path)] == [1, 2] and not (tmp_path / "report.json").exists()


CLI = ["--model", "zipfast-tiny", "--pretrained", "none", "--batch-size", "8", "--shots", "4", "--no-progress",
       "--precision", "fp32", "--method", "bar", "--method-opt", "frame_size=32", "--checkpoint-every", "100"]


def test_cli_stop_and_resume_of_an_image_method_is_exact(folder, tmp_path, capsys, monkeypatch):
    data = ["train", "--data", str(folder.root), "--budget", "24", *CLI]
    ref = tmp_path / "ref"
    assert main([*data, "--output-dir", str(ref)]) == 0
    capsys.readouterr()
    out = tmp_path / "run"
    argv = [*data, "--output-dir", str(out)]
    real = zipfast.evaluate.image.ImageEvaluator.losses

    def evaluate(self, space, cand, batch):  # BAR: round t reads minibatch t (its step)
        if batch - 1 == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, space, cand, batch)

    monkeypatch.setattr(zipfast.evaluate.image.ImageEvaluator, "losses", evaluate)
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"after step 3 (18 queries); checkpoint saved to {out / CHECKPOINT_NAME}" in err
    monkeypatch.undo()
    assert main(argv) == 2  # a fresh run into it is refused …
    assert "already holds a run" in capsys.readouterr().err
    words = shlex.split(err.split("resume with: ", 1)[1])
    assert main(words[1:]) == 0  # … the printed resume command continues it
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["method"] == "bar" and last["queries"] == 24
    assert _strip(records(out)) == _strip(records(ref))
    a, b = (read_checkpoint(d / CHECKPOINT_NAME).state["optimizer"] for d in (ref, out))
    assert a["step"] == b["step"] == 4 and torch.equal(a["w"], b["w"])  # BAR's frame W


def test_cli_resume_and_overwrite_contradict(folder, tmp_path, capsys):
    assert main(["train", "--data", str(folder.root), "--budget", "6", *CLI, "--resume", str(tmp_path),
                 "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_cli_eval_every_records_a_test_curve_for_an_image_method(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(folder.root), "--budget", "14", *CLI, "--output-dir", str(out),
                 "--eval-every", "6"]) == 0
    curve = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    assert [p["queries"] for p in curve] == [0, 6, 12, 14]  # BAR steps of 1 + q = 6 queries, then 2
    assert curve[-1]["test_acc"] == pytest.approx(report["test_acc"], abs=1e-3)


@pytest.mark.parametrize("method,opts", [("bar", ["--method-opt", "frame_size=32"]),
                                         ("bptvlm", ["--method-opt", "pop_size=4", "--method-opt", "intrinsic_dim_l=20",
                                                     "--method-opt", "intrinsic_dim_v=20"])])
def test_cli_eval_of_an_image_checkpoint_gives_the_runs_test_accuracy(method, opts, folder, tmp_path, capsys):
    out = tmp_path / "run"
    cli = [a for a in CLI if a not in ("--method-opt", "frame_size=32")]
    cli[cli.index("bar")] = method
    assert main(["train", "--data", str(folder.root), "--budget", "12", *cli, *opts, "--output-dir", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / CHECKPOINT_NAME), "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    assert got["queries"] == 12 and got["step"] == report["steps"]
    assert got["test_acc"] == pytest.approx(report["test_acc"], abs=1e-3)
    # the overrides the command offers: a cap on test images, another dataset with other classes
    assert main(["eval", str(out / CHECKPOINT_NAME), "--test-per-class", "1", "--no-progress"]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert one["queries"] == 12 and 0 <= one["test_acc"] <= 100
    from conftest import write_tiny_image_folder

    other = write_tiny_image_folder(tmp_path / "other", classes=("a", "b", "c", "d"), per_class=6)
    assert main(["eval", str(out / CHECKPOINT_NAME), "--data", str(other), "--no-progress"]) == 0
    acc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["test_acc"]
    assert any(abs(acc - 100 * k / 8) < 1e-3 for k in range(9))  # 4 classes × (6 − 4 shots) test images


def test_cli_bad_image_method_settings_exit_2(folder, tmp_path, capsys):
    assert main(["train", "--data", str(folder.root), "--budget", "6", *CLI[:-4], "--method-opt", "frame_size=30",
                 "--checkpoint-every", "100"]) == 2
    assert "set it to 32" in capsys.readouterr().err
    assert main(["train", "--data", str(folder.root), "--budget", "6", *CLI, "--backend", "torch"]) == 2
    assert "backend 'torch' does not apply to method 'bar'" in capsys.readouterr().err


def test_eval_every_curve_restarts_with_overwrite_and_is_cut_back_on_resume(folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    base = ["train", "--data", str(folder.root), *CLI, "--output-dir", str(out), "--eval-every", "6"]
    assert main([*base, "--budget", "14"]) == 0
    assert main([*base, "--budget", "12", "--overwrite"]) == 0  # replaced, not appended to
    assert [json.loads(x)["queries"] for x in (out / "curve.jsonl").read_text().splitlines()] == [0, 6, 12]
    assert main([*base[:-4], "--output-dir", str(tmp_path / "ref"), "--budget", "24", "--eval-every", "6"]) == 0
    # a crash during step 4 of a fresh run: the curve holds steps 1..3, the checkpoint step 2
    real = zipfast.evaluate.image.ImageEvaluator.losses

    def evaluate(self, space, cand, batch):  # BAR: round t reads minibatch t (its step)
        if batch - 1 == 3:
            raise SystemExit("killed")
        return real(self, space, cand, batch)

    monkeypatch.setattr(zipfast.evaluate.image.ImageEvaluator, "losses", evaluate)
    ckpt_every = base.index("--checkpoint-every") + 1
    crash = [*base, "--budget", "24", "--overwrite"]
    crash[ckpt_every] = "2"
    with pytest.raises(SystemExit):
        main(crash)
    monkeypatch.undo()
    assert [json.loads(x)["step"] for x in (out / "curve.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
    resume = [a for a in crash if a != "--overwrite"] + ["--resume", str(out / CHECKPOINT_NAME)]
    assert main(resume) == 0
    got = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "ref" / "curve.jsonl").read_text().splitlines()]
    assert [(p["step"], p["queries"]) for p in got] == [(p["step"], p["queries"]) for p in ref]
    assert [p["test_acc"] for p in got] == [p["test_acc"] for p in ref]


def test_cli_config_changes_of_an_image_method_are_in_its_report(folder, tmp_path):
    out = tmp_path / "run"
    cli = [a for a in CLI if a not in ("--method-opt", "frame_size=32")]  # the frame follows the model
    assert main(["train", "--data", str(folder.root), "--budget", "6", *cli, "--output-dir", str(out),
                 "INPUT.TRANSFORMS", "('random_resized_crop', 'normalize')"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["adjustments"] == [  # no image_size note: BAR's is derived from the frame
        "augment tensor -> pil (INPUT.TRANSFORMS ['random_resized_crop', 'normalize'] runs on the PIL path only)",
        "BAR: frame size 224 -> 32 (the model's input size)"]
    assert report["method_config"]["frame_size"] == 32 and report["config"]["image_size"] == 26


def test_eval_every_records_the_final_point_whatever_the_step_size(folder, tmp_path, capsys):
    """BPT-VLM: 3 minibatches (queries) per candidate, population 4: the run stops at 12 of 14 queries."""
    out = tmp_path / "run"
    cli = [a for a in CLI if a not in ("--method-opt", "frame_size=32")]
    cli[cli.index("bar")], cli[cli.index("--batch-size") + 1] = "bptvlm", "4"
    assert main(["train", "--data", str(folder.root), "--budget", "14", *cli, "--method-opt", "pop_size=4",
                 "--method-opt", "intrinsic_dim_l=20", "--method-opt", "intrinsic_dim_v=20",
                 "--output-dir", str(out), "--eval-every", "13"]) == 0
    curve = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    assert report["queries"] == 12 and [p["queries"] for p in curve] == [0, 12]
    assert curve[-1]["test_acc"] == pytest.approx(report["test_acc"], abs=1e-3)


def test_eval_every_curve_keeps_its_points_when_a_partial_generation_is_resumed(folder, tmp_path, capsys):
    """BPT-VLM, population 4 × 3 queries: budget 20 ends with a partial generation (q 12 → 18, step 1
    for both); a resume with budget 30 cuts the curve by queries, not by step."""
    out = tmp_path / "run"
    cli = [a for a in CLI if a not in ("--method-opt", "frame_size=32")]
    cli[cli.index("bar")], cli[cli.index("--batch-size") + 1] = "bptvlm", "4"
    argv = ["train", "--data", str(folder.root), *cli, "--method-opt", "pop_size=4", "--method-opt",
            "intrinsic_dim_l=20", "--method-opt", "intrinsic_dim_v=20", "--output-dir", str(out), "--eval-every", "6"]
    assert main([*argv, "--budget", "20"]) == 0
    curve = lambda: [(p["queries"], p["step"]) for p in  # noqa: E731
                     map(json.loads, (out / "curve.jsonl").read_text().splitlines())]
    assert curve() == [(0, 0), (12, 1), (18, 1)]
    assert main([*argv, "--budget", "30", "--resume", str(out / CHECKPOINT_NAME)]) == 0
    # the resumed run completes generation 2 (its 2 missing candidates: q 24), then a partial generation 3
    assert curve() == [(0, 0), (12, 1), (18, 1), (24, 2), (30, 2)]


def test_a_resume_with_nothing_left_keeps_the_partial_generations_record(folder, tmp_path, capsys):
    out = tmp_path / "run"
    cli = [a for a in CLI if a not in ("--method-opt", "frame_size=32")]
    cli[cli.index("bar")], cli[cli.index("--batch-size") + 1] = "bptvlm", "4"
    argv = ["train", "--data", str(folder.root), *cli, "--method-opt", "pop_size=4", "--method-opt",
            "intrinsic_dim_l=20", "--method-opt", "intrinsic_dim_v=20", "--output-dir", str(out), "--budget", "20"]
    assert main(argv) == 0
    before = (out / "log.jsonl").read_text()
    assert json.loads(before.splitlines()[-1])["partial"] is True
    assert main([*argv, "--resume", str(out / CHECKPOINT_NAME)]) == 0  # the same budget: nothing to run
    assert records(out) == [json.loads(x) for x in before.splitlines()]
