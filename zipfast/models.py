"""Loading open_clip CLIP models: pretrained tags, local checkpoints, or random init."""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from pathlib import Path

import torch

from zipfast import weights
from zipfast.env import resolve_device  # noqa: F401  (re-exported: old import path)
from zipfast.weights import ModelLoadError  # noqa: F401  (a UserError; raised here, defined with the readers)

# OpenAI's CLIP models (clip.available_models(), the official MODEL.BACKBONE.NAME values) → the
# open_clip config of the same network. OpenAI's CLIP uses QuickGELU in every MLP (clip/model.py);
# open_clip's plain configs (ViT-B-16, RN50, …) use nn.GELU, so the -quickgelu configs are the match.
OPENAI_BACKBONES = {
    "RN50": "RN50-quickgelu", "RN101": "RN101-quickgelu", "RN50x4": "RN50x4-quickgelu",
    "RN50x16": "RN50x16-quickgelu", "RN50x64": "RN50x64-quickgelu", "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu", "ViT-L/14": "ViT-L-14-quickgelu", "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}


def official_model_name(name: str) -> str:
    """The open_clip name of a --model value: OpenAI's spelling of its CLIP models ("ViT-B/16",
    "ViT-L/14@336px") names OpenAI's network, i.e. the -quickgelu config ("ViT-B-16-quickgelu");
    any other name is open_clip's own (a stray "/" read as "-")."""
    if "/" in name or "@" in name:
        return OPENAI_BACKBONES.get(name, name.replace("/", "-"))
    return name


def official_backbone(name: str) -> str:
    """The open_clip name of an official MODEL.BACKBONE.NAME: the official trainer always builds
    OpenAI's CLIP, so "RN50" is "RN50-quickgelu" there too."""
    return OPENAI_BACKBONES.get(name, official_model_name(name))


_CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered = False
log = logging.getLogger("zipfast.models")


def _register_configs():
    """Add zipfast's small test/demo architectures (zipfast-tiny, zipfast-planted) to open_clip."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


def load_clip(name: str, pretrained: str = "openai", device="cpu", seed: int = 0):
    """Create an open_clip model (eval mode, frozen) and its tokenizer and preprocessing.

    pretrained: an open_clip tag ("openai", "laion2b_s34b_b88k", …), a path to a local
    checkpoint file, or "none" for random initialisation (tests, the planted task), seeded by
    `seed` (the same weights in every process; torch's global generator is left as it was).
    The network gets the activation its weights were trained with (`quick_gelu_rule`): open_clip
    builds ViT-B-16 with GELU and only warns that the "openai" weights need QuickGELU.
    Returns (model, tokenizer, preprocess_val); `load_notes(model)` lists what was adjusted.
    """
    import open_clip

    _register_configs()
    name = official_model_name(name)  # the official configs spell backbones "ViT-B/16"
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(f"unknown model name {name!r}.{hint} `python -c 'import open_clip; "
                             f"print(open_clip.list_models())'` lists them.")
    tag = (pretrained or "none").strip()
    if tag.lower() in ("none", "random", ""):
        tag = None
    elif not os.path.exists(tag):
        tags = open_clip.list_pretrained_tags_by_model(name)
        if tag not in tags:
            if os.sep in tag or tag.endswith((".bin", ".pt", ".pth", ".safetensors")):
                raise ModelLoadError(f"pretrained checkpoint file {tag!r} does not exist")
            raise ModelLoadError(f"{tag!r} is neither a pretrained tag of {name} (known: {', '.join(tags) or 'none'}) "
                                 f"nor an existing checkpoint file")
    force_quick_gelu, notes = quick_gelu_rule(name, tag)
    path = tag if tag is not None and os.path.exists(tag) else None
    preprocess = {}
    if tag is not None and path is None:
        # A cached tag loads from the cache with no network; an uncached one is fetched only if the hub
        # answers: unreachable, its client would retry for a minute before failing.
        path = weights.cached_tag_file(name, tag)
        if path is None:
            why = weights.hub_unreachable()
            if why:
                raise weights.offline_error(name, tag, why)
        else:
            cfg = open_clip.get_pretrained_cfg(name, tag)
            preprocess = {f"image_{k}": cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    state = weights.read_state_dict(path) if path is not None else None  # a bad file fails before the build
    try:
        with warnings.catch_warnings(), _quiet_random_init(state is not None):
            # the QuickGELU mismatch warning cannot fire any more (quick_gelu_rule decided); others pass
            warnings.filterwarnings("ignore", message="QuickGELU mismatch")
            if state is None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)  # a random init is a function of the seed, in every process
                    model, _, preprocess_val = open_clip.create_model_and_transforms(
                        name, pretrained=tag, device=device, force_quick_gelu=force_quick_gelu)
            else:  # built empty, then filled by zipfast's reader (which checks the file fits the model)
                model, _, preprocess_val = open_clip.create_model_and_transforms(
                    name, pretrained=None, device=device, force_quick_gelu=force_quick_gelu,
                    pretrained_text=False, **preprocess)
    except Exception as e:  # open_clip raises RuntimeError/OSError/HF errors on a failed download
        if tag is not None and path is None:
            raise weights.fetch_error(name, tag, e) from e
        raise ModelLoadError(f"could not create {name} with pretrained={tag!r}: {weights.short(e)}") from e
    if state is not None:
        weights.load_state_dict(model, state, name, path)
    model.eval().requires_grad_(False)
    model.zipfast_load_notes = tuple(notes)
    tokenizer = open_clip.get_tokenizer(name)
    return model, tokenizer, preprocess_val


class _quiet_random_init:
    """Silence open_clip's "initialized randomly" warning (root logger) while a model is built empty
    to be filled from a file right after."""

    def __init__(self, on: bool):
        self.on = on

    def filter(self, record) -> bool:
        return "initialized randomly" not in record.getMessage()

    def __enter__(self):
        if self.on:
            logging.getLogger().addFilter(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeFilter(self)


def quick_gelu_rule(name: str, tag: str | None) -> tuple[bool, list[str]]:
    """(force QuickGELU?, notes) for open_clip model `name` with pretrained `tag` (None: random).

    A tag's pretrained config says which activation its weights were trained with; when `name`'s
    config differs, open_clip only warns. Here a tag that needs QuickGELU on a GELU config builds
    QuickGELU (logged; the note goes to the run report), and a GELU tag on a -quickgelu config is
    an error. A local file records no activation: `name` decides (the OpenAI spelling "ViT-B/16"
    and the official configs map to the -quickgelu configs, see config.official_model_name).
    """
    import open_clip

    model_quick = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
    if tag is None or os.path.exists(tag):
        if tag is not None and not model_quick and f"{name}-quickgelu" in open_clip.list_models():
            log.info("%s builds with GELU; a checkpoint file does not say which activation its weights were "
                     "trained with: OpenAI's weights need %s-quickgelu", name, name)
        return False, []
    tag_quick = bool((open_clip.get_pretrained_cfg(name, tag) or {}).get("quick_gelu", False))
    if tag_quick == model_quick:
        return False, []
    if model_quick:
        plain = name.removesuffix("-quickgelu")
        raise ModelLoadError(f"the {tag!r} weights of {name} were trained with GELU but {name} builds QuickGELU; "
                             f"use --model {plain}")
    note = f"model {name}: QuickGELU, as the {tag!r} weights were trained (open_clip's {name} config has GELU)"
    log.info("%s", note)
    return True, [note]


def load_notes(model) -> list[str]:
    """What `load_clip` changed from the open_clip config to build `model` (for run reports)."""
    return list(getattr(model, "zipfast_load_notes", ()))


def activation(model) -> str:
    """"quick_gelu" or "gelu": the MLP activation of an open_clip model's text tower."""
    from open_clip.transformer import QuickGELU

    return "quick_gelu" if any(isinstance(m, QuickGELU) for m in model.modules()) else "gelu"


def model_image_size(model) -> int | None:
    """The fixed square input size of an open_clip model's image tower, or None if it has none."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0] if len(size) == 2 and size[0] == size[1] else None
    return size if isinstance(size, int) else None
