"""Task setup, one place for `train`, `eval`, `compare` and `bench-paper`.

- `load(cfg)`: dataset name → (model, tokenizer, classnames, data): the planted tasks, the generated
  image task, a paper dataset by name (the official surface) or an image folder; the model from its
  open_clip name and weights (a random init seeded by the run seed for `pretrained none`, so that
  `eval` rebuilds the very model `train` used).
- `fit(cfg, model, data, ...)`: the task fitted to the model and the method: the task's defaults of
  the method's options, then the user's; the image size the model takes (and BAR's frame); the
  method's pretrained resources (BlackVIP's encoder); the fixed text of the image-side methods (the
  dataset's hand-written template). Every change is logged and listed in the report's adjustments.
"""

from __future__ import annotations

import dataclasses
import logging


from zipfast.data import synthetic
from zipfast.data.classnames import PLANTED_TASKS
from zipfast.data.imagefolder import FewShotImageFolder
from zipfast.env import resolve_device
from zipfast.errors import ConfigError, UserError
from zipfast.evaluate.base import Task, adapt_config
from zipfast.methods import engine_backends, get, resolve_options

log = logging.getLogger("zipfast.run")


def load(cfg, task_seed: int = 0, models: dict | None = None):
    """(model, tokenizer, classnames, data) for a TrainConfig's model and dataset. models: a dict in
    which loaded weights are kept and reused (`shares_model`: one model for every seed)."""
    from zipfast.data.planted import make_planted_task, planted_model
    from zipfast.engine.towers import TextTower
    from zipfast.models import load_clip

    if cfg.dataset in PLANTED_TASKS:
        if cfg.model == "zipfast-planted" and cfg.pretrained != "none":
            raise ConfigError(f"--pretrained {cfg.pretrained!r}: the planted task's model (zipfast-planted) is built "
                              "from its seed and loads no weights; drop --pretrained, or pass --model with it")
        if cfg.model == "zipfast-planted":
            model, tokenizer = planted_model(task_seed)
        else:
            model, tokenizer, _ = load_clip(cfg.model, cfg.pretrained, seed=cfg.seed)
        task = make_planted_task(TextTower(model), tokenizer, PLANTED_TASKS[cfg.dataset], n_ctx=cfg.context_tokens,
                                 shots=cfg.shots or 16, test_per_class=cfg.test_per_class or 100, seed=task_seed)
        return model, tokenizer, task.classnames, task
    if cfg.dataset.startswith("paper:"):  # a dataset of the paper by name (the official train.py surface)
        from zipfast.datasets.ids import build_paper_data

        paper, data = build_paper_data(cfg)
        data.fewshot_source = paper.fewshot_source
        return (*_seeded_model(cfg, models), data.classnames, data)
    if not cfg.dataset:
        raise UserError(f"no dataset (--data / TrainConfig.dataset): give an image folder's root, {synthetic.NAME} "
                        "or planted")
    if cfg.dataset == synthetic.NAME:  # the generated image folder; its random tiny CLIP is part of the task
        data = FewShotImageFolder.from_root(synthetic.folder(), cfg.shots, cfg.seed, cfg.test_per_class)
        if cfg.model == synthetic.MODEL and cfg.pretrained == "none":
            return (*synthetic.model(), data.classnames, data)
    else:
        data = FewShotImageFolder.from_root(cfg.dataset, cfg.shots, cfg.seed, cfg.test_per_class)
    return (*_seeded_model(cfg, models), data.classnames, data)


def task_key(cfg) -> tuple:
    """Runs whose configs share this key load the same (model, tokenizer, classnames, data): the frozen
    model and the task do not depend on the method or its settings, and on the planted task not on the
    seed either (a random model of an image task is seeded by the run seed, its few-shot split too).
    compare, sweep and bench-paper load a task once per key, and step runs together by group_key."""
    return (cfg.model, cfg.pretrained, cfg.dataset, cfg.shots, cfg.test_per_class, cfg.context_tokens,
            None if cfg.dataset in PLANTED_TASKS else cfg.seed)


def shares_model(cfg) -> bool:
    """Whether the runs of every seed use one model: loaded weights, or the planted task's tower (a
    random init of an image task is seeded by the run seed)."""
    return cfg.dataset in PLANTED_TASKS or cfg.pretrained != "none"


def group_key(cfg) -> tuple:
    """Runs whose configs share this key step together in run groups: one model (task_key without the
    seed where the model does not depend on it). Each seed keeps its own few-shot split, data source
    and minibatches; the group shares the model, the text engine and its one text pass."""
    key = task_key(cfg)
    return (*key[:-1], None) if shares_model(cfg) else key


def cached(cfg, cache: dict, load_fn=None):
    """(model, tokenizer, classnames, data) of cfg's task_key, loaded once per cache (load_fn, default
    `load`, which also keeps loaded weights there for the other seeds); the runs of a group build their
    trainers with that cache, so they share the data source."""
    key = ("task", task_key(cfg))
    if key not in cache:
        cache[key] = load(cfg, models=cache) if load_fn in (None, load) else load_fn(cfg)
    return cache[key]


def release(cache: dict, cfg) -> None:
    """The task of cfg's key and what was built on it leave the cache (memory: its runs are done): the
    sources on its data, and what was built on its model unless another cached task uses that model."""
    got = cache.pop(("task", task_key(cfg)), None)
    if got is None:
        return
    model, data = got[0], got[3]
    in_use = any(k[0] == "task" and v[0] is model for k, v in cache.items() if isinstance(k, tuple) and k)
    # what zipfast.evaluate.base.shared built: (object, data or None, model, tokenizer)
    for k in [k for k, v in cache.items() if isinstance(v, tuple) and len(v) == 4
              and (v[1] is data or (v[2] is model and not in_use))]:
        del cache[k]


def plan_groups(cfgs, group_size: int) -> list[list[int]]:
    """Indices of cfgs in run groups: by group_key (first appearance order), then in slices of at most
    group_size in the given order."""
    by_key: dict[tuple, list[int]] = {}
    for i, c in enumerate(cfgs):
        by_key.setdefault(group_key(c), []).append(i)
    return [ids[k:k + group_size] for ids in by_key.values() for k in range(0, len(ids), group_size)]


def _seeded_model(cfg, models: dict | None = None):
    """(model, tokenizer); a checkpoint holds no model weights: a random init (pretrained none) is
    seeded by the run seed, so that `eval` rebuilds the very model `train` used. Loaded weights are
    kept in `models` (when given) and reused for every seed."""
    from zipfast.models import load_clip

    key = ("model", cfg.model, cfg.pretrained)
    if models is not None and shares_model(cfg) and key in models:
        return models[key]
    model, tokenizer, _ = load_clip(cfg.model, cfg.pretrained, seed=cfg.seed)
    if models is not None and shares_model(cfg):
        models[key] = (model, tokenizer)
    return model, tokenizer


def task_options(dataset: str, method: str, given: dict | None) -> tuple[dict, list[str]]:
    """(options, notes): the task's defaults for `method` (a built-in task whose tiny model the paper's
    defaults do not fit), then the user's `given` (which win); a note per task default applied."""
    base = dict(get(method).task_defaults.get(dataset, {}))
    given = dict(given or {})
    notes = [f"{dataset}: {method} {k}={v} (the task's default for its tiny model; set it with --method-opt)"
             for k, v in base.items() if k not in given]
    for n in notes:
        log.info(n)
    return {**base, **given}, notes


def fit(config, model, data, classnames, tokenizer=None, *, options=None, encoder=None, encoder_source=None,
        template: str | None = None, ctx0=None, cache: dict | None = None, adjustments=(), progress: bool = True):
    """(Task, options) of a run of config.method on `model` and `data`.

    options: the method's options as given in full (the official surface: the yaml's, nothing fitted
    but the model's input size where the method has no rule of its own), else built from the task's
    defaults and config.method_options. encoder_source overrides BlackVIP's `encoder` option;
    template: the fixed text of the image-side methods (default: the dataset's)."""
    from zipfast.evaluate.zeroshot import template_for

    from zipfast.ops.registry import check_environment

    config.validate()
    check_environment()  # a backend forced by the environment is named before anything runs
    method = get(config.method)
    notes = list(adjustments)
    images = isinstance(data, FewShotImageFolder)
    if method.needs_images and not images:
        raise ConfigError(f"method {config.method} (--method / TrainConfig.method) acts on the image tower and needs "
                          f"images: pass an image folder (--data / TrainConfig.dataset; got {config.dataset!r})")
    if options is None:
        values, task_notes = task_options(config.dataset, config.method, config.method_options)
        notes += task_notes
        options = resolve_options(config.method, values)  # parses KEY=VALUE strings, validates
        given = set(config.method_options)
    else:
        given = {f.name for f in dataclasses.fields(options)} | {"image_size"}
    if encoder_source and "encoder" in {f.name for f in dataclasses.fields(options)}:
        options = dataclasses.replace(options, encoder=encoder_source)
    if method.fit is not None and images:
        config, options, fit_notes = method.fit(config, options, model, given)
    else:
        config, fit_notes = adapt_config(config, model, images)
    notes += fit_notes
    if encoder is None and method.resources is not None:
        encoder = method.resources(config, options, cache)
    if template is None and method.towers == ("image",):  # the text side fixed: the dataset's template
        template = template_for(config.dataset)
    if tokenizer is None:
        import open_clip

        from zipfast.models import official_model_name

        tokenizer = open_clip.get_tokenizer(official_model_name(config.model))
    device = resolve_device(config.device)
    task = Task(config, model.to(device), tokenizer, list(classnames), data, device,
                engine_backends(config.method, config.backend), template, ctx0, encoder, notes, progress, cache)
    return task, options
