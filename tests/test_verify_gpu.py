"""`zipfast verify-gpu` without a GPU: exit 2 with its message; the CPU dry run writes the record."""

import json

import pytest
import torch

from zipfast.cli import main
from zipfast.ops import registry

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="these test the machine without a GPU")


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPFAST_CACHE", str(tmp_path / "cache"))
    registry._reset_for_tests()
    yield
    registry._reset_for_tests()


def test_without_a_gpu_it_exits_2_saying_so(tmp_path, capsys):
    assert main(["verify-gpu", "--out", str(tmp_path / "rec")]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA device" in err and "--dry-run" in err
    assert not (tmp_path / "rec").exists()


def test_dry_run_writes_the_record(tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["verify-gpu", "--dry-run", "--out", str(out)]) == 0
    assert "all checks passed" in capsys.readouterr().out
    rec = json.loads((out / "verify-gpu.json").read_text())
    assert rec["dry_run"] is True and rec["passed"] is True
    assert rec["environment"]["zipfast"] and rec["environment"]["torch"]
    assert {r["op"] for r in rec["selfchecks"]} >= {"perturb", "candidates", "clip_loss", "spsa_update",
                                                     "prefix_attention"}
    assert all(r["ok"] for r in rec["selfchecks"])
    assert rec["trajectory"]["ok"] and rec["trajectory"]["steps"] == 20
    fig = rec["figures"]["classes_10"]
    assert fig["queries_per_s"] > 0 and fig["inference_over_step"] > 0
    assert rec["figures"]["launches_per_step"]["eager_leaf_ops_cpu"] > 0
    md = (out / "verify-gpu.md").read_text()
    assert "dry run" in md and "| perturb | torch | pass |" in md


def test_a_failing_check_fails_the_record(tmp_path, monkeypatch, capsys):
    real = registry._impls["clip_loss"]["torch"]

    def wrong(*args):
        loss, acc = real.fn(*args)
        return loss + 1, acc

    monkeypatch.setitem(registry._impls["clip_loss"], "torch", registry.Implementation("clip_loss", "torch", wrong,
                                                                                       real.available))
    out = tmp_path / "rec"
    assert main(["verify-gpu", "--dry-run", "--out", str(out)]) == 1
    assert "SOME CHECKS FAILED" in capsys.readouterr().out
    rec = json.loads((out / "verify-gpu.json").read_text())
    (row,) = [r for r in rec["selfchecks"] if r["op"] == "clip_loss"]
    assert row["ok"] is False and "clip_loss loss" in row["why"]
    assert "| clip_loss | torch | FAIL: clip_loss loss" in (out / "verify-gpu.md").read_text()
