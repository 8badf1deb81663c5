"""The budgeted training loop of the one trainer (zipfast.run.trainer.Trainer), for every method.

`BudgetedRun.fit()` owns what does not depend on the method: the budget check, the run
directory (locked for the run, its log cut back to a resumed checkpoint's step), the progress
bar, the log (every `log_every` steps and always the last), periodic and final checkpoints,
step hooks, clean stops on SIGINT/SIGTERM/SIGHUP (`RunInterrupted` after a checkpoint) and the
final report. A trainer supplies one round: `_round(remaining) -> (queries spent, record)`.
"""

from __future__ import annotations

import contextlib
import time

import torch
from tqdm.auto import tqdm

from zipfast.config import ConfigError, OFFICIAL_KEYS
from zipfast.errors import UserError
from zipfast.io import save_json
from zipfast.run.rundir import RunDir
from zipfast.run.signals import RunInterrupted, StopSignals


class NonFiniteLossError(UserError):
    """A loss became NaN/inf; the message says where the last good state is and what to change."""


def snapshot(state):
    """A deep copy of a state dict (tensors cloned): what `raise_if_nonfinite` restores."""
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(snapshot(v) for v in state)
    return state


def raise_if_nonfinite(losses: torch.Tensor, optimizer, before: dict, checkpoint, save, when: str, state: str,
                       hint: str = "") -> None:
    """Return when every loss [K] is finite. Otherwise put the optimiser back to `before` (its
    `snapshot(state_dict())` taken before the ask: its point, step, generators, stage…), write
    that last good state (`save(checkpoint)`, when there is a checkpoint path) and raise
    NonFiniteLossError naming the step (`when`), the state saved and the hint."""
    if bool(torch.isfinite(losses).all()):
        return
    optimizer.discard()
    optimizer.load_state_dict(before, getattr(optimizer.point, "device", "cpu"))
    where = ""
    if checkpoint is not None:
        save(checkpoint)
        where = f"; the last good state ({state}) is in {checkpoint}"
    raise NonFiniteLossError(f"non-finite loss {when} (losses {losses.tolist()}){where}" + (f". {hint}" if hint else ""))


def run_fallbacks(*engines) -> list[dict]:
    """Every substitution of a run, for its report, as {what, requested, used, why}: the engines'
    (precision, shared-prefix pass …) and the op registry's ("op <name>": a faster backend not
    available, or one that failed its self-check; "op fused_step": the CUDA graph rejected)."""
    from zipfast.ops import registry

    out = []
    for f in (f for e in engines if e is not None for f in getattr(e, "fallbacks", [])):
        if f not in out:  # BPT-VLM's text and image engines make the same precision substitution
            out.append(f)
    seen = {f["what"] for f in out}
    for fb in registry.fallbacks():
        what = f"op {fb['op']}"
        if what not in seen:
            seen.add(what)
            out.append({"what": what, "requested": "auto", "used": fb["backend"], "device": fb["device"],
                        "why": "; ".join(f"{b}: {w}" for b, w in fb["skipped"].items())})
    return out


def as_run_dir(output_dir, overwrite: bool) -> RunDir | None:
    """A RunDir for an output directory given as a path or a RunDir (None: no outputs)."""
    if isinstance(output_dir, RunDir):
        return output_dir
    return RunDir(output_dir, "overwrite" if overwrite else "fresh") if output_dir else None


# The keys of every run's report.json, whatever the method (one schema for both trainers).
REPORT_KEYS = ("method", "config", "method_config", "seed", "queries", "steps", "budget", "wall_time_s",
               "queries_per_s", "train_loss", "train_acc", "test_acc", "n_classes", "param_dim", "template",
               "backend", "precision", "query_precision", "fallbacks", "activation", "adjustments", "device",
               "threads", "versions")


class BudgetedRun:
    """Mixin of the trainers. The trainer sets: config (TrainConfig), run_dir (RunDir | None),
    progress, queries, elapsed, last_record, step_hooks, model, classnames, template, device,
    adjustments, engine, and defines `step`, `_round`, `save_checkpoint`, `evaluate`, and for the
    report `method_config()`, `param_dim`, `engines` and `query_precision`; `_prepare_rounds` is
    optional. step_hooks: callables hook(trainer, record) after every round, optionally with
    on_start / on_end."""

    loop_label = "run"

    @property
    def checkpoint_path(self):
        return self.run_dir.checkpoint if self.run_dir is not None else None

    def _round(self, remaining: int) -> tuple[int, dict | None]:
        """Spend at most `remaining` queries on one round → (queries spent, the round's log record,
        or None when the round produced none to show). 0 spent ends the run."""
        raise NotImplementedError

    def _prepare_rounds(self) -> None:
        """Called once at the start of fit(), inside the lock (build static buffers, set modes…)."""

    def _mark_resumed(self, path) -> None:
        """A checkpoint was loaded: the next fit() continues the run in its output directory."""
        if self.run_dir is not None and not self.run_dir.held:
            self.run_dir.mode, self.run_dir.resume_from = "resume", path

    def fit(self) -> dict:
        """Run rounds until the query budget is spent (or no round fits); returns the final report.

        Holds the output directory's lock throughout. SIGINT/SIGTERM/SIGHUP end the current
        round, save a checkpoint and raise `RunInterrupted` (see zipfast.run.signals).
        """
        with self.holding():
            return self._fit()

    @contextlib.contextmanager
    def holding(self):
        """The budget checked against the queries already spent, then the output directory locked
        (unless the caller holds it) and its log cut back to the current step, until the block ends."""
        if self.queries > self.config.budget:
            raise ConfigError(
                f"{OFFICIAL_KEYS['budget']} (budget) {self.config.budget} is below the {self.queries} queries this "
                f"run has already spent (step {self.step}); pass a budget of at least {self.queries} to continue it, "
                "or evaluate its checkpoint with `zipfast eval`")
        run = self.run_dir
        owned = run is not None and not run.held
        if owned:
            run.acquire()
        try:
            if run is not None:
                run.mode = "resume"  # the directory now holds this run: a later fit() continues it
                run.truncate_log(self.step)
            yield self
        finally:
            if owned:
                run.release()

    def _fit(self) -> dict:
        session = Session(self)
        stop = StopSignals("the current step").install()
        try:
            session.start()
            while (remaining := self.config.budget - self.queries) > 0:
                spent, rec = self._round(remaining)
                if spent == 0:
                    break
                session.record(spent, rec)
                if stop.requested is not None:
                    break
                session.checkpoint_if_due()
            session.end_log()
        finally:
            stop.restore()
            session.close()
        return session.finish(stop.requested)

    def report(self, test_acc: float | None = None) -> dict:
        """The run's report.json: REPORT_KEYS, for every method. query_precision is what the
        training queries ran (BlackVIP's official autocast), precision what the test split ran."""
        from zipfast.env import versions
        from zipfast.models import activation, load_notes

        c, rec = self.config, self.last_record or {}
        values = {
            "method": c.method, "config": c.to_dict(), "method_config": self.method_config(), "seed": c.seed,
            "queries": self.queries, "steps": self.step, "budget": c.budget, "wall_time_s": round(self.elapsed, 3),
            "queries_per_s": round(self.queries / self.elapsed, 2) if self.elapsed > 0 else None,
            "train_loss": rec.get("loss"), "train_acc": rec.get("train_acc"), "test_acc": test_acc,
            "n_classes": len(self.classnames), "param_dim": self.param_dim, "template": self.template,
            "backend": self.engine.name, "precision": self.engine.precision, "query_precision": self.query_precision,
            "fallbacks": run_fallbacks(*self.engines),  # every substitution, also logged
            "activation": activation(self.model), "adjustments": [*load_notes(self.model), *self.adjustments],
            "device": str(self.device), "threads": torch.get_num_threads(), "versions": versions()}
        return {k: values[k] for k in REPORT_KEYS}

    def _call_hooks(self, name: str, *args) -> None:
        """Step hooks may also have on_start(trainer) (called once the run directory is held, before
        the first round) and on_end(trainer, test_acc) (with the final test accuracy, % , of a run
        not stopped by a signal). Their time is not training time."""
        for hook in self.step_hooks:
            method = getattr(hook, name, None)
            if method is not None:
                method(self, *args)

    def _tick(self) -> float:
        """Training time so far (s), excluding time before a resume's fit()."""
        self.elapsed = time.perf_counter() - self._start
        return self.elapsed


class Session:
    """One run's `fit()` between its lock and its report, apart from the rounds themselves: its log,
    progress bar, step hooks, periodic checkpoints and the end (final checkpoint, then
    `RunInterrupted` or the test evaluation and report.json). `BudgetedRun._fit` drives one session;
    a run group (zipfast.run.group) drives one per run, each run's rounds evaluated together."""

    def __init__(self, run: BudgetedRun, progress: bool | None = None):
        self.run, self.rounds, self.unlogged = run, 0, None
        self.log = run.run_dir.open_log() if run.run_dir is not None else None
        show = run.progress if progress is None else progress
        self.bar = tqdm(total=run.config.budget, initial=run.queries, unit="query", disable=not show,
                        dynamic_ncols=True, desc=run.loop_label)

    def start(self) -> None:
        run = self.run
        run._call_hooks("on_start")
        run._start = time.perf_counter() - run.elapsed  # training time: hooks' evaluations excluded
        run._prepare_rounds()

    def record(self, spent: int, rec: dict | None) -> None:
        """After a round that spent `spent` queries: its record (None: nothing to show) to the hooks,
        the log (every log_every steps) and the bar."""
        run, c = self.run, self.run.config
        self.rounds += 1
        self.bar.update(spent)
        if rec is None:
            return
        run.last_record = self.unlogged = rec
        t = time.perf_counter()
        for hook in run.step_hooks:
            hook(run, rec)
        run._start += time.perf_counter() - t
        if self.log is not None and rec["step"] % c.log_every == 0:
            self.log.write(rec)
            self.unlogged = None
        self.bar.set_postfix(loss=f"{rec['loss']:.4f}", refresh=False)

    def checkpoint_if_due(self) -> None:
        run, c = self.run, self.run.config
        if run.checkpoint_path is not None and c.checkpoint_every and run.step % c.checkpoint_every == 0:
            run.save_checkpoint(run.checkpoint_path)

    def end_log(self) -> None:
        """After the last round: it is always logged."""
        run, log = self.run, self.log
        if log is not None and self.unlogged is not None:
            log.write(self.unlogged)
        last = run.last_record
        if log is not None and self.rounds == 0 and last is not None and last.get("step", 0) > run.step:
            # a resume with nothing left to run: the record past the checkpoint's step that the
            # cut-back dropped (BPT-VLM's partial last generation) is still the run's last word
            log.write(last)

    def close(self) -> None:
        """The log and the bar closed (also after an error)."""
        self.bar.close()
        if self.log is not None:
            self.log.close()
        self.log = None

    def finish(self, stopped: int | None) -> dict:
        """The final checkpoint; then RunInterrupted (stopped: the signal) or the test evaluation,
        the hooks' on_end and report.json (returned)."""
        run = self.run
        ckpt = run.checkpoint_path
        if ckpt is not None:
            run.save_checkpoint(ckpt)
        if stopped is not None:
            raise RunInterrupted(stopped, run.step, run.queries, ckpt)
        test_acc = run.evaluate()
        run._call_hooks("on_end", test_acc)
        report = run.report(test_acc=test_acc)
        if run.run_dir is not None:
            save_json(report, run.run_dir.report)
        return report
