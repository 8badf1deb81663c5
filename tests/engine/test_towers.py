"""Prompt assembly + EOT pooling through TextTower equal open_clip's own encode_text."""

import pytest
import torch

from zipfast.models import load_clip
from zipfast.engine.towers import ClassPrompts, TextTower, UnsupportedModelError, init_context_from_text

NAMES = ["Annual Crop Land", "Forest", "sea_or_lake", "Herbaceous Vegetation Land", "a"]


@pytest.fixture(scope="module", params=["zipfast-tiny", "zipfast-planted"])
def clip(request):
    torch.manual_seed(0)
    model, tok, _ = load_clip(request.param, "none")
    return model, tok


@pytest.mark.parametrize("n_ctx", [1, 4, 8])
def test_assembled_prompt_encodes_like_open_clip(clip, n_ctx):
    model, tok = clip
    tower = TextTower(model)
    prompts = ClassPrompts.build(tower, tok, NAMES, n_ctx)
    assert prompts.eot.tolist() == prompts.tokens.argmax(-1).tolist()
    assert len(set(prompts.eot.tolist())) > 1  # class names of different token lengths
    ctx = model.token_embedding(prompts.tokens[0, 1:1 + n_ctx])  # the embeddings of "X X … X"
    with torch.no_grad():
        ours = tower.encode(prompts.assemble(ctx), prompts.eot)
        theirs = model.encode_text(prompts.tokens)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_init_text_context_matches_open_clip(clip):
    model, tok = clip
    tower = TextTower(model)
    ctx = init_context_from_text(tower, tok, "a photo of a")
    assert ctx.shape == (4, tower.width)
    prompts = ClassPrompts.build(tower, tok, NAMES, 4, "a photo of a")
    with torch.no_grad():
        ours = tower.encode(prompts.assemble(ctx), prompts.eot)
        theirs = model.encode_text(tok([f"a photo of a {n.replace('_', ' ')}." for n in NAMES]))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_batched_assembly_shape(clip):
    model, tok = clip
    tower = TextTower(model)
    prompts = ClassPrompts.build(tower, tok, NAMES, 3)
    x = prompts.assemble(torch.randn(6, 3, tower.width))
    assert x.shape == (6, len(NAMES), 77, tower.width)


def test_non_causal_tower_is_rejected():
    torch.manual_seed(0)
    model, _, _ = load_clip("zipfast-tiny", "none")
    model.attn_mask = None
    with pytest.raises(UnsupportedModelError, match="not causal"):
        TextTower(model)


def test_embed_dim_is_the_width_of_encoded_features(clip):
    model, tok = clip[0], clip[1]
    tower = TextTower(model)
    ids = tok(["a photo of a cat."])
    x = tower.token_embedding(ids) + tower.positional_embedding
    feats = tower.encode(x, ids.argmax(-1))
    assert feats.shape[-1] == tower.embed_dim == model.encode_text(ids).shape[-1]
