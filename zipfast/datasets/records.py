"""The one record every split is made of: Dassl's `Datum` (image path, label, class name)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from zipfast.data.imagefolder import DatasetError


@dataclass(frozen=True)
class Datum:
    """One labelled image: impath (absolute path), label (int, 0-based), classname, domain (unused: 0).

    The fields and their meaning are Dassl's `Datum`; `__setstate__` accepts the attribute
    dict an official pickle carries (`_impath`, `_label`, `_domain`, `_classname`).
    """

    impath: str
    label: int
    classname: str = ""
    domain: int = 0

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise DatasetError(f"a Datum record holds {type(state).__name__}, not an attribute dict")
        # Stored as found: load_datum_pickle checks every field afterwards and names the entry
        # (a Datum built by REDUCE / NEWOBJ never comes here, so one check covers both ways).
        for key in ("impath", "label", "classname", "domain"):
            default = 0 if key in ("label", "domain") else ""
            object.__setattr__(self, key, state.get("_" + key, state.get(key, default)))

    def rebased(self, impath: str) -> "Datum":
        return Datum(impath, self.label, self.classname, self.domain)


def lab2cname(items) -> tuple[dict[int, str], list[str]]:
    """({label: classname}, classnames in label order) as Dassl's DatasetBase.get_lab2cname."""
    mapping = {d.label: d.classname for d in items}
    return mapping, [mapping[label] for label in sorted(mapping)]


def check_files(items, what: str, limit: int | None = None) -> None:
    """DatasetError naming the first image of items (up to `limit`) that is not a file."""
    for d in items if limit is None else items[:limit]:
        if not os.path.isfile(d.impath):
            raise DatasetError(f"{what}: image file '{d.impath}' does not exist (label {d.label}, "
                               f"class {d.classname!r}); the dataset folder is incomplete or moved")
