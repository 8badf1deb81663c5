"""`ImageEvaluator`: candidates that change what the image tower sees (BAR's frame, BlackVIP's
coordinator, BPT-VLM's visual tokens), and for BPT-VLM the text prompt too.

Image features depend on the candidate, so the K × B prompted images of a round go through the
image tower in one batched pass (zipfast.engine.image), the candidate-independent work (BlackVIP's
encoder, the patch embedding) once per minibatch. The text side is either fixed (the hand-written
template's features, computed once) or, for a space with `text_ctx` (BPT-VLM), one batched text
pass for all K. With `cost` > 1 (BPT-VLM) a candidate's fitness is its mean loss over its own
epoch of `cost` minibatches, each one query, as the official trainer; otherwise every candidate
of the round reads the round's minibatch.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from zipfast.data.pixels import build_pixel_source
from zipfast.data.sources import batch_indices
from zipfast.data.verify import verify_images
from zipfast.engine.batched import make_engine
from zipfast.engine.image import image_logits, losses_and_accuracy, make_image_engine
from zipfast.engine.towers import ImageTower
from zipfast.engine.towers import ClassPrompts, TextTower
from zipfast.errors import UserError
from zipfast.evaluate.base import Evaluator, Task, check_split, shared_source

log = logging.getLogger("zipfast.evaluate")


class ImageEvaluator(Evaluator):
    """Built by `create`. text_tokens > 0: the space also gives a text context of that many tokens
    (`space.text_ctx(w)`), encoded by the text engine of `backends["text"]`; else the task's template
    is the fixed text. focal_gamma: BAR's focal loss (None: cross-entropy). query_precision: the
    training queries' autocast where it is not the run's (BlackVIP's official fp16 on CUDA)."""

    def __init__(self, task: Task, tower: ImageTower, engine, source, *, focal_gamma=None, query_precision=None,
                 text_engine=None, epochs: bool = False):
        self.config, self.device, self.classnames = task.config, task.device, list(task.classnames)
        self.model, self.tower, self.engine, self.source = task.model, tower, engine, source
        self.text_engine, self.focal_gamma = text_engine, focal_gamma
        self.engines = (engine, text_engine) if text_engine is not None else (engine,)
        self.query_precision = query_precision or engine.precision
        self.steps_per_epoch = max(1, source.n_train // task.config.batch_size)
        self.epochs = epochs  # each candidate on its own epoch of minibatches (even an epoch of one)
        self.cost = self.steps_per_epoch if epochs else 1
        self.template = None if text_engine is not None else task.template
        self.text_features = None if text_engine is not None else self._fixed_text(task.tokenizer, task.template)

    @classmethod
    def create(cls, task: Task, backends: dict, precision: str, *, expected_size: tuple[int, str], focal_gamma=None,
               query_precision: str | None = None, text_tokens: int = 0, epochs: bool = False) -> "ImageEvaluator":
        """precision: the run's (a method may have substituted it: its reason is the caller's to report);
        expected_size: (the image size the prompt is built for, its setting's name), checked against
        the model's input size."""
        c = task.config
        task.model.eval()
        tower = ImageTower(task.model)
        engine = make_image_engine(backends["image"], tower, precision)
        if query_precision:
            log.info("%s: training queries under %s autocast (the official trainer's), tests in %s", c.method,
                     query_precision, engine.precision)
        size, key = expected_size
        if tower.image_size is not None and size != tower.image_size:
            raise UserError(f"{key} is {size} but the model's image tower takes {tower.image_size} px; "
                            f"set it to {tower.image_size}")
        # every image opened and verified before the first query: a bad test image must not cost the budget
        verify_images([p for p, _ in task.data.train + task.data.test + task.data.val], workers=c.num_workers or None,
                      progress=task.progress)
        source, notes = shared_source(task, "pixels", lambda: build_pixel_source(
            task.data, c.image_size, c.pixel_mean, c.pixel_std, c.interpolation, c.transforms, c.augment, task.device,
            task.progress))
        task.adjustments.extend(notes)
        if len(task.data.classnames) != len(task.classnames):
            raise UserError(f"{len(task.classnames)} class names for a dataset of {len(task.data.classnames)} classes")
        text_engine = None
        if text_tokens:
            tower.require_tokens()
            text = TextTower(task.model)
            prompts = ClassPrompts.build(text, task.tokenizer, task.classnames, text_tokens)
            text_engine = make_engine(backends["text"], text, prompts, precision)
        return cls(task, tower, engine, source, focal_gamma=focal_gamma, query_precision=query_precision,
                   text_engine=text_engine, epochs=epochs)

    def _fixed_text(self, tokenizer, template: str) -> torch.Tensor:
        """The hand-written prompt's text features [1, C, E] (normalised), computed once."""
        tokens = tokenizer([template.format(n.replace("_", " ")) for n in self.classnames]).to(self.device)
        with torch.no_grad():
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1).unsqueeze(0)

    def _batch(self, t: int):
        c = self.config
        return self.source.train_batch(batch_indices(self.source.n_train, c.batch_size, t, c.seed), t, c.seed)

    def _text(self, space, w: torch.Tensor) -> torch.Tensor:
        if self.text_engine is None:
            return self.text_features
        return F.normalize(self.text_engine.text_features(space.text_ctx(w)), dim=-1)

    # ------------------------------------------------------------------ the contract

    def losses(self, space, cand: torch.Tensor, batch_index: int):
        """→ (losses, accuracies [K]); losses [K], or per candidate epoch [K, cost]: each candidate's loss on
        each of its minibatches (candidate k of the round reads minibatches (batch_index − 1 + k)·cost + b + 1)."""
        text, scale = self._text(space, cand), self.tower.logit_scale.detach()
        if not self.epochs:
            x, y = self._batch(batch_index)
            feats = self.engine.features(space, cand, x, precision=self.query_precision)
            return losses_and_accuracy(image_logits(feats, text, scale), y, self.focal_gamma)
        K, first = cand.shape[0], (batch_index - 1) * self.cost
        losses, total_a = [], torch.zeros(K)
        for b in range(self.cost):
            pairs = [self._batch(first + k * self.cost + b + 1) for k in range(K)]
            x, y = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
            feats = self.engine.features(space, cand, x, precision=self.query_precision)
            lo, ac = losses_and_accuracy(image_logits(feats, text, scale), y.to(self.device), self.focal_gamma)
            losses.append(lo.cpu())
            total_a = total_a + ac.cpu()
        return torch.stack(losses, 1), total_a / self.cost

    def predict(self, space, w: torch.Tensor, split: str = "test"):
        """Test (or, split "val", validation) batches through the prompted image tower; a space with
        BatchNorm (BlackVIP's decoder) runs on its running statistics, as the official test()."""
        n = self.config.test_batch_size
        batches = self.source.val_batches(n) if check_split(split) == "val" else self.source.test_batches(n)
        w = w.unsqueeze(0)
        modes = hasattr(space, "eval")
        if modes:
            space.eval()
        text, scale = self._text(space, w), self.tower.logit_scale.detach()
        preds, trues, loss_sum = [], [], 0.0
        try:
            for x, y in batches:
                logits = image_logits(self.engine.features(space, w, x), text, scale)
                loss, _ = losses_and_accuracy(logits, y, self.focal_gamma)
                preds.append(logits[0].argmax(-1).cpu())
                trues.append(y)
                loss_sum += float(loss[0]) * len(y)
        finally:
            if modes:
                space.train()
        if not preds:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 0.0
        true = torch.cat(trues)
        return torch.cat(preds), true, loss_sum / max(1, len(true))

    def fingerprint(self) -> dict:
        return {"template": self.template}

    def prepare(self, space) -> None:
        if hasattr(space, "train"):
            space.train()  # the official decoder queries in training mode (BatchNorm batch statistics)

    def snapshot(self, space):
        """BlackVIP's BatchNorm running statistics (the other spaces are fixed; the minibatch counter is
        the optimiser's, restored with it)."""
        running = getattr(space, "running", None)
        return None if running is None else [(m.clone(), v.clone()) for m, v in running]

    def restore(self, space, state) -> None:
        if state is not None:
            space.running = state
