"""Pixel minibatches for the image-side methods, and a generated image-folder task.

`PixelSource` gives what the image-side prompts need: CLIP-normalised pixels, not features.
The training images of a few-shot split are decoded once and kept in memory; each
minibatch's augmentation (random resized crop + flip) is drawn from a generator derived
from (seed, batch number), as `ImageSource` does, so a resumed run draws the same views.

`write_synthetic_image_folder` writes a small seeded image-folder task (per class a colour
and a stripe orientation, plus noise) for tests and `zipfast compare` where no dataset can
be downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .imagefolder import load_image
from .sources import derive_seed
from .transforms import test_view, train_view

_AUGMENT = 2  # the same stream key as ImageSource: a step's views do not depend on the source type


class PixelSource:
    """train_batch(idx, t, seed) → (pixels [B, 3, S, S], labels [B]); test_batches(n) yields the
    same for the test split (resize + centre crop)."""

    def __init__(self, dataset, size: int, mean, std, interpolation: str = "bicubic"):
        self.dataset, self.size, self.mean, self.std = dataset, int(size), tuple(mean), tuple(std)
        self.interpolation = interpolation
        self._images = [load_image(p) for p, _ in dataset.train]
        self.train_y = torch.tensor([y for _, y in dataset.train])
        self.test_y = torch.tensor([y for _, y in dataset.test])

    @property
    def n_train(self) -> int:
        return len(self._images)

    def train_batch(self, idx: torch.Tensor, t: int, seed: int):
        g = torch.Generator().manual_seed(derive_seed(seed, _AUGMENT, t))
        x = torch.stack([train_view(self._images[i], self.size, self.mean, self.std, g, self.interpolation)
                         for i in idx.tolist()])
        return x, self.train_y[idx]

    def test_batches(self, batch_size: int):
        items = self.dataset.test
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            x = torch.stack([test_view(load_image(p), self.size, self.mean, self.std, self.interpolation)
                             for p, _ in chunk])
            yield x, self.test_y[i:i + len(chunk)]


def write_synthetic_image_folder(root: str | os.PathLike, n_classes: int = 4, per_class: int = 24,
                                 size: int = 48, seed: int = 0) -> Path:
    """root/<class>/<i>.png: class c has its own mean colour and stripe direction; each image adds
    a random shift of both and pixel noise (seeded). Returns root."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, size=(n_classes, 3))
    yy, xx = np.mgrid[0:size, 0:size] / size
    for c in range(n_classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        angle = np.pi * c / n_classes
        for i in range(per_class):
            phase = rng.uniform(0, 2 * np.pi)
            stripes = np.sin(2 * np.pi * 4 * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
            img = colours[c] + rng.normal(0, 12, 3) + 40 * stripes[..., None] + rng.normal(0, 10, (size, size, 3))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{c}_{i}.png")
    return root
