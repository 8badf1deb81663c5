"""Running a list of `zipfast train` jobs: in this process (default) or as Ray tasks.

A job is the argument list of one `zipfast train` call and its output folder. Jobs whose folder
already holds a result are skipped (the official scripts skip existing output folders; zipfast
reruns a folder without a result, which resumes from its checkpoint). With Ray each job is one
task with its CPU/GPU request; results are gathered the same way in both modes. In this process,
zipfast.paper.grouped steps the training jobs that share a task as run groups. A job's output goes
to its log.txt, not to the terminal, which shows the progress bar and one line per failed job.
A stop signal (SIGINT, SIGTERM, SIGHUP) ends the whole run, not only the job it stopped:
`JobsInterrupted`, which the CLI turns into one line with the command that continues.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from zipfast.errors import ConfigError
from zipfast.paper.dassl_log import DasslLog
from zipfast.paper.official import LOG_ONLY, RESULT_FILE
from zipfast.run.signals import STOP_SIGNALS, ManyInterrupted, Stopped, exit_code

log = logging.getLogger("zipfast.paper")


@dataclass
class Job:
    argv: list[str]          # arguments of `zipfast train`
    output_dir: str
    meta: dict = field(default_factory=dict)  # protocol, method, dataset, seed, role

    @property
    def done(self) -> bool:
        return (Path(self.output_dir) / RESULT_FILE).is_file()


def _logs(folder: Path) -> dict:
    return {f: (f.stat().st_mtime_ns, f.stat().st_size) for f in folder.glob("log.txt*")} if folder.is_dir() else {}


def run_job(entry, argv: list[str], output_dir: str, fn=None, log_path=None) -> tuple[int, str | None, str]:
    """One `zipfast train` call through entry (the CLI's main, passed in: this module sits below
    the CLI; Ray pickles it by reference), its output kept off the terminal: the job writes its Dassl
    lines to its log only (train --log-only), and anything else it prints (warnings, its error line,
    a traceback) is appended to that log. fn(args): run instead of `train` (a phase of a grouped job,
    zipfast.paper.grouped), whose log is log_path. Returns (exit status, the log's path, the last line
    printed)."""
    out, buf, code = Path(output_dir), io.StringIO(), None
    before = _logs(out)
    try:
        with redirect_stdout(buf), redirect_stderr(buf):
            code = entry(["train", LOG_ONLY, *argv], **({"fn": fn} if fn is not None else {}))
    finally:  # also when interrupted: what it printed stays in its log
        text = buf.getvalue()
        written = [f for f, stamp in _logs(out).items() if before.get(f) != stamp]
        path = Path(log_path) if log_path else max(written, key=lambda f: f.stat().st_mtime_ns) if written else None
        if path is None and (text.strip() or code != 0):  # failed before its log opened: a new one, Dassl's naming
            dlog = DasslLog(out, echo=False)
            dlog.close()
            path = dlog.path
        if text:
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
    return code, None if path is None else str(path), last


def stop_signal(code) -> int | None:
    """The signal a job's exit status says stopped it (129/130/143: SIGHUP/SIGINT/SIGTERM), else None."""
    return next((s for s in STOP_SIGNALS if code == exit_code(s)), None)


def stop_if_signalled(results) -> None:
    """Raise Stopped when a job of results (run_job's) was stopped by a signal: the signal meant the
    whole command, so no further job starts (the job's own line, in its log, names its checkpoint)."""
    signum = next((s for s in (stop_signal(r[0]) for r in results) if s is not None), None)
    if signum is not None:
        raise Stopped(signum)


class JobsInterrupted(ManyInterrupted):
    """A signal stopped the jobs; each job it stopped keeps its last checkpoint (its log says where)
    and the same command continues them (finished jobs are skipped)."""

    def __init__(self, cause: KeyboardInterrupt, done: int, total: int):
        if hasattr(cause, "signum"):  # the stopped jobs wrote their checkpoints and stop lines
            kept = "their last checkpoints (each job's log.txt says where)"
        else:  # SIGINT outside a job's step loop (Ray's driver; a second one, which aborts at once)
            kept = "the last checkpoints they wrote before it"
        super().__init__(cause, lambda name: f"stopped by {name}: {done} of {total} jobs finished; the jobs in "
                                             f"progress keep {kept}")


def report_failure(job: Job, result: tuple) -> None:
    """One line on the terminal for a failed job: which, its exit status and last line, its log (none
    for a job a signal stopped: the run's own last line says so)."""
    code, path, last = result
    if stop_signal(code) is not None:
        return
    m = job.meta
    label = " ".join(str(x) for x in (m.get("method"), m.get("dataset"), f"seed {m.get('seed')}" if "seed" in m else None,
                                      f"({m['role']})" if "role" in m else None) if x) or job.output_dir
    with tqdm.external_write_mode(file=sys.stderr):  # above the progress bar, not through it
        log.warning("job %s failed with exit %s%s; its log: %s", label, code, f" ({last})" if last else "", path)


class LocalRunner:
    name = "in-process"

    def __init__(self, entry):
        self.entry = entry

    def run(self, jobs: list[Job], progress: bool = True) -> list[tuple]:
        """run_job's result for each job, in order; a failure is reported as it happens."""
        results = []
        with tqdm(jobs, desc="jobs", unit="job", disable=not progress) as bar:
            for job in bar:
                results.append(run_job(self.entry, job.argv, job.output_dir))
                if results[-1][0] != 0:
                    report_failure(job, results[-1])
                stop_if_signalled(results[-1:])
        return results


class RayRunner:
    """Jobs as Ray tasks. address: the --ray value: "local" (--ray alone) joins the cluster named by
    RAY_ADDRESS or the one last started on this machine with `ray start`, and else starts a local
    one for this run (ray.init() without an address); "auto" joins such a cluster and fails if there
    is none; "HOST:PORT" or "ray://HOST:PORT" that cluster. Nothing is started when this process has
    already joined one (ray.init() before)."""

    name = "ray"

    def __init__(self, entry, address: str = "local", cpus_per_job: float = 1, gpus_per_job: float = 0, fn=None):
        if address not in ("local", "auto") and ":" not in address:
            # e.g. `--ray TRAINER.X 5`: argparse reads the first KEY as --ray's value
            raise ConfigError(f"--ray {address!r} is not a Ray address: give --ray alone (or --ray local), --ray auto, "
                              f"--ray HOST:PORT or --ray ray://HOST:PORT; to write KEY VALUE pairs after it, use "
                              f"--ray local")
        try:
            import ray
        except ImportError as e:
            raise ConfigError("--ray needs Ray, which is not installed: pip install 'zipfast[ray]', or leave --ray "
                              "out to run the jobs one after another in this process") from e
        self.ray, self.entry = ray, entry
        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "local" else address, ignore_reinit_error=True)
            except (ConnectionError, RuntimeError, ValueError) as e:
                if address == "auto":
                    where = (f"RAY_ADDRESS={os.environ['RAY_ADDRESS']!r} does not answer" if os.environ.get("RAY_ADDRESS")
                             else "RAY_ADDRESS is unset and none was started on this machine")
                    raise ConfigError(f"--ray auto: no running Ray cluster was found ({where}); pass --ray (or "
                                      f"--ray local) to start a local one, or start a cluster first with "
                                      f"`ray start --head`") from e
                raise ConfigError(f"cannot join the Ray cluster at --ray {address!r}: {e}; check the address, start the "
                                  f"cluster with `ray start --head`, or pass --ray alone for a local one") from e
        # fn(entry, argv, output dir) → (exit status, log path, last line): a job (default run_job)
        self.task = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job)(fn or run_job)

    def run(self, jobs: list[Job], progress: bool = True) -> list[tuple]:
        refs: list = []
        pending = None
        with tqdm(total=len(jobs), desc="jobs (ray)", unit="job", disable=not progress) as bar:
            try:
                refs += [self.task.remote(self.entry, job.argv, job.output_dir) for job in jobs]
                which, pending = dict(zip(refs, jobs)), list(refs)
                while pending:
                    ready, pending = self.ray.wait(pending, num_returns=1)
                    for ref in ready:
                        result = self.ray.get(ref)
                        if result[0] != 0:
                            report_failure(which[ref], result)
                    bar.update(len(ready))
            except KeyboardInterrupt:  # the jobs not yet done never start, or stop (Ray interrupts them)
                for ref in refs if pending is None else pending:  # stopped while submitting: all so far
                    self.ray.cancel(ref)
                raise
        return self.ray.get(refs)


def run_stages(stages: list[list[Job]], runner, progress: bool = True) -> dict:
    """Run stage after stage (a stage may read the previous one's prompts); skip finished jobs.
    Returns {"ran": n, "skipped": n, "failed": [output dirs], "logs": [their logs],
    "exit_codes": [the failed jobs' exit codes]}. A stop signal ends the run: JobsInterrupted."""
    try:
        return _run_stages(stages, runner, progress)
    except KeyboardInterrupt as e:
        everything = [j for jobs in stages for j in jobs]
        raise JobsInterrupted(e, sum(j.done for j in everything), len(everything)) from None


def _run_stages(stages: list[list[Job]], runner, progress: bool) -> dict:
    ran, skipped, failed, logs, exit_codes = 0, 0, [], [], []
    for jobs in stages:
        todo = [j for j in jobs if not j.done]
        for j in jobs:
            if j.done:
                log.info("the results exist at %s (so skip this job)", j.output_dir)
        skipped += len(jobs) - len(todo)
        if not todo:
            continue
        results = runner.run(todo, progress)
        ran += len(todo)
        bad = [(j, r) for j, r in zip(todo, results) if r[0] != 0]
        failed += [j.output_dir for j, _ in bad]
        logs += [r[1] for _, r in bad]
        exit_codes += [r[0] for _, r in bad]
    return {"ran": ran, "skipped": skipped, "failed": failed, "logs": logs, "exit_codes": exit_codes}
