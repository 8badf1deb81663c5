"""Reading the official few-shot caches (`split_fewshot/shot_{k}-seed_{s}.pkl`) without running code.

Dassl writes a pickled dict of lists of its `Datum` objects. An unpickler may call any global a
file names, so this one admits exactly one: the `Datum` class (under the module names Dassl and
BlackVIP's copy use), mapped onto zipfast's own plain record. Any other global — a function, another
class, numpy — is refused with a `DatasetError` naming it; nothing in the file is executed.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from zipfast.data.imagefolder import DatasetError
from zipfast.datasets.records import Datum

# (module, name) pairs that denote Dassl's Datum in pickles written by the official code bases.
DATUM_GLOBALS = frozenset({
    ("dassl.data.datasets.base_dataset", "Datum"),
    ("dassl.data.datasets", "Datum"),
    ("my_dassl.data.datasets.base_dataset", "Datum"),
    ("my_dassl.data.datasets", "Datum"),
})


class _DatumOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in DATUM_GLOBALS:
            return Datum
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only Dassl's Datum is admitted")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id: only plain Datum records are admitted")


_DELETE = "delete the file to draw the split again (the same seed gives the same split)"


def _bad_field(d: Datum, n_classes: int | None) -> str | None:
    """'field=value (expected …)' for the first field of d that Dassl could not have written; None if sound.

    A Datum built by the pickle's own REDUCE / NEWOBJ opcodes skips `Datum.__setstate__`, so every
    field is checked here: impath a non-empty str without NUL, label an int (not bool) in
    0 … n_classes − 1 (label ≥ 0 where n_classes is unknown), domain an int, classname a str.
    """
    fields = {}
    for key in ("impath", "label", "domain", "classname"):
        try:
            fields[key] = object.__getattribute__(d, key)
        except AttributeError:
            return f"no {key} (a Datum missing its fields)"
    impath, label, domain, classname = fields["impath"], fields["label"], fields["domain"], fields["classname"]
    if not isinstance(impath, str) or not impath or "\0" in impath:
        return f"impath={impath!r:.80} (expected a file path: a non-empty string)"
    if type(label) is not int:
        return f"label={label!r:.80} (expected an int)"
    if label < 0 or (n_classes is not None and label >= n_classes):
        top = f"{n_classes - 1}, the dataset has {n_classes} classes" if n_classes is not None else "…"
        return f"label={label!r:.80} (expected 0 … {top})"
    if type(domain) is not int:
        return f"domain={domain!r:.80} (expected an int)"
    if not isinstance(classname, str):
        return f"classname={classname!r:.80} (expected a string)"
    return None


def load_datum_pickle(path, keys: tuple[str, ...], n_classes: int | None = None,
                      advice: str = _DELETE) -> dict[str, list[Datum]]:
    """{key: [Datum, …]} for each of keys from an official Dassl pickle; DatasetError on anything else.

    The file must hold what Dassl writes: a dict with a list of Datum records under each of keys
    (`{"train": [...], "val": [...]}` for a few-shot cache). Every record is checked after
    unpickling (`_bad_field`); the first bad one is named by key and index. n_classes, when known,
    bounds the labels; when not, the labels of all keys together must be the classes 0 … n−1.
    """
    path = Path(path)
    try:
        data = _DatumOnly(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError, RecursionError) as e:
        raise DatasetError(f"cannot read the few-shot cache '{path}': {e}; {advice}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"few-shot cache '{path}' holds a {type(data).__name__}, not a dict of splits "
                           f"({', '.join(map(repr, keys))}); {advice}")
    out = {}
    for key in keys:
        items = data.get(key)
        if not isinstance(items, list):
            raise DatasetError(f"few-shot cache '{path}' has no list of Datum records under {key!r} "
                               f"(found {type(items).__name__}); {advice}")
        out[key] = items
    check_records(path, out, n_classes, advice)
    return out


def check_records(path, splits: dict[str, list], n_classes: int | None = None, advice: str = _DELETE) -> None:
    """DatasetError naming the file, the entry (key[index]) and the field of the first record in
    splits that is not a sound Datum (see `_bad_field`); n_classes None: the labels of all splits
    together must be the classes 0 … n−1."""
    for key, items in splits.items():
        for i, d in enumerate(items):
            if type(d) is not Datum:
                raise DatasetError(f"few-shot cache '{path}': entry {key}[{i}] is {d!r:.60} ({type(d).__name__}), not a "
                                   f"Datum record; {advice}")
            why = _bad_field(d, n_classes)
            if why is not None:
                raise DatasetError(f"few-shot cache '{path}': entry {key}[{i}] has {why}; {advice}")
    if n_classes is None:
        labels = sorted({d.label for items in splits.values() for d in items})
        if labels and labels[-1] != len(labels) - 1:
            missing = sorted(set(range(labels[-1] + 1)) - set(labels))[:5]
            raise DatasetError(f"few-shot cache '{path}': the labels must be the classes 0 … n−1, but no entry has "
                               f"label(s) {', '.join(map(str, missing))} (largest {labels[-1]}); {advice}")
