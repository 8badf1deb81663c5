"""Zero-shot CLIP: class text features from a hand-written template (0 queries).

The per-dataset templates are the official ones CoOp's zero-shot baseline uses; any
other dataset gets "a photo of a {}.".
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .text import TextTower

DEFAULT_TEMPLATE = "a photo of a {}."
# Dataset (folder / config name, normalised: lower case, no separators) → template.
TEMPLATES = {
    "oxfordpets": "a photo of a {}, a type of pet.",
    "oxfordflowers": "a photo of a {}, a type of flower.",
    "fgvcaircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "describabletextures": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "stanfordcars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
}
_ALIASES = {"pets": "oxfordpets", "flowers": "oxfordflowers", "flowers102": "oxfordflowers",
            "oxford102flowers": "oxfordflowers", "aircraft": "fgvcaircraft", "fgvc": "fgvcaircraft",
            "cars": "stanfordcars", "food": "food101", "caltech": "caltech101", "ucf": "ucf101"}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def template_for(dataset: str) -> str:
    """The official template of a dataset named by its root folder or name, else the default.

    Built-in tasks ("planted", "planted-cifar100") are not the datasets whose names they
    borrow, so they get the default template."""
    if not dataset or dataset.startswith("planted"):
        return DEFAULT_TEMPLATE
    key = _key(Path(dataset.rstrip("/")).name)
    key = _ALIASES.get(key, key)
    return TEMPLATES.get(key, DEFAULT_TEMPLATE)


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
