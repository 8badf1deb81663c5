"""Noise of the zeroth-order signal L⁺ − L⁻ in each precision against fp32 (issue: pick the
default precision per device by measurement).

On the planted task with ZIP defaults (m=8, d=500, r=5, c_k = c = 0.01 at step 1), draw
pairs of segmented-uniform perturbations at the initial w and at a partly trained w, and
compare d = L(w + c z) − L(w − c z) computed by the fp32 reference engine with the same
difference from the batched engine in each precision. Reported per precision:
  noise/signal = median |d_p − d_fp32| / median |d_fp32|
  sign agreement of d_p and d_fp32 (%), and cos(ĝ_p, ĝ_fp32) of the q=5 averaged estimate.
Writes bench/results/precision_noise_<device>.json.

    python bench/precision_noise.py [--device cpu] [--pairs 100]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform

import torch

from zipfast import ZIPTrainer
from zipfast import reference as ref
from zipfast.engine.batched import BatchedEngine
from zipfast.config import TrainConfig
from zipfast.data.planted import make_planted_task, planted_model
from zipfast.engine.text import ReferenceEngine
from zipfast.io import save_json
from zipfast.engine.towers import TextTower


def differences(engine, space, w, z, ck, feats, labels):
    cand = ref.antithetic_candidates(w, z, ck)
    losses, _ = engine.losses(space.contexts(cand), feats, labels)
    q = z.shape[0]
    return losses[:q] - losses[q:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--precisions", default="bf16,fp16")
    args = ap.parse_args()
    dev = torch.device(args.device)
    model, tok = planted_model(0)
    model = model.to(dev)
    task = make_planted_task(TextTower(model), tok, seed=0)
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=300, seed=1,
                      device=args.device, checkpoint_every=0)
    tr = ZIPTrainer(model, task.classnames, cfg, task, tokenizer=tok, progress=False)
    w_init = tr.w.clone()
    tr.fit()  # 300 queries: a partly trained point
    points = {"initial w": w_init, "after 300 queries": tr.w.clone()}
    feats, labels = task.train_features[:128].to(dev), task.train_labels[:128].to(dev)
    fp32 = ReferenceEngine(tr.tower, tr.prompts)
    engines = {"fp32 batched": BatchedEngine(tr.tower, tr.prompts)}
    for p in args.precisions.split(","):
        engines[p] = BatchedEngine(tr.tower, tr.prompts, precision=p)
    g = torch.Generator().manual_seed(0)
    ck = 0.01
    results = {}
    for where, w in points.items():
        z = ref.segmented_uniform(args.pairs, tr.space.dim, g).to(dev)
        base = differences(fp32, tr.space, w, z, ck, feats, labels)
        g32 = torch.stack([ref.spsa_estimate(base[i:i + 5], torch.zeros(5, device=dev), z[i:i + 5], ck)
                           for i in range(0, args.pairs - 4, 5)])
        row = {"median |d_fp32|": base.abs().median().item()}
        for name, eng in engines.items():
            d = differences(eng, tr.space, w, z, ck, feats, labels)
            gp = torch.stack([ref.spsa_estimate(d[i:i + 5], torch.zeros(5, device=dev), z[i:i + 5], ck)
                              for i in range(0, args.pairs - 4, 5)])
            cos = torch.nn.functional.cosine_similarity(gp, g32, dim=-1)
            row[name] = {
                "noise_to_signal": ((d - base).abs().median() / base.abs().median()).item(),
                "sign_agreement_pct": 100 * (torch.sign(d) == torch.sign(base)).float().mean().item(),
                "grad_cosine_median": cos.median().item(),
                "engine_dtype": str(eng.dtype),
            }
        results[where] = row
    out = {"device": str(dev), "cpu": platform.processor() or platform.machine(),
           "date": datetime.date.today().isoformat(), "pairs": args.pairs, "c_k": ck, "results": results}
    path = f"bench/results/precision_noise_{dev.type}.json"
    save_json(out, path)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
