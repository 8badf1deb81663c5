"""The `zipfast` command line: parses it and dispatches to zipfast.commands; turns errors into
exit codes (2: a bad input, named; 1: a bug, with its traceback; 129/130/143: stopped by a signal)."""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from zipfast.errors import EXIT_INTERNAL, EXIT_SIGINT, EXIT_USER, UserError, is_user_os_error
from zipfast import commands
from zipfast.commands import DEMO_DIR

def _default(field: str, note: str = "") -> str:
    """"default: VALUE" and `note` from TrainConfig's field default, the one source of the run defaults (train's
    flags default to None so that the official yaml and KEY VALUE pairs can set them)."""
    from zipfast.config import TrainConfig

    return f"default: {getattr(TrainConfig(), field)}{note}"


def _add_common(p):
    p.add_argument("--device", default=None, help=f"cpu, cuda, cuda:1, hpu or auto ({_default('device')})")
    p.add_argument("--backend", default=None, help=f"query engine: auto or torch-reference ({_default('backend')})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: $OMP_NUM_THREADS, else every core but one; see "
                        "docs/performance.md for why)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="also print informational lines (backend choices, fitted settings)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the traceback of every error, not only of internal ones")


class _Parser(argparse.ArgumentParser):
    """argparse with the error contract: a bad command line is one line naming it (exit 2), not the
    usage block; `--help` still shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def _get_values(self, action, arg_strings):
        # `--flag=--` reaches argparse as the value "--", which it drops, leaving [] where one value is due
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected one value, got '--'")
        return super()._get_values(action, arg_strings)


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="zipfast", description="Fast ZIP black-box prompt tuning of CLIP.",
                                 epilog="Exit codes: 0 done, 1 internal error (a bug; traceback printed), 2 bad "
                                        "input (message names it), 129/130/143 stopped by SIGHUP/SIGINT/SIGTERM "
                                        "after saving a checkpoint.")
    ap.add_argument("--debug", action="store_true", help="print the traceback of every error")
    ap.add_argument("-v", "--verbose", action="store_true", help="also print informational lines")
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a prompt with ZIP", description=(
        "Train with ZIP. Accepts the official trainer yaml (--config-file) and trailing KEY VALUE "
        "overrides in the official scripts' style, e.g. TRAINER.ZIP.N_CTX 8 TRAINER.BASIC.MAX_API_CALLS 5000. "
        "Flags override both; the defaults shown apply where none of them sets a value."))
    t.add_argument("--config-file", default=None, help="official ZIP yaml (configs/trainers/ZIP/vit_b16.yaml)")
    t.add_argument("--data", default=None, help="image-folder root, planted / planted-cifar100, or synthetic-images "
                   "(a generated 4-class image folder with a random tiny CLIP)")
    t.add_argument("--model", default=None, help=f"open_clip model name ({_default('model')}; on --data planted "
                   "and synthetic-images the task's own random tiny model; OpenAI spellings such as ViT-B/16 name "
                   "the same network)")
    t.add_argument("--pretrained", default=None, help="open_clip tag, local checkpoint path, or none "
                   f"({_default('pretrained', '; none on --data planted and synthetic-images')})")
    t.add_argument("--budget", type=int, default=None,
                   help="query budget (TRAINER.BASIC.MAX_API_CALLS; " + _default("budget", ", the paper's") + ")")
    t.add_argument("--shots", type=int, default=None,
                   help=f"images per class (DATASET.NUM_SHOTS; {_default('shots', '; 0 = every training image')})")
    t.add_argument("--seed", type=int, default=None, help=f"the run's seed (SEED; {_default('seed')})")
    t.add_argument("--batch-size", type=int, default=None,
                   help=f"training minibatch (DATALOADER.TRAIN_X.BATCH_SIZE; {_default('batch_size')})")
    t.add_argument("--method", default=None, help="zip, sharpzo, zo-sgd, zsclip, or the image-side "
                   f"bptvlm, bar, blackvip (these need --data an image folder; {_default('method')})")
    t.add_argument("--method-opt", action="append", default=None, metavar="KEY=VALUE",
                   help="an option of the method's section, e.g. change_point=30 (repeatable; docs/methods.md lists them)")
    t.add_argument("--opt-type", default=None,
                   help=f"ZIP's optimiser: spsa-clip (ZIP), spsa or spsa-gc ({_default('opt_type')})")
    t.add_argument("--perturbation", default=None, choices=("philox", "official"),
                   help="ZIP's perturbation stream: philox (counter-based, regenerated on any device) "
                        f"or official (the official code's torch.Generator draw order; {_default('perturbation')})")
    t.add_argument("--precision", default=None, help="auto (per device), fp32, bf16, fp16 or amp (TRAINER.ZIP.PREC; "
                   f"{_default('precision')})")
    t.add_argument("--test-per-class", type=int, default=None,
                   help="cap on test images per class (default: every test image)")
    t.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints (TRAIN.CHECKPOINT_FREQ; "
                        f"{_default('checkpoint_every', '; 0 = only at the end')})")
    t.add_argument("--feature-bank", type=int, default=None, metavar="V",
                   help="encode V augmented views per training image once and sample them per step "
                        f"({_default('feature_bank', ' (off)')})")
    t.add_argument("--augment", default=None, choices=("tensor", "pil"),
                   help="training views: tensor (decode once, batched crop/flip on the device) or pil (reference; "
                        f"{_default('augment')})")
    t.add_argument("--output-dir", default=None, help="where log.jsonl, checkpoint.safetensors, report.json go "
                   "(default: runs/<method>-<data>-seed<seed>-<time>/; with --resume, the checkpoint's folder)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="checkpoint.safetensors (or its run folder) to continue from")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run files already in --output-dir (refused without it)")
    from zipfast.paper.official import add_arguments as add_official_arguments

    add_official_arguments(t)
    _add_common(t)
    t.add_argument("opts", nargs=argparse.REMAINDER, help="official KEY VALUE overrides")
    t.set_defaults(fn=commands.train)

    e = sub.add_parser("eval", help="test accuracy of a checkpoint on a dataset")
    e.add_argument("checkpoint")
    e.add_argument("--data", default=None, help="dataset (default: the checkpoint's)")
    e.add_argument("--pretrained", default=None, help="override the checkpoint's weights source (default: the "
                   "checkpoint's)")
    e.add_argument("--test-per-class", type=int, default=None,
                   help="cap on test images per class (default: the checkpoint's)")
    e.add_argument("--blackvip-encoder", default=None, metavar="DIR|none",
                   help="BlackVIP's encoder (default: the one the run trained with, from its checkpoint)")
    _add_common(e)
    e.set_defaults(fn=commands.eval_checkpoint)

    d = sub.add_parser("demo", help="ZIP on the built-in planted task (no downloads)")
    d.add_argument("--budget", type=int, default=5000, help="query budget (default: %(default)s, the paper's)")
    d.add_argument("--seed", type=int, default=1, help="the run's seed (default: %(default)s)")
    d.add_argument("--precision", default="auto", help="auto (per device), fp32, bf16, fp16 (default: %(default)s)")
    d.add_argument("--output-dir", default=DEMO_DIR, help="(default: %(default)s, replaced on every demo)")
    d.add_argument("--overwrite", action="store_true", help="replace the run files in another --output-dir")
    _add_common(d)
    d.set_defaults(fn=commands.demo, device="auto", backend="auto")

    b = sub.add_parser("bench-paper", help="run one of the paper's protocols and write its tables and plots")
    b.add_argument("protocol", choices=("few-shot", "base2new", "cross-dataset", "ood"))
    b.add_argument("--root", required=True, help="the folder holding the datasets ($DATA)")
    b.add_argument("--output", default="output", help="run folders (the official scripts' layout), tables/, plots/")
    b.add_argument("--datasets", default=None, help="comma-separated (default: the protocol's datasets)")
    b.add_argument("--skip-missing", action="store_true",
                   help="run only the datasets present under --root (default: exit 2 listing the missing ones)")
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
    b.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the jobs as Ray tasks; --ray alone (= --ray local) joins the cluster of RAY_ADDRESS or the "
                        "one last started here with `ray start`, else starts a local one; --ray auto joins such a "
                        "cluster and fails if none runs; --ray HOST:PORT or ray://HOST:PORT joins that cluster")
    b.add_argument("--group-size", type=int, default=32, metavar="R",
                   help="training runs that share a model and task stepped together at most, each as alone "
                        "(1: one job at a time; --ray runs one job per task; default: %(default)s)")
    b.add_argument("--cpus-per-job", type=float, default=1)
    b.add_argument("--gpus-per-job", type=float, default=0)
    _add_common(b)
    # "*", not REMAINDER: a REMAINDER right after the protocol would swallow the options written there
    b.add_argument("opts", nargs="*", help="KEY VALUE overrides for every run")
    b.set_defaults(fn=lambda a: commands.bench_paper(a, main, parser))

    c = sub.add_parser("compare", help="several methods x seeds on one task, same budget: table and plot")
    c.add_argument("--data", default="planted", help="planted (default), planted-cifar100 (image features only: "
                   "the text-side methods), synthetic-images (a generated image folder, random tiny CLIP) or "
                   "an image-folder root")
    c.add_argument("--methods", default=None, help="comma-separated: zip, sharpzo, zo-sgd, zsclip, bptvlm, bar, "
                   "blackvip (default: every method that can run on --data; the last three need images)")
    c.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default: %(default)s)")
    c.add_argument("--budget", type=int, default=5000, help="query budget of every run (default: %(default)s)")
    c.add_argument("--eval-every", type=int, default=250, help="queries between test evaluations (default: "
                   "%(default)s)")
    c.add_argument("--targets", default="50,60,70", help="accuracies (%%) for the queries-to-reach columns "
                   "(default: %(default)s)")
    c.add_argument("--shots", type=int, default=16, help="images per class (default: %(default)s)")
    c.add_argument("--batch-size", type=int, default=128, help="training minibatch of every method (default: "
                   "%(default)s, the official configs')")
    c.add_argument("--model", default=None, help="open_clip model (default: zipfast-planted on planted data, "
                   "zipfast-tiny224 on synthetic-images, else ViT-B-16-quickgelu)")
    c.add_argument("--pretrained", default=None, help="weights (default: none on the built-in tasks, else openai)")
    c.add_argument("--method-opt", action="append", default=None, metavar="METHOD.KEY=VALUE",
                   help="an option of one method, e.g. sharpzo.change_point=30 (repeatable)")
    c.add_argument("--output-dir", default=None, help="outputs, and one folder per run under runs/: the same "
                   "command again skips finished runs and continues a stopped one (default: runs/compare-<data>, "
                   "e.g. runs/compare-planted)")
    c.add_argument("--overwrite", action="store_true",
                   help="delete the runs already in --output-dir first (needed when its settings differ)")
    _add_common(c)
    c.set_defaults(fn=commands.compare)

    w = sub.add_parser("sweep", help="a grid of runs (hyperparameters x seeds x methods) stepped together in run "
                       "groups; the configuration chosen on the validation split, its test accuracy per seed")
    w.add_argument("--data", default="planted", help="planted (default), planted-cifar100, synthetic-images or an "
                   "image-folder root (as for compare)")
    w.add_argument("--grid", action="append", default=None, metavar="KEY=V1,V2 | paper | FILE.yaml",
                   help="a grid axis, e.g. --grid a=0.1,0.01 --grid rank=1,3 (repeatable; KEY: a ZIP setting such as "
                        "intrinsic_dim or rank, an SPSA element o/c/a/alpha/gamma, or METHOD.OPTION); paper: each "
                        "method's search space of the paper's Table 16; a .yaml file with methods, seeds and grid")
    w.add_argument("--methods", default=None, help="comma-separated methods (default: zip, or the yaml's)")
    w.add_argument("--seeds", default=None, help="comma-separated seeds, or a range such as 1-3 (default: 1, or the "
                   "yaml's)")
    w.add_argument("--budget", type=int, default=5000, help="query budget of every run (default: %(default)s)")
    w.add_argument("--shots", type=int, default=16, help="images per class (default: %(default)s)")
    w.add_argument("--batch-size", type=int, default=128, help="training minibatch of every run (default: "
                   "%(default)s, the official configs')")
    w.add_argument("--model", default=None, help="open_clip model (default: as for compare)")
    w.add_argument("--pretrained", default=None, help="weights (default: none on the built-in tasks, else openai)")
    w.add_argument("--method-opt", action="append", default=None, metavar="METHOD.KEY=VALUE",
                   help="a fixed option of one method for every run, e.g. bar.focal_g=0 (repeatable)")
    w.add_argument("--test-per-class", type=int, default=None,
                   help="cap on test images per class (default: every test image; an image folder without val/ or "
                        "test/ draws its validation images from what the cap leaves)")
    w.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS",
                   help="steps between each run's checkpoints, what a killed sweep continues from (default: "
                        "%(default)s)")
    w.add_argument("--skip-invalid", action="store_true",
                   help="leave out grid points whose settings are invalid together (default: refuse the grid)")
    w.add_argument("--max-runs", type=int, default=None, metavar="N",
                   help="run only the first N runs in grid order (a try of a large grid; the same command with a "
                        "larger N, or without it, reads them back and goes on)")
    w.add_argument("--group-size", type=int, default=32, metavar="R",
                   help="runs stepped together at most (memory: docs/sweep.md; default: %(default)s)")
    w.add_argument("--eval-every", type=int, default=None, metavar="N",
                   help="queries between test evaluations of each run's curve (default: a tenth of the budget)")
    w.add_argument("--heatmap", default=None, metavar="KEY1,KEY2",
                   help="the two grid axes of the heat map (default: the two with the most values)")
    w.add_argument("--output-dir", default=None, help="outputs and one folder per run under runs/: the same command "
                   "again (or with a larger grid) skips finished runs and continues stopped ones (default: "
                   "runs/sweep-<data>)")
    w.add_argument("--overwrite", action="store_true", help="delete the runs already in --output-dir first")
    w.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run each group as a Ray task (addresses as for bench-paper --ray)")
    w.add_argument("--cpus-per-group", type=float, default=1)
    w.add_argument("--gpus-per-group", type=float, default=0)
    w.add_argument("--groups", default=None, help=argparse.SUPPRESS)  # a Ray task's share: group indices
    _add_common(w)
    w.set_defaults(fn=lambda a: commands.sweep(a, main))

    i = sub.add_parser("info", help="versions, device, backends, precision")
    i.set_defaults(fn=commands.info)

    v = sub.add_parser("verify-gpu", help="prove the GPU path on this GPU and write the verification record",
                       description="Builds the CUDA module if needed, self-checks every compiled kernel against "
                       "its reference, compares the CUDA-graph step with the eager step and a GPU trajectory with "
                       "the CPU one, measures the ZIP step, runs the GPU tests and benchmarks (from a source "
                       "checkout), and writes verify-gpu.json and verify-gpu.md. Nothing is downloaded.")
    v.add_argument("--out", default="gpu-verify", help="folder for the record (default gpu-verify)")
    v.add_argument("--device", default="cuda", help="the CUDA device (default cuda)")
    v.add_argument("--dry-run", action="store_true", help="run the CPU halves of the checks (no GPU needed)")
    v.add_argument("--no-tests", action="store_true", help="skip the GPU tests and benchmarks (pytest)")
    v.set_defaults(fn=commands.verify_gpu)
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


def continue_command(argv: list[str]) -> str:
    """The command line that continues an interrupted compare, sweep or bench-paper: the same one, less
    --overwrite (which would delete the runs it kept)."""
    return shlex.join(["zipfast", *(a for a in argv if a != "--overwrite")])


def _is_user_error(e: BaseException) -> bool:
    """UserError; a ValueError subclass of zipfast's own (the helpers' contract); or an OSError
    the user's file system caused (missing file, disk full, read-only, permissions)."""
    if isinstance(e, UserError) or is_user_os_error(e) or isinstance(e, FileNotFoundError):
        return True
    return isinstance(e, ValueError) and type(e) is not ValueError and type(e).__module__.startswith("zipfast")


def _last_checkpoint_note(e: BaseException, args, argv) -> str:
    """For a write that failed mid-run (disk full…): where the intact last checkpoint is."""
    from zipfast.run.checkpoint import read_checkpoint
    from zipfast.errors import OutputDirError

    run = getattr(args, "run_dir", None)
    if not isinstance(e, OutputDirError) or run is None or not run.checkpoint.exists():
        return ""
    try:
        step = read_checkpoint(run.checkpoint).state["step"]
    except Exception:  # the note is a courtesy; the error itself is what matters
        return ""
    return (f". The last checkpoint, {run.checkpoint} (step {step}), is intact; once the problem is fixed, "
            f"resume with: {resume_command(argv, run.checkpoint)}")


def main(argv=None, fn=None) -> int:
    """Run one command; returns the exit code (see the parser's epilog). fn(args): run instead of the
    command's own function, its errors turned into exit codes the same way (bench-paper's grouped jobs)."""
    from zipfast.run.signals import TerminateOnSignals

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = parser()
    args, extra = ap.parse_known_args(argv)
    if extra and getattr(args, "cmd", None) == "bench-paper" and not any(e.startswith("--") for e in extra):
        # KEY VALUE pairs after its options
        args.opts = [*(args.opts or ()), *extra]
    elif extra:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    if fn is not None:
        args.fn = fn
    debug = getattr(args, "debug", False)
    from zipfast.env import log_to_stderr

    import logging

    # warnings (fallbacks the user forced, substitutions, cleanups): one "zipfast: ..." line each on
    # stderr; the informational lines (automatic backend choices, fitted settings) with -v
    log_to_stderr(logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    # open_clip logs through the root logger's functions, which install a root handler on first
    # use; while a command runs, our records go to our handler only, not that one too.
    pkg = logging.getLogger("zipfast")
    propagate, pkg.propagate = pkg.propagate, False
    try:
        with TerminateOnSignals():  # SIGTERM/SIGHUP outside the step loop: a message, not a silent death
            return _run(args, argv, debug)
    finally:
        pkg.propagate = propagate


_nested: list[str] = []  # the commands main() is running in this process (bench-paper runs its jobs through it)


def _run(args, argv, debug) -> int:
    from zipfast.run.signals import RunInterrupted

    import torch

    from zipfast.env import set_threads

    threads, outermost = torch.get_num_threads(), not _nested
    _nested.append(args.cmd)
    try:
        # a job that bench-paper runs in this process keeps the threads of the command that started it
        if hasattr(args, "threads") and (args.threads is not None or outermost):
            set_threads(args.threads)
        args.argv = argv  # the command line as given (sweep --ray hands it to its tasks)
        return args.fn(args)
    except RunInterrupted as e:
        line = f"zipfast {args.cmd}: {e}"
        if e.checkpoint is not None and args.cmd == "train":
            line += f"; resume with: {resume_command(argv, e.checkpoint)}"
        elif args.cmd == "bench-paper" or (args.cmd in ("compare", "sweep") and getattr(args, "output_dir", None)):
            line += f"; continue with the same command: {continue_command(argv)}"
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
            message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one line, always
            print(f"zipfast {args.cmd}: error: {message}{_last_checkpoint_note(e, args, argv)}", file=sys.stderr,
                  flush=True)
            return EXIT_USER
        if not debug:
            traceback.print_exc()
        print(f"zipfast {args.cmd}: internal error ({type(e).__name__}); this is a bug in zipfast or a library it "
              "uses: please report it with the traceback above", file=sys.stderr, flush=True)
        return EXIT_INTERNAL
    finally:
        _nested.pop()
        torch.set_num_threads(threads)  # main() called in-process (tests, bench-paper's jobs) leaves them as found


if __name__ == "__main__":
    sys.exit(main())
