"""What an image-method run takes from its task: method defaults, BlackVIP's encoder, the text template.

One rule for `zipfast train --method bptvlm|bar|blackvip` and `zipfast compare`
(image_trainer.prepare_image_run calls these):
- method options: the task's own defaults (synthetic-images shrinks what does not fit its tiny
  model: zipfast.data.synthetic.METHOD_DEFAULTS), then the user's;
- BlackVIP's encoder: on synthetic-images (no encoder set) the task's small random ViT-MAE,
  seeded by the run seed; else the configured one (hub name, directory, or "none");
- BAR/BlackVIP's fixed text: the dataset's hand-written template (zeroshot.template_for: a
  folder named like a known dataset gets that dataset's template, any other folder and
  synthetic-images get "a photo of a {}.").
"""

from __future__ import annotations

import logging

from .data import synthetic

log = logging.getLogger("zipfast.image")


def method_options(dataset: str, method: str, given: dict | None) -> tuple[dict, list[str]]:
    """(options, notes): the task's defaults for `method`, then the user's `given` (which win).

    notes: one line per task default applied (also logged), for the run report's adjustments."""
    base = synthetic.METHOD_DEFAULTS.get(method, {}) if dataset == synthetic.NAME else {}
    given = dict(given or {})
    notes = [f"{dataset}: {method} {k}={v} (the task's default for its tiny model; set it with --method-opt)"
             for k, v in base.items() if k not in given]
    for n in notes:
        log.info(n)
    return {**base, **given}, notes


def coordinator_encoder(cfg, mcfg, cache: dict | None = None):
    """BlackVIP's frozen encoder of a run (cfg: TrainConfig, mcfg: BlackVIPConfig), or None for the
    trainer's own (random weights of the backbone's architecture seeded by the run seed, encoder "none").

    On synthetic-images with no encoder set: the task's small ViT-MAE architecture, random weights
    seeded by the run seed. Pretrained weights (the hub name, or a directory) do not depend on the
    seed: with a `cache` dict they are loaded once and shared by every run.
    """
    from .prompters.blackvip import load_coordinator_encoder

    source = mcfg.encoder
    if cfg.dataset == synthetic.NAME and not source:
        from transformers import ViTMAEConfig

        return load_coordinator_encoder(mcfg.backbone, "none", seed=cfg.seed,
                                        config=ViTMAEConfig(**synthetic.COORDINATOR))
    if source.lower() in ("none", "random"):
        return None
    cache = {} if cache is None else cache
    key = ("blackvip-encoder", mcfg.backbone, source)
    if key not in cache:
        cache[key] = load_coordinator_encoder(mcfg.backbone, source or None)
    return cache[key]


def template(dataset: str) -> str:
    """BAR/BlackVIP's fixed text of a run on `dataset` ("{}" for the class name)."""
    from .zeroshot import template_for

    return template_for(dataset)
