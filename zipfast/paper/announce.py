"""What bench-paper says before its first job: per method the jobs to run and their queries, read
from each job's own settings; a method whose settings fail stops the protocol before any job."""

from __future__ import annotations

import sys

from zipfast.errors import ConfigError, UserError

def job_budget(argv: list[str], parser) -> tuple[int | None, str | None]:
    """(query budget, problem) of a bench-paper training job (its `zipfast train` arguments), read from
    its config and overrides as the job will (no model or data loaded): a user error in them is the
    problem (every job of the method would fail on it); (None, None) if there is no parser."""
    from zipfast.paper import official

    if parser is None:
        return None, None
    try:
        return official.job_config(argv, parser).budget, None
    except UserError as e:
        return None, " ".join(str(e).split())
    except (Exception, SystemExit):  # noqa: BLE001 - the count is a courtesy; the job reports its own error
        return None, None


def announce_jobs(protocol: str, stages, parser) -> None:
    """Before bench-paper's first job, on stderr: per method the jobs to run (training runs × queries,
    evaluations) and the total queries. No time: it depends on the datasets, the model and the device."""
    jobs = [j for stage in stages for j in stage]
    todo = [j for j in jobs if not j.done]
    budgets: dict[str, int | None] = {}
    problems: dict[str, str | None] = {}
    per: dict[str, dict] = {}
    for j in todo:
        m = j.meta["method"]
        row = per.setdefault(m, {"train": 0, "eval": 0, "queries": 0})
        if "--eval-only" in j.argv:
            row["eval"] += 1
            continue
        if m not in budgets:  # every training job of a method shares its config and overrides
            budgets[m], problems[m] = job_budget(j.argv, parser)
        row["train"] += 1
        row["queries"] = None if budgets[m] is None or row["queries"] is None else row["queries"] + budgets[m]
    bad = {m: p for m, p in problems.items() if p}
    if bad:  # fail whole before any job: each of these jobs would fail on the same settings
        raise ConfigError(f"bench-paper {protocol}: no job started: the settings of " + "; ".join(
            f"{m} ({per[m]['train']} training job{'s' if per[m]['train'] != 1 else ''}): {p}" for m, p in bad.items()))
    done = len(jobs) - len(todo)
    print(f"zipfast bench-paper {protocol}: {len(todo)} job{'s' if len(todo) != 1 else ''} to run"
          + (f", {done} finished (skipped)" if done else ""), file=sys.stderr, flush=True)
    width = max((len(m) for m in per), default=0)
    for m, row in per.items():
        parts = []
        if row["train"]:
            each = f"{budgets[m]:,}" if budgets[m] is not None else "?"
            parts.append(f"{row['train']} training run{'s' if row['train'] != 1 else ''} × {each} queries")
        if row["eval"]:
            parts.append(f"{row['eval']} evaluation{'s' if row['eval'] != 1 else ''} (no queries)")
        print(f"  {m:<{width}}  {', '.join(parts)}", file=sys.stderr)
    known = [r["queries"] for r in per.values()]
    total = f"{sum(known):,}" if all(q is not None for q in known) else "unknown"
    print(f"  total: {total} queries; no time estimate (it depends on the datasets, the model and the device: "
          "`zipfast compare --data FOLDER --methods ... --seeds 1` prints measured per-query times)",
          file=sys.stderr, flush=True)
