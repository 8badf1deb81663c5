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


# ---------------------------------------------------------------------- run folders: interrupt, rerun, settings

PLANTED_ARGS = ["compare", "--methods", "zip", "--seeds", "1,2", "--budget", "40", "--eval-every", "20",
                "--targets", "20", "--no-progress"]


@pytest.fixture
def fits(monkeypatch):
    """[(method, seed)] of every run trained or continued (not read back): Trainer.fit() or in a RunGroup."""
    from zipfast.run.group import RunGroup
    from zipfast.run.trainer import Trainer

    calls, fit, group_fit = [], Trainer.fit, RunGroup.fit

    def counted(self):
        calls.append((self.config.method, self.config.seed))
        return fit(self)

    def counted_group(self):
        calls.extend((t.config.method, t.config.seed) for t in self.trainers)
        return group_fit(self)

    monkeypatch.setattr(Trainer, "fit", counted)
    monkeypatch.setattr(RunGroup, "fit", counted_group)
    return calls


def _numbers(out):
    """What the table says, less the times: per run (method, seed, test acc, queries, steps, curve)."""
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    with open(out / "compare.csv") as f:
        rows = [{k: v for k, v in r.items() if k not in ("train_s_mean", "queries_per_s")} for r in csv.DictReader(f)]
    return [(r["method"], r["seed"], r["test_acc"], r["queries"], r["steps"], r["curve"]) for r in runs], rows


def test_interrupted_compare_keeps_finished_runs_and_the_same_command_continues(tmp_path, fits, monkeypatch, capsys):
    import os
    import signal

    from zipfast.run.hooks import EvalEvery

    ref = tmp_path / "ref"
    assert main([*PLANTED_ARGS, "--output-dir", str(ref)]) == 0  # uninterrupted

    call = EvalEvery.__call__

    def ctrl_c_in_seed_2(self, trainer, record):  # Ctrl-C after 20 queries of the second run
        call(self, trainer, record)
        if trainer.config.seed == 2 and trainer.queries == 20:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "cmp"
    argv = [*PLANTED_ARGS, "--output-dir", str(out)]
    monkeypatch.setattr(EvalEvery, "__call__", ctrl_c_in_seed_2)
    fits.clear()
    capsys.readouterr()
    assert main(argv) == 130
    err = capsys.readouterr().err
    # both seeds share the planted task: one run group, both stopped after the same round, both checkpointed
    for seed in (1, 2):
        assert (out / "runs" / f"zip-seed{seed}" / "checkpoint.safetensors").is_file()
        assert not (out / "runs" / f"zip-seed{seed}" / "report.json").exists()
    line = err.strip().splitlines()[-1]
    assert "stopped by SIGINT during group 1 of 1 (zip seed 1, zip seed 2" in line
    assert "2 of its runs have a checkpoint" in line and "nothing saved" not in line
    assert line.endswith("continue with the same command: zipfast " + " ".join(argv))

    monkeypatch.setattr(EvalEvery, "__call__", call)
    fits.clear()
    assert main(argv) == 0
    assert fits == [("zip", 1), ("zip", 2)]  # both continue from their checkpoints
    first = out / "runs" / "zip-seed1"
    stamp = (first / "report.json").stat().st_mtime_ns
    assert _numbers(out) == _numbers(ref)  # same numbers as the uninterrupted compare, curves included
    assert (out / "compare.md").read_text().splitlines()[2].split("|")[1:5] == \
        (ref / "compare.md").read_text().splitlines()[2].split("|")[1:5]

    fits.clear()
    assert main(argv) == 0 and fits == []  # all finished: nothing trains
    assert (first / "report.json").stat().st_mtime_ns == stamp  # read back, not rewritten


def test_rerun_with_other_settings_in_the_same_folder_exits_2_naming_them(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--methods", "zsclip", "--seeds", "1", "--budget", "40", "--no-progress", "--output-dir", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--budget", "80"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--budget 80 (its runs: 40)" in err[0]
    assert "another --output-dir" in err[0] and "--overwrite" in err[0] and "--shots" not in err[0]
    assert main([*argv, "--budget", "80", "--overwrite"]) == 0
    assert json.loads((out / "compare.json").read_text())["settings"]["budget"] == 80


def test_other_method_options_for_a_method_already_run_are_refused(tmp_path):
    from zipfast.config import ConfigError
    from zipfast.run.compare import check_settings, write_settings

    base = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=40)
    write_settings(tmp_path, base, 20, {"zip": {}})
    with pytest.raises(ConfigError, match=r"--method-opt zip\.\*: \{'sp_avg': '2'\} \(its runs: none\)"):
        check_settings(tmp_path, base, 20, {"zip": {"sp_avg": "2"}})
    check_settings(tmp_path, base, 20, {"zip": {}, "sharpzo": {"change_point": "3"}})  # a method not run yet: fine


def test_estimate_is_printed_up_front_with_runs_and_queries(tmp_path, capsys):
    rc = main(["compare", "--methods", "zip,zsclip", "--seeds", "1,2", "--budget", "40", "--eval-every", "20",
               "--no-progress", "--output-dir", str(tmp_path)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "zipfast compare: 4 runs to do; estimated time ≈" in err and "timed here" in err
    assert any(ln.split()[:6] == ["zip", "2", "runs", "×", "40", "queries"] and ("≈" in ln or "< 1 s" in ln)
               and "ms/query" in ln for ln in err.splitlines())
    assert any(ln.split()[:6] == ["zsclip", "2", "runs", "×", "0", "queries"] for ln in err.splitlines())
    assert "warning" not in err


def test_estimate_warns_of_a_long_grid_naming_the_slow_method():
    from zipfast.run.estimate import estimate_lines

    rows = [{"method": "zip", "runs": 3, "finished": 0, "queries": 5000, "s_per_query": 0.002, "seconds": 30.0},
            {"method": "blackvip", "runs": 3, "finished": 1, "queries": 5000, "s_per_query": 0.66, "seconds": 9900.0}]
    lines = estimate_lines({"rows": rows, "calibration_s": 1.5})
    assert lines[0].startswith("zipfast compare: 6 runs to do, 1 finished (read back); estimated time ≈ 2 h 46 min")
    assert lines[2].split() == ["blackvip", "3", "runs", "×", "5,000", "queries", "(+1", "finished)", "≈", "2", "h",
                                "45", "min", "(660.0", "ms/query)"]
    assert "warning" in lines[-1] and "blackvip (≈ 2 h 45 min)" in lines[-1] and "zip (" not in lines[-1]
    assert all(flag in lines[-1] for flag in ("--budget", "--methods", "--seeds"))
