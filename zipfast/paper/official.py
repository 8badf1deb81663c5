"""The official `train.py` command line, on zipfast's engine.

`zipfast train` accepts train.py's flags with their official meaning, so a line of the official
scripts runs with `python train.py` replaced by `zipfast train`:

    zipfast train --root $DATA --seed 1 --trainer ZIP \
        --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file configs/trainers/ZIP/vit_b16.yaml --output-dir output/…/seed1 \
        DATASET.NUM_SHOTS 16 TRAINER.BASIC.MAX_API_CALLS 5000 …

Settings merge in the official order: dataset config file, trainer config file, the flags
(--root, --output-dir, --seed, --transforms, --trainer, --backbone), then the KEY VALUE list. The
run writes Dassl's `log.txt` (see dassl_log) and result.json. Trainers: ZIP trains; ZeroshotCLIP
(alias ZSCLIP) evaluates the dataset's hand-written template (the `zsclip` method); `--method` picks
another optimiser for `--trainer ZIP` runs; BPTVLM, BAR and BlackVIP train the image-side baselines
(their keys TRAINER.BPTVLM.*, TRAINER.BAR.*, TRAINER.BLACKVIP.*, read as train.py does: its own
defaults, the dataset yaml, the trainer yaml, the flags, the KEY VALUE list); any other official
trainer is refused by name. Every trainer runs on the one `Trainer`.

`--eval-only --model-dir DIR` evaluates the prompt in DIR's checkpoint on this command's dataset and
classes (base→new, cross-dataset, OOD); the checkpoint's method and the settings that shape its
prompt win (zipfast.run.prompt). DATASET.SUBSAMPLE_CLASSES base|new trains/tests on half of the
classes. BAR and BlackVIP classify with the dataset's hand-written template, as officially.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from zipfast.run.checkpoint import CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME
from zipfast.config import ConfigError, cfg_to_train_config, load_official
from zipfast.datasets.ids import paper_dataset_id
from zipfast.io import save_json
from zipfast.methods import IMAGE_TRAINERS

log = logging.getLogger("zipfast.paper")

TRAINERS = {"ZIP": "zip", "ZeroshotCLIP": "zsclip", "ZSCLIP": "zsclip"}
# Official trainers zipfast does not run (yet): refused by name rather than misread.
NOT_IMPLEMENTED = ("ZeroshotCLIP2", "CoOp", "CoCoOp")
RESULT_FILE = "result.json"
SUBSAMPLES = ("all", "base", "new")  # DATASET.SUBSAMPLE_CLASSES: every class, the first half, the rest
LOG_ONLY = "--log-only"  # bench-paper's jobs: Dassl's lines to log.txt only, the terminal keeps its progress bar


def add_arguments(p: argparse.ArgumentParser) -> None:
    """train.py's flags (those zipfast's `train` did not already have)."""
    g = p.add_argument_group("official train.py flags")
    g.add_argument("--root", default="", help="DATASET.ROOT: the folder holding the datasets ($DATA)")
    g.add_argument("--trainer", default="", help="TRAINER.NAME: ZIP, ZeroshotCLIP (ZSCLIP), BPTVLM, BAR or BlackVIP")
    g.add_argument("--blackvip-encoder", default=None, metavar="DIR|none",
                   help="BlackVIP's encoder: a local transformers directory (default: the hub name of "
                        "TRAINER.BLACKVIP.PT_BACKBONE), or none for random weights")
    g.add_argument("--dataset-config-file", default="", help="configs/datasets/<name>.yaml (sets DATASET.NAME)")
    g.add_argument("--model-dir", default="", help="run folder whose checkpoint --eval-only evaluates")
    g.add_argument("--load-epoch", type=int, default=None, help="accepted; a zipfast checkpoint holds the final prompt")
    g.add_argument("--eval-only", action="store_true", help="evaluate (--model-dir's prompt, or zero-shot) and stop")
    g.add_argument("--no-train", action="store_true", help="build everything, do not train")
    g.add_argument("--backbone", default="", help="MODEL.BACKBONE.NAME, e.g. ViT-B/16")
    g.add_argument("--transforms", nargs="+", default=None, help="INPUT.TRANSFORMS")
    g.add_argument("--head", default="", help=argparse.SUPPRESS)
    g.add_argument("--source-domains", nargs="+", default=None, help=argparse.SUPPRESS)
    g.add_argument("--target-domains", nargs="+", default=None, help=argparse.SUPPRESS)
    g.add_argument("--visual-backbone", default="", help=argparse.SUPPRESS)
    g.add_argument("--best_or_last", default="last", help=argparse.SUPPRESS)
    g.add_argument("--eval-every", type=int, default=None, metavar="N",
                   help="evaluate on the test split every N queries (curve.jsonl; plots in bench-paper)")
    g.add_argument(LOG_ONLY, action="store_true",
                   help="write Dassl's lines to <output-dir>/log.txt only, not also to the terminal")


def wanted(args) -> bool:
    """True when the command line uses the official surface (a dataset by name, a trainer, eval-only…)."""
    return bool(args.root or args.dataset_config_file or args.trainer or args.eval_only or args.no_train
                or args.model_dir)


def check_subsample(value) -> str:
    """DATASET.SUBSAMPLE_CLASSES, or ConfigError naming the bad value."""
    if value not in SUBSAMPLES:
        raise ConfigError(f"DATASET.SUBSAMPLE_CLASSES must be all, base or new; got {value!r}")
    return value


def _resets(args) -> list:
    """reset_cfg of train.py: the flags as KEY VALUE pairs, merged after the files and before opts."""
    pairs = []
    for flag, key in (("root", "DATASET.ROOT"), ("output_dir", "OUTPUT_DIR"), ("trainer", "TRAINER.NAME"),
                      ("backbone", "MODEL.BACKBONE.NAME")):
        if getattr(args, flag):
            pairs += [key, getattr(args, flag)]
    if args.seed is not None and args.seed >= 0:
        pairs += ["SEED", str(args.seed)]
    if args.transforms:
        pairs += ["INPUT.TRANSFORMS", list(args.transforms)]
    return pairs


def _trainer_kind(name: str) -> str:
    if name in TRAINERS:
        return TRAINERS[name]
    known = ", ".join([*TRAINERS, *IMAGE_TRAINERS])
    if name in NOT_IMPLEMENTED:
        raise ConfigError(f"--trainer {name} (TRAINER.NAME) is an official trainer zipfast does not implement yet; "
                          f"implemented: {known}")
    raise ConfigError(f"unknown --trainer {name!r} (TRAINER.NAME); implemented: {known}")


def official_config(args):
    """(TrainConfig, trainer kind, DATASET.NAME, subsample) of an official command line."""
    from zipfast.datasets import get_spec

    cfg = load_official(args.config_file or None, _resets(args) + list(args.opts or ()),
                        args.dataset_config_file or None)
    kind = _trainer_kind(cfg.TRAINER.NAME)
    name, root, subsample = cfg.DATASET.NAME, cfg.DATASET.ROOT, cfg.DATASET.SUBSAMPLE_CLASSES
    if not name:
        raise ConfigError("DATASET.NAME is empty: pass --dataset-config-file configs/datasets/<dataset>.yaml")
    if not root:
        raise ConfigError("DATASET.ROOT is empty: pass --root $DATA (the folder holding the datasets)")
    check_subsample(subsample)
    spec = get_spec(name)
    # Keys the flat TrainConfig does not model: read above, reset so the ZIP mapping accepts the rest.
    plain = cfg.clone()
    plain.defrost()
    plain.TRAINER.NAME, plain.DATASET.SUBSAMPLE_CLASSES, plain.RESUME = "ZIP", "all", ""
    plain.freeze()
    flags = {"dataset": paper_dataset_id(spec.key, subsample, root), "model": args.model,
             "pretrained": args.pretrained, "budget": args.budget, "shots": args.shots,
             "batch_size": args.batch_size, "backend": args.backend, "precision": args.precision,
             "device": args.device, "test_per_class": args.test_per_class,
             "checkpoint_every": args.checkpoint_every, "feature_bank": args.feature_bank,
             "opt_type": args.opt_type, "augment": args.augment, "method": getattr(args, "method", None)}
    return cfg_to_train_config(plain, **flags), kind, spec, subsample


def job_config(argv: list[str], parser):
    """The TrainConfig of a `zipfast train` argument list (parser(): the CLI's parser), read as the run
    will read it; no model or data loaded. Raises what the run would raise on bad settings."""
    args = parser().parse_args(["train", *argv])
    return official_image_config(args)[1] if args.trainer in IMAGE_TRAINERS else official_config(args)[0]


def find_checkpoint(model_dir) -> Path:
    d = Path(model_dir)
    path = d if d.is_file() else next((d / n for n in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME) if (d / n).is_file()),
                                      d / CHECKPOINT_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"no zipfast checkpoint for --model-dir {str(model_dir)!r}: looked for "
                                f"'{d / CHECKPOINT_NAME}'; train into that folder with --output-dir first")
    return path


def _prompt_settings(sd_config: dict) -> dict:
    """The checkpoint's settings that shape the prompt and the model (they must win on evaluation)."""
    keys = ("model", "pretrained", "n_ctx", "ctx_init", "intrinsic_dim", "rank", "method", "method_options")
    return {k: sd_config[k] for k in keys if k in sd_config}


# train.py flags that only the official domain-generalisation trainers read: accepted at their
# defaults (the official scripts pass none of them for ZIP), refused by name when set.
_UNUSED_FLAGS = (("head", ""), ("source_domains", None), ("target_domains", None), ("visual_backbone", ""),
                 ("best_or_last", "last"))


def refuse_unused_flags(args) -> None:
    if getattr(args, "log_only", False) and not wanted(args):
        raise ConfigError(f"{LOG_ONLY} applies to the official train.py surface (--root, --trainer, …), whose runs "
                          f"write Dassl's log.txt; this command line does not use it: drop {LOG_ONLY}")
    for name, default in _UNUSED_FLAGS:
        value = getattr(args, name, default)
        if value != default:
            raise ConfigError(f"--{name.replace('_', '-') if name != 'best_or_last' else name} {value!r}: this flag "
                              f"of the official train.py has no effect in zipfast's trainers; drop it")


def official_image_config(args):
    """(method, TrainConfig, method options, dataset spec, subsample, checkpoint or None) of an official
    image-trainer command line; the checkpoint is --model-dir's for --eval-only (layout v2)."""
    from zipfast.config import load_official_image, method_options, train_config_from_official
    from zipfast.datasets import get_spec
    from zipfast.run.prompt import prompt_settings, read_prompt_checkpoint

    method, shared, mc, node = load_official_image(args.config_file or None, _resets(args) + list(args.opts or ()),
                                                   args.dataset_config_file or None, trainer=args.trainer,
                                                   return_node=True)
    if not node.DATASET.NAME:
        raise ConfigError("DATASET.NAME is empty: pass --dataset-config-file configs/datasets/<dataset>.yaml")
    if not node.DATASET.ROOT:
        raise ConfigError("DATASET.ROOT is empty: pass --root $DATA (the folder holding the datasets)")
    subsample = check_subsample(node.DATASET.SUBSAMPLE_CLASSES)
    spec = get_spec(node.DATASET.NAME)
    ck, prompt_fields = None, {}
    if args.eval_only:
        if not args.model_dir:
            raise ConfigError(f"--eval-only with --trainer {args.trainer} needs --model-dir (the run folder of a "
                              f"trained prompt)")
        ck = read_prompt_checkpoint(find_checkpoint(args.model_dir), method)
        prompt_fields, method_fields = prompt_settings(ck)
        mc = method_options(method, **method_fields)
    elif args.model_dir:
        log.info("--model-dir %s ignored: only --eval-only reads it (as train.py)", args.model_dir)
    if hasattr(mc, "autocast") and args.precision and not args.eval_only:  # a precision asked for: all queries run it
        mc = dataclasses.replace(mc, autocast="prec")
    if getattr(args, "blackvip_encoder", None) and hasattr(mc, "encoder"):
        mc = dataclasses.replace(mc, encoder=args.blackvip_encoder)
    flags = {"dataset": paper_dataset_id(spec.key, subsample, node.DATASET.ROOT), "model": args.model,
             "pretrained": args.pretrained, "budget": args.budget, "shots": args.shots,
             "batch_size": args.batch_size, "backend": args.backend, "precision": args.precision,
             "device": args.device, "test_per_class": args.test_per_class,
             "checkpoint_every": args.checkpoint_every, "augment": args.augment, "method": method,
             "sp_avg": 1}  # sp_avg: ZIP's, unused here
    cfg = train_config_from_official(shared, **flags)
    if prompt_fields:  # the checkpoint's model and prompt shape win over the flags, as for ZIP
        cfg = dataclasses.replace(cfg, **prompt_fields).validate()
    return method, cfg, mc, spec, subsample, ck


def run(args) -> int:
    """Run an official command line (any implemented trainer) on the one Trainer."""
    job = prepare(args)
    try:
        if not job.no_train:
            job.finish(job.trainer.fit() if job.trains else None)
        return 0
    finally:
        job.close()


@dataclasses.dataclass
class Prepared:
    """An official command line up to its fit: the Dassl log (open until `close`), the Trainer (resumed,
    its hooks added) and what the end of the run writes. `trains`: fit() it, then finish(report);
    else finish(None) evaluates. bench-paper fits several in one run group (zipfast.paper.grouped)."""

    args: argparse.Namespace
    dlog: object
    trainer: object
    trains: bool
    no_train: bool
    kind: str
    cfg: object
    spec: object
    subsample: str
    n_classes: int
    fewshot_source: object
    ck: object = None         # --eval-only: --model-dir's checkpoint
    ck_prompt: object = None  # and its prompt, loaded

    def finish(self, report: dict | None) -> float:
        """Dassl's end-of-training lines (report: the fit's), the test predictions and result.json →
        the test accuracy (%)."""
        t, args, dlog = self.trainer, self.args, self.dlog
        queries, w = 0, None
        if self.trains:
            best = getattr(t.optimizer, "report", None) == "best"  # CMA-ES's best candidate (BPT-VLM)
            dlog(f"Reach the maximum number of API calls: {report['queries']} queries in {report['steps']} steps "
                 f"({report['queries_per_s']} queries/s)")
            dlog("Finish training")
            dlog("Deploy the best prompt (lowest training loss)" if best else "Deploy the last-epoch model")
            queries = report["queries"]
        elif self.ck is not None:
            w, queries = self.ck_prompt, int(self.ck.state.get("queries", 0))
        pred, true = t.test_predictions(w)
        cfg = self.cfg
        return write_result(dlog, pred, true, args.eval_only, cfg.output_dir or None, trainer=self.kind,
                            dataset=self.spec.name, subsample=self.subsample, seed=cfg.seed, shots=cfg.shots,
                            queries=queries, n_classes=self.n_classes, fewshot_source=self.fewshot_source)

    def close(self) -> None:
        self.dlog.close()


def prepare(args, cache: dict | None = None) -> Prepared:
    """An official command line built up to its fit (see Prepared). cache: one dict shared by the runs of
    a group (one load per task key, one data source); None: this run's own."""
    from zipfast.run.prompt import refuse_image_checkpoint
    from zipfast.run.state import read_run
    from zipfast.run.task import cached, load
    from zipfast.run.trainer import Trainer
    from zipfast.paper.dassl_log import DasslLog

    image = args.trainer in IMAGE_TRAINERS
    ck, options = None, None
    if image:
        kind, cfg, options, spec, subsample, ck = official_image_config(args)
        trains = True
    else:
        cfg, kind, spec, subsample = official_config(args)
        trains = kind == "zip"
        if args.eval_only and kind == "zip":
            if not args.model_dir:
                raise ConfigError("--eval-only with --trainer ZIP needs --model-dir (the run folder of a trained prompt)")
            ckpt = find_checkpoint(args.model_dir)
            refuse_image_checkpoint(ckpt, "ZIP")
            ck = read_run(ckpt)
            cfg = dataclasses.replace(cfg, **_prompt_settings(ck.state["config"])).validate()
        if kind == "zsclip":  # the zsclip method (zipfast.methods) with the dataset's official template
            cfg = dataclasses.replace(cfg, method="zsclip", method_options={"template": spec.template}).validate()
        if args.eval_only or kind == "zsclip":  # nothing trains: skip decoding the (possibly huge) train split
            cfg = dataclasses.replace(cfg, augment="pil").validate()
    trains = trains and not args.eval_only
    out = cfg.output_dir or None
    dlog = DasslLog(out, echo=not getattr(args, "log_only", False))
    try:
        dlog(f"Setting fixed seed: {cfg.seed}")
        if image:
            dlog(f"Trainer: {args.trainer} ({kind}), method settings: {dataclasses.asdict(options)}")
        else:
            dlog("** Arguments **")
            for key in sorted(vars(args)):
                if key != "fn":
                    dlog(f"{key}: {getattr(args, key)}")
            dlog("** Config (zipfast) **")
            dlog(json.dumps(cfg.to_dict(), sort_keys=True))
        model, tokenizer, classnames, data = load(cfg) if cache is None else cached(cfg, cache)
        dlog(f"Dataset: {spec.name} ({subsample} classes: {len(classnames)}; train {len(data.train)}, "
             f"test {len(data.test)})")
        fewshot_source = getattr(data, "fewshot_source", None)
        if image and args.eval_only:  # nothing trains: decode no training image
            data = dataclasses.replace(data, train=[])
        # As Dassl: a folder with a checkpoint resumes (_resume); one without starts over, replacing
        # what a run killed before its first checkpoint left there (overwrite).
        trainer = Trainer(model, classnames, cfg, data, tokenizer=tokenizer, options=options,
                          template=spec.template if image else None, output_dir=out if trains else None,
                          progress=not args.no_progress, overwrite=True, cache=cache)
        job = Prepared(args, dlog, trainer, trains, args.no_train and not args.eval_only, kind, cfg, spec, subsample,
                       len(classnames), fewshot_source, ck)
        if job.no_train:
            dlog("--no-train: nothing trained")
        elif kind == "zsclip":
            dlog(f"Zero-shot CLIP, template {trainer.template or spec.template!r}")
        elif args.eval_only:
            if args.load_epoch is not None:
                log.info("--load-epoch %s ignored: a zipfast checkpoint holds the final prompt", args.load_epoch)
            job.ck_prompt = trainer.load_prompt(ck)
            best = getattr(trainer.optimizer, "report", None) == "best"  # CMA-ES's best candidate (BPT-VLM)
            dlog(f"Loading prompt from {ck.path} ({int(ck.state.get('queries', 0))} queries"
                 + (", the best candidate seen" if best else f", step {ck.state.get('step')}") + ")")
        else:
            _resume(trainer, args, out, dlog)
            if args.eval_every:  # test accuracy every N queries into curve.jsonl (no queries spent)
                from zipfast.run.hooks import EvalEvery

                trainer.step_hooks.append(EvalEvery(args.eval_every, out))
        return job
    except BaseException:
        dlog.close()
        raise


def write_result(dlog, pred, true, eval_only: bool, out, **fields) -> float:
    """Dassl's end of a run: the result block (then "Test acc" for --eval-only, else the elapsed
    time) and result.json (`fields` + the accuracy) in `out`; returns the accuracy (%)."""
    from zipfast.paper.dassl_log import result_block

    dlog("Evaluate on the *test* set")
    text, acc = result_block(pred, true)
    dlog(text)
    if eval_only:
        dlog(f"Test acc: {acc:.2f}")
    else:
        dlog.elapsed()
    if out:
        save_json({**fields, "accuracy": acc}, Path(out) / RESULT_FILE)
    return acc


def _resume(trainer, args, out, dlog) -> None:
    """--resume DIR|FILE, or (as Dassl) a checkpoint already in the output folder."""
    src = args.resume or (out if out and any((Path(out) / n).is_file() for n in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME))
                          else "")
    if src:
        path = find_checkpoint(src)
        trainer.load_checkpoint(path)
        dlog(f"Resumed from {path} at step {trainer.step} ({trainer.queries} queries)")
