"""Triton kernels run here under the interpreter (no GPU): TRITON_INTERPRET must be set before
triton is imported, i.e. before any Triton kernel module is. Where CUDA is present (`make
test-gpu`) it stays unset so the kernels run on the GPU. Op modules import their Triton code
lazily, on first use, so the order in which pytest collects test folders does not matter."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
