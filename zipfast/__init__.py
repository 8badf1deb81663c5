"""zipfast: fast zeroth-order intrinsic-dimensional prompt tuning (ZIP) of CLIP models."""

__version__ = "0.1.0"

from .trainer import ZIPTrainer  # noqa: E402

__all__ = ["ZIPTrainer", "__version__"]
