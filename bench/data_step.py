"""The data part vs the image-tower part of one real-data training step.

ViT-B/16 (random weights), a minibatch of 128 images of 224 px; source images are 128 JPEGs of
500×375 (a typical CoOp image). Times (median over rounds, seconds):
  pil     : decode + PIL random-resized-crop/flip + normalise, per image (the reference path)
  tensor  : batched crop/resize/flip + normalise from images decoded once (the fast path)
  tower   : model.encode_image on the 128 views
Usage: python bench/data_step.py [--rounds 3] [--out bench/results/data_step_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zipfast.data.gpu_augment import N_UNIFORMS, DecodedImages, crop_resize_flip, sample_boxes
from zipfast.data.transforms import CLIP_MEAN, CLIP_STD, views


def timed(fn, rounds):
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tower-rounds", type=int, default=2)
    ap.add_argument("--out", default="bench/results/data_step_cpu.json")
    args = ap.parse_args()
    import open_clip

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(128):
            p = Path(d) / f"{i}.jpg"
            Image.fromarray(rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)).save(p, quality=90)
            paths.append(p)
        g = torch.Generator().manual_seed(0)
        t_pil = timed(lambda: views(paths, True, 224, CLIP_MEAN, CLIP_STD, generator=g), args.rounds)
        t0 = time.perf_counter()
        store = DecodedImages.decode(paths, max_side=448)
        t_decode = time.perf_counter() - t0
        idx = torch.arange(128)

        def fast():
            u = torch.rand(128, N_UNIFORMS, generator=g, dtype=torch.float64)
            return crop_resize_flip(store, idx, sample_boxes(store.heights, store.widths, u), 224, CLIP_MEAN, CLIP_STD)

        t_tensor = timed(fast, args.rounds)
        x = fast()
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-16").eval()
        with torch.no_grad():
            t_tower = timed(lambda: model.encode_image(x), args.tower_rounds)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": rev, "torch": torch.__version__,
           "batch": 128, "size": 224, "source_image": "500x375 JPEG",
           "pil_s": round(t_pil, 4), "tensor_s": round(t_tensor, 4), "decode_once_s": round(t_decode, 4),
           "tower_s": round(t_tower, 3),
           "pil_share_of_step": round(t_pil / (t_pil + t_tower), 4),
           "tensor_share_of_step": round(t_tensor / (t_tensor + t_tower), 4)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
