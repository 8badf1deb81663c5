"""GPU timings of the ZIP kernels and the fused step (`make bench-gpu`).

Skipped without a CUDA device: nothing here has run on a GPU on the project's machines.
Each result records pytest-benchmark's host-timed median (synchronised per call) and
`triton.testing.do_bench`'s CUDA-event median. Shapes: ViT-B/16 (m = 8, D = 512, d = 500,
r = 5, q = 5, 128 images, E = 512, 10 classes).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: GPU kernel timings need a GPU (run `make bench-gpu` on one)")

BACKENDS = ("torch", "triton", "cuda")


def _time(benchmark, fn, **info):
    import triton.testing

    def call():
        fn()
        torch.cuda.synchronize()

    benchmark.extra_info.update(device=torch.cuda.get_device_name(), do_bench_ms=triton.testing.do_bench(fn), **info)
    benchmark(call)


def _zip_inputs():
    from zipfast import reference as ref

    g = torch.Generator().manual_seed(0)
    ff = ref.draw_fastfood(8, 512, g).to("cuda", torch.float32)
    ctx0 = (torch.randn(8, 512, generator=g) * 0.02).cuda()
    w = torch.randn(ref.param_dim(8, 500, 5), generator=g).cuda()
    return ff, ctx0, w


@pytest.mark.benchmark(group="gpu perturb")
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_perturb(benchmark, backend, monkeypatch):
    from zipfast.ops import perturb as P

    monkeypatch.setenv("ZIPFAST_BACKEND_PERTURB", backend)
    seed, step = torch.tensor(1, device="cuda"), torch.tensor(3, device="cuda")
    _time(benchmark, lambda: P.perturb(seed, step, 5, 417), backend=backend)


@pytest.mark.benchmark(group="gpu candidates")
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_candidates(benchmark, backend, monkeypatch):
    from zipfast.ops import candidates as C

    monkeypatch.setenv("ZIPFAST_BACKEND_CANDIDATES", backend)
    monkeypatch.setenv("ZIPFAST_BACKEND_PERTURB", backend)
    ff, ctx0, w = _zip_inputs()
    out = torch.empty(10, 8, 512, device="cuda")
    seed, step, ck = torch.tensor(1, device="cuda"), torch.tensor(3, device="cuda"), torch.tensor(0.01, device="cuda")
    _time(benchmark, lambda: C.candidates(w, seed, step, ck, ctx0, ff, 5, 5, out=out), backend=backend)


@pytest.mark.benchmark(group="gpu clip_loss")
@pytest.mark.parametrize("backend", ("torch", "triton"))
def test_gpu_clip_loss(benchmark, backend, monkeypatch):
    from zipfast.ops import clip_loss as CL

    monkeypatch.setenv("ZIPFAST_BACKEND_CLIP_LOSS", backend)
    txt, img = torch.randn(10, 10, 512, device="cuda"), torch.randn(128, 512, device="cuda")
    lab = torch.randint(0, 10, (128,), device="cuda")
    scale = torch.tensor(4.6, device="cuda")
    _time(benchmark, lambda: CL.clip_loss(txt, img, lab, scale), backend=backend)


@pytest.mark.benchmark(group="gpu spsa_update")
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_spsa_update(benchmark, backend, monkeypatch):
    from zipfast.ops import spsa_update as SU

    monkeypatch.setenv("ZIPFAST_BACKEND_SPSA_UPDATE", backend)
    w, m, losses = torch.randn(417, device="cuda"), torch.zeros(417, device="cuda"), torch.rand(10, device="cuda")
    k = torch.tensor(3, device="cuda")
    ak, ck = SU.schedules(k, 0.01, 1.0, 0.4, 0.01, 0.1)
    _time(benchmark, lambda: SU.spsa_update(w, m, losses, 1, k, ak, ck), backend=backend)


@pytest.mark.benchmark(group="gpu zip step")
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "cuda-graph"])
def test_gpu_fused_step(benchmark, graph):
    import open_clip

    from zipfast.engine.batched import make_engine
    from zipfast.spaces.context import ZIPSpace
    from zipfast.engine.step import FusedZIPStep
    from zipfast.engine.towers import ClassPrompts, TextTower
    from zipfast.data.classnames import EUROSAT

    model = open_clip.create_model("ViT-B-16", pretrained=None).cuda().eval()
    tower = TextTower(model)
    prompts = ClassPrompts.build(tower, open_clip.get_tokenizer("ViT-B-16"), list(EUROSAT), 8)
    engine = make_engine("torch-batched", tower, prompts, "fp32")
    space = ZIPSpace.create(torch.randn(8, 512, device="cuda") * 0.02, 500, 5, torch.Generator().manual_seed(1))
    w0 = space.init_params(torch.Generator().manual_seed(2))
    step = FusedZIPStep(space, engine, w0, seed=1, q=5, batch_size=128, feat_dim=512, use_graph=graph)
    feats, labels = torch.randn(128, 512, device="cuda"), torch.randint(0, 10, (128,), device="cuda")
    step(feats, labels)  # capture / warm-up
    _time(benchmark, lambda: step(feats, labels), graph=graph)
