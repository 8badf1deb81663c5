"""`zipfast train --trainer BPTVLM|BAR|BlackVIP`: the official image-side trainers on zipfast's engine.

The official script line runs unchanged (`python train.py` → `zipfast train`), e.g.

    zipfast train --root $DATA --seed 1 --trainer BAR \
        --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file configs/trainers/BAR/vit_b16.yaml --output-dir output/basic/BAR/eurosat/seed1 \
        DATASET.SUBSAMPLE_CLASSES all DATASET.NUM_SHOTS 16 TRAINER.BASIC.MAX_API_CALLS 5000

Settings merge as train.py does (train.py's defaults, dataset yaml, trainer yaml, flags, KEY
VALUE list); the keys are TRAINER.BPTVLM.*, TRAINER.BAR.*, TRAINER.BLACKVIP.* (see
zipfast.image_config). BAR and BlackVIP classify with the dataset's hand-written template, as
officially. The run writes Dassl's log.txt and result.json like the ZIP trainer. Not yet for
these trainers: base/new class splits and --eval-only (refused by name).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..checkpoint import CHECKPOINT_NAME, resolve_checkpoint_path
from ..config import ConfigError
from ..image_config import TRAINER_NAMES, load_official_image, train_config_from_official
from ..io import save_json



def wanted(args) -> bool:
    return getattr(args, "trainer", "") in TRAINER_NAMES


def official_image_config(args):
    """(method, TrainConfig, method config, dataset spec) of an official image-trainer command line."""
    from ..datasets import get_spec
    from .official import _resets, paper_dataset_id

    if args.eval_only or args.model_dir:
        raise ConfigError(f"--eval-only/--model-dir are not supported for --trainer {args.trainer} yet")
    method, shared, mc, node = load_official_image(args.config_file or None, _resets(args) + list(args.opts or ()),
                                                   args.dataset_config_file or None, trainer=args.trainer,
                                                   return_node=True)
    if not node.DATASET.NAME:
        raise ConfigError("DATASET.NAME is empty: pass --dataset-config-file configs/datasets/<dataset>.yaml")
    if not node.DATASET.ROOT:
        raise ConfigError("DATASET.ROOT is empty: pass --root $DATA (the folder holding the datasets)")
    spec = get_spec(node.DATASET.NAME)
    if getattr(args, "blackvip_encoder", None):
        mc = dataclasses.replace(mc, encoder=args.blackvip_encoder)
    flags = {"dataset": paper_dataset_id(spec.key, "all", node.DATASET.ROOT), "model": args.model,
             "pretrained": args.pretrained, "budget": args.budget, "shots": args.shots,
             "batch_size": args.batch_size, "backend": args.backend, "precision": args.precision,
             "device": args.device, "test_per_class": args.test_per_class,
             "checkpoint_every": args.checkpoint_every, "sp_avg": 1}  # sp_avg: ZIP's, unused here
    return method, train_config_from_official(shared, **flags), mc, spec


def run(args, build_run, match_image_size) -> int:
    from ..image_trainer import ImagePromptTrainer
    from .dassl_log import DasslLog, result_block

    method, cfg, mc, spec = official_image_config(args)
    out = cfg.output_dir or None
    dlog = DasslLog(out)
    try:
        dlog(f"Setting fixed seed: {cfg.seed}")
        dlog(f"Trainer: {args.trainer} ({method}), method settings: {dataclasses.asdict(mc)}")
        model, tokenizer, classnames, data = build_run(cfg)
        if method != "bar":  # BAR's INPUT.SIZE is the image inside the frame, not the model's input
            cfg = match_image_size(cfg, model)
        dlog(f"Dataset: {spec.name} (classes: {len(classnames)}; train {len(data.train)}, test {len(data.test)})")
        # As Dassl (and the ZIP trainer): a folder with a checkpoint resumes, one without starts over.
        trainer = ImagePromptTrainer(method, model, classnames, cfg, data, mc, tokenizer=tokenizer,
                                     template=spec.template, output_dir=out, progress=not args.no_progress,
                                     overwrite=True)
        if args.no_train:
            dlog("--no-train: nothing trained")
            return 0
        src = args.resume or (str(Path(out) / CHECKPOINT_NAME) if out and (Path(out) / CHECKPOINT_NAME).is_file()
                              else "")
        if src:
            path = resolve_checkpoint_path(src)
            trainer.load_checkpoint(path)
            dlog(f"Resumed from {path} at {trainer.queries} queries")
        report = trainer.fit()
        dlog(f"Reach the maximum number of API calls: {report['queries']} queries in {report['steps']} steps "
             f"({report['queries_per_s']} queries/s)")
        dlog("Finish training")
        dlog("Deploy the last-epoch model" if method != "bptvlm" else "Deploy the best prompt (lowest training loss)")
        pred, true, _ = trainer.test_predictions()
        dlog("Evaluate on the *test* set")
        text, acc = result_block(pred, true)
        dlog(text)
        dlog.elapsed()
        if out:
            save_json({"trainer": method, "dataset": spec.name, "subsample": "all", "seed": cfg.seed,
                       "shots": cfg.shots, "accuracy": acc, "queries": report["queries"],
                       "n_classes": len(classnames), "fewshot_source": getattr(data, "fewshot_source", None)},
                      Path(out) / "result.json")
        return 0
    finally:
        dlog.close()
