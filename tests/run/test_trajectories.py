"""Every method's trajectory is pinned: short fixed-seed CLI runs equal tests/fixtures/trajectories.json.

Recorded by the pre-refactor code at commit 5261919, before the trainers were merged (issue 15); the
refactor must not change any method's trajectory, so DO NOT REGENERATE the JSON after it. (To
record it on the pre-refactor code: `HF_HUB_OFFLINE=1 python tests/test_trajectories.py`, where it lay then.)

Each run goes through the public CLI (`zipfast train ... --device cpu --precision fp32`) on one CPU
thread (fp32 reductions depend on the thread count). Recorded: the per-step losses of log.jsonl, the
report's steps, queries and test accuracy, and of the final point (the vector the method stands for,
read from the final checkpoint) its first 8 values and its float64 sum. All are compared exactly:
floats round-trip through JSON unchanged. Re-pointing after a module move touches at most
`train` and `final_point` (the v1 key path of each method's point in its checkpoint).
"""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from fixtures.cli_args import COMMON, SMALL_ZIP_SPACE, images, method_opts as _opts, planted

FIXTURE = Path(__file__).parents[1] / "fixtures" / "trajectories.json"
PLANTED, IMAGES = planted(1), images(2)


# method -> its train argv (without --output-dir); official KEY VALUE pairs last
RUNS = {
    "zip": ["--method", "zip", *PLANTED, "--budget", "50", *COMMON, *SMALL_ZIP_SPACE],
    "zo-sgd": ["--method", "zo-sgd", *_opts(pairs=2), *PLANTED, "--budget", "24", *COMMON, *SMALL_ZIP_SPACE],
    # paper preset (the default): 3 stage-1 generations (6 rounds), then stage 2 with Z-pruning every 2 steps
    "sharpzo": ["--method", "sharpzo", *_opts(dim=16, popsize=4, change_point=3, grad_dirs=1, prune_interval=2),
                *PLANTED, "--budget", "30", *COMMON, "TRAINER.ZIP.N_CTX", "4"],
    "zsclip": ["--method", "zsclip", *PLANTED, "--budget", "10", *COMMON, "TRAINER.ZIP.N_CTX", "4"],
    "bptvlm": ["--method", "bptvlm", *_opts(intrinsic_dim_l=40, intrinsic_dim_v=30, pop_size=5), *IMAGES,
               "--budget", "40", *COMMON],
    "bar": ["--method", "bar", *_opts(q=2), *IMAGES, "--budget", "18", *COMMON],
    # synthetic-images' own small random encoder (encoder=none would build vit-mae-base: ~20 s on a 2-core CPU)
    "blackvip": ["--method", "blackvip", *_opts(sp_avg=2), *IMAGES, "--budget", "24", *COMMON],
}
# the prompt's point in the checkpoint (layout v2 stores it at "point" for every method; it equals the
# v1 layouts' "w", "optimizer/best_x", "optimizer/w" and "optimizer/spsa/w" the trajectories were recorded from)
POINT_KEY = {"zip": "point", "zo-sgd": "point", "sharpzo": "point", "zsclip": None, "bptvlm": "point",
             "bar": "point", "blackvip": "point"}


def train(method: str, out: Path) -> None:
    """`zipfast train <RUNS[method]> --output-dir OUT` (official KEY VALUE pairs stay last)."""
    from zipfast.cli import main

    argv = RUNS[method]
    i = next((j for j, a in enumerate(argv) if a.startswith("TRAINER.")), len(argv))
    rc = main(["train", *argv[:i], "--output-dir", str(out), *argv[i:]])
    assert rc == 0, (method, rc)


def final_point(method: str, out: Path) -> torch.Tensor | None:
    """The final point [dim] as float32 (BPT-VLM's is float64 in the checkpoint and used as float32)."""
    from zipfast.run.checkpoint import flatten_state, read_checkpoint

    key = POINT_KEY[method]
    if key is None:
        return None
    return flatten_state(read_checkpoint(out / "checkpoint.safetensors").state)[1][key].float()


def summary(method: str, out: Path) -> dict:
    """Run `method` into `out` and summarise its trajectory."""
    train(method, out)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    report = json.loads((out / "report.json").read_text())
    point = final_point(method, out)
    return {
        "argv": RUNS[method],
        "losses": [r["loss"] for r in log],
        "queries": [r["queries"] for r in log],
        "steps": report["steps"],
        "test_acc": report["test_acc"],
        "point_dim": None if point is None else point.numel(),
        "point_head": None if point is None else point[:8].tolist(),
        "point_sum": None if point is None else point.double().sum().item(),
    }


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.mark.parametrize("method", list(RUNS))
def test_the_trajectory_is_unchanged(method, tmp_path, zipfast_cache):
    expected = json.loads(FIXTURE.read_text())[method]
    got = json.loads(json.dumps(summary(method, tmp_path / "run")))  # the JSON round trip of the record
    assert got["argv"] == expected["argv"], "RUNS changed: the recorded trajectory is of another run"
    for key in ("steps", "queries", "losses", "test_acc", "point_dim", "point_head", "point_sum"):
        assert got[key] == expected[key], key


def write() -> None:
    """Record trajectories.json (pre-refactor code only; see the module docstring)."""
    import tempfile

    import zipfast

    assert Path(zipfast.__file__).resolve().is_relative_to(Path(__file__).resolve().parents[2]), zipfast.__file__
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory(prefix="zipfast-trajectories-") as tmp:
        os.environ["ZIPFAST_CACHE"] = str(Path(tmp) / "cache")
        for method in RUNS:
            out[method] = summary(method, Path(tmp) / method)
            print(method, {k: v for k, v in out[method].items() if k != "argv"}, file=sys.stderr)
    FIXTURE.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's zipfast
    write()
