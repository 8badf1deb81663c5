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


def load_datum_pickle(path, keys: tuple[str, ...]) -> dict[str, list[Datum]]:
    """{key: [Datum, …]} for each of keys from an official Dassl pickle; DatasetError on anything else."""
    path = Path(path)
    try:
        data = _DatumOnly(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError) as e:
        raise DatasetError(f"cannot read the few-shot cache '{path}': {e}. Delete the file to draw the "
                           f"split again (the same seed gives the same split)") from e
    if not isinstance(data, dict):
        raise DatasetError(f"few-shot cache '{path}' holds a {type(data).__name__}, not a dict of splits")
    out = {}
    for key in keys:
        items = data.get(key)
        if not isinstance(items, list) or not all(isinstance(d, Datum) and hasattr(d, "impath") for d in items):
            raise DatasetError(f"few-shot cache '{path}' has no list of Datum records under {key!r}; "
                               f"delete it to draw the split again")
        out[key] = items
    return out
