"""Zero-shot CLIP: class text features from a hand-written template (0 queries).

The per-dataset templates are the official ones CoOp's zero-shot baseline uses (kept once,
in `zipfast.datasets.specs`); any other dataset gets "a photo of a {}.".
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from zipfast.engine.towers import TextTower

DEFAULT_TEMPLATE = "a photo of a {}."


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _templates() -> dict:
    """Normalised dataset name, config stem or folder name → template (zipfast.datasets.specs)."""
    from zipfast.datasets.specs import SPECS

    return {_key(n): s.template for s in SPECS for n in (s.name, s.key, s.dataset_dir)}


def template_for(dataset: str) -> str:
    """The official template of a dataset named by its root folder or name, else the default.

    Built-in tasks ("planted", "planted-cifar100") are not the datasets whose names they
    borrow, so they get the default template."""
    if not dataset or dataset.startswith("planted"):
        return DEFAULT_TEMPLATE
    return _templates().get(_key(Path(dataset.rstrip("/")).name), DEFAULT_TEMPLATE)


def text_features(tower: TextTower, tokenizer, classnames, template: str) -> torch.Tensor:
    """Text features [C, E] (float32, not normalised) of template.format(classname) per class."""
    if "{}" not in template:
        raise ValueError(f'template {template!r} has no "{{}}" for the class name')
    texts = [template.format(c.replace("_", " ")) for c in classnames]
    tokens = tokenizer(texts)
    if tower.pool_type == "argmax":
        eot = tokens.argmax(dim=-1)
    else:
        eot = (tokens == tower.eos_id).int().argmax(dim=-1)
    dev = tower.positional_embedding.device
    with torch.no_grad():
        T = int(eot.max()) + 1  # positions after the last EOT never reach a pooled feature
        x = tower.token_embedding(tokens[:, :T].to(dev)).float()
        return tower.encode(x, eot.to(dev)).float()
