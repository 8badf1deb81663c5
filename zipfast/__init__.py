"""zipfast: fast zeroth-order intrinsic-dimensional prompt tuning (ZIP) of CLIP models."""

import os

__version__ = "0.1.0"

# MKL's strict conditional numerical reproducibility: GEMMs give the same bits whatever the thread
# count (a skinny fp32 GEMM otherwise splits its sums by thread), so a run's trajectory does not
# depend on --threads. Read by MKL at its first call: set here, before zipfast computes anything;
# MKL_CBWR set by the user wins. Measured cost: docs/performance.md.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__all__ = ["Trainer", "ZIPTrainer", "TrainConfig", "__version__"]


def __getattr__(name):
    # Lazy, so that importing a bottom-level module (zipfast.env, zipfast.ops) does not load
    # the trainer and everything above it.
    if name in ("Trainer", "ZIPTrainer"):
        from zipfast.run.trainer import Trainer

        return Trainer
    if name == "TrainConfig":
        from zipfast.config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'zipfast' has no attribute {name!r}")
