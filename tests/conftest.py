"""Shared fixtures: a tiny generated image-folder dataset, and no network access."""

import os

import numpy as np
import pytest

# huggingface_hub reads HF_HUB_OFFLINE once, when it is imported: set it before any test module
# imports open_clip, so that no test tries to download weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Triton reads TRITON_INTERPRET when it is imported, and a test module of any folder may import it
# (through torch.compile); without a GPU the Triton kernels run under the interpreter (`make test-gpu`
# sets it to 0).
os.environ.setdefault("TRITON_INTERPRET", "1")

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


@pytest.fixture(scope="module")
def planted_task():
    """(model, tokenizer, task): the planted task at test size (4 context tokens, 4 shots, 5 test images per class)."""
    from zipfast.data.planted import make_planted_task, planted_model
    from zipfast.engine.towers import TextTower

    model, tokenizer = planted_model(0)
    task = make_planted_task(TextTower(model), tokenizer, n_ctx=4, shots=4, test_per_class=5, seed=0)
    return model, tokenizer, task


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# Verbatim text of LOG-postech/ZIP configs/trainers/ZIP/vit_b16.yaml (no trailing newline); shared by the config and CLI tests.
OFFICIAL_YAML = """\
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 128
  TEST:
    BATCH_SIZE: 128
  NUM_WORKERS: 8

INPUT:
  SIZE: (224, 224)
  INTERPOLATION: "bicubic"
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
  TRANSFORMS: ["random_resized_crop", "random_flip", "normalize"]

OPTIM:
  MAX_EPOCH: 1000

TRAIN:
  PRINT_FREQ: 20

TRAINER:
  BASIC:
    OPT_TYPE: "spsa-clip"
    SP_AVG: 5
  ZIP:
    SPSA_PARAMS: [1.0, 0.01, 0.01, 0.4, 0.1]
    MOMS: 0.8
    P_EPS: 1.0

MODEL:
  BACKBONE:
    NAME: "ViT-B/16\""""


@pytest.fixture
def one_cpu_thread():
    """Runs compared bit for bit with fixtures recorded on one CPU thread (fp32 reductions depend on it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def zipfast_cache(tmp_path, monkeypatch):
    """A fresh $ZIPFAST_CACHE (synthetic-images, self-check verdicts), never ~/.cache."""
    monkeypatch.setenv("ZIPFAST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
