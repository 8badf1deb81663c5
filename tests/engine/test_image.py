"""The batched image engine against the one-candidate reference (fp32, ≤ 1e-5), for pixel
prompts (BAR's frame, BlackVIP's coordinator) and visual prompt tokens (BPT-VLM): odd K,
B = 1, chunking down to one image per pass, outputs preallocated with NaN."""

import pytest
import torch

from image_fixtures import images, tiny_clip, tiny_coordinator
from zipfast.engine.image import BatchedImageEngine, ReferenceImageEngine, focal_loss, image_logits, \
    losses_and_accuracy
from zipfast.engine.towers import ImageTower
from zipfast.spaces import BPTVLMSpace, ReprogrammingFrame

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    model, _ = tiny_clip("zipfast-tiny")
    return model, ImageTower(model)


@pytest.fixture(scope="module")
def tiny224():
    model, _ = tiny_clip("zipfast-tiny224")
    return model, ImageTower(model)


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def batched(tower, prompter, w, x, memory_limit_mb=1024.0):
    K, B = w.shape[0], x.shape[-4]
    out = torch.full((K, B, tower.output_dim), float("nan"))
    BatchedImageEngine(tower, memory_limit_mb=memory_limit_mb).features(prompter, w, x, out=out)
    assert torch.isfinite(out).all(), "an output element was never written"
    return out


def test_token_path_equals_open_clip(tiny):
    """embed → encode_tokens with no extra tokens is open_clip's own image encoder."""
    model, tower = tiny
    x = images(3, 32, seed=1)
    with torch.no_grad():
        ours = tower.encode_tokens(tower.embed(x))
        theirs = model.encode_image(x)
    assert rel_err(ours, theirs) < TOL


# 1 MiB forces one image per tower pass and one candidate per chunk on the tiny towers.
@pytest.mark.parametrize("K,B,limit", [(1, 1, 1024.0), (3, 4, 1024.0), (5, 1, 1024.0), (3, 4, 1e-3), (7, 2, 0.05)],
                         ids=lambda v: str(v))
def test_bar_frame_batched_matches_reference(tiny, K, B, limit):
    _, tower = tiny
    frame = ReprogrammingFrame(frame_size=32, image_size=26)
    w = torch.randn(K, frame.dim, generator=torch.Generator().manual_seed(K))
    x = images(B, 26, seed=B)
    ref = ReferenceImageEngine(tower).features(frame, w, x)
    out = batched(tower, frame, w, x, limit)
    assert rel_err(out, ref) < TOL
    # the candidates differ: a broadcast bug that gave every candidate one prompt would pass otherwise
    if K > 1:
        assert (ref[0] - ref[1]).abs().max() > 1e-4


@pytest.mark.parametrize("K,B,per_candidate,limit", [(1, 1, False, 1024.0), (5, 3, False, 1024.0),
                                                     (3, 2, True, 1024.0), (5, 3, False, 1e-3),
                                                     (3, 1, True, 1e-3)], ids=lambda v: str(v))
def test_bptvlm_tokens_batched_matches_reference(tiny, K, B, per_candidate, limit):
    model, tower = tiny
    space = BPTVLMSpace.create(model.token_embedding.weight, model.visual.conv1.weight, dim_l=40, dim_v=30,
                               generator=torch.Generator().manual_seed(0))
    w = torch.randn(K, space.dim, generator=torch.Generator().manual_seed(K))
    x = images(B, 32, seed=B, K=K if per_candidate else None)
    ref = ReferenceImageEngine(tower).features(space, w, x)
    out = batched(tower, space, w, x, limit)
    assert rel_err(out, ref) < TOL
    if K > 1:
        assert (ref[0] - ref[1]).abs().max() > 1e-4


@pytest.mark.parametrize("K,B,limit", [(1, 1, 1024.0), (3, 2, 1024.0), (3, 2, 1e-3)], ids=lambda v: str(v))
def test_blackvip_batched_matches_reference_and_running_stats(tiny224, K, B, limit):
    _, tower = tiny224
    ref_p, bat_p = tiny_coordinator(), tiny_coordinator()
    w = torch.stack([ref_p.init_params(torch.Generator().manual_seed(i)) for i in range(K)])
    x = images(B, 224, seed=B)
    ref = ReferenceImageEngine(tower).features(ref_p, w, x)
    out = batched(tower, bat_p, w, x, limit)
    assert rel_err(out, ref) < TOL
    for (rm, rv), (bm, bv) in zip(ref_p.running, bat_p.running):
        assert torch.allclose(rm, bm, rtol=1e-5, atol=1e-7) and torch.allclose(rv, bv, rtol=1e-5, atol=1e-7)
    assert not torch.equal(ref_p.running[0][0], torch.zeros_like(ref_p.running[0][0]))  # stats moved


def test_coordinator_decoder_matches_torch_module_in_train_and_eval():
    """The grouped K-candidate decoder against nn.Module decoders run one after another
    (train mode: batch statistics + sequential running-stat updates; then eval mode)."""
    from zipfast.spaces.coordinator import Decoder

    p = tiny_coordinator()
    K, B = 3, 4
    w = torch.stack([p.init_params(torch.Generator().manual_seed(10 + i)) for i in range(K)])
    w[:, 66:] += 0.05 * torch.randn(K, w.shape[1] - 66, generator=torch.Generator().manual_seed(1))
    z = torch.randn(B, p.template.z_dim, generator=torch.Generator().manual_seed(2))
    ours = p.decode(z, w)
    dec = Decoder(p.template.z_dim, p.template.src_dim).train()
    theirs = []
    for k in range(K):
        torch.nn.utils.vector_to_parameters(w[k], dec.parameters())
        with torch.no_grad():
            theirs.append(dec(z))
    assert rel_err(ours, torch.stack(theirs)) < TOL
    bns = [m for m in dec.body if isinstance(m, torch.nn.BatchNorm2d)]
    for (rm, rv), bn in zip(p.running, bns):
        assert torch.allclose(rm, bn.running_mean, rtol=1e-5, atol=1e-7)
        assert torch.allclose(rv, bn.running_var, rtol=1e-5, atol=1e-7)
    p.eval()
    dec.eval()
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(w[1], dec.parameters())
        assert rel_err(p.decode(z, w[1:2])[0], dec(z)) < TOL


def test_blackvip_prompt_is_clipped_to_the_pixel_range():
    p = tiny_coordinator(p_eps=50.0)
    x = images(2, 224)
    w = p.init_params(torch.Generator().manual_seed(0)).unsqueeze(0)
    out = p.apply(p.prepare(x), w)[0]
    lo, hi = p.lo, p.hi
    assert (out >= lo - 1e-6).all() and (out <= hi + 1e-6).all()
    assert torch.isclose(out.amax((0, 2, 3)), hi.flatten()).any()  # the clip is active at P_EPS 50


def test_bar_frame_hand_values():
    """Pixels under the image keep the image; frame pixels are sigmoid(W) normalised."""
    frame = ReprogrammingFrame(frame_size=8, image_size=4)
    w = torch.zeros(1, frame.dim)
    w.view(3, 8, 8)[0, 0, 0] = 2.0
    x = torch.full((1, 3, 4, 4), 0.5)
    out = frame.apply(frame.prepare(x), w)[0, 0]
    mean, std = frame.mean.flatten(), frame.std.flatten()
    assert frame.lo == 2 and frame.hi == 6
    assert torch.allclose(out[:, 2:6, 2:6], torch.full((3, 4, 4), 0.5))
    assert torch.isclose(out[0, 0, 0], (torch.sigmoid(torch.tensor(2.0)) - mean[0]) / std[0])
    assert torch.isclose(out[1, 7, 7], (0.5 - mean[1]) / std[1])  # sigmoid(0) = 0.5


def test_focal_loss_hand_value_and_ce_limit():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]])
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits[0], -1)
    pt = torch.stack([p[0, 0], p[1, 2]])
    want = (-(1 - pt) ** 2 * pt.log()).mean()
    assert torch.isclose(focal_loss(logits, labels, 2.0)[0], want)
    ce, acc = losses_and_accuracy(logits, labels)
    assert torch.isclose(ce[0], -pt.log().mean()) and acc[0] == 50.0
    assert torch.isclose(focal_loss(logits, labels, 0.0)[0], ce[0])


def test_image_logits_scale():
    img = torch.nn.functional.normalize(torch.randn(2, 3, 4), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(1, 5, 4), dim=-1)
    out = image_logits(img, txt, torch.log(torch.tensor(100.0)))
    assert torch.allclose(out, 100 * img @ txt[0].T, atol=1e-5)


def test_pixel_prompts_refuse_per_candidate_images(tiny):
    _, tower = tiny
    frame = ReprogrammingFrame(32, 26)
    with pytest.raises(ValueError, match="one minibatch"):
        BatchedImageEngine(tower).features(frame, torch.zeros(2, frame.dim), images(2, 26, K=2))


def test_a_query_precision_covers_the_whole_query(tiny224):
    # The official BlackVIP wraps every query in autocast: encoder, decoder and image tower. CPU bf16
    # stands in for CUDA fp16 here; the engine itself stays fp32 (its test predictions).
    _, tower = tiny224
    p_ref, p_run, p_fp32 = tiny_coordinator(), tiny_coordinator(), tiny_coordinator()
    w = torch.stack([p_ref.init_params(torch.Generator().manual_seed(i)) for i in range(3)])
    x = images(2, 224, seed=5)
    seen = []
    prepare = p_run.prepare
    p_run.prepare = lambda imgs: seen.append(torch.is_autocast_enabled("cpu")) or prepare(imgs)
    engine = BatchedImageEngine(tower)
    out = engine.features(p_run, w, x, precision="bf16")
    assert seen == [True] and engine.precision == "fp32"
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):  # the official structure, by hand
        prompted = p_ref.apply(p_ref.prepare(x), w)
        ref = torch.nn.functional.normalize(tower.encode_pixels(prompted.flatten(0, 1)).float(), dim=-1)
    assert rel_err(out.flatten(0, 1), ref) < TOL
    fp32 = engine.features(p_fp32, w, x)
    assert rel_err(fp32, out) > 1e-4  # the precision did change the query


def test_blackvip_official_autocast_applies_to_cuda_queries_only():
    from zipfast.config import load_official_image, method_options as method_config
    from zipfast.methods.blackvip import query_precision

    official = load_official_image(None, [], trainer="BlackVIP")[2]
    assert official.autocast == "official" and method_config("blackvip").autocast == "prec"
    assert query_precision(official, torch.device("cuda")) == "fp16"
    assert query_precision(official, torch.device("cpu")) is None  # torch.cuda.amp.autocast: a no-op
    assert query_precision(method_config("blackvip"), torch.device("cuda")) is None
