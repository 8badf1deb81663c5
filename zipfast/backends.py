"""Which implementation runs where: the one place that reports backends (`zipfast info`)."""

from __future__ import annotations

import importlib.util
import os
import platform

import torch


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if x in have]
    except OSError:
        pass
    return []


def accelerators() -> list[str]:
    out = []
    if torch.cuda.is_available():
        out += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    if getattr(torch, "hpu", None) is not None and torch.hpu.is_available():
        out.append("hpu")
    return out


def info() -> str:
    from . import __version__
    from .batched import BACKENDS
    from .engine import resolve_precision
    from .models import resolve_device
    from .trainer import versions

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
    ]
    return "\n".join(lines)
