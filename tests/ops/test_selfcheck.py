"""Self-check of compiled backends on first use (zipfast/ops/selfcheck.py), on the CPU.

A fake "compiled" implementation of each op is registered as the cuda backend (available on any
device, so the registry would pick it first): a wrong one must be rejected, logged, reported,
cached and replaced by the reference-equal torch backend; a right one accepted and cached.
"""

import json
import logging

import pytest
import torch

from zipfast.ops import candidates as C
from zipfast.ops import clip_loss as L
from zipfast.ops import perturb as P
from zipfast.ops import prefix_attention as A
from zipfast.ops import registry, selfcheck
from zipfast.ops import spsa_update as U

OPS = ("perturb", "candidates", "clip_loss", "spsa_update", "prefix_attention")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPFAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ZIPFAST_SELFCHECK", raising=False)
    for op in OPS:
        monkeypatch.delenv(registry.env_name(op), raising=False)
    monkeypatch.delenv(registry.ENV_ALL, raising=False)
    registry._reset_for_tests()
    yield
    registry._reset_for_tests()


def _output(result, args):
    """The tensor an implementation produced: its return value (first of a tuple), or `out` (candidates)."""
    if result is None:
        return args[0]
    return result[0] if isinstance(result, tuple) else result


def fake(op, how, calls=None):
    """The op's torch implementation, made wrong: "ulp" (first element one float32 ulp up),
    "big" (first element ×1.001, beyond every tolerance), "nan" (one NaN), "raise", or "right"."""
    real = registry._impls[op]["torch"].fn

    def fn(*args, **kwargs):
        if calls is not None:
            calls.append(1)
        if how == "raise":
            raise RuntimeError("no kernel image is available for execution on the device")
        result = real(*args, **kwargs)
        out = _output(result, args).view(-1)
        if how == "ulp":
            out[0] = torch.nextafter(out[0], torch.tensor(float("inf")))
        elif how == "big":
            out[0] = out[0] * 1.001 + 1e-3
        elif how == "nan":
            out[out.numel() // 2] = float("nan")
        return result

    return fn


def install(monkeypatch, op, fn):
    monkeypatch.setitem(registry._impls[op], "cuda", registry.Implementation(op, "cuda", fn, lambda d: (True, "")))
    registry._cache.clear()


def cache():
    path = selfcheck.cache_path()
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("how", ["big", "nan", "raise"])
@pytest.mark.parametrize("op", OPS)
def test_a_wrong_compiled_backend_is_rejected_logged_reported_and_cached(op, how, monkeypatch, caplog):
    install(monkeypatch, op, fake(op, how))
    with caplog.at_level(logging.WARNING, logger="zipfast.ops"):
        backend, _ = registry.resolve(op, CPU)
    assert backend == "torch"  # the next in priority, equal to the reference
    assert any(op in r.message and "self-check failed" in r.message and "using torch instead" in r.message
               for r in caplog.records)
    (fb,) = [f for f in registry.fallbacks() if f["op"] == op]
    assert fb["backend"] == "torch" and fb["skipped"]["cuda"].startswith("self-check failed")
    (entry,) = cache().values()
    assert entry["op"] == op and entry["backend"] == "cuda" and entry["ok"] is False and entry["zipfast"]


def test_one_ulp_fails_perturb_only():
    # perturb must be bit-identical; the others allow their documented tolerance (≥ 1e-6 relative).
    checks = registry._checks
    assert checks["perturb"](fake("perturb", "ulp"), CPU) is not None
    for op in ("candidates", "clip_loss", "spsa_update", "prefix_attention"):
        assert checks[op](fake(op, "ulp"), CPU) is None, op


@pytest.mark.parametrize("op", OPS)
def test_a_right_compiled_backend_is_chosen_and_cached(op, monkeypatch):
    calls = []
    install(monkeypatch, op, fake(op, "right", calls))
    assert registry.resolve(op, CPU)[0] == "cuda" and calls
    assert [e["ok"] for e in cache().values()] == [True]
    # a second process (fresh memo) trusts the cache: the check does not run again
    registry._reset_for_tests()
    calls.clear()
    assert registry.resolve(op, CPU)[0] == "cuda" and not calls
    # ZIPFAST_SELFCHECK=always re-runs it
    monkeypatch.setenv("ZIPFAST_SELFCHECK", "always")
    registry._reset_for_tests()
    assert registry.resolve(op, CPU)[0] == "cuda" and calls


def test_cache_entries_of_another_version_or_device_are_ignored(monkeypatch):
    calls = []
    install(monkeypatch, "perturb", fake("perturb", "right", calls))
    ident = selfcheck.device_identity(CPU)
    for other in ({"zipfast": "0.0.1"}, {"device": "cuda:NVIDIA A100-SXM4-80GB", "capability": "8.0"}):
        stale = {**ident, **other}
        selfcheck._write_cache(selfcheck._key("perturb", "cuda", stale),
                               {"ok": False, "why": "self-check failed: stale", **stale})
    assert registry.resolve("perturb", CPU)[0] == "cuda" and calls  # checked afresh, not refused
    # a stored verdict for this very identity is trusted (here: a failure, so cuda is skipped unchecked)
    registry._reset_for_tests()
    selfcheck._write_cache(selfcheck._key("perturb", "cuda", ident), {"ok": False, "why": "self-check failed: x",
                                                                        **ident})
    calls.clear()
    assert registry.resolve("perturb", CPU)[0] == "torch" and not calls


def test_selfcheck_off_trusts_availability_and_bad_mode_is_an_error(monkeypatch):
    install(monkeypatch, "perturb", fake("perturb", "big"))
    monkeypatch.setenv("ZIPFAST_SELFCHECK", "0")
    assert registry.resolve("perturb", CPU)[0] == "cuda"
    monkeypatch.setenv("ZIPFAST_SELFCHECK", "sometimes")
    registry._reset_for_tests()
    with pytest.raises(Exception, match="ZIPFAST_SELFCHECK='sometimes'"):
        registry.resolve("perturb", CPU)


def test_a_forced_backend_that_fails_its_check_is_an_error(monkeypatch):
    install(monkeypatch, "clip_loss", fake("clip_loss", "nan"))
    monkeypatch.setenv(registry.env_name("clip_loss"), "cuda")
    with pytest.raises(registry.BackendUnavailableError, match="self-check failed: clip_loss loss: NaN"):
        registry.resolve("clip_loss", CPU)


def test_the_ops_run_through_the_checked_backend(monkeypatch):
    # the public entry points resolve through the registry: a rejected backend is never called for real work
    calls = []
    install(monkeypatch, "perturb", fake("perturb", "big", calls))
    z = P.perturb(3, 4, 2, 9)
    n = len(calls)  # the self-check's own calls
    assert torch.equal(z, P.reference.perturb(3, 0, 4, 2, 9)) and n > 0
    P.perturb(3, 5, 2, 9)
    assert len(calls) == n
    assert {m.__name__ for m in (C, L, A, U)}  # every op module registers a check
    assert set(OPS) <= set(registry._checks)


def test_a_report_lists_a_self_check_fallback(monkeypatch):
    from zipfast.config import TrainConfig
    from zipfast.data.planted import make_planted_task, planted_model
    from zipfast.engine.towers import TextTower
    from zipfast.run.trainer import ZIPTrainer

    install(monkeypatch, "perturb", fake("perturb", "nan"))
    model, tok = planted_model(0)
    task = make_planted_task(TextTower(model), tok, n_ctx=4, shots=2, test_per_class=2, seed=0)
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", n_ctx=4, intrinsic_dim=40,
                      rank=2, batch_size=8, budget=10, seed=1, checkpoint_every=0, precision="fp32", device="cpu")
    report = ZIPTrainer(model, task.classnames, cfg, task, tokenizer=tok, progress=False).fit()
    (fb,) = [f for f in report["fallbacks"] if f["what"] == "op perturb"]
    assert fb["used"] == "torch" and "cuda: self-check failed" in fb["why"]
