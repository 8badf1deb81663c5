"""The crash drill: a real `zipfast train` process is killed (SIGKILL), stopped (SIGTERM, SIGINT)
and resumed, and ends bit-identical (final w and log) to an uninterrupted run."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from zipfast.run.checkpoint import CHECKPOINT_NAME, read_checkpoint
from zipfast.cli import main

REPO = Path(__file__).resolve().parents[2]
BUDGET = 80  # 40 steps of 2 queries: 19 steps of slack after the last signal
ARGS = ["--data", "planted", "--device", "cpu", "--no-progress", "--batch-size", "16", "--budget", str(BUDGET),
        "--checkpoint-every", "4"]
OPTS = ["TRAINER.ZIP.N_CTX", "4", "TRAINER.ZIP.INTRINSIC_DIM", "40", "TRAINER.ZIP.RANK", "2", "TRAINER.BASIC.SP_AVG", "1"]


def _records(out):
    try:
        lines = (out / "log.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(x) for x in lines if x.endswith("}")]


def _strip(recs):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in recs]


def _spawn(argv):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "zipfast.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _signal_after(proc, out, step, signum):
    """Send signum once the log shows `step`; returns (returncode, stderr)."""
    deadline = time.monotonic() + 240
    while not any(r["step"] >= step for r in _records(out)):
        assert proc.poll() is None, f"finished before step {step}: {proc.communicate()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


def test_crash_drill_kill_stop_resume_is_bit_identical(tmp_path):
    ref = tmp_path / "ref"
    assert main(["train", *ARGS, "--output-dir", str(ref), *OPTS]) == 0
    ref_log, ref_w = _strip(_records(ref)), read_checkpoint(ref / CHECKPOINT_NAME).state["point"]
    assert len(ref_log) == BUDGET // 2

    out = tmp_path / "run"
    ckpt = out / CHECKPOINT_NAME
    argv = ["train", *ARGS, "--output-dir", str(out), *OPTS]
    resume = ["train", "--resume", str(ckpt), *ARGS, "--output-dir", str(out), *OPTS]
    # the first kill comes after the step-4 checkpoint: before it there is nothing to resume
    plan = [(5, signal.SIGKILL), (10, signal.SIGTERM), (15, signal.SIGKILL), (21, signal.SIGINT)]
    for i, (step, signum) in enumerate(plan):
        rc, err = _signal_after(_spawn(argv if i == 0 else resume), out, step, signum)
        if signum == signal.SIGKILL:
            assert rc == -signal.SIGKILL
            continue
        assert rc == 128 + signum, err
        last = err.strip().splitlines()[-1]
        stopped = read_checkpoint(ckpt).state["step"]
        assert f"stopped by {signal.Signals(signum).name} after step {stopped}" in last
        assert stopped >= step and _records(out)[-1]["step"] == stopped  # nothing lost, nothing beyond
        assert shlex.split(last.split("resume with: ", 1)[1])[:4] == ["zipfast", "train", "--resume", str(ckpt)]
    proc = _spawn(resume)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert _strip(_records(out)) == ref_log
    assert read_checkpoint(ckpt).state["point"].equal(ref_w)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
