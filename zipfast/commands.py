"""What each `zipfast` command does (zipfast.cli parses the command line and dispatches here).

Every command sets its task up through zipfast.run.task and trains on the one `Trainer`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from zipfast.data import synthetic
from zipfast.data.classnames import PLANTED_TASKS as PLANTED  # built-in planted task name → label set
from zipfast.errors import EXIT_INTERNAL, EXIT_USER, ConfigError, UserError
from zipfast.run.task import load

DEMO_DIR = "runs/demo"


def _config_from_args(args, resumed=None):
    """The run's TrainConfig: the official yaml and KEY VALUE pairs, then the flags given. A resume
    (resumed: the checkpoint's config) given neither starts from the checkpoint's configuration."""
    from zipfast.config import TrainConfig, cfg_to_train_config, load_official, merge_flags

    flags = {"budget": args.budget, "shots": args.shots, "seed": args.seed, "model": args.model,
             "pretrained": args.pretrained, "dataset": args.data, "output_dir": args.output_dir,
             "backend": args.backend, "precision": args.precision, "device": args.device,
             "opt_type": args.opt_type, "perturbation": args.perturbation, "test_per_class": args.test_per_class,
             "batch_size": args.batch_size, "checkpoint_every": args.checkpoint_every,
             "feature_bank": args.feature_bank, "augment": args.augment, "method": args.method,
             "method_options": parse_method_opts(args.method_opt)}
    if resumed is not None and not (args.config_file or args.opts):
        base = TrainConfig.from_dict(resumed)
        flags["dataset"] = relocated(base.dataset, args.data)
        return merge_flags(base, **flags)
    if args.data in PLANTED and args.model is None:  # the task's own model; a --pretrained given is checked by load
        flags.update(model="zipfast-planted", pretrained=args.pretrained or "none")
    if args.data == synthetic.NAME and args.model is None:
        flags.update(model=synthetic.MODEL, pretrained=args.pretrained or "none")
    cfg = load_official(args.config_file, args.opts or ())
    return cfg_to_train_config(cfg, **flags)


def relocated(dataset: str, given: str | None) -> str | None:
    """The dataset a checkpoint's run reads now: `given` (--data) where given (a paper dataset's id
    keeps its name and takes the new root), else the checkpoint's own, which must still be there."""
    from zipfast.datasets.ids import PAPER_PREFIX, paper_dataset_id, parse_dataset_id

    if given is not None:
        if dataset.startswith(PAPER_PREFIX) and not given.startswith(PAPER_PREFIX):
            key, subsample, _ = parse_dataset_id(dataset)
            return paper_dataset_id(key, subsample, given)
        return given
    where = parse_dataset_id(dataset)[2] if dataset.startswith(PAPER_PREFIX) else dataset
    builtin = dataset in PLANTED or dataset == synthetic.NAME
    if where and not builtin and not Path(where).expanduser().exists():
        raise UserError(f"the run's dataset {where!r} is not there any more: pass --data with its new path (the "
                        "checkpoint recognises its data by the classes and the few-shot split, not by the path)")
    return None


def default_run_dir(cfg) -> Path:
    """runs/<method>-<data>-seed<s>-<YYYYmmdd-HHMMSS> (a -2, -3… suffix if taken): where `train`
    writes when no --output-dir is given."""
    from zipfast.datasets.ids import PAPER_PREFIX, parse_dataset_id

    data = parse_dataset_id(cfg.dataset)[0] if cfg.dataset.startswith(PAPER_PREFIX) else \
        Path(cfg.dataset.rstrip("/")).name or "data"
    stem = Path("runs") / f"{cfg.method}-{data}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = stem, 1
    while path.exists():
        n += 1
        path = stem.with_name(f"{stem.name}-{n}")
    return path


def parse_method_opts(items) -> dict | None:
    """["KEY=VALUE", ...] → {KEY: VALUE} (values parsed per option type by zipfast.methods); None if none."""
    if not items:
        return None
    out = {}
    for item in items:
        if not isinstance(item, str):  # argparse gives [] for `--method-opt=--`
            raise ConfigError("--method-opt takes KEY=VALUE, got an empty item")
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--method-opt takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def train(args) -> int:
    """Checks in the order that fails fastest: config, device, checkpoint, output directory
    (locked for the run), then the model and data load, image check and training."""
    from zipfast.env import resolve_device
    from zipfast.paper import official
    from zipfast.run.checkpoint import resolve_checkpoint_path
    from zipfast.run.rundir import RunDir
    from zipfast.run.state import read_run

    official.refuse_unused_flags(args)
    if official.wanted(args):
        return official.run(args)
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other: --resume continues the run in the "
                        "output directory, --overwrite deletes it; pass one of them")
    ck = read_run(resolve_checkpoint_path(args.resume)) if args.resume else None
    cfg = _config_from_args(args, ck.state["config"] if ck is not None else None)
    resolve_device(cfg.device)
    if ck is not None:  # the run continues in the checkpoint's folder unless --output-dir says otherwise
        cfg = dataclasses.replace(cfg, output_dir=args.output_dir or str(Path(ck.path).parent))
    elif not cfg.output_dir:
        cfg = dataclasses.replace(cfg, output_dir=str(default_run_dir(cfg)))
        args.announce = f"zipfast train: writing the run to {cfg.output_dir}/ (choose with --output-dir)"
    mode = "resume" if ck is not None else "overwrite" if args.overwrite else "fresh"
    run = args.run_dir = RunDir(cfg.output_dir, mode, resume_from=ck.path if ck is not None else None).acquire()
    try:
        report = _fit(cfg, args, run, ck)
    finally:
        run.release()
    _print_report(report)
    return 0


def _fit(cfg, args, run, ck) -> dict:
    """Load the task, build the trainer (resumed from ck), add --eval-every's hook, fit → the report."""
    from zipfast.methods import resolve_options
    from zipfast.run.trainer import Trainer

    resolve_options(cfg.method, cfg.method_options)  # bad settings fail before the model loads
    model, tokenizer, classnames, data = load(cfg)
    # a resume keeps the fixed text it started with (the checkpoint's), whatever this run's rule says now
    template, notes = _resume_template(ck, cfg) if ck is not None else (None, [])
    trainer = Trainer(model, classnames, cfg, data, tokenizer=tokenizer, output_dir=run, template=template,
                      encoder_source=getattr(args, "blackvip_encoder", None), progress=not args.no_progress,
                      adjustments=notes)
    if ck is not None:
        trainer.load_checkpoint(ck.path, ck)
        print(f"resumed from {ck.path} at step {trainer.step} ({trainer.queries} queries)")
    if getattr(args, "eval_every", None):
        from zipfast.run.hooks import EvalEvery

        trainer.step_hooks.append(EvalEvery(args.eval_every, run.path if run is not None else None))
    if getattr(args, "announce", None):  # once every check passed: a refused run prints its error alone
        print(args.announce, file=sys.stderr, flush=True)
    return trainer.fit()


def _resume_template(ck, cfg) -> tuple[str | None, list[str]]:
    """(template, notes): the fixed text a resume continues with, the checkpoint's, so the trajectory
    stays the one it started (a difference from this run's rule is logged and noted); None where the
    method has no fixed text."""
    import logging

    from zipfast.methods import get
    from zipfast.evaluate.zeroshot import template_for

    theirs = ck.fingerprint.get("template")
    if get(cfg.method).towers != ("image",) or theirs is None:
        return None, []
    mine = template_for(cfg.dataset)
    if theirs == mine:
        return theirs, []
    note = (f"template: the checkpoint {ck.path} trained {cfg.method} with {theirs!r}; a fresh run on "
            f"{ck.fingerprint.get('dataset')!r} would use {mine!r}; the resume keeps {theirs!r}")
    logging.getLogger("zipfast.run").warning(note)
    return theirs, [note]


def eval_checkpoint(args) -> int:
    """Test accuracy of a checkpoint's prompt on its dataset or another (only the settings that shape
    the prompt must agree); no training image is decoded."""
    import dataclasses

    from zipfast.config import TrainConfig, merge_flags
    from zipfast.data.imagefolder import FewShotImageFolder
    from zipfast.env import resolve_device
    from zipfast.methods import get
    from zipfast.run.state import read_run
    from zipfast.run.trainer import Trainer

    ck = read_run(args.checkpoint)
    sd = ck.state
    theirs = TrainConfig.from_dict(sd["config"])
    dataset = args.data if args.data is not None else relocated(theirs.dataset, None)
    cfg = merge_flags(theirs, dataset=dataset, pretrained=args.pretrained,
                      device=args.device, backend=args.backend, test_per_class=args.test_per_class)
    resolve_device(cfg.device)
    model, tokenizer, classnames, data = load(cfg)
    options = None
    if isinstance(data, FewShotImageFolder) and get(cfg.method).needs_images:
        data = dataclasses.replace(data, train=[])  # nothing trains: the image-side methods decode no training image
    if ck.fingerprint.get("method_config") is not None:
        from zipfast.config import method_options

        options = method_options(cfg.method, **ck.fingerprint["method_config"])
    trainer = Trainer(model, classnames, cfg, data, tokenizer=tokenizer, options=options,
                      template=sd.get("template"), encoder_source=args.blackvip_encoder, progress=False)
    acc = trainer.evaluate(trainer.load_prompt(ck)) if sd.get("point") is not None else trainer.evaluate()
    print(json.dumps({"checkpoint": str(args.checkpoint), "dataset": cfg.dataset, "step": sd.get("step"),
                      "queries": int(sd["queries"]), "test_acc": round(acc, 4)}))
    return 0


def demo(args) -> int:
    """The planted task: accuracy before and after ZIP, queries, time and queries/s."""
    from zipfast.config import TrainConfig
    from zipfast.env import resolve_device
    from zipfast.run.trainer import Trainer

    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=args.budget,
                      seed=args.seed, output_dir=args.output_dir, device=args.device, backend=args.backend,
                      precision=args.precision).validate()
    resolve_device(cfg.device)
    t0 = time.perf_counter()
    model, tokenizer, classnames, task = load(cfg)
    # The demo replaces its own default folder; any other folder follows the fresh-run rule.
    overwrite = args.overwrite or args.output_dir == DEMO_DIR
    trainer = Trainer(model, classnames, cfg, task, tokenizer=tokenizer, output_dir=cfg.output_dir,
                      progress=not args.no_progress, overwrite=overwrite)
    before = trainer.evaluate()
    print(f"planted task: {len(classnames)} EuroSAT classes, {len(task.train_labels)} train / "
          f"{len(task.test_labels)} test features, text tower {trainer.evaluator.tower.width} wide; "
          f"δ = {trainer.space.dim} parameters; backend {trainer.engine.name}, {trainer.engine.precision}, "
          f"{trainer.device}")
    print(f"test accuracy before: {before:.1f}%   (teacher context: {_teacher_acc(trainer, task):.1f}%)")
    report = trainer.fit()
    print(f"test accuracy after:  {report['test_acc']:.1f}%   (+{report['test_acc'] - before:.1f} points)")
    print(f"queries: {report['queries']} in {report['steps']} steps, training time {report['wall_time_s']:.1f} s, "
          f"{report['queries_per_s']:.1f} queries/s (total {time.perf_counter() - t0:.1f} s)")
    if cfg.output_dir:
        print(f"log, checkpoint and report in {cfg.output_dir}/")
    return 0


def _teacher_acc(trainer, task) -> float:
    txt = trainer.engine.text_features(task.teacher_ctx.to(trainer.device)[None])[0]
    logits = trainer.engine.logits_from_text(task.test_features, txt)
    return 100.0 * float((logits.argmax(-1).cpu() == task.test_labels).float().mean())


def bench_paper(args, entry, train_parser=None) -> int:
    """One of the paper's four protocols: run (skipping finished runs), then tables and plots.
    entry: the CLI's main (runs each job); train_parser(): the CLI's parser, which reads the jobs'
    arguments for the up-front count of queries (None: the count says "?")."""
    from zipfast.paper.announce import announce_jobs
    from zipfast.paper.protocols import Plan, run_protocol

    split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None  # noqa: E731
    for flag, value in (("--cpus-per-job", args.cpus_per_job), ("--gpus-per-job", args.gpus_per_job)):
        if not value >= 0 or (flag == "--cpus-per-job" and not value > 0):
            raise ConfigError(f"{flag} {value}: give a {'positive' if flag == '--cpus-per-job' else 'non-negative'} "
                              "number of devices per job")
    if args.group_size < 1:
        raise ConfigError(f"--group-size {args.group_size}: give at least 1 (the most training runs stepped together; "
                          "1 runs the jobs one at a time)")
    plan = Plan(args.protocol, args.root, args.output, datasets=split(args.datasets),
                seeds=_int_list("--seeds", args.seeds) if args.seeds else (1, 2, 3),
                methods=split(args.methods) or ("zip",), shots=args.shots,
                config_file=args.config_file or "", eval_every=args.eval_every, opts=args.opts or (),
                config_dir=args.config_dir or "",
                method_flags={"blackvip": ["--blackvip-encoder", args.blackvip_encoder]}
                if args.blackvip_encoder else None,
                flags=[f for flag, v in (("--model", args.model), ("--pretrained", args.pretrained),
                                         ("--device", args.device), ("--backend", args.backend))
                       if v for f in (flag, v)])
    summary = run_protocol(plan, entry, ray=args.ray, cpus_per_job=args.cpus_per_job, gpus_per_job=args.gpus_per_job,
                           progress=not args.no_progress, skip_missing=args.skip_missing,
                           announce=lambda stages: announce_jobs(args.protocol, stages, train_parser),
                           group_size=args.group_size, parser=train_parser)
    for path in summary["tables"]:
        if path.endswith(".md"):
            print(open(path).read())
    print(json.dumps(summary))
    if not summary["failed"]:
        return 0
    return EXIT_USER if all(c == EXIT_USER for c in summary.get("exit_codes", [])) else EXIT_INTERNAL


def compare(args) -> int:
    """Methods × seeds on one task with one budget: table, CSV and accuracy-vs-queries plot."""
    from zipfast.run.compare import check_methods, compare as run_compare, default_methods, markdown_table, summarise
    from zipfast.config import TrainConfig

    if args.methods is None:
        methods = list(default_methods(args.data))
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    check_methods(methods, args.data)
    if args.output_dir is None:  # one folder per task: compares of different data never meet
        args.output_dir = f"runs/compare-{Path(args.data.rstrip('/')).name or 'data'}"
    seeds, targets = _int_list("--seeds", args.seeds), [float(t) for t in _int_list("--targets", args.targets)]
    options = _method_options(args.method_opt, methods, "compare")
    planted, generated = args.data in PLANTED, args.data == synthetic.NAME
    model = "zipfast-planted" if planted else synthetic.MODEL if generated else TrainConfig.model
    base = TrainConfig(method=methods[0], model=args.model or model,  # validated as a run that compare makes
                       pretrained=args.pretrained or ("none" if planted or generated else "openai"), dataset=args.data,
                       budget=args.budget, shots=args.shots, batch_size=args.batch_size, device=args.device or "auto",
                       backend=args.backend or "auto", checkpoint_every=0).validate()
    runs = run_compare(base, load, methods, seeds, args.eval_every, targets, options, args.output_dir,
                       progress=not args.no_progress, overwrite=args.overwrite,
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    rows = summarise(runs, methods, targets)
    print(markdown_table(rows, targets), end="")
    print(f"outputs: {args.output_dir}/compare.png, compare.md, compare.csv, runs.jsonl; each run's folder in "
          f"{args.output_dir}/runs/")
    return 0


def sweep(args, entry) -> int:
    """A grid of runs in run groups: the configuration chosen on the validation split per method,
    its test accuracy per seed; sweep.md / sweep.csv / sweep.png (zipfast.sweep)."""
    from zipfast.config import TrainConfig
    from zipfast.sweep import grid as grids
    from zipfast.sweep.report import write_outputs
    from zipfast.sweep.runner import sweep as run_sweep

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    grid, seeds, methods = grids.from_command_line(args.grid or [], methods, args.seeds)
    from zipfast.run.compare import check_methods

    check_methods(methods, args.data)
    fixed = _method_options(args.method_opt, methods, "sweep")
    if args.output_dir is None:
        args.output_dir = f"runs/sweep-{Path(args.data.rstrip('/')).name or 'data'}"
    planted, generated = args.data in PLANTED, args.data == synthetic.NAME
    model = "zipfast-planted" if planted else synthetic.MODEL if generated else TrainConfig.model
    base = TrainConfig(method=methods[0], model=args.model or model,
                       pretrained=args.pretrained or ("none" if planted or generated else "openai"), dataset=args.data,
                       budget=args.budget, shots=args.shots, batch_size=args.batch_size, device=args.device or "auto",
                       backend=args.backend or "auto", checkpoint_every=args.checkpoint_every,
                       test_per_class=args.test_per_class).validate()
    base_for = {m: dataclasses.replace(base, method=m, method_options=fixed.get(m) or {}) for m in methods}
    specs = [s for m in methods for s in grids.check_runs(grids.expand({m: grid[m]}, seeds), base_for[m],
                                                          skip_invalid=args.skip_invalid)[0]]
    if args.max_runs is not None:
        if args.max_runs < 1:
            raise ConfigError(f"--max-runs must be at least 1, got {args.max_runs}")
        specs = specs[:args.max_runs]
    axes = tuple(a.strip() for a in args.heatmap.split(",")) if args.heatmap else None
    if axes is not None and len(axes) != 2:
        raise ConfigError(f"--heatmap takes two grid keys KEY1,KEY2, got {args.heatmap!r}")
    say = (lambda line: print(line, file=sys.stderr, flush=True))
    only = _int_list("--groups", args.groups) if args.groups else None
    if args.ray is not None and only is None:
        return _sweep_on_ray(args, entry, specs, base_for, say)
    t0 = time.perf_counter()
    records = run_sweep(base_for, specs, args.output_dir, group_size=args.group_size, eval_every=args.eval_every,
                        load=load, progress=not args.no_progress, overwrite=args.overwrite, groups=only,
                        announce=say)
    if only is not None:
        return 0
    wall = time.perf_counter() - t0
    _, chosen, table = write_outputs(Path(args.output_dir), records, wall, axes)
    print(table, end="")
    print(f"outputs: {args.output_dir}/sweep.md, sweep.csv, sweep.png, runs.jsonl; each run's folder in "
          f"{args.output_dir}/runs/")
    return 0


def _sweep_on_ray(args, entry, specs, base_for, say) -> int:
    """Each group a Ray task (this command restricted to it with --groups), then the tables here."""
    from zipfast.paper.sweep import Job, RayRunner
    from zipfast.sweep.grid import apply
    from zipfast.sweep.runner import plan, run_group_job

    groups = plan(specs, [apply(s, base_for[s.method]) for s in specs], args.group_size)
    argv = _without_ray(list(args.argv))
    if args.cpus_per_group <= 0 or args.gpus_per_group < 0:
        raise ConfigError(f"--cpus-per-group must be positive and --gpus-per-group at least 0, got "
                          f"{args.cpus_per_group} and {args.gpus_per_group}")
    runner = RayRunner(entry, args.ray, args.cpus_per_group, args.gpus_per_group, fn=run_group_job)
    from zipfast.sweep.runner import sweep as run_sweep

    # here, once: --overwrite, the settings check and sweep.json (no group runs: groups=[]); the tasks and
    # the tables at the end then read the folder as it is
    run_sweep(base_for, specs, args.output_dir, group_size=args.group_size, eval_every=args.eval_every, load=load,
              progress=False, overwrite=args.overwrite, groups=[])
    args.overwrite = False
    say(f"zipfast sweep: {len(specs)} runs in {len(groups)} group(s), one Ray task each")
    jobs = [Job([*argv, "--groups", str(g), "--no-progress"], args.output_dir, {"group": g}) for g in range(len(groups))]
    results = runner.run(jobs, progress=not args.no_progress)
    failed = [j.meta["group"] for j, r in zip(jobs, results) if r[0] != 0]
    if failed:
        raise UserError(f"sweep: the Ray task(s) of group(s) {', '.join(map(str, failed))} failed (their logs: "
                        f"{args.output_dir}/group-<g>.log); the same command continues what they left")
    args.ray = None
    return sweep(args, entry)


def _without_ray(argv: list[str]) -> list[str]:
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            skip = nxt is not None and (nxt in ("local", "auto") or ":" in nxt)
            continue
        if a.startswith("--ray=") or a == "--overwrite":
            continue
        out.append(a)
    return out


def _method_options(items, methods: list[str], command: str) -> dict:
    """--method-opt METHOD.KEY=VALUE items → {method: {key: value}} (METHOD among `methods`)."""
    options: dict = {}
    for key, value in (parse_method_opts(items) or {}).items():
        method, dot, name = key.partition(".")
        if not dot or method not in methods:
            raise ConfigError(f"--method-opt for {command} takes METHOD.KEY=VALUE with METHOD one of "
                              f"{', '.join(methods)}; got {key!r}")
        options.setdefault(method, {})[name] = value
    return options


def _int_list(flag: str, text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}") from None


def info(args) -> int:
    from zipfast.backends import info

    print(info())
    return 0


def _print_report(report: dict) -> None:
    keys = ("method", "queries", "steps", "train_loss", "train_acc", "test_acc", "wall_time_s", "queries_per_s", "backend")
    print(json.dumps({k: report.get(k) for k in keys}))


def verify_gpu(args) -> int:
    from zipfast.verify_gpu import run

    record = run(args.out, dry_run=args.dry_run, device=args.device, tests=not args.no_tests,
                 log=lambda m: print(m, file=sys.stderr))
    out = Path(args.out)
    print(f"verify-gpu: {'all checks passed' if record['passed'] else 'SOME CHECKS FAILED'} "
          f"({record['seconds']} s); record: {out / 'verify-gpu.json'} and {out / 'verify-gpu.md'}")
    print(f"Please send both files (and {out / 'gpu-tests.log'} if a check failed) with your GPU's name to the "
          "zipfast maintainers: they are how the GPU path gets verified.")
    return 0 if record["passed"] else 1


