"""The `zipfast` command: train, eval, demo, compare, info."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from pathlib import Path

import torch

from .data import synthetic
from .data.classnames import PLANTED_TASKS as PLANTED  # built-in planted task name → label set
from .errors import EXIT_INTERNAL, EXIT_SIGINT, EXIT_USER, UserError, is_user_os_error

DEMO_DIR = "runs/demo"


def build_run(cfg, task_seed: int = 0):
    """(model, tokenizer, classnames, data) for a TrainConfig's model and dataset."""
    from .data.imagefolder import FewShotImageFolder
    from .data.planted import make_planted_task, planted_model
    from .models import load_clip
    from .text import TextTower

    if cfg.dataset in PLANTED:
        if cfg.model == "zipfast-planted":
            model, tokenizer = planted_model(task_seed)
        else:
            model, tokenizer, _ = load_clip(cfg.model, cfg.pretrained)
        task = make_planted_task(TextTower(model), tokenizer, PLANTED[cfg.dataset], n_ctx=cfg.context_tokens,
                                 shots=cfg.shots or 16, test_per_class=cfg.test_per_class or 100, seed=task_seed)
        return model, tokenizer, task.classnames, task
    if cfg.dataset.startswith("paper:"):  # a dataset of the paper by name (the official train.py surface)
        from .paper.official import build_paper_data

        paper, data = build_paper_data(cfg)
        data.fewshot_source = paper.fewshot_source
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model, tokenizer, _ = load_clip(cfg.model, cfg.pretrained)
        return model, tokenizer, data.classnames, data
    if not cfg.dataset:
        raise UserError(f"no dataset: pass --data ROOT (an image folder), --data {synthetic.NAME} or --data planted")
    if cfg.dataset == synthetic.NAME:  # the generated image folder; its random tiny CLIP is part of the task
        data = FewShotImageFolder.from_root(synthetic.folder(), cfg.shots, cfg.seed, cfg.test_per_class)
        if cfg.model == synthetic.MODEL and cfg.pretrained == "none":
            return (*synthetic.model(), data.classnames, data)
    else:
        data = FewShotImageFolder.from_root(cfg.dataset, cfg.shots, cfg.seed, cfg.test_per_class)
    # A checkpoint holds no model weights: seed a random init (pretrained none) so that `eval`
    # rebuilds the very model `train` used.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model, tokenizer, _ = load_clip(cfg.model, cfg.pretrained)
    return model, tokenizer, data.classnames, data


def _match_image_size(cfg, model):
    """cfg adapted to the model as the trainer adapts it (image size; see trainer.adapt_config),
    for callers that log the config before building the trainer (paper.official)."""
    from .trainer import adapt_config

    return adapt_config(cfg, model, encodes_images=cfg.dataset not in PLANTED)[0]


def _config_from_args(args):
    from .config import cfg_to_train_config, load_official

    flags = {"budget": args.budget, "shots": args.shots, "seed": args.seed, "model": args.model,
             "pretrained": args.pretrained, "dataset": args.data, "output_dir": args.output_dir,
             "backend": args.backend, "precision": args.precision, "device": args.device,
             "opt_type": args.opt_type, "perturbation": args.perturbation, "test_per_class": args.test_per_class,
             "batch_size": args.batch_size, "checkpoint_every": args.checkpoint_every,
             "feature_bank": args.feature_bank, "augment": args.augment, "method": args.method,
             "method_options": parse_method_opts(args.method_opt)}
    if args.data in PLANTED and args.model is None:
        flags.update(model="zipfast-planted", pretrained="none")
    if args.data == synthetic.NAME and args.model is None:
        flags.update(model=synthetic.MODEL, pretrained="none")
    cfg = load_official(args.config_file, args.opts or ())
    return cfg_to_train_config(cfg, **flags)


def parse_method_opts(items) -> dict | None:
    """["KEY=VALUE", ...] → {KEY: VALUE} (values parsed per option type by zipfast.methods); None if none."""
    from .config import ConfigError

    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--method-opt takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def cmd_train(args) -> int:
    """Checks in the order that fails fastest: config, device, checkpoint, output directory
    (locked for the run), then the model and data load, image check and training."""
    from . import ZIPTrainer
    from .paper import official, official_image
    from .env import resolve_device
    from .rundir import RunDir
    from .trainer import read_checkpoint

    official.refuse_unused_flags(args)
    if official_image.wanted(args):  # --trainer BPTVLM | BAR | BlackVIP
        return official_image.run(args, build_run)
    if official.wanted(args):
        return official.run(args, build_run, _match_image_size)
    cfg = _config_from_args(args)
    from .checkpoint import resolve_checkpoint_path
    from .methods import IMAGE_METHODS

    resolve_device(cfg.device)
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other: --resume continues the run in the "
                        "output directory, --overwrite deletes it; pass one of them")
    image = cfg.method in IMAGE_METHODS  # bptvlm | bar | blackvip: their own trainer and checkpoint format
    state = read_checkpoint(args.resume) if args.resume and not image else None
    ckpt = (state["path"] if state is not None else resolve_checkpoint_path(args.resume)) if args.resume else None
    out = cfg.output_dir or (str(Path(ckpt).parent) if ckpt is not None else "")
    run = None
    if out:
        mode = "resume" if args.resume else "overwrite" if args.overwrite else "fresh"
        run = args.run_dir = RunDir(out, mode, resume_from=ckpt).acquire()
    try:
        if image:
            from .image_trainer import train_image_method

            report = train_image_method(cfg, args, build_run, run, ckpt)
        else:
            model, tokenizer, classnames, data = build_run(cfg)
            trainer = ZIPTrainer(model, classnames, cfg, data, tokenizer=tokenizer, output_dir=run,
                                 progress=not args.no_progress)
            if state is not None:
                trainer.load_checkpoint(state["path"], state)
                print(f"resumed from {state['path']} at step {trainer.step} ({trainer.queries} queries)")
            if args.eval_every:
                from .paper.hooks import EvalEvery

                hook = EvalEvery(args.eval_every, out or None)
                trainer.step_hooks.append(hook)
            report = trainer.fit()
    finally:
        if run is not None:
            run.release()
    _print_report(report)
    return 0


def cmd_eval(args) -> int:
    from . import ZIPTrainer
    from .config import TrainConfig, merge_flags
    from .env import resolve_device
    from .image_trainer import CHECKPOINT_FORMAT as IMAGE_CHECKPOINT_FORMAT, evaluate_checkpoint
    from .trainer import read_checkpoint

    sd = read_checkpoint(args.checkpoint)
    cfg = merge_flags(TrainConfig.from_dict(sd["config"]), dataset=args.data, pretrained=args.pretrained,
                      device=args.device, backend=args.backend, test_per_class=args.test_per_class)
    resolve_device(cfg.device)
    if sd.get("format") == IMAGE_CHECKPOINT_FORMAT:  # BPT-VLM, BAR, BlackVIP
        acc = evaluate_checkpoint(sd, cfg, build_run)
    else:
        model, tokenizer, classnames, data = build_run(cfg)
        trainer = ZIPTrainer(model, classnames, cfg, data, tokenizer=tokenizer, progress=False)
        trainer.load_checkpoint(sd["path"], sd)
        acc = trainer.evaluate()
    print(json.dumps({"checkpoint": str(args.checkpoint), "dataset": cfg.dataset, "step": sd.get("step"),
                      "queries": int(sd["queries"]), "test_acc": round(acc, 4)}))
    return 0


def cmd_demo(args) -> int:
    """The planted task: accuracy before and after ZIP, queries, time and queries/s."""
    from . import ZIPTrainer
    from .config import TrainConfig

    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=args.budget,
                      seed=args.seed, output_dir=args.output_dir, device=args.device, backend=args.backend,
                      precision=args.precision).validate()
    from .env import resolve_device

    resolve_device(cfg.device)
    t0 = time.perf_counter()
    model, tokenizer, classnames, task = build_run(cfg)
    # The demo replaces its own default folder; any other folder follows the fresh-run rule.
    overwrite = args.overwrite or args.output_dir == DEMO_DIR
    trainer = ZIPTrainer(model, classnames, cfg, task, tokenizer=tokenizer, output_dir=cfg.output_dir,
                         progress=not args.no_progress, overwrite=overwrite)
    before = trainer.evaluate()
    print(f"planted task: {len(classnames)} EuroSAT classes, {len(task.train_labels)} train / "
          f"{len(task.test_labels)} test features, text tower {trainer.tower.width} wide; "
          f"δ = {trainer.space.dim} parameters; backend {trainer.engine.name}, {trainer.engine.precision}, {trainer.device}")
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


def cmd_bench_paper(args) -> int:
    """One of the paper's four protocols: run (skipping finished runs), then tables and plots."""
    from .paper.protocols import Plan, run_protocol

    split = lambda v, kind=str: [kind(x) for x in v.split(",") if x] if v else None  # noqa: E731
    plan = Plan(args.protocol, args.root, args.output, datasets=split(args.datasets),
                seeds=split(args.seeds, int) or (1, 2, 3), methods=split(args.methods) or ("zip",), shots=args.shots,
                config_file=args.config_file or "", eval_every=args.eval_every, opts=args.opts or (),
                config_dir=args.config_dir or "",
                method_flags={"blackvip": ["--blackvip-encoder", args.blackvip_encoder]}
                if args.blackvip_encoder else None,
                flags=[f for flag, v in (("--model", args.model), ("--pretrained", args.pretrained),
                                         ("--device", args.device), ("--backend", args.backend))
                       if v for f in (flag, v)])
    summary = run_protocol(plan, main, ray=args.ray, cpus_per_job=args.cpus_per_job, gpus_per_job=args.gpus_per_job,
                           progress=not args.no_progress)
    for path in summary["tables"]:
        if path.endswith(".md"):
            print(open(path).read())
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0


def cmd_compare(args) -> int:
    """Methods × seeds on one task with one budget: table, CSV and accuracy-vs-queries plot."""
    from .compare import check_methods, compare, default_methods, markdown_table, summarise
    from .config import ConfigError, TrainConfig

    if args.methods is None:
        methods = list(default_methods(args.data))
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    check_methods(methods, args.data)
    seeds, targets = _int_list("--seeds", args.seeds), [float(t) for t in _int_list("--targets", args.targets)]
    options: dict = {}
    for key, value in (parse_method_opts(args.method_opt) or {}).items():
        method, dot, name = key.partition(".")
        if not dot or method not in methods:
            raise ConfigError(f"--method-opt for compare takes METHOD.KEY=VALUE with METHOD one of "
                              f"{', '.join(methods)}; got {key!r}")
        options.setdefault(method, {})[name] = value
    planted, generated = args.data in PLANTED, args.data == synthetic.NAME
    model = "zipfast-planted" if planted else synthetic.MODEL if generated else TrainConfig.model
    base = TrainConfig(method=methods[0], model=args.model or model,  # validated as a run that compare makes
                       pretrained=args.pretrained or ("none" if planted or generated else "openai"), dataset=args.data,
                       budget=args.budget, shots=args.shots, batch_size=args.batch_size, device=args.device or "auto",
                       backend=args.backend or "auto", checkpoint_every=0).validate()
    runs = compare(base, build_run, methods, seeds, args.eval_every, targets, options, args.output_dir,
                   progress=not args.no_progress)
    rows = summarise(runs, methods, targets)
    print(markdown_table(rows, targets), end="")
    print(f"outputs: {args.output_dir}/compare.png, compare.md, compare.csv, runs.jsonl")
    return 0


def _int_list(flag: str, text: str) -> list[int]:
    from .config import ConfigError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}") from None


def cmd_info(args) -> int:
    from .backends import info

    print(info())
    return 0


def _print_report(report: dict) -> None:
    keys = ("method", "queries", "steps", "train_loss", "train_acc", "test_acc", "wall_time_s", "queries_per_s", "backend")
    print(json.dumps({k: report.get(k) for k in keys}))


def _add_common(p):
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, hpu or auto (default)")
    p.add_argument("--backend", default=None, help="query engine: auto (default) or torch-reference")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the traceback of every error, not only of internal ones")


def cmd_verify_gpu(args) -> int:
    from .verify_gpu import run

    record = run(args.out, dry_run=args.dry_run, device=args.device, tests=not args.no_tests,
                 log=lambda m: print(m, file=sys.stderr))
    out = Path(args.out)
    print(f"verify-gpu: {'all checks passed' if record['passed'] else 'SOME CHECKS FAILED'} "
          f"({record['seconds']} s); record: {out / 'verify-gpu.json'} and {out / 'verify-gpu.md'}")
    print(f"Please send both files (and {out / 'gpu-tests.log'} if a check failed) with your GPU's name to the "
          "zipfast maintainers: they are how the GPU path gets verified.")
    return 0 if record["passed"] else 1


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="zipfast", description="Fast ZIP black-box prompt tuning of CLIP.",
                                 epilog="Exit codes: 0 done, 1 internal error (a bug; traceback printed), 2 bad "
                                        "input (message names it), 129/130/143 stopped by SIGHUP/SIGINT/SIGTERM "
                                        "after saving a checkpoint.")
    ap.add_argument("--debug", action="store_true", help="print the traceback of every error")
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a prompt with ZIP", description=(
        "Train with ZIP. Accepts the official trainer yaml (--config-file) and trailing KEY VALUE "
        "overrides in the official scripts' style, e.g. TRAINER.ZIP.N_CTX 8 TRAINER.BASIC.MAX_API_CALLS 5000. "
        "Flags override both."))
    t.add_argument("--config-file", default=None, help="official ZIP yaml (configs/trainers/ZIP/vit_b16.yaml)")
    t.add_argument("--data", default=None, help="image-folder root, planted / planted-cifar100, or synthetic-images "
                   "(a generated 4-class image folder with a random tiny CLIP)")
    t.add_argument("--model", default=None, help="open_clip model name (default ViT-B-16-quickgelu; OpenAI "
                   "spellings such as ViT-B/16 name the same network)")
    t.add_argument("--pretrained", default=None, help="open_clip tag, local checkpoint path, or none")
    t.add_argument("--budget", type=int, default=None, help="query budget (TRAINER.BASIC.MAX_API_CALLS)")
    t.add_argument("--shots", type=int, default=None, help="images per class (DATASET.NUM_SHOTS)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--method", default=None, help="zip (default), sharpzo, zo-sgd, zsclip, or the image-side "
                   "bptvlm, bar, blackvip (these need --data an image folder)")
    t.add_argument("--method-opt", action="append", default=None, metavar="KEY=VALUE",
                   help="an option of the method's section, e.g. change_point=30 (repeatable; docs/methods.md lists them)")
    t.add_argument("--opt-type", default=None, help="ZIP's optimiser: spsa-clip (ZIP), spsa or spsa-gc")
    t.add_argument("--perturbation", default=None, choices=("philox", "official"),
                   help="ZIP's perturbation stream: philox (default; counter-based, regenerated on any device) "
                        "or official (the official code's torch.Generator draw order)")
    t.add_argument("--precision", default=None, help="auto (per device; default), fp32, bf16, fp16 or amp (TRAINER.ZIP.PREC)")
    t.add_argument("--test-per-class", type=int, default=None, help="cap on test images per class")
    t.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    t.add_argument("--feature-bank", type=int, default=None, metavar="V",
                   help="encode V augmented views per training image once and sample them per step (off)")
    t.add_argument("--augment", default=None, choices=("tensor", "pil"),
                   help="training views: tensor (decode once, batched crop/flip on the device; default) or pil (reference)")
    t.add_argument("--output-dir", default=None, help="where log.jsonl, checkpoint.safetensors, report.json go "
                   "(default with --resume: the checkpoint's folder)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="checkpoint.safetensors (or its run folder) to continue from")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run files already in --output-dir (refused without it)")
    from .paper.official import add_arguments as add_official_arguments

    add_official_arguments(t)
    _add_common(t)
    t.add_argument("opts", nargs=argparse.REMAINDER, help="official KEY VALUE overrides")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="test accuracy of a checkpoint on a dataset")
    e.add_argument("checkpoint")
    e.add_argument("--data", default=None, help="dataset (default: the checkpoint's)")
    e.add_argument("--pretrained", default=None, help="override the checkpoint's weights source")
    e.add_argument("--test-per-class", type=int, default=None)
    _add_common(e)
    e.set_defaults(fn=cmd_eval)

    d = sub.add_parser("demo", help="ZIP on the built-in planted task (no downloads)")
    d.add_argument("--budget", type=int, default=5000, help="query budget (default 5000, the paper's)")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--precision", default="auto", help="auto (per device), fp32, bf16, fp16")
    d.add_argument("--output-dir", default=DEMO_DIR, help=f"(default {DEMO_DIR}, replaced on every demo)")
    d.add_argument("--overwrite", action="store_true", help="replace the run files in another --output-dir")
    _add_common(d)
    d.set_defaults(fn=cmd_demo, device="auto", backend="auto")

    b = sub.add_parser("bench-paper", help="run one of the paper's protocols and write its tables and plots")
    b.add_argument("protocol", choices=("few-shot", "base2new", "cross-dataset", "ood"))
    b.add_argument("--root", required=True, help="the folder holding the datasets ($DATA)")
    b.add_argument("--output", default="output", help="run folders (the official scripts' layout), tables/, plots/")
    b.add_argument("--datasets", default=None, help="comma-separated (default: the protocol's datasets)")
    b.add_argument("--seeds", default="1,2,3")
    b.add_argument("--methods", default="zip", help="comma-separated: zip, zsclip, bptvlm, bar, blackvip")
    b.add_argument("--shots", type=int, default=16)
    b.add_argument("--config-file", default=None, help="ZIP's trainer yaml (default: the official ZIP settings)")
    b.add_argument("--config-dir", default=None, metavar="DIR",
                   help="the official configs/trainers folder: each method reads DIR/<TRAINER>/vit_b16.yaml")
    b.add_argument("--blackvip-encoder", default=None, metavar="DIR|none", help="BlackVIP's encoder (as for train)")
    b.add_argument("--eval-every", type=int, default=None, metavar="N", help="test accuracy every N queries (plots)")
    b.add_argument("--model", default=None, help="open_clip model (default: the config's ViT-B/16)")
    b.add_argument("--pretrained", default=None, help="weights (default openai)")
    b.add_argument("--ray", default=None, metavar="auto|ADDRESS|local", help="run the jobs as Ray tasks")
    b.add_argument("--cpus-per-job", type=float, default=1)
    b.add_argument("--gpus-per-job", type=float, default=0)
    _add_common(b)
    # "*", not REMAINDER: a REMAINDER right after the protocol would swallow the options written there
    b.add_argument("opts", nargs="*", help="KEY VALUE overrides for every run")
    b.set_defaults(fn=cmd_bench_paper)

    c = sub.add_parser("compare", help="several methods x seeds on one task, same budget: table and plot")
    c.add_argument("--data", default="planted", help="planted (default), planted-cifar100 (image features only: "
                   "the text-side methods), synthetic-images (a generated image folder, random tiny CLIP) or "
                   "an image-folder root")
    c.add_argument("--methods", default=None, help="comma-separated: zip, sharpzo, zo-sgd, zsclip, bptvlm, bar, "
                   "blackvip (default: every method that can run on --data; the last three need images)")
    c.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    c.add_argument("--budget", type=int, default=5000, help="query budget of every run (default 5000)")
    c.add_argument("--eval-every", type=int, default=250, help="queries between test evaluations (default 250)")
    c.add_argument("--targets", default="50,60,70", help="accuracies (%%) for the queries-to-reach columns")
    c.add_argument("--shots", type=int, default=16)
    c.add_argument("--batch-size", type=int, default=128, help="training minibatch of every method (default 128, "
                   "the official configs')")
    c.add_argument("--model", default=None, help="open_clip model (default: zipfast-planted on planted data, "
                   "zipfast-tiny224 on synthetic-images, else ViT-B-16-quickgelu)")
    c.add_argument("--pretrained", default=None)
    c.add_argument("--method-opt", action="append", default=None, metavar="METHOD.KEY=VALUE",
                   help="an option of one method, e.g. sharpzo.change_point=30 (repeatable)")
    c.add_argument("--output-dir", default="runs/compare")
    _add_common(c)
    c.set_defaults(fn=cmd_compare)

    i = sub.add_parser("info", help="versions, device, backends, precision")
    i.set_defaults(fn=cmd_info)

    v = sub.add_parser("verify-gpu", help="prove the GPU path on this GPU and write the verification record",
                       description="Builds the CUDA module if needed, self-checks every compiled kernel against "
                       "its reference, compares the CUDA-graph step with the eager step and a GPU trajectory with "
                       "the CPU one, measures the ZIP step, runs the GPU tests and benchmarks (from a source "
                       "checkout), and writes verify-gpu.json and verify-gpu.md. Nothing is downloaded.")
    v.add_argument("--out", default="gpu-verify", help="folder for the record (default gpu-verify)")
    v.add_argument("--device", default="cuda", help="the CUDA device (default cuda)")
    v.add_argument("--dry-run", action="store_true", help="run the CPU halves of the checks (no GPU needed)")
    v.add_argument("--no-tests", action="store_true", help="skip the GPU tests and benchmarks (pytest)")
    v.set_defaults(fn=cmd_verify_gpu)
    return ap




def resume_command(argv: list[str], checkpoint) -> str:
    """The command line that continues an interrupted `zipfast train` run from `checkpoint`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--resume":
            skip = True
        elif not (a.startswith("--resume=") or a == "--overwrite"):
            out.append(a)
    i = out.index("train") + 1 if "train" in out else 0
    return shlex.join(["zipfast", *out[:i], "--resume", str(checkpoint), *out[i:]])


def _is_user_error(e: BaseException) -> bool:
    """UserError; a ValueError subclass of zipfast's own (the helpers' contract); or an OSError
    the user's file system caused (missing file, disk full, read-only, permissions)."""
    if isinstance(e, UserError) or is_user_os_error(e) or isinstance(e, FileNotFoundError):
        return True
    return isinstance(e, ValueError) and type(e) is not ValueError and type(e).__module__.startswith("zipfast")


def _last_checkpoint_note(e: BaseException, args, argv) -> str:
    """For a write that failed mid-run (disk full…): where the intact last checkpoint is."""
    from .checkpoint import read_checkpoint
    from .errors import OutputDirError

    run = getattr(args, "run_dir", None)
    if not isinstance(e, OutputDirError) or run is None or not run.checkpoint.exists():
        return ""
    try:
        step = read_checkpoint(run.checkpoint).state["step"]
    except Exception:  # the note is a courtesy; the error itself is what matters
        return ""
    return (f". The last checkpoint, {run.checkpoint} (step {step}), is intact; once the problem is fixed, "
            f"resume with: {resume_command(argv, run.checkpoint)}")


def main(argv=None) -> int:
    """Run one command; returns the exit code (see the parser's epilog)."""
    from .signals import TerminateOnSignals

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = parser()
    args, extra = ap.parse_known_args(argv)
    if extra and getattr(args, "cmd", None) == "bench-paper" and not any(e.startswith("--") for e in extra):
        # KEY VALUE pairs after its options
        args.opts = [*(args.opts or ()), *extra]
    elif extra:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = getattr(args, "debug", False)
    from .env import log_to_stderr

    import logging

    log_to_stderr()  # fallbacks, substitutions, cleanups: one "zipfast: ..." line each on stderr
    # open_clip logs through the root logger's functions, which install a root handler on first
    # use; while a command runs, our records go to our handler only, not that one too.
    pkg = logging.getLogger("zipfast")
    propagate, pkg.propagate = pkg.propagate, False
    try:
        with TerminateOnSignals():  # SIGTERM/SIGHUP outside the step loop: a message, not a silent death
            return _run(args, argv, debug)
    finally:
        pkg.propagate = propagate


def _run(args, argv, debug) -> int:
    from .signals import RunInterrupted

    try:
        return args.fn(args)
    except RunInterrupted as e:
        line = f"zipfast {args.cmd}: {e}"
        if e.checkpoint is not None and args.cmd == "train":
            line += f"; resume with: {resume_command(argv, e.checkpoint)}"
        print(line, file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt as e:  # a second SIGINT, or a signal outside the step loop (signals.Terminated)
        if debug:
            traceback.print_exc()
        how = f"stopped by {e.signal_name}" if hasattr(e, "signal_name") else "aborted by SIGINT"
        run = getattr(args, "run_dir", None)
        saved = ""
        if run is not None and run.checkpoint.exists():
            saved = f"; the last checkpoint is {run.checkpoint}"
            if args.cmd == "train":
                saved += f"; resume with: {resume_command(argv, run.checkpoint)}"
        print(f"zipfast {args.cmd}: {how}{saved}", file=sys.stderr, flush=True)
        return getattr(e, "exit_code", EXIT_SIGINT)
    except Exception as e:
        if debug:
            traceback.print_exc()
        if _is_user_error(e):
            print(f"zipfast {args.cmd}: error: {e}{_last_checkpoint_note(e, args, argv)}", file=sys.stderr, flush=True)
            return EXIT_USER
        if not debug:
            traceback.print_exc()
        print(f"zipfast {args.cmd}: internal error ({type(e).__name__}); this is a bug in zipfast or a library it "
              "uses: please report it with the traceback above", file=sys.stderr, flush=True)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
