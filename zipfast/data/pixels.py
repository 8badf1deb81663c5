"""Pixel minibatches for the image-side methods, and a generated image-folder task.

`PixelSource` gives what the image-side prompts need: CLIP-normalised pixels, not features.
The training images of a few-shot split are decoded once and kept in memory. `augment` pil
(`PixelSource`): each minibatch's augmentation (INPUT.TRANSFORMS; by default random resized
crop + flip) runs through PIL per image, drawn from a generator derived from (seed, minibatch
number) as `ImageSource` does. `augment` tensor (`DecodedPixelSource`): the images are decoded
once into uint8 memory on the run's device and each minibatch is cropped, resized and flipped
as batched tensor ops (data.gpu_augment), seeded by (seed, minibatch number) as
`DecodedImageSource`. Either way a resumed run draws the same views, and the test split is
the same PIL resize + centre crop.

`write_synthetic_image_folder` writes a small seeded image-folder task (per class a colour
and a stripe orientation, plus noise) for tests and `zipfast compare` where no dataset can
be downloaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from zipfast.data.gpu_augment import DecodedImages, pil_fallback
from zipfast.data.imagefolder import load_image, no_val_error
from zipfast.data.sources import derive_seed, step_views
from zipfast.data.transforms import DEFAULT_CHOICES, test_view, train_view

log = logging.getLogger("zipfast.data")
_AUGMENT = 2  # the same stream key as ImageSource: a step's views do not depend on the source type


class PixelSource:
    """train_batch(idx, t, seed) → (pixels [B, 3, S, S] float32, labels [B]); test_batches(n) yields
    the same for the test split (resize + centre crop), val_batches(n) for the validation split.
    transforms: INPUT.TRANSFORMS."""

    def __init__(self, dataset, size: int, mean, std, interpolation: str = "bicubic", transforms=DEFAULT_CHOICES):
        self.dataset, self.size, self.mean, self.std = dataset, int(size), tuple(mean), tuple(std)
        self.interpolation, self.transforms = interpolation, tuple(transforms)
        self.train_y = torch.tensor([y for _, y in dataset.train])
        self.test_y = torch.tensor([y for _, y in dataset.test])
        self._decode()

    def _decode(self) -> None:
        self._images = [load_image(p) for p, _ in self.dataset.train]

    @property
    def n_train(self) -> int:
        return len(self.train_y)

    def train_batch(self, idx: torch.Tensor, t: int, seed: int):
        g = torch.Generator().manual_seed(derive_seed(seed, _AUGMENT, t))
        x = torch.stack([train_view(self._images[i], self.size, self.mean, self.std, g, self.interpolation,
                                    self.transforms) for i in idx.tolist()])
        return x, self.train_y[idx]

    def test_batches(self, batch_size: int):
        return self._view_batches(self.dataset.test, self.test_y, batch_size)

    def val_batches(self, batch_size: int):
        """The validation split's batches, as test_batches (resize + centre crop); DatasetError (a
        UserError) at once when the dataset gives no validation images."""
        items = getattr(self.dataset, "val", None)
        if not items:
            raise no_val_error()
        return self._view_batches(items, torch.tensor([y for _, y in items]), batch_size)

    def _view_batches(self, items, labels: torch.Tensor, batch_size: int):
        normalize = "normalize" in self.transforms
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            x = torch.stack([test_view(load_image(p), self.size, self.mean, self.std, self.interpolation, normalize)
                             for p, _ in chunk])
            yield x, labels[i:i + len(chunk)]


class DecodedPixelSource(PixelSource):
    """PixelSource whose training minibatches come from images decoded once into uint8 memory on
    `device` (shorter side capped at max_side, default 2·size, lowered to fit max_bytes) through
    the batched random-resized-crop + flip of data.gpu_augment; pixels are on `device`. Implements
    only the official INPUT.TRANSFORMS (gpu_augment.TENSOR_TRANSFORMS). Test views: PixelSource's."""

    def __init__(self, dataset, size: int, mean, std, interpolation: str = "bicubic", device="cpu",
                 max_side: int | None = None, max_bytes: int = 8 << 30, decode_progress=None):
        self.device = torch.device(device)
        self._decode_args = (max_side or 2 * int(size), max_bytes, decode_progress)
        super().__init__(dataset, size, mean, std, interpolation)

    def _decode(self) -> None:
        max_side, max_bytes, progress = self._decode_args
        self.images = DecodedImages.decode([p for p, _ in self.dataset.train], max_side, max_bytes,
                                           min_side=self.size, progress=progress).to(self.device)

    def train_batch(self, idx: torch.Tensor, t: int, seed: int):
        return step_views(self.images, idx, t, seed, self.size, self.mean, self.std), self.train_y[idx]


def build_pixel_source(dataset, size: int, mean, std, interpolation: str = "bicubic", transforms=DEFAULT_CHOICES,
                       augment: str = "tensor", device="cpu", progress: bool = False):
    """(source, adjustments) for `augment` "tensor" | "pil". INPUT.TRANSFORMS other than the
    official list run on the PIL path (the rule of zipfast.evaluate.base.adapt_config): one log line and one
    adjustment note. progress: a tqdm bar "decode" while the tensor path decodes."""
    note = pil_fallback(augment, transforms)
    if note:
        log.info("%s", note)
    if augment != "tensor" or note:
        return PixelSource(dataset, size, mean, std, interpolation, transforms), [note] if note else []
    from tqdm.auto import tqdm

    with tqdm(total=len(dataset.train), desc="decode", unit="image", disable=not progress) as bar:
        return DecodedPixelSource(dataset, size, mean, std, interpolation, device, decode_progress=bar.update), []


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
