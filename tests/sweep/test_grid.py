"""zipfast.sweep.grid: --grid / --seeds / grid-file parsing, the runs of a grid, their configs, refusals."""

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zipfast.config import TrainConfig
from zipfast.config.train import SPSA_PARAM_NAMES
from zipfast.errors import ConfigError
from zipfast.methods import METHODS
from zipfast.sweep import grid as g
from zipfast.sweep.grid import (MAX_RUNS, RunSpec, apply, check_runs, expand, load_grid_file, paper_grid, parse_grid,
                                parse_seeds, split_grid, sweep_keys)


def refusal(fn, *args, **kwargs) -> str:
    """The message of the ConfigError fn raises: exactly one line."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


# ------------------------------------------------------------------------------ --grid


def test_parse_grid_types_values_and_keeps_order():
    grid = parse_grid(["a=1.0,0.1", "rank=1,3 zo-sgd.lr=1e-3, 1e-4", "opt_type=spsa,spsa-clip sharpzo.prune=true,False"])
    assert grid == {"a": [1.0, 0.1], "rank": [1, 3], "zo-sgd.lr": [0.001, 0.0001], "opt_type": ["spsa", "spsa-clip"],
                    "sharpzo.prune": [True, False]}
    assert [type(v) for v in grid["rank"] + grid["a"]] == [int, int, float, float]
    assert parse_grid("c=1") == {"c": [1.0]} and type(parse_grid("c=1")["c"][0]) is float  # a float field
    assert parse_grid([]) == {}


@pytest.mark.parametrize("items, names", [
    (["a"], ["'a'", "="]),                                   # no '='
    (["a=0.1,,0.2"], ["'a=0.1,,0.2'", "empty value"]),
    (["a="], ["'a='", "empty value"]),
    (["   "], ["empty item"]),
    (["=1"], ["empty", "key"]),
    (["rnak=1,2"], ["'rnak'", "rank"]),                      # unknown, with the close match
    (["rank=1.5"], ["rank", "'1.5'", "integer"]),            # wrong type
    (["a=fast"], ["a", "'fast'", "number"]),
    (["a=nan"], ["'nan'", "number"]),
    (["a=1e999"], ["'1e999'", "finite"]),
    (["sharpzo.prune=maybe"], ["sharpzo.prune", "'maybe'", "true or false"]),
    (["rank=99999999999999999999"], ["rank", "too large"]),
    (["a=0.1 a=0.2"], ["a", "twice"]),                       # the same key twice, one item
    (["a=0.1", "a=0.2"], ["a", "twice"]),                    # … or two
    (["a=0.1,0.10"], ["0.10", "more than once"]),            # the same value twice once typed
    (["dataset=x,y"], ["dataset", "not a sweep key"]),
    (["seed=1,2"], ["seed", "--seeds"]),
    (["budget=10,20"], ["budget", "--budget"]),
    (["precision=fp32,bf16"], ["precision", "not a sweep key"]),
    (["spsa_params=1"], ["spsa_params", "o, c, a, alpha, gamma"]),
    (["method=zip"], ["method", "--methods"]),
    (["bar.lrs=1"], ["bar.lrs", "list option"]),
    (["nope.lr=1"], ["'nope'", "unknown method"]),
    (["zo-sgd.rnk=1"], ["zo-sgd", "'rnk'", "rank"]),
    (["zo-sgd.a=1"], ["zo-sgd", "'a'"]),                      # ZO-SGD reads no SPSA element
])
def test_parse_grid_refusals_name_the_item(items, names):
    msg = refusal(parse_grid, items)
    assert msg.startswith("--grid")
    for name in names:
        assert name in msg, (name, msg)


def test_parse_grid_refuses_a_grid_past_the_cap_naming_its_size():
    ints = lambda n: ",".join(map(str, range(1, n + 1)))  # noqa: E731
    msg = refusal(parse_grid, [f"intrinsic_dim={ints(100)}", f"rank={ints(100)}", f"n_ctx={ints(11)}"])
    assert "110,000 grid points" in msg and "zip" in msg and f"{MAX_RUNS:,}" in msg
    # keys of different methods do not multiply: 1,000 zo-sgd points and 1,000 bar points
    assert len(parse_grid([f"zo-sgd.pairs={ints(1000)}", f"bar.q={ints(1000)}"])) == 2


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.lists(st.text(), max_size=3)))
def test_any_text_is_a_grid_or_one_line(items):
    try:
        grid = parse_grid(items)
    except ConfigError as exc:
        assert len(str(exc).splitlines()) == 1, str(exc)
    else:
        assert isinstance(grid, dict) and all(isinstance(v, list) and v for v in grid.values())


_KEYS = sorted(set(sweep_keys()) | {"rank", "zip.rank", "spsa_params", "seed", "dataset", "bar.lrs", "rnak", "x.y"})
_VALUE = st.one_of(st.integers(-10, 10**20).map(str), st.floats(allow_nan=True).map(repr), st.sampled_from(
    ["true", "False", "spsa", "spsa-clip", "", " ", "1e-3", "1e999", ".5", "1.", "a_photo_of"]), st.text(max_size=6))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_KEYS), st.lists(_VALUE, min_size=0, max_size=4)), max_size=4))
def test_structured_grid_items_are_a_grid_or_one_line(pairs):
    items = [f"{key}={','.join(values)}" for key, values in pairs]
    try:
        grid = parse_grid(items)
    except ConfigError as exc:
        assert len(str(exc).splitlines()) == 1, str(exc)
    else:
        assert list(grid) == [k for k, _ in pairs]


# ------------------------------------------------------------------------------ methods, paper grid


def test_split_grid_applies_a_key_to_the_methods_that_take_it():
    grid = parse_grid(["rank=1,3", "a=0.1,0.01", "lr=1e-3", "zip-cma.sigma0=0.1,0.3", "batch_size=32"])
    out = split_grid(grid, ["zip", "zo-sgd", "zip-cma", "bar", "zsclip"])
    assert list(out) == ["zip", "zo-sgd", "zip-cma", "bar", "zsclip"]
    assert out["zip"] == {"a": [0.1, 0.01], "batch_size": [32], "rank": [1, 3]}
    assert out["zo-sgd"] == {"batch_size": [32], "lr": [0.001], "rank": [1, 3]}  # no SPSA element: ZIP's optimiser only
    assert out["zip-cma"] == {"batch_size": [32], "rank": [1, 3], "sigma0": [0.1, 0.3]}
    assert out["bar"] == {"batch_size": [32]} and out["zsclip"] == {}
    assert "no chosen method" in refusal(split_grid, parse_grid(["lr=1e-3"]), ["zip", "bar"])
    assert "not among the methods" in refusal(split_grid, parse_grid(["zo-sgd.lr=1e-3"]), ["zip"])
    msg = refusal(split_grid, parse_grid(["lr=1e-3", "zo-sgd.lr=1e-4"]), ["zo-sgd"])
    assert "lr" in msg and "twice" in msg and "zo-sgd.lr" in msg
    assert "more than once" in refusal(split_grid, {}, ["zip", "zip"])
    assert "unknown method" in refusal(split_grid, {}, ["zipp"])


def test_registry_keys_are_consistent():
    """A method never names an option after a flat field it reads, and an option name means one type in
    every method (so a bare key is typed once)."""
    kinds: dict = {}
    for name, m in METHODS.items():
        options = {f.name for f in dataclasses.fields(m.options)}
        assert not options & g._flat_keys(name), name
        for f in dataclasses.fields(m.options):
            kinds.setdefault(f.name, set()).add(g._kind(f))
        assert set(m.config_keys) <= {f.name for f in dataclasses.fields(TrainConfig)}, name
    assert {k: v for k, v in kinds.items() if len(v) > 1} == {}


def test_paper_grid_of_zip_is_the_864_point_table():
    grid = paper_grid("zip")
    assert grid == {"a": [1.0, 0.1, 0.01, 0.005], "alpha": [0.6, 0.5, 0.4, 0.3], "c": [0.01, 0.005, 0.001],
                    "gamma": [0.2, 0.1], "intrinsic_dim": [500, 1000, 2000], "rank": [1, 3, 5]}
    assert math.prod(len(v) for v in grid.values()) == 4 * 4 * 3 * 2 * 3 * 3 == 864
    specs = expand({"zip": grid}, [1, 2, 3])
    assert len(specs) == 3 * 864 and len({s.config_key for s in specs}) == 864
    assert len({s.name for s in specs}) == 3 * 864
    for method in ("bar", "blackvip", "bptvlm", "sharpzo", "zo-sgd", "zip-cma", "zsclip"):
        msg = refusal(paper_grid, method)
        assert method in msg and "not built in" in msg and "--grid" in msg


# ------------------------------------------------------------------------------ runs


def test_expand_order_names_and_typed_values():
    specs = expand({"zip": {"rank": [5, 1], "a": [0.01]}, "zo-sgd": {"lr": [1e-3]}, "zsclip": {}}, [2, 1])
    assert [(s.method, s.as_dict(), s.seed) for s in specs] == [
        ("zip", {"a": 0.01, "rank": 5}, 2), ("zip", {"a": 0.01, "rank": 5}, 1),
        ("zip", {"a": 0.01, "rank": 1}, 2), ("zip", {"a": 0.01, "rank": 1}, 1),
        ("zo-sgd", {"lr": 0.001}, 2), ("zo-sgd", {"lr": 0.001}, 1), ("zsclip", {}, 2), ("zsclip", {}, 1)]
    assert specs[0].values == (("a", 0.01), ("rank", 5))
    assert [s.name for s in specs[::2]] == ["zip-a0.01-rank5-seed2", "zip-a0.01-rank1-seed2", "zo-sgd-lr0.001-seed2",
                                            "zsclip-seed2"]
    assert specs[0].config_key == specs[1].config_key == "zip-a0.01-rank5"
    spec = RunSpec("zip", 1, {"rank": 5, "intrinsic_dim": 500, "gamma": 0.1, "c": 0.01, "alpha": 0.4, "a": 0.01})
    assert spec.name == "zip-a0.01-alpha0.4-c0.01-gamma0.1-intrinsic_dim500-rank5-seed1"
    assert RunSpec("sharpzo", 1, {"prune": False, "mu": 1e-05}).name == "sharpzo-mu1e-05-prunefalse-seed1"


def test_long_and_unsafe_names_stay_short_safe_and_unique():
    a = RunSpec("zip", 7, {"ctx_init": "a photo of a/../" + "x" * 200, "rank": 1})
    b = RunSpec("zip", 7, {"ctx_init": "a photo of a/../" + "x" * 199 + "y", "rank": 1})
    for spec in (a, b):
        assert len(spec.name) <= g.NAME_LIMIT and spec.name.endswith("-seed7") and spec.name.startswith("zip-ctx_init")
        assert set(spec.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")
    assert a.name != b.name and a.name == RunSpec("zip", 7, a.values).name  # deterministic
    assert RunSpec("zip", 2**63 - 1, a.values).config_key == a.config_key  # the seed never shifts the config key
    # text that a folder name cannot hold gets a hash: the two stay apart
    assert RunSpec("zip", 1, {"ctx_init": "a b"}).name != RunSpec("zip", 1, {"ctx_init": "a_b"}).name


def test_expand_refusals():
    assert "100,100 runs" in refusal(expand, {"zip": {"intrinsic_dim": list(range(1, 1002))}}, list(range(100)))
    assert "zip" in refusal(expand, {"zip": {"lr": [0.1]}}, [1])  # ZIP has no option lr
    assert "more than once" in refusal(expand, {"zip": {}}, [1, 1])
    assert "seed" in refusal(expand, {"zip": {}}, [-1])
    assert "no values" in refusal(expand, {"zip": {"rank": []}}, [1])
    assert "unknown method" in refusal(expand, {"nope": {}}, [1])


def test_apply_sets_flat_fields_spsa_elements_options_method_and_seed():
    base = TrainConfig(dataset="planted", budget=100, method_options={"popsize": 9}, method="zip-cma")
    cfg = apply(RunSpec("zip", 3, {"a": 0.1, "gamma": 0.2, "rank": 3, "opt_type": "spsa", "batch_size": 32}), base)
    assert (cfg.method, cfg.seed, cfg.rank, cfg.opt_type, cfg.batch_size) == ("zip", 3, 3, "spsa", 32)
    assert cfg.spsa_params == (1.0, 0.01, 0.1, 0.4, 0.2)  # (o, c, a, alpha, gamma): a and gamma set, the rest base's
    assert SPSA_PARAM_NAMES.index("a") == 2 and cfg.method_options == {} and cfg.budget == 100
    cma = apply(RunSpec("zip-cma", 1, {"sigma0": 0.3, "rank": 1}), base)
    assert cma.method_options == {"popsize": 9, "sigma0": 0.3} and cma.rank == 1  # base's options are zip-cma's
    zo = apply(RunSpec("zo-sgd", 1, {"lr": 0.01}), base, method_options={"zo-sgd": {"pairs": "3"}})
    assert zo.method_options == {"pairs": "3", "lr": 0.01} and zo.spsa_params == base.spsa_params
    msg = refusal(apply, RunSpec("zip", 1, {"rank": 99}), base)
    assert msg.startswith("run zip-rank99-seed1: ") and "(rank) 99 exceeds intrinsic_dim // n_ctx = 500 // 8" in msg
    assert "sigma0" in refusal(apply, RunSpec("zip-cma", 1, {"sigma0": -1.0}), base)
    assert "takes no key" in refusal(apply, RunSpec("zip", 1, {"lr": 0.1}), base)


def test_check_runs_refuses_or_skips_the_invalid_points():
    base = TrainConfig(n_ctx=200, dataset="planted")  # 500 // 200 = 2 intrinsic coordinates per token
    specs = expand({"zip": {"intrinsic_dim": [500, 1000], "rank": [1, 3, 5]}}, [1, 2])
    msg = refusal(check_runs, specs, base)
    assert "2 of 6 grid configurations (4 runs)" in msg
    assert "zip-intrinsic_dim500-rank3: " in msg and "(rank) 3 exceeds intrinsic_dim // n_ctx = 500 // 200 = 2" in msg
    valid, skipped = check_runs(specs, base, skip_invalid=True)
    assert [s.name for s in valid] == ["zip-intrinsic_dim500-rank1-seed1", "zip-intrinsic_dim500-rank1-seed2"] + [
        f"zip-intrinsic_dim1000-rank{r}-seed{s}" for r in (1, 3, 5) for s in (1, 2)]
    assert [line.split(":")[0] for line in skipped] == ["zip-intrinsic_dim500-rank3", "zip-intrinsic_dim500-rank5"]
    assert check_runs(specs, TrainConfig()) == (specs, [])


# ------------------------------------------------------------------------------ --seeds


def test_parse_seeds():
    assert parse_seeds("1,2,3") == [1, 2, 3]
    assert parse_seeds(" 1-3 , 7,0") == [1, 2, 3, 7, 0]
    assert parse_seeds(str(2**63 - 1)) == [2**63 - 1]
    for text, names in (("", ["no seed"]), ("-1", ["'-1'", "negative"]), ("1,x", ["'x'", "integer"]),
                        ("1.5", ["'1.5'", "integer"]), ("1,2,1", ["seed 1", "more than once"]),
                        ("1-3,2", ["seed 2", "more than once"]), ("5-1", ["'5-1'", "backwards"]),
                        (str(2**63), ["too large"]), ("1" * 40, ["too large"]),
                        ("0-10000", ["more than 10,000"]), ("1-99999999999999", ["more than 10,000"]), ("1,,2", ["''"])):
        msg = refusal(parse_seeds, text)
        assert msg.startswith("--seeds") and all(n in msg for n in names), (text, msg)


# ------------------------------------------------------------------------------ grid file


def write(tmp_path, text: str, name: str = "grid.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_file_flat_per_method_and_paper(tmp_path):
    path = write(tmp_path, "methods: [zip, zo-sgd]\nseeds: [1, 2, 3]\n"
                           "grid:\n  rank: [1, 3]\n  zip: {a: [0.1, 1e-2]}\n  zo-sgd: {lr: 1e-3}\n")
    grid, seeds, methods = load_grid_file(path)
    assert grid == {"zip": {"a": [0.1, 0.01], "rank": [1, 3]}, "zo-sgd": {"lr": [0.001], "rank": [1, 3]}}
    assert seeds == [1, 2, 3] and methods == ["zip", "zo-sgd"]
    assert len(expand(grid, seeds)) == (4 + 2) * 3
    grid, seeds, methods = load_grid_file(write(tmp_path, "grid: paper\nseeds: 1-2\n"), methods=["zip"])
    assert grid == {"zip": paper_grid("zip")} and seeds == [1, 2] and methods is None
    grid, seeds, methods = load_grid_file(write(tmp_path, "grid:\n  zip: paper\n  zo-sgd: {mu: [0.01]}\n"))
    assert list(grid) == ["zip", "zo-sgd"] and len(grid["zip"]) == 6 and (seeds, methods) == (None, None)
    assert load_grid_file(write(tmp_path, ""), methods=["zip"]) == ({"zip": {}}, None, None)


@pytest.mark.parametrize("text, names", [
    ("grid: {rank: [1, 3]}\n", ["no methods named"]),
    ("methods: [zip]\ngrid: {rank: [1, x]}\n", ["rank", "'x'", "integer"]),
    ("methods: [zip]\ngrid: {rank: {a: 1}}\n", ["rank", "list of values"]),
    ("methods: [zip]\ngrid: {rank: []}\n", ["rank", "no values"]),
    ("methods: [zip]\ngrid: {rank: [[1]]}\n", ["rank", "[1]"]),
    ("methods: [zip]\ngrid: {zip: [1]}\n", ["zip is a method"]),
    ("methods: [zip]\ngrid: {bar: {q: [1]}}\n", ["bar.q", "not among the methods"]),
    ("methods: [zip]\ngrid: {dataset: [a]}\n", ["dataset", "not a sweep key"]),
    ("methods: [zip]\ngrid: [rank]\n", ["grid must be paper"]),
    ("methods: [bar]\ngrid: paper\n", ["bar", "not built in"]),
    ("methods: [zip, zip]\n", ["methods", "more than once"]),
    ("methods: [zipp]\n", ["'zipp'", "unknown method"]),
    ("seeds: [1, 1]\nmethods: [zip]\n", ["seeds", "more than once"]),
    ("seeds: [true]\nmethods: [zip]\n", ["seeds", "True"]),
    ("seeds: -3\nmethods: [zip]\n", ["seeds", "-3"]),
    ("method: [zip]\n", ["'method'", "methods"]),
    ("[1, 2]\n", ["expected a mapping"]),
    ("grid: {a: [1\n", ["not valid YAML"]),
    ("methods: [zip]\ngrid: {rank: [1, 3], rank: [5]}\n", ["not valid YAML"]),  # a duplicate key → refused, not merged
])
def test_grid_file_refusals_name_the_file_and_entry(tmp_path, text, names):
    path = write(tmp_path, text)
    msg = refusal(load_grid_file, path)
    assert msg.startswith(f"grid file {path}"), msg
    for name in names:
        assert name in msg, (name, msg)


def test_grid_file_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    for payload in (f'!!python/object/apply:os.system ["touch {marker}"]\n',
                    f'methods: [zip]\ngrid: {{rank: !!python/object/apply:os.system ["touch {marker}"]}}\n',
                    "grid: !!python/name:os.system\n"):
        msg = refusal(load_grid_file, write(tmp_path, payload))
        assert "not valid YAML" in msg and "python/" in msg
    assert not marker.exists()


def test_grid_file_unreadable_paths(tmp_path):
    assert "no such file" in refusal(load_grid_file, tmp_path / "missing.yaml")
    assert "not a regular file" in refusal(load_grid_file, tmp_path)
    big = write(tmp_path, "#" * (g.MAX_FILE_BYTES + 1), "big.yaml")
    assert "bytes, more than" in refusal(load_grid_file, big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"methods: [zip]\n\xff\xfe")
    assert "not UTF-8" in refusal(load_grid_file, binary)
    odd = write(tmp_path, "grid: paper\n", "odd\nname.yaml")
    assert "'" in refusal(load_grid_file, odd)  # a name holding a newline is quoted: still one line
