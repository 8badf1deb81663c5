"""The image-side methods' pixel minibatches on the tensor path (`augment` tensor) against the PIL path."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from zipfast.data.gpu_augment import DecodedImages, crop_resize_flip_batched
from zipfast.data.imagefolder import FewShotImageFolder, load_image
from zipfast.data.pixels import DecodedPixelSource, PixelSource, build_pixel_source
from zipfast.data.sources import step_boxes
from zipfast.data.transforms import CLIP_MEAN, CLIP_STD, CROP_RATIO, CROP_SCALE, crop_params
from zipfast.data.transforms import test_view as pil_test_view

SIZES = [(40, 30), (33, 47), (64, 64), (21, 90), (90, 17)]  # (w, h): odd and extreme shapes
S = 24


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("pixels")
    rng = np.random.default_rng(3)
    items = []
    for i in range(11):
        w, h = SIZES[i % len(SIZES)]
        p = d / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(p)
        items.append((str(p), i % 3))
    return FewShotImageFolder(root=d, folders=["a", "b", "c"], classnames=["a", "b", "c"], train=items[:8],
                              test=items[8:] + items[:3], shots=0, seed=0)


def test_tensor_minibatches_are_seeded_by_seed_and_minibatch(dataset):
    src = DecodedPixelSource(dataset, S, CLIP_MEAN, CLIP_STD)
    again = DecodedPixelSource(dataset, S, CLIP_MEAN, CLIP_STD)  # a resumed run builds a fresh source
    idx = torch.tensor([5, 1, 7, 1, 0])
    a, ya = src.train_batch(idx, 4, seed=2)
    b, _ = again.train_batch(idx, 4, seed=2)
    assert torch.equal(a, b)
    assert torch.equal(ya, torch.tensor([dataset.train[i][1] for i in idx.tolist()]))
    for other in (src.train_batch(idx, 5, seed=2)[0], src.train_batch(idx, 4, seed=3)[0]):
        assert not any(torch.equal(a[k], other[k]) for k in range(len(idx)))
    assert not torch.equal(a[1], a[3])  # the same image drawn twice gets its own box


def test_tensor_views_are_the_documented_crop_of_the_decoded_images(dataset):
    src = DecodedPixelSource(dataset, S, CLIP_MEAN, CLIP_STD, max_side=1000)  # no pre-shrink: compare to the file
    idx = torch.tensor([0, 3, 4, 6, 2])
    x, _ = src.train_batch(idx, 9, seed=0)
    assert x.shape == (5, 3, S, S) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    pix = x * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    assert float(pix.min()) >= -1e-5 and float(pix.max()) <= 1 + 1e-5  # bilinear: inside the source range
    assert float(pix.max() - pix.min()) > 0.5  # random images: not a constant view
    for i in idx.tolist():
        image = torch.from_numpy(np.array(load_image(dataset.train[i][0]))).permute(2, 0, 1)
        assert torch.equal(src.images.image(i), image)  # small images are decoded losslessly
    # the CPU source takes the per-view path; the batched gathers (the GPU path) are another implementation
    ref = crop_resize_flip_batched(src.images, idx, step_boxes(src.images, idx, 9, 0), S, CLIP_MEAN, CLIP_STD)
    assert float((x - ref).abs().max() / ref.abs().max()) <= 1e-5


def test_test_split_is_identical_on_both_paths(dataset):
    pil = PixelSource(dataset, S, CLIP_MEAN, CLIP_STD)
    tensor = DecodedPixelSource(dataset, S, CLIP_MEAN, CLIP_STD)
    a, b = list(pil.test_batches(2)), list(tensor.test_batches(2))
    assert len(a) == len(b) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    first = pil_test_view(load_image(dataset.test[0][0]), S, CLIP_MEAN, CLIP_STD)
    assert torch.equal(a[0][0][0], first)


def _ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov–Smirnov statistic."""
    grid = torch.cat([a, b]).sort().values
    fa = torch.searchsorted(a.sort().values, grid, right=True) / len(a)
    fb = torch.searchsorted(b.sort().values, grid, right=True) / len(b)
    return float((fa - fb).abs().max())


@pytest.mark.parametrize("width,height", [(500, 375), (37, 400)])  # the second falls back often
def test_crop_distribution_matches_the_pil_path(width, height):
    n, per = 4000, 40
    store = DecodedImages(torch.empty(0, dtype=torch.uint8), torch.zeros(per, dtype=torch.long),
                          torch.full((per,), height), torch.full((per,), width))
    boxes = [step_boxes(store, torch.arange(per), t, seed=7) for t in range(1, n // per + 1)]
    top, left, h, w, flip = (torch.cat(c) for c in zip(*boxes))
    g = torch.Generator().manual_seed(7)
    ref = torch.tensor([crop_params(width, height, g) for _ in range(n)], dtype=torch.float64)
    area = float(width * height)
    s, r = (h * w).double() / area, w.double() / h.double()
    s_ref, r_ref = ref[:, 2] * ref[:, 3] / area, ref[:, 3] / ref[:, 2]
    crit = 1.95 * math.sqrt(2 / n)  # KS critical value at α = 0.001
    assert _ks(s, s_ref) < crit and _ks(r.log(), r_ref.log()) < crit
    # the bounds of the boxes actually drawn: scale and ratio up to the rounding of h and w
    tol_r = 1 / float(h.min()) + 1 / float(w.min())
    assert float(s.min()) >= CROP_SCALE[0] * (1 - tol_r) and float(s.max()) <= CROP_SCALE[1]
    inside = (h < height) | (w < width)  # not the whole image
    assert float(r[inside].min()) >= CROP_RATIO[0] * (1 - tol_r)
    assert float(r[inside].max()) <= CROP_RATIO[1] * (1 + tol_r)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width)).all())
    if width == 500:  # a wide range of the allowed scale is reached
        assert float(s.min()) < 0.09 and float(s.max()) > 0.95
    assert abs(float(flip.double().mean()) - 0.5) < 4 * math.sqrt(0.25 / n)


def test_other_transforms_fall_back_to_pil_with_a_note(dataset, caplog):
    with caplog.at_level(logging.INFO, logger="zipfast"):
        src, notes = build_pixel_source(dataset, S, CLIP_MEAN, CLIP_STD, transforms=("center_crop", "normalize"))
    assert type(src) is PixelSource and notes == [
        "augment tensor -> pil (INPUT.TRANSFORMS ['center_crop', 'normalize'] runs on the PIL path only)"]
    assert notes[0] in caplog.text
    # the PIL path applies them: centre crop without flip is the test view, deterministic
    x, _ = src.train_batch(torch.tensor([2]), 1, seed=0)
    assert torch.equal(x[0], pil_test_view(load_image(dataset.train[2][0]), S, CLIP_MEAN, CLIP_STD))
    src, notes = build_pixel_source(dataset, S, CLIP_MEAN, CLIP_STD, transforms=("random_flip", "normalize",
                                                                                "random_resized_crop"))
    assert type(src) is DecodedPixelSource and notes == []
    src, notes = build_pixel_source(dataset, S, CLIP_MEAN, CLIP_STD, augment="pil")
    assert type(src) is PixelSource and notes == []
