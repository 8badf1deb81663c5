"""Gentle loading of the compiled CUDA extension (`zipfast._zipfast_cuda`, built from csrc/).

A missing or broken extension is logged once (logger "zipfast.ops") and makes the "cuda"
implementations unavailable with the reason; it is never fatal: the Triton and PyTorch
paths still run.
"""

from __future__ import annotations

import importlib
import os

import torch

from zipfast.env import get_logger
from zipfast.ops.registry import cuda_device

MODULE = "zipfast._zipfast_cuda"
log = get_logger("ops")
_state: dict = {}


def cuda_module():
    """(module or None, reason) — imported once per process."""
    if "mod" not in _state:
        try:
            _state["mod"], _state["why"] = importlib.import_module(MODULE), ""
        except ImportError as e:
            _state["mod"] = None
            if "No module named" in str(e):
                _state["why"] = ("the CUDA extension is not built (install with nvcc present, or "
                                 "ZIPFAST_BUILD_CUDA=1 pip install -e .)")
            else:
                _state["why"] = f"the CUDA extension failed to load: {e}"
            if os.environ.get("ZIPFAST_QUIET_EXTENSION") != "1":
                log.info("%s: %s", MODULE, _state["why"])
    return _state["mod"], _state["why"]


def require_cuda_module():
    """The compiled CUDA module; RuntimeError with the reason when it is not there."""
    mod, why = cuda_module()
    if mod is None:
        raise RuntimeError(why)
    return mod


# The machine code the module embeds (build.DEFAULT_ARCHS; CMake builds SASS and PTX for each):
# SASS runs on its own major version (sm_80 also on sm_86/sm_89), PTX is compiled by the driver
# for newer GPUs (compute_90 → sm_100, sm_120). Older GPUs (sm_75 and below) have neither.
MIN_CAPABILITY = (8, 0)


def available(device: torch.device) -> tuple[bool, str]:
    """Availability check of every "cuda" implementation: a CUDA device of compute capability
    ≥ 8.0 and the built extension (whether its kernels compute right is the self-check's job)."""
    ok, why = cuda_device(device)
    if not ok:
        return ok, why
    cap = torch.cuda.get_device_capability(device)
    if tuple(cap) < MIN_CAPABILITY:
        return False, (f"the CUDA kernels are built for sm_80 and newer (SASS sm_80, sm_90; PTX compute_80, "
                       f"compute_90); this GPU is sm_{cap[0]}{cap[1]}")
    mod, why = cuda_module()
    return mod is not None, why


def stream_of(t: torch.Tensor) -> int:
    """The current CUDA stream of t's device as an integer handle (captured by CUDA graphs)."""
    return torch.cuda.current_stream(t.device).cuda_stream


def check_cuda_args(**tensors) -> None:
    """Contiguity/device checks before passing raw pointers to a kernel."""
    dev = None
    for name, t in tensors.items():
        if t is None:
            continue
        if not t.is_cuda or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous CUDA tensor, got device {t.device}, "
                             f"contiguous={t.is_contiguous()}")
        if dev is not None and t.device != dev:
            raise ValueError(f"{name} is on {t.device}, other arguments on {dev}")
        dev = t.device


def ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()
