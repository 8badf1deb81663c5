"""GPU tests (`make test-gpu`): compiled Triton and CUDA kernels against the references on a
CUDA device, perturb bit-identity across backends on the GPU, the captured CUDA-graph step.

Skipped without a CUDA device: none of this has run on the project's machines (no GPU).
"""

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (run `make test-gpu` on one)")]

GPU_BACKENDS = ("torch", "triton", "cuda")


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


@pytest.fixture(autouse=True)
def _fresh_registry():
    from zipfast.ops import registry

    registry._reset_for_tests()
    yield
    registry._reset_for_tests()


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dist", ["segmented", "gaussian", "rademacher"])
def test_perturb_bit_identical_on_gpu(backend, dist, monkeypatch):
    from zipfast.ops import perturb as P
    from zipfast.ops.perturb import reference as R

    monkeypatch.setenv("ZIPFAST_BACKEND_PERTURB", backend)
    got = P.perturb(torch.tensor(123, device="cuda"), torch.tensor(9, device="cuda"), 5, 1031, stream=2, dist=dist)
    want = R.perturb(123, 2, 9, 5, 1031, dist)  # the CPU reference
    assert torch.equal(got.cpu().view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("shape", [(8, 512, 500, 5, 5), (1, 768, 40, 1, 1), (3, 100, 17, 2, 3)])
def test_candidates_on_gpu(backend, shape, monkeypatch):
    from zipfast import reference as ref
    from zipfast.ops import candidates as C
    from zipfast.ops.candidates import reference as R

    monkeypatch.setenv("ZIPFAST_BACKEND_CANDIDATES", backend)
    m, D, d, r, q = shape
    g = torch.Generator().manual_seed(0)
    ff = ref.draw_fastfood(m, D, g)
    ctx0, w = torch.randn(m, D, generator=g) * 0.02, torch.randn(ref.param_dim(m, d, r), generator=g)
    want = R.candidates(w, 5, 3, torch.tensor(0.01), ctx0, ff, r, q)
    out = torch.full((2 * q, m, D), float("nan"), device="cuda")
    C.candidates(w.cuda(), 5, torch.tensor(3, device="cuda"), 0.01, ctx0.cuda(), ff.to("cuda"), r, q, out=out)
    assert rel(out.cpu(), want) <= 1e-5


@pytest.mark.parametrize("backend", ("torch", "triton"))
def test_clip_loss_on_gpu(backend, monkeypatch):
    from zipfast.ops import clip_loss as CL
    from zipfast.ops.clip_loss import reference as R

    monkeypatch.setenv("ZIPFAST_BACKEND_CLIP_LOSS", backend)
    g = torch.Generator().manual_seed(0)
    txt, img, lab = torch.randn(5, 37, 640, generator=g), torch.randn(33, 640, generator=g), torch.randint(0, 37, (33,), generator=g)
    want = R.clip_loss(txt, img, lab, torch.tensor(4.6))
    got = CL.clip_loss(txt.cuda(), img.cuda(), lab.cuda(), 4.6)
    assert rel(got[0].cpu(), want[0]) <= 1e-5 and torch.equal(got[1].cpu(), want[1])


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("mode", ["spsa", "spsa-clip", "spsa-gc"])
def test_spsa_update_on_gpu(backend, mode, monkeypatch):
    from zipfast.ops import spsa_update as SU
    from zipfast.ops.spsa_update import reference as R

    monkeypatch.setenv("ZIPFAST_BACKEND_SPSA_UPDATE", backend)
    g = torch.Generator().manual_seed(0)
    w, m, L = torch.randn(1500, generator=g), torch.randn(1500, generator=g), torch.rand(6, generator=g)
    k = torch.tensor(3)
    ak, ck = R.schedules(k, 0.01, 1.0, 0.4, 0.01, 0.1)
    want = R.spsa_update(w, m, L, 9, k, ak, ck, mode=mode)
    got = SU.spsa_update(w.cuda(), m.cuda(), L.cuda(), 9, k.cuda(), ak.cuda(), ck.cuda(), mode=mode)
    for a, b in zip(got, want):
        assert rel(a.cpu(), b) <= 1e-5


def _planted_cuda():
    """(engine, space, w0, task) of the planted task on CUDA (fp32, the batched engine)."""
    from zipfast.engine.batched import make_engine
    from zipfast.data.planted import make_planted_task, planted_model
    from zipfast.spaces.context import ZIPSpace
    from zipfast.engine.towers import ClassPrompts, TextTower

    model, tok = planted_model(0)
    model = model.cuda()
    tower = TextTower(model)
    task = make_planted_task(tower, tok, n_ctx=4, shots=4, test_per_class=2, seed=0)
    engine = make_engine("torch-batched", tower, ClassPrompts.build(tower, tok, task.classnames, 4), "fp32")
    space = ZIPSpace.create(task.ctx0.float().cuda(), 40, 2, torch.Generator().manual_seed(1))
    return engine, space, space.init_params(torch.Generator().manual_seed(2)), task


def test_graph_step_replays_equal_eager():
    """Three graph replays equal three eager steps (fresh perturbations per replay)."""
    from zipfast.engine.step import FusedZIPStep

    engine, space, w0, task = _planted_cuda()
    steps = [FusedZIPStep(space, engine, w0, seed=7, q=3, batch_size=16, feat_dim=task.train_features.shape[1],
                          use_graph=g) for g in (True, False)]
    for k in range(3):
        idx = torch.arange(16) + k
        for s in steps:
            s(task.train_features[idx].float().cuda(), task.train_labels[idx].cuda())
    assert steps[0].graph is not None and int(steps[0].step) == 3
    assert rel(steps[0].w, steps[1].w) <= 1e-6


def test_group_graph_replays_equal_the_eager_group_step():
    """The run group's step of 3 runs (other step sizes, seeds, spsa-gc) captured as ONE CUDA graph:
    its first replay passes the self-check (no fallback recorded) and three replays equal three
    eager group steps, run by run."""
    from zipfast.engine.group_step import FusedZIPGroupStep
    from zipfast.engine.step import FusedZIPStep
    from zipfast.ops import registry

    engine, space, w0, task = _planted_cuda()

    def group(use_graph):
        return FusedZIPGroupStep([FusedZIPStep(space, engine, w0 * (1 + r), seed=7 + r, q=3, batch_size=16,
                                               feat_dim=task.train_features.shape[1],
                                               spsa_params=(1.0, 0.01, 0.01 * (1 + r), 0.4, 0.1),
                                               opt_type=("spsa-clip", "spsa-gc")[r % 2]) for r in range(3)],
                                 use_graph=use_graph)
    graph, eager = group(True), group(False)
    for k in range(3):
        batches = [(task.train_features[torch.arange(16) + k + r].float().cuda(),
                    task.train_labels[torch.arange(16) + k + r].cuda()) for r in range(3)]
        graph(batches)
        eager(batches)
    assert graph.graph is not None and graph.use_graph
    assert not [f for f in registry.fallbacks() if f["op"] == "fused_group_step"]
    for a, b in zip(graph.steps, eager.steps):
        assert int(a.step) == int(b.step) == 3
        assert rel(a.w, b.w) <= 1e-6 and rel(a.momentum, b.momentum) <= 1e-6


@pytest.mark.parametrize("methods", [("zip",), ("bar", "blackvip")])
def test_group_image_passes_on_gpu_stay_within_1e5_of_each_run_alone(methods):
    """On CUDA a run group batches the image tower over runs (distinct minibatches of text-side runs;
    BAR/BlackVIP's prompted images): one round's losses of each run within 1e-5 (relative) of the
    run evaluated alone, and the same accuracies."""
    import dataclasses

    from tests.run.test_group import DISTINCT, _trainer
    from zipfast.evaluate.group import Query, losses_many
    from zipfast.run.task import load

    cfgs = [dataclasses.replace(c, device="cuda", method=methods[i % len(methods)]) for i, c in enumerate(DISTINCT)]
    task, cache = load(cfgs[0]), {}
    runs = [_trainer(task, c, None, cache) for c in cfgs]
    g = torch.Generator().manual_seed(5)
    queries = [Query(t.evaluator, t.space, (0.01 * torch.randn(4, t.space.dim, generator=g)).cuda(), 1) for t in runs]
    for q, got in zip(queries, losses_many(queries)):
        assert not isinstance(got, Exception), got
        alone, alone_accs = q.evaluator.losses(q.space, q.cand, q.batch_index)
        torch.testing.assert_close(got[0], alone, rtol=1e-5, atol=1e-6)
        assert torch.equal(got[1].cpu(), alone_accs.cpu())
