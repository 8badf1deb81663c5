"""The paper's 17 datasets in the layouts the official code reads, built by name.

    ds = build_dataset("eurosat", root="$DATA", shots=16, seed=1, subsample="all")
    ds.train, ds.val, ds.test   # lists of Datum; ds.classnames; ds.template

The few-shot split is Dassl's for the same SEED (see `fewshot`), read from the official cache
`split_fewshot/shot_{k}-seed_{s}.pkl` when present (see `safe_pickle`).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from zipfast.data.imagefolder import DatasetError, FewShotImageFolder
from zipfast.datasets.cache import read_cache, write_json_cache
from zipfast.datasets.fewshot import draw_fewshot, subsample_classes
from zipfast.datasets.records import Datum, check_files, lab2cname
from zipfast.datasets.specs import CROSS_DATASET_TARGETS, FEWSHOT_DATASETS, OOD_DATASETS, SPECS, DatasetSpec, get_spec, template_for
from zipfast.datasets.splits import (read_class_folders, read_classnames, read_fgvc, read_imagenetv2, read_split, read_svhn,
                     require_dir, require_file)

__all__ = ["PaperDataset", "build_dataset", "get_spec", "template_for", "SPECS", "FEWSHOT_DATASETS",
           "CROSS_DATASET_TARGETS", "OOD_DATASETS", "Datum"]

log = logging.getLogger("zipfast.datasets")


@dataclass
class PaperDataset:
    """One dataset as the official trainer sees it after few-shot sampling and class subsampling."""

    spec: DatasetSpec
    dataset_dir: Path
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    classnames: list[str]
    shots: int
    seed: int
    subsample: str = "all"
    fewshot_source: str = ""  # where the few-shot split came from (cache file or "drawn")
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def template(self) -> str:
        return self.spec.template

    def to_image_folder(self, test_per_class: int | None = None) -> FewShotImageFolder:
        """The train/val/test lists as the trainer's FewShotImageFolder; test_per_class caps the test
        split per class with a seeded choice (all when None). val is Dassl's few-shot val (min(shots, 4)
        per class), carried over as it is; a dataset without a val split of its own (ImageNet, whose
        official val is its test split) gives none: selecting on test images is no validation."""
        test = self.test
        if test_per_class is not None:
            rng, by_label = random.Random(self.seed), {}
            for d in test:
                by_label.setdefault(d.label, []).append(d)
            keep = {id(d) for items in by_label.values()
                    for d in (rng.sample(items, test_per_class) if len(items) > test_per_class else items)}
            test = [d for d in test if id(d) in keep]
        return FewShotImageFolder(root=self.dataset_dir, folders=list(self.classnames), classnames=list(self.classnames),
                                  train=[(d.impath, d.label) for d in self.train],
                                  test=[(d.impath, d.label) for d in test], shots=self.shots, seed=self.seed,
                                  test_per_class=test_per_class, has_test_split=True,
                                  val=[] if self.val is self.test else [(d.impath, d.label) for d in self.val])


def _what(spec: DatasetSpec) -> str:
    return f"dataset {spec.name}"


def _read_full(spec: DatasetSpec, dataset_dir: Path):
    """({train, val, test} before few-shot sampling, replay-before-sampling or None)."""
    what = _what(spec)
    image_dir = dataset_dir / spec.image_dir if spec.image_dir else dataset_dir
    if spec.layout == "json":
        require_dir(image_dir, what)
        split = require_file(dataset_dir / spec.split_files[0], what)
        return read_split(split, image_dir), None
    if spec.layout == "fgvc":
        require_dir(image_dir, what)
        return read_fgvc(dataset_dir, image_dir, spec.split_files, what), None
    if spec.layout == "svhn":
        found = [dataset_dir / f for f in spec.split_files if (dataset_dir / f).is_file()]
        if not found:
            raise DatasetError(f"{what}: looked for the split file '{dataset_dir / spec.split_files[0]}' (or "
                               f"'{dataset_dir / spec.split_files[1]}'), which does not exist")
        return read_svhn(dataset_dir, found[0], what)
    if spec.layout == "imagenet":
        pre = dataset_dir / "preprocessed.pkl"
        if pre.is_file():  # the official listing (fixes the image order the few-shot draw sees)
            from zipfast.datasets.cache import rebase
            from zipfast.datasets.safe_pickle import load_datum_pickle

            data = {k: rebase(v, dataset_dir) for k, v in load_datum_pickle(
                pre, ("train", "test"), advice="delete it to read the class folders instead (the official file fixes "
                "the image order the few-shot draw sees)").items()}
        else:
            names = read_classnames(dataset_dir / "classnames.txt", what)
            data = {"train": read_class_folders(image_dir / "train", names, what),
                    "test": read_class_folders(image_dir / "val", names, what)}
        return {"train": data["train"], "val": None, "test": data["test"]}, None
    names = read_classnames(dataset_dir / "classnames.txt", what)
    if spec.layout == "imagenetv2":
        items = read_imagenetv2(image_dir, names, what)
    else:  # imagenet_folders: Sketch, A, R (A and R hold a subset of the classes)
        items = read_class_folders(image_dir, names, what, ignored=("README.txt",))
    return {"train": items, "val": None, "test": items}, None


def build_dataset(name: str, root, shots: int = 16, seed: int = 1, subsample: str = "all",
                  write_cache: bool = True) -> PaperDataset:
    """The dataset `name` under root with the official few-shot split for (shots, seed) and the
    base/new/all class subset. shots < 1 keeps every training image."""
    spec = get_spec(name)
    root = Path(root).expanduser().absolute()
    require_dir(root, _what(spec), " (DATASET.ROOT / --root)")
    dataset_dir = require_dir(root / spec.dataset_dir, _what(spec),
                              f" (put {spec.name} in '{root}/{spec.dataset_dir}/')")
    full, replay = _read_full(spec, dataset_dir)
    train, val, test = full["train"], full["val"], full["test"]
    source = "all"
    if shots >= 1 and not spec.test_only:
        keys = ("train",) if val is None else ("train", "val")
        n_classes = 1 + max((d.label for d in train + (test or [])), default=-1)
        cached, source = read_cache(dataset_dir, shots, seed, keys, n_classes or None)
        if cached is None:
            train, val = draw_fewshot(train, val, shots, seed, before=replay)
            source = "drawn"
            if write_cache:
                write_json_cache(dataset_dir, shots, seed, {"train": train} | ({} if val is None else {"val": val}))
        else:
            train, val = cached["train"], cached.get("val")
        log.info("%s: %d-shot split for seed %d: %s", spec.name, shots, seed,
                 "drawn" if source == "drawn" else f"read from the {source}")
        check_files(train, _what(spec))
    if val is None:
        train, test = subsample_classes(train, test, subsample=subsample)
        val = test
    else:
        train, val, test = subsample_classes(train, val, test, subsample=subsample)
    if not train or not test:
        raise DatasetError(f"{_what(spec)} in '{dataset_dir}': the {'training' if not train else 'test'} split is empty")
    check_files(test, _what(spec), limit=1)
    _, classnames = lab2cname(train)
    return PaperDataset(spec, dataset_dir, train, val, test, classnames, shots, seed, subsample, source)
