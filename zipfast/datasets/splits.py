"""Readers of the official split files and folder layouts → lists of Datum.

Every reader raises `DatasetError` naming the path it expected and the file it looked for; a
malformed file is named with what is wrong in it. Image paths are joined to the image folder as
the official readers do; listing order follows the official code (os.listdir order where it
does not sort), because the few-shot draw depends on it.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from zipfast.data.imagefolder import DatasetError
from zipfast.datasets.records import Datum

SPLIT_KEYS = ("train", "val", "test")


def require_dir(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: expected the folder '{path}'{hint}, which does not exist")
    return path


def require_file(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_file():
        raise DatasetError(f"{what}: looked for the file '{path}'{hint}, which does not exist")
    return path


def listdir_nohidden(path: Path, sort: bool = False) -> list[str]:
    """Names in path not starting with '.', in os.listdir order unless sort (Dassl's helper)."""
    names = [n for n in os.listdir(path) if not n.startswith(".")]
    return sorted(names) if sort else names


def _entries(split: dict, key: str, path: Path) -> list[tuple[str, int, str]]:
    items = split.get(key)
    if not isinstance(items, list):
        raise DatasetError(f"split file '{path}' has no list under {key!r} (keys: {sorted(split)})")
    out = []
    for i, entry in enumerate(items):
        ok = (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str) and entry[0]
              and isinstance(entry[1], int) and not isinstance(entry[1], bool) and entry[1] >= 0
              and isinstance(entry[2], str))
        if not ok:
            raise DatasetError(f"split file '{path}': {key}[{i}] is {entry!r}; expected "
                               f"[relative image path, label >= 0, class name]")
        out.append((entry[0], entry[1], entry[2]))
    return out


def read_split(path: Path, image_dir: Path, keys: tuple[str, ...] = SPLIT_KEYS) -> dict[str, list[Datum]]:
    """{key: [Datum]} from a CoOp/BlackVIP split JSON ({"train"|"val"|"test": [[path, label, name], …]})."""
    try:
        split = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"cannot read split file '{path}': {e}") from e
    except RecursionError:
        raise DatasetError(f"split file '{path}' nests deeper than any split file") from None
    if not isinstance(split, dict):
        raise DatasetError(f"split file '{path}' holds a {type(split).__name__}, not a mapping of splits")
    entries = {key: _entries(split, key, path) for key in keys}
    _check_labels(entries, path)
    return {key: [Datum(os.path.join(image_dir, rel), label, name) for rel, label, name in items]
            for key, items in entries.items()}


def _check_labels(entries: dict, path: Path) -> None:
    """Labels are the classes 0 … n−1, each with one class name in every split: a label out of range or
    a split whose labels are shifted would otherwise fail after training, or score silently wrong."""
    names: dict[int, str] = {}
    for key, items in entries.items():
        for i, (_, label, name) in enumerate(items):
            if names.setdefault(label, name) != name:
                raise DatasetError(f"split file '{path}': {key}[{i}] gives label {label} the class {name!r}, elsewhere "
                                   f"it is {names[label]!r}; the splits disagree on the classes")
    missing = sorted(set(range(max(names, default=-1) + 1)) - set(names))
    if missing:
        raise DatasetError(f"split file '{path}': labels run to {max(names)} but no image has label(s) "
                           f"{', '.join(map(str, missing[:10]))}; labels must be the classes 0 … n−1")


def read_fgvc(dataset_dir: Path, image_dir: Path, files: tuple[str, ...], what: str) -> dict[str, list[Datum]]:
    """FGVC-Aircraft: variants.txt gives the class order; images_variant_<split>.txt lines "<id> <variant>"."""
    variants_file = require_file(dataset_dir / files[0], what)
    classnames = [ln.strip() for ln in variants_file.read_text().splitlines() if ln.strip()]
    cname2lab = {c: i for i, c in enumerate(classnames)}
    out = {}
    for key, name in zip(SPLIT_KEYS, files[1:]):
        path = require_file(dataset_dir / name, what)
        items = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            imname, *words = line.strip().split(" ")
            classname = " ".join(words)
            if classname not in cname2lab:
                raise DatasetError(f"'{path}' line {n}: variant {classname!r} is not listed in '{variants_file}'")
            items.append(Datum(os.path.join(image_dir, imname + ".jpg"), cname2lab[classname], classname))
        out[key] = items
    return out


def read_svhn(dataset_dir: Path, split_file: Path, what: str):
    """SVHN as BlackVIP/ZIP read it: train/val from the split file (paths under svhn/train), test =
    every image of svhn/test/<digit>/.

    Returns (splits, replay): the official code shuffles each class's train and test listing with
    the global RNG before the few-shot draw; replay(rng) repeats those draws on a private rng.
    """
    train_dir, test_dir = require_dir(dataset_dir / "train", what), require_dir(dataset_dir / "test", what)
    splits = read_split(split_file, train_dir, keys=("train", "val"))
    categories = listdir_nohidden(train_dir, sort=True)
    listings, test = [], []
    for label, category in enumerate(categories):
        train_imgs = listdir_nohidden(train_dir / category)
        test_imgs = [os.path.join(test_dir, category, n) for n in listdir_nohidden(require_dir(
            test_dir / category, what, " (the class folders of svhn/test must match svhn/train)"))]
        n_total = len(train_imgs)
        if round(n_total * 0.7) == 0 or round(n_total * (1 - 0.7)) == 0:
            raise DatasetError(f"{what}: '{train_dir / category}' holds {n_total} image(s), too few for the "
                               f"official 70/30 train/val split")
        listings.append((len(train_imgs), list(test_imgs)))
        test.extend(Datum(p, label, category) for p in test_imgs)
    splits["test"] = test

    def replay(rng: random.Random) -> None:
        for n_train, test_imgs in listings:
            rng.shuffle(list(range(n_train)))  # the draws depend only on the lengths
            rng.shuffle(list(test_imgs))

    return splits, replay


def read_classnames(path: Path, what: str) -> dict[str, str]:
    """{folder (wnid): class name} from CoOp's classnames.txt ("n01440764 tench" per line), in file order."""
    require_file(path, what, " (CoOp's ImageNet classnames.txt)")
    out = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"'{path}' is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                           "pass CoOp's classnames.txt") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        folder, *words = line.strip().split(" ")
        if not words:
            raise DatasetError(f"'{path}' line {n}: {line!r} has no class name after the folder id")
        out[folder] = " ".join(words)
    return out


def read_class_folders(split_dir: Path, classnames: dict[str, str], what: str, sort_folders: bool = True,
                       ignored: tuple[str, ...] = ()) -> list[Datum]:
    """Datum for every image of split_dir/<folder>/ (label = index of the folder in sorted order)."""
    require_dir(split_dir, what)
    folders = [f for f in listdir_nohidden(split_dir, sort=sort_folders)
               if f not in ignored and (split_dir / f).is_dir()]
    items = []
    for label, folder in enumerate(folders):
        if folder not in classnames:
            raise DatasetError(f"{what}: class folder '{split_dir / folder}' has no line in classnames.txt")
        items.extend(Datum(os.path.join(split_dir, folder, n), label, classnames[folder])
                     for n in listdir_nohidden(split_dir / folder))
    if not items:
        raise DatasetError(f"{what}: '{split_dir}' holds no class folders with images")
    return items


def read_imagenetv2(image_dir: Path, classnames: dict[str, str], what: str) -> list[Datum]:
    """ImageNet-V2: image_dir/<label index>/… for every line of classnames.txt."""
    require_dir(image_dir, what)
    items = []
    for label, name in enumerate(classnames.values()):
        class_dir = require_dir(image_dir / str(label), what)
        items.extend(Datum(os.path.join(class_dir, n), label, name) for n in listdir_nohidden(class_dir))
    return items
