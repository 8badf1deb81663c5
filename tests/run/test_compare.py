"""`zipfast compare`: the summary arithmetic, the outputs, the CLI."""

import csv
import json

import pytest

from zipfast.cli import main
from zipfast.run.task import load as build_run
from zipfast.run.compare import compare, first_reach, markdown_table, summarise
from zipfast.config import TrainConfig


def fake_run(method, seed, acc, curve, queries=100, train_s=2.0):
    return {"method": method, "seed": seed, "test_acc": acc, "queries": queries, "steps": 10, "train_s": train_s,
            "curve": curve, "report": {}}


def test_first_reach_and_summary():
    runs = [fake_run("a", 1, 60.0, [(0, 10.0), (50, 55.0), (100, 60.0)]),
            fake_run("a", 2, 40.0, [(0, 10.0), (50, 30.0), (100, 40.0)], train_s=4.0),
            fake_run("z", 1, 20.0, [(0, 20.0)], queries=0, train_s=0.0)]
    assert first_reach(runs[0]["curve"], 55) == 50 and first_reach(runs[1]["curve"], 55) is None
    rows = summarise(runs, ["a", "z"], [50, 60])
    a, z = rows
    assert a["test_acc_mean"] == 50.0 and a["test_acc_std"] == 10.0  # population std over seeds
    assert a["q_to_50"] == 50 and a["n_reached_50"] == 1 and a["q_to_60"] == 100
    assert a["train_s_mean"] == 3.0 and a["queries_per_s"] == pytest.approx(100 / 3)
    assert z["queries"] == 0 and z["queries_per_s"] is None and z["q_to_50"] is None
    md = markdown_table(rows, [50, 60])
    assert "| a | 50.0 ± 10.0 | 50 (1/2) | 100 (1/2) | 100 | 3.0 | 33 |" in md
    assert "| z | 20.0 ± 0.0 | – | – | 0 | 0.0 | – |" in md


def test_compare_on_the_planted_task_writes_table_csv_plot(tmp_path):
    base = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=40,
                       test_per_class=10, checkpoint_every=0)
    runs = compare(base, build_run, ["zip", "zsclip"], [1, 2], eval_every=20, targets=(20,),
                   output_dir=tmp_path, progress=False)
    assert [(r["method"], r["seed"]) for r in runs] == [("zip", 1), ("zip", 2), ("zsclip", 1), ("zsclip", 2)]
    zip_runs = [r for r in runs if r["method"] == "zip"]
    assert all([q for q, _ in r["curve"]] == [0, 20, 40] for r in zip_runs)
    assert all(r["curve"][-1][1] == r["test_acc"] for r in zip_runs)
    assert zip_runs[0]["curve"][0] == zip_runs[1]["curve"][0]  # same task, same start
    with open(tmp_path / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["zip", "zsclip"] and rows[1]["queries"] == "0"
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| zip |" in (tmp_path / "compare.md").read_text()
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 4
    assert json.loads((tmp_path / "runs.jsonl").read_text().splitlines()[0])["report"]["template"] is None


@pytest.mark.parametrize("argv,message", [
    (["--methods", "zip,cmaes"], "unknown method"),
    (["--seeds", "1,x"], "--seeds takes comma-separated integers"),
    (["--method-opt", "change_point=3"], "METHOD.KEY=VALUE"),
    (["--method-opt", "sharpzo.nope=3"], "unknown option"),
    (["--methods", "zip,bptvlm,bar"], "--methods bptvlm,bar: these methods change what the image tower sees"),
    (["--methods", "blackvip"], "'planted' task holds image features only; use --data synthetic-images"),
    (["--eval-every", "0"], "--eval-every must be at least 1"),
])
def test_compare_bad_input_exits_2(argv, message, capsys, tmp_path):
    rc = main(["compare", "--budget", "20", "--no-progress", "--output-dir", str(tmp_path), *argv])
    assert rc == 2 and message in capsys.readouterr().err


@pytest.fixture
def synthetic_cache(tmp_path, monkeypatch):
    """The generated image folder under a private cache directory."""
    monkeypatch.setenv("ZIPFAST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_default_methods_follow_the_data():
    from zipfast.run.compare import default_methods

    assert default_methods("planted") == ("zip", "sharpzo", "zo-sgd", "zsclip")
    assert default_methods("synthetic-images") == ("zip", "sharpzo", "zo-sgd", "zsclip", "bptvlm", "bar", "blackvip")
    assert default_methods("/data/planted-photos") == default_methods("synthetic-images")  # a folder, whatever its name


def test_synthetic_folder_is_generated_once_and_deterministically(tmp_path, monkeypatch):
    import hashlib

    from zipfast.data import synthetic

    def digest(root):
        files = sorted(p for p in root.rglob("*.png"))
        return len(files), hashlib.sha256(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes()
                                                   for p in files)).hexdigest()

    monkeypatch.setenv("ZIPFAST_CACHE", str(tmp_path / "a"))
    a = synthetic.folder()
    mtime = a.stat().st_mtime_ns
    assert synthetic.folder() == a and a.stat().st_mtime_ns == mtime  # reused, not rewritten
    monkeypatch.setenv("ZIPFAST_CACHE", str(tmp_path / "b"))
    b = synthetic.folder()
    assert a != b and digest(a) == digest(b) and digest(a)[0] == 4 * 48
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_compare_image_method_and_zip_on_the_generated_folder(synthetic_cache, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", "--data", "synthetic-images", "--methods", "zip,bar,zsclip", "--seeds", "1",
               "--budget", "30", "--eval-every", "12", "--shots", "4", "--targets", "30",
               "--method-opt", "bar.q=2", "--device", "cpu", "--no-progress", "--output-dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    runs = {r["method"]: r for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}
    assert runs["zip"]["queries"] == runs["bar"]["queries"] == 30 and runs["zsclip"]["queries"] == 0
    assert runs["zip"]["steps"] == 3 and runs["bar"]["steps"] == 10  # 2·sp_avg = 10 and 1 + q = 3 per step
    assert [q for q, _ in runs["zip"]["curve"]] == [0, 20, 30]
    assert [q for q, _ in runs["bar"]["curve"]] == [0, 12, 24, 30]
    assert all(r["curve"][-1][1] == r["test_acc"] for r in runs.values())
    assert runs["bar"]["report"]["method_config"]["q"] == 2
    assert runs["bar"]["report"]["method_config"]["frame_size"] == 224  # the model's input size, image 194 inside
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["zip", "bar", "zsclip"] and [r["queries"] for r in rows] == ["30", "30", "0"]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| bar |" in (out / "compare.md").read_text() and "| bar |" in capsys.readouterr().out


def test_compare_image_run_is_deterministic(synthetic_cache):
    import dataclasses

    from zipfast.run.compare import run_one
    from zipfast.run.task import task_options as method_options

    base = TrainConfig(model="zipfast-tiny224", pretrained="none", dataset="synthetic-images", budget=20, shots=2,
                       test_per_class=6, seed=2, method="blackvip", device="cpu", checkpoint_every=0,
                       method_options={"sp_avg": 1, "src_dim": 98})
    a = run_one(base, build_run, eval_every=4, progress=False)
    b = run_one(dataclasses.replace(base), build_run, eval_every=4, progress=False)  # nothing shared
    assert [q for q, _ in a["curve"]] == [0, 4, 8, 12, 16, 20] and a["queries"] == 20
    assert a["curve"] == b["curve"] and a["test_acc"] == b["test_acc"]
    assert method_options("synthetic-images", "bptvlm", {"pop_size": 4, "intrinsic_dim_v": 9})[0] == \
        {"intrinsic_dim_l": 200, "intrinsic_dim_v": 9, "pop_size": 4}
