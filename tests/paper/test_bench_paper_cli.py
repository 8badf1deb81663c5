"""`zipfast bench-paper` as a new user meets it: missing datasets refused (or skipped) before any job,
each job's output in its log.txt, one terminal line per failed job, --ray's forms and errors, CSV
numbers, the plot's zero-shot line."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest

import paper_data
from zipfast.cli import main, parser
from zipfast.datasets import FEWSHOT_DATASETS, get_spec
from zipfast.paper import sweep
from zipfast.paper.protocols import Plan

TINY = ["TRAINER.BASIC.MAX_API_CALLS", "20", "DATALOADER.TRAIN_X.BATCH_SIZE", "8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("DATA")
    paper_data.eurosat(root)
    return root


def bench(protocol, root, out, *argv, weights=None, pairs=TINY):
    model = ["--model", "zipfast-tiny", "--pretrained", str(weights)] if weights else []
    return main(["bench-paper", protocol, "--root", str(root), "--output", str(out), "--no-progress", *model,
                 *argv, *pairs])


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("zipfast bench-paper: error:")]


# --------------------------------------------------------------------------- missing datasets


def test_missing_datasets_are_all_listed_in_one_line_before_any_job(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert bench("few-shot", data, out) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and len(err.strip().splitlines()) == 1, err
    line = error_lines(err)[0]
    missing = [d for d in FEWSHOT_DATASETS if d != "eurosat"]
    assert f"12 of the 13 datasets of few-shot are missing under --root '{data}'" in line
    for d in missing:  # every missing one, with the folder looked for
        assert f"{get_spec(d).name} (looked for '{data / get_spec(d).dataset_dir}')" in line
    assert "EuroSAT" not in line.split(":", 2)[2].split(";")[0]  # the present one is not listed as missing
    assert line.endswith("; pass --datasets eurosat (those present) or --skip-missing to run only the present ones")
    assert not out.exists()  # no job started


def test_skip_missing_runs_only_the_present_datasets_and_keeps_job_output_in_log_txt(data, weights, tmp_path, capsys):
    out = tmp_path / "out"
    assert bench("few-shot", data, out, "--datasets", "eurosat,dtd", "--skip-missing", "--methods", "zsclip",
                 "--seeds", "1", weights=weights) == 0
    cap = capsys.readouterr()
    assert f"zipfast: warning: --skip-missing: skipping DescribableTextures (looked for '{data / 'dtd'}')" in cap.err
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["ran"] == 1 and summary["skipped_datasets"] == ["dtd"] and not summary["failed"]
    assert sorted(p.name for p in (out / "basic/zsclip/ZeroshotCLIP").iterdir()) == ["eurosat"]  # dtd never ran
    assert "| ZeroshotCLIP |" in (out / "tables/few-shot.md").read_text()
    # the job's Dassl lines are in its log, not on the terminal
    log = (out / "basic/zsclip/ZeroshotCLIP/eurosat/log.txt").read_text()
    assert "** Arguments **" in log and "=> result" in log
    assert "** Arguments **" not in cap.out + cap.err and "=> result" not in cap.out + cap.err


@pytest.mark.parametrize("protocol,argv,named", [
    ("few-shot", ["--datasets", "dtd"], "--skip-missing leaves nothing to run"),
    ("cross-dataset", ["--datasets", "eurosat"], "trains every prompt on ImageNet, which --skip-missing cannot skip"),
])
def test_skip_missing_with_nothing_to_run_exits_2(protocol, argv, named, data, tmp_path, capsys):
    assert bench(protocol, data, tmp_path / "out", "--skip-missing", *argv) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and named in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- failed jobs


def test_failed_jobs_exit_2_with_one_line_each_naming_their_log(tmp_path, weights, capsys):
    root = tmp_path / "data"
    (root / "eurosat").mkdir(parents=True)  # present, but without its split file: each job fails on a user error
    out = tmp_path / "out"
    assert bench("few-shot", root, out, "--datasets", "eurosat", "--seeds", "1", "--methods", "zip,zsclip",
                 weights=weights) == 2
    cap = capsys.readouterr()
    failed = [line for line in cap.err.splitlines() if " failed with exit " in line]
    logs = {"zip": out / "basic/ZIP/eurosat/nctx8/seed1/log.txt", "zsclip": out / "basic/zsclip/ZeroshotCLIP/eurosat/log.txt"}
    assert len(failed) == 2, cap.err
    for line, (method, log) in zip(failed, logs.items()):
        assert line.startswith(f"zipfast: warning: job {method} eurosat seed 1 (train) failed with exit 2 "
                               f"(zipfast train: error: dataset EuroSAT")
        assert line.endswith(f"; its log: {log}")
        text = log.read_text()
        assert "** Arguments **" in text and "zipfast train: error: dataset EuroSAT" in text
    assert "** Arguments **" not in cap.out + cap.err and "Traceback" not in cap.err
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["exit_codes"] == [2, 2] and summary["logs"] == [str(p) for p in logs.values()]


def test_run_job_appends_what_the_job_printed_to_its_log(tmp_path, capsys):
    def entry(argv):
        assert argv[:2] == ["train", "--log-only"]
        print("a line on stdout")
        print("zipfast train: internal error (KeyError)", file=sys.stderr)
        return 1

    code, log, last = sweep.run_job(entry, ["--root", "x"], str(tmp_path / "run"))
    assert (code, log, last) == (1, str(tmp_path / "run/log.txt"), "zipfast train: internal error (KeyError)")
    assert Path(log).read_text() == "a line on stdout\nzipfast train: internal error (KeyError)\n"
    assert capsys.readouterr() == ("", "")  # nothing on the terminal


def test_a_job_that_fails_on_a_bug_makes_bench_paper_exit_1(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "run_job", lambda entry, argv, out: (1, f"{out}/log.txt", "internal error"))
    assert bench("few-shot", data, tmp_path / "out", "--datasets", "eurosat", "--seeds", "1") == 1
    assert " failed with exit 1 (internal error)" in capsys.readouterr().err


def test_log_only_is_refused_off_the_official_surface(capsys):
    assert main(["train", "--log-only", "--data", "planted"]) == 2
    assert "--log-only applies to the official train.py surface" in capsys.readouterr().err


# --------------------------------------------------------------------------- --ray


def test_ray_alone_means_local():
    def ray(*argv):
        return parser().parse_known_args(["bench-paper", "few-shot", "--root", "R", *argv])[0].ray

    assert ray() is None and ray("--ray") == "local" and ray("--ray", "auto") == "auto"
    assert ray("--ray", "--seeds", "1") == "local" and ray("--ray", "ray://head:10001") == "ray://head:10001"
    args, extra = parser().parse_known_args(["bench-paper", "few-shot", "--root", "R", "--ray", "local", *TINY])
    assert args.ray == "local" and [*(args.opts or ()), *extra] == TINY  # the pairs stay KEY VALUE pairs


@pytest.fixture
def fake_ray(monkeypatch):
    """Ray's module with init recording its address and raising what Ray raises when no cluster runs."""
    ray = pytest.importorskip("ray")
    calls = []

    def init(address=None, **kw):
        calls.append(address)
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                              "setting `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_ray_auto_without_a_cluster_is_one_clear_line(data, tmp_path, fake_ray, capsys):
    assert bench("few-shot", data, tmp_path / "out", "--datasets", "eurosat", "--ray", "auto") == 2
    err = capsys.readouterr().err
    assert fake_ray == ["auto"]
    assert err.strip() == ("zipfast bench-paper: error: --ray auto: no running Ray cluster was found (RAY_ADDRESS is "
                           "unset and none was started on this machine); pass --ray (or --ray local) to start a local "
                           "one, or start a cluster first with `ray start --head`")
    assert not (tmp_path / "out").exists()


def test_ray_alone_asks_ray_for_an_existing_cluster_or_a_new_local_one(data, tmp_path, fake_ray, capsys):
    bench("few-shot", data, tmp_path / "out", "--datasets", "eurosat", "--ray", pairs=())
    assert fake_ray == [None]  # ray.init() without an address: RAY_ADDRESS, the last `ray start`, else a new one


def test_a_stop_cancels_the_ray_jobs_not_done_and_says_how_many_finished(tmp_path, monkeypatch):
    """Ctrl-C while the driver waits: every job not yet done is cancelled (Ray interrupts a running one,
    and one not started never starts); run_stages says how many jobs had finished."""
    import types

    refs, cancelled, waits = [], [], []

    def remote(**kw):
        def wrap(fn):
            return types.SimpleNamespace(remote=lambda *a: refs.append(f"ref{len(refs)}") or refs[-1])
        return wrap

    def wait(pending, num_returns):
        waits.append(list(pending))
        if len(waits) == 2:
            raise KeyboardInterrupt
        (tmp_path / "job0" / "result.json").parent.mkdir()
        (tmp_path / "job0" / "result.json").write_text("{}")  # the first job finished
        return pending[:1], pending[1:]
    fake = types.SimpleNamespace(is_initialized=lambda: True, remote=remote, wait=wait,
                                 get=lambda ref: (0, None, ""), cancel=cancelled.append)
    monkeypatch.setitem(sys.modules, "ray", fake)
    jobs = [sweep.Job(["--seed", str(i)], str(tmp_path / f"job{i}")) for i in range(3)]
    with pytest.raises(sweep.JobsInterrupted) as stop:
        sweep.run_stages([jobs], sweep.RayRunner(main), progress=False)
    assert cancelled == ["ref1", "ref2"]
    assert str(stop.value) == ("stopped by SIGINT: 1 of 3 jobs finished; the jobs in progress keep the last "
                               "checkpoints they wrote before it")
    assert stop.value.exit_code == 130


@pytest.mark.parametrize("argv,named", [
    # argparse reads the KEY of KEY VALUE pairs right after --ray as its value: refused, naming the way out
    (["--ray", *TINY], "--ray 'TRAINER.BASIC.MAX_API_CALLS' is not a Ray address"),
    (["--ray"], "--ray needs Ray, which is not installed: pip install 'zipfast[ray]'"),
])
def test_ray_refusals(argv, named, data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert bench("few-shot", data, tmp_path / "out", "--datasets", "eurosat", *argv, pairs=()) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and named in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- tables and plots


def _fake_run(folder: Path, acc: float, eval_only=False, curve=()):
    folder.mkdir(parents=True)
    end = "" if eval_only else "Finish training\n"
    (folder / "log.txt").write_text(f"{end}=> result\n* total: 10\n* accuracy: {acc:.1f}%\n")
    if curve:
        (folder / "curve.jsonl").write_text("".join(json.dumps({"queries": q, "test_acc": a}) + "\n" for q, a in curve))


def test_csv_holds_numbers_beside_the_formatted_cells(tmp_path):
    f = Plan("few-shot", tmp_path, tmp_path / "fs", datasets=["eurosat", "dtd"], seeds=(1, 2, 3))
    for d, accs in (("eurosat", (70.0, 72.0, 74.0)), ("dtd", (40.0, 40.0, 43.0))):
        for s, a in zip((1, 2, 3), accs):
            _fake_run(f.train_dir(d, s), a)
    table = f.tables()[0]
    assert table.markdown().splitlines()[-1] == "| ZIP | 72.0 ± 1.6 | 41.0 ± 1.4 | 56.5 |"  # markdown as before
    rows = list(csv.reader(io.StringIO(table.csv())))
    assert rows[0] == ["Method", "EuroSAT", "EuroSAT_mean", "EuroSAT_std", "EuroSAT_n", "DescribableTextures",
                       "DescribableTextures_mean", "DescribableTextures_std", "DescribableTextures_n", "Average",
                       "Average_mean", "Average_std", "Average_n"]
    assert rows[1] == ["ZIP", "72.0 ± 1.6", "72.0", "1.633", "3", "41.0 ± 1.4", "41.0", "1.4142", "3",
                       "56.5", "56.5", "", "2"]
    b = Plan("base2new", tmp_path, tmp_path / "b2n", datasets=["eurosat"], seeds=(1, 2))
    for s, (base, new) in ((1, (80.0, 60.0)), (2, (82.0, 62.0))):
        _fake_run(b.train_dir("eurosat", s, "base"), base)
        _fake_run(b.eval_dir("eurosat", s, role="new"), new, eval_only=True)
    rows = list(csv.reader(io.StringIO(b.tables()[0].csv())))
    assert rows[0][:9] == ["Dataset", "ZIP Base", "ZIP Base_mean", "ZIP Base_std", "ZIP Base_n", "ZIP New",
                           "ZIP New_mean", "ZIP New_std", "ZIP New_n"]
    h = 2 * 81 * 61 / 142
    assert rows[1] == ["EuroSAT", "81.0 ± 1.0", "81.0", "1.0", "2", "61.0 ± 1.0", "61.0", "1.0", "2",
                       f"{h:.1f}", str(round(h, 4)), "", ""]
    missing = Plan("few-shot", tmp_path, tmp_path / "none", datasets=["eurosat"], seeds=(1,))
    assert list(csv.reader(io.StringIO(missing.tables()[0].csv())))[1] == ["ZIP", "–", "", "", "", "–", "", "", ""]


@pytest.mark.parametrize("protocol,zs_folder", [("few-shot", "basic/zsclip/ZeroshotCLIP/eurosat"),
                                                ("base2new", "base2new/base/zsclip/eurosat"),
                                                ("cross-dataset", "xd/zsclip/imagenet")])
def test_plot_draws_zero_shot_as_compare_does(protocol, zs_folder, tmp_path, monkeypatch):
    from zipfast.paper import tables

    drawn = []

    def draw(ax, curves, zero_shot=None):
        tables_draw(ax, curves, zero_shot)
        drawn.append([(line.get_label(), list(line.get_ydata()), line.get_linestyle()) for line in ax.get_lines()])

    tables_draw = tables.draw_accuracy
    monkeypatch.setattr(tables, "draw_accuracy", draw)
    p = Plan(protocol, tmp_path, tmp_path / "out", datasets=["eurosat"], seeds=(1, 2), methods=("zip", "zsclip"))
    source = "imagenet" if protocol == "cross-dataset" else "eurosat"
    role = "base" if protocol == "base2new" else "basic"  # base2new plots the training on the base classes
    _fake_run(p.train_dir(source, 1, role), 60.0, curve=[(0, 30.0), (10, 50.0), (20, 60.0)])
    _fake_run(p.train_dir(source, 2, role), 64.0, curve=[(0, 30.0), (10, 54.0), (20, 64.0)])
    _fake_run(p.output / zs_folder, 42.5, eval_only=True)
    assert p.zero_shot() == {source: {"ZeroshotCLIP": 42.5}}
    png = Path(p.report()["plot"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert drawn == [[("ZIP", [30.0, 52.0, 62.0], "-"), ("ZeroshotCLIP (0 queries)", [42.5, 42.5], "--")]]


# --------------------------------------------------------------------------- the plan, up front


def test_jobs_and_queries_are_stated_before_any_job(data, tmp_path, monkeypatch, capsys):
    from zipfast.paper import protocols

    ran = []
    monkeypatch.setattr(protocols, "run_stages", lambda stages, runner, progress: ran.append(stages) or
                        {"ran": 0, "skipped": 0, "failed": [], "logs": [], "exit_codes": []})
    out = tmp_path / "out"
    finished = Plan("base2new", data, out, datasets=["eurosat"], seeds=(1, 2)).train_dir("eurosat", 2, "base", "bar")
    finished.mkdir(parents=True)
    (finished / "result.json").write_text('{"accuracy": 50.0}')  # a job finished before: skipped
    assert bench("base2new", data, out, "--datasets", "eurosat", "--methods", "zip,zsclip,bar", "--seeds", "1,2") == 0
    err = capsys.readouterr().err.splitlines()
    assert len(ran) == 1  # stated, then run
    assert err[0] == "zipfast bench-paper base2new: 9 jobs to run, 1 finished (skipped)"
    assert err[1].split() == ["zip", "2", "training", "runs", "×", "20", "queries,", "2", "evaluations", "(no",
                              "queries)"]
    assert err[2].split() == ["zsclip", "2", "evaluations", "(no", "queries)"]
    assert err[3].split()[:6] == ["bar", "1", "training", "run", "×", "20"]
    assert err[4].startswith("  total: 60 queries; no time estimate")
