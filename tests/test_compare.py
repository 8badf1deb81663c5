"""`zipfast compare`: the summary arithmetic, the outputs, the CLI."""

import csv
import json

import pytest

from zipfast.cli import build_run, main
from zipfast.compare import compare, first_reach, markdown_table, summarise
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
])
def test_compare_bad_input_exits_2(argv, message, capsys, tmp_path):
    rc = main(["compare", "--budget", "20", "--no-progress", "--output-dir", str(tmp_path), *argv])
    assert rc == 2 and message in capsys.readouterr().err
