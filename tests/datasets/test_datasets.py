"""The paper's dataset layouts, Dassl's few-shot draw, the official/zipfast caches, base/new, errors."""

from __future__ import annotations

import json
import math
import pickle
import random
import sys
import types
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paper_data
from zipfast.data.imagefolder import DatasetError
from zipfast.datasets import build_dataset, get_spec
from zipfast.datasets.fewshot import sample_fewshot, subsample_classes
from zipfast.datasets.records import Datum
from zipfast.datasets.safe_pickle import load_datum_pickle
from zipfast.datasets.splits import read_split


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return paper_data.all_families(tmp_path_factory.mktemp("paper_data"))


@pytest.fixture
def fresh_root(tmp_path):
    return tmp_path


# ------------------------------------------------------------------ loading each layout family


@pytest.mark.parametrize("name, n_classes, sizes", [
    ("eurosat", 4, (4 * 2, 4 * 2, 4 * 3)),        # CoOp JSON: k=2 train, min(k,4)=2 val, full test
    ("Resisc45", 3, (3 * 2, 3 * 2, 3 * 2)),       # BlackVIP JSON (val has 2 per class)
    ("svhn", 3, (3 * 2, 3 * 2, 3 * 3)),           # BlackVIP SVHN: test read from svhn/test
    ("fgvc_aircraft", 3, (3 * 2, 3 * 2, 3 * 2)),  # FGVC text files
    ("imagenet", 4, (4 * 2, 4 * 2, 4 * 2)),       # folders + classnames.txt; val = test
])
def test_layouts_load_with_official_names_and_sizes(data_root, name, n_classes, sizes):
    ds = build_dataset(name, data_root, shots=2, seed=1, write_cache=False)
    assert len(ds.classnames) == n_classes
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes
    assert sorted({d.label for d in ds.train}) == list(range(n_classes))
    assert all(Path(d.impath).is_file() for d in ds.train + ds.test)
    assert ds.fewshot_source == "drawn"


def test_class_names_come_from_the_official_files(data_root):
    assert build_dataset("EuroSAT", data_root, 1, 1, write_cache=False).classnames == list(paper_data.EUROSAT_CLASSES)
    assert build_dataset("imagenet", data_root, 1, 1, write_cache=False).classnames == [n for _, n in paper_data.IMAGENET]
    assert build_dataset("fgvc_aircraft", data_root, 1, 1, write_cache=False).classnames == ["707-320", "A300B4", "Cessna 172"]
    assert get_spec("eurosat").template == "a centered satellite photo of {}."
    assert get_spec("clevr").template == "This is a photo of {} objects."


def test_ood_sets_and_class_subsets(data_root):
    names = [n for _, n in paper_data.IMAGENET]
    v2 = build_dataset("imagenetv2", data_root, shots=16, seed=1)
    assert v2.classnames == names and len(v2.test) == 8 and v2.train == v2.test  # test only: no sampling
    assert build_dataset("imagenet_sketch", data_root).classnames == names
    for key in ("imagenet_a", "ImageNetR"):
        ds = build_dataset(key, data_root, shots=16, seed=1)
        assert ds.classnames == [names[1], names[3]]  # README.txt is not a class
        assert sorted({d.label for d in ds.test}) == [0, 1] and len(ds.test) == 4


# ------------------------------------------------------------------ Dassl's few-shot sequence


def dassl_reference(train, val, k, seed):
    """Dassl's generate_fewshot_dataset on the global `random`, as train.py runs it."""
    random.seed(seed)
    out = []
    for items, n in ((train, k), (val, min(k, 4))):
        tracker = defaultdict(list)
        for it in items:
            tracker[it.label].append(it)
        sampled = []
        for label, group in tracker.items():
            sampled.extend(random.sample(group, n) if len(group) >= n else group)
        out.append(sampled)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 17])
@pytest.mark.parametrize("shots", [1, 2, 4, 5, 8])
def test_fewshot_sequence_is_dasslss(data_root, seed, shots):
    full = build_dataset("eurosat", data_root, shots=0, seed=seed, write_cache=False)
    state = random.getstate()
    ds = build_dataset("eurosat", data_root, shots=shots, seed=seed, write_cache=False)
    assert random.getstate() == state  # the private RNG leaves the global one alone
    ref_train, ref_val = dassl_reference(full.train, full.val, shots, seed)
    assert [d.impath for d in ds.train] == [d.impath for d in ref_train]
    assert [d.impath for d in ds.val] == [d.impath for d in ref_val]


def test_svhn_replays_the_official_shuffles_before_sampling(data_root):
    """The official SVHN module shuffles each class's train and test listing first."""
    from zipfast.datasets.splits import listdir_nohidden

    seed, k = 3, 2
    root = data_root / "svhn"
    full = build_dataset("svhn", data_root, shots=0, seed=seed, write_cache=False)
    random.seed(seed)
    for category in listdir_nohidden(root / "train", sort=True):
        random.shuffle(listdir_nohidden(root / "train" / category))
        random.shuffle(listdir_nohidden(root / "test" / category))
    expected = []
    for items, n in ((full.train, k), (full.val, min(k, 4))):
        tracker = defaultdict(list)
        for it in items:
            tracker[it.label].append(it)
        expected.append([d.impath for g in tracker.values() for d in random.sample(g, n)])
    ds = build_dataset("svhn", data_root, shots=k, seed=seed, write_cache=False)
    assert [d.impath for d in ds.train] == expected[0] and [d.impath for d in ds.val] == expected[1]


def test_fewer_items_than_shots_keeps_all():
    items = [Datum(f"/x/{i}", i % 2) for i in range(3)]  # label 0: 2 items, label 1: 1 item
    assert sample_fewshot(items, 5, random.Random(0)) == [items[0], items[2], items[1]]


# ------------------------------------------------------------------ caches


def _official_pickle(path: Path, splits: dict, module="dassl.data.datasets.base_dataset"):
    """Write a cache the way Dassl does: its own Datum class, pickled at the highest protocol."""
    mod = types.ModuleType(module)

    class OfficialDatum:  # Dassl's attributes
        def __init__(self, impath, label, classname):
            self._impath, self._label, self._domain, self._classname = impath, label, 0, classname

    OfficialDatum.__module__, OfficialDatum.__qualname__, OfficialDatum.__name__ = module, "Datum", "Datum"
    mod.Datum = OfficialDatum
    parts = module.split(".")
    names = [".".join(parts[:i]) for i in range(1, len(parts))]
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[module] = mod
    try:
        data = {k: [OfficialDatum(d.impath, d.label, d.classname) for d in v] for k, v in splits.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    finally:
        for name in names + [module]:
            del sys.modules[name]


@pytest.mark.parametrize("module", ["dassl.data.datasets.base_dataset", "my_dassl.data.datasets.base_dataset"])
def test_reads_the_official_fewshot_pickle(tmp_path, module):
    paper_data.eurosat(tmp_path)
    full = build_dataset("eurosat", tmp_path, shots=0, seed=1)
    # a deliberately different choice than the draw would give: the cache must win
    chosen = {"train": [d for d in full.train if d.impath.endswith("_1.jpg")],
              "val": [d for d in full.val if d.impath.endswith("_0.jpg")]}
    _official_pickle(tmp_path / "eurosat" / "split_fewshot" / "shot_1-seed_5.pkl", chosen, module)
    ds = build_dataset("eurosat", tmp_path, shots=1, seed=5)
    assert [d.impath for d in ds.train] == [d.impath for d in chosen["train"]]
    assert [(d.label, d.classname) for d in ds.val] == [(d.label, d.classname) for d in chosen["val"]]
    assert ds.fewshot_source.startswith("official cache")


def test_official_pickle_paths_from_another_machine_are_rebased(tmp_path):
    paper_data.eurosat(tmp_path)
    full = build_dataset("eurosat", tmp_path, shots=0, seed=1)
    moved = {k: [Datum("/home/someone/DATA/eurosat/" + str(Path(d.impath).relative_to(tmp_path / "eurosat")),
                       d.label, d.classname) for d in v[:4]] for k, v in (("train", full.train), ("val", full.val))}
    _official_pickle(tmp_path / "eurosat" / "split_fewshot" / "shot_1-seed_1.pkl", moved)
    ds = build_dataset("eurosat", tmp_path, shots=1, seed=1)
    assert [d.impath for d in ds.train] == [d.impath for d in full.train[:4]]


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(_Boom.target),))


@pytest.mark.parametrize("payload", ["reduce", "other_class", "numpy"])
def test_pickle_holding_anything_else_is_refused(tmp_path, payload):
    target = tmp_path / "executed"
    _Boom.target = str(target)
    obj = {"reduce": {"train": [_Boom()], "val": []},
           "other_class": {"train": [pytest.MonkeyPatch()], "val": []},
           "numpy": {"train": __import__("numpy").arange(3), "val": []}}[payload]
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    with pytest.raises(DatasetError, match="refused global"):
        load_datum_pickle(path, ("train", "val"))
    assert not target.exists()


def test_zipfast_cache_is_json_and_read_back(tmp_path):
    paper_data.eurosat(tmp_path)
    first = build_dataset("eurosat", tmp_path, shots=2, seed=4)
    cache = tmp_path / "eurosat" / "split_fewshot" / "shot_2-seed_4.zipfast.json"
    doc = json.loads(cache.read_text())
    assert doc["format"] == "zipfast-fewshot-v1" and len(doc["train"]) == 8
    assert not doc["train"][0][0].startswith("/")  # relative to the dataset folder
    again = build_dataset("eurosat", tmp_path, shots=2, seed=4)
    assert again.fewshot_source.startswith("zipfast cache") and again.train == first.train


# ------------------------------------------------------------------ base / new


def test_base_new_subsampling_matches_the_official_rule():
    items = [Datum(f"/x/{i}", label, f"c{label}") for i, label in enumerate([4, 0, 2, 1, 3, 0, 4])]
    base, = subsample_classes(items, subsample="base")
    new, = subsample_classes(items, subsample="new")
    # labels {0..4}: ceil(5/2) = 3 base (0,1,2), new (3,4) relabelled 0,1
    assert [(d.impath, d.label) for d in base] == [("/x/1", 0), ("/x/2", 2), ("/x/3", 1), ("/x/5", 0)]
    assert [(d.impath, d.label, d.classname) for d in new] == [("/x/0", 1, "c4"), ("/x/4", 0, "c3"), ("/x/6", 1, "c4")]


def test_base_new_dataset(data_root):
    base = build_dataset("eurosat", data_root, shots=2, seed=1, subsample="base", write_cache=False)
    new = build_dataset("eurosat", data_root, shots=2, seed=1, subsample="new", write_cache=False)
    n = len(paper_data.EUROSAT_CLASSES)
    assert base.classnames == list(paper_data.EUROSAT_CLASSES[:math.ceil(n / 2)])
    assert new.classnames == list(paper_data.EUROSAT_CLASSES[math.ceil(n / 2):])
    assert len(base.test) == 2 * 3 and {d.label for d in new.test} == {0, 1}


# ------------------------------------------------------------------ errors name what was expected


def test_missing_root_and_folder_and_split(tmp_path):
    with pytest.raises(DatasetError, match=f"'{tmp_path / 'nope'}'"):
        build_dataset("eurosat", tmp_path / "nope")
    with pytest.raises(DatasetError, match=f"'{tmp_path / 'eurosat'}'.*put EuroSAT"):
        build_dataset("eurosat", tmp_path)
    (tmp_path / "eurosat" / "2750").mkdir(parents=True)
    with pytest.raises(DatasetError, match="looked for the file .*split_zhou_EuroSAT.json"):
        build_dataset("eurosat", tmp_path)
    with pytest.raises(DatasetError, match="classnames.txt"):
        (tmp_path / "imagenet" / "images").mkdir(parents=True)
        build_dataset("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="split_SVHN.json.*split_mlai_SVHN.json"):
        (tmp_path / "svhn").mkdir()
        build_dataset("svhn", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        build_dataset("mnist", tmp_path)


def test_broken_split_file_and_missing_image(tmp_path):
    d = paper_data.eurosat(tmp_path)
    split = d / "split_zhou_EuroSAT.json"
    split.write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read split file"):
        build_dataset("eurosat", tmp_path)
    split.write_text(json.dumps({"train": [["a.jpg", "zero", "x"]], "val": [], "test": []}))
    with pytest.raises(DatasetError, match=r"train\[0\] is \['a.jpg', 'zero', 'x'\]"):
        build_dataset("eurosat", tmp_path)
    split.write_text(json.dumps({"train": [["gone.jpg", 0, "x"]], "val": [], "test": [["gone.jpg", 0, "x"]]}))
    with pytest.raises(DatasetError, match="gone.jpg' does not exist"):
        build_dataset("eurosat", tmp_path, shots=1)


def test_broken_cache_is_an_error_naming_it(tmp_path):
    paper_data.eurosat(tmp_path)
    bad = tmp_path / "eurosat" / "split_fewshot" / "shot_1-seed_1.pkl"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x80\x05garbage")
    with pytest.raises(DatasetError, match="shot_1-seed_1.pkl"):
        build_dataset("eurosat", tmp_path, shots=1, seed=1)


# ------------------------------------------------------------------ property tests of the readers

_path = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@st.composite
def _splits(draw):
    """train/val/test entries whose labels name classes of one class list (one name per label)."""
    names = draw(st.lists(st.text(max_size=8), min_size=1, max_size=6))
    entry = st.builds(lambda rel, label: (rel, label, names[label]), _path, st.integers(0, len(names) - 1))
    return {k: draw(st.lists(entry, max_size=6)) for k in ("train", "val", "test")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(split=_splits())
def test_read_split_round_trips(tmp_path_factory, split):
    path = tmp_path_factory.mktemp("split") / "split.json"
    path.write_text(json.dumps({k: [list(e) for e in v] for k, v in split.items()}))
    labels = {label for v in split.values() for _, label, _ in v}
    if labels != set(range(max(labels, default=-1) + 1)):  # a class without any image: refused by name
        with pytest.raises(DatasetError, match="labels must be the classes 0"):
            read_split(path, Path("/img"))
        return
    out = read_split(path, Path("/img"))
    for key, entries in split.items():
        assert [(d.impath, d.label, d.classname) for d in out[key]] == [
            (str(Path("/img")) + "/" + rel if not rel.startswith("/") else rel, label, name)
            for rel, label, name in entries]


def test_read_split_refuses_labels_that_disagree_or_skip_a_class(tmp_path):
    path = tmp_path / "split.json"
    good = [["a.jpg", 0, "cat"], ["b.jpg", 1, "dog"]]
    path.write_text(json.dumps({"train": good, "val": good, "test": [["c.jpg", 1, "cat"], ["d.jpg", 2, "dog"]]}))
    with pytest.raises(DatasetError, match=r"test\[0\] gives label 1 the class 'cat', elsewhere it is 'dog'"):
        read_split(path, tmp_path)  # the test labels shifted by one
    path.write_text(json.dumps({"train": [["a.jpg", 0, "cat"], ["b.jpg", 2, "dog"]], "val": [], "test": []}))
    with pytest.raises(DatasetError, match="no image has label.s. 1"):
        read_split(path, tmp_path)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                     max_leaves=12)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_json | st.fixed_dictionaries({"train": _json, "val": _json, "test": _json}), raw=st.binary(max_size=30))
def test_read_split_rejects_malformed_files_with_dataset_error(tmp_path_factory, doc, raw):
    folder = tmp_path_factory.mktemp("bad")
    for i, content in enumerate((json.dumps(doc).encode(), raw)):
        path = folder / f"split{i}.json"
        path.write_bytes(content)
        try:
            out = read_split(path, folder)
        except DatasetError as e:
            assert str(path) in str(e)
        else:  # accepted only when every entry was a well-formed triple
            assert all(isinstance(d, Datum) and isinstance(d.label, int) for v in out.values() for d in v)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=200))
def test_restricted_unpickler_never_raises_anything_but_dataset_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("pkl") / "x.pkl"
    path.write_bytes(data)
    try:
        load_datum_pickle(path, ("train",))
    except DatasetError:
        pass


_word = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="-_/'"), min_size=1, max_size=6)


@settings(max_examples=50, deadline=None)
@given(names=st.lists(st.lists(_word, min_size=1, max_size=3).map(" ".join), min_size=1, max_size=6, unique=True),
       picks=st.lists(st.integers(0, 5), max_size=12))
def test_fgvc_reader_labels_follow_variants_txt(tmp_path_factory, names, picks):
    from zipfast.datasets.splits import read_fgvc

    d = tmp_path_factory.mktemp("fgvc")
    (d / "variants.txt").write_text("\n".join(names) + "\n")
    chosen = [names[p % len(names)] for p in picks]
    for key in ("train", "val", "test"):
        (d / f"images_variant_{key}.txt").write_text("".join(f"{i:07d} {n}\n" for i, n in enumerate(chosen)))
    files = ("variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt")
    out = read_fgvc(d, d / "images", files, "dataset FGVCAircraft")
    assert [(d_.label, d_.classname) for d_ in out["test"]] == [(names.index(n), n) for n in chosen]
    assert [Path(d_.impath).name for d_ in out["train"]] == [f"{i:07d}.jpg" for i in range(len(chosen))]


@settings(max_examples=50, deadline=None)
@given(pairs=st.dictionaries(_word.filter(lambda w: "/" not in w), st.lists(_word, min_size=1, max_size=3).map(" ".join),
                             min_size=1, max_size=6))
def test_classnames_reader_round_trips(tmp_path_factory, pairs):
    from zipfast.datasets.splits import read_classnames

    path = tmp_path_factory.mktemp("cn") / "classnames.txt"
    path.write_text("".join(f"{k} {v}\n" for k, v in pairs.items()))
    assert list(read_classnames(path, "dataset ImageNet").items()) == list(pairs.items())


def test_a_classnames_file_that_is_not_utf8_is_refused_by_name(tmp_path):
    from zipfast.datasets.splits import read_classnames

    path = tmp_path / "classnames.txt"
    path.write_bytes("n01440764 tench\nn01443537 caf\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"is not UTF-8 text \(byte 0xe9"):
        read_classnames(path, "ImageNet")
