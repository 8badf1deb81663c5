"""Tiny datasets on disk in each official layout family (CoOp JSON split, BlackVIP JSON split and
SVHN folders, FGVC text files, ImageNet folders with classnames.txt, OOD sets with a class subset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

EUROSAT_CLASSES = ("Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Sea or Lake")
IMAGENET = (("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"),
            ("n01491361", "tiger shark"))


def image(path: Path, rng: np.random.Generator, size=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size or (int(rng.integers(20, 33)), int(rng.integers(18, 30)))
    colour = rng.integers(0, 256, size=3)
    px = colour[None, None, :] + rng.integers(-30, 31, size=(h, w, 3))
    Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(path)
    return path


def json_split(root: Path, dataset_dir: str, image_dir: str, split_file: str, classes, per=(6, 3, 3), seed=0):
    """<root>/<dataset_dir>/<image_dir>/<class>/<i>.jpg and the split JSON listing them."""
    rng = np.random.default_rng(seed)
    base = root / dataset_dir / image_dir
    split = {}
    for key, n in zip(("train", "val", "test"), per):
        entries = []
        for label, name in enumerate(classes):
            folder = name.replace(" ", "")
            for i in range(n):
                rel = f"{folder}/{folder}_{key}_{i}.jpg"
                image(base / rel, rng)
                entries.append([rel, label, name])
        rng.shuffle(entries)  # official splits are not grouped by label
        split[key] = [list(map(lambda v: int(v) if isinstance(v, np.integer) else v, e)) for e in entries]
    (root / dataset_dir / split_file).write_text(json.dumps(split))
    return root / dataset_dir


def eurosat(root: Path, **kw):
    return json_split(root, "eurosat", "2750", "split_zhou_EuroSAT.json", EUROSAT_CLASSES, **kw)


def resisc45(root: Path):
    return json_split(root, "resisc45", "NWPU-RESISC45", "split_mlai_Resisc45.json",
                      ("airplane", "airport", "baseball diamond"), per=(5, 2, 2), seed=1)


def svhn(root: Path, per_class=6, test_per=3):
    rng = np.random.default_rng(2)
    d = root / "svhn"
    split = {"train": [], "val": []}
    for label in range(3):
        names = [f"{label}_{i:03d}.jpg" for i in range(per_class)]
        for n in names:
            image(d / "train" / str(label) / n, rng)
        for i in range(test_per):
            image(d / "test" / str(label) / f"t{label}_{i}.jpg", rng)
        split["train"] += [[f"{label}/{n}", label, str(label)] for n in names[:4]]
        split["val"] += [[f"{label}/{n}", label, str(label)] for n in names[4:]]
    (d / "split_SVHN.json").write_text(json.dumps(split))
    return d


def fgvc(root: Path):
    rng = np.random.default_rng(3)
    d = root / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "Cessna 172"]
    (d / "images").mkdir(parents=True)
    (d / "variants.txt").write_text("\n".join(variants) + "\n")
    n = 0
    for key, per in (("train", 4), ("val", 2), ("test", 2)):
        lines = []
        for v in variants:
            for _ in range(per):
                image(d / "images" / f"{n:07d}.jpg", rng)
                lines.append(f"{n:07d} {v}")
                n += 1
        (d / f"images_variant_{key}.txt").write_text("\n".join(lines) + "\n")
    return d


def _classnames_txt(path: Path, classes=IMAGENET):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w} {n}\n" for w, n in classes))


def imagenet(root: Path, train_per=5, val_per=2):
    rng = np.random.default_rng(4)
    d = root / "imagenet"
    _classnames_txt(d / "classnames.txt")
    for wnid, _ in IMAGENET:
        for i in range(train_per):
            image(d / "images" / "train" / wnid / f"{wnid}_{i}.JPEG", rng)
        for i in range(val_per):
            image(d / "images" / "val" / wnid / f"val_{wnid}_{i}.JPEG", rng)
    return d


def ood(root: Path):
    """ImageNet-V2 (label folders), -Sketch (all classes), -A and -R (a two-class subset)."""
    rng = np.random.default_rng(5)
    v2 = root / "imagenetv2"
    _classnames_txt(v2 / "classnames.txt")
    for label in range(len(IMAGENET)):
        for i in range(2):
            image(v2 / "imagenetv2-matched-frequency-format-val" / str(label) / f"{i}.jpeg", rng)
    sk = root / "imagenet-sketch"
    _classnames_txt(sk / "classnames.txt")
    for wnid, _ in IMAGENET:
        image(sk / "images" / wnid / "sketch_0.JPEG", rng)
    for dirname, sub in (("imagenet-adversarial", "imagenet-a"), ("imagenet-rendition", "imagenet-r")):
        d = root / dirname
        _classnames_txt(d / "classnames.txt")
        for wnid in (IMAGENET[1][0], IMAGENET[3][0]):
            for i in range(2):
                image(d / sub / wnid / f"{i}.jpg", rng)
        (d / sub / "README.txt").write_text("not a class\n")
    return root


def all_families(root: Path) -> Path:
    eurosat(root)
    resisc45(root)
    svhn(root)
    fgvc(root)
    imagenet(root)
    ood(root)
    return root
