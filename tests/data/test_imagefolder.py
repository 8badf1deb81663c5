"""Tests for zipfast.data: image-folder scanning, k-shot sampling, seeded CLIP transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as TV
from torchvision.transforms import InterpolationMode

# the module, not its names: a bare `test_view` in this namespace would be collected as a test
from zipfast.data import transforms as tf
from zipfast.data.imagefolder import IMAGE_EXTENSIONS, DatasetError, FewShotImageFolder, load_image

CLASSES = ["annual_crop", "forest", "river"]
SIZES = [(40, 30), (33, 47)]  # (width, height): one landscape, one portrait


def write_images(class_dir: Path, n: int, rng: np.random.Generator, start: int = 0) -> list[Path]:
    class_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        w, h = SIZES[i % len(SIZES)]
        colour = rng.integers(0, 256, size=3, dtype=np.uint8)
        arr = np.broadcast_to(colour, (h, w, 3)).copy()
        arr[: h // 2] = rng.integers(0, 256, size=(h // 2, w, 3), dtype=np.uint8)  # some texture
        path = class_dir / f"img_{i:02d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def make_flat(root: Path, per_class: int = 5, classes=CLASSES) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        write_images(root / c, per_class, rng)
    return root


def make_split(root: Path, train_n: int = 5, test_n: int = 3, test: bool = True) -> Path:
    rng = np.random.default_rng(1)
    for c in CLASSES:
        write_images(root / "train" / c, train_n, rng)
        if test:
            write_images(root / "test" / c, test_n, rng, start=100)
    return root


def per_class(samples: list[tuple[str, int]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for path, label in samples:
        out.setdefault(label, []).append(path)
    return out


# --------------------------------------------------------------------------- layouts


def test_flat_layout_classes_and_shots(tmp_path):
    ds = FewShotImageFolder.from_root(make_flat(tmp_path), shots=2, seed=1)
    assert ds.folders == CLASSES
    assert ds.classnames == ["annual crop", "forest", "river"]
    assert ds.root == tmp_path
    train, test = per_class(ds.train), per_class(ds.test)
    assert sorted(train) == sorted(test) == [0, 1, 2]
    for label, folder in enumerate(CLASSES):
        assert len(train[label]) == 2 and len(test[label]) == 3
        assert not set(train[label]) & set(test[label])  # disjoint
        assert set(train[label]) | set(test[label]) == {str(p) for p in (tmp_path / folder).iterdir()}
        assert all(Path(p).parent.name == folder for p in train[label] + test[label])


def test_split_layout_uses_test_folder(tmp_path):
    ds = FewShotImageFolder.from_root(make_split(tmp_path), shots=3, seed=0)
    assert ds.classnames == ["annual crop", "forest", "river"] and ds.has_test_split
    assert all(len(v) == 3 for v in per_class(ds.train).values())
    test = per_class(ds.test)
    for label, folder in enumerate(CLASSES):
        assert sorted(test[label]) == sorted(str(p) for p in (tmp_path / "test" / folder).iterdir())
    assert all("/train/" in p for p, _ in ds.train)


def test_split_layout_without_test_folder_uses_leftovers(tmp_path):
    ds = FewShotImageFolder.from_root(make_split(tmp_path, test=False), shots=2, seed=0)
    train, test = per_class(ds.train), per_class(ds.test)
    for label in range(3):
        assert len(train[label]) == 2 and len(test[label]) == 3
        assert not set(train[label]) & set(test[label])


def test_all_shots_and_non_images_ignored(tmp_path):
    root = make_split(tmp_path)
    (root / "train" / "forest" / "notes.txt").write_text("not an image")
    (root / "train" / "forest" / ".hidden.png").write_bytes(b"junk")
    upper = root / "train" / "forest" / "UPPER.JPG"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(upper, format="JPEG")
    ds = FewShotImageFolder.from_root(root, shots=0, seed=0)
    train = per_class(ds.train)
    assert len(train[0]) == 5 and len(train[1]) == 6 and str(upper) in train[1]
    assert ".jpg" in IMAGE_EXTENSIONS and ".tiff" in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------- sampling


def test_sampling_deterministic_and_seed_dependent(tmp_path):
    root = make_flat(tmp_path, per_class=12)
    a = FewShotImageFolder.from_root(root, shots=1, seed=3)
    b = FewShotImageFolder.from_root(root, shots=1, seed=3)
    assert a.train == b.train and a.test == b.test
    # 1 of 12 per class over 3 classes: 12**3 possible draws, so 20 seeds cannot all agree
    draws = {tuple(FewShotImageFolder.from_root(root, shots=1, seed=s).train) for s in range(20)}
    assert len(draws) > 1
    assert FewShotImageFolder.from_root(root, shots=1, seed=4).train != a.train


def test_sampling_independent_of_listing_order_and_other_classes(tmp_path):
    root = make_flat(tmp_path, per_class=8)
    before = per_class(FewShotImageFolder.from_root(root, shots=3, seed=5).train)
    write_images(root / "zebra", 4, np.random.default_rng(9))  # a new class sorts last
    after = per_class(FewShotImageFolder.from_root(root, shots=3, seed=5).train)
    assert [after[i] for i in range(3)] == [before[i] for i in range(3)]


def test_test_per_class_cap(tmp_path):
    root = make_flat(tmp_path, per_class=9)
    ds = FewShotImageFolder.from_root(root, shots=2, seed=0, test_per_class=4)
    full = FewShotImageFolder.from_root(root, shots=2, seed=0)
    capped, rest = per_class(ds.test), per_class(full.test)
    for label in range(3):
        assert len(capped[label]) == 4 and set(capped[label]) <= set(rest[label])
    assert ds.train == full.train
    assert FewShotImageFolder.from_root(root, shots=2, seed=0, test_per_class=4).test == ds.test
    with pytest.raises(DatasetError, match="test_per_class=0"):
        FewShotImageFolder.from_root(root, shots=2, seed=0, test_per_class=0)


# --------------------------------------------------------------------------- errors


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"'.*nowhere' does not exist"):
        FewShotImageFolder.from_root(tmp_path / "nowhere", shots=1, seed=0)


def test_root_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DatasetError, match=r"file\.txt' is not a directory"):
        FewShotImageFolder.from_root(f, shots=1, seed=0)


def test_root_without_class_folders(tmp_path):
    with pytest.raises(DatasetError, match="has no class folders"):
        FewShotImageFolder.from_root(tmp_path, shots=1, seed=0)


def test_empty_class_folder(tmp_path):
    root = make_flat(tmp_path)
    (root / "empty_class").mkdir()
    (root / "empty_class" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"'.*empty_class' contains no images"):
        FewShotImageFolder.from_root(root, shots=1, seed=0)


def test_too_few_images_for_shots(tmp_path):
    root = make_flat(tmp_path)
    write_images(root / "small", 2, np.random.default_rng(0))
    with pytest.raises(DatasetError, match=r"class 'small' has 2 image\(s\): 4 shots .*lower the shots "
                                           r"\(--shots / TrainConfig.shots\) to at most 1,"):
        FewShotImageFolder.from_root(root, shots=4, seed=0)


def test_flat_layout_class_with_no_test_images(tmp_path):
    root = make_flat(tmp_path, per_class=5)
    write_images(root / "tiny", 2, np.random.default_rng(0))
    with pytest.raises(DatasetError, match=r"class 'tiny' has 2 image\(s\): 2 shots and at least one test image"):
        FewShotImageFolder.from_root(root, shots=2, seed=0)
    with pytest.raises(DatasetError, match=r"class 'annual_crop' has no images left"):
        FewShotImageFolder.from_root(root, shots=0, seed=0)


def test_split_layout_all_shots_is_fine_with_test_folder(tmp_path):
    ds = FewShotImageFolder.from_root(make_split(tmp_path, train_n=2), shots=2, seed=0)
    assert len(ds.train) == 6 and len(ds.test) == 9


def test_mismatched_test_classes(tmp_path):
    root = make_split(tmp_path)
    (root / "test" / "river").rename(root / "test" / "lake")
    with pytest.raises(DatasetError, match=r"differ.*only in .*train': river.*only in .*test': lake"):
        FewShotImageFolder.from_root(root, shots=1, seed=0)


def test_unreadable_image(tmp_path):
    root = make_flat(tmp_path)
    bad = root / "forest" / "bad.jpg"
    bad.write_bytes(b"\x00garbage, not a jpeg" * 10)
    with pytest.raises(DatasetError, match=r"cannot read image file '.*bad\.jpg'"):
        load_image(bad)
    with pytest.raises(DatasetError, match=r"bad\.jpg"):
        tf.views([root / "forest" / "img_00.png", bad], train=False, size=8,
                 mean=tf.CLIP_MEAN, std=tf.CLIP_STD)


def test_load_image_converts_to_rgb(tmp_path):
    p = tmp_path / "grey.png"
    Image.new("L", (5, 4), 77).save(p)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (5, 4) and img.getpixel((0, 0)) == (77, 77, 77)


# --------------------------------------------------------------------------- transforms


def noise_image(w: int = 40, h: int = 30, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_train_view_shape_and_determinism():
    img = noise_image()
    a = tf.train_view(img, 16, tf.CLIP_MEAN, tf.CLIP_STD, gen(0))
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, tf.train_view(img, 16, tf.CLIP_MEAN, tf.CLIP_STD, gen(0)))
    assert not torch.equal(a, tf.train_view(img, 16, tf.CLIP_MEAN, tf.CLIP_STD, gen(1)))


def test_train_view_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tf.train_view(noise_image(), 8, tf.CLIP_MEAN, tf.CLIP_STD, gen(0))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
def test_train_view_constant_colour_values(interpolation):
    colour = (200, 17, 90)
    expected = (torch.tensor(colour) / 255 - torch.tensor(tf.CLIP_MEAN)) / torch.tensor(tf.CLIP_STD)
    for w, h in [(1, 1), (23, 9)]:
        out = tf.train_view(Image.new("RGB", (w, h), colour), 12, tf.CLIP_MEAN, tf.CLIP_STD,
                            gen(7), interpolation)
        assert torch.allclose(out, expected[:, None, None].expand(3, 12, 12), atol=1e-6)


def test_crop_params_match_torchvision_get_params():
    img = noise_image(40, 30)
    for seed in range(50):
        torch.manual_seed(seed)
        ref = TV.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
        assert tf.crop_params(40, 30, gen(seed)) == tuple(ref)


@pytest.mark.parametrize("w,h,min_frac", [
    # rounding the crop's sides to pixels can take the area a little under 0.08 on small images
    (40, 30, 0.06), (33, 47, 0.06), (1, 1, 1.0),
    # extreme aspect ratios often fall back to the central crop, which may be any size
    (200, 7, 0.0), (5, 90, 0.0),
])
def test_crop_params_inside_image(w, h, min_frac):
    g = gen(0)
    for _ in range(200):
        top, left, ch, cw = tf.crop_params(w, h, g)
        assert 0 <= top and 0 <= left and 0 < ch and 0 < cw
        assert top + ch <= h and left + cw <= w
        assert min_frac <= ch * cw / (w * h) <= 1.0


def test_test_view_matches_torchvision_pipeline():
    for w, h in [(40, 30), (33, 47)]:
        img = noise_image(w, h, seed=w)
        ref = TV.Compose([
            TV.Resize(16, interpolation=InterpolationMode.BICUBIC), TV.CenterCrop(16),
            TV.ToTensor(), TV.Normalize(tf.CLIP_MEAN, tf.CLIP_STD)])(img)
        out = tf.test_view(img, 16, tf.CLIP_MEAN, tf.CLIP_STD)
        assert out.shape == (3, 16, 16) and out.dtype == torch.float32
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_views_batches_and_validates(tmp_path):
    paths = write_images(tmp_path / "c", 3, np.random.default_rng(0))
    batch = tf.views(paths, train=True, size=10, mean=tf.CLIP_MEAN, std=tf.CLIP_STD, generator=gen(0))
    assert batch.shape == (3, 3, 10, 10) and batch.dtype == torch.float32
    g = gen(0)  # one generator threaded through the batch reproduces it view by view
    manual = [tf.train_view(load_image(p), 10, tf.CLIP_MEAN, tf.CLIP_STD, g) for p in paths]
    assert torch.equal(batch, torch.stack(manual))
    test_batch = tf.views(paths, train=False, size=10, mean=tf.CLIP_MEAN, std=tf.CLIP_STD)
    assert torch.equal(test_batch[1], tf.test_view(load_image(paths[1]), 10, tf.CLIP_MEAN, tf.CLIP_STD))
    with pytest.raises(ValueError, match="Generator"):
        tf.views(paths, train=True, size=10, mean=tf.CLIP_MEAN, std=tf.CLIP_STD)
    with pytest.raises(ValueError, match="'lanczos'"):
        tf.views(paths, train=False, size=10, mean=tf.CLIP_MEAN, std=tf.CLIP_STD,
                 interpolation="lanczos")
