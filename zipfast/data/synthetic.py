"""`synthetic-images`: a generated image-folder task that every method can run on, downloads none.

The task is fixed (the same on every machine): a 4-class image folder written by
`pixels.write_synthetic_image_folder` (seed 0; per class a colour and a stripe direction,
48 images of 48×48 px) and a randomly initialised tiny CLIP (`zipfast-tiny224`: a 1-layer,
64-wide ViT-B/32-style image tower at 224 px, a 2-layer 64-wide text tower; weights seeded 0,
logit scale 100). The run seed draws the few-shot split, the method's randomness and
BlackVIP's encoder (a small ViT-MAE architecture, random weights). Nothing in it is
pretrained, so runs on it exercise the pipeline and the query accounting; they do not rank
methods on real data.

The folder is written once, atomically, under the cache directory (`$ZIPFAST_CACHE`, default
`~/.cache/zipfast`) and reused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from zipfast.env import cache_dir

NAME = "synthetic-images"
MODEL = "zipfast-tiny224"
MODEL_SEED = 0
FOLDER = dict(n_classes=4, per_class=48, size=48, seed=0)
VERSION = 1  # bump when FOLDER or the generator changes: the cached folder name follows it
# BlackVIP's coordinator encoder on this task (a transformers ViTMAEConfig): 2 layers, 64 wide, random
# weights seeded by the run seed.
COORDINATOR = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                   image_size=224, patch_size=32)




def folder() -> Path:
    """The generated image folder (root/<class>/*.png), written on first use.

    UserError naming the cache directory and ZIPFAST_CACHE when it cannot be written."""
    from zipfast.errors import UserError
    from zipfast.data.pixels import write_synthetic_image_folder

    cache = Path(cache_dir())
    root = cache / f"{NAME}-v{VERSION}"
    if root.is_dir():
        return root
    tmp = None
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        write_synthetic_image_folder(tmp, **FOLDER)
        tmp.chmod(_dir_mode())  # mkdtemp makes it 0700: the shared cache folder gets an ordinary folder's mode
        try:
            tmp.rename(root)  # atomic: a reader sees the whole folder or none
        except OSError:
            if not root.is_dir():  # not a concurrent writer that finished first
                raise
    except OSError as e:
        raise UserError(f"cannot write the {NAME} image folder under the cache directory {str(cache)!r} "
                        f"({e.strerror or e}): set ZIPFAST_CACHE to a writable directory "
                        f"(default ~/.cache/zipfast)") from e
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _dir_mode() -> int:
    """The mode the process umask gives a new directory (0o777 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def model():
    """(model, tokenizer): the task's random-weight CLIP (the same for every run seed)."""
    from zipfast.data.planted import planted_model

    return planted_model(MODEL_SEED, name=MODEL)

