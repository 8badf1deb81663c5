"""Running a sweep: its runs (zipfast.sweep.grid.RunSpec) in run groups, each run in its own folder.

Runs that share a model (the same model, weights, task and, on a random init of an image task, seed:
`zipfast.run.task.group_key`) go in groups of at most `group_size` (zipfast.run.group.RunGroup), so a minibatch's
image pass (runs of one seed) and every round's text pass serve all of them. Each run is an ordinary run: its folder
(`<out>/runs/<spec name>/`) holds log.jsonl, checkpoint.safetensors, report.json and curve.jsonl as
`zipfast train` writes them, and `selection.json` ({"val_acc"}: the validation accuracy of its
final prompt). A rerun of the same sweep reads finished runs back, continues stopped ones from
their checkpoints and starts the rest, so a grid can be extended; a rerun whose shared settings
differ is refused (`check_settings`) unless told to replace the runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from zipfast.config import ConfigError, TrainConfig
from zipfast.io import save_json
from zipfast.run import task
from zipfast.run.checkpoint import CHECKPOINT_NAME
from zipfast.run.group import GroupInterrupted, RunGroup
from zipfast.run.hooks import EvalEvery, read_curve
from zipfast.run.rundir import REPORT_NAME, RunDir
from zipfast.run.signals import ManyInterrupted

log = logging.getLogger("zipfast.sweep")

RUNS_DIR, SETTINGS_FILE, SELECTION_FILE, RESULTS_FILE = "runs", "sweep.json", "selection.json", "runs.jsonl"
# TrainConfig fields a sweep's runs may differ in (the grid's and the per-run ones); every other one is shared
PER_RUN = ("method", "seed", "output_dir", "method_options", "checkpoint_every")


def run_state(folder: Path) -> str:
    """"finished" (its selection.json: a validation accuracy, or the error it left the sweep with, which
    a rerun would meet again), "stopped" (a checkpoint: it continues) or "new"."""
    if (folder / SELECTION_FILE).is_file():
        return "finished"
    return "stopped" if (folder / CHECKPOINT_NAME).is_file() else "new"


def settings(bases: dict, eval_every: int) -> dict:
    """The settings every run of the sweep shares (not the grid's fields, which differ by design), and
    each method's fixed options (--method-opt)."""
    from zipfast.sweep.grid import GRID_FIELDS

    cfg = next(iter(bases.values())).to_dict()
    return {"settings": {k: v for k, v in cfg.items() if k not in PER_RUN and k not in GRID_FIELDS},
            "eval_every": eval_every, "fixed_options": {m: dict(b.method_options) for m, b in bases.items()}}


def check_settings(out: Path, bases: dict, eval_every: int) -> None:
    """ConfigError naming every shared setting that differs from the sweep that made the runs in `out`."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        return
    try:
        theirs = json.loads(path.read_text())
        old = {**theirs["settings"], "eval_every": theirs["eval_every"],
               **{f"{m}.options": o for m, o in theirs["fixed_options"].items() if m in bases}}
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{str(path)!r} is not a sweep settings file; choose another --output-dir, or pass "
                          "--overwrite to replace the runs in it") from None
    mine = settings(bases, eval_every)
    mine = {**mine["settings"], "eval_every": mine["eval_every"],
            **{f"{m}.options": o for m, o in mine["fixed_options"].items() if f"{m}.options" in old}}
    diff = [f"{k} {old.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(old) | set(mine)) if old.get(k) != mine.get(k)]
    if diff:
        raise ConfigError(f"{out} holds a sweep with other settings ({'; '.join(diff)}); use another --output-dir, the "
                          "same settings (a larger grid or more seeds are fine), or --overwrite to replace its runs")


def remove_runs(out: Path) -> None:
    """--overwrite: the runs folder and the sweep's own files; nothing else in `out`."""
    shutil.rmtree(out / RUNS_DIR, ignore_errors=True)
    for name in (SETTINGS_FILE, RESULTS_FILE):
        (out / name).unlink(missing_ok=True)


class SweepInterrupted(ManyInterrupted):
    """A signal stopped a sweep after every live run of the current group saved its checkpoint."""

    def __init__(self, cause: KeyboardInterrupt, done: int, total: int, out: Path):
        super().__init__(cause, lambda name: f"sweep stopped by {name}: {done} of {total} runs finished, the runs in "
                                             f"progress saved their checkpoints under {out / RUNS_DIR}")


def sweep(bases: dict, specs: Sequence, output_dir, *, group_size: int = 32, eval_every: int | None = None,
          load: Callable | None = None, progress: bool = True, overwrite: bool = False, groups: Sequence[int] | None = None,
          announce: Callable[[str], None] | None = None) -> list[dict]:
    """Run every spec (RunSpec) of the sweep; returns one record per spec (runs.jsonl's). bases: {method:
    its TrainConfig before the grid point (the shared settings, its fixed options)}.

    group_size: runs per group (memory: docs/sweep.md); eval_every: queries between test evaluations
    of each run's curve (default: a tenth of the budget); groups: run only these groups (by index
    in `plan`; the Ray driver's jobs), None: all; announce: where the plan's lines go."""
    from zipfast.sweep.grid import apply

    if group_size < 1:
        raise ConfigError(f"--group-size must be at least 1, got {group_size}")
    eval_every = eval_every or max(1, next(iter(bases.values())).budget // 10)
    EvalEvery(eval_every)
    out = Path(output_dir)
    cfgs = [apply(s, bases[s.method]) for s in specs]
    if not overwrite:
        check_settings(out, bases, eval_every)
    plan_ = plan(specs, cfgs, group_size)
    folders = {s.name: out / RUNS_DIR / s.name for s in specs}
    states = {s.name: "new" if overwrite else run_state(folders[s.name]) for s in specs}
    cache: dict = {}
    first = next((m[0] for g, m in enumerate(plan_) if (groups is None or g in groups)
                  and any(states[specs[i].name] != "finished" for i in m)), None)
    if first is not None:  # the task loads (and is checked) before anything is announced, written or removed
        _task(cfgs[first], load, cache)
    if overwrite:
        remove_runs(out)
    if announce is not None:
        todo = sum(states[s.name] != "finished" for s in specs)
        announce(f"zipfast sweep: {len(specs)} runs ({todo} to run, {len(specs) - todo} finished) in "
                 f"{len(plan_)} group(s) of at most {group_size}; writing to {out}/")
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous(out)
    mine = settings(bases, eval_every)
    mine["fixed_options"] = {**previous.get("fixed_options", {}), **mine["fixed_options"]}
    save_json({**mine, "runs": sorted(set(previous.get("runs", [])) | {s.name for s in specs})}, out / SETTINGS_FILE)
    done = sum(states[s.name] == "finished" for s in specs)
    keys = [task.task_key(c) for c in cfgs]
    t0 = time.perf_counter()
    for g, members in enumerate(plan_):
        if groups is not None and g not in groups:
            continue
        todo = [i for i in members if states[specs[i].name] != "finished"]
        if not todo:
            continue
        try:
            _run_group([specs[i] for i in todo], [cfgs[i] for i in todo], [folders[specs[i].name] for i in todo],
                       [states[specs[i].name] for i in todo], load, cache, eval_every, progress,
                       f"group {g + 1}/{len(plan_)}")
        except (GroupInterrupted, KeyboardInterrupt) as e:
            raise SweepInterrupted(e, done, len(specs), out) from None
        done += len(todo)
        later = {keys[j] for rest in plan_[g + 1:] for j in rest}
        for i in {keys[i]: i for i in todo}.values():  # the tasks whose last group this was leave memory
            if keys[i] not in later:
                task.release(cache, cfgs[i])
    records = [read_record(s, folders[s.name]) for s in specs]
    if groups is None:
        from zipfast.io import save_text

        save_text("".join(json.dumps(r) + "\n" for r in records), out / RESULTS_FILE)
    log.info("sweep: %d runs in %.1f s", len(specs), time.perf_counter() - t0)
    return records


def _previous(out: Path) -> dict:
    """The sweep.json of the runs already in `out` ({} if none)."""
    path = out / SETTINGS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def plan(specs: Sequence, cfgs: Sequence[TrainConfig], group_size: int) -> list[list[int]]:
    """Indices of the specs in groups (`zipfast.run.task.plan_groups`)."""
    return task.plan_groups(cfgs, group_size)


def _task(cfg: TrainConfig, load, cache: dict):
    """(model, tokenizer, classnames, data) of the runs of cfg's task_key, loaded once; a task without
    validation images is refused here, before any run (the selection needs them)."""
    from zipfast.data.imagefolder import FewShotImageFolder
    from zipfast.errors import DatasetError

    got = task.cached(cfg, cache, load)
    if isinstance(got[3], FewShotImageFolder) and not got[3].val:
        raise DatasetError(f"{cfg.dataset!r} gives no validation images, which the sweep selects on: add a val/ "
                           "folder, or pass --test-per-class N so that images are left for validation")
    return got


def _run_group(specs, cfgs, folders, states, load, cache, eval_every, progress, desc) -> None:
    """Build the group's trainers (a run that cannot be built, e.g. a grid point whose space does not
    fit the model, is recorded as failed), run them together, then each final prompt's validation
    accuracy."""
    from zipfast.errors import UserError
    from zipfast.run.trainer import Trainer

    trainers, kept = [], []
    for spec, cfg, folder, st in zip(specs, cfgs, folders, states):
        model, tokenizer, classnames, data = _task(cfg, load, cache)
        try:
            run_dir = RunDir(folder, "resume" if st == "stopped" else "overwrite")
            t = Trainer(model, classnames, dataclasses.replace(cfg, output_dir=str(folder)), data, tokenizer=tokenizer,
                        progress=False, cache=cache, output_dir=run_dir)
            if st == "stopped":
                t.load_checkpoint(folder / CHECKPOINT_NAME)
        except (UserError, ValueError) as e:
            _failed(folder, e)
            continue
        t.step_hooks.append(EvalEvery(eval_every, folder, resume_point=False))
        trainers.append(t)
        kept.append(folder)
    results = RunGroup(trainers, progress=progress, desc=desc).fit()
    for t, folder, got in zip(trainers, kept, results):
        if isinstance(got, Exception):
            _failed(folder, got)
            continue
        save_json({"val_acc": round(t.val_accuracy(), 4)}, folder / SELECTION_FILE)


def _failed(folder: Path, error: BaseException) -> None:
    """A run that left the sweep: its error in selection.json (a rerun does not retry it), one line."""
    msg = " ".join(str(error).split())
    log.warning("%s: left the sweep: %s", folder.name, msg)
    folder.mkdir(parents=True, exist_ok=True)
    save_json({"val_acc": None, "error": f"{type(error).__name__}: {msg}"}, folder / SELECTION_FILE)


def read_record(spec, folder: Path) -> dict:
    """runs.jsonl's record of one run: its grid point, seed, test and validation accuracy, curve."""
    sel = json.loads((folder / SELECTION_FILE).read_text()) if (folder / SELECTION_FILE).is_file() else {}
    rep = json.loads((folder / REPORT_NAME).read_text()) if (folder / REPORT_NAME).is_file() else {}
    return {"name": spec.name, "config": spec.config_key, "method": spec.method, "seed": spec.seed,
            "values": dict(spec.values), "val_acc": sel.get("val_acc"), "error": sel.get("error"),
            "test_acc": rep.get("test_acc") if "error" not in sel else None, "queries": rep.get("queries"),
            "train_loss": rep.get("train_loss"), "train_s": rep.get("wall_time_s"),
            "curve": [(p["queries"], p["test_acc"]) for p in read_curve(folder)] if folder.is_dir() else []}


def run_group_job(entry, argv: list[str], output_dir: str) -> tuple[int, str | None, str]:
    """A Ray task of `sweep --ray`: `zipfast <argv>` (this sweep restricted to its --groups) in the
    worker, its output to <output dir>/group-<g>.log → (exit status, that log, its last line)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    g = argv[argv.index("--groups") + 1]
    path = Path(output_dir) / f"group-{g}.log"
    buf, code = io.StringIO(), None
    try:
        with redirect_stdout(buf), redirect_stderr(buf):
            code = entry(argv)
    finally:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(buf.getvalue())
    last = next((line.strip() for line in reversed(buf.getvalue().splitlines()) if line.strip()), "")
    return code, str(path), last
