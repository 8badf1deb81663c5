"""A run directory owned by one run: lock, fresh/resume/overwrite rules, cleanup, the log.

- `acquire()` creates the directory, proves it writable, and takes an exclusive `flock` on
  `.zipfast.lock` (holding the owner's pid) for the run's lifetime. A second run on the same
  directory fails at once, naming that pid. The kernel drops the lock when the process
  dies, even by SIGKILL, so a crash never leaves the directory locked.
- A fresh run into a directory that already holds a run's files is refused unless it
  resumes (`--resume`) or replaces them (`--overwrite`).
- Temp files of writes killed half-way (`.<name>.<random>.zipfast.tmp`) are removed.
- `truncate_log(step)` drops records past a checkpoint's step, tolerating a torn last line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from pathlib import Path

from zipfast.run.checkpoint import CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME
from zipfast.errors import OutputDirError, UserError, is_user_os_error, output_error
from zipfast.io import TEMP_SUFFIX, default_file_mode, save_text

LOG_NAME, REPORT_NAME, LOCK_NAME = "log.jsonl", "report.json", ".zipfast.lock"
RUN_FILES = (LOG_NAME, CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME, REPORT_NAME)
log = logging.getLogger("zipfast.run.rundir")


class RunDirBusyError(OutputDirError):
    """Another live process holds the run directory's lock."""


class RunDir:
    """The output directory of one run. mode: "fresh" (default), "resume" or "overwrite"."""

    def __init__(self, path, mode: str = "fresh", resume_from=None):
        if mode not in ("fresh", "resume", "overwrite"):
            raise ValueError(f"mode must be fresh, resume or overwrite, got {mode!r}")
        self.path = Path(path).expanduser()
        self.mode, self.resume_from = mode, resume_from
        self._lock_fd: int | None = None
        self._made: list[Path] = []  # the folders acquire() created, deepest last
        self._made_lock = False  # whether acquire() created the lock file

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def log_path(self) -> Path:
        return self.path / LOG_NAME

    @property
    def report(self) -> Path:
        return self.path / REPORT_NAME

    @property
    def held(self) -> bool:
        return self._lock_fd is not None

    # ------------------------------------------------------------------ ownership

    def acquire(self) -> "RunDir":
        """Create, probe, lock and prepare the directory; raises OutputDirError (exit 2)."""
        if self.held:
            return self
        self._make()
        self._lock()
        try:
            clean_temp_files(self.path)
            self._check_contents()
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Drop the lock. A run that wrote none of its files (refused before its first step) leaves
        the directory as it found it: the lock file and the folders acquire() created are removed."""
        if self._lock_fd is None:
            return
        unused = not any((self.path / n).exists() for n in RUN_FILES)
        try:
            os.ftruncate(self._lock_fd, 0)
        except OSError:
            pass
        if unused and self._made_lock:
            with contextlib.suppress(OSError):
                (self.path / LOCK_NAME).unlink()  # before the close: no other run can hold it yet
        os.close(self._lock_fd)  # closing the descriptor drops the flock
        self._lock_fd = None
        if unused:
            for folder in reversed(self._made):
                with contextlib.suppress(OSError):  # not empty (someone else's files): kept
                    folder.rmdir()
            self._made = []

    def __enter__(self) -> "RunDir":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _make(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise OutputDirError(f"output directory {str(p)!r} is a file, not a directory; "
                                 "choose another --output-dir or remove the file")
        try:
            missing = [q for q in (p, *p.parents) if not q.exists()]
            p.mkdir(parents=True, exist_ok=True)
            self._made = missing[::-1]
            probe = p / f".zipfast-write-test-{os.getpid()}"
            with open(probe, "wb") as f:
                f.write(b"zipfast")
            probe.unlink()
        except OSError as e:
            if is_user_os_error(e):
                raise output_error(e, "preparing output directory", p) from e
            raise

    def _lock(self) -> None:
        path = self.path / LOCK_NAME
        existed = path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, default_file_mode())
        except OSError as e:
            raise output_error(e, "creating the lock file", path) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                who = f"pid {holder}" if holder else "another process (pid not yet written)"
                raise RunDirBusyError(
                    f"output directory {str(self.path)!r} is in use by another zipfast run ({who}); wait for "
                    "it to finish, stop it, or choose another --output-dir") from None
            raise output_error(e, "locking", path) from e
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd, self._made_lock = fd, not existed

    def _check_contents(self) -> None:
        present = [n for n in RUN_FILES if (self.path / n).exists()]
        if not present:
            return
        if self.mode == "overwrite":
            for name in present:
                (self.path / name).unlink()
            log.info("--overwrite: removed %s from %s", ", ".join(present), self.path)
            return
        if self.mode == "resume":
            mine = [self.path / n for n in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME) if (self.path / n).exists()]
            src = Path(self.resume_from) if self.resume_from is not None else None
            if mine and src is not None and src.exists() and not any(_same(src, m) for m in mine):
                raise OutputDirError(
                    f"output directory {str(self.path)!r} holds another run's checkpoint, not {str(src)!r}; "
                    "resume into the checkpoint's own directory, choose another --output-dir, or pass "
                    "--overwrite to replace that run")
            return
        raise OutputDirError(
            f"output directory {str(self.path)!r} already holds a run ({', '.join(present)}); pass --resume "
            f"{self.path / CHECKPOINT_NAME} to continue it, --overwrite to replace it, or choose another "
            "--output-dir")

    # ------------------------------------------------------------------ the log

    def truncate_log(self, step: int) -> None:
        truncate_log(self.log_path, step)

    def open_log(self) -> "RunLog":
        return RunLog(self.log_path)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def clean_temp_files(folder) -> list[str]:
    """Remove temp files left by killed atomic writes in `folder`; returns their names."""
    removed = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
            os.unlink(entry.path)
            removed.append(entry.name)
    if removed:
        log.info("removed %d temp file(s) of an interrupted write from %s: %s", len(removed), folder,
                 ", ".join(removed))
    return removed


def truncate_log(path, step: int, key: str = "step") -> None:
    """Keep the records whose `key` (the step; or another count that grows with it, such as
    "queries") is ≤ step (a crash after the checkpoint may have added more).

    A torn final line (the process died mid-write) is dropped; an unreadable line elsewhere
    is an error naming the file and line, since silently dropping it would lose history.
    """
    path = Path(path)
    if not path.exists():
        return
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise output_error(e, "reading", path) from e
    keep = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rec_step = int(rec[key])
        except (ValueError, KeyError, TypeError):
            if i == len(lines):
                log.info("dropped a torn last line of %s (line %d)", path, i)
                continue
            raise UserError(f"{str(path)!r} line {i} is not a log record ({line[:60]!r}); repair or delete the "
                            "line, or start afresh with --overwrite") from None
        if rec_step <= step:
            keep.append(line)
    save_text("".join(ln + "\n" for ln in keep), path)


class RunLog:
    """Append-only log.jsonl; a refused write (disk full…) raises OutputDirError naming the file."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, default_file_mode())
            self._f = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as e:
            raise output_error(e, "opening", self.path) from e

    def write(self, record: dict) -> None:
        try:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()
        except OSError as e:
            raise output_error(e, "appending to", self.path) from e

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass  # the failed write already raised; closing must not mask it

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
