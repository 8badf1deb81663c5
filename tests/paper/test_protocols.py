"""The four protocols end to end on the tiny model, their tables from known runs, the Ray path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import paper_data
from zipfast.cli import main
from zipfast.paper.protocols import Plan, run_protocol
from zipfast.paper.tables import read_accuracy

OPTS = ["TRAINER.BASIC.MAX_API_CALLS", "20", "DATALOADER.TRAIN_X.BATCH_SIZE", "8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("DATA")
    paper_data.eurosat(root)
    paper_data.imagenet(root)
    paper_data.ood(root)
    return root


def plan(protocol, data, out, weights, **kw):
    return Plan(protocol, data, out, opts=OPTS, flags=["--model", "zipfast-tiny", "--pretrained", str(weights)], **kw)


def test_few_shot_protocol_runs_tabulates_plots_and_skips(data, weights, tmp_path):
    p = plan("few-shot", data, tmp_path, weights, datasets=["eurosat"], seeds=(1, 2), methods=("zip", "zsclip"),
             eval_every=10)
    summary = run_protocol(p, main, progress=False)
    assert summary["ran"] == 3 and summary["failed"] == []
    accs = [read_accuracy(tmp_path / f"basic/ZIP/eurosat/nctx8/seed{s}") for s in (1, 2)]
    assert all(a is not None for a in accs)
    md = (tmp_path / "tables" / "few-shot.md").read_text()
    import numpy as np

    assert f"| ZIP | {np.mean(accs):.1f} ± {np.std(accs):.1f} | {np.mean(accs):.1f} |" in md
    assert "| ZeroshotCLIP |" in md and "EuroSAT" in md
    assert (tmp_path / "tables" / "few-shot.csv").read_text().splitlines()[0] == \
        "Method,EuroSAT,EuroSAT_mean,EuroSAT_std,EuroSAT_n,Average,Average_mean,Average_std,Average_n"
    png = Path(summary["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = [json.loads(x) for x in (tmp_path / "basic/ZIP/eurosat/nctx8/seed1/curve.jsonl").read_text().splitlines()]
    assert [c["queries"] for c in curve] == [0, 10, 20]
    again = run_protocol(p, main, progress=False)
    assert again["ran"] == 0 and again["skipped"] == 3


def test_base2new_cross_dataset_and_ood_protocols(data, weights, tmp_path):
    s = run_protocol(plan("base2new", data, tmp_path, weights, datasets=["eurosat"], seeds=(1,)), main, progress=False)
    assert s["ran"] == 2 and not s["failed"]
    b = read_accuracy(tmp_path / "base2new/base/ZIP/eurosat/nctx8/seed1")
    n = read_accuracy(tmp_path / "base2new/new/ZIP/eurosat/nctx8/seed1")
    h = 0.0 if b + n == 0 else 2 * b * n / (b + n)
    assert f"| EuroSAT | {b:.1f} ± 0.0 | {n:.1f} ± 0.0 | {h:.1f} |" in (tmp_path / "tables/base2new.md").read_text()
    s = run_protocol(plan("cross-dataset", data, tmp_path, weights, datasets=["eurosat"], seeds=(1,)), main, progress=False)
    assert s["ran"] == 2 and not s["failed"]
    s = run_protocol(plan("ood", data, tmp_path, weights, datasets=["imagenetv2", "imagenet_a"], seeds=(1,)),
                     main, progress=False)
    assert s["ran"] == 2 and s["skipped"] == 1 and not s["failed"]  # the ImageNet prompt is reused
    header = (tmp_path / "tables/ood.csv").read_text().splitlines()[0].split(",")
    assert header[::4] == ["Method", "ImageNet_n", "ImageNetV2_n", "ImageNetA_n", "Average_n"]
    assert header[1::4] == ["ImageNet", "ImageNetV2", "ImageNetA", "Average"]


def _fake_run(folder: Path, acc: float, eval_only=False):
    folder.mkdir(parents=True)
    end = "" if eval_only else "Finish training\n"
    (folder / "log.txt").write_text(f"* accuracy: 99.0%\n{end}=> result\n* total: 10\n* accuracy: {acc:.1f}%\n")


def test_tables_from_known_runs(tmp_path):
    p = Plan("base2new", tmp_path, tmp_path, datasets=["eurosat", "dtd"], seeds=(1, 2))
    known = {("eurosat", 1): (80.0, 60.0), ("eurosat", 2): (82.0, 62.0), ("dtd", 1): (50.0, 40.0), ("dtd", 2): (54.0, 44.0)}
    for (d, s), (b, n) in known.items():
        _fake_run(p.train_dir(d, s, "base"), b)
        _fake_run(p.eval_dir(d, s, role="new"), n, eval_only=True)
    rows = p.tables()[0].rows
    assert rows[0] == ["EuroSAT", "81.0 ± 1.0", "61.0 ± 1.0", f"{2 * 81 * 61 / 142:.1f}"]
    assert rows[1] == ["DescribableTextures", "52.0 ± 2.0", "42.0 ± 2.0", f"{2 * 52 * 42 / 94:.1f}"]
    assert rows[2] == ["Average", "66.5", "51.5", f"{2 * 66.5 * 51.5 / 118:.1f}"]
    f = Plan("few-shot", tmp_path, tmp_path / "fs", datasets=["eurosat", "dtd"], seeds=(1, 2, 3))
    for d, accs in (("eurosat", (70.0, 72.0, 74.0)), ("dtd", (40.0, 40.0, 43.0))):
        for s, a in zip((1, 2, 3), accs):
            _fake_run(f.train_dir(d, s), a)
    assert f.tables()[0].rows == [["ZIP", "72.0 ± 1.6", "41.0 ± 1.4", "56.5"]]
    missing = Plan("few-shot", tmp_path, tmp_path / "none", datasets=["eurosat"], seeds=(1,))
    assert missing.tables()[0].rows == [["ZIP", "–", "–"]]


def test_ray_runner_on_a_local_instance(data, weights, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'zipfast[ray]')")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        s = run_protocol(plan("few-shot", data, tmp_path, weights, datasets=["eurosat"], seeds=(1,)), main, ray="local",
                         progress=False)
    finally:
        ray.shutdown()
    assert s["runner"] == "ray" and s["ran"] == 1 and not s["failed"]
    assert read_accuracy(tmp_path / "basic/ZIP/eurosat/nctx8/seed1") is not None


@pytest.mark.parametrize("argv,named", [
    (["--seeds", "x"], "--seeds takes comma-separated integers, got 'x'"),
    (["--seeds", "1,1"], "--seeds: give each seed once"),
    (["--methods", "garbage"], "unknown method(s) 'garbage'"),
    (["--cpus-per-job", "-1"], "--cpus-per-job -1"),
    (["--gpus-per-job", "-0.5"], "--gpus-per-job -0.5"),
])
def test_bench_paper_refuses_bad_arguments_before_any_job(argv, named, tmp_path, capsys):
    from zipfast.cli import main

    assert main(["bench-paper", "few-shot", "--root", str(tmp_path), "--output", str(tmp_path / "out"),
                 "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # no job started


def test_a_protocol_whose_runs_fail_on_user_errors_exits_2(tmp_path, capsys):
    from zipfast.cli import main

    # the dataset's folder is there but holds no split file: every run is refused with exit 2, so the
    # protocol exits 2, not 1 (a bug)
    (tmp_path / "data" / "eurosat").mkdir(parents=True)
    assert main(["bench-paper", "few-shot", "--root", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
                 "--datasets", "eurosat", "--seeds", "1", "--no-progress"]) == 2
    assert (tmp_path / "out/basic/ZIP/eurosat/nctx8/seed1/log.txt").is_file()  # the job ran, and failed
    assert "Traceback" not in capsys.readouterr().err
