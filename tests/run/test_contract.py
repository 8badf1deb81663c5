"""The contract every registered method keeps on the one pipeline (zipfast.methods.METHODS), each on
the task it needs (the planted text task, or the generated image folder):

- the queries never exceed the budget and equal the logged count; the report has the one schema;
- a run resumed after N queries equals the 2N-query run bit for bit (checkpoint tensors, log, test accuracy);
- a non-finite loss puts the optimiser back to its state from before the ask, and that state is what the
  checkpoint holds;
- a bad backend, precision or option exits 2 naming it;
- a precision substitution (fp16 on a CPU runs bf16) is in the report's fallbacks.

A method registered without a case here fails `test_every_method_has_a_case`.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from fixtures.cli_args import COMMON, SMALL_ZIP_SPACE, images, method_opts
from fixtures.cli_args import planted
from zipfast.cli import main
from zipfast.methods import METHODS
from zipfast.run.checkpoint import CHECKPOINT_NAME, flatten_state, read_checkpoint
from zipfast.run.loop import REPORT_KEYS, NonFiniteLossError

PLANTED, IMAGES = planted(1), images(2)
# method → (its train argv but the budget, N: a budget of whole rounds; 2N is one too)
CASES = {
    "zip": (["--method", "zip", *PLANTED, *SMALL_ZIP_SPACE], 20),
    "zip-cma": (["--method", "zip-cma", *method_opts(popsize=4), *PLANTED, *SMALL_ZIP_SPACE], 8),
    "zo-sgd": (["--method", "zo-sgd", *method_opts(pairs=2), *PLANTED, *SMALL_ZIP_SPACE], 8),
    # one stage-1 generation (2 + 4 queries), then stage 2: 2 per step, a mask round (2) every 2 steps
    "sharpzo": (["--method", "sharpzo", *method_opts(dim=16, popsize=4, change_point=1, grad_dirs=1, prune_interval=2),
                 *PLANTED, "TRAINER.ZIP.N_CTX", "4"], 10),
    "zsclip": (["--method", "zsclip", *PLANTED, "TRAINER.ZIP.N_CTX", "4"], 10),
    # 8 training images, batch 4: a candidate costs its epoch of 2 minibatches; 3 candidates a generation
    "bptvlm": (["--method", "bptvlm", *method_opts(intrinsic_dim_l=40, intrinsic_dim_v=30, pop_size=3), *IMAGES], 12),
    "bar": (["--method", "bar", *method_opts(q=2), *IMAGES], 6),
    "blackvip": (["--method", "blackvip", *method_opts(sp_avg=1), *IMAGES], 4),
}
METHOD_NAMES = list(METHODS)

pytestmark = pytest.mark.usefixtures("one_cpu_thread", "zipfast_cache")


def argv(method: str, budget: int, out: Path, *extra: str, precision: str = "fp32") -> list[str]:
    """`train` with the case's arguments (official KEY VALUE pairs stay last)."""
    case = CASES[method][0]
    i = next((j for j, a in enumerate(case) if a.startswith("TRAINER.")), len(case))
    flags = [*case[:i], *COMMON, *extra]
    flags[flags.index("--precision") + 1] = precision
    return ["train", *flags, "--budget", str(budget), "--output-dir", str(out), *case[i:]]


def log(out: Path) -> list[dict]:
    path = out / "log.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [{k: v for k, v in json.loads(x).items() if k != "time_s"} for x in lines if x.strip()]


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def tensors(out: Path) -> dict:
    return flatten_state(read_checkpoint(out / CHECKPOINT_NAME).state)[1]


def test_every_method_has_a_case():
    assert sorted(CASES) == sorted(METHODS)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_budget_log_report_and_fallbacks(method, tmp_path, capsys):
    n = CASES[method][1]
    out = tmp_path / "run"
    budget = 2 * n + 1  # one query short of another round: never spent
    assert main(argv(method, budget, out, precision="fp16")) == 0, capsys.readouterr().err
    rep, records = report(out), log(out)
    assert sorted(rep) == sorted(REPORT_KEYS)
    assert rep["queries"] <= budget and rep["queries"] == (records[-1]["queries"] if records else 0)
    assert [r["queries"] for r in records] == sorted({r["queries"] for r in records})  # each round logged once
    if method == "zsclip":
        assert rep["queries"] == 0 and rep["steps"] == 0
    else:
        assert rep["queries"] >= 2 * n  # whole rounds up to 2N fit
    (fb,) = [f for f in rep["fallbacks"] if f["what"] == "precision"]  # fp16 on a CPU: bf16, reported
    assert (fb["requested"], fb["used"]) == ("fp16", "bf16") and fb["why"]
    assert rep["precision"] == "bf16"


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_resume_after_n_equals_2n(method, tmp_path, capsys):
    n = CASES[method][1]
    full, half = tmp_path / "full", tmp_path / "half"
    assert main(argv(method, 2 * n, full)) == 0, capsys.readouterr().err
    assert main(argv(method, n, half)) == 0
    assert main(argv(method, 2 * n, half, "--resume", str(half / CHECKPOINT_NAME))) == 0, capsys.readouterr().err
    a, b = tensors(full), tensors(half)
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert log(full) == log(half)
    ra, rb = report(full), report(half)
    assert (ra["queries"], ra["steps"], ra["test_acc"]) == (rb["queries"], rb["steps"], rb["test_acc"])


def _state_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_a_non_finite_loss_restores_the_state_before_the_ask(method, tmp_path, monkeypatch):
    from zipfast.run.trainer import Trainer

    made, real_fit = [], Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self: made.append(self) or {})  # built as `train` builds it
    out = tmp_path / "run"
    assert main(argv(method, 2 * CASES[method][1], out)) == 0
    monkeypatch.setattr(Trainer, "fit", real_fit)
    (tr,) = made
    if tr.optimizer is None:  # zero-shot: nothing is asked, nothing evaluated
        assert tr.fit()["queries"] == 0
        return
    before, rounds = [], [0]
    real_ask, real_losses = tr.optimizer.ask, tr.evaluator.losses

    def ask(n):
        from zipfast.run.loop import snapshot

        before.append(snapshot(tr.optimizer.state_dict()))
        return real_ask(n)

    def losses(space, cand, batch):
        rounds[0] += 1
        lo, acc = real_losses(space, cand, batch)
        return (torch.full_like(lo, float("nan")) if rounds[0] == 2 else lo), acc

    tr.optimizer.ask, tr.evaluator.losses = ask, losses
    tr.run_dir.mode = "overwrite"
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        tr.fit()
    assert rounds[0] == 2 and _state_equal(tr.optimizer.state_dict(), before[-1])
    saved = read_checkpoint(out / CHECKPOINT_NAME).state["optimizer"]
    assert _state_equal(flatten_state(saved)[1], flatten_state(before[-1])[1])


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("flag,value", [("--backend", "nonsense"), ("--precision", "fp99"),
                                        ("--method-opt", "nonsense=1")])
def test_a_bad_backend_precision_or_option_exits_2_naming_it(method, flag, value, tmp_path, capsys):
    args = argv(method, 10, tmp_path / "run")
    if flag == "--precision":
        args[args.index("--precision") + 1] = value
    else:
        args[1:1] = [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and value.split("=")[0] in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing half-written
