"""Session fixtures and pytest-benchmark hooks of the throughput benchmarks (`make bench`).

The workload (W and its scalings) and the per-result record are defined in bench_workload.py.
The hooks add machine info (CPU model, cores, torch version, date, load average) and, once all
results are in, the machine's sustained matmul rate (the `floor` group, measured in the same
run) and per result the floor time (FLOPs per step / rate) and measured/floor.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform

import pytest
import torch

from bench_workload import MODEL, N_CTX, SEED, classnames
from report import floor_rates  # one definition, shared with the report
from zipfast.models import load_clip
from zipfast.engine.towers import ClassPrompts, TextTower

_LOAD_AT_START = None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def clip():
    """(model, tokenizer): random-init ViT-B-16 after torch.manual_seed(0); loaded once."""
    torch.manual_seed(SEED)
    model, tokenizer, _ = load_clip(MODEL, "none")
    return model, tokenizer


@pytest.fixture(scope="session")
def tower(clip) -> TextTower:
    return TextTower(clip[0])


@pytest.fixture(scope="session")
def class_prompts(clip, tower):
    """n_cls → (ClassPrompts.build(tower, tokenizer, names, 8), name source); cached per n."""
    cache = {}

    def get(n_cls: int):
        if n_cls not in cache:
            names, source = classnames(n_cls)
            cache[n_cls] = (ClassPrompts.build(tower, clip[1], names, N_CTX), source)
        return cache[n_cls]

    return get


# --------------------------------------------------------------------------- pytest-benchmark hooks


def pytest_sessionstart(session):
    global _LOAD_AT_START
    out = session.config.getoption("benchmark_json", None)
    if out:  # pytest-benchmark does not create the folder of --benchmark-json
        path = out if isinstance(out, (str, os.PathLike)) else out.name
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        _LOAD_AT_START = os.getloadavg()
    except OSError:
        _LOAD_AT_START = None


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    out = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
    except OSError:
        pass
    return out


def pytest_benchmark_update_machine_info(config, machine_info):
    import open_clip

    info = _cpuinfo()
    machine_info["cpu_model"] = info.get("model name") or platform.processor() or platform.machine()
    machine_info["cpu_family_model"] = f"family {info.get('cpu family', '?')}, model {info.get('model', '?')}"
    flags = set(info.get("flags", "").split())
    machine_info["cpu_simd"] = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["torch_version"] = torch.__version__
    machine_info["open_clip_version"] = getattr(open_clip, "__version__", "?")
    machine_info["date"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    machine_info["cuda"] = torch.cuda.is_available()
    try:
        machine_info["loadavg_start"] = list(_LOAD_AT_START) if _LOAD_AT_START else None
        machine_info["loadavg_end"] = list(os.getloadavg())
    except OSError:
        pass



def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Add the floor rates, and per result the floor time and measured/floor."""
    rates = floor_rates(output_json["benchmarks"])
    output_json["floor_rates_gflops"] = {k: v / 1e9 for k, v in rates.items()}
    for b in output_json["benchmarks"]:
        ei = b["extra_info"]
        if "flops_per_step" in ei and ei.get("precision") in rates:
            floor_s = ei["flops_per_step"] / rates[ei["precision"]]
            ei["floor_s"] = floor_s
            ei["measured_over_floor"] = b["stats"]["median"] / floor_s
