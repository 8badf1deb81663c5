"""`RunGroup`: R runs (trainers on one model and task family) stepped together.

Each round every live run asks its optimiser for the candidates its own budget pays for; the
group computes all their losses together (zipfast.evaluate.group: one text pass for every text
candidate, one read per shared minibatch, the image tower's body batched over the image-side
runs) and tells each run its own. A run is otherwise what it is alone: its options, seeds,
optimiser state, budget and exact query accounting, log, checkpoints, step hooks and report, in
its own folder, bit for bit in fp32 on the CPU (tests/run/test_group.py). The ZIP runs that alone
would take the fused step (on CUDA by default, anywhere with ZIPFAST_FUSED_STEP=1) take it
together: one fused group step per shared text engine and shape, on CUDA captured as ONE CUDA
graph (zipfast.run.fused_group; unverified on a GPU). The difference from a run alone: its wall
time (`wall_time_s`, `time_s`) is the group's while it ran.

A run whose budget is spent, or whose next round does not fit, leaves the group; the others go
on. A run that fails (a non-finite loss: NonFiniteLossError, after writing its last good state)
leaves with its error, which `fit` returns in its place. SIGINT/SIGTERM/SIGHUP end the current
group round, write every live run's checkpoint and raise `GroupInterrupted`; the same runs,
resumed from their checkpoints (`Trainer.load_checkpoint`), continue bit for bit; `results` then
holds each stopped run's RunInterrupted.
"""

from __future__ import annotations

import contextlib
import time

from tqdm.auto import tqdm

from zipfast.evaluate.group import Query, losses_many
from zipfast.run.fused_group import FusedRounds
from zipfast.run.loop import Session
from zipfast.run.signals import RunInterrupted, Stopped, StopSignals


class GroupInterrupted(Stopped):
    """A run group stopped by a signal after writing every live run's checkpoint (runs: their
    RunInterrupted, each naming its checkpoint)."""

    def __init__(self, signum: int, runs: list[RunInterrupted]):
        self.runs = runs
        super().__init__(signum, f"; {len(runs)} run(s) saved their checkpoints")


class RunGroup:
    """trainers: `Trainer`s built on one model (their tasks built with one shared cache dict, so
    that runs of a data seed share its source); each holds its own output directory or none.
    progress: one bar for the group (queries of all runs). on_round(group, round seconds, live):
    called after every group round (benchmarks, tests)."""

    def __init__(self, trainers, progress: bool = True, desc: str = "group", on_round=None):
        self.trainers = list(trainers)
        self.progress, self.desc, self.on_round = progress, desc, on_round
        self.results: list = [None] * len(self.trainers)
        self.fused = FusedRounds()

    def fit(self) -> list:
        """Run every trainer to its budget → per trainer its report (dict) or the exception it left
        the group with. Raises GroupInterrupted on a stop signal (after every live run's checkpoint)."""
        with contextlib.ExitStack() as held:
            for t in self.trainers:
                held.enter_context(t.holding())
            return self._fit()

    def _fit(self) -> list:
        ts = self.trainers
        sessions = [Session(t, progress=False) for t in ts]
        bar = tqdm(total=sum(t.config.budget for t in ts), initial=sum(t.queries for t in ts), unit="query",
                   disable=not self.progress, dynamic_ncols=True, desc=self.desc)
        live = list(range(len(ts)))
        stop = StopSignals("the current group step").install()
        try:
            for i in live:
                sessions[i].start()
            while live:
                t0 = time.perf_counter()
                live = self._round(live, sessions, bar)
                if self.on_round is not None:
                    self.on_round(self, time.perf_counter() - t0, len(live))
                if stop.requested is not None:
                    break
                for i in live:
                    sessions[i].checkpoint_if_due()
            for i, s in enumerate(sessions):
                if not isinstance(self.results[i], Exception):
                    s.end_log()
        finally:
            stop.restore()
            bar.close()
            for s in sessions:
                s.close()
        stopped: list[RunInterrupted] = []
        for i, (t, s) in enumerate(zip(ts, sessions)):
            if isinstance(self.results[i], Exception):
                continue
            try:
                self.results[i] = s.finish(stop.requested)
            except RunInterrupted as e:
                self.results[i] = e  # read by callers that finish each run on its own (bench-paper)
                stopped.append(e)
        if stop.requested is not None:
            raise GroupInterrupted(stop.requested, stopped)
        return self.results

    def _round(self, live: list[int], sessions, bar) -> list[int]:
        """One group round → the runs still live after it: the fused steps together, then the plain
        rounds' losses together; each run's round is the one it would take alone."""
        ts = self.trainers
        fused = [i for i in live if ts[i]._fused_fits(ts[i].config.budget - ts[i].queries)]
        done = self.fused.round(ts, fused)
        done.update(self._plain(live, fused))
        still = []
        for i in live:
            if i not in done:  # nothing left to run
                continue
            if isinstance(done[i], Exception):
                self.results[i] = done[i]
                continue
            spent, rec = done[i]
            sessions[i].record(spent, rec)
            bar.update(spent)
            still.append(i)
        return still

    def _plain(self, live: list[int], skip: list[int]) -> dict:
        """The plain rounds of the live runs not in `skip` → {index: (queries spent, record) or the
        exception it leaves with}; runs with nothing left to ask are left out."""
        ts = self.trainers
        asked, done = {}, {}
        for i in live:
            t = ts[i]
            remaining = t.config.budget - t.queries
            if i in skip or t.optimizer is None or remaining <= 0:
                continue
            try:
                pending = t._ask(remaining)
            except Exception as e:
                done[i] = e
                continue
            if pending is not None:
                asked[i] = pending
        order = list(asked)
        answers = losses_many([Query(ts[i].evaluator, ts[i].space, asked[i].cand, asked[i].batch_index)
                               for i in order])
        for i, got in zip(order, answers):
            t, p = ts[i], asked[i]
            try:
                if isinstance(got, Exception):
                    t.optimizer.discard()
                    t.optimizer.load_state_dict(p.before, getattr(t.optimizer.point, "device", "cpu"))
                    t.evaluator.restore(t.space, p.held)
                    raise got
                done[i] = t._tell(p, *got)
            except Exception as e:
                done[i] = e
        return done
