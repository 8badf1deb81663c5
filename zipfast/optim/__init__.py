"""Zeroth-order optimisers in ask/tell form (see `protocol` for the contract). None knows which
prompt space it searches: a method file (zipfast.methods) binds one to a space.

- `SPSA`: ZIP's family (spsa-clip, spsa, spsa-gc)
- `ZOSGD`: MeZO-style Gaussian two-point ZO-SGD
- `SharpZO`: sharpness-aware CMA-ES warm-up, then sparse ZO-SGD with Z-pruning
- `PyCMA`: CMA-ES (pycma), BPT-VLM's and `zip-cma`'s
- `BARGradientFree`: BAR's one-sided randomized gradient-free estimate
- `SPSAGC`: BlackVIP's SPSA-GC in the official query order
"""

from zipfast.optim.bar_rgf import BARGradientFree
from zipfast.optim.cma import PyCMA, point_from_state
from zipfast.optim.protocol import Optimizer
from zipfast.optim.spsa import OPT_TYPES, SPSA
from zipfast.optim.spsa_gc import SPSAGC

__all__ = ["Optimizer", "OPT_TYPES", "SPSA", "PyCMA", "BARGradientFree", "SPSAGC", "point_from_state"]
