"""Zeroth-order optimisers in ask/tell form (see `protocol` for the contract).

- `SPSA`: ZIP's family (spsa-clip, spsa, spsa-gc)
- `ZOSGD`: MeZO-style Gaussian two-point ZO-SGD
- `SharpZO`: sharpness-aware CMA-ES warm-up, then sparse ZO-SGD with Z-pruning
"""

from .protocol import Optimizer
from .spsa import OPT_TYPES, SPSA

__all__ = ["Optimizer", "OPT_TYPES", "SPSA"]
