"""zipfast: fast zeroth-order intrinsic-dimensional prompt tuning (ZIP) of CLIP models."""

__version__ = "0.1.0"

__all__ = ["ZIPTrainer", "__version__"]


def __getattr__(name):
    # Lazy, so that importing a bottom-level module (zipfast.env, zipfast.ops) does not load
    # the trainer and everything above it.
    if name == "ZIPTrainer":
        from .trainer import ZIPTrainer

        return ZIPTrainer
    raise AttributeError(f"module 'zipfast' has no attribute {name!r}")
