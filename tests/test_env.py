"""zipfast/env.py: logger, device/precision rules; and the package has no import cycle."""

import ast
import logging
import subprocess
import sys
from pathlib import Path

import torch

from zipfast import env

PKG = Path(__file__).resolve().parents[1] / "zipfast"


def test_precision_auto_and_substitution(caplog, monkeypatch):
    cpu = torch.device("cpu")
    assert env.resolve_precision("fp32", cpu) == "fp32"
    assert env.resolve_precision("bf16", cpu) == "bf16"
    assert env.resolve_precision("auto", torch.device("cuda")) == "fp16"
    for flags, want in ((["avx2", "avx512_bf16"], "bf16"), (["amx_bf16"], "bf16"), (["avx2", "avx512f"], "fp32"),
                        ([], "fp32")):
        monkeypatch.setattr(env, "cpu_flags", lambda flags=flags: flags)
        assert env.resolve_precision("auto", cpu) == want, flags
    monkeypatch.undo()
    assert env.precision_substitution("fp16", torch.device("cuda")) is None
    assert "fp16" in env.precision_substitution("fp16", cpu)
    env._logged.discard(("precision", "amp", "cpu"))
    with caplog.at_level(logging.INFO, logger="zipfast"):
        assert env.resolve_precision("amp", cpu) == "bf16"
        assert env.resolve_precision("amp", cpu) == "bf16"
    lines = [r for r in caplog.records if "precision amp" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and lines[0].name == "zipfast"


def test_resolve_device():
    assert env.resolve_device("cpu") == torch.device("cpu")
    assert env.resolve_device("auto").type in ("cpu", "cuda", "hpu")


def test_log_once_and_stderr_handler(capsys):
    h = env.log_to_stderr()
    try:
        assert env.log_to_stderr() is h  # idempotent
        assert env.log_once(("test", 1), "hello from a test", logging.INFO, area="tests")
        assert not env.log_once(("test", 1), "hello from a test", logging.INFO, area="tests")
        env.get_logger("tests").warning("careful")
        err = capsys.readouterr().err.splitlines()
        assert err.count("zipfast: hello from a test") == 1
        assert "zipfast: warning: careful" in err
    finally:
        env.logger.removeHandler(h)
        env.logger.setLevel(logging.NOTSET)


def test_old_import_paths_still_work():
    from zipfast.backends import cpu_flags
    from zipfast.engine.text import PRECISIONS, resolve_precision
    from zipfast.models import resolve_device
    from zipfast.env import versions

    assert cpu_flags is env.cpu_flags and resolve_precision is env.resolve_precision
    assert resolve_device is env.resolve_device and versions is env.versions and PRECISIONS is env.PRECISIONS


def _imports(path: Path, module: str) -> set[str]:
    """zipfast modules imported anywhere in `path` (function-level imports included)."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("zipfast")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - node.level + 1]
                src = ".".join(parent + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if src.startswith("zipfast"):
                out |= {f"{src}.{a.name}" for a in node.names} | {src}
    return out


def test_no_import_cycles():
    """Static graph of the package's imports, lazy ones included: no cycle (the old one was
    engine → backends → trainer → batched → engine). A package importing its own submodules
    and a submodule needing its parent package are how Python packages work, not cycles."""
    modules = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {m: {d for d in _imports(p, m) if d in modules and d != m and not m.startswith(d + ".")
                 and not d.startswith(m + ".")} for m, p in modules.items()}
    # env may use errors (the error types), which imports nothing from zipfast at all
    assert "zipfast.env" in graph and graph["zipfast.env"] <= {"zipfast", "zipfast.errors"}, graph["zipfast.env"]
    assert graph["zipfast.errors"] == set(), graph["zipfast.errors"]
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " → ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


# The package's layers, bottom first (docs/development.md draws them): a module imports only from its own
# layer or those below. The data flow config → run → method (space + optimiser + evaluator) → engine →
# kernels reads top to bottom; nothing low reaches back up.
LAYERS = (("zipfast.errors", "zipfast.env", "zipfast.io"),
          ("zipfast.reference", "zipfast.ops"),
          ("zipfast.models", "zipfast.weights"),
          ("zipfast.engine",),
          ("zipfast.data", "zipfast.datasets", "zipfast.spaces", "zipfast.optim"),
          ("zipfast.evaluate",),
          ("zipfast.methods",),
          ("zipfast.config",),
          ("zipfast.run",),
          ("zipfast.sweep",),  # a grid of runs: above the run it sets up, below the commands
          ("zipfast.paper",),
          ("zipfast.backends", "zipfast.verify_gpu", "zipfast.commands", "zipfast.cli"))


def _layer(module: str) -> int | None:
    hits = [(len(n), i) for i, names in enumerate(LAYERS) for n in names if module == n or module.startswith(n + ".")]
    return max(hits)[1] if hits else None


def test_no_import_reaches_a_higher_layer():
    """Every module is in a layer, and none imports (lazily or not) from a layer above its own. The
    package root is the public facade (its lazy `Trainer`, `TrainConfig`) and stands outside."""
    modules = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        modules[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    modules.pop("zipfast")
    assert [m for m in modules if _layer(m) is None] == []
    up = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})" for m, p in sorted(modules.items())
          for d in sorted(_imports(p, m)) if d in modules and _layer(d) > _layer(m)]
    assert up == [], "\n".join(up)


def test_bottom_modules_import_alone():
    """zipfast.env and zipfast.ops import in a fresh interpreter without loading the layers above."""
    code = ("import sys, zipfast.env, zipfast.ops; "
            "bad = [m for m in ('zipfast.run.trainer', 'zipfast.engine.batched', 'zipfast.engine.text', 'open_clip') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
