"""The one place that decides which implementation of an op runs.

Each op (e.g. "prefix_attention") has implementations registered under a backend name;
`resolve(op, device)` returns the first available one in the order of `PRIORITY`
(cuda > triton > torch; "reference", the readable truth, comes last and is meant to be
forced). The environment overrides the choice:

    ZIPFAST_BACKEND=<backend>        every op runs on that backend
    ZIPFAST_BACKEND_<OP>=<backend>   one op (upper-case op name), wins over ZIPFAST_BACKEND
                                     ("auto" restores the automatic choice for that op)

Off CUDA, Triton is never chosen automatically: its interpreter (TRITON_INTERPRET=1) runs
only when forced. A forced backend that is unavailable is an error naming the op, the backend and why (no
silent substitution). An automatic choice below a registered, higher-priority backend is a
fallback: logged once per (op, device type) on the "zipfast.ops" logger and kept in
`fallbacks()` for the run report.

Availability checks take the device and return (ok, reason-if-not). Loaders added with
`add_loader` (e.g. the gentle import of the compiled extension, which registers the "cuda"
implementations) run once, before the first resolution or table.

Availability is not correctness: a compiled backend (CUDA C++, compiled Triton) must also pass
its op's self-check (`register_check`; `zipfast.ops.selfcheck`) on the device the first time it
would be chosen. One that fails is skipped like an unavailable one, with a warning; a forced
one that fails is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

from zipfast.env import get_logger
from zipfast.errors import UserError
from zipfast.ops import selfcheck

PRIORITY = ("cuda", "triton", "torch", "reference")
ENV_ALL = "ZIPFAST_BACKEND"
# Off CUDA, Triton runs only in its interpreter: a test vehicle, orders of magnitude slower.
INTERPRETER_ONLY = "off CUDA only the Triton interpreter runs (for tests; used only when forced)"
log = get_logger("ops")

Availability = Callable[[torch.device], "tuple[bool, str]"]


class BackendUnavailableError(UserError):
    """A backend forced through the environment cannot run an op (message says which and why)."""


@dataclass(frozen=True)
class Implementation:
    op: str
    backend: str
    fn: Callable
    available: Availability


def _always(device: torch.device) -> tuple[bool, str]:
    return True, ""


_impls: dict[str, dict[str, Implementation]] = {}
_checks: dict[str, selfcheck.Check] = {}
_cache: dict[tuple, tuple[str, Callable]] = {}
_fallbacks: dict[tuple[str, str], dict] = {}
_loaders: list[Callable[[], None]] = []
_loaded = 0  # how many loaders have run


def register(op: str, backend: str, impl: Callable, available: Availability | None = None) -> None:
    """Register `impl` as `op` on `backend` (one of PRIORITY); `available(device) → (ok, reason)`."""
    if backend not in PRIORITY:
        raise ValueError(f"unknown backend {backend!r} for op {op!r}; backends are {', '.join(PRIORITY)}")
    _impls.setdefault(op, {})[backend] = Implementation(op, backend, impl, available or _always)
    _cache.clear()


def register_check(op: str, check: selfcheck.Check) -> None:
    """The self-check of `op`: check(fn, device) → None when `fn` (an implementation, called as
    the registry calls it) agrees with the op's reference on `device`, else what differs."""
    _checks[op] = check
    _cache.clear()


def add_loader(loader: Callable[[], None]) -> None:
    """Run `loader()` once before the next resolution or table (lazy registration, e.g. a
    compiled extension). A loader that raises is logged as a warning, never fatal."""
    _loaders.append(loader)
    _cache.clear()


def _run_loaders() -> None:
    global _loaded
    while _loaded < len(_loaders):
        loader = _loaders[_loaded]
        _loaded += 1
        try:
            loader()
        except Exception as e:  # gentle: the other backends still work
            log.warning("loader %s failed (%s: %s); its implementations are unavailable",
                        getattr(loader, "__qualname__", loader), type(e).__name__, e)


def ops() -> list[str]:
    """Names of the registered ops, sorted."""
    _run_loaders()
    return sorted(_impls)


def env_name(op: str) -> str:
    """The per-op override variable, e.g. ZIPFAST_BACKEND_PREFIX_ATTENTION."""
    return f"{ENV_ALL}_{op.upper()}"


def forced(op: str) -> tuple[str, str] | None:
    """(backend, variable) forced for `op` by the environment, or None (automatic)."""
    for var in (env_name(op), ENV_ALL):
        value = os.environ.get(var, "").strip().lower()
        if value == "auto":
            return None
        if value:
            if value not in PRIORITY:
                raise BackendUnavailableError(
                    f"{var}={value!r} is not a backend; choose auto or one of {', '.join(PRIORITY)}")
            return value, var
    return None


def check_environment() -> None:
    """Every ZIPFAST_BACKEND[_<OP>] variable set names a backend (and an op that exists); a bad one is
    named before any run starts, not at the first query."""
    _run_loaders()
    for var, value in os.environ.items():
        if var != ENV_ALL and not var.startswith(ENV_ALL + "_"):
            continue
        op = var[len(ENV_ALL) + 1:].lower()
        if op and op not in _impls:
            raise BackendUnavailableError(f"{var}: {op!r} is not an op of zipfast; the ops are "
                                          f"{', '.join(sorted(_impls))} ({ENV_ALL}_<OP>)")
        forced(op or next(iter(_impls)))  # the value itself


def _device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def _check(impl: Implementation, device: torch.device) -> tuple[bool, str]:
    try:
        ok, why = impl.available(device)
    except Exception as e:  # an availability check that crashes means unavailable, with the reason
        return False, f"availability check failed: {type(e).__name__}: {e}"
    return bool(ok), "" if ok else (why or "unavailable")


def _proven(impl: Implementation, device: torch.device) -> tuple[bool, str]:
    """An available compiled implementation's self-check verdict (others need none)."""
    if not selfcheck.needs_check(impl.backend):
        return True, ""
    return selfcheck.verdict(impl.op, impl.backend, impl.fn, _checks.get(impl.op), device)


def resolve(op: str, device) -> tuple[str, Callable]:
    """(backend name, implementation) of `op` on `device`; cached per (op, device type, override)."""
    device = _device(device)
    _run_loaders()
    force = forced(op)
    key = (op, device.type, force)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    impls = _impls.get(op)
    if not impls:
        raise KeyError(f"no implementation of op {op!r} is registered (known ops: {', '.join(sorted(_impls))})")
    if force is not None:
        backend, var = force
        impl = impls.get(backend)
        if impl is None:
            raise BackendUnavailableError(
                f"{var}={backend}: op {op!r} has no {backend} implementation "
                f"(it has: {', '.join(b for b in PRIORITY if b in impls)}); unset {var} or choose one of those")
        ok, why = _check(impl, device)
        if ok:
            ok, why = _proven(impl, device)
        if not ok:
            raise BackendUnavailableError(
                f"{var}={backend}: op {op!r} cannot run on {backend} on {device.type}: {why}. "
                f"Unset {var} (automatic choice) or pick another backend")
        hit = (backend, impl.fn)
    else:
        skipped, failed = {}, []
        for backend in PRIORITY:
            impl = impls.get(backend)
            if impl is None:
                continue
            ok, why = _check(impl, device)
            if ok and backend == "triton" and device.type != "cuda":
                ok, why = False, INTERPRETER_ONLY
            if ok:
                ok, why = _proven(impl, device)
                if not ok:
                    failed.append(backend)
            if ok:
                hit = (backend, impl.fn)
                break
            skipped[backend] = why
        if hit is None:
            raise BackendUnavailableError(
                f"op {op!r} has no available implementation on {device.type}: "
                + "; ".join(f"{b}: {w}" for b, w in skipped.items()))
        for backend in failed:
            log.warning("%s on %s: the %s backend is disabled for this process (%s); using %s instead", op, device,
                        backend, skipped[backend], hit[0])
        if skipped:
            note_fallback(op, device.type, hit[0], skipped)
    _cache[key] = hit
    return hit


def note_fallback(op: str, device_type: str, backend: str, skipped: dict) -> None:
    """Record (once per op and device type) and log that `op` runs on `backend` because the
    backends in `skipped` ({backend: why}) could not; `fallbacks()` lists it for the run report."""
    fk = (op, device_type)
    if fk not in _fallbacks:
        _fallbacks[fk] = {"op": op, "device": device_type, "backend": backend, "skipped": dict(skipped)}
        log.info("%s on %s: using %s (%s)", op, device_type, backend,
                 "; ".join(f"{b} unavailable: {w}" for b, w in skipped.items()))


def fallback(op: str, device) -> dict | None:
    """The automatic fallback recorded for `op` on `device`'s type, or None (see `fallbacks`)."""
    v = _fallbacks.get((op, _device(device).type))
    return None if v is None else dict(v, skipped=dict(v["skipped"]))


def fallbacks() -> list[dict]:
    """Automatic fallbacks taken so far in this process: {op, device, backend, skipped: {backend: why}}."""
    return [dict(v, skipped=dict(v["skipped"])) for v in _fallbacks.values()]


def table(device=None) -> list[dict]:
    """One row per op × backend of PRIORITY: {op, backend, registered, available, active, why_not}.

    `active` marks what `resolve(op, device)` picks (under the current environment); if the
    environment forces an unavailable backend, no row is active and that row's why_not says so.
    """
    from zipfast.env import resolve_device

    device = resolve_device("auto") if device is None else _device(device)
    rows = []
    for op in ops():
        try:
            active, err = resolve(op, device)[0], None
        except (BackendUnavailableError, KeyError) as e:
            active, err = None, str(e)
        force = None
        try:
            force = forced(op)
        except BackendUnavailableError:
            pass
        for backend in PRIORITY:
            impl = _impls[op].get(backend)
            if impl is None:
                ok, why = False, "not implemented"
            else:
                ok, why = _check(impl, device)
                if ok and backend == "triton" and device.type != "cuda" and backend != active:
                    why = INTERPRETER_ONLY
                elif ok:
                    ok, why = _proven(impl, device)
            if err is not None and force is not None and force[0] == backend:
                why = err
            rows.append({"op": op, "backend": backend, "registered": impl is not None, "available": ok,
                         "active": backend == active, "why_not": why})
    return rows


def format_table(device=None) -> str:
    """`table()` as aligned text (the `zipfast info` section)."""
    rows = table(device)
    if not rows:
        return "(no ops registered)"
    # One reason (e.g. "device is cpu, not cuda") holds for every op of a backend: each is a numbered
    # note under the table, printed once, and the rows cite its number.
    notes: dict[str, int] = {}
    for r in rows:
        if r["why_not"]:
            notes.setdefault(r["why_not"], len(notes) + 1)
    head = ("op", "backend", "available", "active", "why not")
    body = [(r["op"], r["backend"], "yes" if r["available"] else "no", "*" if r["active"] else "",
             f"[{notes[r['why_not']]}]" if r["why_not"] else "") for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    lines = [fmt.format(*line).rstrip() for line in [head, *body]]
    return "\n".join(lines + [f"  [{n}] {why}" for why, n in notes.items()])


def _reset_for_tests() -> None:
    """Forget cached resolutions, recorded fallbacks and self-check verdicts (tests only)."""
    _cache.clear()
    _fallbacks.clear()
    selfcheck.forget()


# ---------------------------------------------------------------------- shared availability checks


def cuda_device(device: torch.device) -> tuple[bool, str]:
    """Available on a CUDA device only."""
    if device.type != "cuda":
        return False, f"device is {device.type}, not cuda"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    return True, ""


def triton_runtime(device: torch.device) -> tuple[bool, str]:
    """Triton runs on a CUDA device, or anywhere under its interpreter (TRITON_INTERPRET=1)."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install triton)"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, ""
    if device.type != "cuda":
        return False, f"no Triton target on {device.type} (TRITON_INTERPRET=1 runs the interpreter)"
    return cuda_device(device)

