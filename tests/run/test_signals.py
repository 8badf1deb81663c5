"""zipfast/signals.py: SIGINT/SIGTERM/SIGHUP finish the step, save, print the resume command, exit 130/143/129."""

import json
import os
import shlex
import signal

import pytest

import zipfast.cli
import zipfast.commands
import zipfast.evaluate.text
import zipfast.run.trainer
from zipfast.run.checkpoint import CHECKPOINT_NAME, read_checkpoint
from zipfast.cli import main, resume_command
from zipfast.run.signals import StopSignals

ARGS = ["--data", "planted", "--device", "cpu", "--no-progress", "--batch-size", "16", "--budget", "16",
        "--checkpoint-every", "100"]
OPTS = ["TRAINER.ZIP.N_CTX", "4", "TRAINER.ZIP.INTRINSIC_DIM", "40", "TRAINER.ZIP.RANK", "2", "TRAINER.BASIC.SP_AVG", "1"]


def _strip(out):
    return [{k: v for k, v in json.loads(x).items() if k != "time_s"} for x in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 8-step run: (log without times, final w)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *ARGS, "--output-dir", str(out), *OPTS]) == 0
    return _strip(out), read_checkpoint(out / CHECKPOINT_NAME).state["point"]


def _signal_at_step(monkeypatch, signum, at):
    real = zipfast.evaluate.text.batch_indices

    def indices(n, batch_size, step, seed):
        if step == at:
            os.kill(os.getpid(), signum)  # arrives while step `at` runs
        return real(n, batch_size, step, seed)

    monkeypatch.setattr(zipfast.evaluate.text, "batch_indices", indices)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_stop_signal_saves_prints_resume_and_continues_exactly(reference, tmp_path, capsys, monkeypatch,
                                                                signum, code):
    out = tmp_path / "run"
    argv = ["train", *ARGS, "--output-dir", str(out), *OPTS]
    _signal_at_step(monkeypatch, signum, 3)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    ckpt = out / CHECKPOINT_NAME
    name = signal.Signals(signum).name
    assert f"stopped by {name} after step 3 (6 queries); checkpoint saved to {ckpt}" in err[-1]
    assert read_checkpoint(ckpt).state["step"] == 3  # the step in flight was finished, then saved
    assert [r["step"] for r in _strip(out)] == [1, 2, 3]
    assert not (out / "report.json").exists()
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # handlers restored

    monkeypatch.undo()
    cmd = err[-1].split("resume with: ", 1)[1]
    assert cmd == resume_command(argv, ckpt)
    words = shlex.split(cmd)
    assert words[:4] == ["zipfast", "train", "--resume", str(ckpt)]
    assert main(words[1:]) == 0
    log, w = reference
    assert _strip(out) == log
    assert read_checkpoint(ckpt).state["point"].equal(w)


def test_sigterm_outside_the_step_loop_still_says_where_the_checkpoint_is(reference, tmp_path, capsys,
                                                                          monkeypatch):
    """No step in flight (model load, final evaluation): SIGHUP/SIGTERM stop at once with one line."""
    out = tmp_path / "run"
    argv = ["train", *ARGS, "--output-dir", str(out), *OPTS]
    real_build = zipfast.commands.load
    monkeypatch.setattr(zipfast.commands, "load", lambda *a: os.kill(os.getpid(), signal.SIGHUP) or real_build(*a))
    assert main(argv) == 129
    assert capsys.readouterr().err.strip().splitlines()[-1] == "zipfast train: stopped by SIGHUP"
    monkeypatch.undo()

    real_eval = zipfast.run.trainer.ZIPTrainer.evaluate
    monkeypatch.setattr(zipfast.run.trainer.ZIPTrainer, "evaluate",
                        lambda self, *a: os.kill(os.getpid(), signal.SIGTERM) or real_eval(self, *a))
    assert main(argv) == 143  # the SIGHUP run left no run files: a fresh start is allowed
    last = capsys.readouterr().err.strip().splitlines()[-1]
    ckpt = out / CHECKPOINT_NAME
    assert last.startswith(f"zipfast train: stopped by SIGTERM; the last checkpoint is {ckpt}; resume with: ")
    assert read_checkpoint(ckpt).state["step"] == 8 and not (out / "report.json").exists()
    monkeypatch.undo()
    assert main(shlex.split(last.split("resume with: ", 1)[1])[1:]) == 0  # evaluates, no step more
    log, w = reference
    assert _strip(out) == log and (out / "report.json").exists()


def test_second_sigint_aborts_at_once():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested == signal.SIGINT  # the first only asks to stop
            os.kill(os.getpid(), signal.SIGINT)
            pytest.fail("the second SIGINT did not abort")
    assert signal.getsignal(signal.SIGINT) is before


def test_resume_command_drops_resume_and_overwrite():
    argv = ["train", "--overwrite", "--resume", "old.safetensors", "--data", "d", "KEY", "1"]
    assert resume_command(argv, "r/checkpoint.safetensors") == \
        "zipfast train --resume r/checkpoint.safetensors --data d KEY 1"
