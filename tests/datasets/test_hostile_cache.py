"""Official few-shot caches whose Datum records were built with the wrong field types or values (a
list as the path, 'zero' as a label, a label outside the classes…) or in the wrong container are
refused when read, naming the file, the entry and the field, with the advice to delete the file;
never a later exit-1 error."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import pytest

import paper_data
from paper_runs import TINY, official_configs, register_random_openai_weights
from zipfast.cli import main
from zipfast.data.imagefolder import DatasetError
from zipfast.datasets import build_dataset
from zipfast.datasets.records import Datum
from zipfast.datasets.safe_pickle import load_datum_pickle

MODULE = "dassl.data.datasets.base_dataset"


class _OfficialDatum:
    """Stands for Dassl's Datum: pickled by reference to MODULE.Datum (registered while _write dumps)."""


_OfficialDatum.__module__, _OfficialDatum.__qualname__, _OfficialDatum.__name__ = MODULE, "Datum", "Datum"


class _Call:
    """A record the pickle builds by calling the class on args (REDUCE: no __setstate__ runs)."""

    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return (_OfficialDatum, self.args)


def _entry(state: dict | None) -> _OfficialDatum:
    """A record as Dassl writes it (NEWOBJ, then BUILD with its attribute dict → __setstate__);
    state None: NEWOBJ alone, a Datum without any field."""
    d = _OfficialDatum()
    d.__dict__.update(state or {})
    return d


def _write(path: Path, obj) -> Path:
    parts = MODULE.split(".")
    names = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    saved = {n: sys.modules.get(n) for n in names}
    sys.modules.update({n: types.ModuleType(n) for n in names})
    sys.modules[MODULE].Datum = _OfficialDatum
    try:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _state(impath="/d/a.jpg", label=0, classname="forest", domain=0):
    return _entry({"_impath": impath, "_label": label, "_domain": domain, "_classname": classname})


GOOD = _state()


@pytest.mark.parametrize("entry, field", [
    (_state(impath=["a.jpg", "b.jpg"]), "impath=['a.jpg', 'b.jpg']"),
    (_state(impath=""), "impath=''"),
    (_state(label="zero"), "label='zero'"),
    (_state(label=True), "label=True"),
    (_state(label=2.0), "label=2.0"),
    (_state(label=-1), "label=-1"),
    (_state(label=10 ** 30), f"label={10 ** 30}"),
    (_state(label=4), "label=4 (expected 0 … 3, the dataset has 4 classes)"),
    (_state(classname=7), "classname=7"),
    (_state(domain="x"), "domain='x'"),
    (_Call(["a.jpg"], "zero", None), "impath=['a.jpg']"),      # REDUCE: Datum(*args)
    (_Call("/d/a.jpg", -5, "forest"), "label=-5"),
    (_Call("/d/a.jpg", 1, b"forest"), "classname=b'forest'"),
    (_entry(None), "no impath"),                                   # NEWOBJ without any field
])
def test_a_datum_with_a_bad_field_is_refused_naming_file_entry_and_field(tmp_path, entry, field):
    path = _write(tmp_path / "shot_1-seed_1.pkl", {"train": [GOOD, GOOD, entry], "val": [GOOD]})
    with pytest.raises(DatasetError) as info:
        load_datum_pickle(path, ("train", "val"), n_classes=4)
    msg = str(info.value)
    assert f"'{path}'" in msg and "entry train[2]" in msg and field in msg and "delete the file" in msg, msg
    assert "\n" not in msg


def test_the_sound_records_are_read(tmp_path):
    path = _write(tmp_path / "ok.pkl", {"train": [_state(label=0), _state(label=3), _Call("/d/b.jpg", 1, "x")],
                                        "val": [GOOD]})
    out = load_datum_pickle(path, ("train", "val"), n_classes=4)
    assert [d.label for d in out["train"]] == [0, 3, 1] and out["val"] == [Datum("/d/a.jpg", 0, "forest")]


@pytest.mark.parametrize("obj, words", [
    ([GOOD], "holds a list, not a dict of splits"),
    ({"train": (GOOD,), "val": [GOOD]}, "under 'train' (found tuple)"),
    ({"train": [GOOD]}, "under 'val' (found NoneType)"),
    ({"train": [GOOD, 3], "val": [GOOD]}, "entry train[1] is 3 (int), not a Datum record"),
    ({"train": [GOOD], "val": [GOOD, [GOOD]]}, "entry val[1] is"),
])
def test_a_container_of_the_wrong_shape_is_refused(tmp_path, obj, words):
    path = _write(tmp_path / "c.pkl", obj)
    with pytest.raises(DatasetError, match="delete the file") as info:
        load_datum_pickle(path, ("train", "val"))
    assert words in str(info.value) and str(path) in str(info.value)


def test_without_a_class_count_the_labels_must_be_the_classes(tmp_path):
    path = _write(tmp_path / "preprocessed.pkl", {"train": [_state(label=0), _state(label=5)], "test": [GOOD]})
    with pytest.raises(DatasetError, match=r"no entry has label\(s\) 1, 2, 3, 4 \(largest 5\)"):
        load_datum_pickle(path, ("train", "test"))


@pytest.mark.parametrize("label", [-1, 4, "zero", 10 ** 30])
def test_build_dataset_refuses_a_cache_with_a_label_outside_the_dataset(tmp_path, label):
    paper_data.eurosat(tmp_path)
    path = _write(tmp_path / "eurosat" / "split_fewshot" / "shot_1-seed_1.pkl",
                  {"train": [_state(label=0), _state(label=label)], "val": [GOOD]})
    with pytest.raises(DatasetError, match=r"shot_1-seed_1.pkl': entry train\[1\] has label=") as info:
        build_dataset("eurosat", tmp_path, shots=1, seed=1)
    assert "4 classes" in str(info.value) or label == "zero"


def test_zipfast_json_cache_with_a_label_outside_the_dataset_is_refused(tmp_path):
    paper_data.eurosat(tmp_path)
    build_dataset("eurosat", tmp_path, shots=1, seed=2)  # writes the JSON cache
    cache = tmp_path / "eurosat" / "split_fewshot" / "shot_1-seed_2.zipfast.json"
    doc = json.loads(cache.read_text())
    doc["train"][1][1] = 9
    cache.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"zipfast.json': entry train\[1\] has label=9 \(expected 0 … 3"):
        build_dataset("eurosat", tmp_path, shots=1, seed=2)


def test_the_official_command_line_exits_2_on_a_bad_cache(tmp_path, monkeypatch, capsys):
    root = tmp_path / "w"
    paper_data.eurosat(root / "DATA")
    workdir = official_configs(root)
    register_random_openai_weights(monkeypatch, workdir)
    monkeypatch.chdir(workdir)
    cache = _write(workdir / "DATA" / "eurosat" / "split_fewshot" / "shot_16-seed_1.pkl",
                   {"train": [GOOD, _Call(["x.jpg"], "zero", "forest")], "val": [GOOD]})
    out = workdir / "output" / "bad"
    argv = ["train", "--root", "DATA", "--seed", "1", "--trainer", "ZIP", "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--config-file", "configs/trainers/ZIP/vit_b16.yaml",
            "--output-dir", str(out), "DATASET.NUM_SHOTS", "16", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("zipfast train: error:")]
    assert len(line) == 1 and "Traceback" not in err, err
    assert "shot_16-seed_1.pkl" in line[0] and "entry train[1] has impath=['x.jpg']" in line[0]
    assert "delete the file" in line[0]
    assert cache.exists()  # refused, not removed behind the user's back
