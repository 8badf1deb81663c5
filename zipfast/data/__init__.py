"""Datasets and CLIP preprocessing."""

from zipfast.data.imagefolder import IMAGE_EXTENSIONS, DatasetError, FewShotImageFolder, load_image
from zipfast.data.transforms import CLIP_MEAN, CLIP_STD, test_view, train_view, views

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "IMAGE_EXTENSIONS", "DatasetError", "FewShotImageFolder",
    "load_image", "test_view", "train_view", "views",
]
