"""Every `zipfast …` command in README.md and docs/*.md runs, as written, shrunk only by the flags
docs/getting-started.md presents for trying a command in seconds (SHRINK below must match it).

The commands run page by page, in order, in one folder (an `eval` reads the checkpoint a `train`
above it wrote; a command on several pages runs once); the placeholders the docs use are the data the tests generate: `/data/eurosat` an image
folder of class folders (any `/data/<name>`), `$DATA` a root of the official layouts with the official configs beside it,
`/path/to/vit-mae-base` a small saved ViT-MAE. A command that needs a GPU is skipped on a machine
without one, naming why. A new documented command is picked up by itself.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

import paper_data
from methods.test_image_methods import BAR_YAML
from paper_runs import image_trainer_configs, official_configs
from zipfast.cli import main

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(?:bash|sh|console|shell)?\n(.*?)```", re.S)

# The flags docs/getting-started.md ("Trying a documented command in seconds") gives, per command.
TINY_MODEL = ["--model", "zipfast-tiny224", "--pretrained", "none"]
SHRINK = {
    "train": [*TINY_MODEL, "--budget", "20", "--shots", "2", "--test-per-class", "2"],
    "train-official": ["--pretrained", "none"],  # the official surface: the model and budget are KEY VALUE pairs
    "compare": ["--budget", "20", "--seeds", "1", "--eval-every", "10"],
    "bench-paper": ["--datasets", "eurosat", "--seeds", "1", "--shots", "2", *TINY_MODEL],
    "demo": ["--budget", "20"],
    "sweep": ["--budget", "20", "--seeds", "1", "--eval-every", "10", "--max-runs", "2"],
}
SHRINK_PAIRS = ["MODEL.BACKBONE.NAME", "zipfast-tiny224", "TRAINER.BASIC.MAX_API_CALLS", "20",
                "DATASET.NUM_SHOTS", "2"]
GPU_ONLY = ("verify-gpu --out",)  # the record of a real GPU (docs/gpu.md); --dry-run runs anywhere


def documented(page: Path) -> list[str]:
    """The `zipfast …` lines of a page's shell blocks (continuations joined, comments and the
    optional `[…]` parts dropped)."""
    out = []
    for block in FENCE.findall(page.read_text()):
        lines, i = block.splitlines(), 0
        while i < len(lines):
            line = lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
            cmd = re.sub(r"\[[^\]]*\]", "", re.sub(r"\s+#.*$", "", line)).strip()
            if cmd.startswith("zipfast ") and not any(w.endswith(":") for w in cmd.split()[:3]):
                out.append(cmd)  # (a line like "zipfast compare: stopped by …" is output the docs show)
    return out


PAGE_COMMANDS = [(p, documented(p)) for p in PAGES if documented(p)]


def shrunk(argv: list[str]) -> list[str]:
    """argv with the documented shrink flags: before the first KEY VALUE pair, which stay last."""
    cmd = argv[0]
    official = cmd == "train" and "--root" in argv
    key = next((i for i, a in enumerate(argv) if re.fullmatch(r"[A-Z_]+(\.[A-Z_0-9]+)+", a)), len(argv))
    extra = SHRINK.get("train-official" if official else cmd, [])
    if cmd == "compare" and "--data" in argv and argv[argv.index("--data") + 1] not in ("planted", "synthetic-images"):
        extra = [*extra, *TINY_MODEL]
    pairs = SHRINK_PAIRS if official or (cmd == "bench-paper") else []
    if cmd == "bench-paper" and argv[1] in ("cross-dataset", "ood"):
        extra = [a if a != "eurosat" else ("eurosat" if argv[1] == "cross-dataset" else "imagenetv2") for a in extra]
    if cmd == "bench-paper":
        pairs = ["TRAINER.BASIC.MAX_API_CALLS", "20"]
    return [*argv[:key], *extra, *argv[key:], *pairs]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(folder to run in, placeholder → path): the data, configs and encoder the docs' commands name."""
    from zipfast.data import synthetic

    base = tmp_path_factory.mktemp("docs")
    data = base / "DATA"
    paper_data.eurosat(data)
    paper_data.imagenet(data)
    paper_data.ood(data)
    official_configs(base)
    image_trainer_configs(base, {"BAR": BAR_YAML})  # the official BAR yaml
    for name in ("eurosat", "my_images"):  # the image folders of class folders the docs call /data/<name>
        shutil.copytree(synthetic.folder(), base / "images" / name)
    from transformers import ViTMAEConfig, ViTMAEModel

    torch.manual_seed(0)
    mae = base / "vit-mae-base"
    ViTMAEModel(ViTMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=224, patch_size=32, mask_ratio=0.0)).save_pretrained(mae)
    return base, {"$DATA": str(data), "/path/to/vit-mae-base": str(mae), "/data/": str(base / "images") + "/"}


def test_every_page_with_commands_is_covered():
    names = {p.name for p, _ in PAGE_COMMANDS}
    assert {"README.md", "getting-started.md", "data-and-protocols.md", "methods.md"} <= names
    assert sum(len(c) for _, c in PAGE_COMMANDS) >= 20


_ran: set[str] = set()  # a command documented on several pages runs once (all pages share one folder)


@pytest.mark.parametrize("page,commands", PAGE_COMMANDS, ids=[p.name for p, _ in PAGE_COMMANDS])
def test_documented_commands_run(page, commands, world, monkeypatch, capsys):
    base, placeholders = world
    monkeypatch.chdir(base)
    for cmd in commands:
        if any(g in cmd for g in GPU_ONLY) and not torch.cuda.is_available():
            continue  # needs a GPU: docs/gpu.md says so; `verify-gpu --dry-run` covers the command itself
        for placeholder, path in placeholders.items():
            cmd = cmd.replace(placeholder, path)
        if cmd in _ran:
            continue
        argv = shrunk(shlex.split(cmd)[1:])
        rc = main(argv)
        out = capsys.readouterr()
        assert rc == 0, f"{page.name}: `{cmd}` exited {rc} (run as {shlex.join(argv)}):\n{out.err[-2000:]}"
        _ran.add(cmd)
