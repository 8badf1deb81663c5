"""`TextEvaluator`: candidates that change the text prompt (ZIP, ZIP + CMA-ES, ZO-SGD, SharpZO,
zero-shot CLIP).

The image features do not depend on the candidate: they come from a feature source (the planted
task's, or the model's image tower once per image/view, cached), so one query is one loss of one
text prompt on the round's minibatch, and all K candidates of a round run as one batched text
pass (zipfast.engine.batched). ZIP's SPSA on the counter-based stream also has a fused whole-step
implementation (zipfast.engine.step), a CUDA-graph replay on GPUs.
"""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from zipfast.data.imagefolder import FewShotImageFolder
from zipfast.data.planted import PlantedTask
from zipfast.data.sources import DecodedImageSource, FeatureSource, ImageSource, batch_indices
from zipfast.data.verify import verify_images
from zipfast.engine.batched import make_engine
from zipfast.engine.text import autocast_for
from zipfast.engine.towers import ClassPrompts, TextTower, init_context_from_text
from zipfast.errors import UserError
from zipfast.evaluate.base import SHARED_TRAJECTORY, Evaluator, Task, check_split, shared, shared_source
from zipfast.spaces.context import random_ctx0

log = logging.getLogger("zipfast.evaluate")

# The text side's own trajectory settings (context, ZIP's optimiser, the feature bank, the method).
TEXT_TRAJECTORY = (*SHARED_TRAJECTORY, "n_ctx", "ctx_init", "intrinsic_dim", "rank", "opt_type", "perturbation",
                   "sp_avg", "spsa_params", "moms", "feature_bank", "method", "method_options")


class TextEvaluator(Evaluator):
    """K contexts [K, m, D] → K losses on the round's minibatch of image features, in one text pass.

    Built by `create`: the feature source, the initial context ctx0 [m, D] (given, the method's
    init text, TRAINER.ZIP.CTX_INIT, or random), the class prompts around it and the text engine
    of the run's backend. zero-shot: the text features [C, E] of a template (no candidates)."""

    trajectory_keys = TEXT_TRAJECTORY

    def __init__(self, task: Task, tower: TextTower, source, ctx0: torch.Tensor, prompts: ClassPrompts, engine):
        self.config, self.device = task.config, task.device
        self.tokenizer, self.classnames = task.tokenizer, list(task.classnames)
        self.tower, self.source, self.ctx0, self.prompts = tower, source, ctx0, prompts
        self.engine, self.engines = engine, (engine,)
        self.query_precision = engine.precision
        self.zeroshot_text: torch.Tensor | None = None
        fused_setting()  # a bad value is named now, before any run starts

    @property
    def n_ctx(self) -> int:
        return self.ctx0.shape[0]

    @classmethod
    def create(cls, task: Task, backend: str, init_text: str, ctx0_seed: int) -> "TextEvaluator":
        """init_text: the words the context starts from ("" = none: N_CTX random tokens from ctx0_seed)."""
        tower = TextTower(task.model)
        source = shared_source(task, "features", lambda: feature_source(task))
        ctx0, prefix = initial_context(task, tower, init_text, ctx0_seed)
        # one text engine per model, classes, context length, prefix, backend and precision (whatever the
        # data: other seeds' runs too): the runs of a group share it, and so its one text pass
        # (zipfast.evaluate.group)
        tower, prompts, engine = shared(task, ("text engine", tuple(task.classnames), ctx0.shape[0], prefix, backend,
                                               task.config.precision), lambda: _engine(task, tower, ctx0, prefix, backend),
                                        on_data=False)
        return cls(task, tower, source, ctx0, prompts, engine)

    def use_template(self, template: str) -> None:
        """Zero-shot: classify with the text features of `template` ("{}" for the class name)."""
        from zipfast.evaluate.zeroshot import text_features

        self.template = template
        self.zeroshot_text = text_features(self.tower, self.tokenizer, self.classnames, template)

    # ------------------------------------------------------------------ the contract

    def losses(self, space, cand: torch.Tensor, batch_index: int):
        c = self.config
        idx = batch_indices(self.source.n_train, c.batch_size, batch_index, c.seed)
        feats, labels = self.source.train_batch(idx, batch_index, c.seed)
        return self.engine.losses(space.contexts(cand), feats, labels.to(self.device))

    def predict(self, space, w: torch.Tensor | None, split: str = "test"):
        """One text pass for the prompt of w (a zero-shot run: its template); cached features of the
        split ("test", or "val": the few-shot validation split)."""
        feats, labels = self.source.val_set() if check_split(split) == "val" else self.source.test_set()
        if self.zeroshot_text is not None:
            txt = self.zeroshot_text
        else:
            txt = self.engine.text_features(space.contexts(w.to(self.device).unsqueeze(0)))[0]
        preds = [self.engine.logits_from_text(feats[i:i + 4096], txt).argmax(-1).cpu()
                 for i in range(0, len(labels), 4096)]
        return torch.cat(preds), labels.cpu(), None

    def fingerprint(self) -> dict:
        return {"text_width": self.tower.width, "n_ctx_effective": self.n_ctx}

    def fused(self, space, optimizer, config, hooks):
        """The fused static-buffer step (zipfast.engine.step.FusedZIPStep) where it applies: ZIP's SPSA
        on the counter-based stream, the batched engine, no step hooks but those that say when they
        are due (`due(trainer)`, e.g. EvalEvery: the fused round reads its record then); on CUDA (a
        captured graph) by default, anywhere with ZIPFAST_FUSED_STEP=1 (eager), never with
        ZIPFAST_FUSED_STEP=0."""
        from zipfast.engine.batched import BatchedEngine
        from zipfast.engine.step import FusedZIPStep
        from zipfast.optim import SPSA

        want = fused_setting()
        if want == "0" or (want != "1" and self.device.type != "cuda") or not all(hasattr(h, "due") for h in hooks):
            return None
        if not (isinstance(optimizer, SPSA) and optimizer.perturbation == "philox"
                and isinstance(self.engine, BatchedEngine)):
            return None
        c = config  # the feature width is the model's: building a minibatch here would encode it twice
        return FusedZIPStep(space, self.engine, optimizer.point, seed=optimizer.seed, q=c.sp_avg,
                            batch_size=c.batch_size, feat_dim=self.tower.embed_dim, spsa_params=c.spsa_params,
                            opt_type=c.opt_type, moms=c.moms, step=optimizer.step, momentum=optimizer.momentum)

    def fused_batch(self, step: int):
        """(features [B, E] float32, labels [B]) of step `step`'s minibatch, on the device."""
        c = self.config
        feats, labels = self.source.train_batch(batch_indices(self.source.n_train, c.batch_size, step, c.seed),
                                                step, c.seed)
        return feats.to(self.device, torch.float32), labels.to(self.device)


def _engine(task: Task, tower: TextTower, ctx0: torch.Tensor, prefix: str | None, backend: str):
    """(tower, class prompts, text engine) of a run."""
    prompts = ClassPrompts.build(tower, task.tokenizer, task.classnames, ctx0.shape[0], prefix)
    return tower, prompts, make_engine(backend, tower, prompts, task.config.precision)


def fused_setting() -> str:
    """ZIPFAST_FUSED_STEP: "1" (the fused step anywhere), "0" (never) or "auto" (on CUDA; the default)."""
    import os

    want = os.environ.get("ZIPFAST_FUSED_STEP", "auto")
    if want not in ("auto", "0", "1"):
        raise UserError(f"ZIPFAST_FUSED_STEP={want!r}: use 1 (the fused step), 0 (the plain rounds) or auto "
                        "(fused on CUDA), or unset it")
    return want


def feature_source(task: Task):
    """The image features of a task: the planted task's, or an image folder's encoded by the model's
    image tower (test and validation splits once, training views per step or from the feature bank)."""
    c, data = task.config, task.data
    if isinstance(data, PlantedTask):
        data = FeatureSource(data.train_features, data.train_labels, data.test_features, data.test_labels,
                             data.val_features, data.val_labels)
    elif isinstance(data, FewShotImageFolder):
        if len(data.classnames) != len(task.classnames):
            raise UserError(f"{len(task.classnames)} class names for a dataset of {len(data.classnames)} classes")
        # Fail before training, not after: a corrupt test image would otherwise surface at the end.
        verify_images([p for p, _ in data.train + data.test + data.val], workers=c.num_workers or None,
                      progress=task.progress)
        bar = tqdm(total=len(data.train), desc="feature bank", unit="image",
                   disable=not (task.progress and c.feature_bank))
        args = (data, task.model, c.image_size, c.pixel_mean, c.pixel_std, c.interpolation, task.device,
                c.test_batch_size, lambda: autocast_for(task.device, c.precision))
        if c.augment == "tensor":  # decode once, batched crop/flip on the device (data.gpu_augment)
            dbar = tqdm(total=len(data.train), desc="decode", unit="image", disable=not task.progress)
            data = DecodedImageSource(*args, bank_views=c.feature_bank, seed=c.seed, progress=bar.update,
                                      decode_progress=dbar.update, transforms=c.transforms, workers=c.num_workers)
            dbar.close()
        else:
            data = ImageSource(*args, bank_views=c.feature_bank, seed=c.seed, progress=bar.update,
                               transforms=c.transforms, workers=c.num_workers)
        bar.close()
        data.show_progress = task.progress
    if not isinstance(data, (FeatureSource, ImageSource)):
        raise TypeError(f"data must be a PlantedTask, FewShotImageFolder or FeatureSource, got {type(data).__name__}")
    if data.n_train == 0:
        raise UserError("the training split is empty")
    return data


def initial_context(task: Task, tower: TextTower, words: str, seed: int) -> tuple[torch.Tensor, str | None]:
    """(ctx0 [m, D], prefix): the task's own context (the planted task's, or one passed in), else the
    token embeddings of `words` (prefix: those words, kept in the class prompts), else N_CTX random
    tokens N(0, 0.02²) from `seed`."""
    ctx0 = task.ctx0
    if ctx0 is None and isinstance(task.data, PlantedTask):
        ctx0 = task.data.ctx0
    blank = not words.replace("_", " ").strip()
    if ctx0 is not None and not blank:
        log.info("init text %r not used: the run starts from the given context (the planted task's own)", words)
    prefix = None
    if ctx0 is None and not blank:
        ctx0, prefix = init_context_from_text(tower, task.tokenizer, words), words.replace("_", " ")
    if ctx0 is None:
        ctx0 = random_ctx0(task.config.n_ctx, tower.width, torch.Generator().manual_seed(seed))
    if ctx0.shape[-1] != tower.width:
        raise ValueError(f"ctx0 has width {ctx0.shape[-1]}, the text tower {tower.width}")
    return ctx0, prefix
