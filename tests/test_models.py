"""zipfast.models: the network built for a model/weights pair is the one the weights were trained on.

The official ZIP code builds OpenAI's CLIP (`clip/model.py`), whose MLPs use QuickGELU; open_clip's
`ViT-B-16` config uses GELU and only warns when given the `openai` weights. The reference here is
OpenAI's forward pass written out from the state dict (test-side, no open_clip), fed the same
random weights that open_clip finds offline under the `openai` tag.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from zipfast.config import OPENAI_BACKBONES, cfg_to_train_config, load_official, official_backbone
from zipfast.models import ModelLoadError, activation, load_clip, load_notes, quick_gelu_rule

HUB_REPO = "timm/vit_base_patch16_clip_224.openai"  # where open_clip looks up ViT-B-16's "openai" tag


# ------------------------------------------------------------------ OpenAI's CLIP, from the state dict


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def _block(x, p, pre, heads, mask=None):
    """One OpenAI ResidualAttentionBlock on x [N, L, D]: pre-LN attention, then a QuickGELU MLP."""
    N, L, D = x.shape

    def ln(t, name):
        return F.layer_norm(t, (D,), p[f"{pre}{name}.weight"], p[f"{pre}{name}.bias"], eps=1e-5)

    h = ln(x, "ln_1")
    q, k, v = (h @ p[f"{pre}attn.in_proj_weight"].T + p[f"{pre}attn.in_proj_bias"]).chunk(3, dim=-1)
    q, k, v = (t.reshape(N, L, heads, D // heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // heads)
    if mask is not None:
        scores = scores + mask
    o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(N, L, D)
    x = x + o @ p[f"{pre}attn.out_proj.weight"].T + p[f"{pre}attn.out_proj.bias"]
    h = _quick_gelu(ln(x, "ln_2") @ p[f"{pre}mlp.c_fc.weight"].T + p[f"{pre}mlp.c_fc.bias"])
    return x + h @ p[f"{pre}mlp.c_proj.weight"].T + p[f"{pre}mlp.c_proj.bias"]


def _layers(p, prefix):
    return len({k.split(".")[len(prefix.split(".")) - 1] for k in p if k.startswith(prefix)})


def official_encode_text(p, text):
    """OpenAI CLIP's encode_text: causal blocks, final LN, EOT (argmax token) row @ text_projection."""
    x = p["token_embedding.weight"][text] + p["positional_embedding"]
    L, D = x.shape[1], x.shape[2]
    mask = torch.full((L, L), float("-inf")).triu(1)
    for i in range(_layers(p, "transformer.resblocks.")):
        x = _block(x, p, f"transformer.resblocks.{i}.", D // 64, mask)
    x = F.layer_norm(x, (D,), p["ln_final.weight"], p["ln_final.bias"], eps=1e-5)
    return x[torch.arange(len(text)), text.argmax(-1)] @ p["text_projection"]


def official_encode_image(p, images):
    """OpenAI CLIP's VisionTransformer: patch conv, class token, ln_pre, blocks, ln_post(cls) @ proj."""
    w = p["visual.conv1.weight"]
    x = F.conv2d(images, w, stride=w.shape[-1]).flatten(2).transpose(1, 2)
    D = x.shape[-1]
    cls = p["visual.class_embedding"].expand(len(x), 1, D)
    x = torch.cat([cls, x], 1) + p["visual.positional_embedding"]
    x = F.layer_norm(x, (D,), p["visual.ln_pre.weight"], p["visual.ln_pre.bias"], eps=1e-5)
    for i in range(_layers(p, "visual.transformer.resblocks.")):
        x = _block(x, p, f"visual.transformer.resblocks.{i}.", D // 64)
    x = F.layer_norm(x[:, 0], (D,), p["visual.ln_post.weight"], p["visual.ln_post.bias"], eps=1e-5)
    return x @ p["visual.proj"]


# ------------------------------------------------------------------ the openai tag, offline


@pytest.fixture(scope="module")
def openai_vit_b16(tmp_path_factory):
    """(state dict, hub cache folder): random ViT-B/16 weights saved where open_clip's "openai" tag
    of ViT-B-16 is looked up offline (GELU and QuickGELU differ on them by about 1e-2 relative, as on
    trained weights)."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = open_clip.create_model("ViT-B-16").state_dict()
    cache = tmp_path_factory.mktemp("hub")
    snap = cache / f"models--{HUB_REPO.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "open_clip_model.safetensors"))
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0" * 40)
    return sd, cache


@pytest.fixture
def offline_hub(openai_vit_b16, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(openai_vit_b16[1]))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    return openai_vit_b16[0]


@pytest.fixture(scope="module")
def inputs():
    import open_clip

    g = torch.Generator().manual_seed(1)
    text = open_clip.get_tokenizer("ViT-B-16")(["a photo of a dog.", "a blurry photo of an annual crop field."])
    return text, torch.randn(2, 3, 224, 224, generator=g)


def _assert_official(model, sd, inputs, tol=1e-6):
    text, images = inputs
    with torch.no_grad():
        for ours, ref in ((model.encode_text(text), official_encode_text(sd, text)),
                          (model.encode_image(images), official_encode_image(sd, images))):
            rel = float((ours - ref).norm() / ref.norm())
            assert rel <= tol, rel


def _load_quietly(name, tag):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model, _, _ = load_clip(name, tag)
    assert not [w for w in seen if "QuickGELU" in str(w.message)], "open_clip warned of a QuickGELU mismatch"
    return model


@pytest.mark.parametrize("name", ["ViT-B/16", "ViT-B-16"])
def test_openai_tag_builds_the_official_network(offline_hub, inputs, name):
    # "ViT-B/16" → ViT-B-16-quickgelu; "ViT-B-16" (GELU config) → QuickGELU forced by the tag, noted.
    model = _load_quietly(name, "openai")
    assert activation(model) == "quick_gelu"
    _assert_official(model, offline_hub, inputs)
    assert bool(load_notes(model)) == (name == "ViT-B-16")


def test_official_config_path_builds_the_official_network(offline_hub, inputs, tmp_path):
    # MODEL.BACKBONE.NAME ViT-B/16 with the official trainer's "openai" weights, and with a local copy of them.
    cfg = cfg_to_train_config(load_official(opts=["MODEL.BACKBONE.NAME", "ViT-B/16"]))
    assert cfg.model == "ViT-B-16-quickgelu" and cfg.pretrained == "openai"
    _assert_official(_load_quietly(cfg.model, cfg.pretrained), offline_hub, inputs)
    path = tmp_path / "openai-vit-b16.pt"
    torch.save(offline_hub, path)
    _assert_official(_load_quietly(cfg.model, str(path)), offline_hub, inputs)


def test_gelu_network_is_not_the_official_one(offline_hub, inputs):
    # What main built before: open_clip's ViT-B-16 config (GELU) with the same weights. The check above can fail.
    import open_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("ViT-B-16", pretrained="openai").eval()
    assert activation(model) == "gelu"
    with pytest.raises(AssertionError):
        _assert_official(model, offline_hub, inputs, tol=1e-4)


# ------------------------------------------------------------------ the rule, for every backbone and tag


@pytest.mark.parametrize("name", sorted(OPENAI_BACKBONES))
def test_every_official_backbone_is_openai_quickgelu(name):
    import open_clip

    clip_name = official_backbone(name)
    assert open_clip.get_model_config(clip_name)["quick_gelu"] is True
    assert "openai" in open_clip.list_pretrained_tags_by_model(clip_name)
    assert quick_gelu_rule(clip_name, "openai") == (False, [])  # config and tag agree: nothing forced


def test_every_pretrained_tag_gets_its_activation():
    import open_clip

    checked = 0
    for name, tag in open_clip.list_pretrained():
        tag_quick = bool(open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False))
        model_quick = bool(open_clip.get_model_config(name).get("quick_gelu", False))
        if model_quick and not tag_quick:
            with pytest.raises(ModelLoadError, match=f"use --model {name.removesuffix('-quickgelu')}"):
                quick_gelu_rule(name, tag)
            continue
        force, notes = quick_gelu_rule(name, tag)
        assert force == (tag_quick and not model_quick), (name, tag)
        assert bool(notes) == force
        checked += force
    assert checked >= 20  # every openai tag of a plain config, and the QuickGELU-trained laion/metaclip/dfn tags


def test_random_and_local_weights_follow_the_name(tmp_path):
    assert quick_gelu_rule("ViT-B-16", None) == (False, [])
    assert quick_gelu_rule("ViT-B-16-quickgelu", None) == (False, [])
    tiny, _, _ = load_clip("zipfast-tiny", "none")
    assert activation(tiny) == "gelu" and load_notes(tiny) == []


def test_cached_tag_loads_with_no_network(openai_vit_b16, monkeypatch, inputs):
    # Outside `make` (HF_HUB_OFFLINE unset) a tag already in the hub cache loads from it, and neither
    # the hub client nor the network check is asked (with no network the client retries for a minute).
    import huggingface_hub
    import huggingface_hub.constants as hf
    import open_clip.pretrained

    from zipfast import weights

    def asked(*a, **k):
        raise AssertionError("the network was asked")

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(openai_vit_b16[1]))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for module in (huggingface_hub, open_clip.pretrained):
        monkeypatch.setattr(module, "hf_hub_download", asked)
    monkeypatch.setattr(weights, "hub_unreachable", asked)
    _assert_official(_load_quietly("ViT-B-16-quickgelu", "openai"), openai_vit_b16[0], inputs)
