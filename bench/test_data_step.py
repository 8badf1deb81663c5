"""The data part vs the image-tower part of one real-data training step (group `data_step`).

Minibatch: 128 views of 224 px from 128 JPEGs of 500×375 (a typical CoOp image); ViT-B/16 with
random weights (the session `clip` fixture). Three benchmarks, compared in one run:
  data-pil    : decode + PIL random-resized-crop/flip + normalise per image (`--augment pil`)
  data-tensor : crop/resize/flip + normalise from images decoded once (`--augment tensor`; on a CPU
                one F.interpolate per view, gpu_augment.crop_resize_flip)
  image-tower : model.encode_image on the 128 views
Target: data-tensor ≤ 5 % of data-tensor + image-tower.

Group `pixel_step`: one pixel minibatch of the image-side methods (BPT-VLM, BAR, BlackVIP), 32 views
of 224 px, normalised, from the same 128 images decoded once at the source's construction:
  pixels[pil]     : data.pixels.PixelSource.train_batch (PIL crop/resize/flip per image, `augment` pil)
  pixels[tensor]  : data.pixels.DecodedPixelSource.train_batch (`augment` tensor; on a CPU one
                    F.interpolate per view)
  pixels[gathers] : the same boxes through gpu_augment.crop_resize_flip_batched (the GPU implementation)

    .venv/bin/python -m pytest bench/test_data_step.py --benchmark-json=bench/results/data_step.json
    .venv/bin/python -m pytest bench/test_data_step.py -k "not tower" --benchmark-json=bench/results/augment_cpu.json
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zipfast.data.gpu_augment import N_UNIFORMS, DecodedImages, crop_resize_flip, crop_resize_flip_batched, sample_boxes
from zipfast.data.imagefolder import FewShotImageFolder
from zipfast.data.pixels import DecodedPixelSource, PixelSource
from zipfast.data.sources import batch_indices, step_boxes
from zipfast.data.transforms import CLIP_MEAN, CLIP_STD, views

B, SIZE = 128, 224
PIXEL_B = 32  # the image-side methods' minibatch in bench/test_image_throughput.py


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    d = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(B):
        p = d / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def decoded(jpegs):
    return DecodedImages.decode(jpegs, max_side=2 * SIZE)


def _tensor_views(store, g):
    u = torch.rand(B, N_UNIFORMS, generator=g, dtype=torch.float64)
    return crop_resize_flip(store, torch.arange(B), sample_boxes(store.heights, store.widths, u), SIZE,
                            CLIP_MEAN, CLIP_STD)


def test_data_pil(benchmark, jpegs):
    benchmark.group = "data_step"
    benchmark.extra_info.update(kind="data", path="pil", batch=B, size=SIZE)
    g = torch.Generator().manual_seed(0)
    out = benchmark.pedantic(lambda: views(jpegs, True, SIZE, CLIP_MEAN, CLIP_STD, generator=g), rounds=3)
    assert out.shape == (B, 3, SIZE, SIZE)


def test_data_tensor(benchmark, decoded):
    benchmark.group = "data_step"
    benchmark.extra_info.update(kind="data", path="tensor", batch=B, size=SIZE, decoded_bytes=decoded.nbytes)
    g = torch.Generator().manual_seed(0)
    out = benchmark.pedantic(lambda: _tensor_views(decoded, g), rounds=5, warmup_rounds=1)
    assert out.shape == (B, 3, SIZE, SIZE)


def test_image_tower(benchmark, clip, decoded):
    benchmark.group = "data_step"
    benchmark.extra_info.update(kind="tower", model="ViT-B-16 (random weights)", batch=B, size=SIZE)
    x = _tensor_views(decoded, torch.Generator().manual_seed(1))
    model = clip[0]
    with torch.no_grad():
        feats = benchmark.pedantic(lambda: model.encode_image(x), rounds=2)
    assert feats.shape[0] == B


@pytest.mark.parametrize("path", ["pil", "tensor", "gathers"])
def test_pixels(benchmark, jpegs, path):
    benchmark.group = "pixel_step"
    ds = FewShotImageFolder(root=jpegs[0].parent, folders=["x"], classnames=["x"], train=[(str(p), 0) for p in jpegs],
                            test=[], shots=0, seed=0)
    src = (PixelSource if path == "pil" else DecodedPixelSource)(ds, SIZE, CLIP_MEAN, CLIP_STD)
    benchmark.extra_info.update(kind="pixels", path=path, batch=PIXEL_B, size=SIZE, images=len(jpegs))
    t = iter(range(1, 10**6))

    def minibatch():  # the trainer's: indices and views of minibatch t
        step = next(t)
        idx = batch_indices(src.n_train, PIXEL_B, step, 0)
        if path == "gathers":
            return crop_resize_flip_batched(src.images, idx, step_boxes(src.images, idx, step, 0), SIZE, CLIP_MEAN,
                                            CLIP_STD)
        return src.train_batch(idx, step, 0)[0]

    x = benchmark.pedantic(minibatch, rounds=7, warmup_rounds=1)
    assert x.shape == (PIXEL_B, 3, SIZE, SIZE)
