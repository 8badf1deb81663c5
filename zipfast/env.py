"""The environment, at the bottom of the package: the `zipfast` logger, the device and
precision rules, and what the machine has (CPU features, accelerators, versions).

Imports nothing from zipfast at module level (only zipfast.errors, itself import-free, inside
`resolve_device`), so every other module may import it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
from pathlib import Path

import torch

LOGGER_NAME = "zipfast"
logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())  # a library stays quiet unless the application configures logging

# Precision names → the matmul dtype they run (None: fp32, no autocast). "amp" is the official
# trainer's name for fp16 autocast.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "amp": torch.float16}

_logged: set = set()


def get_logger(area: str | None = None) -> logging.Logger:
    """The package logger, or its child "zipfast.<area>"."""
    return logger.getChild(area) if area else logger


def log_once(key, message: str, level: int = logging.INFO, area: str | None = None) -> bool:
    """Log `message` the first time `key` is seen in this process; → whether it was logged."""
    if key in _logged:
        return False
    _logged.add(key)
    get_logger(area).log(level, message, stacklevel=3)
    return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (not the one at creation)."""

    _zipfast_cli = True

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _CliFormatter(logging.Formatter):
    def format(self, record):
        tag = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"zipfast: {tag}{record.getMessage()}"


def log_to_stderr(level: int = logging.INFO) -> logging.Handler:
    """Print the package's log lines (INFO and up by default) to stderr, as the CLI does.

    Idempotent: a second call returns the handler installed by the first.
    """
    h = next((h for h in logger.handlers if getattr(h, "_zipfast_cli", False)), None)
    if h is None:
        h = _StderrHandler()
        h.setFormatter(_CliFormatter())
        logger.addHandler(h)
    h.setLevel(level)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return h


# --------------------------------------------------------------------------- machine


def cache_dir() -> Path:
    """zipfast's cache folder: $ZIPFAST_CACHE, default ~/.cache/zipfast (generated data, self-checks)."""
    return Path(os.environ.get("ZIPFAST_CACHE") or Path.home() / ".cache" / "zipfast").expanduser()


def cpu_flags() -> list[str]:
    """The CPU's SIMD features that matter for matmul speed (Linux /proc/cpuinfo; [] elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if x in have]
    except OSError:
        pass
    return []


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads() -> int:
    """torch's CPU threads for a CLI run: $OMP_NUM_THREADS where set, else every core but one.

    torch's default (every core) collapses on a shared machine: its OpenMP barriers wait for the
    slowest thread, so one core held by another process stalls every step (measured 10-25x slower in
    docs/performance.md); leaving a core free costs at most 1/cores of the speed on an idle machine.
    """
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, cpu_cores() - 1)


def set_threads(n: int | None) -> int:
    """Set torch's intra-op CPU threads (None: `default_threads()`); returns the number set."""
    from zipfast.errors import ConfigError

    if n is None:
        n = default_threads()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--threads {n!r}: give a positive number of CPU threads (this machine has "
                          f"{cpu_cores()} cores)")
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def one_thread():
    """torch on one CPU thread inside: for CPU kernels whose rounding depends on how the work is split
    between threads (F.interpolate's vectorised rows), so that a run does not depend on --threads."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def accelerators() -> list[str]:
    """Visible accelerators, e.g. ["cuda:0 NVIDIA H100 80GB HBM3"]; [] on a CPU-only machine."""
    out = []
    if torch.cuda.is_available():
        out += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    if getattr(torch, "hpu", None) is not None and torch.hpu.is_available():
        out.append("hpu")
    return out


def versions() -> dict:
    """Versions of zipfast and what it runs on (None where a package is absent)."""
    import numpy
    import open_clip

    from zipfast import __version__

    v = {"zipfast": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
         "numpy": numpy.__version__, "python": platform.python_version()}
    try:
        import triton

        v["triton"] = triton.__version__
    except ImportError:
        v["triton"] = None
    v["cuda"] = torch.version.cuda
    return v


def available_memory() -> int | None:
    """Bytes of RAM a new allocation can get now: MemAvailable of /proc/meminfo (Linux), else the
    physical memory (os.sysconf SC_PHYS_PAGES × SC_PAGE_SIZE); None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2 ** 30:,.1f}"


def check_memory(what: str, nbytes: int, hint: str, device: str | torch.device | None = None) -> None:
    """ConfigError (exit 2) before allocating `nbytes` for `what` (which names the setting and its value)
    when that is more than this machine's available RAM, or, for a CUDA `device`, than the GPU's free
    memory (torch.cuda.mem_get_info). Callers pass a simple lower bound (the largest tensor, float32),
    so a refusal is certain: the allocation could not succeed; `hint` says which setting to lower."""
    from zipfast.errors import ConfigError  # errors.py is bottom-level too; imported here to keep env import-free

    places = [("memory", available_memory())]
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        try:
            places.append((f"free GPU memory on {torch.device(device)}", torch.cuda.mem_get_info(torch.device(device))[0]))
        except (RuntimeError, AssertionError):
            pass
    for where, have in places:
        if have is not None and nbytes > have:
            raise ConfigError(f"{what} needs at least {_gib(nbytes)} GiB, more than the {_gib(have)} GiB of {where} "
                              f"available here; {hint}")


# --------------------------------------------------------------------------- device and precision


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → cuda if available, else hpu (Intel Gaudi) if loaded, else cpu.

    An explicit device must exist on this machine: DeviceError (exit 2) names it otherwise.
    """
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _hpu_available():
            return torch.device("hpu")
        return torch.device("cpu")
    return _check_device(device)


def _hpu_available() -> bool:
    return getattr(torch, "hpu", None) is not None and torch.hpu.is_available()


# Messages name the setting both ways: the CLI flag and the TrainConfig field of the Python API.
DEVICE_SETTING = "--device / TrainConfig.device"


def _check_device(device) -> torch.device:
    from zipfast.errors import DeviceError  # errors.py is bottom-level too; imported here to keep env import-free

    name = f"device {str(device)!r} ({DEVICE_SETTING})"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"{name} is not a device torch knows; use auto, cpu, cuda, cuda:N or hpu") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{name}: no CUDA GPU is available here (torch {torch.__version__}, CUDA build "
                              f"{torch.version.cuda or 'none'}); use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"{name}: this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "meta":  # tensors there hold no values: every computation would fail later
        raise DeviceError(f"device {str(device)!r} holds no data (shapes only); use cpu, cuda or auto ({DEVICE_SETTING})")
    elif dev.type == "hpu" and not _hpu_available():
        raise DeviceError(f"{name}: no Intel Gaudi (HPU) is available; use cpu or auto")
    elif dev.type not in ("cpu", "cuda", "hpu"):
        try:  # other torch device types (mps, xpu…): usable only if a tensor can live there
            torch.empty(1, device=dev)
        except Exception as e:
            reason = str(e).splitlines()[0][:120] if str(e) else ""
            raise DeviceError(f"{name} is not available here ({type(e).__name__}: {reason}); use cpu or auto") from None
    return dev


def precision_substitution(precision: str, device: torch.device) -> str | None:
    """Why `device` runs another precision than the (non-auto) `precision` asked for, or None."""
    if device.type == "cpu" and PRECISIONS.get(precision) is torch.float16:
        return "CPU matmuls have no fast fp16 path; bf16 has the same 16-bit cost and fp32's exponent range"
    return None


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision that actually runs on `device`.

    "auto" → the measured default of the device (docs/kernels.md, "Precision"): fp16 autocast on CUDA
    (the official trainer's setting), bf16 on CPUs with native bf16 matmuls (avx512_bf16/AMX:
    L⁺ − L⁻ noise 2–4 % of the signal, ĝ cosine ≥ 0.999 against fp32), else fp32.
    fp16/amp on CPU → bf16, logged once (see `precision_substitution`).
    """
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        if device.type == "cpu":
            return "bf16" if {"avx512_bf16", "amx_bf16"} & set(cpu_flags()) else "fp32"
        return "fp32"
    why = precision_substitution(precision, device)
    if why:
        log_once(("precision", precision, device.type),
                 f"precision {precision} requested on {device.type}: running bf16 instead ({why})",
                 logging.WARNING)
        return "bf16"
    return precision


def environment_overrides(prefix: str = "ZIPFAST_") -> dict:
    """The ZIPFAST_* environment variables that are set, name → value."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(prefix)}
