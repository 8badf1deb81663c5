"""CLIP few-shot preprocessing (the Dassl protocol) with explicit randomness.

train_view = RandomResizedCrop(scale (0.08, 1), ratio (3/4, 4/3)) → RandomHorizontalFlip(0.5)
→ ToTensor → Normalize; test_view = Resize(shorter side) → CenterCrop → ToTensor → Normalize.
That is INPUT.TRANSFORMS = [random_resized_crop, random_flip, normalize], the official ZIP
setting. Each entry acts (`choices`): without random_resized_crop the training view is
center_crop (resize the shorter side, centre crop) if listed, else resize to size × size;
random_flip adds the flip; normalize the CLIP normalisation (train and test).
Every random number of train_view comes from a caller-owned torch.Generator, never the global
RNG, so an augmented epoch is reproducible and can be resumed from a saved generator state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from zipfast.data.imagefolder import load_image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_CHOICES = ("random_resized_crop", "random_flip", "normalize")
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)

_INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


def interpolation_mode(name: str) -> InterpolationMode:
    """"bicubic" | "bilinear" | "nearest" → torchvision InterpolationMode."""
    try:
        return _INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown interpolation {name!r}; use one of {', '.join(_INTERPOLATIONS)}") from None


def crop_params(width: int, height: int, generator: torch.Generator,
                scale: tuple[float, float] = CROP_SCALE,
                ratio: tuple[float, float] = CROP_RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop, in pixels.

    The algorithm and the order of draws are those of torchvision's
    RandomResizedCrop.get_params (10 tries, then a central crop), so a generator seeded with s
    gives the same box as get_params after torch.manual_seed(s).
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(
            torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    # fallback: the largest central crop whose aspect ratio lies within `ratio`
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _normalize(img: Image.Image, mean: Sequence[float], std: Sequence[float], normalize: bool = True) -> torch.Tensor:
    x = F.to_tensor(img)
    return F.normalize(x, list(mean), list(std)) if normalize else x


def train_view(img: Image.Image, size: int, mean: Sequence[float], std: Sequence[float],
               generator: torch.Generator, interpolation: str = "bicubic",
               choices: Sequence[str] = DEFAULT_CHOICES) -> torch.Tensor:
    """One augmented view → float32 [3, size, size]; by default random resized crop, flip p=0.5,
    normalise (see the module docstring for other `choices`)."""
    mode = interpolation_mode(interpolation)
    if "random_resized_crop" in choices:
        width, height = img.size
        top, left, h, w = crop_params(width, height, generator)
        img = F.resized_crop(img, top, left, h, w, [size, size], interpolation=mode)
    elif "center_crop" in choices:
        img = F.center_crop(F.resize(img, size, interpolation=mode), [size, size])
    else:
        img = F.resize(img, [size, size], interpolation=mode)
    if "random_flip" in choices and torch.rand(1, generator=generator).item() < 0.5:
        img = F.hflip(img)
    return _normalize(img, mean, std, "normalize" in choices)


def test_view(img: Image.Image, size: int, mean: Sequence[float], std: Sequence[float],
              interpolation: str = "bicubic", normalize: bool = True) -> torch.Tensor:
    """Resize the shorter side to size, centre crop, normalise → float32 [3, size, size]."""
    img = F.resize(img, size, interpolation=interpolation_mode(interpolation))
    return _normalize(F.center_crop(img, [size, size]), mean, std, normalize)


def views(paths: Sequence[str | os.PathLike], train: bool, size: int, mean: Sequence[float],
          std: Sequence[float], generator: torch.Generator | None = None,
          interpolation: str = "bicubic", choices: Sequence[str] = DEFAULT_CHOICES,
          workers: int = 0) -> torch.Tensor:
    """Load and preprocess images in order → float32 [N, 3, size, size].

    train=True draws one augmented view per image from `generator` (required). workers > 0
    decodes the files in that many threads (DATALOADER.NUM_WORKERS); the random draws stay
    in image order, so the result does not depend on it.
    """
    interpolation_mode(interpolation)  # fail on a bad name before reading any file
    if train and generator is None:
        raise ValueError("views(train=True) needs a torch.Generator for the augmentation draws")
    if workers > 0 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
            images = list(pool.map(load_image, paths))
    else:
        images = (load_image(p) for p in paths)
    out = torch.empty(len(paths), 3, size, size)
    for n, img in enumerate(images):
        out[n] = (train_view(img, size, mean, std, generator, interpolation, choices) if train
                  else test_view(img, size, mean, std, interpolation, "normalize" in choices))
    return out
