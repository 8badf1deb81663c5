"""Self-check of compiled backends on first use: a kernel proves itself on the user's device.

The first time the registry would pick a compiled implementation of an op (the CUDA C++
extension, or Triton compiled for a GPU — not its interpreter) on a device, it runs the op's
check once: the implementation and the op's reference on the same small fixed input (odd
shapes that exercise tails and the Walsh–Hadamard sizes), compared bit for bit for `perturb`
and within the op's documented tolerance for the others. NaN never passes. A mismatch or an
exception disables that backend for that op on that device for the process (the registry
falls back and says so: one warning, and an entry in `registry.fallbacks()`, which every run
report lists).

Verdicts are cached in `<cache>/selfcheck.json` (`$ZIPFAST_CACHE`, default ~/.cache/zipfast),
keyed by (op, backend, device name, compute capability, driver, zipfast version), so later
processes pay nothing; an entry for another device, driver or version is not used.

    ZIPFAST_SELFCHECK=1       (default) check once per key, then trust the cache
    ZIPFAST_SELFCHECK=0       skip: trust availability alone (the behaviour before self-checks)
    ZIPFAST_SELFCHECK=always  check in every process, ignoring (and refreshing) the cache
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Callable

import torch

from zipfast.env import cache_dir, get_logger
from zipfast.errors import UserError

ENV = "ZIPFAST_SELFCHECK"
MODES = ("0", "1", "always")
CACHE_FILE = "selfcheck.json"
log = get_logger("ops")

# A check runs `fn` (the implementation under test, called as the registry calls it) on `device`
# and returns None when it agrees with the op's reference there, else what differs.
Check = Callable[[Callable, torch.device], "str | None"]

_memo: dict[str, tuple[bool, str]] = {}


def mode() -> str:
    """ZIPFAST_SELFCHECK as one of MODES (default "1")."""
    value = os.environ.get(ENV, "1").strip().lower() or "1"
    if value not in MODES:
        raise UserError(f"{ENV}={value!r} is not a self-check mode; use 0 (skip), 1 (default: once per device, "
                        "cached) or always")
    return value


def needs_check(backend: str) -> bool:
    """Compiled backends prove themselves: CUDA C++, and Triton unless it runs in its interpreter."""
    return backend == "cuda" or (backend == "triton" and os.environ.get("TRITON_INTERPRET") != "1")


def device_identity(device: torch.device) -> dict:
    """What a verdict holds for: the device's name and compute capability, the driver, zipfast."""
    from zipfast import __version__

    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        name, capability = torch.cuda.get_device_name(index), f"{major}.{minor}"
        driver = nvidia_driver() or f"unknown (CUDA runtime {torch.version.cuda})"
    else:
        import platform

        name, capability, driver = f"{device.type}:{platform.processor() or platform.machine()}", None, None
    return {"device": name, "capability": capability, "driver": driver, "zipfast": __version__}


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version (Linux: /proc/driver/nvidia/version), or None."""
    import re

    try:
        text = open("/proc/driver/nvidia/version").read()
    except OSError:
        return None
    m = re.search(r"Kernel Module(?: for [^ ]+)?\s+([0-9][0-9.]*)", text)
    return m.group(1) if m else None


def _key(op: str, backend: str, ident: dict) -> str:
    return "|".join(str(v) for v in (op, backend, ident["device"], ident["capability"], ident["driver"],
                                     ident["zipfast"]))


def cache_path():
    return cache_dir() / CACHE_FILE


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, record: dict) -> None:
    """Best effort, atomic: a read-only or full cache folder only costs a re-check next time."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache()
        data[key] = record
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".selfcheck-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        log.debug("self-check cache %s not written: %s", path, e)


def verdict(op: str, backend: str, fn: Callable, check: Check | None, device: torch.device) -> tuple[bool, str]:
    """(ok, why-not) of `backend`'s implementation `fn` of `op` on `device`: from this process's
    memo, the disk cache, or by running `check` now (see the module docstring)."""
    m = mode()
    if m == "0":
        return True, ""
    if check is None:
        return True, ""  # an op without a check is trusted on availability, as before self-checks
    ident = device_identity(device)
    key = _key(op, backend, ident)
    if m != "always":
        if key in _memo:
            return _memo[key]
        cached = _read_cache().get(key)
        if isinstance(cached, dict) and all(cached.get(k) == v for k, v in ident.items()):
            _memo[key] = (bool(cached.get("ok")), str(cached.get("why", "")))
            return _memo[key]
    start = time.perf_counter()
    try:
        with torch.no_grad():
            problem = check(fn, device)
    except Exception as e:  # a kernel that raises (no image for this GPU, a launch failure …) fails its check
        problem = f"raised {type(e).__name__}: {str(e)[:300]}"
    ok = problem is None
    why = "" if ok else f"self-check failed: {problem}"
    _write_cache(key, {"ok": ok, "why": why, "op": op, "backend": backend, **ident,
                       "seconds": round(time.perf_counter() - start, 4), "checked": time.strftime("%Y-%m-%d %H:%M:%S")})
    if ok:
        log.info("%s on %s: %s backend passed its self-check (%s)", op, device.type, backend, ident["device"])
    _memo[key] = (ok, why)
    return _memo[key]


def forget() -> None:
    """Drop this process's verdicts (tests; the disk cache stays)."""
    _memo.clear()


# ---------------------------------------------------------------------- comparisons for the checks


def compare(got: torch.Tensor, want: torch.Tensor, what: str, rtol: float = 0.0) -> str | None:
    """None when `got` matches `want` (bit for bit when rtol is 0, else max |got − want| ≤
    rtol · max |want|), else a description. NaN in `got` never passes."""
    got, want = got.detach().cpu(), want.detach().cpu()
    if got.shape != want.shape:
        return f"{what}: shape {tuple(got.shape)}, the reference's {tuple(want.shape)}"
    if got.is_floating_point():
        bad = torch.isnan(got) & ~torch.isnan(want)
        if bool(bad.any()):
            return f"{what}: NaN at {int(bad.sum())} of {got.numel()} elements"
    if rtol == 0.0:
        same = torch.equal(got.view(torch.int32), want.view(torch.int32)) if got.dtype == torch.float32 == want.dtype \
            else torch.equal(got, want)
        if not same:
            diff = (got.double() - want.double()).abs()
            return f"{what}: not bit-identical ({int((diff > 0).sum())} elements differ, max {float(diff.max()):.3g})"
        return None
    err = float((got.double() - want.double()).abs().max())
    scale = float(want.double().abs().max())
    if not err <= rtol * max(scale, 1e-30):
        return f"{what}: max error {err:.3g} exceeds {rtol:g} × max |reference| {scale:.3g}"
    return None


def first_problem(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)
