"""The image-side baselines side by side on one image-folder task (what `zipfast compare` runs for them).

`run_image_method` trains one method for one seed and records test accuracy every
`eval_every` queries (evaluations cost no queries). `python -m zipfast.image_compare` runs
BPT-VLM, BAR and BlackVIP (and ZIP on the same images) × seeds on a generated image folder
(`data.pixels.write_synthetic_image_folder`) with a random-init tiny CLIP (`zipfast-tiny224`)
and BlackVIP's encoder randomly initialised from a small ViT-MAE config. Nothing is
downloaded; the models are random, so the numbers exercise the pipeline and the query
accounting, they do not rank the methods.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .compare import EvalCurve
from .config import TrainConfig
from .image_config import method_config
from .image_trainer import ImagePromptTrainer

SMALL_MAE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=224,
                 patch_size=32)


def run_image_method(method: str, model, tokenizer, data, config: TrainConfig, method_cfg=None, encoder=None,
                     eval_every: int = 0, progress: bool = False) -> dict:
    """→ {"method", "seed", "report", "curve": [(queries, test accuracy %)]}."""
    tr = ImagePromptTrainer(method, model, data.classnames, config, data, method_cfg, tokenizer=tokenizer,
                            encoder=encoder, progress=progress)
    curve = EvalCurve(eval_every)
    curve.start(tr)
    if eval_every:  # every = 0: only the start and the end
        tr.step_hooks.append(curve)
    t0 = time.perf_counter()
    report = tr.fit()
    report["wall_s"] = time.perf_counter() - t0
    curve.finish(tr, report["test_acc"])
    return {"method": method, "seed": config.seed, "report": report, "curve": curve.points}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--methods", default="bptvlm,bar,blackvip")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--output", default="runs/image_compare")
    args = ap.parse_args(argv)
    from transformers import ViTMAEConfig

    from .data.imagefolder import FewShotImageFolder
    from .data.pixels import write_synthetic_image_folder
    from .data.planted import planted_model
    from .prompters.blackvip import load_coordinator_encoder

    out = Path(args.output)
    root = write_synthetic_image_folder(out / "data", n_classes=4, per_class=24, size=48, seed=0)
    model, tok = planted_model(0, name="zipfast-tiny224")
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        data = FewShotImageFolder.from_root(root, shots=8, seed=seed)
        for method in args.methods.split(","):
            size = 194 if method == "bar" else 224
            cfg = TrainConfig(model="zipfast-tiny224", pretrained="none", budget=args.budget, batch_size=16, shots=8,
                              seed=seed, image_size=size, precision="fp32", device="cpu", sp_avg=1)
            mc = {"bptvlm": dict(intrinsic_dim_l=200, intrinsic_dim_v=200), "bar": {},
                  "blackvip": dict(src_dim=1568)}[method]
            enc = load_coordinator_encoder("vit-mae-base", "none", seed=seed, config=ViTMAEConfig(**SMALL_MAE)) \
                if method == "blackvip" else None
            r = run_image_method(method, model, tok, data, cfg, method_config(method, **mc), enc, args.eval_every)
            print(json.dumps({k: r[k] for k in ("method", "seed", "curve")} | {"wall_s": round(r["report"]["wall_s"], 1)}))
            results.append(r)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    rows = ["| method | seed | queries | test acc start → end (%) | wall s |", "|---|---:|---:|---|---:|"]
    for r in results:
        rows.append(f"| {r['method']} | {r['seed']} | {r['report']['queries']} | {r['curve'][0][1]:.1f} → "
                    f"{r['curve'][-1][1]:.1f} | {r['report']['wall_s']:.1f} |")
    (out / "table.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
