"""The few-shot split cache in `<dataset>/split_fewshot/`.

Read order: the official pickle `shot_{k}-seed_{s}.pkl` (restricted unpickler, Datum only), then
zipfast's own `shot_{k}-seed_{s}.zipfast.json`; when neither exists the caller draws the split and
`write_json_cache` stores it. The JSON holds paths relative to the dataset folder, so a moved
dataset still reads; the official pickle holds the absolute paths of the machine that wrote it,
which `rebase` maps onto this dataset folder when they do not exist here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from zipfast.data.imagefolder import DatasetError
from zipfast.errors import OutputDirError
from zipfast.io import save_text
from zipfast.datasets.records import Datum
from zipfast.datasets.safe_pickle import check_records, load_datum_pickle

log = logging.getLogger("zipfast.datasets")
FORMAT = "zipfast-fewshot-v1"


def official_path(dataset_dir: Path, shots: int, seed: int) -> Path:
    return dataset_dir / "split_fewshot" / f"shot_{shots}-seed_{seed}.pkl"


def json_path(dataset_dir: Path, shots: int, seed: int) -> Path:
    return dataset_dir / "split_fewshot" / f"shot_{shots}-seed_{seed}.zipfast.json"


def rebase(items: list[Datum], dataset_dir: Path) -> list[Datum]:
    """Map absolute paths written on another machine onto dataset_dir (matched on its folder name)."""
    out, name = [], dataset_dir.name
    for d in items:
        if os.path.exists(d.impath):
            out.append(d)
            continue
        parts = Path(d.impath).parts
        where = [i for i, p in enumerate(parts) if p == name]
        candidate = dataset_dir.joinpath(*parts[where[-1] + 1:]) if where else None
        if candidate is None or not candidate.exists():
            raise DatasetError(f"the few-shot cache names image '{d.impath}', which exists neither there nor "
                               f"as '{candidate or dataset_dir / '…'}'; delete the cache in "
                               f"'{dataset_dir / 'split_fewshot'}' to draw the split again")
        out.append(d.rebased(str(candidate)))
    return out


def read_cache(dataset_dir: Path, shots: int, seed: int, keys: tuple[str, ...], n_classes: int | None = None):
    """({key: [Datum]}, source) from the official pickle or zipfast's JSON; (None, None) if neither exists.
    n_classes (the dataset's class count, when known) bounds the cached labels: DatasetError naming the
    file and the entry otherwise."""
    pkl = official_path(dataset_dir, shots, seed)
    if pkl.is_file():
        data = load_datum_pickle(pkl, keys, n_classes)
        return {k: rebase(v, dataset_dir) for k, v in data.items()}, f"official cache {pkl}"
    path = json_path(dataset_dir, shots, seed)
    if not path.is_file():
        return None, None
    try:
        doc = json.loads(path.read_text())
        if not (isinstance(doc, dict) and doc.get("format") == FORMAT):
            raise ValueError(f"not a {FORMAT} file")
        data = {k: [Datum(str(dataset_dir / rel), int(label), str(name)) for rel, label, name in doc[k]]
                for k in keys}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"cannot read the few-shot cache '{path}' ({type(e).__name__}: {e}); delete it to "
                           f"draw the split again (the same seed gives the same split)") from e
    check_records(path, data, n_classes)
    return data, f"zipfast cache {path}"


def write_json_cache(dataset_dir: Path, shots: int, seed: int, splits: dict[str, list[Datum]]) -> None:
    """Store the drawn split (atomically); an unwritable dataset folder is logged, not fatal."""
    path = json_path(dataset_dir, shots, seed)
    doc = {"format": FORMAT, "shots": shots, "seed": seed}
    for key, items in splits.items():
        doc[key] = [[os.path.relpath(d.impath, dataset_dir), d.label, d.classname] for d in items]
    try:
        save_text(json.dumps(doc) + "\n", path)
    except (OSError, OutputDirError) as e:  # io turns disk-full/read-only into OutputDirError
        log.warning("could not write the few-shot cache %s (%s); the split is drawn again next time", path, e)
