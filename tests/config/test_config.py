"""Tests for zipfast/config.py: official config files and overrides, validation, flags."""

import importlib.util
import json
import math

import pytest

from zipfast.config import (
    ConfigError,
    TrainConfig,
    cfg_to_train_config,
    default_cfg,
    load_official,
    merge_flags,
    official_backbone,
    official_model_name,
)

# Only the official-config path needs yacs; TrainConfig tests run without it.
needs_yacs = pytest.mark.skipif(importlib.util.find_spec("yacs") is None, reason="yacs not installed")

from conftest import OFFICIAL_YAML  # noqa: E402

# The trailing overrides of scripts/few_shot/ZIP.sh.
FEW_SHOT_OPTS = (
    "DATASET.SUBSAMPLE_CLASSES all DATASET.NUM_SHOTS 16 TRAINER.BASIC.MAX_API_CALLS 5000 "
    "TRAINER.ZIP.N_CTX 8 TRAINER.ZIP.INTRINSIC_DIM 500 TRAINER.ZIP.RANK 5"
).split()


@pytest.fixture
def official_yaml(tmp_path):
    path = tmp_path / "vit_b16.yaml"
    path.write_text(OFFICIAL_YAML)
    return path


@pytest.fixture
def eurosat_yaml(tmp_path):
    path = tmp_path / "eurosat.yaml"
    path.write_text('DATASET:\n  NAME: "EuroSAT"\n')
    return path


def _write(tmp_path, text, name="extra.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ official path


@needs_yacs
def test_official_yaml_and_few_shot_script_map_to_paper_settings(official_yaml, eurosat_yaml):
    cfg = load_official(official_yaml, FEW_SHOT_OPTS, dataset_config_file=eurosat_yaml)
    assert cfg.INPUT.SIZE == (224, 224)
    assert cfg.MODEL.BACKBONE.NAME == "ViT-B/16"
    assert cfg.DATASET.NAME == "EuroSAT"

    tc = cfg_to_train_config(cfg, dataset="/data", seed=2, output_dir="out/seed2")
    assert tc.model == "ViT-B-16-quickgelu"  # OpenAI's network (tests/test_models.py)
    assert tc.pretrained == "openai"
    assert tc.n_ctx == 8
    assert tc.ctx_init == ""
    assert tc.intrinsic_dim == 500
    assert tc.rank == 5
    assert tc.opt_type == "spsa-clip"
    assert tc.sp_avg == 5
    assert tc.spsa_params == (1.0, 0.01, 0.01, 0.4, 0.1)
    assert tc.moms == 0.8
    assert tc.budget == 5000
    assert tc.batch_size == 128
    assert tc.test_batch_size == 128
    assert tc.num_workers == 8
    assert tc.shots == 16
    assert tc.seed == 2
    assert tc.image_size == 224
    assert tc.interpolation == "bicubic"
    assert tc.pixel_mean == (0.48145466, 0.4578275, 0.40821073)
    assert tc.pixel_std == (0.26862954, 0.26130258, 0.27577711)
    assert tc.transforms == ("random_resized_crop", "random_flip", "normalize")
    assert tc.precision == "auto"  # PREC unset: per-device default (official GPU runs autocast fp16)
    assert tc.dataset == "/data"
    assert tc.output_dir == "out/seed2"
    assert tc.log_every == 20
    assert tc.checkpoint_every == 50
    assert tc.device == "auto"


@needs_yacs
def test_default_cfg_matches_train_config_defaults():
    cfg = default_cfg()
    assert cfg.TRAINER.BASIC.MAX_API_CALLS == 5000
    assert cfg.TRAINER.BASIC.OPT_TYPE == "spsa-clip"
    assert cfg.TRAINER.ZIP.INTRINSIC_DIM == 500
    assert cfg.TRAINER.ZIP.SPSA_PARAMS == [1.0, 0.01, 0.01, 0.4, 0.1]
    assert cfg.TRAINER.ZIP.MOMS == 0.8
    assert cfg.MODEL.BACKBONE.NAME == "ViT-B/16"
    assert cfg.DATASET.NUM_SHOTS == 16
    assert cfg.SEED == 1
    assert cfg_to_train_config(cfg) == TrainConfig()


@needs_yacs
def test_opts_parse_like_yacs():
    cfg = load_official(opts=["TRAINER.ZIP.SPSA_PARAMS", "[2.0, 0.02, 0.03, 0.5, 0.2]",
                              "INPUT.SIZE", "[256, 256]", "TRAINER.ZIP.MOMS", "0",
                              "OUTPUT_DIR", "2024", "TRAINER.ZIP.CTX_INIT", "a photo of a",
                              "USE_CUDA", "False"])
    assert cfg.TRAINER.ZIP.SPSA_PARAMS == [2.0, 0.02, 0.03, 0.5, 0.2]
    assert cfg.INPUT.SIZE == (256, 256)  # list coerced to the default's tuple
    assert cfg.TRAINER.ZIP.MOMS == 0.0 and isinstance(cfg.TRAINER.ZIP.MOMS, float)
    assert cfg.OUTPUT_DIR == "2024"  # a path that looks like a number stays a string
    tc = cfg_to_train_config(cfg)
    assert (tc.image_size, tc.ctx_init, tc.context_tokens, tc.device) == (256, "a photo of a", 4, "cpu")


@needs_yacs
def test_dataset_name_used_when_no_root(eurosat_yaml):
    assert cfg_to_train_config(load_official(dataset_config_file=eurosat_yaml)).dataset == "EuroSAT"


@needs_yacs
def test_flags_override_yaml(official_yaml):
    cfg = load_official(official_yaml, FEW_SHOT_OPTS)
    tc = cfg_to_train_config(cfg, budget=1000, sp_avg=2, num_workers=None, precision="bf16")
    assert (tc.budget, tc.sp_avg, tc.precision) == (1000, 2, "bf16")
    assert tc.num_workers == 8  # None = flag not given: the yaml's value stands


def test_model_names():
    # OpenAI's spelling names OpenAI's network (QuickGELU); open_clip names stay open_clip's
    assert official_model_name("ViT-B/16") == "ViT-B-16-quickgelu"
    assert official_model_name("ViT-L/14@336px") == "ViT-L-14-336-quickgelu"
    assert official_model_name("RN50") == "RN50" and official_model_name("ViT-B-16") == "ViT-B-16"
    assert official_backbone("RN50") == "RN50-quickgelu"  # an official MODEL.BACKBONE.NAME is always OpenAI's
    assert official_backbone("zipfast-tiny") == "zipfast-tiny"


# ------------------------------------------------------------------------------ official errors


@needs_yacs
def test_unknown_key_in_opts():
    with pytest.raises(ConfigError, match=r"unknown config key 'TRAINER\.ZIP\.FOO'"):
        load_official(opts=["TRAINER.ZIP.FOO", "1"])
    with pytest.raises(ConfigError, match=r"did you mean 'TRAINER\.ZIP\.RANK'"):
        load_official(opts=["TRAINER.ZIP.RANKK", "1"])


@needs_yacs
def test_unknown_key_in_yaml(tmp_path):
    path = _write(tmp_path, "TRAINER:\n  ZIP:\n    FOO: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'TRAINER\.ZIP\.FOO'.*extra\.yaml"):
        load_official(path)


@needs_yacs
def test_odd_opts():
    with pytest.raises(ConfigError, match="odd number"):
        load_official(opts=["TRAINER.ZIP.N_CTX", "8", "TRAINER.ZIP.RANK"])


@needs_yacs
def test_type_mismatch_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'TRAINER\.ZIP\.N_CTX'.*'eight'"):
        load_official(opts=["TRAINER.ZIP.N_CTX", "eight"])


@needs_yacs
def test_section_is_not_a_value():
    with pytest.raises(ConfigError, match=r"'TRAINER\.ZIP' .*section"):
        load_official(opts=["TRAINER.ZIP", "1"])


@needs_yacs
def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_official(missing)


@needs_yacs
def test_nan_in_opts_names_field():
    cfg = load_official(opts=["TRAINER.ZIP.SPSA_PARAMS", "[1.0, nan, 0.01, 0.4, 0.1]"])
    with pytest.raises(ConfigError, match=r"TRAINER\.ZIP\.SPSA_PARAMS\[1\] \(c\) must be a finite number"):
        cfg_to_train_config(cfg)


@needs_yacs
def test_zero_budget_needs_an_explicit_one():
    cfg = load_official(opts=["TRAINER.BASIC.MAX_API_CALLS", "0"])
    with pytest.raises(ConfigError, match=r"TRAINER\.BASIC\.MAX_API_CALLS"):
        cfg_to_train_config(cfg)
    assert cfg_to_train_config(cfg, budget=100).budget == 100


@needs_yacs
@pytest.mark.parametrize("key, value", [
    ("TRAINER.NAME", "BAR"),
    ("DATASET.SUBSAMPLE_CLASSES", "base"),
    ("OPTIM.MAX_EPOCH", "10"),
    ("TEST.FINAL_MODEL", "best_val"),
])
def test_unsupported_official_values(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*not supported"):
        cfg_to_train_config(load_official(opts=[key, value]))


@needs_yacs
def test_non_square_input_size():
    with pytest.raises(ConfigError, match=r"INPUT\.SIZE"):
        cfg_to_train_config(load_official(opts=["INPUT.SIZE", "(224, 160)"]))


# ------------------------------------------------------------------------------ TrainConfig


def test_defaults_validate():
    assert TrainConfig().validate() == TrainConfig()


def test_negative_sp_avg():
    with pytest.raises(ConfigError) as info:
        TrainConfig(sp_avg=-1).validate()
    assert str(info.value) == "TRAINER.BASIC.SP_AVG (sp_avg) must be a positive integer, got -1"


def test_budget_smaller_than_one_step():
    with pytest.raises(ConfigError, match=r"budget 7 is smaller than one step \(2\*sp_avg = 10 queries\)"):
        TrainConfig(budget=7).validate()


def test_nan_via_flags():
    with pytest.raises(ConfigError, match=r"TRAINER\.ZIP\.MOMS \(moms\) must be a finite number"):
        merge_flags(TrainConfig(), moms=math.nan)
    with pytest.raises(ConfigError, match=r"\(gamma\) must be a finite number"):
        merge_flags(TrainConfig(), spsa_params=[1.0, 0.01, 0.01, 0.4, math.inf])


@pytest.mark.parametrize("changes, field", [
    ({"n_ctx": 0}, "n_ctx"),
    ({"intrinsic_dim": 4}, "intrinsic_dim"),
    ({"rank": 63}, "rank"),  # 500 // 8 = 62
    ({"batch_size": 2.0}, "batch_size"),
    ({"shots": -1}, "shots"),
    ({"spsa_params": (1.0, 0.0, 0.01, 0.4, 0.1)}, "(c)"),
    ({"spsa_params": (1.0, 0.01, 0.01, 0.4)}, "spsa_params"),
    ({"moms": 1.0}, "moms"),
    ({"opt_type": "adam"}, "opt_type"),
    ({"precision": "fp8"}, "precision"),
    ({"interpolation": "lanczos"}, "interpolation"),
    ({"transforms": ("normalize", "colorjitter")}, "transforms"),
    ({"image_size": 0}, "image_size"),
    ({"pixel_std": (0.2, 0.0, 0.2)}, "pixel_std"),
    ({"test_per_class": 0}, "test_per_class"),
    ({"ctx_init": "a photo of a", "intrinsic_dim": 3}, "intrinsic_dim"),
])
def test_invalid_values_name_their_field(changes, field):
    with pytest.raises(ConfigError, match=field.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**changes).validate()


def test_valid_edge_values():
    TrainConfig(shots=0, checkpoint_every=0, moms=0.0, rank=62, budget=10, test_per_class=5).validate()


def test_round_trip():
    tc = TrainConfig(ctx_init="a photo of a", spsa_params=(2.0, 0.02, 0.03, 0.5, 0.2),
                     test_per_class=10, transforms=("resize", "center_crop", "normalize"))
    d = json.loads(json.dumps(tc.to_dict()))
    assert d["spsa_params"] == [2.0, 0.02, 0.03, 0.5, 0.2]
    assert TrainConfig.from_dict(d) == tc


def test_from_dict_unknown_key():
    with pytest.raises(ConfigError, match="'sp_avgg'"):
        TrainConfig.from_dict({"sp_avgg": 3})


def test_merge_flags():
    tc = merge_flags(TrainConfig(), budget=200, seed=None, dataset="planted")
    assert (tc.budget, tc.seed, tc.dataset) == (200, 1, "planted")
    with pytest.raises(ConfigError, match="'lr'"):
        merge_flags(TrainConfig(), lr=0.1)
