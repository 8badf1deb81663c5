"""Sizes whose memory cannot exist are refused (exit 2) before any allocation, naming the value and the
GiB it implies; ordinary sizes still run."""

import time

import pytest
import torch

from zipfast import env
from zipfast.cli import main
from zipfast.errors import ConfigError

CAP = 16 * 2 ** 30  # a machine of at most 16 GiB free: the refusals below hold on any machine


@pytest.fixture
def at_most_16_gib(monkeypatch):
    real = getattr(env, "available_memory", lambda: CAP)
    monkeypatch.setattr(env, "available_memory", lambda: min(real() or CAP, CAP), raising=False)


PLANTED = ["train", "--data", "planted", "--budget", "20", "--device", "cpu", "--no-progress"]
IMAGES = ["--model", "zipfast-tiny224", "--pretrained", "none", "--budget", "10", "--shots", "2", "--device", "cpu",
          "--no-progress", "--method", "bptvlm"]


def _refused(argv, out, capsys, *words):
    start = time.perf_counter()
    assert main([*argv, "--output-dir", str(out)]) == 2
    took = time.perf_counter() - start
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("zipfast train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in (*words, "GiB", "available here"):
        assert w in lines[0], (w, lines[0])
    assert not out.exists()  # the refused run leaves no output folder
    assert took < 60, took  # refused before allocating (model loading aside), not after swapping
    return lines[0]


@pytest.mark.parametrize("flag, value, gib", [("--test-per-class", "1000000000", "9,536.7 GiB"),
                                               ("--shots", "100000000", "953.7 GiB")])
def test_planted_task_sizes_beyond_memory(tmp_path, capsys, at_most_16_gib, flag, value, gib):
    _refused([*PLANTED, flag, value], tmp_path / "out", capsys, f"{flag} / ", value, "10 classes", gib)


def test_sharpzo_dim_beyond_memory(tmp_path, capsys, at_most_16_gib):
    _refused([*PLANTED, "--method", "sharpzo", "--method-opt", "dim=100000000"], tmp_path / "out", capsys,
             "dim=100000000", "762.9 GiB", "lower dim")


@pytest.mark.parametrize("opt, words", [("intrinsic_dim_l=1000000000", ("intrinsic_dim_l=1000000000", "1,192.1 GiB")),
                                        ("tokens_v=100000", ("tokens_v=100000", "47.7 GiB", "lower tokens_v"))])
def test_bptvlm_projections_beyond_memory(tiny_image_folder, tmp_path, capsys, at_most_16_gib, opt, words):
    _refused(["train", "--data", str(tiny_image_folder), *IMAGES, "--method-opt", opt], tmp_path / "out", capsys, *words)


def test_ordinary_sizes_still_run(tiny_image_folder, tmp_path, capsys):
    assert main([*PLANTED, "--test-per-class", "5", "--shots", "4", "--output-dir", str(tmp_path / "a")]) == 0
    assert main([*PLANTED, "--method", "sharpzo", "--method-opt", "dim=64", "--output-dir", str(tmp_path / "b")]) == 0
    assert main(["train", "--data", str(tiny_image_folder), *IMAGES, "--method-opt", "intrinsic_dim_l=50",
                 "--method-opt", "intrinsic_dim_v=50", "--output-dir", str(tmp_path / "c")]) == 0


def test_check_memory_reads_the_machine_and_a_gpu(monkeypatch):
    have = env.available_memory()
    assert have is None or have > 0
    env.check_memory("x=1", 1024, "lower x")  # a KiB always fits
    with pytest.raises(ConfigError, match=r"^y=3 needs at least 2,048.0 GiB, more than the 1.0 GiB of memory available "
                                          r"here; lower y$"):
        monkeypatch.setattr(env, "available_memory", lambda: 2 ** 30)
        env.check_memory("y=3", 2 ** 41, "lower y")
    monkeypatch.setattr(env, "available_memory", lambda: None)  # unknown: no refusal
    env.check_memory("z=1", 2 ** 60, "lower z")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 ** 31, 2 ** 34))
    with pytest.raises(ConfigError, match=r"3.0 GiB, more than the 2.0 GiB of free GPU memory on cuda"):
        env.check_memory("w=2", 3 * 2 ** 30, "lower w", "cuda")
    env.check_memory("w=2", 3 * 2 ** 30, "lower w", "cpu")
