"""The evaluator contract and the task a method is built on.

    losses, accs = evaluator.losses(space, cand, batch_index)   # cand [K, dim] → [K] (or [K, cost]), [K]
    pred, labels, loss = evaluator.predict(space, w)            # the test split, w [dim]
    pred, labels, loss = evaluator.predict(space, w, "val")     # the few-shot validation split

`cost` is the queries one candidate costs (1, or BPT-VLM's minibatches per epoch): the trainer
asks the optimiser for (queries left) // cost candidates. `batch_index` is the optimiser's: the
1-based minibatch of the round (every candidate on it), or, for an evaluator that gives each
candidate its own epoch (BPT-VLM), the 1-based index of the round's first candidate, which reads its
own `cost` minibatches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# Settings that determine every method's trajectory (a checkpoint resumes only a run that agrees on all);
# each evaluator adds its own (`Evaluator.trajectory_keys`).
SHARED_TRAJECTORY = ("model", "pretrained", "batch_size", "shots", "seed", "image_size", "interpolation",
                     "pixel_mean", "pixel_std", "transforms", "augment", "precision", "dataset", "test_per_class")


@dataclass
class Task:
    """A run's task once fitted to its model (zipfast.run.task): the config (TrainConfig, its image
    size the model's), the model on its device, tokenizer, class names, data (PlantedTask,
    FewShotImageFolder or FeatureSource), the engine backend of each tower ({"text": …}), the fixed text of the image-side methods (template), the
    initial context if given (ctx0 [m, D]), BlackVIP's encoder (None: built from the options),
    adjustments (changes to the config, for the report; evaluators append theirs), progress bars and
    shared: a dict the runs of one process share (BlackVIP's encoder, a run group's data sources: `shared_source`)."""

    config: Any
    model: Any
    tokenizer: Any
    classnames: list
    data: Any
    device: torch.device
    backends: dict = field(default_factory=dict)
    template: str | None = None
    ctx0: torch.Tensor | None = None
    encoder: Any = None
    adjustments: list = field(default_factory=list)
    progress: bool = True
    shared: dict | None = None


def shared(task: Task, key: tuple, build, on_data: bool = True):
    """`build()` once per key in `task.shared` where given (the runs of one process, a run group
    among them, share it), else a new one. The key names the objects it depends on by id: those
    objects are kept with it, so that no id is reused while it is cached. on_data False: it does
    not depend on the task's data (a text engine: the runs of other seeds on one model share it)."""
    if task.shared is None:
        return build()
    data = task.data if on_data else None
    key = (*key, id(data), id(task.model), id(task.tokenizer), str(task.device))
    if key not in task.shared:
        task.shared[key] = (build(), data, task.model, task.tokenizer)
    return task.shared[key][0]


def shared_source(task: Task, what: str, build):
    """`build()`'s data source, one per task data, model and the settings that shape what it reads (the
    run seed among them: the feature bank's views): the runs of a group read one source, so a minibatch
    they share is read once."""
    c = task.config
    return shared(task, ("source", what, c.image_size, tuple(c.pixel_mean), tuple(c.pixel_std), c.interpolation,
                         tuple(c.transforms), c.augment, c.feature_bank, c.seed, c.precision, c.test_batch_size,
                         c.num_workers), build)


class Evaluator:
    """Base class. Subclasses set cost, engine (the report's backend and test precision), engines
    (all, for the fallbacks), query_precision, template and trajectory_keys."""

    cost: int = 1
    engine: Any
    engines: tuple = ()
    query_precision: str = "fp32"
    template: str | None = None
    trajectory_keys: tuple = SHARED_TRAJECTORY

    def losses(self, space, cand: torch.Tensor, batch_index: int):
        raise NotImplementedError

    def predict(self, space, w: torch.Tensor, split: str = "test"):
        """(predicted classes [M], labels [M], mean loss or None) for the prompt of w [dim] on `split`
        ("test" or "val", see `check_split`)."""
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """Values beyond the config that a resumed run must share (a text width, a template…)."""
        return {}

    def prepare(self, space) -> None:
        """Called once before the first round of a fit()."""

    def snapshot(self, space):
        """What evaluating candidates changes outside the optimiser (restored after a non-finite loss)."""
        return None

    def restore(self, space, state) -> None:
        pass

    def fused(self, space, optimizer, config, hooks):
        """A fused whole-step implementation (zipfast.engine.step) where one applies, else None."""
        return None


SPLITS = ("test", "val")


def check_split(split: str) -> str:
    """split, if it is one a prediction can be made on ("test", "val"); ValueError otherwise."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: predict on 'test' or 'val'")
    return split


def adapt_config(config, model, encodes_images: bool):
    """(config, adjustments) for a run that encodes images: image_size becomes the model's fixed
    input size (a ViT's positional embedding admits no other), and INPUT.TRANSFORMS other than
    the official list run on the PIL augmentation path (the tensor path implements only that
    list). Each change is one log line and one entry of the report's "adjustments"."""
    import dataclasses
    import logging

    from zipfast.data.gpu_augment import pil_fallback
    from zipfast.models import model_image_size

    if not encodes_images:
        return config, []
    changes, notes = {}, []
    size = model_image_size(model)
    if size is not None and size != config.image_size:
        changes["image_size"] = size
        notes.append(f"image_size {config.image_size} -> {size} (the model's input size)")
    augment_note = pil_fallback(config.augment, config.transforms)
    if augment_note:
        changes["augment"] = "pil"
        notes.append(augment_note)
    for note in notes:
        logging.getLogger("zipfast.evaluate").info("%s", note)
    return (dataclasses.replace(config, **changes).validate() if changes else config), notes
