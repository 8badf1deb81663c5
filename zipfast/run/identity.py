"""What a run's data and frozen model are, independent of where they lie.

A checkpoint records both (its fingerprint's "data" and "weights"), so that `eval` and `--resume`
accept the dataset at a new path (or the weights file at a new path) and refuse only when the
content differs, naming what differs.

- `data_identity`: the dataset's name (a built-in task's or a paper dataset's; "" for a plain image
  folder), its class names, and a SHA-256 of the few-shot split: every train and test image's path
  relative to the dataset root, with its label (the images a run reads, not the bytes: a moved or
  copied folder keeps its hash, a resampled split or a relabelled image does not).
- `weights_fingerprint`: a SHA-256 over every frozen tensor's name, shape, dtype and a strided sample
  of at most SAMPLE values each, so it costs milliseconds on ViT-B/16 and still tells any two
  trained or differently seeded models apart.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

SAMPLE = 4096  # values sampled per tensor for the weights fingerprint


def _name(dataset: str) -> str:
    from zipfast.data import synthetic
    from zipfast.data.classnames import PLANTED_TASKS
    from zipfast.datasets.ids import PAPER_PREFIX, parse_dataset_id

    if dataset in PLANTED_TASKS or dataset == synthetic.NAME:
        return dataset
    if dataset.startswith(PAPER_PREFIX):
        key, subsample, _ = parse_dataset_id(dataset)
        return f"{key}:{subsample}"
    return ""


def _relative(path, root: Path) -> str:
    try:
        return Path(os.path.abspath(path)).relative_to(root).as_posix()
    except ValueError:  # outside the root (a split file may point anywhere): its own path
        return Path(path).as_posix()


def data_identity(dataset: str, data, classnames) -> dict:
    """{"name", "classnames", "split"} of a run's data (split: a hex digest, or None for data that
    has no image list: the planted tasks, whose name and settings make them)."""
    split = None
    if hasattr(data, "train") and hasattr(data, "root"):
        root = Path(os.path.abspath(data.root))
        h = hashlib.sha256()
        for part, items in (("train", data.train), ("test", data.test)):
            h.update(json.dumps([part, [[_relative(p, root), int(y)] for p, y in items]]).encode())
        split = h.hexdigest()
    return {"name": _name(dataset), "classnames": list(classnames), "split": split}


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A hex digest of the model's parameters and buffers (name, shape, dtype, sampled values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not isinstance(t, torch.Tensor):
            continue
        flat = t.detach().reshape(-1)
        if flat.numel() > SAMPLE:
            flat = flat[:: -(-flat.numel() // SAMPLE)]
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(flat.to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()


# Fingerprint keys that say where something lies, each replaced by its content's key when both
# fingerprints have it: the dataset path by the data identity, the weights source by the weights.
LOCATIONS = {"dataset": "data", "pretrained": "weights"}


def differences(theirs: dict, mine: dict, keys=None) -> list[str]:
    """Each setting of `mine` (or of `keys`) that `theirs` (a checkpoint's fingerprint) does not share,
    as "key=theirs (checkpoint) vs mine (this run)"; a location is compared by its content where
    both record it, and a content differing is named by what differs."""
    keys = list(mine) if keys is None else list(keys)
    out = []
    for k in keys:
        content = LOCATIONS.get(k)
        if content is not None and theirs.get(content) is not None and mine.get(content) is not None:
            continue  # compared by content below
        if k in LOCATIONS.values() and theirs.get(k) is None:
            continue  # a checkpoint from before content identities: its location was compared instead
        if k == "data" and theirs.get(k) is not None:
            out += _data_differences(theirs[k], mine[k])
        elif k == "weights" and theirs.get(k) != mine.get(k):
            out.append(f"the frozen model's weights (fingerprint {str(theirs[k])[:12]}… in the checkpoint vs "
                       f"{str(mine[k])[:12]}… here: model {theirs.get('model')!r}, weights "
                       f"{theirs.get('pretrained')!r} in the checkpoint) are not the ones the prompt was trained "
                       "on; pass the --model and --pretrained the run used")
        elif theirs.get(k) != mine.get(k):
            out.append(f"{k}={theirs.get(k)!r} (checkpoint) vs {mine.get(k)!r} (this run)")
    return out


def _data_differences(theirs: dict, mine: dict) -> list[str]:
    out = []
    if theirs.get("name") != mine.get("name"):
        out.append(f"dataset {theirs.get('name') or 'an image folder'!r} (checkpoint) vs "
                   f"{mine.get('name') or 'an image folder'!r} (this run)")
    a, b = list(theirs.get("classnames") or ()), list(mine.get("classnames") or ())
    if a != b:
        extra, missing = [c for c in b if c not in a], [c for c in a if c not in b]
        what = (f"{len(a)} classes (checkpoint) vs {len(b)} (this run)" if len(a) != len(b) else "the same classes in "
                "another order" if not extra else "other classes")
        named = "; ".join(x for x in (f"not in the checkpoint: {', '.join(extra[:3])}" if extra else "",
                                       f"missing here: {', '.join(missing[:3])}" if missing else "") if x)
        out.append(f"class names differ: {what}" + (f" ({named})" if named else ""))
    elif theirs.get("split") != mine.get("split"):
        out.append("the few-shot split differs (another image list or labels: content hash "
                   f"{str(theirs.get('split'))[:12]}… in the checkpoint vs {str(mine.get('split'))[:12]}… here): the "
                   "data at this path is not the data the run trained on")
    return out
