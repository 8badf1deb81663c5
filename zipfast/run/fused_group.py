"""A run group's fused rounds (zipfast.run.group): the runs whose round alone would be ZIP's fused
step (`Trainer._fused_fits`: ZIPFAST_FUSED_STEP, SPSA on the philox stream, the batched engine, no
step hooks, a whole step of 2q queries left) take it together: one `FusedZIPGroupStep`
(zipfast.engine.group_step) per shared text engine and shape (q, batch size, feature width), so
one text pass for all of them per round (on CUDA: one captured graph).

A group step is rebuilt (on CUDA: recaptured) when its set of runs changes (a run finished, failed,
or its next round no longer fits a fused step and so is a plain one, as alone). Each run's
minibatch is its `evaluator.fused_batch(k)`, read once for the runs that share source, step, seed
and batch size; then each run's `Trainer._fused_stepped` applies the step exactly as alone
(optimiser state, queries, the record on log/checkpoint/final steps, NonFiniteLossError).
"""

from __future__ import annotations

import logging

from zipfast.engine.group_step import FusedZIPGroupStep

log = logging.getLogger("zipfast.run.group")


class _Batches:
    """`evaluator.fused_batch(k)` read once per (source, step, seed, batch size, device) in one round."""

    def __init__(self):
        self.memo: dict = {}

    def get(self, ev, k: int):
        c = ev.config
        key = (id(ev.source), k, c.seed, c.batch_size, str(ev.device))
        if key not in self.memo:
            self.memo[key] = ev.fused_batch(k)
        return self.memo[key]


class FusedRounds:
    """A run group's fused steps, one per (engine, q, minibatch shape), kept across rounds while
    their runs stay the same."""

    def __init__(self):
        self.steps: dict[tuple, FusedZIPGroupStep] = {}

    def round(self, trainers, members: list[int]) -> dict:
        """One fused step of each trainer in `members` (indices; each `_fused_fits` its budget) →
        {index: (queries spent, record or None), or the exception the run leaves the group with}."""
        out: dict = {}
        batches, got, by_key = _Batches(), {}, {}
        for i in members:
            t = trainers[i]
            try:
                got[i] = batches.get(t.evaluator, t.step + 1)
            except Exception as e:  # this run's failure is its own: the others go on
                out[i] = e
                continue
            f = t._fused
            by_key.setdefault((id(f.engine), f.q, tuple(f.feats.shape)), []).append(i)
        self.steps = {key: s for key, s in self.steps.items() if key in by_key}
        for key, ids in by_key.items():
            try:
                self._step(key, ids, trainers)([got[i] for i in ids])
            except Exception as e:  # the shared step failed: every run in it leaves with the error
                self.steps.pop(key, None)
                out.update(dict.fromkeys(ids, e))
                continue
            for i in ids:
                try:
                    out[i] = trainers[i]._fused_stepped()
                except Exception as e:
                    out[i] = e
        return out

    def _step(self, key: tuple, ids: list[int], trainers) -> FusedZIPGroupStep:
        """The group step of these runs: the one held, or a new one when its runs changed."""
        runs = [trainers[i]._fused for i in ids]
        held = self.steps.get(key)
        if held is None or len(held.steps) != len(runs) or any(a is not b for a, b in zip(held.steps, runs)):
            held = self.steps[key] = FusedZIPGroupStep(runs)
            log.info("run group: one fused step for runs %s%s", ids,
                     " (captured anew as a CUDA graph on its first step)" if held.use_graph else "")
        return held
