"""Running a list of `zipfast train` jobs: in this process (default) or as Ray tasks.

A job is the argument list of one `zipfast train` call and its output folder. Jobs whose folder
already holds a result are skipped (the official scripts skip existing output folders; zipfast
reruns a folder without a result, which resumes from its checkpoint). With Ray each job is one
task with its CPU/GPU request; results are gathered the same way in both modes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from zipfast.paper.official import RESULT_FILE

log = logging.getLogger("zipfast.paper")


@dataclass
class Job:
    argv: list[str]          # arguments of `zipfast train`
    output_dir: str
    meta: dict = field(default_factory=dict)  # protocol, method, dataset, seed, role

    @property
    def done(self) -> bool:
        return (Path(self.output_dir) / RESULT_FILE).is_file()


def run_job(entry, argv: list[str]) -> int:
    """One `zipfast train` call through entry (the CLI's main, passed in: this module sits below
    the CLI; Ray pickles it by reference); returns its exit status."""
    return entry(["train", *argv])


class LocalRunner:
    name = "in-process"

    def __init__(self, entry):
        self.entry = entry

    def run(self, jobs: list[Job], progress: bool = True) -> list[int]:
        codes = []
        for job in tqdm(jobs, desc="jobs", unit="job", disable=not progress):
            codes.append(run_job(self.entry, job.argv))
        return codes


class RayRunner:
    """Jobs as Ray tasks on the cluster at `address` ("auto", "ray://host:port", or None = the
    instance this process already joined / a new local one)."""

    name = "ray"

    def __init__(self, entry, address: str | None = "auto", cpus_per_job: float = 1, gpus_per_job: float = 0):
        try:
            import ray
        except ImportError as e:
            raise ImportError("--ray needs Ray: pip install 'zipfast[ray]'") from e
        self.ray, self.entry = ray, entry
        if not ray.is_initialized():
            try:
                ray.init(address=address, ignore_reinit_error=True)
            except (ConnectionError, RuntimeError, ValueError) as e:
                from zipfast.config import ConfigError

                raise ConfigError(f"cannot join the Ray cluster at --ray {address!r}: {e}; start one with "
                                  f"`ray start --head` or pass its address (ray://host:10001)") from e
        self.task = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job)(run_job)

    def run(self, jobs: list[Job], progress: bool = True) -> list[int]:
        refs = [self.task.remote(self.entry, job.argv) for job in jobs]
        pending, bar = list(refs), tqdm(total=len(refs), desc="jobs (ray)", unit="job", disable=not progress)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            bar.update(len(ready))
        bar.close()
        return self.ray.get(refs)


def run_stages(stages: list[list[Job]], runner, progress: bool = True) -> dict:
    """Run stage after stage (a stage may read the previous one's prompts); skip finished jobs.
    Returns {"ran": n, "skipped": n, "failed": [output dirs], "exit_codes": [the failed jobs' exit codes]}."""
    ran, skipped, failed, exit_codes = 0, 0, [], []
    for jobs in stages:
        todo = [j for j in jobs if not j.done]
        for j in jobs:
            if j.done:
                log.info("the results exist at %s (so skip this job)", j.output_dir)
        skipped += len(jobs) - len(todo)
        if not todo:
            continue
        codes = runner.run(todo, progress)
        ran += len(todo)
        failed += [j.output_dir for j, c in zip(todo, codes) if c != 0]
        exit_codes += [c for c in codes if c != 0]
    return {"ran": ran, "skipped": skipped, "failed": failed, "exit_codes": exit_codes}
