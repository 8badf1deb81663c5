"""zipfast/ops/registry.py: priority, environment overrides, errors, logged fallbacks, table."""

import logging

import pytest
import torch

from zipfast.ops import registry

CPU = torch.device("cpu")


@pytest.fixture
def fake_ops(monkeypatch):
    """Two fake ops in a clean registry state: "t_op" (cuda, triton, torch, reference) and
    "t_solo" (torch only); the real registrations are restored afterwards."""
    monkeypatch.setattr(registry, "_impls", {})
    monkeypatch.setattr(registry, "_cache", {})
    monkeypatch.setattr(registry, "_fallbacks", {})
    monkeypatch.setattr(registry, "_loaders", [])
    monkeypatch.setattr(registry, "_loaded", 0)
    for var in ("ZIPFAST_BACKEND", "ZIPFAST_BACKEND_T_OP", "ZIPFAST_BACKEND_T_SOLO", "TRITON_INTERPRET"):
        monkeypatch.delenv(var, raising=False)
    registry.register("t_op", "cuda", lambda: "cuda", registry.cuda_device)
    registry.register("t_op", "triton", lambda: "triton", registry.triton_runtime)
    registry.register("t_op", "torch", lambda: "torch")
    registry.register("t_op", "reference", lambda: "reference")
    registry.register("t_solo", "torch", lambda: "solo")
    return monkeypatch


def test_priority_and_cuda_only_on_cuda(fake_ops):
    backend, fn = registry.resolve("t_op", "cpu")
    assert (backend, fn()) == ("torch", "torch")
    assert registry.resolve("t_solo", CPU)[0] == "torch"
    ok, why = registry.cuda_device(CPU)
    assert not ok and "cpu" in why


def test_cuda_beats_triton_beats_torch(fake_ops):
    fake_ops.setattr(registry, "_impls", {})
    registry.register("t_op", "torch", lambda: "torch")
    registry.register("t_op", "cuda", lambda: "cuda", lambda d: (True, ""))
    registry.register("t_op", "triton", lambda: "triton", lambda d: (True, ""))
    assert registry.resolve("t_op", "cuda")[0] == "cuda"
    registry.register("t_op", "cuda", lambda: "cuda", lambda d: (False, "no kernel"))
    assert registry.resolve("t_op", "cuda")[0] == "triton"
    # off CUDA the Triton interpreter is never an automatic choice
    assert registry.resolve("t_op", "cpu")[0] == "torch"


def test_env_forces_all_ops_and_per_op_wins(fake_ops):
    fake_ops.setenv("ZIPFAST_BACKEND", "reference")
    with pytest.raises(registry.BackendUnavailableError, match=r"t_solo.*no reference implementation"):
        registry.resolve("t_solo", CPU)
    assert registry.resolve("t_op", CPU)[0] == "reference"
    fake_ops.setenv("ZIPFAST_BACKEND_T_SOLO", "torch")
    assert registry.resolve("t_solo", CPU)[0] == "torch"
    fake_ops.setenv("ZIPFAST_BACKEND_T_OP", "auto")  # per-op "auto" undoes the global override
    assert registry.resolve("t_op", CPU)[0] == "torch"
    fake_ops.setenv("ZIPFAST_BACKEND_T_OP", "Reference")  # case-insensitive value
    assert registry.resolve("t_op", CPU)[0] == "reference"


def test_forced_unavailable_is_an_error_naming_why(fake_ops):
    fake_ops.setenv("ZIPFAST_BACKEND_T_OP", "cuda")
    with pytest.raises(registry.BackendUnavailableError) as e:
        registry.resolve("t_op", CPU)
    msg = str(e.value)
    assert "ZIPFAST_BACKEND_T_OP=cuda" in msg and "'t_op'" in msg and "device is cpu, not cuda" in msg
    assert isinstance(e.value, ValueError)  # a user error: the CLI exits 2
    fake_ops.setenv("ZIPFAST_BACKEND_T_OP", "triton")  # interpreter not enabled
    with pytest.raises(registry.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        registry.resolve("t_op", CPU)
    fake_ops.setenv("TRITON_INTERPRET", "1")
    assert registry.resolve("t_op", CPU)[0] == "triton"  # forced + interpreter: allowed
    fake_ops.setenv("ZIPFAST_BACKEND_T_OP", "fastest")
    with pytest.raises(registry.BackendUnavailableError, match=r"ZIPFAST_BACKEND_T_OP='fastest' is not a backend"):
        registry.resolve("t_op", CPU)


def test_automatic_fallback_logged_once(fake_ops, caplog):
    with caplog.at_level(logging.INFO, logger="zipfast"):
        for _ in range(3):
            registry.resolve("t_op", CPU)
        registry.resolve("t_solo", CPU)  # torch is its only backend: nothing to fall back from
    lines = [r for r in caplog.records if r.name == "zipfast.ops"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    msg = lines[0].getMessage()
    assert msg.startswith("t_op on cpu: using torch") and "cuda unavailable: device is cpu" in msg
    fb = registry.fallbacks()
    assert fb == [registry.fallback("t_op", CPU)] and fb[0]["backend"] == "torch"
    assert set(fb[0]["skipped"]) == {"cuda", "triton"}
    assert registry.fallback("t_solo", CPU) is None


def test_resolution_is_cached_and_register_invalidates(fake_ops):
    calls = []

    def check(device):
        calls.append(device)
        return True, ""

    registry.register("t_solo", "torch", lambda: "a", check)
    for _ in range(4):
        assert registry.resolve("t_solo", CPU)[1]() == "a"
    assert len(calls) == 1
    registry.register("t_solo", "torch", lambda: "b", check)
    assert registry.resolve("t_solo", CPU)[1]() == "b"


def test_loader_runs_once_and_failure_is_gentle(fake_ops, caplog):
    runs = []

    def load_ext():
        runs.append(1)
        registry.register("t_ext", "cuda", lambda: "ext", registry.cuda_device)
        registry.register("t_ext", "torch", lambda: "torch")

    def broken():
        raise ImportError("libcudart.so.13: cannot open shared object file")

    registry.add_loader(broken)
    registry.add_loader(load_ext)
    with caplog.at_level(logging.WARNING, logger="zipfast"):
        assert registry.resolve("t_ext", CPU)[0] == "torch"
        assert "t_ext" in registry.ops()
    assert runs == [1]
    assert any("libcudart" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_unknown_op_and_bad_registration(fake_ops):
    with pytest.raises(KeyError, match="no_such_op"):
        registry.resolve("no_such_op", CPU)
    with pytest.raises(ValueError, match="unknown backend 'opencl'"):
        registry.register("t_op", "opencl", lambda: None)


def test_crashing_availability_check_is_unavailable_with_reason(fake_ops):
    registry.register("t_op", "cuda", lambda: None, lambda d: 1 / 0)
    assert registry.resolve("t_op", CPU)[0] == "torch"
    assert "ZeroDivisionError" in registry.fallback("t_op", CPU)["skipped"]["cuda"]


def test_table_rows_and_text(fake_ops):
    rows = {(r["op"], r["backend"]): r for r in registry.table(CPU)}
    assert len(rows) == 2 * len(registry.PRIORITY)
    assert rows["t_op", "torch"]["active"] and rows["t_op", "torch"]["available"]
    assert not rows["t_op", "cuda"]["available"] and "not cuda" in rows["t_op", "cuda"]["why_not"]
    assert rows["t_solo", "cuda"]["why_not"] == "not implemented"
    assert sum(r["active"] for r in rows.values()) == 2
    fake_ops.setenv("ZIPFAST_BACKEND_T_OP", "cuda")  # the table shows the error instead of raising
    rows = {(r["op"], r["backend"]): r for r in registry.table(CPU)}
    assert not any(r["active"] for (op, _), r in rows.items() if op == "t_op")
    assert "ZIPFAST_BACKEND_T_OP=cuda" in rows["t_op", "cuda"]["why_not"]
    text = registry.format_table(CPU).splitlines()
    assert text[0].split() == ["op", "backend", "available", "active", "why", "not"]
    torch_line = next(line for line in text if line.split()[:2] == ["t_solo", "torch"])
    assert torch_line.split()[2:4] == ["yes", "*"]


def test_zipfast_info_prints_the_table_and_overrides(fake_ops, capsys):
    from zipfast.cli import main

    fake_ops.setenv("ZIPFAST_BACKEND_T_SOLO", "torch")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "ZIPFAST_BACKEND_<OP>" in out and "environment overrides: ZIPFAST_BACKEND_T_SOLO=torch" in out
    table = out[out.index("op  "):].splitlines()
    assert table[0].split()[:4] == ["op", "backend", "available", "active"]
    active = [line.split()[:2] for line in table if len(line.split()) > 3 and line.split()[3] == "*"]
    assert active == [["t_op", "torch"], ["t_solo", "torch"]]
