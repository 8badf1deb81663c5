"""`zipfast info`: versions, machine, device, precision, query engines and the ops table."""

from __future__ import annotations

import importlib.util
import os
import platform

import torch

from zipfast.env import (accelerators, cpu_flags, environment_overrides, resolve_device,  # noqa: F401  (cpu_flags: old path)
                  resolve_precision, versions)


def info() -> str:
    from zipfast import __version__
    from zipfast.engine.batched import BACKENDS
    from zipfast.ops import format_table, selfcheck

    v = versions()
    dev = resolve_device("auto")
    triton = importlib.util.find_spec("triton") is not None
    lines = [
        f"zipfast {__version__}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "zipfast"),
        f"platform: {platform.platform()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        f"CPU features: {', '.join(cpu_flags()) or 'unknown'}",
        f"accelerators: {', '.join(accelerators()) or 'none'}",
        f"default device: {dev}",
        "query engines: " + ", ".join(BACKENDS) + " (auto picks the fastest exact one)",
        f"triton: {'installed' if triton else 'not installed'}"
        f"{' (no GPU: kernels only run under TRITON_INTERPRET=1)' if triton and dev.type != 'cuda' else ''}",
        f"precision: auto = {resolve_precision('auto', dev)} on {dev.type} (fp32 is the reference; "
        f"--precision fp32/bf16/fp16 overrides)",
        "",
        f"ops on {dev.type} (cuda > triton > torch; override with ZIPFAST_BACKEND=<backend> for every op "
        f"or ZIPFAST_BACKEND_<OP>=<backend> for one):",
        format_table(dev),
        f"self-check of compiled backends on first use: ZIPFAST_SELFCHECK={selfcheck.mode()} "
        f"(verdicts cached in {selfcheck.cache_path()})",
        "environment overrides: " + (", ".join(f"{k}={v}" for k, v in environment_overrides().items()) or "none"),
    ]
    return "\n".join(lines)
