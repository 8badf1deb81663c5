"""The error contract under hostile input, on every entry point: a user error exits 2 with exactly one
line that names the bad value, prints no traceback, hangs on nothing and leaves no file behind.

CASES are named inputs (flags, KEY VALUE pairs, environment variables, files that are not what they
claim) for `train` (several for every method), `eval`, `compare`, `sweep`, `bench-paper` and the official
surface; the hypothesis tests throw arbitrary strings at the list-valued flags. docs/reliability.md
quotes the number of inputs tried (`test_the_drill_size_the_docs_quote`).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import paper_data
from zipfast.cli import main
from zipfast.methods import METHODS

PLANTED = ["--data", "planted", "--budget", "10", "--device", "cpu", "--no-progress"]
HYPOTHESIS_EXAMPLES = 25  # per hypothesis test below


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Hostile files, and one sound checkpoint to evaluate."""
    d = tmp_path_factory.mktemp("hostile")
    (d / "random.safetensors").write_bytes(os.urandom(4096))
    (d / "empty.safetensors").write_bytes(b"")
    (d / "latin1.yaml").write_bytes("TRAINER:\n  ZIP:\n    CTX_INIT: \"caf\xe9\"\n".encode("latin-1"))
    (d / "tag.yaml").write_text("TRAINER: !!python/object/apply:os.system ['touch pwned']\n")
    (d / "deep.yaml").write_text("A: " + "[" * 5000 + "]" * 5000 + "\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "notdir").write_text("a file")
    os.mkfifo(d / "fifo.safetensors")
    paper_data.eurosat(d / "DATA")
    (d / "emptydir").mkdir()
    run = d / "run"
    assert main(["train", *PLANTED, "--output-dir", str(run), "TRAINER.ZIP.N_CTX", "4"]) == 0
    return d


def _cases():
    """(id, argv with {d} for the files folder, env, text the message must contain)."""
    train = lambda *a: ["train", *PLANTED, *a]  # noqa: E731
    cases = [
        ("budget-negative", train("--budget", "-5"), {}, "-5"),
        ("budget-text", ["train", "--data", "planted", "--budget", "abc"], {}, "'abc'"),
        ("shots-zero-planted", train("--shots", "-1"), {}, "-1"),
        ("batch-zero", train("--batch-size", "0"), {}, "0"),
        ("threads-negative", train("--threads", "-2"), {}, "--threads -2"),
        ("precision", train("--precision", "fp99"), {}, "fp99"),
        ("backend", train("--backend", "garbage"), {}, "garbage"),
        ("backend-cuda", train("--backend", "cuda"), {}, "cuda"),
        ("device-tpu", ["train", "--data", "planted", "--device", "tpu"], {}, "tpu"),
        ("device-meta", ["train", "--data", "planted", "--device", "meta"], {}, "meta"),
        ("opt-type", train("--opt-type", "adam"), {}, "adam"),
        ("method", train("--method", "nonsense"), {}, "nonsense"),
        ("test-per-class-zero", train("--test-per-class", "0"), {}, "0"),
        ("checkpoint-every-negative", train("--checkpoint-every", "-1"), {}, "-1"),
        ("model-unknown", ["train", "--data", "synthetic-images", "--model", "ViT-Q-99"], {}, "ViT-Q-99"),
        ("pretrained-missing", ["train", "--data", "synthetic-images", "--model", "zipfast-tiny224",
                                "--pretrained", "/nonexistent/w.pt"], {}, "/nonexistent/w.pt"),
        ("pretrained-on-planted", train("--pretrained", "/nonexistent/w.pt"), {}, "/nonexistent/w.pt"),
        ("data-missing", ["train", "--data", "/nonexistent/data"], {}, "/nonexistent/data"),
        ("data-a-file", ["train", "--data", "{d}/notdir"], {}, "notdir"),
        ("data-empty-folder", ["train", "--data", "{d}/emptydir"], {}, "emptydir"),
        ("key-unknown", train("NOT.A.KEY", "1"), {}, "NOT.A.KEY"),
        ("key-bad-value", train("TRAINER.ZIP.N_CTX", "abc"), {}, "TRAINER.ZIP.N_CTX"),
        ("key-odd-count", train("TRAINER.ZIP.N_CTX"), {}, "KEY VALUE"),
        ("key-huge-dim", train("TRAINER.ZIP.INTRINSIC_DIM", "100000000000"), {}, "INTRINSIC_DIM"),
        ("flag-after-pairs", ["train", "--data", "planted", "TRAINER.ZIP.N_CTX", "4", "--seed", "2"], {}, "--seed"),
        ("config-missing", train("--config-file", "/nonexistent/c.yaml"), {}, "/nonexistent/c.yaml"),
        ("config-not-utf8", train("--config-file", "{d}/latin1.yaml"), {}, "latin1.yaml"),
        ("config-yaml-tag", train("--config-file", "{d}/tag.yaml"), {}, "tag.yaml"),
        ("config-too-deep", train("--config-file", "{d}/deep.yaml"), {}, "deep.yaml"),
        ("config-a-list", train("--config-file", "{d}/list.yaml"), {}, "list.yaml"),
        ("resume-missing", train("--resume", "/nonexistent/ck.safetensors"), {}, "/nonexistent/ck.safetensors"),
        ("resume-random-bytes", train("--resume", "{d}/random.safetensors"), {}, "random.safetensors"),
        ("resume-empty", train("--resume", "{d}/empty.safetensors"), {}, "empty.safetensors"),
        ("resume-fifo", train("--resume", "{d}/fifo.safetensors"), {}, "fifo.safetensors"),
        ("resume-and-overwrite", train("--resume", "{d}/run", "--overwrite"), {}, "--overwrite"),
        ("resume-another-seed", ["train", "--resume", "{d}/run", "--seed", "9", "--budget", "20"], {}, "seed=1"),
        ("env-fused-step", train(), {"ZIPFAST_FUSED_STEP": "garbage"}, "garbage"),
        ("env-backend", train(), {"ZIPFAST_BACKEND_PERTURB": "garbage"}, "garbage"),
        ("eval-missing", ["eval", "/nonexistent/ck.safetensors"], {}, "/nonexistent/ck.safetensors"),
        ("eval-random-bytes", ["eval", "{d}/random.safetensors"], {}, "random.safetensors"),
        ("eval-fifo", ["eval", "{d}/fifo.safetensors"], {}, "fifo.safetensors"),
        ("eval-folder-without-run", ["eval", "{d}/emptydir"], {}, "emptydir"),
        ("eval-data-missing", ["eval", "{d}/run", "--data", "/nonexistent/data"], {}, "/nonexistent/data"),
        ("eval-test-per-class", ["eval", "{d}/run", "--test-per-class", "0"], {}, "0"),
        ("eval-device", ["eval", "{d}/run", "--device", "tpu"], {}, "tpu"),
        ("compare-methods", ["compare", "--methods", "garbage"], {}, "garbage"),
        ("compare-image-method-on-planted", ["compare", "--methods", "bar"], {}, "bar"),
        ("compare-seeds", ["compare", "--seeds", "x"], {}, "'x'"),
        ("compare-targets", ["compare", "--targets", "abc"], {}, "abc"),
        ("compare-budget", ["compare", "--budget", "-1"], {}, "-1"),
        ("compare-eval-every", ["compare", "--eval-every", "0"], {}, "0"),
        ("compare-method-opt", ["compare", "--methods", "zip", "--method-opt", "zip.nonsense=1"], {}, "nonsense"),
        ("compare-every-problem", ["compare", "--methods", "zip,sharpzo", "--method-opt", "zip.nonsense=1",
                                   "--method-opt", "sharpzo.dim=-3"], {}, "'nonsense' for method 'zip' (its options: none); sharpzo"),
        ("compare-method-opt-nodot", ["compare", "--method-opt", "nodot=1"], {}, "nodot"),
        ("compare-data-missing", ["compare", "--data", "/nonexistent/data"], {}, "/nonexistent/data"),
        ("bench-seeds", ["bench-paper", "few-shot", "--root", "{d}", "--seeds", "x"], {}, "x"),
        ("bench-methods", ["bench-paper", "few-shot", "--root", "{d}", "--methods", "garbage"], {}, "garbage"),
        ("bench-cpus", ["bench-paper", "few-shot", "--root", "{d}", "--cpus-per-job", "-1"], {}, "-1"),
        ("bench-group-size", ["bench-paper", "few-shot", "--root", "{d}", "--group-size", "0"], {}, "--group-size 0"),
        ("bench-protocol", ["bench-paper", "few-shots", "--root", "{d}"], {}, "few-shots"),
        ("bench-missing-datasets", ["bench-paper", "few-shot", "--root", "{d}", "--datasets", "eurosat"], {},
         "eurosat"),
        ("bench-job-settings", ["bench-paper", "few-shot", "--root", "{d}/DATA", "--datasets", "eurosat",
                                "--methods", "zip,bar", "TRAINER.ZIP.N_CTX", "abc"], {}, "TRAINER.ZIP.N_CTX"),
        ("official-trainer", ["train", "--root", "{d}", "--trainer", "Nope"], {}, "Nope"),
        ("official-dataset-config", ["train", "--root", "{d}", "--trainer", "ZIP", "--dataset-config-file",
                                     "/nonexistent/eurosat.yaml"], {}, "/nonexistent/eurosat.yaml"),
        ("command", ["trian", "--data", "planted"], {}, "trian"),
        ("flag-double-dash", ["train", "--data=--"], {}, "'--'"),  # argparse would leave [] as the value
        ("sweep-seeds", ["sweep", "--seeds", "x"], {}, "'x'"),
        ("sweep-methods", ["sweep", "--methods", "garbage"], {}, "garbage"),
        ("sweep-grid-key", ["sweep", "--grid", "nokey=1"], {}, "nokey"),
        ("sweep-grid-empty", ["sweep", "--grid", "a="], {}, "a"),
        ("sweep-grid-file", ["sweep", "--grid", "/nonexistent/grid.yaml"], {}, "/nonexistent/grid.yaml"),
        ("sweep-group-size", ["sweep", "--group-size", "-1"], {}, "-1"),
        ("sweep-max-runs", ["sweep", "--max-runs", "0"], {}, "0"),
        ("sweep-heatmap", ["sweep", "--grid", "a=0.1,0.01", "--heatmap", "a"], {}, "'a'"),
    ]
    for name in METHODS:  # every method: its own option checks and the shared flags
        cases.append((f"{name}-method-opt", train("--method", name, "--method-opt", "nonsense=1"), {}, "nonsense"))
        cases.append((f"{name}-method-opt-form", train("--method", name, "--method-opt", "novalue"), {}, "novalue"))
        cases.append((f"{name}-precision", train("--method", name, "--precision", "fp99"), {}, "fp99"))
    return cases


CASES = _cases()


def _check_contract(rc: int, err: str, expect: str, before: set, cwd: Path, what: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("zipfast") and "error" in line]
    assert rc == 2, f"{what}: exit {rc}\n{err[-1500:]}"
    assert "Traceback" not in err, f"{what}: a traceback\n{err[-1500:]}"
    assert len(lines) == 1 and len(err.strip().splitlines()) == 1, f"{what}: not one line:\n{err}"
    assert expect in lines[0], f"{what}: the message does not name {expect!r}: {lines[0]}"
    assert set(cwd.rglob("*")) == before, f"{what}: left {sorted(set(cwd.rglob('*')) - before)}"


def _run(argv: list[str], timeout: float = 120.0) -> int:
    """main(argv) with a guard: a read that blocks (a FIFO) fails the test instead of hanging it."""
    out: dict = {}

    def target():
        try:
            out["rc"] = main(argv)
        except SystemExit as e:  # argparse's refusal of the command line itself
            out["rc"] = e.code

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{argv} still running after {timeout} s (a blocking read?)"
    return out["rc"]


@pytest.mark.parametrize("name,argv,env,expect", CASES, ids=[c[0] for c in CASES])
def test_a_hostile_input_exits_2_in_one_line_naming_it(name, argv, env, expect, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = set(tmp_path.rglob("*"))
    argv = [a.replace("{d}", str(files)) for a in argv]
    capsys.readouterr()
    rc = _run(argv)
    _check_contract(rc, capsys.readouterr().err, expect.replace("{d}", str(files)), before, tmp_path, name)
    assert not (tmp_path / "pwned").exists() and not (files / "pwned").exists()


_list_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


def _any_text_exits_2(argv: list[str], flag: str, value: str, capsys) -> None:
    """argv + [flag, value]: whatever the text, exit 2 in one line without a traceback (argv names a
    missing folder, so a value that parses ends there)."""
    if value.startswith("-"):
        value = " " + value  # argparse would read it as a flag
    capsys.readouterr()
    rc = _run([*argv, flag, value, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(["--seeds", "--targets", "--methods"]), value=_list_text)
def test_compare_list_flags_take_any_text(flag, value, tmp_path, capsys):
    _any_text_exits_2(["compare", "--data", str(tmp_path / "missing")], flag, value, capsys)


@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(["--seeds", "--methods", "--datasets", "--cpus-per-job", "--gpus-per-job"]),
       value=_list_text)
def test_bench_paper_flags_take_any_text(flag, value, tmp_path, capsys):
    _any_text_exits_2(["bench-paper", "few-shot", "--root", str(tmp_path / "missing")], flag, value, capsys)


def test_the_drill_size_the_docs_quote():
    text = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text()
    n = len(CASES) + 2 * HYPOTHESIS_EXAMPLES
    assert re.search(rf"\b{n} hostile inputs\b", text), f"docs/reliability.md should quote {n} hostile inputs"
