"""`zipfast train --trainer BPTVLM|BAR|BlackVIP`: the official image-side trainers on zipfast's engine.

The official script line runs unchanged (`python train.py` → `zipfast train`), e.g.

    zipfast train --root $DATA --seed 1 --trainer BAR \
        --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file configs/trainers/BAR/vit_b16.yaml --output-dir output/basic/BAR/eurosat/seed1 \
        DATASET.SUBSAMPLE_CLASSES all DATASET.NUM_SHOTS 16 TRAINER.BASIC.MAX_API_CALLS 5000

Settings merge as train.py does (train.py's defaults, dataset yaml, trainer yaml, flags, KEY
VALUE list); the keys are TRAINER.BPTVLM.*, TRAINER.BAR.*, TRAINER.BLACKVIP.* (see
zipfast.image_config). BAR and BlackVIP classify with the dataset's hand-written template, as
officially. DATASET.SUBSAMPLE_CLASSES base|new trains/tests on half of the classes (as the ZIP
trainer). `--eval-only --model-dir DIR` evaluates the prompt in DIR's checkpoint on this
command's dataset and classes (base→new, cross-dataset, OOD); the checkpoint's method and the
settings that shape its prompt win (zipfast.image_prompt). The run writes Dassl's log.txt and
result.json like the ZIP trainer.
"""

from __future__ import annotations

import dataclasses
import logging

from ..config import ConfigError
from ..image_config import TRAINER_NAMES, load_official_image, method_config, train_config_from_official
from ..image_prompt import prompt_settings, read_prompt_checkpoint
from .official import train_logged, write_result

log = logging.getLogger("zipfast.paper")


def wanted(args) -> bool:
    return getattr(args, "trainer", "") in TRAINER_NAMES


def official_image_config(args):
    """(method, TrainConfig, method config, dataset spec, subsample, checkpoint or None) of an
    official image-trainer command line; the checkpoint is --model-dir's for --eval-only."""
    from ..datasets import get_spec
    from .official import _resets, check_subsample, find_checkpoint, paper_dataset_id

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
        mc = method_config(method, **method_fields)
    elif args.model_dir:
        log.info("--model-dir %s ignored: only --eval-only reads it (as train.py)", args.model_dir)
    if method == "blackvip" and args.precision and not args.eval_only:  # a precision asked for: all queries run it
        mc = dataclasses.replace(mc, autocast="prec")
    if getattr(args, "blackvip_encoder", None):
        mc = dataclasses.replace(mc, encoder=args.blackvip_encoder)
    flags = {"dataset": paper_dataset_id(spec.key, subsample, node.DATASET.ROOT), "model": args.model,
             "pretrained": args.pretrained, "budget": args.budget, "shots": args.shots,
             "batch_size": args.batch_size, "backend": args.backend, "precision": args.precision,
             "device": args.device, "test_per_class": args.test_per_class,
             "checkpoint_every": args.checkpoint_every, "augment": args.augment,
             "sp_avg": 1}  # sp_avg: ZIP's, unused here
    cfg = train_config_from_official(shared, **flags)
    if prompt_fields:  # the checkpoint's model and prompt shape win over the flags, as for ZIP
        cfg = dataclasses.replace(cfg, **prompt_fields).validate()
    return method, cfg, mc, spec, subsample, ck


def run(args, build_run) -> int:
    """Run an official image-trainer command line; build_run(cfg) → (model, tokenizer,
    classnames, data) is the CLI's (passed in: this module sits below the CLI)."""
    from ..image_trainer import ImagePromptTrainer
    from ..trainer import adapt_config
    from .dassl_log import DasslLog

    method, cfg, mc, spec, subsample, ck = official_image_config(args)
    out = cfg.output_dir or None
    dlog = DasslLog(out)
    try:
        dlog(f"Setting fixed seed: {cfg.seed}")
        dlog(f"Trainer: {args.trainer} ({method}), method settings: {dataclasses.asdict(mc)}")
        model, tokenizer, classnames, data = build_run(cfg)
        notes = []  # changes to the config: logged, and in the report's adjustments
        if method != "bar":  # BAR's INPUT.SIZE is the image inside the frame, not the model's input
            cfg, notes = adapt_config(cfg, model, encodes_images=True)
        dlog(f"Dataset: {spec.name} ({subsample} classes: {len(classnames)}; train {len(data.train)}, "
             f"test {len(data.test)})")
        fewshot_source = getattr(data, "fewshot_source", None)
        if args.eval_only:  # nothing trains: decode no training image
            data = dataclasses.replace(data, train=[])
        # As Dassl (and the ZIP trainer): a folder with a checkpoint resumes, one without starts over.
        trainer = ImagePromptTrainer(method, model, classnames, cfg, data, mc, tokenizer=tokenizer,
                                     template=spec.template, output_dir=None if args.eval_only else out,
                                     progress=not args.no_progress, overwrite=True, adjustments=notes)
        if args.no_train and not args.eval_only:
            dlog("--no-train: nothing trained")
            return 0
        if args.eval_only:
            if args.load_epoch is not None:
                log.info("--load-epoch %s ignored: a zipfast checkpoint holds the final prompt", args.load_epoch)
            w = trainer.load_prompt(ck)
            queries = int(ck.state.get("queries", 0))
            dlog(f"Loading prompt from {ck.path} ({queries} queries"
                 f"{', the best candidate seen' if method == 'bptvlm' else ''})")
            pred, true, _ = trainer.test_predictions(w)
        else:
            queries = train_logged(trainer, args, out, dlog, "Deploy the last-epoch model" if method != "bptvlm"
                                   else "Deploy the best prompt (lowest training loss)")
            pred, true, _ = trainer.test_predictions()
        write_result(dlog, pred, true, args.eval_only, out, trainer=method, dataset=spec.name, subsample=subsample,
                     seed=cfg.seed, shots=cfg.shots, queries=queries, n_classes=len(classnames),
                     fewshot_source=fewshot_source)
        return 0
    finally:
        dlog.close()
