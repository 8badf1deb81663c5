"""Regenerate every measured figure the docs quote, on the current commit, and say which.

    .venv/bin/python bench/regenerate_docs.py [--only demo,planted,images] [--threads N]

Each figure lives in the docs between `<!-- measured:NAME -->` and `<!-- /measured:NAME -->`
markers; this script reruns the documented command behind it and rewrites what lies between
them, headed by the command, commit, date, machine and threads. The compare runs also write
docs/compare_<task>.{md,csv,png}. Run it on a quiet machine: queries/s are the machine's.

- demo: `zipfast demo` (README.md, docs/getting-started.md, docs/performance.md)
- planted: `zipfast compare` with its defaults (docs/methods.md)
- images: the documented `zipfast compare --data synthetic-images …` run (docs/methods.md; ~20 min)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
IMAGES_ARGS = ["--data", "synthetic-images", "--seeds", "1,2,3", "--budget", "600", "--batch-size", "32",
               "--eval-every", "50", "--targets", "40,60,80", "--device", "cpu"]


def zipfast(args: list[str], threads: int | None) -> str:
    cmd = [sys.executable, "-m", "zipfast.cli", *args, "--no-progress"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        sys.exit(f"`{shlex.join(cmd)}` failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return run.stdout


def provenance(command: str, threads: int | None) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    # the code, not the docs this script itself rewrites
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "zipfast", "csrc", "bench",
                            "setup.py", "pyproject.toml"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"`{command}` at commit {commit}{' (with local changes)' if dirty else ''}, "
            f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()} with "
            f"{os.cpu_count()} CPUs (load {load:.1f} at the start), "
            f"{'--threads ' + str(threads) if threads else 'default threads'}; "
            "written by `bench/regenerate_docs.py`")


def replace(path: Path, name: str, body: str) -> None:
    """Rewrite what lies between the `measured:name` markers of path (an error if they are missing)."""
    text = path.read_text()
    pattern = re.compile(rf"(<!-- measured:{name} -->)(.*?)(<!-- /measured:{name} -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"{path} has no <!-- measured:{name} --> … <!-- /measured:{name} --> markers")
    path.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(3), text))


def demo(threads):
    where = provenance("zipfast demo", threads)  # the commit and load the run starts from
    out = zipfast(["demo"], threads)
    before = re.search(r"test accuracy before: +([\d.]+)%", out).group(1)
    after = re.search(r"test accuracy after: +([\d.]+)%", out).group(1)
    qps = re.search(r"([\d.]+) queries/s", out).group(1)
    train = re.search(r"training time ([\d.]+) s", out).group(1)
    lines = "\n".join(l for l in out.splitlines() if l.startswith(("test accuracy", "queries:")))
    replace(ROOT / "README.md", "demo", f"{before} % → {after} %, {qps} queries/s")
    replace(DOCS / "getting-started.md", "demo", f"\nMeasured by {where}:\n\n```\n{lines}\n```\n")
    replace(DOCS / "performance.md", "demo", f"{qps} queries/s, training time {train} s; {where}")


def compare(task: str, args: list[str], threads):
    where = provenance(shlex.join(["zipfast", "compare", *args]), threads)
    with tempfile.TemporaryDirectory() as tmp:
        zipfast(["compare", *args, "--output-dir", tmp], threads)
        for ext in ("md", "csv", "png"):
            shutil.copy(Path(tmp) / f"compare.{ext}", DOCS / f"compare_{task}.{ext}")
    table = (DOCS / f"compare_{task}.md").read_text().strip()
    replace(DOCS / "methods.md", f"compare-{task}", f"\nMeasured by {where}.\n\n{table}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="demo,planted,images")
    ap.add_argument("--threads", type=int, default=None, help="passed to every command (default: zipfast's)")
    a = ap.parse_args()
    jobs = {"demo": lambda: demo(a.threads), "planted": lambda: compare("planted", [], a.threads),
            "images": lambda: compare("images", IMAGES_ARGS, a.threads)}
    for name in a.only.split(","):
        if name not in jobs:
            sys.exit(f"--only: {name!r} is not one of {', '.join(jobs)}")
        t0 = time.perf_counter()
        jobs[name]()
        print(f"{name}: regenerated in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
