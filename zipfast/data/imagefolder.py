"""Image-folder datasets with seeded k-shot sampling.

Two layouts are read:

    (a) root/train/<class>/*  and optionally  root/test/<class>/*  and  root/val/<class>/*
    (b) root/<class>/*        (shots are drawn per class, the rest of the class is the test split)

Each also gives a few-shot validation split (`FewShotImageFolder.val`, the rule in its docstring).

A folder in one of the paper's official layouts (zipfast.datasets.specs) is refused with the
official command line that reads it, rather than misread as class folders.

Class order is the sorted folder names; label i is the i-th folder. Sampling seeds a
`random.Random` per class from (seed, folder name): it is deterministic across machines and
Python runs (string seeds are hashed with SHA-512, not the salted `hash`) and a class's shots
do not change when other classes are added or removed.
"""

from __future__ import annotations

import errno
import os
import random
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from zipfast.errors import DatasetError  # noqa: F401  (re-exported: its import path before it moved)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

Sample = tuple[str, int]  # (image path, label)

# How messages name a setting: the flag and the TrainConfig field, since both the CLI and the Python API land here.
DATA_SETTING = "--data / TrainConfig.dataset"
SHOTS_SETTING = "--shots / TrainConfig.shots"


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a non-hidden file whose extension (any case) is in IMAGE_EXTENSIONS."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB; any failure raises DatasetError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated/corrupt data fails here and not in a worker
            return im.convert("RGB")
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError…
        raise DatasetError(
            f"cannot read image file '{path}': {type(e).__name__}: {e}. "
            "Replace or delete the file, or convert it to PNG/JPEG.") from e


# --------------------------------------------------------------------------- folder scanning


def shown(path) -> str:
    """path as text that prints and encodes anywhere: a name that is not valid UTF-8 (bytes the file
    system holds, which Python keeps as lone surrogates) shows those bytes as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _check_name(path: str, what: str) -> None:
    """DatasetError when the name of `path` (a class folder or an image) is not valid UTF-8: it could
    not be printed, logged or written to the run record; rename it."""
    try:
        os.path.basename(path).encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetError(
            f"{what} '{shown(path)}' has a name that is not valid UTF-8; rename it "
            f"(e.g. `mv` it to an ASCII name) or remove it from the dataset folder.") from None


def _loop_error(path: str) -> DatasetError:
    return DatasetError(
        f"'{shown(path)}' is a symbolic link that loops (it points to itself, or to a folder that contains "
        f"it); remove the link or point it at a folder of images outside the dataset folder.")


def _follows(entry: os.DirEntry, test) -> bool:
    """test() (entry.is_dir / is_file, following a symlink); False when it cannot be asked, and
    DatasetError for a link that loops."""
    try:
        return test()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _loop_error(entry.path) from None
        return False


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether entry is a directory (following a symlink); DatasetError for a link that loops."""
    is_dir = _follows(entry, entry.is_dir)
    if is_dir and entry.is_symlink():
        target, here = Path(os.path.realpath(entry.path)), Path(os.path.realpath(os.path.dirname(entry.path)))
        if target == here or target in here.parents:  # a class folder that is (an ancestor of) its split folder
            raise _loop_error(entry.path)
    return is_dir


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the non-hidden sub-directories of split_dir; refuses symlink loops and names
    that are not valid UTF-8."""
    names = []
    for e in os.scandir(split_dir):
        if not e.name.startswith(".") and _is_dir(e):
            _check_name(e.path, "class folder")
            names.append(e.name)
    return sorted(names)


def _is_image_entry(entry: os.DirEntry) -> bool:
    """is_image_file for a directory entry; DatasetError for an image name that loops or is not UTF-8.
    A symlink to an image file counts as that image; entries of other extensions are not looked at."""
    p = Path(entry.path)
    if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    is_file = _follows(entry, entry.is_file)
    if is_file:
        _check_name(entry.path, "image file")
    return is_file


def _images_in(class_dir: Path) -> list[str]:
    """Sorted image paths directly inside class_dir; raises if there are none."""
    files = sorted(str(class_dir / e.name) for e in os.scandir(class_dir) if _is_image_entry(e))
    if not files:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DatasetError(
            f"class folder '{class_dir}' contains no images (looked for {exts}); "
            "add images to it or remove the folder.")
    return files


def _scan(split_dir: Path) -> dict[str, list[str]]:
    """{folder name: sorted image paths} for every class folder in split_dir."""
    folders = _class_folders(split_dir)
    if not folders:
        raise DatasetError(
            f"'{split_dir}' has no class folders; expected one sub-directory per class "
            f"holding its images ('{split_dir}/<class>/*.jpg').")
    return {f: _images_in(split_dir / f) for f in folders}


def _refuse_official_layout(root: Path) -> None:
    """An official dataset folder (or $DATA, the folder holding them) is no folder of class folders:
    say how the official surface reads it, instead of failing on its image folder as an empty class."""
    from zipfast.datasets.specs import SPECS, official_layout  # lazy: the zipfast.datasets package imports this module

    if (root / "train").is_dir():  # layout (a) reads as it is (SVHN's official folders among them)
        return
    spec, where, parent = official_layout(root), root, root.parent
    if spec is None:
        inner = [(s, root / s.dataset_dir) for s in SPECS if (root / s.dataset_dir).is_dir()]
        spec, where = next(((s, d) for s, d in inner if official_layout(d) is s), (None, root))
        parent = root
    if spec is None:
        return
    rest = "--eval-only --model-dir RUN_DIR" if spec.test_only else "..."
    command = (f"zipfast train --root {shlex.quote(str(parent.absolute()))} --trainer ZIP --dataset-config-file "
               f"configs/datasets/{spec.key}.yaml --config-file configs/trainers/ZIP/vit_b16.yaml {rest}")
    raise DatasetError(
        f"'{where}' holds the official {spec.name} layout: run it with `{command}` (see docs/official-drop-in.md) "
        f"or pass an image folder of class folders ({DATA_SETTING})")


def _check_same_classes(train_dir: Path, test_dir: Path, train: list[str], test: list[str],
                        split: str = "test") -> None:
    only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    if only_train or only_test:
        parts = []
        if only_train:
            parts.append(f"only in '{train_dir}': {', '.join(only_train)}")
        if only_test:
            parts.append(f"only in '{test_dir}': {', '.join(only_test)}")
        raise DatasetError(
            f"the class folders of the train and {split} splits differ ({'; '.join(parts)}); "
            "give both splits the same class folders.")


# --------------------------------------------------------------------------- sampling


def _rng(seed: int, purpose: str, folder: str) -> random.Random:
    return random.Random(f"{seed}:{purpose}:{folder}")


def _pick_shots(folder: str, files: list[str], shots: int, seed: int) -> tuple[list[str], list[str]]:
    """(picked, rest) from sorted files; shots <= 0 picks all. Both keep the sorted order."""
    if shots <= 0:
        return list(files), []
    picked = set(_rng(seed, "shots", folder).sample(range(len(files)), shots))
    return ([f for i, f in enumerate(files) if i in picked],
            [f for i, f in enumerate(files) if i not in picked])


def _check_shots(root: Path, train_files: dict[str, list[str]], shots: int, separate_test: bool) -> None:
    """Raise naming the smallest class and the largest shots every class can give, if `shots` is too many.

    Without a separate test split (layout b) a class's test images are what its shots leave over, so
    each class must keep at least one: the advice is then one less than its image count."""
    if shots <= 0:
        return
    keep = 0 if separate_test else 1
    folder = min(train_files, key=lambda f: len(train_files[f]))
    n = len(train_files[folder])
    if n - keep >= shots:
        return
    most = n - keep
    if separate_test:
        raise DatasetError(
            f"class '{folder}' has {n} training image(s) but {shots} shots were requested; "
            f"lower the shots ({SHOTS_SETTING}) to at most {most} or add images to that class.")
    lower = f"lower the shots ({SHOTS_SETTING}) to at most {most}, " if most >= 1 else ""
    raise DatasetError(
        f"class '{folder}' has {n} image(s): {shots} shots and at least one test image need {shots + 1} (with no "
        f"test/ folder the test split is the images the shots leave); {lower}add images to that class, or "
        f"provide a separate split as '{root}/train/<class>' and '{root}/test/<class>'.")


def _cap(folder: str, files: list[str], cap: int | None, seed: int) -> list[str]:
    """At most `cap` of files, a seeded choice kept in sorted order."""
    if cap is None or len(files) <= cap:
        return files
    keep = set(_rng(seed, "test", folder).sample(range(len(files)), cap))
    return [f for i, f in enumerate(files) if i in keep]


def val_per_class(shots: int) -> int | None:
    """Images per class of the few-shot validation split: min(shots, 4), as Dassl draws val;
    None (all) for shots <= 0 (every training image is a shot)."""
    return min(shots, 4) if shots > 0 else None


def _pick_val(folder: str, files: list[str], shots: int, seed: int) -> list[str]:
    """The validation images of a class from `files` (sorted): min(shots, 4) of them (all if fewer,
    or if shots <= 0), a seeded choice from its own stream, kept in sorted order."""
    n = val_per_class(shots)
    if n is None or len(files) <= n:
        return list(files)
    keep = set(_rng(seed, "val", folder).sample(range(len(files)), n))
    return [f for i, f in enumerate(files) if i in keep]


def no_val_error() -> DatasetError:
    """The one-line error for predicting on an empty validation split."""
    return DatasetError(
        "the dataset gives no validation images (every training image is in the few-shot train split or the test "
        "split; a paper dataset without a val split of its own, ImageNet, has none): add a val/ folder "
        "(root/val/<class>/*) beside train/, lower the shots (" + SHOTS_SETTING + "), or, with no test/ folder, cap "
        "the test split (--test-per-class / TrainConfig.test_per_class) so that images are left for validation")


def _labelled(per_class: list[list[str]]) -> list[Sample]:
    return [(path, label) for label, paths in enumerate(per_class) for path in paths]


# --------------------------------------------------------------------------- dataset


@dataclass
class FewShotImageFolder:
    """A k-shot train split, a test split and a few-shot validation split read from an image folder.

    train/test/val are lists of (path, label) grouped by class in label order; `folders[label]`
    is the class's folder name and `classnames[label]` the same with "_" → " ".

    The validation split (`val`; model selection, e.g. `zipfast sweep`) has v = min(shots, 4)
    images per class (Dassl's few-shot val; every candidate image when shots <= 0), drawn with a
    `random.Random` seeded by (run seed, "val", folder name), a stream of its own, so the train
    and test splits are exactly those drawn without it. Where the images come from:

    - layout (a) with a `val/` folder (root/val/<class>/*, the same class folders as train/):
      v images per class from it;
    - otherwise from the class's training images that neither the few-shot train split nor the
      test split uses. With a `test/` folder that is every training image the shots leave. With
      no test/ folder (layout (a) without test/, or layout (b)) the test split is those leftover
      images, so val exists only where `test_per_class` caps the test split below them: a
      validation image is never a training or a test image.

    A class with no such images has none in val (its accuracy is then over the other classes);
    when val is empty altogether, predicting on it raises a UserError saying what to do.
    """

    root: Path
    folders: list[str]
    classnames: list[str]
    train: list[Sample]
    test: list[Sample]
    shots: int
    seed: int
    test_per_class: int | None = None
    has_test_split: bool = field(default=False)
    val: list[Sample] = field(default_factory=list)

    @classmethod
    def from_root(cls, root: str | os.PathLike, shots: int, seed: int,
                  test_per_class: int | None = None) -> FewShotImageFolder:
        """Scan root (layout a or b, see module doc) and draw `shots` images per class.

        shots <= 0 takes every training image. test_per_class, when given, caps the test
        images per class with a seeded choice. The validation split: see the class docstring.
        """
        root = Path(root).expanduser()
        if not root.exists():
            raise DatasetError(f"dataset root '{root}' does not exist; check the path ({DATA_SETTING}).")
        if not root.is_dir():
            raise DatasetError(
                f"dataset root '{root}' is not a directory; pass the folder that holds the class folders, "
                f"or train/ and test/ ({DATA_SETTING}).")
        if test_per_class is not None and test_per_class < 1:
            raise DatasetError(
                f"test_per_class={test_per_class} is invalid; give a positive cap or None for all.")

        _refuse_official_layout(root)
        train_dir, test_dir, val_dir = root / "train", root / "test", root / "val"
        val_files = None
        if train_dir.is_dir():
            train_files = _scan(train_dir)
            test_files = _scan(test_dir) if test_dir.is_dir() else None
            if test_files is not None:
                _check_same_classes(train_dir, test_dir, list(train_files), list(test_files))
            if val_dir.is_dir():
                val_files = _scan(val_dir)
                _check_same_classes(train_dir, val_dir, list(train_files), list(val_files), "val")
        else:
            train_files, test_files = _scan(root), None

        _check_shots(root, train_files, shots, test_files is not None)
        folders = list(train_files)
        train, test, val = [], [], []
        for folder in folders:
            picked, rest = _pick_shots(folder, train_files[folder], shots, seed)
            if test_files is not None:
                rest = test_files[folder]
            elif not rest:
                # only shots <= 0 (every image) gets here: _check_shots refused the others
                raise DatasetError(
                    f"class '{folder}' has no images left for the test split after taking all {len(picked)} "
                    f"as shots (shots {shots} = every image); give a positive number of shots ({SHOTS_SETTING}) "
                    f"or provide a separate split as '{root}/train/<class>' and '{root}/test/<class>'.")
            train.append(picked)
            test.append(_cap(folder, rest, test_per_class, seed))
            if val_files is not None:
                unused = val_files[folder]
            else:  # the training images in neither split (test/: all the shots leave)
                used = set(picked) | (set(test[-1]) if test_files is None else set())
                unused = [f for f in train_files[folder] if f not in used]
            val.append(_pick_val(folder, unused, shots, seed))

        return cls(root=root, folders=folders, classnames=[f.replace("_", " ") for f in folders],
                   train=_labelled(train), test=_labelled(test), shots=shots, seed=seed,
                   test_per_class=test_per_class, has_test_split=test_files is not None, val=_labelled(val))

    @property
    def num_classes(self) -> int:
        return len(self.folders)
