"""`zipfast verify-gpu`: one command that proves the GPU path on the user's GPU and writes a record.

With nothing downloaded (random weights), on one CUDA device:

1. the CUDA extension (built from csrc/ when it is missing and nvcc is there) and the SASS/PTX it
   embeds;
2. every op's self-check for every compiled backend (CUDA C++, compiled Triton) against its
   reference on the device (`zipfast.ops.selfcheck`, forced to run);
3. the fused ZIP step: its CUDA-graph replay against the eager step, and a 20-step trajectory on
   the GPU against the same seed's trajectory on the CPU;
4. figures (CUDA events): queries/s of the ZIP step at 10 and 1000 classes (ViT-B/16's text tower,
   fused step), the same prompts through open_clip's encode_text (pure inference) as a fraction,
   and kernel launches per step (eager) against one graph launch;
5. the GPU tests (`pytest -m gpu tests`) and the kernel benchmarks (`bench/test_gpu_*.py`) when
   the source tree is there.

It writes `verify-gpu.json` and `verify-gpu.md` to the folder given and prints what to send.
Without a CUDA device it exits 2; `--dry-run` runs the CPU halves (self-checks of the torch
backends, the eager fused step against the plain step, the figures on the planted tower) so that
the record format itself is tested anywhere.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from zipfast.errors import UserError

ROOT = Path(__file__).resolve().parents[1]  # the source tree, when zipfast runs from one
TRAJECTORY_STEPS = 20
TRAJECTORY_RTOL = 1e-3  # GPU vs CPU matmuls differ in summation order; 20 steps stay far below this


class NoGPUError(UserError):
    """verify-gpu needs a CUDA device (or --dry-run)."""


def _commit() -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    from zipfast import __version__
    from zipfast.env import versions
    from zipfast.ops.selfcheck import device_identity

    ident = device_identity(device)
    env = {"zipfast": __version__, "commit": _commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(),
           "host": platform.node(), "python": platform.python_version(), **versions(), **ident}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(cuda_runtime=torch.version.cuda, memory_gib=round(props.total_memory / 2 ** 30, 1),
                   multiprocessors=props.multi_processor_count)
    return env


def build_status(device: torch.device) -> dict:
    """Whether the CUDA module loads (building it when missing and nvcc is found) and what it embeds."""
    from zipfast.ops import build, extension

    out: dict = {"archs": build.cuda_archs()}
    mod, why = extension.cuda_module()
    path = Path(mod.__file__) if mod is not None else None
    if mod is None and device.type == "cuda" and build.find_nvcc():
        try:
            res = build.build(cuda=True)
            path = res.modules.get("_zipfast_cuda")
            if path is not None:
                sys.modules[extension.MODULE] = build.load_module(path)
                extension._state.clear()
                mod, why = extension.cuda_module()
            out["built"] = {"directory": str(res.directory), "cached": res.cached, "seconds": round(res.seconds, 1)}
        except build.BuildError as e:
            why = f"build failed: {str(e)[:500]}"
    out["cuda_module"] = "loaded" if mod is not None else why
    if path is not None:
        try:
            out["embedded"] = build.embedded_images(path)
            out["documented"] = build.documented_images(out["archs"])
            out["embedded_as_documented"] = out["embedded"] == out["documented"]
        except build.BuildError as e:
            out["embedded"] = str(e)
    return out


def selfchecks(device: torch.device, backends=("cuda", "triton")) -> list[dict]:
    """Every registered op × compiled backend: its check run now on `device` (the cache is refreshed)."""
    from zipfast.ops import registry, selfcheck

    registry.ops()  # run the loaders
    rows = []
    for op in registry.ops():
        for backend in backends:
            impl = registry._impls[op].get(backend)
            if impl is None:
                continue
            ok, why = registry._check(impl, device)
            row = {"op": op, "backend": backend, "available": ok}
            if ok:
                start = time.perf_counter()
                try:
                    problem = registry._checks[op](impl.fn, device)
                except Exception as e:
                    problem = f"raised {type(e).__name__}: {str(e)[:300]}"
                row.update(ok=problem is None, why=problem or "", seconds=round(time.perf_counter() - start, 3))
            else:
                row.update(ok=None, why=why)
            rows.append(row)
    selfcheck.forget()
    return rows


def _planted_step(device: torch.device, use_graph: bool | None):
    """A fused ZIP step on the planted tower (4 layers, 256 wide, 10 classes), q = 5, B = 32."""
    from zipfast.engine.batched import make_engine
    from zipfast.data.planted import make_planted_task, planted_model
    from zipfast.spaces.context import ZIPSpace
    from zipfast.engine.step import FusedZIPStep
    from zipfast.engine.towers import ClassPrompts, TextTower

    model, tok = planted_model(0)
    model = model.to(device)
    tower = TextTower(model)
    task = make_planted_task(tower, tok, n_ctx=4, shots=4, test_per_class=2, seed=0)
    prompts = ClassPrompts.build(tower, tok, task.classnames, 4)
    engine = make_engine("torch-batched", tower, prompts, "fp32")
    space = ZIPSpace.create(task.ctx0.float().to(device), 40, 2, torch.Generator().manual_seed(1))
    w0 = space.init_params(torch.Generator().manual_seed(2))
    step = FusedZIPStep(space, engine, w0, seed=7, q=5, batch_size=32, feat_dim=task.train_features.shape[1],
                        use_graph=use_graph)
    return step, task


def _batches(task, n):
    g = torch.Generator().manual_seed(100)
    for _ in range(n):
        idx = torch.randint(0, len(task.train_labels), (32,), generator=g)
        yield task.train_features[idx].float(), task.train_labels[idx]


def trajectory(device: torch.device) -> dict:
    """The fused step for TRAJECTORY_STEPS steps on `device` (graph on CUDA) against the eager
    fused step on the CPU from the same seed: max |Δw| / max |w_cpu|; on CUDA also whether the
    graph passed its first-replay check."""
    from zipfast.ops import registry

    steps = []
    for dev, graph in ((torch.device("cpu"), False), (device, None)):
        step, task = _planted_step(dev, graph)
        for feats, labels in _batches(task, TRAJECTORY_STEPS):
            step(feats.to(dev), labels.to(dev))
        steps.append(step)
    w_cpu, w_dev = steps[0].w, steps[1].w.cpu()
    rel = float((w_dev - w_cpu).abs().max() / w_cpu.abs().max())
    dev_step = steps[1]
    graph_fb = [f for f in registry.fallbacks() if f["op"] == "fused_step"]
    return {"steps": TRAJECTORY_STEPS, "rel_err_w": rel, "rtol": TRAJECTORY_RTOL, "ok": rel <= TRAJECTORY_RTOL,
            "graph": ("trusted" if dev_step.use_graph else "rejected: " + graph_fb[0]["skipped"]["cuda-graph"]
                      if graph_fb else "not used") if device.type == "cuda" else "not used (CPU)"}


def _timed(fn, device: torch.device, n: int) -> float:
    """Mean seconds per call over n calls after one warm-up (CUDA events on CUDA, else the wall clock)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3 / n
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def figures(device: torch.device, n: int = 20, classes=(10, 1000)) -> dict:
    """ZIP step queries/s at each class count (fused step, q = 5, 128 images; ViT-B/16's text tower
    with random weights on CUDA, the planted tower on the CPU); `inference_over_step`: the time of
    one open_clip encode_text pass over the same 10 × C prompts (full 77-token context, the naive
    way) divided by the step's time; kernel launches per step."""
    import open_clip

    from zipfast.engine.batched import make_engine
    from zipfast.data.classnames import EUROSAT
    from zipfast.data.planted import planted_model
    from zipfast.spaces.context import ZIPSpace
    from zipfast.engine.step import FusedZIPStep
    from zipfast.engine.towers import ClassPrompts, TextTower

    out = {"workload": {}}
    if device.type == "cuda":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).to(device).eval()
        tok, m, d, batch = open_clip.get_tokenizer("ViT-B-16-quickgelu"), 8, 500, 128
        out["workload"]["model"] = "ViT-B-16-quickgelu text tower, random weights, fp32"
    else:
        model, tok = planted_model(0)
        m, d, batch = 4, 40, 128
        out["workload"]["model"] = "planted tower (4 layers, 256 wide), fp32"
    tower = TextTower(model)
    for n_cls in classes:
        classnames = list(EUROSAT) if n_cls == len(EUROSAT) else [f"class number {i}" for i in range(n_cls)]
        prompts = ClassPrompts.build(tower, tok, classnames, m)
        engine = make_engine("torch-batched", tower, prompts, "fp32")
        space = ZIPSpace.create(torch.randn(m, tower.width, generator=torch.Generator().manual_seed(0)).to(device)
                                * 0.02, d, 5, torch.Generator().manual_seed(1))
        step = FusedZIPStep(space, engine, space.init_params(torch.Generator().manual_seed(2)), seed=1, q=5,
                            batch_size=batch, feat_dim=tower.embed_dim)
        feats = torch.randn(batch, tower.embed_dim, device=device)
        labels = torch.randint(0, n_cls, (batch,), device=device)
        reps = n if n_cls <= 10 else max(2, n // 5)
        t_step = _timed(lambda: step(feats, labels), device, reps)
        text = tok([f"X {c}." for c in classnames] * 10).to(device)

        def inference():
            with torch.no_grad():
                model.encode_text(text)

        t_inf = _timed(inference, device, reps)
        out[f"classes_{n_cls}"] = {"step_s": t_step, "queries_per_s": 10 / t_step, "pure_inference_s": t_inf,
                                   "inference_over_step": t_inf / t_step, "graph": bool(step.use_graph)}
    out["launches_per_step"] = launches(device)
    return out


def launches(device: torch.device) -> dict:
    """Kernel launches of one eager fused step (CUDA kernels on CUDA; leaf aten ops on the CPU) and of a replay."""
    from torch.profiler import ProfilerActivity, profile

    step, task = _planted_step(device, False)
    feats, labels = next(_batches(task, 1))
    feats, labels = feats.to(device), labels.to(device)
    step(feats, labels)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step(feats, labels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.events()
    if device.type == "cuda":
        kernels = sum(1 for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
        return {"eager_kernels": kernels, "graph_launches": 1}
    leaves = sum(1 for e in events if e.name.startswith("aten::")
                 and not any(c.name.startswith("aten::") for c in e.cpu_children))
    return {"eager_leaf_ops_cpu": leaves, "graph_launches": None}


def _pytest(args: list[str], log: Path, timeout: int) -> dict:
    if not (ROOT / "tests").is_dir():
        return {"skipped": f"no source tree at {ROOT} (run from a checkout of zipfast)"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd), "rc": None, "summary": f"timed out after {timeout} s"}
    log.write_text(res.stdout + res.stderr)
    last = next((ln for ln in reversed(res.stdout.splitlines()) if ln.strip()), "")
    return {"command": " ".join(cmd), "rc": res.returncode, "summary": last.strip("= "), "log": str(log)}


def bench_medians(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {b["fullname"]: {"median_ms": round(b["stats"]["median"] * 1e3, 4),
                            "do_bench_ms": b.get("extra_info", {}).get("do_bench_ms")}
            for b in data.get("benchmarks", [])}


def run(out_dir, dry_run: bool = False, device: str = "cuda", tests: bool = True, log=print) -> dict:
    """Run every check (see the module docstring) and write the record; returns it."""
    if not dry_run and not torch.cuda.is_available():
        raise NoGPUError("verify-gpu needs a CUDA device and torch sees none (torch.cuda.is_available() is False); "
                         "run it on a machine with an NVIDIA GPU, or pass --dry-run to run the CPU halves of the checks")
    from zipfast.env import resolve_device

    dev = torch.device("cpu") if dry_run else resolve_device(device)  # a device that does not exist: exit 2
    if not dry_run and dev.type != "cuda":
        raise NoGPUError(f"verify-gpu checks a CUDA device; --device {device!r} is {dev.type}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    record: dict = {"dry_run": dry_run}
    steps = [("environment", lambda: environment(dev)), ("build", lambda: build_status(dev)),
             ("selfchecks", lambda: selfchecks(dev, ("torch",) if dry_run else ("cuda", "triton"))),
             ("trajectory", lambda: trajectory(dev)),
             ("figures", lambda: figures(dev, 2, (10,)) if dry_run else figures(dev))]
    if tests and not dry_run:
        steps += [("gpu_tests", lambda: _pytest(["-m", "gpu", "tests"], out / "gpu-tests.log", 240)),
                  ("benchmarks", lambda: _pytest(["bench/test_gpu_kernels.py", "bench/test_gpu_prefix_attention.py",
                                                  f"--benchmark-json={out / 'bench-gpu.json'}"], out / "bench-gpu.log",
                                                 150))]
    for name, fn in steps:
        log(f"verify-gpu: {name} …")
        try:
            record[name] = fn()
        except Exception as e:  # one failed check must not lose the others: it is recorded
            record[name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
    if "benchmarks" in record:
        record["benchmarks"]["medians"] = bench_medians(out / "bench-gpu.json")
    record["passed"] = passed(record)
    record["seconds"] = round(time.perf_counter() - start, 1)
    (out / "verify-gpu.json").write_text(json.dumps(record, indent=1, default=str))
    (out / "verify-gpu.md").write_text(markdown(record))
    return record


def passed(record: dict) -> bool:
    """Every self-check of an available backend passed, the trajectory agreed, no step errored,
    and the GPU tests (when run) exited 0."""
    if any(isinstance(v, dict) and "error" in v for v in record.values()):
        return False
    checks = [r for r in record.get("selfchecks", []) if r.get("available")]
    tests = record.get("gpu_tests", {})
    return all(r["ok"] for r in checks) and bool(record.get("trajectory", {}).get("ok")) and tests.get("rc", 0) == 0


def markdown(record: dict) -> str:
    env = record.get("environment", {})
    lines = [f"# zipfast verify-gpu{' (dry run, CPU halves only)' if record.get('dry_run') else ''}", "",
             f"- device: {env.get('device')} (compute capability {env.get('capability')}), driver {env.get('driver')}",
             f"- zipfast {env.get('zipfast')} at commit {env.get('commit')}, torch {env.get('torch')}, "
             f"date {env.get('date')}",
             f"- result: **{'all checks passed' if record.get('passed') else 'SOME CHECKS FAILED'}** "
             f"in {record.get('seconds')} s", "", "## Self-checks", "", "| op | backend | result |", "|---|---|---|"]
    for r in record.get("selfchecks", []) if isinstance(record.get("selfchecks"), list) else []:
        res = "unavailable: " + r["why"] if r["ok"] is None else "pass" if r["ok"] else "FAIL: " + r["why"]
        lines.append(f"| {r['op']} | {r['backend']} | {res} |")
    for name in ("build", "trajectory", "figures", "gpu_tests", "benchmarks"):
        if name in record:
            lines += ["", f"## {name}", "", "```json", json.dumps(record[name], indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"
