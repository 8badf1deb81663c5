"""`zipfast sweep` end to end on the planted task: each run's folder is the run alone, the choice is the
best mean validation accuracy, a killed or interrupted sweep continues bit for bit, a grid extends, and
bad inputs are one line (exit 2)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zipfast.cli import main
from zipfast.sweep.report import configurations, heat_grid, select

ARGS = ["sweep", "--data", "planted", "--grid", "a=0.01,0.1", "--seeds", "1,2", "--budget", "30", "--shots", "8",
        "--test-per-class", "10", "--eval-every", "10", "--no-progress", "--threads", "1"]
TIMES = ("train_s",)


def _records(out: Path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES}
            for line in (out / "runs.jsonl").read_text().splitlines()]


def _log(folder: Path):
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
            for line in (folder / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "ref"
    assert main([*ARGS, "--output-dir", str(out)]) == 0
    return out


def test_outputs_selection_and_each_run_equals_the_run_alone(reference, tmp_path):
    from zipfast.config import TrainConfig
    from zipfast.run.task import load
    from zipfast.run.trainer import Trainer
    from zipfast.sweep.grid import RunSpec, apply

    recs = _records(reference)
    assert [r["name"] for r in recs] == ["zip-a0.01-seed1", "zip-a0.01-seed2", "zip-a0.1-seed1", "zip-a0.1-seed2"]
    means = {}
    for r in recs:
        assert r["error"] is None and 0 <= r["val_acc"] <= 100 and r["queries"] == 30
        means.setdefault(r["config"], []).append(r["val_acc"])
    best = max(means, key=lambda k: sum(means[k]) / 2)
    table = (reference / "sweep.md").read_text()
    chosen_a = best.split("-a")[1]
    assert f"| zip | 2 | 0 | a={chosen_a} |" in table
    for r in recs:
        if r["config"] == best:
            assert f"{r['seed']}: {r['test_acc']:.1f}" in table
    with open(reference / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["a"]) for r in rows] == [0.01, 0.1] and all(float(r["val_n"]) == 2 for r in rows)
    assert (reference / "sweep.png").stat().st_size > 10_000

    # one run of the sweep made alone with the same settings: the same log and report (but times)
    base = TrainConfig(method="zip", model="zipfast-planted", pretrained="none", dataset="planted", budget=30, shots=8,
                       batch_size=128, test_per_class=10, checkpoint_every=50)
    spec = RunSpec("zip", 2, (("a", 0.1),))
    cfg = apply(spec, base)
    model, tok, names, data = load(cfg)
    alone = Trainer(model, names, cfg, data, tokenizer=tok, progress=False, output_dir=tmp_path / "alone").fit()
    folder = reference / "runs" / spec.name
    ours = json.loads((folder / "report.json").read_text())
    skip = ("wall_time_s", "queries_per_s", "fallbacks", "config", "threads")  # threads: this process's
    assert {k: v for k, v in ours.items() if k not in skip} == {k: v for k, v in alone.items() if k not in skip}
    assert {k: v for k, v in ours["config"].items() if k != "output_dir"} == \
        {k: v for k, v in alone["config"].items() if k != "output_dir"}
    assert _log(folder) == _log(tmp_path / "alone")


def test_killed_sweep_continues_bit_for_bit(reference, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "zipfast.cli", *ARGS, "--output-dir", str(out), "--group-size", "2",
           "--checkpoint-every", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = out / "runs" / "zip-a0.1-seed1" / "checkpoint.safetensors"  # the second group's first checkpoint
    deadline = time.monotonic() + 300
    while not second.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert second.exists(), "the sweep ended before its second group checkpointed"
    assert not (out / "runs.jsonl").exists()
    assert main([*ARGS, "--output-dir", str(out), "--group-size", "2", "--checkpoint-every", "1"]) == 0
    assert _records(out) == _records(reference)


def test_interrupted_sweep_says_how_to_continue_and_continues(reference, tmp_path, monkeypatch, capsys):
    from zipfast.run.group import RunGroup

    out = tmp_path / "stopped"
    argv = [*ARGS, "--output-dir", str(out)]
    rounds = []
    init = RunGroup.__init__

    def stopping(self, trainers, **kw):
        def on_round(group, seconds, live):
            rounds.append(live)
            if len(rounds) == 2:
                os.kill(os.getpid(), signal.SIGINT)
        init(self, trainers, **{**kw, "on_round": on_round})
    monkeypatch.setattr(RunGroup, "__init__", stopping)
    assert main(argv) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "sweep stopped by SIGINT: 0 of 4 runs finished" in line
    assert line.endswith("continue with the same command: zipfast " + " ".join(argv))
    monkeypatch.setattr(RunGroup, "__init__", init)
    assert main(argv) == 0
    assert _records(out) == _records(reference)


def test_a_grid_extends_and_finished_runs_are_read_back(reference, tmp_path):
    out = tmp_path / "grow"
    small = [*ARGS[:4], "a=0.01", "--seeds", "1", *ARGS[7:], "--output-dir", str(out)]
    assert main(small) == 0
    first = out / "runs" / "zip-a0.01-seed1" / "report.json"
    stamp = first.stat().st_mtime_ns
    assert main([*ARGS, "--output-dir", str(out)]) == 0
    assert first.stat().st_mtime_ns == stamp
    assert _records(out) == _records(reference)


def test_other_shared_settings_are_refused_in_one_line(reference, capsys):
    capsys.readouterr()
    assert main([*ARGS, "--budget", "40", "--output-dir", str(reference)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget 30 -> 40" in err[0] and "--overwrite" in err[0]


@pytest.mark.parametrize("extra, words", [
    (["--group-size", "0"], "--group-size must be at least 1"),
    (["--heatmap", "a"], "--heatmap takes two grid keys"),
    (["--grid", "rank=1,999"], "invalid"),
    (["--grid", "nosuchkey=1"], "unknown key"),
    (["--methods", "bar"], "no chosen method (bar) takes a"),
])
def test_bad_sweep_inputs_are_one_line(tmp_path, capsys, extra, words):
    capsys.readouterr()
    assert main([*ARGS, "--output-dir", str(tmp_path / "bad"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "bad" / "runs").exists()


def test_an_image_folder_without_validation_images_is_refused_before_any_run(tmp_path, capsys):
    capsys.readouterr()
    argv = ["sweep", "--data", "synthetic-images", "--budget", "10", "--no-progress", "--output-dir", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gives no validation images" in err[0] and "--test-per-class" in err[0]


def _rec(config, seed, val, test, error=None, a=0.1):
    return {"method": "zip", "config": config, "seed": seed, "values": {"a": a, "rank": 1}, "val_acc": val,
            "test_acc": test, "error": error, "curve": []}


def test_selection_uses_validation_only_and_skips_configurations_that_failed_a_seed():
    recs = [_rec("x", 1, 50, 10, a=0.1), _rec("x", 2, 50, 10, a=0.1),
            _rec("y", 1, 90, 99, a=0.2), _rec("y", 2, None, None, "NonFiniteLossError: …", a=0.2),
            _rec("z", 1, 60, 0, a=0.3), _rec("z", 2, 40, 0, a=0.3)]  # z ties x on validation: x comes first
    rows = configurations(recs)
    chosen = select(rows)["zip"]
    assert chosen["config"] == "x" and chosen["test"] == [10, 10]
    assert [r["failed"] for r in rows] == [[], [2], []]
    xs, ys, cells = heat_grid(rows, "zip", ("a", "rank"))
    assert xs == [0.1, 0.2, 0.3] and ys == [1] and cells == [[50, None, 50]]


def test_any_grid_text_on_the_command_line_runs_or_is_one_line_exit_2(tmp_path_factory):
    """Whatever follows --grid: a sweep (exit 0) or exit 2 with one line, never a traceback."""
    import contextlib
    import io

    from hypothesis import HealthCheck, example, given, settings, strategies as st

    keys = st.sampled_from(["a", "rank", "intrinsic_dim", "zip.a", "bar.lr", "seed", "budget", "", "a.b", "x"])
    values = st.lists(st.one_of(st.integers(-3, 3000).map(str), st.floats(allow_nan=True).map(str),
                                st.text(max_size=4)), max_size=3).map(",".join)
    items = st.one_of(st.text(max_size=20), st.builds(lambda k, v: f"{k}={v}", keys, values))

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(item=items)
    @example(item="-x")
    @example(item="--")
    @example(item="a=-1,--2")
    @example(item="")
    def check(item):
        out = tmp_path_factory.mktemp("any")
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:  # --grid=ITEM: a text that starts with "-" is the value, not a flag
                rc = main(["sweep", "--data", "planted", f"--grid={item}", "--budget", "10", "--max-runs", "1",
                           "--shots", "4", "--test-per-class", "2", "--no-progress", "--output-dir", str(out)])
            except SystemExit as e:  # argparse's refusal (zipfast.cli._Parser: one line, exit 2)
                rc = e.code
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        if rc == 2:
            assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err.getvalue(), lines
        else:
            assert rc == 0 and (out / "sweep.md").is_file(), (rc, lines)

    check()


def test_ray_runs_each_group_as_a_task_and_gives_the_same_sweep(reference, tmp_path, monkeypatch):
    """--ray with a stand-in Ray that runs each task at once in this process: each group is this command
    restricted to it (--groups g), the driver writes the tables; the runs equal the sweep without Ray."""
    import types

    submitted = []

    class Ref:
        def __init__(self, value):
            self.value = value

    def remote(**resources):
        def wrap(fn):
            def call(*args):
                submitted.append((resources, args[1]))
                return Ref(fn(*args))
            return types.SimpleNamespace(remote=call)
        return wrap

    fake = types.SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: None, remote=remote,
                                 wait=lambda refs, num_returns=1: (refs[:num_returns], refs[num_returns:]),
                                 get=lambda r: [x.value for x in r] if isinstance(r, list) else r.value)
    monkeypatch.setitem(sys.modules, "ray", fake)
    out = tmp_path / "ray"
    assert main([*ARGS, "--output-dir", str(out), "--group-size", "2", "--ray", "--cpus-per-group", "1"]) == 0
    assert [argv[argv.index("--groups") + 1] for _, argv in submitted] == ["0", "1"]
    assert all(res == {"num_cpus": 1.0, "num_gpus": 0.0} and "--ray" not in argv for res, argv in submitted)
    assert (out / "group-0.log").is_file() and (out / "sweep.md").is_file()
    assert _records(out) == _records(reference)


def test_ray_on_a_local_instance_gives_the_same_sweep(reference, tmp_path):
    """--ray on a real local Ray instance (one CPU): each group a Ray task in its own worker process."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'zipfast[ray]')")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        assert main([*ARGS, "--output-dir", str(out), "--group-size", "2", "--ray"]) == 0
    finally:
        ray.shutdown()
    assert sorted(p.name for p in out.glob("group-*.log")) == ["group-0.log", "group-1.log"]
    assert _records(out) == _records(reference)
    for r in _records(reference):
        assert _log(out / "runs" / r["name"]) == _log(reference / "runs" / r["name"])


def test_seeds_on_loaded_weights_step_in_one_group_each_as_alone(tmp_path, monkeypatch):
    """On loaded weights every seed uses one model: the seeds of an image task step in ONE run group
    (each with its own few-shot split and minibatches), and each run equals the run alone."""
    from tests.paper_runs import register_random_openai_weights
    from zipfast.run.group import RunGroup

    from zipfast.engine.batched import BatchedEngine

    register_random_openai_weights(monkeypatch, tmp_path)
    sizes, fit, passes, many = [], RunGroup.fit, [], BatchedEngine.text_features_many
    monkeypatch.setattr(RunGroup, "fit", lambda self: sizes.append(len(self.trainers)) or fit(self))
    monkeypatch.setattr(BatchedEngine, "text_features_many", lambda self, c: passes.append(len(c)) or many(self, c))
    args = ["sweep", "--data", "synthetic-images", "--model", "zipfast-tiny", "--pretrained", "openai", "--grid",
            "a=0.01,0.1", "--seeds", "1,2", "--budget", "20", "--shots", "4", "--test-per-class", "2",
            "--batch-size", "8", "--eval-every", "10", "--no-progress", "--threads", "1"]
    assert main([*args, "--output-dir", str(tmp_path / "group")]) == 0
    assert sizes == [4] and passes[0] == 4  # both seeds' runs: one text pass of one shared engine
    sizes.clear()
    assert main([*args, "--output-dir", str(tmp_path / "alone"), "--group-size", "1"]) == 0
    assert sizes == [1, 1, 1, 1]
    recs = _records(tmp_path / "group")
    assert recs == _records(tmp_path / "alone") and len({r["train_loss"] for r in recs}) == 4
    for r in recs:
        assert _log(tmp_path / "group" / "runs" / r["name"]) == _log(tmp_path / "alone" / "runs" / r["name"])
