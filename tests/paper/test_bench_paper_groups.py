"""bench-paper's run groups: the training jobs of one task (the methods of one dataset and seed) stepped
together leave every folder as the jobs alone (`--group-size 1`) leave theirs; a job failing inside a
group fails as alone while the others finish; a bad --group-size is one line."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest
import torch
from safetensors.torch import load_file

import paper_data
from paper.test_image_protocols import BAR_TINY_YAML, BPTVLM_TINY_YAML
from paper_runs import image_trainer_configs, official_configs
from zipfast.cli import main
from zipfast.run import group as run_group
from zipfast.run.checkpoint import CHECKPOINT_NAME

TINY = ["TRAINER.BASIC.MAX_API_CALLS", "20", "DATALOADER.TRAIN_X.BATCH_SIZE", "8"]
FOLDERS = {"zip": "basic/ZIP/eurosat/nctx8/seed{s}", "bar": "basic/BAR/eurosat/seed{s}",
           "bptvlm": "basic/BPTVLM/eurosat/seed{s}"}
TIMES = {"wall_time_s", "queries_per_s", "time_s"}


def data(root):
    """The dataset and the tiny trainer configs; one root per bench (its few-shot split cache is written
    by the first run that draws it)."""
    paper_data.eurosat(root)
    image_trainer_configs(official_configs(root), {"BAR": BAR_TINY_YAML, "BPTVLM": BPTVLM_TINY_YAML})
    return root


@pytest.fixture
def sizes(monkeypatch):
    """The size of every run group stepped."""
    seen, fit = [], run_group.RunGroup.fit

    def spy(self):
        seen.append(len(self.trainers))
        return fit(self)
    monkeypatch.setattr(run_group.RunGroup, "fit", spy)
    return seen


def bench(out, weights, *argv):
    """bench-paper few-shot on EuroSAT into out/, its data in out/DATA."""
    root = data(out / "DATA")
    return main(["bench-paper", "few-shot", "--root", str(root), "--output", str(out), "--no-progress", "--datasets",
                 "eurosat", "--model", "zipfast-tiny", "--pretrained", str(weights), "--config-dir",
                 str(root / "configs/trainers"), *argv, *TINY])


def log_lines(folder, out) -> list[str]:
    """log.txt less what differs between two runs of one job: times, speeds, the output folder."""
    text = (folder / "log.txt").read_text().replace(str(out), "OUT")
    text = re.sub(r"\(\d+(\.\d+)? queries/s\)", "(Q queries/s)", text)
    return re.sub(r"Elapsed: \S+", "Elapsed: T", text).splitlines()


def test_grouped_jobs_leave_each_folder_as_alone(weights, tmp_path, sizes):
    argv = ["--methods", "zip,bar,bptvlm,zsclip", "--seeds", "1,2", "--eval-every", "10"]
    alone, grouped = tmp_path / "alone", tmp_path / "grouped"
    assert bench(alone, weights, *argv, "--group-size", "1") == 0
    assert sizes == []  # one job at a time, as before
    assert bench(grouped, weights, *argv) == 0
    assert sizes == [6]  # the paper's weights: the three training methods of both seeds in one group; zsclip alone
    for method, folder in FOLDERS.items():
        for s in (1, 2):
            a, g = alone / folder.format(s=s), grouped / folder.format(s=s)
            # fewshot_source: a group loads its task once ("drawn"); alone, a later job reads the first one's cache
            ra, rg = ({k: v for k, v in json.loads((d / "result.json").read_text()).items() if k != "fewshot_source"}
                      for d in (a, g))
            assert ra == rg and "accuracy" in ra
            ta, tg = load_file(a / CHECKPOINT_NAME), load_file(g / CHECKPOINT_NAME)
            assert ta.keys() == tg.keys() and all(torch.equal(ta[k], tg[k]) for k in ta), (method, s)
            assert (a / "curve.jsonl").read_text() == (g / "curve.jsonl").read_text()
            ra, rg = (json.loads((d / "report.json").read_text().replace(str(o), "OUT"))
                      for d, o in ((a, alone), (g, grouped)))
            assert {k: v for k, v in ra.items() if k not in TIMES} == {k: v for k, v in rg.items() if k not in TIMES}
            assert log_lines(a, alone) == log_lines(g, grouped) and "Finish training" in log_lines(g, grouped)
    zs = "basic/zsclip/ZeroshotCLIP/eurosat"
    assert log_lines(alone / zs, alone) == log_lines(grouped / zs, grouped)


def test_jobs_failing_in_a_group_fail_as_alone_and_the_others_finish(weights, tmp_path, sizes, monkeypatch, capsys):
    from zipfast.errors import ConfigError
    from zipfast.run.trainer import Trainer

    init, ask = Trainer.__init__, Trainer._ask

    def bad_bar(self, model, classnames, config, *a, **kw):  # BAR's jobs fail to build: a user error (exit 2)
        if config.method == "bar":
            raise ConfigError("TRAINER.BAR.FRAME_SIZE planted bad setting")
        init(self, model, classnames, config, *a, **kw)

    def broken(self, remaining):  # BPT-VLM of seed 1 meets a bug in its second round (exit 1)
        if self.config.method == "bptvlm" and self.config.seed == 1 and self.queries:
            raise RuntimeError("planted bug")
        return ask(self, remaining)
    monkeypatch.setattr(Trainer, "__init__", bad_bar)
    monkeypatch.setattr(Trainer, "_ask", broken)
    out = tmp_path / "out"
    assert bench(out, weights, "--methods", "zip,bar,bptvlm", "--seeds", "1,2") == 1  # a bug among the failures
    assert sizes == [4]  # zip and BPT-VLM of both seeds; BAR left before the group
    cap = capsys.readouterr()
    summary = json.loads(cap.out.strip().splitlines()[-1])
    failed = [("bar", 1), ("bar", 2), ("bptvlm", 1)]  # in the jobs' order
    assert summary["failed"] == [str(out / FOLDERS[m].format(s=s)) for m, s in failed]
    assert summary["exit_codes"] == [2, 2, 1]
    lines = [line for line in cap.err.splitlines() if " failed with exit " in line]
    assert len(lines) == 3 and "Traceback" not in cap.err
    for (m, s), line in zip(failed, lines):  # one group: reported in the jobs' order
        code = 1 if m == "bptvlm" else 2
        assert f"job {m} eurosat seed {s} (train) failed with exit {code}" in line
    for s in (1, 2):
        bar_log = (out / FOLDERS["bar"].format(s=s) / "log.txt").read_text()
        assert bar_log.endswith("zipfast train: error: TRAINER.BAR.FRAME_SIZE planted bad setting\n")
        assert "Traceback" not in bar_log and not (out / FOLDERS["bar"].format(s=s) / "result.json").exists()
        assert (out / FOLDERS["zip"].format(s=s) / "result.json").is_file()  # the others finished
    bpt = (out / FOLDERS["bptvlm"].format(s=1) / "log.txt").read_text()
    assert "RuntimeError: planted bug" in bpt and "zipfast train: internal error (RuntimeError)" in bpt
    assert "Finish training" not in bpt and not (out / FOLDERS["bptvlm"].format(s=1) / "result.json").exists()
    assert (out / FOLDERS["bptvlm"].format(s=2) / "result.json").is_file()


@pytest.mark.parametrize("size", ["0", "-3"])
def test_group_size_below_one_is_one_line(size, tmp_path, capsys):
    assert main(["bench-paper", "few-shot", "--root", str(tmp_path), "--output", str(tmp_path / "out"),
                 "--group-size", size]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"zipfast bench-paper: error: --group-size {size}: give at least 1 (the most training runs stepped " \
                  "together; 1 runs the jobs one at a time)"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("group_size", ["1", "32"])
def test_sigint_stops_the_bench_and_the_same_command_continues(weights, tmp_path, sizes, monkeypatch, capsys, group_size):
    """SIGINT in the first round: the job (one at a time) or the group's jobs write their checkpoints and
    stop lines, no other job starts, one line says how to continue; the same command then ends every job
    as an uninterrupted bench does."""
    from zipfast.run.loop import Session

    argv = ["--methods", "zip,bptvlm,zsclip", "--seeds", "1,2", "--group-size", group_size]
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert bench(ref, weights, *argv) == 0
    record, rounds = Session.record, []

    def stopping(self, spent, rec):
        rounds.append(spent)
        if len(rounds) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return record(self, spent, rec)
    monkeypatch.setattr(Session, "record", stopping)
    capsys.readouterr()
    assert bench(out, weights, *argv) == 130
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith("zipfast bench-paper: stopped by SIGINT: 0 of 5 jobs finished; the jobs in progress keep "
                           "their last checkpoints (each job's log.txt says where); continue with the same command: "
                           "zipfast bench-paper few-shot --root "), line
    assert " failed with exit " not in err  # a stop is not a failure
    stopped = [(m, s) for m in ("zip", "bptvlm") for s in (1, 2)] if group_size == "32" else [("zip", 1)]
    for m in ("zip", "bptvlm"):
        for s in (1, 2):
            folder = out / FOLDERS[m].format(s=s)
            assert not (folder / "result.json").exists()
            if (m, s) in stopped:  # its own stop line, the train command that resumes it alone
                text = (folder / "log.txt").read_text()
                assert "zipfast train: stopped by SIGINT after step 1 " in text and "resume with: zipfast train" in text
                assert (folder / CHECKPOINT_NAME).is_file()
            else:  # never started
                assert not folder.exists() or not any(folder.glob("log.txt*"))
    assert not (out / "basic/zsclip/ZeroshotCLIP/eurosat").exists()
    monkeypatch.setattr(Session, "record", record)
    assert bench(out, weights, *argv) == 0
    for m in ("zip", "bptvlm"):
        for s in (1, 2):
            r, o = ref / FOLDERS[m].format(s=s), out / FOLDERS[m].format(s=s)
            ta, tb = load_file(r / CHECKPOINT_NAME), load_file(o / CHECKPOINT_NAME)
            assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), (m, s)
            ra, rb = ({k: v for k, v in json.loads((d / "result.json").read_text()).items() if k != "fewshot_source"}
                      for d in (r, o))
            assert ra == rb and "accuracy" in ra


@pytest.mark.parametrize("phase", ["prepare", "finish"])
def test_a_stop_while_a_grouped_job_loads_or_tests_starts_no_other_job(weights, tmp_path, sizes, monkeypatch, capsys,
                                                                      phase):
    """SIGINT outside the step loop: while the group's second job loads (no group step runs), or while the
    first job of a trained group runs its test (the others' tests wait for the same command)."""
    from zipfast.paper import official

    real = official.prepare if phase == "prepare" else official.Prepared.finish
    calls = []

    def stopping(*a, **kw):
        calls.append(1)
        if len(calls) == 2 if phase == "prepare" else len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # outside the step loop: KeyboardInterrupt at once
        return real(*a, **kw)
    if phase == "prepare":
        monkeypatch.setattr(official, "prepare", stopping)
    else:
        monkeypatch.setattr(official.Prepared, "finish", stopping)
    out = tmp_path / "out"
    assert bench(out, weights, "--methods", "zip,bptvlm", "--seeds", "1,2") == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("zipfast bench-paper: stopped by SIGINT: 0 of 4 jobs finished"), line
    assert sizes == ([] if phase == "prepare" else [4]) and len(calls) == (2 if phase == "prepare" else 1)
    assert not list(out.rglob("result.json"))
    log = (out / FOLDERS["zip"].format(s=2 if phase == "prepare" else 1) / "log.txt").read_text()
    assert "zipfast train: aborted by SIGINT" in log
