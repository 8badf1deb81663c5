"""zipfast: fast zeroth-order intrinsic-dimensional prompt tuning (ZIP) of CLIP models."""

__version__ = "0.1.0"

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
