"""Run groups (zipfast.run.group): every run in a group is the run alone, bit for bit on the CPU
(final point, every log record but its time, the report but its times), with its own query
accounting; a failing run leaves the group, the others go on; a group stopped by a signal
resumes bit for bit."""

import contextlib
import dataclasses
import json
import os
import signal

import pytest
import torch

from zipfast.config import TrainConfig
from zipfast.data import synthetic
from zipfast.data.sources import batch_indices
from zipfast.run.group import GroupInterrupted, RunGroup
from zipfast.run.loop import NonFiniteLossError
from zipfast.run.task import load
from zipfast.run.trainer import Trainer

# the op registry's fallbacks are the process's (every op any run resolved so far), so they are not compared
TIMES = ("wall_time_s", "queries_per_s", "fallbacks")

PLANTED = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=60, checkpoint_every=0,
                      batch_size=32, shots=8, test_per_class=10)
# ZIP at two step sizes, ZO-SGD, SharpZO and a second seed; budgets that end at different rounds
PLANTED_RUNS = [dict(method="zip", seed=1), dict(method="zip", seed=1, spsa_params=(1.0, 0.01, 0.1, 0.4, 0.1)),
                dict(method="zo-sgd", seed=1, budget=45), dict(method="sharpzo", seed=1, budget=37),
                dict(method="zip", seed=2, budget=25)]


@pytest.fixture(scope="module")
def planted_task():
    return load(PLANTED)


def _trainer(task, cfg, out, cache):
    model, tok, names, data = task
    return Trainer(model, names, cfg, data, tokenizer=tok, progress=False, cache=cache, output_dir=out,
                   overwrite=True)


def _records(folder):
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
            for line in (folder / "log.jsonl").read_text().splitlines()]


def _same_as_alone(task, cfgs, tmp_path, threads=1):
    torch.set_num_threads(threads)
    alone = []
    for i, c in enumerate(cfgs):
        t = _trainer(task, c, tmp_path / f"alone{i}", {})
        alone.append((t.fit(), t.w.clone()))
    cache = {}
    group = [_trainer(task, c, tmp_path / f"group{i}", cache) for i, c in enumerate(cfgs)]
    results = RunGroup(group, progress=False).fit()
    for i, (c, (rep, w), got, t) in enumerate(zip(cfgs, alone, results, group)):
        assert isinstance(got, dict), got
        assert torch.equal(t.w, w), (c.method, i)
        assert {k: v for k, v in got.items() if k not in TIMES} == {k: v for k, v in rep.items() if k not in TIMES}
        assert _records(tmp_path / f"group{i}") == _records(tmp_path / f"alone{i}")
        assert got["queries"] <= c.budget and got["queries"] == rep["queries"]
    return alone, results


@pytest.mark.parametrize("threads", [1, 2])
def test_text_side_group_equals_each_run_alone(planted_task, tmp_path, threads, monkeypatch):
    from zipfast.engine.batched import BatchedEngine

    passes, many = [], BatchedEngine.text_features_many

    def counted(self, ctxs):
        passes.append(len(ctxs))
        return many(self, ctxs)
    monkeypatch.setattr(BatchedEngine, "text_features_many", counted)
    cfgs = [dataclasses.replace(PLANTED, **r) for r in PLANTED_RUNS]
    alone, results = _same_as_alone(planted_task, cfgs, tmp_path, threads)
    assert passes[0] == len(cfgs)  # the first round: every run's candidates in one text pass
    # the runs really differ (a group that returned one run's answer for all would fail above, too)
    assert len({r["train_loss"] for r, _ in alone}) == len(cfgs)
    # per-run accounting: each budget's own last round (ZIP rounds cost 10, SharpZO's its own)
    assert [r["queries"] for r in results] == [60, 60, 40, 36, 20] or all(
        r["queries"] == a["queries"] for r, (a, _) in zip(results, alone))


def test_image_side_group_equals_each_run_alone(tmp_path):
    base = TrainConfig(model=synthetic.MODEL, pretrained="none", dataset=synthetic.NAME, budget=18,
                       checkpoint_every=0, batch_size=8, shots=4, test_per_class=3, seed=1)
    cfgs = [dataclasses.replace(base, method="bar"),
            dataclasses.replace(base, method="bar", method_options={"lrs": (1.0, 0.1)}),
            dataclasses.replace(base, method="zip", budget=20)]
    _same_as_alone(load(base), cfgs, tmp_path, threads=2)


IMAGE_ZIP = TrainConfig(model=synthetic.MODEL, pretrained="none", dataset=synthetic.NAME, budget=30,
                        checkpoint_every=0, batch_size=8, shots=4, test_per_class=3, seed=1, method="zip")
# distinct minibatches: 8 images (two runs), 5 and 3
DISTINCT = [IMAGE_ZIP, dataclasses.replace(IMAGE_ZIP, batch_size=5),
            dataclasses.replace(IMAGE_ZIP, batch_size=3, budget=20),
            dataclasses.replace(IMAGE_ZIP, spsa_params=(1.0, 0.01, 0.1, 0.4, 0.1))]


def _spy_encode_many(monkeypatch) -> list:
    from zipfast.data.sources import ImageSource

    passes, many = [], ImageSource.encode_many

    def counted(self, images):
        passes.append([x.shape[0] for x in images])
        return many(self, images)
    monkeypatch.setattr(ImageSource, "encode_many", counted)
    return passes


@pytest.mark.parametrize("threads", [1, 2])
def test_runs_reading_distinct_minibatches_on_the_cpu_equal_their_runs_alone(tmp_path, threads, monkeypatch):
    passes = _spy_encode_many(monkeypatch)
    _same_as_alone(load(IMAGE_ZIP), DISTINCT, tmp_path, threads)
    assert passes == []  # on the CPU each minibatch is encoded as alone


def test_distinct_minibatches_go_through_the_image_tower_together_within_an_ulp(monkeypatch):
    """The pass CUDA uses, forced on the CPU: one image-tower pass for the three distinct minibatches,
    each run's losses within 1e-6 (relative) of its own evaluation, its features within 1e-6."""
    from zipfast.evaluate.group import Query, losses_many

    passes = _spy_encode_many(monkeypatch)
    torch.set_num_threads(1)
    task, cache = load(IMAGE_ZIP), {}
    runs = [_trainer(task, c, None, cache) for c in DISTINCT]
    g = torch.Generator().manual_seed(5)
    queries = [Query(t.evaluator, t.space, 0.01 * torch.randn(10, t.space.dim, generator=g), 1) for t in runs]
    together = losses_many(queries, batch_images_on=("cpu",))
    assert passes == [[8, 5, 3]]
    for q, (losses, accs) in zip(queries, together):
        alone, alone_accs = q.evaluator.losses(q.space, q.cand, q.batch_index)
        torch.testing.assert_close(losses, alone, rtol=1e-6, atol=0)
        assert torch.equal(accs, alone_accs)
    src = runs[0].evaluator.source
    for bs in (8, 5, 3):  # the features themselves, each minibatch against its own pass
        idx = batch_indices(src.n_train, bs, 1, 1)
        mine = src.train_batch(idx, 1, 1)[0]
        got = src.encode_many([src.train_views(batch_indices(src.n_train, b, 1, 1), 1, 1) for b in (8, 5, 3)])
        torch.testing.assert_close(got[(8, 5, 3).index(bs)], mine, rtol=0, atol=1e-6)


def test_a_failed_batched_encoding_leaves_each_run_to_its_own_read(monkeypatch):
    """An error while encoding distinct minibatches together is not the group's: each run then reads
    (and encodes) its own minibatch, and gets the losses of its own evaluation."""
    from zipfast.data.sources import ImageSource
    from zipfast.evaluate.group import Query, losses_many

    def broken(self, images):
        raise RuntimeError("planted failure of the batched pass")
    monkeypatch.setattr(ImageSource, "encode_many", broken)
    torch.set_num_threads(1)
    task, cache = load(IMAGE_ZIP), {}
    runs = [_trainer(task, c, None, cache) for c in DISTINCT[:3]]
    g = torch.Generator().manual_seed(7)
    queries = [Query(t.evaluator, t.space, 0.01 * torch.randn(4, t.space.dim, generator=g), 1) for t in runs]
    for q, got in zip(queries, losses_many(queries, batch_images_on=("cpu",))):
        assert not isinstance(got, Exception), got
        alone = q.evaluator.losses(q.space, q.cand, q.batch_index)
        assert torch.equal(got[0], alone[0]) and torch.equal(got[1], alone[1])


def test_image_prompts_of_several_runs_through_one_tower_pass_within_an_ulp(monkeypatch):
    """BAR and BlackVIP's batched tower pass (CUDA's), forced on the CPU: one pass of the tower's body
    for all runs' prompted images, each run's losses within 1e-6 (relative) of its own evaluation."""
    from zipfast.engine.towers import ImageTower
    from zipfast.evaluate.group import Query, losses_many

    bodies, pooled = [], ImageTower.pooled_pixels

    def counted(self, x):
        bodies.append(x.shape[0])
        return pooled(self, x)
    monkeypatch.setattr(ImageTower, "pooled_pixels", counted)
    torch.set_num_threads(1)
    base = dataclasses.replace(IMAGE_ZIP, method="bar")
    cfgs = [base, dataclasses.replace(base, method_options={"lrs": (1.0, 0.1)}),
            dataclasses.replace(base, method="blackvip")]
    task, cache = load(base), {}
    runs = [_trainer(task, c, None, cache) for c in cfgs]
    g = torch.Generator().manual_seed(6)
    queries = [Query(t.evaluator, t.space, 0.01 * torch.randn(2, t.space.dim, generator=g), 1) for t in runs]
    together = losses_many(queries, batch_images_on=("cpu",))
    n_pixel = sum(1 for t in runs if getattr(t.space, "kind", "") == "pixels")
    assert n_pixel >= 2 and len(bodies) >= 1 and bodies[0] > 2 * 8  # one pass held more than one run's images
    bodies.clear()
    for q, got in zip(queries, together):
        assert not isinstance(got, Exception), got
        alone, alone_accs = q.evaluator.losses(q.space, q.cand, q.batch_index)
        torch.testing.assert_close(got[0], alone, rtol=1e-6, atol=0)
        assert torch.equal(got[1], alone_accs)


def test_encode_many_passes_are_no_larger_than_a_run_alone_makes():
    from zipfast.data.sources import ImageSource

    class Body:  # the body sums pixels; the projection doubles (one call per batch)
        def pooled_pixels(self, x):
            sizes.append(x.shape[0])
            return x.flatten(1)[:, :4]

        def project(self, p):
            projected.append(p.shape[0])
            return 2 * p
    src = ImageSource.__new__(ImageSource)
    src.test_batch_size, src.device, src.autocast, src._body = 6, torch.device("cpu"), contextlib.nullcontext, Body()
    sizes, projected = [], []
    images = [torch.randn(n, 3, 2, 2) for n in (4, 2, 3, 7, 1)]
    got = src.encode_many(images)
    assert sizes == [6, 3, 7, 1]  # cap = max(7, 6): [4+2], [3] (3+7 > 7), [7], [1]
    assert projected == [4, 2, 3, 7, 1]
    for x, f in zip(images, got):
        assert torch.equal(f, torch.nn.functional.normalize(2 * x.flatten(1)[:, :4], dim=-1))


def test_a_failing_run_leaves_the_group_and_the_others_go_on(planted_task, tmp_path):
    cfgs = [dataclasses.replace(PLANTED, **r) for r in PLANTED_RUNS[:3]]
    ref = [_trainer(planted_task, c, tmp_path / f"alone{i}", {}).fit() for i, c in enumerate(cfgs)]
    cache = {}
    group = [_trainer(planted_task, c, tmp_path / f"group{i}", cache) for i, c in enumerate(cfgs)]
    space, calls = group[1].space, []
    real = space.contexts

    def poisoned(cand):
        calls.append(1)
        ctx = real(cand)
        return ctx * float("nan") if len(calls) == 3 else ctx
    space.contexts = poisoned
    results = RunGroup(group, progress=False).fit()
    assert isinstance(results[1], NonFiniteLossError) and "step 3" in str(results[1])
    assert group[1].step == 2 and group[1].queries == 20  # the state before the bad round, saved
    assert (tmp_path / "group1" / "checkpoint.safetensors").is_file()
    for i in (0, 2):
        assert {k: v for k, v in results[i].items() if k not in TIMES} == \
            {k: v for k, v in ref[i].items() if k not in TIMES}


def test_group_stopped_by_sigint_resumes_bit_for_bit(planted_task, tmp_path):
    cfgs = [dataclasses.replace(PLANTED, checkpoint_every=2, **r) for r in PLANTED_RUNS]
    ref_cache = {}
    ref = RunGroup([_trainer(planted_task, c, tmp_path / f"ref{i}", ref_cache) for i, c in enumerate(cfgs)],
                   progress=False).fit()
    rounds = []

    def stop_after_three(group, seconds, live):
        rounds.append(seconds)
        if len(rounds) == 3:
            os.kill(os.getpid(), signal.SIGINT)
    cache = {}
    first = [_trainer(planted_task, c, tmp_path / f"run{i}", cache) for i, c in enumerate(cfgs)]
    with pytest.raises(GroupInterrupted) as stopped:
        RunGroup(first, progress=False, on_round=stop_after_three).fit()
    assert stopped.value.exit_code == 130 and len(stopped.value.runs) == len(cfgs)
    assert [t.step for t in first] == [3, 3, 3, 3, 3]
    cache = {}
    again = []
    for i, c in enumerate(cfgs):
        t = Trainer(*_model_names(planted_task), c, planted_task[3], tokenizer=planted_task[1], progress=False,
                    cache=cache, output_dir=tmp_path / f"run{i}")
        t.load_checkpoint(tmp_path / f"run{i}" / "checkpoint.safetensors")
        again.append(t)
    results = RunGroup(again, progress=False).fit()
    for i in range(len(cfgs)):
        assert {k: v for k, v in results[i].items() if k not in TIMES} == \
            {k: v for k, v in ref[i].items() if k not in TIMES}
        assert _records(tmp_path / f"run{i}") == _records(tmp_path / f"ref{i}")


def _model_names(task):
    return task[0], task[2]
