"""Helpers shared by the paper-protocol tests: the official config files and a random pretrained
checkpoint for the tiny model, registered where open_clip looks up the "openai" weights."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import OFFICIAL_YAML

DATASET_YAMLS = {"eurosat": "EuroSAT", "imagenet": "ImageNet", "resisc45": "Resisc45", "svhn": "Svhn",
                 "fgvc_aircraft": "FGVCAircraft", "imagenetv2": "ImageNetV2", "imagenet_sketch": "ImageNetSketch",
                 "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR"}
# Test-size overrides appended after an official command line's own KEY VALUE pairs.
TINY = ["MODEL.BACKBONE.NAME", "zipfast-tiny", "TRAINER.BASIC.MAX_API_CALLS", "20",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "8"]


def official_configs(root: Path) -> Path:
    """<root>/configs/{datasets/<name>.yaml, trainers/ZIP/vit_b16.yaml} as in the official repository."""
    for key, name in DATASET_YAMLS.items():
        p = root / "configs" / "datasets" / f"{key}.yaml"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f'DATASET:\n  NAME: "{name}"\n')
    t = root / "configs" / "trainers" / "ZIP" / "vit_b16.yaml"
    t.parent.mkdir(parents=True, exist_ok=True)
    t.write_text(OFFICIAL_YAML)
    return root


def image_trainer_configs(root: Path, yamls: dict) -> Path:
    """root/configs/trainers/<TRAINER>/vit_b16.yaml for each {TRAINER: yaml text}; returns root."""
    for name, text in yamls.items():
        p = root / "configs" / "trainers" / name / "vit_b16.yaml"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def register_random_openai_weights(monkeypatch, folder: Path) -> Path:
    """A randomly initialised zipfast-tiny checkpoint served for pretrained="openai" (offline)."""
    import open_clip
    from open_clip import pretrained as registry

    from zipfast.models import _register_configs

    _register_configs()
    path = folder / "zipfast_tiny_random.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(open_clip.create_model("zipfast-tiny").state_dict(), path)
    entry = dict(registry._PRETRAINED.get("zipfast-tiny", {}))
    entry["openai"] = {"file": str(path)}
    monkeypatch.setitem(registry._PRETRAINED, "zipfast-tiny", entry)
    return path
