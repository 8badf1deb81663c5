"""The error contract: what a user can fix is a `UserError`; the CLI turns it into exit code 2.

Every `UserError` message names the bad value (a key, a file, a device) and says what to do.
Anything else escaping the CLI is an internal error: its traceback is printed and it exits 1.
This module is bottom-level: it imports nothing from zipfast.
"""

from __future__ import annotations

import errno
import os

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2
# Conventional shell codes of a run stopped by a signal: 128 + the signal number.
EXIT_SIGINT, EXIT_SIGHUP, EXIT_SIGTERM = 130, 129, 143


class UserError(ValueError):
    """A failure the user can fix (bad setting, file, dataset, device, full disk): exit 2."""


class ConfigError(UserError):
    """A setting is unknown, of the wrong type, out of range, or unsupported by zipfast."""


class OutputDirError(UserError):
    """The output directory (or a file in it) cannot be created, locked or written."""


class DeviceError(UserError):
    """The requested device does not exist or is not available on this machine."""


class DatasetError(UserError):
    """A dataset folder or image that cannot be used; the message says what and how to fix it.
    Here, not in zipfast.data, so that the dataset specs and the image folder can both raise it."""


# errno values that mean "the user's file system refuses this write", with what to do about it.
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free space (or choose another --output-dir)",
    errno.EDQUOT: "the disk quota is exhausted: free space (or choose another --output-dir)",
    errno.EROFS: "the file system is read-only: choose another --output-dir",
    errno.EACCES: "permission denied: fix the permissions or choose another --output-dir",
    errno.EPERM: "operation not permitted: fix the permissions or choose another --output-dir",
    errno.ENOTDIR: "a component of the path is a file, not a directory: choose another --output-dir",
    errno.EISDIR: "the path is a directory where a file was expected: remove it or choose another --output-dir",
    errno.EEXIST: "a file of that name is in the way: remove it or choose another --output-dir",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter --output-dir",
}


def is_user_os_error(exc: BaseException) -> bool:
    """True for an OSError caused by the user's file system (full, read-only, permissions…)."""
    return isinstance(exc, OSError) and exc.errno in _OS_ADVICE


def output_error(exc: OSError, action: str, path: str | os.PathLike) -> OutputDirError:
    """An OutputDirError for `exc`, raised while `action` (e.g. "writing") `path`; names both."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    advice = _OS_ADVICE.get(exc.errno, "check the path and try again")
    return OutputDirError(f"cannot finish {action} {str(path)!r}: {reason} ({advice})")
