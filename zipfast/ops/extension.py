"""Gentle loading of the compiled CUDA extension (`zipfast._zipfast_cuda`, built from csrc/).

A missing or broken extension is logged once (logger "zipfast.ops") and makes the "cuda"
implementations unavailable with the reason; it is never fatal: the Triton and PyTorch
paths still run.
"""

from __future__ import annotations

import importlib
import os

import torch

from ..env import get_logger
from .registry import cuda_device

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


def available(device: torch.device) -> tuple[bool, str]:
    """Availability check of every "cuda" implementation: a CUDA device and the built extension."""
    ok, why = cuda_device(device)
    if not ok:
        return ok, why
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
