"""zipfast/rundir.py: one run per directory, refused reuse, temp cleanup, torn logs, bad and full disks."""

import json
import os
import subprocess
import sys
import uuid

import pytest

import zipfast.cli
import zipfast.commands
from zipfast.run.checkpoint import CHECKPOINT_NAME, read_checkpoint
from zipfast.cli import main
from zipfast.errors import OutputDirError, UserError
from zipfast.run.rundir import RunDir, RunDirBusyError, truncate_log

PLANTED = ["train", "--data", "planted", "--device", "cpu", "--no-progress", "--batch-size", "16",
           "TRAINER.ZIP.N_CTX", "4", "TRAINER.ZIP.INTRINSIC_DIM", "40", "TRAINER.ZIP.RANK", "2",
           "TRAINER.BASIC.SP_AVG", "1"]


def _train(out, budget, *extra):
    i = PLANTED.index("TRAINER.ZIP.N_CTX")
    return main([*PLANTED[:i], "--output-dir", str(out), "--budget", str(budget), *extra, *PLANTED[i:]])


def _log(out):
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail loudly if the command gets as far as loading a model."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the output directory was checked")
    monkeypatch.setattr(zipfast.commands, "load", refuse)


# ------------------------------------------------------------------------------ ownership


def test_fresh_run_into_a_used_directory_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 6) == 0
    before = (out / "log.jsonl").read_text()
    assert _train(out, 6) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert (out / "log.jsonl").read_text() == before  # nothing appended, nothing overwritten

    assert _train(out, 10, "--resume", str(out / CHECKPOINT_NAME)) == 0
    assert [r["step"] for r in _log(out)] == [1, 2, 3, 4, 5]
    assert _train(out, 4, "--overwrite") == 0
    assert [r["step"] for r in _log(out)] == [1, 2]
    assert _train(out, 4, "--overwrite", "--resume", str(out / CHECKPOINT_NAME)) == 2
    assert "contradict" in capsys.readouterr().err


def test_second_writer_is_refused_at_once_naming_the_pid(tmp_path):
    out = tmp_path / "run"
    with RunDir(out).acquire():
        with pytest.raises(RunDirBusyError, match=f"pid {os.getpid()}"):
            RunDir(out, "resume").acquire()
    RunDir(out).acquire().release()  # released: free again


def test_concurrent_cli_run_is_refused_naming_the_holder(tmp_path, capsys, no_model_load):
    """A live process (not this one) holds the directory: the CLI exits 2 naming its pid."""
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(out / '.zipfast.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('locked', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _train(out, 6) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "in use by another zipfast run" in err
    finally:
        holder.kill()
        holder.wait()


def test_killed_writes_leave_temp_files_that_the_next_start_removes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    leftovers = [out / f".{CHECKPOINT_NAME}.{uuid.uuid4().hex[:8]}.zipfast.tmp", out / ".log.jsonl.abc.zipfast.tmp"]
    for p in leftovers:
        p.write_bytes(b"half a write")
    keep = out / ".user-file.tmp"
    keep.write_text("not ours")
    with RunDir(out, "resume"):
        pass
    assert not any(p.exists() for p in leftovers) and keep.exists()


# ------------------------------------------------------------------------------ the log


def test_truncate_log_tolerates_a_torn_last_line(tmp_path):
    log = tmp_path / "log.jsonl"
    recs = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 6)]
    log.write_text("\n".join(recs) + '\n{"step": 6, "lo')
    truncate_log(log, 3)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3]
    log.write_text(recs[0] + "\n###\n" + recs[1] + "\n")
    with pytest.raises(UserError, match=r"log.jsonl' line 2"):
        truncate_log(log, 3)


def test_resume_after_a_torn_log_line(tmp_path):
    out = tmp_path / "run"
    assert _train(out, 8, "--checkpoint-every", "2") == 0
    ref = _log(out)
    assert _train(tmp_path / "b", 4) == 0
    with open(tmp_path / "b" / "log.jsonl", "a") as f:
        f.write('{"step": 3, "queries": 6, "lo')  # died mid-write after the step-2 checkpoint
    assert _train(tmp_path / "b", 8, "--resume", str(tmp_path / "b" / CHECKPOINT_NAME)) == 0
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert strip(_log(tmp_path / "b")) == strip(ref)


# ------------------------------------------------------------------------------ unusable output directories


def test_output_dir_that_is_a_file(tmp_path, capsys, no_model_load):
    f = tmp_path / "taken"
    f.write_text("x")
    assert _train(f, 6) == 2
    assert f"'{f}' is a file" in capsys.readouterr().err
    assert _train(f / "sub", 6) == 2  # a file in the path: ENOTDIR
    err = capsys.readouterr().err
    assert str(f / "sub") in err and "Traceback" not in err


def _mount_tmpfs(path, options):
    path.mkdir(exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode}); needs root")


def _umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_output_dir(tmp_path, capsys, no_model_load):
    ro = tmp_path / "ro"
    if os.geteuid() == 0:  # root ignores permission bits: use a read-only file system
        _mount_tmpfs(ro, "ro,size=64k")
    else:
        ro.mkdir()
        ro.chmod(0o500)
    try:
        assert _train(ro / "run", 6) == 2
        err = capsys.readouterr().err
        assert str(ro / "run") in err and ("Read-only" in err or "Permission denied" in err)
    finally:
        if os.geteuid() == 0:
            _umount(ro)
        else:
            ro.chmod(0o700)


def test_full_disk_keeps_the_last_checkpoint_and_exits_2(tmp_path, capsys, monkeypatch):
    """A 1 MiB tmpfs fills up after the step-2 checkpoint: exit 2 naming the disk problem, the
    checkpoint still verifies, and after freeing space the run resumes to the end."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=1m")
    try:
        out, filler = disk / "run", disk / "filler"
        from zipfast.run.trainer import ZIPTrainer

        real = ZIPTrainer.save_checkpoint

        def save_then_fill(self, path):
            real(self, path)
            if self.step == 2 and not filler.exists():
                with open(filler, "wb") as f:  # take every free byte
                    try:
                        while True:
                            f.write(b"\0" * 65536)
                            f.flush()
                    except OSError:
                        pass

        monkeypatch.setattr(ZIPTrainer, "save_checkpoint", save_then_fill)
        assert _train(out, 20, "--checkpoint-every", "2") == 2
        err = capsys.readouterr().err
        assert "No space left on device" in err and "disk is full" in err and "Traceback" not in err
        ck = read_checkpoint(out / CHECKPOINT_NAME)
        assert ck.state["step"] == 2
        assert not [p for p in os.listdir(out) if p.endswith(".tmp")]

        filler.unlink()
        monkeypatch.setattr(ZIPTrainer, "save_checkpoint", real)
        assert _train(out, 20, "--checkpoint-every", "2", "--resume", str(out / CHECKPOINT_NAME)) == 0
        assert [r["step"] for r in _log(out)] == list(range(1, 11))
    finally:
        _umount(disk)


def test_output_dir_error_type():
    assert issubclass(OutputDirError, UserError) and issubclass(UserError, ValueError)
