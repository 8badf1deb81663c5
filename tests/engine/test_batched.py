"""BatchedEngine (zipfast/batched.py) against ReferenceEngine (zipfast/engine.py)."""

import pytest
import torch

from zipfast import ZIPTrainer
from zipfast.engine.batched import BatchedEngine, make_engine
from zipfast.config import TrainConfig
from zipfast.data.planted import make_planted_task, planted_model
from zipfast.engine.text import ReferenceEngine
from zipfast.models import load_clip
from zipfast.engine.towers import ClassPrompts, TextTower

MIXED = ["Annual Crop Land", "Forest", "sea_or_lake", "a", "Herbaceous Vegetation Land with a very long name"]
VARIANTS = {
    "batched": dict(truncate=False, shared_prefix=False),
    "truncated": dict(shared_prefix=False),
    "shared-prefix": dict(),
    "chunked": dict(memory_limit_mb=0.02),
    "chunked-noprefix": dict(shared_prefix=False, memory_limit_mb=0.02),
    "chunked-tokens": dict(chunk_tokens=5),
}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tok, _ = load_clip("zipfast-tiny", "none")
    return TextTower(model), tok


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("K,n_ctx,names", [(1, 4, MIXED), (3, 8, MIXED), (10, 8, MIXED), (5, 2, ["river"]),
                                            (7, 1, MIXED[:2])], ids=lambda v: str(v) if not isinstance(v, list) else f"C{len(v)}")
def test_losses_and_features_equal_reference(tiny, variant, K, n_ctx, names):
    tower, tok = tiny
    prompts = ClassPrompts.build(tower, tok, names, n_ctx)
    g = torch.Generator().manual_seed(K * 31 + n_ctx)
    ctx = torch.randn(K, n_ctx, tower.width, generator=g) * 0.05
    feats = torch.nn.functional.normalize(torch.randn(13, 32, generator=g), dim=-1)
    labels = torch.randint(0, len(names), (13,), generator=g)
    ref = ReferenceEngine(tower, prompts)
    fast = BatchedEngine(tower, prompts, **VARIANTS[variant])
    if variant.startswith("chunked"):
        assert fast._chunks(K, len(names)) != (K, len(names)) or K * len(names) == 1
    f_ref, f_fast = ref.text_features(ctx), fast.text_features(ctx)
    assert torch.isfinite(f_fast).all()
    assert f_fast.shape == (K, len(names), 32)
    assert rel_err(f_fast, f_ref) <= 1e-5
    (l_ref, a_ref), (l_fast, a_fast) = ref.losses(ctx, feats, labels), fast.losses(ctx, feats, labels)
    assert torch.isfinite(l_fast).all()
    torch.testing.assert_close(l_fast, l_ref, rtol=1e-5, atol=1e-6)  # n_cls = 1: CE is exactly 0
    torch.testing.assert_close(a_fast, a_ref)


def test_truncation_length_is_longest_eot(tiny):
    tower, tok = tiny
    prompts = ClassPrompts.build(tower, tok, MIXED, 8)
    e = BatchedEngine(tower, prompts)
    assert e.T == int(prompts.eot.max()) + 1 < 77 and e.P == 9 and e.shared_prefix


def test_bf16_stays_close_to_fp32(tiny):
    tower, tok = tiny
    prompts = ClassPrompts.build(tower, tok, MIXED, 8)
    ctx = torch.randn(4, 8, tower.width, generator=torch.Generator().manual_seed(1)) * 0.05
    f32 = ReferenceEngine(tower, prompts).text_features(ctx)
    bf = BatchedEngine(tower, prompts, precision="bf16").text_features(ctx)
    assert bf.dtype == torch.float32 and torch.isfinite(bf).all()
    assert rel_err(bf, f32) < 3e-2


def test_make_engine_names():
    with pytest.raises(ValueError, match="unknown backend 'cuda-magic'"):
        make_engine("cuda-magic", None, None)


@pytest.fixture(scope="module")
def planted():
    return planted_model(0)


def trainer(planted, backend, **kw):
    model, tok = planted
    task = make_planted_task(TextTower(model), tok, n_ctx=8, shots=8, test_per_class=20, seed=0)
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=60, seed=2,
                      batch_size=64, backend=backend, checkpoint_every=0, precision="fp32", **kw)
    return ZIPTrainer(model, task.classnames, cfg, task, tokenizer=tok, progress=False)


def test_evaluation_accuracy_equals_reference(planted):
    ref, fast = trainer(planted, "torch-reference"), trainer(planted, "torch-batched")
    assert fast.engine.name == "torch-batched" and ref.engine.name == "torch-reference"
    for w in (ref.w, ref.w + 0.3 * torch.randn(ref.w.shape, generator=torch.Generator().manual_seed(0))):
        assert fast.evaluate(w) == ref.evaluate(w)


def test_zip_trajectory_engine_vs_reference(planted):
    """6 ZIP steps from the same seed. Losses agree to ~1e-6 relative, so each ĝ entry
    (L⁺ − L⁻)/(2 c_k z) differs by ≲ 1e-6·L/c_k ≈ 1e-4 absolute against entries of 10–100;
    clipping to √δ bounds the step, so w agrees to well within 1e-4 relative after 6 steps."""
    ref, fast = trainer(planted, "torch-reference"), trainer(planted, "torch-batched")
    r_ref, r_fast = ref.fit(), fast.fit()
    assert r_ref["queries"] == r_fast["queries"] == 60
    torch.testing.assert_close(fast.w, ref.w, rtol=1e-4, atol=1e-5)
    assert r_fast["train_loss"] == pytest.approx(r_ref["train_loss"], rel=1e-4)
    assert r_fast["test_acc"] == r_ref["test_acc"]
