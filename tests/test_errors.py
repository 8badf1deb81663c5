"""One error contract: arbitrary input gives a valid config or the documented error (never another
exception); the CLI exits 2 naming the bad value, 1 with a traceback for bugs; --debug shows all."""

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zipfast.cli
import zipfast.commands
import zipfast.evaluate.text
from zipfast import ZIPTrainer
from zipfast.run.checkpoint import CHECKPOINT_NAME
from zipfast.cli import main
from zipfast.config import OFFICIAL_KEYS, ConfigError, TrainConfig, cfg_to_train_config, load_official
from zipfast.data.imagefolder import DatasetError, FewShotImageFolder
from zipfast.data.sources import derive_seed
from zipfast.data.verify import verify_images
from zipfast.errors import UserError
from zipfast.models import load_clip

from conftest import OFFICIAL_YAML, write_tiny_image_folder  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------ property tests

_KEYS = sorted([k for k in OFFICIAL_KEYS.values()] + ["TRAINER.NAME", "OPTIM.MAX_EPOCH", "RESUME", "USE_CUDA",
                                                       "DATASET.NAME", "TRAINER.ZIP.P_EPS", "MODEL.INIT_WEIGHTS"])
_scalar = st.one_of(st.integers(1, 64), st.floats(0, 1), st.integers(-2**70, 2**70), st.floats(), st.none(),
                    st.booleans(), st.text(max_size=12),
                    st.sampled_from(["spsa-gc", "fp32", "bicubic", "(224, 224)", "[1, 2]", "nan", "inf", "1e400",
                                     "ViT-B/16", "a photo of a", "[0.5, 0.5, 0.5]", "{", "-1", "10**9"]))
_value = st.one_of(_scalar, st.lists(_scalar, max_size=6), st.dictionaries(st.text(max_size=4), _scalar, max_size=2))
_key = st.one_of(st.sampled_from(_KEYS), st.text(max_size=20))


def _to_config(cfg):
    tc = cfg_to_train_config(cfg)
    assert isinstance(tc, TrainConfig)
    return tc


@FUZZ
@given(pairs=st.lists(st.tuples(_key, st.one_of(_value.map(str), st.text(max_size=20))), max_size=6))
def test_key_value_parser_gives_config_or_config_error(pairs):
    opts = [x for kv in pairs for x in kv]
    try:
        _to_config(load_official(None, opts))
    except ConfigError:
        pass


@FUZZ
@given(tree=st.dictionaries(_key, _value, max_size=8))
def test_official_yaml_loader_gives_config_or_config_error(tree):
    import yaml

    nested = {}
    for key, value in tree.items():
        node, parts = nested, (key.split(".") if key else [key])
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[parts[-1]] = value
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cfg.yaml"
        path.write_text(yaml.safe_dump(nested, allow_unicode=True))
        try:
            _to_config(load_official(path))
        except ConfigError:
            pass


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.sampled_from([OFFICIAL_YAML, "a: [", "!!python/object:os.system {}",
                                                               "- 1\n- 2", "SEED: 99999999999999999999999"])))
def test_arbitrary_yaml_text_gives_config_or_config_error(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cfg.yaml"
        path.write_text(text)
        try:
            _to_config(load_official(path))
        except ConfigError:
            pass


_FIELDS = [f for f in TrainConfig.__dataclass_fields__]


@FUZZ
@given(values=st.dictionaries(st.one_of(st.sampled_from(_FIELDS), st.text(max_size=8)), _value, max_size=6))
def test_config_validation_gives_config_or_config_error(values):
    try:
        tc = TrainConfig.from_dict(values)
    except ConfigError:
        return
    assert tc.validate() is tc


_names = st.text(alphabet="abcXY_ .-", min_size=1, max_size=6).filter(lambda s: s.strip(". ") == s and s)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(_names, st.lists(st.tuples(_names, st.sampled_from([".png", ".jpg", ".txt", ""]),
                                                       st.sampled_from(["png", "garbage", "empty"])), max_size=4),
                            max_size=4),
       split=st.booleans(), shots=st.integers(-1, 3), seed=st.integers(0, 2**64), cap=st.one_of(st.none(),
                                                                                              st.integers(-1, 3)))
def test_image_folder_reader_gives_dataset_or_dataset_error(tree, split, shots, seed, cap):
    from PIL import Image

    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "data"
        for cls, files in tree.items():
            folder = root / ("train" if split else "") / cls
            folder.mkdir(parents=True, exist_ok=True)
            for stem, ext, kind in files:
                p = folder / f"{stem}{ext}"
                if kind == "png":
                    Image.new("RGB", (5, 4), (1, 2, 3)).save(p, format="PNG")
                else:
                    p.write_bytes(b"" if kind == "empty" else b"\x89PNG garbage")
        root.mkdir(exist_ok=True)
        try:
            ds = FewShotImageFolder.from_root(root, shots=shots, seed=seed, test_per_class=cap)
        except DatasetError:
            return
        assert len(ds.classnames) == len(ds.folders) >= 1
        try:
            verify_images([p for p, _ in ds.train + ds.test], progress=False)
        except DatasetError as e:
            assert "cannot read image file" in str(e)


# ------------------------------------------------------------------------------ named failures


@pytest.mark.parametrize("argv, named", [
    (["--device", "tpu"], "'tpu'"),
    (["--device", "meta"], "'meta' holds no data"),
    (["TRAINER.ZIP.INTRINSIC_DIM", "100000000"], "TRAINER.ZIP.INTRINSIC_DIM"),
    (["--seed", str(10**30)], "SEED"),
    (["SEED", str(2**64)], "SEED"),
    (["TRAINER.ZIP.N_CTX", "200", "TRAINER.ZIP.INTRINSIC_DIM", "2000", "TRAINER.ZIP.RANK", "1"], "N_CTX"),
    (["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS"),
    (["INPUT.TRANSFORMS", "['random_flip', 'colorjitter']"], "INPUT.TRANSFORMS"),
])
def test_bad_values_exit_2_naming_them(tmp_path, capsys, argv, named):
    flags = [a for a in argv if a.startswith("--") or argv.index(a) % 2 and argv[argv.index(a) - 1].startswith("--")]
    opts = [a for a in argv if a not in flags]
    rc = main(["train", "--data", "planted", "--budget", "20", "--no-progress", "--output-dir", str(tmp_path / "o"),
               *flags, *opts])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert named in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_exits_2(capsys, tmp_path):
    assert main(["train", "--data", "planted", "--device", "cuda", "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'cuda'" in err and "no CUDA GPU" in err


def test_internal_error_exits_1_with_traceback_and_debug_shows_all(monkeypatch, capsys, tmp_path):
    def boom(args):
        raise RuntimeError("an invariant broke")

    monkeypatch.setattr(zipfast.commands, "info", boom)
    parser = zipfast.cli.parser
    monkeypatch.setattr(zipfast.cli, "parser", lambda: _with_fn(parser(), "info", boom))
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "an invariant broke" in err and "internal error" in err

    monkeypatch.undo()
    missing = str(tmp_path / "nowhere")
    assert main(["train", "--data", missing, "--output-dir", str(tmp_path / "o")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", "train", "--data", missing, "--output-dir", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "DatasetError" in err and missing in err


def test_a_user_error_is_one_line_whatever_its_message(monkeypatch, capsys):
    def multi(args):
        raise UserError("weights file x.pt is for another model:\n  text pos_embed width changed\n\n  (a, b)")

    parser = zipfast.cli.parser
    monkeypatch.setattr(zipfast.cli, "parser", lambda: _with_fn(parser(), "info", multi))
    assert main(["info"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ["zipfast info: error: weights file x.pt is for another model: text pos_embed width "
                                "changed (a, b)"]


def _with_fn(ap, cmd, fn):
    ap._subparsers._group_actions[0].choices[cmd].set_defaults(fn=fn)
    return ap


def test_every_error_type_is_a_user_error():
    from zipfast.run.checkpoint import CheckpointError, CheckpointMismatchError
    from zipfast.errors import DeviceError, OutputDirError
    from zipfast.models import ModelLoadError
    from zipfast.engine.towers import UnsupportedModelError
    from zipfast.run.trainer import NonFiniteLossError

    for cls in (ConfigError, DatasetError, CheckpointError, CheckpointMismatchError, ModelLoadError, DeviceError,
                OutputDirError, UnsupportedModelError, NonFiniteLossError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError), cls


# ------------------------------------------------------------------------------ fail before training


@pytest.mark.parametrize("method", ["zip", "bar"])  # a text-side and an image-side method: one check
def test_corrupt_test_image_fails_before_the_first_step(method, tmp_path, capsys, monkeypatch):
    import zipfast.evaluate.image

    root = write_tiny_image_folder(tmp_path / "data")
    bad = FewShotImageFolder.from_root(root, shots=2, seed=1).test[-1][0]
    Path(bad).write_bytes(Path(bad).read_bytes()[:60])  # truncated PNG
    steps = []
    for module in (zipfast.evaluate.text, zipfast.evaluate.image):
        real = module.batch_indices
        monkeypatch.setattr(module, "batch_indices", lambda *a, real=real: steps.append(a) or real(*a))
    out = tmp_path / "out"
    rc = main(["train", "--data", str(root), "--model", "zipfast-tiny", "--pretrained", "none", "--shots", "2",
               "--batch-size", "4", "--budget", "20", "--no-progress", "--output-dir", str(out),
               "--method", method, *(["--method-opt", "q=1"] if method == "bar" else [])])
    assert rc == 2 and steps == []
    err = capsys.readouterr().err
    assert bad in err and "cannot read image file" in err
    assert not (out / CHECKPOINT_NAME).exists() and not (out / "log.jsonl").exists()


# ------------------------------------------------------------------------------ the smaller items


def test_seeds_2_32_apart_differ_and_small_seeds_keep_their_streams():
    assert derive_seed(7, 10) != derive_seed(7 + 2**32, 10)
    assert derive_seed(2**40 + 3, 1, 5) != derive_seed(3, 1, 5)
    # unchanged for seeds < 2^32, so existing runs and their checkpoints keep their trajectories
    state = np.random.SeedSequence([7, 10]).generate_state(2, dtype=np.uint32)
    assert derive_seed(7, 10) == int(state[0]) << 31 ^ int(state[1])
    values = {derive_seed(s, k) for s in (0, 1, 2**32, 2**32 + 1, 2**63 - 1) for k in (0, 1)}
    assert len(values) == 10


def test_resume_with_a_budget_below_the_spent_queries_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--data", "planted", "--no-progress", "--output-dir", str(out), "TRAINER.ZIP.N_CTX", "4",
            "TRAINER.ZIP.INTRINSIC_DIM", "40", "TRAINER.ZIP.RANK", "2"]
    assert main(base[:1] + ["--budget", "20"] + base[1:]) == 0
    capsys.readouterr()
    assert main(base[:1] + ["--budget", "10", "--resume", str(out / CHECKPOINT_NAME)] + base[1:]) == 2
    err = capsys.readouterr().err
    assert "MAX_API_CALLS" in err and "budget) 10 is below the 20 queries" in err


@pytest.mark.parametrize("force", [None, 288, 336], ids=["32px", "288px", "336px"])
def test_python_api_takes_the_image_size_from_the_model(tiny_image_folder, tmp_path, force):
    """The docs' API example (docs/getting-started.md) with a model whose input is not 224 px (config left at 224)."""
    import open_clip

    if force is None:
        model, tokenizer, _ = load_clip("zipfast-tiny", "none")
    else:
        model = open_clip.create_model("zipfast-tiny", pretrained=None, force_image_size=force).eval()
        tokenizer = open_clip.get_tokenizer("zipfast-tiny")
    cfg = TrainConfig(model="zipfast-tiny", pretrained="none", dataset=str(tiny_image_folder), shots=2, seed=1,
                      budget=10, batch_size=4, device="cpu")
    data = FewShotImageFolder.from_root(cfg.dataset, shots=cfg.shots, seed=cfg.seed)
    trainer = ZIPTrainer(model, data.classnames, cfg, data, tokenizer=tokenizer, output_dir=tmp_path / "run",
                         progress=False)
    report = trainer.fit()
    size = force or 32
    assert trainer.config.image_size == report["config"]["image_size"] == size
    assert report["adjustments"] == [f"image_size 224 -> {size} (the model's input size)"]
    assert 0 <= report["test_acc"] <= 100 and math.isfinite(report["train_loss"])


def test_transforms_and_num_workers_act(tiny_image_folder):
    from zipfast.data.transforms import views

    paths = [str(p) for p in sorted(Path(tiny_image_folder).rglob("*.png"))[:3]]
    common = dict(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    default = views(paths, True, generator=g(), **common)
    threaded = views(paths, True, generator=g(), workers=2, **common)
    assert torch.equal(default, threaded)  # DATALOADER.NUM_WORKERS: same values, decoded in threads
    plain = views(paths, True, generator=g(), choices=("resize",), **common)
    assert plain.min() >= 0 and plain.max() <= 1  # no normalize
    assert not torch.equal(views(paths, True, generator=g(), choices=("resize", "normalize"), **common), default)
    test_raw = views(paths, False, choices=("random_resized_crop",), **common)
    assert test_raw.min() >= 0 and test_raw.max() <= 1
    assert os.cpu_count()
