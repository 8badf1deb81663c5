"""The image-side trainers' state around a failed step and at the end of a budget: a non-finite
loss checkpoints the state before its step (minibatch counter, BlackVIP's BatchNorm running
statistics, the optimiser's generator), and BPT-VLM's partial last generation has a record of
its own step number."""

import pytest
import torch

from methods.test_image_methods import folder, make, models, records  # noqa: F401 (fixtures)
from zipfast.run.checkpoint import CHECKPOINT_NAME, read_checkpoint
from zipfast.run.loop import NonFiniteLossError

QUERIES_PER_STEP = {"bar": 6, "blackvip": 4}  # BAR: 1 + q (q = 5); BlackVIP: 2 pairs


def _strip(recs):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in recs]


def _assert_same(a, b, where="state"):
    """Nested state dicts equal: tensors bit for bit, everything else by ==."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("method", ["blackvip", "bar"])
def test_a_nonfinite_loss_checkpoints_the_state_before_its_step(method, models, folder, tmp_path):
    """The loss of step k = 4 is NaN (step 3 is not a checkpoint step: checkpoint_every = 2). The
    checkpoint is the state after step 3, and resuming from it gives the uninterrupted run."""
    k, per = 4, QUERIES_PER_STEP[method]
    good = make(method, models, folder, (k - 1) * per, output_dir=tmp_path / "good")
    good.fit()
    bad = make(method, models, folder, 6 * per, output_dir=tmp_path / "bad")
    evaluate = bad.evaluator.losses

    def poisoned(space, cand, batch):  # the evaluation runs (and changes what it changes), then its loss is NaN
        losses, accs = evaluate(space, cand, batch)
        if bad.step == k - 1:
            losses = losses.clone()
            losses[-1] = float("nan")
        return losses, accs

    bad.evaluator.losses = poisoned
    with pytest.raises(NonFiniteLossError, match="last good state"):
        bad.fit()
    ck = read_checkpoint(tmp_path / "bad" / CHECKPOINT_NAME).state
    ref = read_checkpoint(tmp_path / "good" / CHECKPOINT_NAME).state
    assert ck["step"] == ref["step"] == k - 1
    assert ck["queries"] == ref["queries"] == (k - 1) * per
    _assert_same(ck["optimizer"], ref["optimizer"], "optimizer")  # BAR: the generator is rewound too
    _assert_same(ck["space"], ref["space"], "space")
    if method == "blackvip":
        for bn in ck["space"]["running"].values():
            assert bool(torch.isfinite(bn["mean"]).all() and torch.isfinite(bn["var"]).all())
    assert bad.batches == k - 1  # the trainer in memory too

    resumed = make(method, models, folder, 6 * per, output_dir=tmp_path / "bad")  # the NaN's cause removed
    resumed.load_checkpoint(tmp_path / "bad" / CHECKPOINT_NAME)
    resumed.fit()
    full = make(method, models, folder, 6 * per, output_dir=tmp_path / "full")
    full.fit()
    assert torch.equal(resumed.optimizer.point, full.optimizer.point)
    assert resumed.batches == full.batches == 6
    _assert_same(resumed.space.state_dict(), full.space.state_dict(), "space")
    assert _strip(records(tmp_path / "bad")) == _strip(records(tmp_path / "full"))


def test_bptvlm_partial_last_generation_is_its_own_step_and_resumes_exactly(models, folder, tmp_path):
    """12 images, batch 4: 3 queries per candidate, population 5: 15 per generation. A budget of 40
    ends with 3 of 5 candidates of generation 3, never told: its record is step 3, partial."""
    full = make("bptvlm", models, folder, 40, output_dir=tmp_path / "full", batch_size=4)
    full.fit()
    recs = records(tmp_path / "full")
    assert [r["step"] for r in recs] == [1, 2, 3]  # log_every = 1: one record per step number
    assert [r.get("partial", False) for r in recs] == [False, False, True]
    assert recs[-1]["evaluated"] == 3 and recs[-1]["queries"] == 39 and recs[-1]["generation"] == 3
    assert full.optimizer.step == 2 and len(full.optimizer.history) == 2  # pycma was not told
    half = make("bptvlm", models, folder, 30, output_dir=tmp_path / "half", batch_size=4)
    half.fit()  # its checkpoint: after generation 2, before the partial one
    assert read_checkpoint(tmp_path / "half" / CHECKPOINT_NAME).state["step"] == 2
    resumed = make("bptvlm", models, folder, 40, output_dir=tmp_path / "half", batch_size=4)
    resumed.load_checkpoint(tmp_path / "half" / CHECKPOINT_NAME)
    resumed.fit()
    assert _strip(records(tmp_path / "half")) == _strip(recs)
    assert torch.equal(resumed.optimizer.point, full.optimizer.point)
    assert torch.equal(resumed.optimizer.mean, full.optimizer.mean)
    # a larger budget from the final checkpoint finishes generation 3: its record replaces the partial one
    more = make("bptvlm", models, folder, 45, output_dir=tmp_path / "full", batch_size=4)
    more.load_checkpoint(tmp_path / "full" / CHECKPOINT_NAME)
    more.fit()
    recs = records(tmp_path / "full")
    assert [r["step"] for r in recs] == [1, 2, 3] and "partial" not in recs[-1]
    assert recs[-1]["queries"] == 45 and more.optimizer.step == 3
