"""bench-paper's in-process runner: the training jobs of a stage that share a model (`zipfast.run.task.group_key`:
model, weights, dataset, shots and, on a random init, the seed) stepped together in run groups
(zipfast.run.group) of at most group_size; every other job (evaluations, zero-shot, a job whose settings
do not read, a task no other job shares) runs alone through `run_job`, as before.

A grouped job runs in three phases, each through the CLI's entry so that its errors become the exit
code and the line the job alone would give, appended to its own log (`run_job`): prepare
(`official.prepare` on the group's one cache dict: one load of the task, one data source), the group's
fit, then finish (Dassl's end lines, the test, result.json) or the error the run left the group with.
Each folder holds what the job writes alone; the task leaves memory after its last group. A stop
signal ends the group's round: every live job writes its checkpoint and its stop line, and no other
job starts (`jobs.stop_if_signalled`).
"""

from __future__ import annotations

from tqdm.auto import tqdm

from zipfast.paper import official, sweep as jobs
from zipfast.run import task


class GroupedRunner(jobs.LocalRunner):
    """entry: the CLI's main; parser(): its parser (reads each job's settings before any load)."""

    def __init__(self, entry, parser, group_size: int = 32):
        super().__init__(entry)
        self.parser, self.group_size = parser, group_size

    def run(self, todo: list, progress: bool = True) -> list[tuple]:
        """run_job's result for each job, in order; a failure is reported as it happens."""
        cfgs = {i: _config(j, self.parser) for i, j in enumerate(todo)}
        ids = [i for i, c in cfgs.items() if c is not None]
        groups = [[ids[k] for k in g] for g in task.plan_groups([cfgs[i] for i in ids], self.group_size)]
        units = sorted([g for g in groups if len(g) > 1] + [[i] for i in range(len(todo))
                                                             if not any(i in g for g in groups if len(g) > 1)])
        results: list = [None] * len(todo)
        cache: dict = {}
        with tqdm(total=len(todo), desc="jobs", unit="job", disable=not progress) as bar:
            for n, unit in enumerate(units):
                if len(unit) == 1:
                    got = [jobs.run_job(self.entry, todo[unit[0]].argv, todo[unit[0]].output_dir)]
                else:
                    got = self._group([todo[i] for i in unit], cache, progress, f"group of {len(unit)} jobs")
                    later = {task.task_key(cfgs[i]) for u in units[n + 1:] if len(u) > 1 for i in u}
                    for i in {task.task_key(cfgs[i]): i for i in unit}.values():  # tasks whose last group this was
                        if task.task_key(cfgs[i]) not in later:
                            task.release(cache, cfgs[i])
                for i, r in zip(unit, got):
                    results[i] = r
                    if r[0] != 0:
                        jobs.report_failure(todo[i], r)
                jobs.stop_if_signalled(got)  # each stopped job wrote its line to its log; no other job starts
                bar.update(len(unit))
        return results

    def _group(self, group: list, cache: dict, progress: bool, desc: str) -> list[tuple]:
        from zipfast.run.group import GroupInterrupted, RunGroup

        held, out = {}, {}
        try:
            for k, job in enumerate(group):
                def prepare(args, k=k):
                    official.refuse_unused_flags(args)
                    held[k] = official.prepare(args, cache)
                    return 0
                got = jobs.run_job(self.entry, job.argv, job.output_dir, fn=prepare)
                jobs.stop_if_signalled([got])  # stopped while loading: no group step starts
                if got[0] != 0:
                    out[k] = got
            live = sorted(held)
            runs = RunGroup([held[k].trainer for k in live], progress=progress, desc=desc)
            try:
                ends = runs.fit()
            except GroupInterrupted:  # every live run saved its checkpoint; each job says so, as alone
                ends = runs.results
            for k, end in zip(live, ends):
                def finish(args, p=held[k], end=end):
                    if isinstance(end, BaseException):
                        raise end
                    p.finish(end)
                    return 0
                out[k] = jobs.run_job(self.entry, group[k].argv, group[k].output_dir, fn=finish,
                                      log_path=held[k].dlog.path)
                if not isinstance(end, BaseException):  # stopped in its test: the others' tests wait for the rerun
                    jobs.stop_if_signalled([out[k]])
        finally:
            for p in held.values():
                p.close()
        return [out[k] for k in range(len(group))]


def _config(job, parser):
    """A training job's TrainConfig, or None: an evaluation, or settings that do not read (the job alone
    reports them)."""
    if "--eval-only" in job.argv:
        return None
    try:
        return official.job_config(job.argv, parser)
    except (Exception, SystemExit):  # noqa: BLE001 - run alone, it fails with its own line and exit code
        return None
