"""Shared fixtures: a tiny generated image-folder dataset, and no network access."""

import os

import numpy as np
import pytest

# huggingface_hub reads HF_HUB_OFFLINE once, when it is imported: set it before any test module
# imports open_clip, so that no test tries to download weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_CLASSES = ("annual_crop", "forest", "sea_lake")
TINY_PER_CLASS = 6


def write_tiny_image_folder(root, classes=TINY_CLASSES, per_class=TINY_PER_CLASS, seed=0):
    """root/<class>/<i>.png: small images (about 40×36) of a random colour per image, plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = int(rng.integers(34, 47)), int(rng.integers(30, 43))
            colour = rng.integers(0, 256, size=3)
            pixels = colour[None, None, :] + rng.integers(-25, 26, size=(h, w, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_image_folder(tmp_path_factory):
    """Root of a generated image folder: 3 classes × 6 PNGs, layout root/<class>/*.png."""
    return write_tiny_image_folder(tmp_path_factory.mktemp("tiny_image_folder"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
