"""Launches per ZIP step on CPU (PyTorch profiler): reference step, engine step, fused step.

    python bench/launches.py     →  bench/results/launches_cpu.json and a markdown table

A "launch" is a leaf operator the profiler records (an aten op with no aten op inside it: one
kernel on a GPU). Each zipfast custom op (zipfast::candidates_, clip_loss, spsa_update, ...)
is also counted as ONE launch with its CPU internals excluded, which is what the step runs
on CUDA, where the op is one Triton/CUDA kernel; the CPU column counts its internals too.
Workload: the planted text tower (4 layers, 256 wide), EuroSAT's 10 names, m = 4, d = 40,
r = 2, q = 5 (K = 10), 128 image features, fp32.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipfast.engine.batched import make_engine  # noqa: E402
from zipfast.data.planted import make_planted_task, planted_model  # noqa: E402
from zipfast.optim import SPSA  # noqa: E402
from zipfast.spaces.context import ZIPSpace  # noqa: E402
from zipfast.engine.step import FusedZIPStep  # noqa: E402
from zipfast.engine.towers import ClassPrompts, TextTower  # noqa: E402

Q, B = 5, 128


def count(prof) -> dict:
    """{'cpu': leaf aten ops, 'gpu_equivalent': leaf aten ops outside custom ops + custom ops}."""
    events = prof.events()
    cpu = gpu = 0
    for ev in events:
        anc, inside = ev.cpu_parent, False
        while anc is not None:
            if anc.name.startswith("zipfast::"):
                inside = True
                break
            anc = anc.cpu_parent
        if ev.name.startswith("zipfast::"):
            gpu += 0 if inside else 1
            continue
        if ev.name.startswith("aten::") and not any(c.name.startswith("aten::") for c in ev.cpu_children):
            cpu += 1
            gpu += 0 if inside else 1
    return {"cpu": cpu, "gpu_equivalent": gpu}


def main():
    torch.manual_seed(0)
    model, tok = planted_model(0)
    tower = TextTower(model)
    task = make_planted_task(tower, tok, n_ctx=4, shots=16, test_per_class=2, seed=0)
    prompts = ClassPrompts.build(tower, tok, task.classnames, 4)
    space = ZIPSpace.create(task.ctx0.float(), 40, 2, torch.Generator().manual_seed(1))
    w0 = space.init_params(torch.Generator().manual_seed(2))
    feats, labels = task.train_features[:B].float(), task.train_labels[:B]
    engines = {"reference": make_engine("torch-reference", tower, prompts, "fp32"),
               "batched": make_engine("torch-batched", tower, prompts, "fp32")}

    def plain(engine, perturbation):
        opt = SPSA(w0.clone(), "spsa-clip", Q, seed=7, perturbation=perturbation)

        def step():
            cand = opt.ask(1000)
            losses, accs = engine.losses(space.contexts(cand), feats, labels)
            opt.tell(losses, accs)
        return step

    fused = FusedZIPStep(space, engines["batched"], w0, seed=7, q=Q, batch_size=B, feat_dim=feats.shape[1])
    cases = {"reference step (official draws, one pass per candidate, 77 positions)": plain(engines["reference"], "official"),
             "engine step (batched engine, ask/tell)": plain(engines["batched"], "philox"),
             "fused step (zipfast.engine.step, custom ops)": lambda: fused(feats, labels)}
    rows = []
    for name, fn in cases.items():
        fn()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        rows.append({"case": name, **count(prof)})
    out = {"machine": platform.processor() or platform.machine(), "date": dt.datetime.now(dt.timezone.utc).isoformat(),
           "torch": torch.__version__, "workload": "planted tower 4x256, 10 classes, q=5, B=128, fp32", "rows": rows}
    path = Path(__file__).parent / "results" / "launches_cpu.json"
    path.write_text(json.dumps(out, indent=1))
    print("| step | leaf ops on CPU | launches with fused ops as one kernel |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['cpu']} | {r['gpu_equivalent']} |")


if __name__ == "__main__":
    main()
