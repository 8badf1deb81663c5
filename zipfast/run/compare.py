"""`zipfast compare`: several methods × seeds on one task, the same query budget for all.

Each run is an ordinary run of one method (zipfast.methods) on the one `Trainer`, set up as
`zipfast train` sets it up (zipfast.run.task), with the same query accounting and budget stop. A step hook
evaluates test accuracy on the optimiser's current point every `eval_every` queries
(evaluations cost no queries and are not counted as training time). Writes, in the output
directory:

- compare.png: test accuracy vs queries, mean over seeds with a min–max band per method
  (zero-shot CLIP, 0 queries, as a horizontal line);
- compare.md / compare.csv: per method, final test accuracy mean ± std over seeds, the
  queries to first reach each target accuracy (at the evaluation granularity; mean over
  the seeds that reached it, and how many did), training wall time and queries/s;
- runs.jsonl: one record per run (method, seed, report, curve);
- runs/<method>-seed<s>/: each run's own folder, as `zipfast train` writes one (log.jsonl,
  checkpoint.safetensors, report.json, curve.jsonl);
- compare.json: the settings the runs were made with.

Rerunning the same command continues: a run whose folder holds its report is read back, not
retrained; one stopped by a signal continues from its checkpoint (the trajectory and the curve
are those of an uninterrupted run); the others start. A rerun with other settings is refused
(`check_settings`) unless told to replace the runs (overwrite).

The image-side methods need images: an image folder, or the generated `synthetic-images`
task (zipfast.data.synthetic); the planted task holds image features only.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import signal
import statistics
from pathlib import Path
from typing import Callable, Sequence

from zipfast.config import ConfigError, TrainConfig
from zipfast.data import synthetic
from zipfast.data.classnames import PLANTED_TASKS
from zipfast.methods import IMAGE_METHODS, METHODS, TEXT_METHODS
from zipfast.run import task
from zipfast.run.checkpoint import CHECKPOINT_NAME
from zipfast.run.estimate import estimate, estimate_lines
from zipfast.run.hooks import EvalEvery, read_curve
from zipfast.run.plots import draw_accuracy
from zipfast.run.rundir import REPORT_NAME, RunDir
from zipfast.run.signals import RunInterrupted

ALL_METHODS = tuple(METHODS)
RUNS_DIR, SETTINGS_FILE = "runs", "compare.json"
# TrainConfig fields that differ between the runs of one compare, or say where a run happens, not what it computes
PER_RUN = ("method", "seed", "output_dir", "method_options", "checkpoint_every")


def has_images(dataset: str) -> bool:
    """Whether a task gives pixels (an image folder, synthetic-images) rather than image features (planted)."""
    return dataset not in PLANTED_TASKS


def default_methods(dataset: str) -> tuple[str, ...]:
    """Every method that can run on the dataset (the ablation zip-cma only when asked for)."""
    return tuple(m for m in (ALL_METHODS if has_images(dataset) else TEXT_METHODS) if m != "zip-cma")


def check_methods(methods: Sequence[str], dataset: str) -> None:
    """ConfigError naming any method that is unknown or cannot run on the dataset."""
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"--methods: unknown method(s) {bad or list(methods)!r}; choose from {', '.join(METHODS)}")
    dup = [m for i, m in enumerate(methods) if m in methods[:i]]
    if dup:
        raise ConfigError(f"--methods: {', '.join(dict.fromkeys(dup))} given more than once; name each method once")
    image = [m for m in methods if m in IMAGE_METHODS]
    if image and not has_images(dataset):
        raise ConfigError(
            f"--methods {','.join(image)}: these methods change what the image tower sees and need images, but the "
            f"{dataset!r} task holds image features only; use --data {synthetic.NAME} (a generated 4-class image "
            f"folder with a random tiny CLIP) or --data FOLDER (an image folder), or leave them out")


def first_reach(points, target: float):
    """Queries of the first evaluation with accuracy ≥ target, or None."""
    return next((q for q, acc in points if acc >= target), None)


def run_folder(output_dir, method: str, seed: int) -> Path:
    """The folder of one run of a compare: <output dir>/runs/<method>-seed<s>."""
    return Path(output_dir) / RUNS_DIR / f"{method}-seed{seed}"


def run_state(folder: Path | None) -> str:
    """"finished" (its report is there), "stopped" (a checkpoint, no report: it continues) or "new"."""
    if folder is None:
        return "new"
    if (folder / REPORT_NAME).is_file():
        return "finished"
    return "stopped" if (folder / CHECKPOINT_NAME).is_file() else "new"


def _task(cfg: TrainConfig, load: Callable | None, cache: dict):
    """(model, tokenizer, classnames, data) of cfg, loaded once per cache."""
    return task.cached(cfg, cache, load)


def _record(report: dict, curve: list) -> dict:
    """runs.jsonl's record of one run from its report and its curve ([(queries, test acc %)])."""
    return {"method": report["method"], "seed": report["seed"], "test_acc": report["test_acc"],
            "queries": report["queries"], "steps": report["steps"], "train_s": report["wall_time_s"],
            "curve": curve,
            "report": {k: report.get(k) for k in ("param_dim", "backend", "precision", "query_precision", "device",
                                                  "template", "method_config", "fallbacks", "adjustments")}}


def run_one(cfg: TrainConfig, load: Callable | None, eval_every: int, progress: bool, cache: dict | None = None,
            folder=None) -> dict:
    """One method × seed (cfg.method, cfg.seed) with its test-accuracy curve.

    load(cfg) → (model, tokenizer, classnames, data) (default zipfast.run.task.load); cache: shared
    across calls (models, tasks, encoders). folder: the run's folder (run_folder): a finished run is
    read back from it, a stopped one continues from its checkpoint; None: nothing written.
    """
    folder = Path(folder) if folder is not None else None
    state = run_state(folder)
    if state == "finished":
        return read_back(folder)
    trainer, curve = _trainer(cfg, load, eval_every, progress, {} if cache is None else cache, folder, state)
    report = trainer.fit()
    return _record(report, [(p["queries"], p["test_acc"]) for p in curve.points])


def read_back(folder: Path) -> dict:
    """The record of a finished run, from its folder."""
    report = json.loads((folder / REPORT_NAME).read_text())
    return _record(report, [(p["queries"], p["test_acc"]) for p in read_curve(folder)])


def _trainer(cfg: TrainConfig, load, eval_every: int, progress: bool, cache: dict, folder: Path | None, state: str):
    """(Trainer, its EvalEvery curve hook) of one run: a stopped one continues from its checkpoint."""
    from zipfast.run.trainer import Trainer

    model, tokenizer, classnames, data = _task(cfg, load, cache)
    # a folder that holds a run without a checkpoint (killed before one was written) starts over
    run_dir = RunDir(folder, "resume" if state == "stopped" else "overwrite") if folder is not None else None
    trainer = Trainer(model, classnames, cfg, data, tokenizer=tokenizer, progress=progress, cache=cache,
                      output_dir=run_dir)
    if state == "stopped":
        trainer.load_checkpoint(folder / CHECKPOINT_NAME)
    # at 0, every eval_every queries and at the end; not training time; a resume adds no point of its own
    curve = EvalEvery(eval_every, folder, resume_point=False)
    trainer.step_hooks.append(curve)
    return trainer, curve


def run_grouped(cfgs: Sequence[TrainConfig], folders: Sequence, states: Sequence[str], load, eval_every: int,
                progress: bool, cache: dict) -> list[dict]:
    """The runs of one task key stepped together (zipfast.run.group; each run exactly as alone); finished
    ones read back. The first run that failed raises its error once the others are done."""
    from zipfast.run.group import RunGroup

    records: list = [None] * len(cfgs)
    built = []
    for i, (cfg, folder, st) in enumerate(zip(cfgs, folders, states)):
        if st == "finished":
            records[i] = read_back(folder)
        else:
            built.append((i, *_trainer(cfg, load, eval_every, False, cache, folder, st)))
    if built:
        results = RunGroup([t for _, t, _ in built], progress=progress, desc=f"{len(built)} run(s)").fit()
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        for (i, _, curve), report in zip(built, results):
            records[i] = _record(report, [(p["queries"], p["test_acc"]) for p in curve.points])
    return records


def check_seeds(seeds: Sequence[int]) -> None:
    """ConfigError unless the seeds are at least one, each once."""
    dup = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if not seeds or dup:
        raise ConfigError(f"--seeds: {'repeated seed(s) ' + ', '.join(map(str, dup)) if dup else 'no seed given'}; "
                          f"give each seed once, e.g. --seeds 1,2,3")


def check_data(base: TrainConfig) -> None:
    """The image folder of a run with images exists and holds classes (DatasetError naming it), and
    synthetic-images is generated, before any model or encoder loads."""
    if base.dataset == synthetic.NAME:
        synthetic.folder()
    elif has_images(base.dataset) and not base.dataset.startswith("paper:"):
        from zipfast.data.imagefolder import FewShotImageFolder

        FewShotImageFolder.from_root(base.dataset, base.shots, base.seed, base.test_per_class)


def probe_encoder(cfg: TrainConfig, cache: dict) -> None:
    """Load BlackVIP's encoder of `cfg` into the cache before any run; a failure names compare's option."""
    from zipfast.methods import blackvip, resolve_options
    from zipfast.spaces.coordinator import BACKBONES, EncoderLoadError

    options, _ = task.task_options(cfg.dataset, "blackvip", cfg.method_options)
    mcfg = resolve_options("blackvip", options)
    try:
        blackvip.encoder(cfg, mcfg, cache)
    except EncoderLoadError as e:
        cause = e.__cause__
        reason = f"{type(cause).__name__}: {str(cause)[:200]}" if cause is not None else str(e)
        hub = BACKBONES.get(mcfg.backbone, mcfg.backbone)
        raise ConfigError(
            f"--methods blackvip: could not load BlackVIP's encoder {mcfg.encoder or hub!r} ({reason}). Without "
            f"internet access, download {hub!r} on another machine (huggingface-cli download {hub} --local-dir DIR) "
            f"and pass --method-opt blackvip.encoder=DIR, or --method-opt blackvip.encoder=none for random weights "
            f"of its architecture") from e


def compare(base: TrainConfig, load: Callable | None = None, methods: Sequence[str] | None = None,
            seeds: Sequence[int] = (1, 2, 3), eval_every: int = 250, targets: Sequence[float] = (50, 60, 70),
            method_options: dict | None = None, output_dir=None, progress: bool = True, overwrite: bool = False,
            log: Callable[[str], None] | None = None) -> list[dict]:
    """Run every method × seed with base's task, model and budget; write the outputs; return the runs.

    methods: None = every method that can run on base.dataset. method_options: {method: {option:
    value}}. load(cfg) → (model, tokenizer, classnames, data) (default zipfast.run.task.load).
    output_dir: also holds one folder per run (run_folder): finished runs are read back, stopped ones
    continue (see the module docstring); its settings must be this call's unless overwrite, which
    deletes its runs first. log: where the up-front time estimate goes (None: no estimate is made).
    A signal stops the grid with `CompareInterrupted`, which says what is saved.
    """
    methods = list(default_methods(base.dataset) if methods is None else methods)
    check_methods(methods, base.dataset)
    check_seeds(seeds)
    EvalEvery(eval_every)  # checks eval_every before any run
    method_options = method_options or {}
    cfgs, problems = [], {}
    for m in methods:  # every run's settings before any run: all the problems in one refusal
        for s in seeds:
            try:
                cfgs.append(dataclasses.replace(base, method=m, seed=s, output_dir="",
                                                method_options=method_options.get(m) or {}).validate())
            except ConfigError as e:
                problems.setdefault(m, " ".join(str(e).split()))
    if problems:
        raise ConfigError("compare: no run started: " + "; ".join(f"{m}: {p}" for m, p in problems.items()))
    out = Path(output_dir) if output_dir is not None else None
    method_options = {m: method_options.get(m) or {} for m in methods}  # a method run with its defaults: {}
    if out is not None and not overwrite:  # before any model loads: a folder of other settings is refused at once
        check_settings(out, base, eval_every, method_options)
    check_data(cfgs[0])  # a missing folder is named before any model or encoder loads
    if out is not None and overwrite:
        remove_runs(out)
    runs, cache = [], {}
    folders = [run_folder(out, c.method, c.seed) if out is not None else None for c in cfgs]
    states = [run_state(f) for f in folders]
    todo = [c for c, st in zip(cfgs, states) if st != "finished"]
    if "blackvip" in [c.method for c in todo]:  # a pretrained encoder that cannot load fails here, before any run
        probe_encoder(next(c for c in todo if c.method == "blackvip"), cache)
    if out is not None:
        write_settings(out, base, eval_every, method_options)
    if log is not None:
        for line in estimate_lines(estimate(cfgs, states, lambda c: _task(c, load, cache), eval_every, cache)):
            log(line)
    # runs that share a model step together (one group per group key: on loaded weights every seed), each
    # as it would alone
    keys = list(dict.fromkeys(task.group_key(c) for c in cfgs))
    done: list[dict] = []
    records: dict[int, dict] = {}
    for g, key in enumerate(keys, 1):
        ids = [i for i, c in enumerate(cfgs) if task.group_key(c) == key]
        if progress:
            how = {"finished": " (finished, read back)", "stopped": " (continues from its checkpoint)"}
            print(f"[group {g}/{len(keys)}] " + ", ".join(f"{cfgs[i].method} seed {cfgs[i].seed}{how.get(states[i], '')}"
                                                          for i in ids), flush=True)
        try:
            got = run_grouped([cfgs[i] for i in ids], [folders[i] for i in ids], [states[i] for i in ids], load,
                              eval_every, progress, cache)
        except KeyboardInterrupt as e:  # GroupInterrupted (checkpoints), or a signal outside the step loop
            raise CompareInterrupted(e, [cfgs[i] for i in ids], g, len(keys), out, done) from None
        records.update(zip(ids, got))
        done += got
    runs = [records[i] for i in range(len(cfgs))]
    rows = summarise(runs, methods, targets)
    if out is not None:
        write_outputs(out, runs, rows, targets, base)
    return runs


class CompareInterrupted(RunInterrupted):
    """A signal stopped a compare: the message names the finished runs kept, the run stopped and
    where its checkpoint is (the CLI adds the command that continues)."""

    def __init__(self, cause: KeyboardInterrupt, cfgs: Sequence[TrainConfig], g: int, n: int, out: Path | None,
                 done: list[dict]):
        self.signum = getattr(cause, "signum", signal.SIGINT)
        self.signal_name = getattr(cause, "signal_name", "SIGINT")
        self.step = self.queries = self.checkpoint = None
        names = ", ".join(f"{c.method} seed {c.seed}" for c in cfgs)
        what = f"stopped by {self.signal_name} during group {g} of {n} ({names}"
        if out is None:
            what += "); nothing saved (no output directory)"
        else:
            saved = sum((run_folder(out, c.method, c.seed) / CHECKPOINT_NAME).is_file() for c in cfgs)
            what += f"; {saved} of its runs have a checkpoint in {out / RUNS_DIR} and continue from it)"
            if done:
                names = ", ".join(f"{r['method']}-seed{r['seed']}" for r in done)
                what += f"; {len(done)} finished run{'s' if len(done) > 1 else ''} kept ({names})"
        KeyboardInterrupt.__init__(self, what)


def _settings(base: TrainConfig, eval_every: int, method_options: dict) -> dict:
    d = {k: v for k, v in base.to_dict().items() if k not in PER_RUN}
    d["eval_every"] = eval_every
    return json.loads(json.dumps({"settings": d, "method_options": method_options}))  # as read back


def _flag(key: str) -> str:
    return {"dataset": "--data"}.get(key, "--" + key.replace("_", "-"))


def check_settings(out: Path, base: TrainConfig, eval_every: int, method_options: dict) -> None:
    """ConfigError naming every setting of this compare that differs from the one that made the runs
    in `out` (its compare.json): their results must not be mixed."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        return
    try:
        theirs = json.loads(path.read_text())
        old, old_opts = theirs["settings"], theirs["method_options"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{str(path)!r} is not a compare settings file; choose another --output-dir, or pass "
                          "--overwrite to replace the runs in it") from None
    mine = _settings(base, eval_every, method_options)
    diff = [f"{_flag(k)} {v!r} (its runs: {old.get(k)!r})" for k, v in mine["settings"].items() if old.get(k) != v]
    diff += [f"--method-opt {m}.*: {o or 'none'} (its runs: {old_opts[m] or 'none'})"
             for m, o in mine["method_options"].items() if m in old_opts and old_opts[m] != o]
    if diff:
        raise ConfigError(f"--output-dir {str(out)!r} holds compare runs made with other settings: "
                          f"{'; '.join(diff)}; their results would mix with these: choose another --output-dir, "
                          f"or pass --overwrite to replace those runs")


def write_settings(out: Path, base: TrainConfig, eval_every: int, method_options: dict) -> None:
    """compare.json: the settings, and the options ({} for its defaults) of every method run in `out` so far."""
    from zipfast.io import save_json

    mine = _settings(base, eval_every, method_options)
    path = out / SETTINGS_FILE
    if path.is_file():
        mine["method_options"] = {**json.loads(path.read_text())["method_options"], **mine["method_options"]}
    out.mkdir(parents=True, exist_ok=True)
    save_json(mine, path)


def remove_runs(out: Path) -> None:
    """--overwrite: delete the run folders (runs/<method>-seed<s>) and compare.json of a compare in
    `out`; nothing else in `out` (it may be a folder the user shares with other things)."""
    runs = out / RUNS_DIR
    if runs.is_dir():
        for d in runs.iterdir():
            method, sep, seed = d.name.rpartition("-seed")
            if d.is_dir() and sep and method in METHODS and seed.isdigit():
                shutil.rmtree(d)
    (out / SETTINGS_FILE).unlink(missing_ok=True)


def summarise(runs: list[dict], methods: Sequence[str], targets: Sequence[float]) -> list[dict]:
    rows = []
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        accs = [r["test_acc"] for r in rs]
        row = {"method": m, "seeds": len(rs), "test_acc_mean": statistics.fmean(accs),
               "test_acc_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
               "queries": rs[0]["queries"] if rs else 0,
               "train_s_mean": statistics.fmean(r["train_s"] for r in rs)}
        row["queries_per_s"] = (row["queries"] / row["train_s_mean"]) if row["train_s_mean"] > 0 else None
        for t in targets:
            reached = [q for q in (first_reach(r["curve"], t) for r in rs) if q is not None]
            row[f"q_to_{t:g}"] = statistics.fmean(reached) if reached else None
            row[f"n_reached_{t:g}"] = len(reached)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], targets: Sequence[float]) -> str:
    head = ["method", "test acc % (mean ± std)"] + [f"queries to {t:g} %" for t in targets] + \
        ["queries", "train time s", "queries/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"{r['test_acc_mean']:.1f} ± {r['test_acc_std']:.1f}"]
        for t in targets:
            q, n = r[f"q_to_{t:g}"], r[f"n_reached_{t:g}"]
            cells.append("–" if q is None else f"{q:.0f} ({n}/{r['seeds']})")
        qps = r["queries_per_s"]
        cells += [str(r["queries"]), f"{r['train_s_mean']:.1f}", "–" if not qps else f"{qps:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], methods: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.2, 4.2), dpi=110)
    by_method = {m: rs for m in methods if (rs := [r for r in runs if r["method"] == m])}
    draw_accuracy(ax, {m: [r["curve"] for r in rs] for m, rs in by_method.items() if rs[0]["queries"] > 0},
                  {m: statistics.fmean(r["test_acc"] for r in rs) for m, rs in by_method.items() if rs[0]["queries"] == 0})
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # outside: no curve hidden
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(out: Path, runs, rows, targets, base: TrainConfig) -> None:
    from zipfast.io import save_text

    out.mkdir(parents=True, exist_ok=True)
    methods = [r["method"] for r in rows]
    save_text("".join(json.dumps(r) + "\n" for r in runs), out / "runs.jsonl")
    save_text(markdown_table(rows, targets), out / "compare.md")
    with open(out / "compare.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "compare.csv.tmp").replace(out / "compare.csv")
    seeds = sorted({r["seed"] for r in runs})
    title = f"{base.dataset or 'task'}: test accuracy vs queries ({len(seeds)} seeds, mean and min–max)"
    if base.dataset == synthetic.NAME and base.pretrained == "none":
        title += "\nrandom-weight tiny CLIP on generated images: checks the pipeline, does not rank methods"
    plot(runs, methods, out / "compare.png", title)
