"""Checkpoints written by the pre-refactor code (v1, commit 5261919) still resume bit for bit.

tests/fixtures/v1/<kind>/ holds, for ZIP, SharpZO, ZO-SGD (planted task) and BPT-VLM, BAR, BlackVIP
(synthetic-images), the checkpoint a 2N-step run wrote after step N, that run's log of steps 1..N,
and the reference of the same run continued uninterrupted to step 2N: every tensor of its final
checkpoint (reference.safetensors) and its log records without time_s (reference.json). See
tests/fixtures/v1/make_fixtures.py; the fixtures must not be regenerated after the refactor.

The test copies the fixture into a fresh output directory, resumes it through the public CLI with the
run's own argv plus `--resume`, and compares. Re-pointing after a module move touches at most
`resume` (the CLI call) and `final_tensors` (how a final checkpoint's tensors are read, keyed by the v1
key paths such as "optimizer/w"; a new checkpoint layout maps its keys onto those there).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parents[1] / "fixtures" / "v1"
KINDS = ("zip", "sharpzo", "zo-sgd", "bptvlm", "bar", "blackvip")
TIMING = ("time_s",)


def resume(argv: list[str], run_dir: Path) -> int:
    """`zipfast train <argv> --resume RUN_DIR/checkpoint.safetensors --output-dir RUN_DIR` (official
    KEY VALUE pairs stay last)."""
    from zipfast.cli import main

    i = next((j for j, a in enumerate(argv) if a.startswith("TRAINER.")), len(argv))
    return main([*argv[:i], "--resume", str(run_dir / "checkpoint.safetensors"), "--output-dir", str(run_dir),
                 *argv[i:]])


def final_tensors(run_dir: Path, kind: str) -> dict[str, torch.Tensor]:
    """Every tensor of the run's checkpoint, by its v1 key path ("optimizer/w", "space/ctx0", ...). Layout
    v2 (zipfast.run.state) keeps every v1 tensor at its path and adds the prompt's point at "point": the
    text trainer's v1 "w", which the image trainer's v1 layout did not store."""
    from zipfast.run.checkpoint import flatten_state, read_checkpoint
    from zipfast.run.state import STATE_FORMAT

    state = read_checkpoint(run_dir / "checkpoint.safetensors").state
    assert state["format"] == STATE_FORMAT
    tensors = flatten_state(state)[1]
    point = tensors.pop("point")
    if kind in ("zip", "sharpzo", "zo-sgd"):
        tensors["w"] = point
    return tensors


def log_records(run_dir: Path) -> list[dict]:
    """log.jsonl's records without their timing fields."""
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines if x.strip()]


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.mark.parametrize("kind", KINDS)
def test_a_v1_checkpoint_resumes_bit_for_bit(kind, tmp_path, zipfast_cache, capsys):
    fixture = FIXTURES / kind
    ref = json.loads((fixture / "reference.json").read_text())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("checkpoint.safetensors", "log.jsonl"):
        shutil.copyfile(fixture / name, run_dir / name)

    assert resume(ref["argv"], run_dir) == 0, capsys.readouterr().err

    expected = load_file(str(fixture / "reference.safetensors"))
    got = final_tensors(run_dir, kind)
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype and got[key].shape == tensor.shape, key
        assert torch.equal(got[key], tensor), (key, (got[key].double() - tensor.double()).abs().max().item())
    assert log_records(run_dir) == ref["log"]
    report = json.loads((run_dir / "report.json").read_text())
    assert (report["steps"], report["queries"], report["test_acc"]) == (ref["steps"], ref["queries"], ref["test_acc"])


def test_the_fixtures_are_the_pre_refactor_ones():
    """They name portable datasets, resume from step N to 2N, and hold no pickle."""
    for kind in KINDS:
        ref = json.loads((FIXTURES / kind / "reference.json").read_text())
        data = ref["argv"][ref["argv"].index("--data") + 1]
        assert data in ("planted", "synthetic-images"), (kind, data)
        assert "--output-dir" not in ref["argv"] and ref["steps"] == 2 * ref["n"]
        assert [r["step"] for r in ref["log"]] == list(range(1, ref["steps"] + 1))
        for name in ("checkpoint.safetensors", "reference.safetensors"):
            assert (FIXTURES / kind / name).read_bytes()[:2] != b"PK", (kind, name)  # not torch.save
