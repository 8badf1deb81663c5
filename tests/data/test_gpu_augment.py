"""The batched crop/resize/flip against its per-image definition; boxes against the documented sampling."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from zipfast.data.gpu_augment import (N_UNIFORMS, DecodedImages, crop_resize_flip, crop_resize_flip_batched,
                                      crop_resize_flip_reference, reference_boxes, sample_boxes)
from zipfast.data.transforms import CLIP_MEAN, CLIP_STD

SIZES = [(40, 30), (33, 47), (7, 90), (120, 9), (64, 64), (1, 1), (3, 200)]  # (w, h): odd and extreme shapes


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(SIZES):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boxes_are_the_documented_sampling(seed):
    g = torch.Generator().manual_seed(seed)
    H = torch.randint(1, 400, (300,), generator=g)
    W = torch.randint(1, 400, (300,), generator=g)
    H[:5], W[:5] = torch.tensor([1, 500, 3, 2, 50]), torch.tensor([500, 1, 2, 3, 50])  # fallback cases
    u = torch.rand(300, N_UNIFORMS, generator=g, dtype=torch.float64)
    top, left, h, w, flip = sample_boxes(H, W, u)
    got = list(zip(top.tolist(), left.tolist(), h.tolist(), w.tolist(), flip.tolist()))
    assert got == reference_boxes(H, W, u)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= H) & (left + w <= W) & (h > 0) & (w > 0)).all())


@pytest.mark.parametrize("size", [8, 13, 32])
def test_batched_views_match_the_per_image_reference(images, size):
    store = DecodedImages.decode(images, max_side=1000)
    for i, p in enumerate(images):  # decoding is lossless below the cap
        assert torch.equal(store.image(i), torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1))
    idx = torch.tensor([0, 1, 2, 3, 4, 5, 6, 2, 0])
    u = torch.rand(len(idx), N_UNIFORMS, generator=torch.Generator().manual_seed(size), dtype=torch.float64)
    boxes = sample_boxes(store.heights[idx], store.widths[idx], u)
    out = crop_resize_flip_batched(store, idx, boxes, size, CLIP_MEAN, CLIP_STD, chunk=4)
    assert out.shape == (len(idx), 3, size, size) and bool(torch.isfinite(out).all())
    for b, i in enumerate(idx.tolist()):
        box = tuple(int(t[b]) for t in boxes[:4])
        ref = crop_resize_flip_reference(store.image(i), box, bool(boxes[4][b]), size, CLIP_MEAN, CLIP_STD)
        err = ((out[b] - ref).abs().max() / ref.abs().max()).item()
        assert err <= 1e-5, (b, box, err)


def _per_view_logged(caplog) -> int:
    return sum("one F.interpolate per view" in r.getMessage() for r in caplog.records)


def test_the_cpu_choice_is_per_view_and_says_so_once(images, caplog):
    """crop_resize_flip on CPU images takes the per-view path (one log line per process) and agrees
    with the batched gathers, a different implementation, within fp32 rounding."""
    from zipfast import env

    store = DecodedImages.decode(images, max_side=1000)
    idx = torch.tensor([6, 0, 3, 3, 5, 1])
    u = torch.rand(len(idx), N_UNIFORMS, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    boxes = sample_boxes(store.heights[idx], store.widths[idx], u)
    env._logged.discard("augment-per-view")
    with caplog.at_level(logging.INFO, logger="zipfast"):
        on_cpu = crop_resize_flip(store, idx, boxes, 13, CLIP_MEAN, CLIP_STD)
        crop_resize_flip(store, idx, boxes, 13, CLIP_MEAN, CLIP_STD)
    assert _per_view_logged(caplog) == 1
    batched = crop_resize_flip_batched(store, idx, boxes, 13, CLIP_MEAN, CLIP_STD, chunk=4)
    assert bool(torch.isfinite(on_cpu).all())
    assert float((on_cpu - batched).abs().max() / batched.abs().max()) <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_gpu_choice_is_the_batched_gathers(images, caplog):
    from zipfast import env

    store = DecodedImages.decode(images, max_side=1000)
    idx = torch.tensor([6, 0, 3, 3, 5, 1, 2])
    u = torch.rand(len(idx), N_UNIFORMS, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    boxes = sample_boxes(store.heights[idx], store.widths[idx], u)
    env._logged.discard("augment-per-view")
    with caplog.at_level(logging.INFO, logger="zipfast"):
        on_gpu = crop_resize_flip(store.to("cuda"), idx, boxes, 13, CLIP_MEAN, CLIP_STD)
    assert on_gpu.device.type == "cuda" and _per_view_logged(caplog) == 0
    for b, i in enumerate(idx.tolist()):  # against the per-image definition, computed on the CPU
        box = tuple(int(t[b]) for t in boxes[:4])
        ref = crop_resize_flip_reference(store.image(i), box, bool(boxes[4][b]), 13, CLIP_MEAN, CLIP_STD)
        assert float((on_gpu[b].cpu() - ref).abs().max() / ref.abs().max()) <= 1e-5


def test_decode_caps_the_shorter_side_and_the_bytes(images):
    store = DecodedImages.decode(images, max_side=20)
    for i, (w, h) in enumerate(SIZES):
        assert min(store.heights[i].item(), store.widths[i].item()) == min(20, w, h)
    small = DecodedImages.decode(images, max_side=1000, max_bytes=4000, min_side=2)
    assert small.nbytes <= 4000


class _MeanModel:
    """Stands in for CLIP's image tower: the per-channel means of a view as its feature."""

    def encode_image(self, x):
        return x.mean(dim=(2, 3))


def test_decoded_source_is_seeded_by_seed_and_step(images):
    from zipfast.data.imagefolder import FewShotImageFolder
    from zipfast.data.sources import DecodedImageSource

    ds = FewShotImageFolder(root=images[0].parent, folders=["a"], classnames=["a"],
                            train=[(str(p), 0) for p in images], test=[(str(images[0]), 0)], shots=0, seed=0)
    src = DecodedImageSource(ds, _MeanModel(), 16, CLIP_MEAN, CLIP_STD)
    idx = torch.tensor([6, 3, 0, 0])
    a, _ = src.train_batch(idx, step=5, seed=1)
    b, _ = src.train_batch(idx, step=5, seed=1)
    c, _ = src.train_batch(idx, step=6, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[2], a[3])  # the same image gets its own box each time it appears
