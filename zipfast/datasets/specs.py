"""The paper's datasets: where each lives under DATASET.ROOT, how it is read, its prompt template.

Folder, split-file and class-name conventions are those of the official dataset modules (CoOp for
the first eleven, BlackVIP for SVHN/Resisc45/CLEVR, CoOp for the ImageNet variants). A dataset is
named by its official DATASET.NAME ("EuroSAT") or its config-file stem ("eurosat").
"""

from __future__ import annotations

from dataclasses import dataclass

from zipfast.errors import DatasetError


@dataclass(frozen=True)
class DatasetSpec:
    name: str          # the official DATASET.NAME
    key: str           # the official configs/datasets/<key>.yaml stem
    dataset_dir: str   # folder under DATASET.ROOT
    image_dir: str     # image folder inside dataset_dir ("" = dataset_dir itself)
    layout: str        # json | fgvc | svhn | imagenet | imagenetv2 | imagenet_folders
    split_files: tuple[str, ...] = ()  # split file(s) read, first existing wins
    template: str = "a photo of a {}."  # the zero-shot prompt (the official ZSCLIP CUSTOM_TEMPLATES)
    test_only: bool = False  # evaluation-only sets (OOD): no few-shot sampling


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec("ImageNet", "imagenet", "imagenet", "images", "imagenet"),
    DatasetSpec("Caltech101", "caltech101", "caltech-101", "101_ObjectCategories", "json",
                ("split_zhou_Caltech101.json",)),
    DatasetSpec("OxfordPets", "oxford_pets", "oxford_pets", "images", "json", ("split_zhou_OxfordPets.json",),
                "a photo of a {}, a type of pet."),
    DatasetSpec("OxfordFlowers", "oxford_flowers", "oxford_flowers", "jpg", "json",
                ("split_zhou_OxfordFlowers.json",), "a photo of a {}, a type of flower."),
    DatasetSpec("Food101", "food101", "food-101", "images", "json", ("split_zhou_Food101.json",),
                "a photo of {}, a type of food."),
    DatasetSpec("FGVCAircraft", "fgvc_aircraft", "fgvc_aircraft", "images", "fgvc",
                ("variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt"),
                "a photo of a {}, a type of aircraft."),
    DatasetSpec("SUN397", "sun397", "sun397", "SUN397", "json", ("split_zhou_SUN397.json",)),
    DatasetSpec("DescribableTextures", "dtd", "dtd", "images", "json", ("split_zhou_DescribableTextures.json",),
                "{} texture."),
    DatasetSpec("EuroSAT", "eurosat", "eurosat", "2750", "json", ("split_zhou_EuroSAT.json",),
                "a centered satellite photo of {}."),
    DatasetSpec("UCF101", "ucf101", "ucf101", "UCF-101-midframes", "json", ("split_zhou_UCF101.json",),
                "a photo of a person doing {}."),
    DatasetSpec("StanfordCars", "stanford_cars", "stanford_cars", "", "json", ("split_zhou_StanfordCars.json",)),
    # BlackVIP's sets. The official SVHN module reads split_SVHN.json (train/val only, paths under
    # svhn/train) although the ZIP README names the file split_mlai_SVHN.json: both are accepted.
    DatasetSpec("Svhn", "svhn", "svhn", "train", "svhn", ("split_SVHN.json", "split_mlai_SVHN.json"),
                "This is a photo of a {}."),
    DatasetSpec("Resisc45", "resisc45", "resisc45", "NWPU-RESISC45", "json", ("split_mlai_Resisc45.json",),
                "This is a photo of a {}."),
    DatasetSpec("CLEVR", "clevr", "CLEVR_v1.0", "images", "json", ("split_mlai_CLEVR.json",),
                "This is a photo of {} objects."),
    # ImageNet's distribution shifts (test only; classnames.txt copied from ImageNet into each folder).
    DatasetSpec("ImageNetV2", "imagenetv2", "imagenetv2", "imagenetv2-matched-frequency-format-val",
                "imagenetv2", test_only=True),
    DatasetSpec("ImageNetSketch", "imagenet_sketch", "imagenet-sketch", "images", "imagenet_folders", test_only=True),
    DatasetSpec("ImageNetA", "imagenet_a", "imagenet-adversarial", "imagenet-a", "imagenet_folders", test_only=True),
    DatasetSpec("ImageNetR", "imagenet_r", "imagenet-rendition", "imagenet-r", "imagenet_folders", test_only=True),
)

_BY_NAME = {s.name.lower(): s for s in SPECS} | {s.key.lower(): s for s in SPECS}
# The 13 few-shot datasets of the paper, in its table order, and the OOD targets.
FEWSHOT_DATASETS = ("imagenet", "caltech101", "oxford_pets", "oxford_flowers", "food101", "fgvc_aircraft",
                    "sun397", "dtd", "eurosat", "ucf101", "svhn", "resisc45", "clevr")
CROSS_DATASET_TARGETS = FEWSHOT_DATASETS[1:]
OOD_DATASETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset named by DATASET.NAME or config stem (case-insensitive)."""
    try:
        return _BY_NAME[str(name).lower()]
    except KeyError:
        known = ", ".join(s.key for s in SPECS)
        raise DatasetError(f"unknown dataset {name!r}; known: {known} (or their DATASET.NAME spelling)") from None


def official_layout(path) -> DatasetSpec | None:
    """The dataset whose official folder `path` is (its split file, or classnames.txt, beside its image
    folder), else None. A folder of the dataset's name wins where several layouts share file names
    (ImageNet and ImageNet-Sketch both keep images/ and classnames.txt)."""
    from pathlib import Path

    path = Path(path)
    found = []
    for spec in SPECS:
        markers = [f for f in spec.split_files if f != "variants.txt"] or ["classnames.txt"]
        if not any((path / f).is_file() for f in markers):
            continue
        if spec.image_dir and not (path / spec.image_dir).is_dir():
            continue
        found.append(spec)
    named = [s for s in found if s.dataset_dir.lower() == path.name.lower()]
    return (named or found or [None])[0]


def template_for(name: str) -> str:
    return get_spec(name).template
