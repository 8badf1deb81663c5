"""Atomic file writes: a temp file in the same folder, fsync, then rename (never half-written).

Files get the mode a plain `open(path, "w")` would give (0666 minus the umask), not the 0600
of `tempfile.mkstemp`. A write the file system refuses (disk full, read-only, permissions)
raises `OutputDirError` naming the file; the previous version of the file stays intact.
Temp files are named `.<name>.<random>.zipfast.tmp`, so a killed write's leftovers can be
recognised and removed (`rundir.clean_temp_files`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from zipfast.errors import is_user_os_error, output_error

TEMP_SUFFIX = ".zipfast.tmp"


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    return 0o666 & ~current_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write(path, write) -> None:
    """Call write(binary file) on a temp file beside `path`, then rename it onto `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as e:
        if is_user_os_error(e):
            raise output_error(e, "writing", path) from e
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def save_bytes(data: bytes, path) -> None:
    atomic_write(path, lambda f: f.write(data))


def save_text(text: str, path) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def save_json(obj, path) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))
