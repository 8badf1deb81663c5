"""No silent substitution: fp16 on CPU and an unsupported block type are logged once and
listed in the engine's (and the run report's) `fallbacks`."""

import logging

import pytest
import torch

from zipfast import env
from zipfast.engine.batched import BatchedEngine
from zipfast.config import TrainConfig
from zipfast.data.planted import make_planted_task, planted_model
from zipfast.engine.text import ReferenceEngine
from zipfast.models import load_clip
from zipfast.engine.towers import ClassPrompts, TextTower

NAMES = ["forest", "sea or lake", "a"]


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model, tok, _ = load_clip("zipfast-tiny", "none")
    return TextTower(model), tok


def test_fp16_on_cpu_runs_bf16_and_says_so(tiny, caplog):
    tower, tok = tiny
    prompts = ClassPrompts.build(tower, tok, NAMES, 4)
    env._logged.discard(("precision", "fp16", "cpu"))
    with caplog.at_level(logging.INFO, logger="zipfast"):
        engines = [BatchedEngine(tower, prompts, precision="fp16"), ReferenceEngine(tower, prompts, precision="fp16")]
    for e in engines:
        assert e.precision == "bf16"  # reported as what runs, not as what was asked
        assert [f for f in e.fallbacks if f["what"] == "precision"] == [
            {"what": "precision", "requested": "fp16", "used": "bf16",
             "why": env.precision_substitution("fp16", torch.device("cpu"))}]
    assert engines[0].dtype == torch.bfloat16
    warned = [r for r in caplog.records if "precision fp16 requested on cpu" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert not any(f["what"] == "precision" for f in BatchedEngine(tower, prompts, precision="bf16").fallbacks)


def test_unsupported_block_turns_shared_prefix_off_loudly(tiny, caplog):
    tower, tok = tiny
    prompts = ClassPrompts.build(tower, tok, NAMES, 4)
    attn = tower.transformer.resblocks[1].attn
    attn.register_parameter("in_proj_bias", None)  # still a valid block for open_clip, not for the fast pass
    with caplog.at_level(logging.INFO, logger="zipfast"):
        e = BatchedEngine(tower, prompts)
        BatchedEngine(tower, prompts)
    assert not e.shared_prefix
    (fb,) = e.fallbacks  # no prefix_attention op either: the shared-prefix pass is off
    assert fb["what"] == "shared_prefix" and fb["used"] is False and "text block 1" in fb["why"]
    lines = [r for r in caplog.records if "shared-prefix pass off" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and lines[0].name == "zipfast.engine"
    ctx = torch.randn(2, 4, tower.width, generator=torch.Generator().manual_seed(0)) * 0.05
    ref = ReferenceEngine(tower, prompts).text_features(ctx)
    assert ((e.text_features(ctx) - ref).abs().max() / ref.abs().max()) <= 1e-5


def test_run_report_lists_fallbacks(tmp_path):
    from zipfast import ZIPTrainer

    model, tok = planted_model(0)
    task = make_planted_task(TextTower(model), tok, n_ctx=4, shots=2, test_per_class=2, seed=0)
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=10, seed=0,
                      batch_size=8, checkpoint_every=0, precision="fp16", device="cpu")
    report = ZIPTrainer(model, task.classnames, cfg, task, tokenizer=tok, progress=False).fit()
    assert report["precision"] == "bf16"
    kinds = {f["what"]: f for f in report["fallbacks"]}
    assert {"what": "precision", "requested": "fp16", "used": "bf16"}.items() <= kinds["precision"].items()
    # the shared-prefix attention op ran on torch because no Triton/CUDA target exists on CPU
    assert kinds["op prefix_attention"]["used"] == "torch" and "triton" in kinds["op prefix_attention"]["why"]
