"""A dataset of the paper named inside a TrainConfig: "paper:<key>:<subsample>:<root>" (the official
train.py surface sets it; every command reads the same data back from it)."""

from __future__ import annotations

from pathlib import Path

PAPER_PREFIX = "paper:"


def paper_dataset_id(key: str, subsample: str, root: str) -> str:
    return f"{PAPER_PREFIX}{key}:{subsample}:{Path(root).expanduser().absolute()}"


def parse_dataset_id(value: str) -> tuple[str, str, str]:
    key, subsample, root = value[len(PAPER_PREFIX):].split(":", 2)
    return key, subsample, root


def build_paper_data(cfg):
    """(PaperDataset, its image folder) of a TrainConfig whose dataset is a paper id."""
    from zipfast.datasets import build_dataset

    key, subsample, root = parse_dataset_id(cfg.dataset)
    ds = build_dataset(key, root, shots=cfg.shots, seed=cfg.seed, subsample=subsample)
    return ds, ds.to_image_folder(cfg.test_per_class)
