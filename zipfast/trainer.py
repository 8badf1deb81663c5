"""`ZIPTrainer`: the drop-in replacement for the official ZIP trainer, and the one training
loop of every method in `zipfast.methods` (ZIP, SharpZO, ZO-SGD, zero-shot CLIP).

Data flow of one round k: the optimiser asks K candidates w_j (told how many queries
remain) → minibatch (seeded by (seed, optimiser.batch_index)) → image features →
parameter space gives contexts → engine gives K losses in one pass → optimiser is told
them and returns its statistics, logged as is. Every loss evaluation is one query; the
trainer owns the budget, which is never exceeded, identically for every method.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
from tqdm.auto import tqdm

from .checkpoint import CheckpointMismatchError, read_checkpoint as _read, write_checkpoint
from .data.gpu_augment import pil_fallback
from .data.imagefolder import FewShotImageFolder
from .data.planted import PlantedTask
from .data.sources import DecodedImageSource, FeatureSource, ImageSource, batch_indices, derive_seed
from .data.verify import verify_images
from .batched import make_engine
from .engine import autocast_for
from .env import resolve_device, versions  # noqa: F401  (versions: re-exported, old import path)
from .config import ConfigError, OFFICIAL_KEYS, TrainConfig, official_model_name
from . import zeroshot
from .methods import build as build_method
from .methods import init_text as method_init_text
from .methods import engine_backends, resolve_options, space_from_state_dict
from .models import model_image_size
from .run_loop import BudgetedRun, NonFiniteLossError, as_run_dir, raise_if_nonfinite, snapshot
from .space import random_ctx0
from .text import ClassPrompts, TextTower, init_context_from_text

log = logging.getLogger("zipfast.trainer")
# Settings that determine the trajectory: a checkpoint only resumes a run that agrees on all.
TRAJECTORY_KEYS = ("model", "pretrained", "n_ctx", "ctx_init", "intrinsic_dim", "rank", "opt_type", "perturbation", "sp_avg",
                   "spsa_params", "moms", "batch_size", "shots", "seed", "image_size", "interpolation",
                   "pixel_mean", "pixel_std", "transforms", "precision", "dataset", "test_per_class",
                   "feature_bank", "augment", "method", "method_options")
# Trajectory keys added after the first checkpoint format, with the value older checkpoints imply.
_IMPLIED = {"method": "zip", "method_options": {}, "perturbation": "official"}
_SEED_SPACE, _SEED_CTX0, _SEED_PARAMS, _SEED_OPTIM = 10, 11, 12, 13


__all__ = ["ZIPTrainer", "CheckpointMismatchError", "NonFiniteLossError", "read_checkpoint", "adapt_config"]


class ZIPTrainer(BudgetedRun):
    """Black-box prompt tuning of a frozen open_clip CLIP model with config.method (ZIP by default).

    model: an open_clip CLIP model; classnames: list of str; config: TrainConfig;
    data: a PlantedTask, a FewShotImageFolder (encoded by the model's image tower),
    or a FeatureSource of precomputed image features. ctx0 [m, D] overrides the initial
    context (the planted task passes its own). output_dir (a path or a `RunDir`) receives
    log.jsonl, checkpoint.safetensors and report.json; `fit()` locks it for the run and
    refuses one that holds another run's files unless the run was resumed
    (`load_checkpoint`) or overwrite=True. The image size is the model's own input size.
    """

    def __init__(self, model, classnames, config: TrainConfig, data, tokenizer=None, ctx0=None,
                 output_dir=None, progress: bool = True, overwrite: bool = False):
        config.validate()
        self.progress = progress
        # Settings changed to what the model and data path admit: each logged, and listed in the report.
        self.config, self.adjustments = adapt_config(config, model, isinstance(data, FewShotImageFolder))
        config = self.config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        if tokenizer is None:
            import open_clip

            tokenizer = open_clip.get_tokenizer(official_model_name(config.model))
        self.classnames = list(classnames)
        self.tower = TextTower(model)
        self.source = self._source(data)
        seed = config.seed
        if ctx0 is None and isinstance(data, PlantedTask):
            ctx0 = data.ctx0
        words = method_init_text(config)
        if ctx0 is not None and words.replace("_", " ").strip():
            log.info("init text %r not used: the run starts from the given context (the planted task's own)", words)
        if ctx0 is None and words.replace("_", " ").strip():  # blank: no init text (context_tokens)
            ctx0 = init_context_from_text(self.tower, tokenizer, words)
            prefix = words.replace("_", " ")
        else:
            prefix = None
        if ctx0 is None:
            ctx0 = random_ctx0(config.n_ctx, self.tower.width, torch.Generator().manual_seed(
                derive_seed(seed, _SEED_CTX0)))
        if ctx0.shape[-1] != self.tower.width:
            raise ValueError(f"ctx0 has width {ctx0.shape[-1]}, the text tower {self.tower.width}")
        self.n_ctx = ctx0.shape[0]
        if config.method not in ("sharpzo", "zsclip"):  # the methods on ZIP's Fastfood space
            _check_intrinsic_dim(config.intrinsic_dim, self.n_ctx, self.tower.width)
        self.prompts = ClassPrompts.build(self.tower, tokenizer, self.classnames, self.n_ctx, prefix)
        self.space, self.optimizer = build_method(config, ctx0.float().to(self.device),
                                                  lambda tag: derive_seed(seed, tag),
                                                  (_SEED_SPACE, _SEED_PARAMS, _SEED_OPTIM))
        self.engine = make_engine(engine_backends(config.method, config.backend)["text"], self.tower, self.prompts,
                                  config.precision)
        self.template, self.zeroshot_text = None, None
        if config.method == "zsclip":
            self.template = resolve_options("zsclip", config.method_options).template or \
                zeroshot.template_for(config.dataset)
            self.zeroshot_text = zeroshot.text_features(self.tower, tokenizer, self.classnames, self.template)
        self.queries = 0
        self.elapsed = 0.0
        self.last_record: dict | None = None
        # callables hook(trainer, record) run after every step (periodic evaluation: paper.hooks)
        self.step_hooks: list = []
        self.run_dir = as_run_dir(output_dir, overwrite)
        self.output_dir = self.run_dir.path if self.run_dir is not None else None

    # ------------------------------------------------------------------ data

    def _source(self, data):
        c = self.config
        if isinstance(data, PlantedTask):
            data = FeatureSource(data.train_features, data.train_labels, data.test_features, data.test_labels)
        elif isinstance(data, FewShotImageFolder):
            if len(data.classnames) != len(self.classnames):
                raise ValueError(f"{len(self.classnames)} class names for a dataset of {len(data.classnames)} classes")
            # Fail before training, not after: a corrupt test image would otherwise surface at the end.
            verify_images([p for p, _ in data.train + data.test], workers=c.num_workers or None,
                          progress=self.progress)
            bar = tqdm(total=len(data.train), desc="feature bank", unit="image",
                       disable=not (self.progress and c.feature_bank))
            args = (data, self.model, c.image_size, c.pixel_mean, c.pixel_std, c.interpolation, self.device,
                    c.test_batch_size, lambda: autocast_for(self.device, c.precision))
            if c.augment == "tensor":  # decode once, batched crop/flip on the device (data.gpu_augment)
                dbar = tqdm(total=len(data.train), desc="decode", unit="image", disable=not self.progress)
                data = DecodedImageSource(*args, bank_views=c.feature_bank, seed=c.seed, progress=bar.update,
                                          decode_progress=dbar.update, transforms=c.transforms,
                                          workers=c.num_workers)
                dbar.close()
            else:
                data = ImageSource(*args, bank_views=c.feature_bank, seed=c.seed, progress=bar.update,
                                   transforms=c.transforms, workers=c.num_workers)
            bar.close()
            data.show_progress = self.progress
        if not isinstance(data, (FeatureSource, ImageSource)):
            raise TypeError(f"data must be a PlantedTask, FewShotImageFolder or FeatureSource, got {type(data).__name__}")
        if data.n_train == 0:
            raise ValueError("the training split is empty")
        return data

    # ------------------------------------------------------------------ training

    @property
    def step(self) -> int:
        return self.optimizer.step if self.optimizer is not None else 0

    @property
    def w(self) -> torch.Tensor | None:
        """The optimiser's current point (None for zero-shot CLIP)."""
        return self.optimizer.point if self.optimizer is not None else None

    @w.setter
    def w(self, value: torch.Tensor) -> None:
        """Replace the current point (e.g. a prompt read back for evaluation); optimisers whose point is a
        plain vector (ZIP, ZO-SGD) only."""
        if not isinstance(getattr(self.optimizer, "w", None), torch.Tensor):
            raise AttributeError(f"the point of method {self.config.method!r} cannot be set directly; "
                                 "use load_checkpoint()")
        self.optimizer.w = value

    @property
    def loop_label(self) -> str:
        return self.config.method

    def _prepare_rounds(self) -> None:
        self._fused = self._fused_step() if self.optimizer is not None else None

    def _round(self, remaining: int) -> tuple[int, dict | None]:
        c = self.config
        if self.optimizer is None:  # zero-shot CLIP: nothing to train
            return 0, None
        if self._fused is not None and remaining >= 2 * c.sp_avg:  # the CUDA-graph step (zipfast.step)
            return 2 * c.sp_avg, self._fused_round(self._fused)
        before = snapshot(self.optimizer.state_dict())  # restored if this round's losses are not finite
        cand = self.optimizer.ask(remaining)
        if len(cand) == 0:
            return 0, None
        if len(cand) > remaining:
            self.optimizer.discard()
            raise RuntimeError(f"{self.optimizer.name} asked for {len(cand)} candidates with only "
                               f"{remaining} queries left in the budget")
        k, b = self.step + 1, self.optimizer.batch_index
        idx = batch_indices(self.source.n_train, c.batch_size, b, c.seed)
        feats, labels = self.source.train_batch(idx, b, c.seed)
        losses, accs = self.engine.losses(self.space.contexts(cand), feats, labels.to(self.device))
        self._tick()
        raise_if_nonfinite(losses, self.optimizer, before, self.checkpoint_path, self.save_checkpoint, f"at step {k}",
                           f"step {self.step}, {self.queries} queries",
                           "Lower the step size a (TRAINER.ZIP.SPSA_PARAMS[2]) or perturbation c, or use "
                           "precision fp32." if c.method == "zip" else
                           "Lower the method's step sizes (--method-opt) or use precision fp32.")
        stats = self.optimizer.tell(losses, accs)
        self.queries += len(cand)
        return len(cand), {"step": k, "queries": self.queries, **stats, "time_s": round(self._tick(), 4)}

    def _fused_step(self):
        """The fused static-buffer step (zipfast.step.FusedZIPStep) where it applies: ZIP's SPSA on
        the counter-based stream, the batched engine, no per-step hooks; on CUDA (a captured graph)
        by default, anywhere with ZIPFAST_FUSED_STEP=1 (eager), never with ZIPFAST_FUSED_STEP=0."""
        import os

        from .batched import BatchedEngine
        from .optim import SPSA
        from .step import FusedZIPStep

        want = os.environ.get("ZIPFAST_FUSED_STEP", "auto")
        opt, c = self.optimizer, self.config
        if want == "0" or (want != "1" and self.device.type != "cuda") or self.step_hooks:
            return None
        if not (isinstance(opt, SPSA) and opt.perturbation == "philox" and isinstance(self.engine, BatchedEngine)):
            return None
        # The feature width is the model's, not a minibatch's: building one here would encode it twice.
        feat_dim = self.tower.embed_dim
        return FusedZIPStep(self.space, self.engine, opt.point, seed=opt.seed, q=c.sp_avg, batch_size=c.batch_size,
                            feat_dim=feat_dim, spsa_params=c.spsa_params, opt_type=c.opt_type, moms=c.moms,
                            step=opt.step, momentum=opt.momentum)

    def _fused_round(self, fused) -> dict | None:
        """One fused step; the host reads its statistics (→ the record) only on log, checkpoint and
        final steps, None otherwise."""
        c, k = self.config, self.step + 1
        feats, labels = self.source.train_batch(batch_indices(self.source.n_train, c.batch_size, k, c.seed), k, c.seed)
        fused(feats.to(self.device, torch.float32), labels.to(self.device))
        opt = self.optimizer  # the optimiser stays the owner of the state (checkpoints, evaluate)
        opt.w, opt.step = fused.w.clone(), k
        if c.opt_type == "spsa-gc":
            opt.momentum = fused.momentum.clone()
        self.queries += 2 * c.sp_avg
        self._tick()
        last = self.queries + 2 * c.sp_avg > c.budget
        save = self.run_dir is not None and c.checkpoint_every and k % c.checkpoint_every == 0
        if not (k % c.log_every == 0 or last or save):
            return None
        rec = {"step": k, "queries": self.queries, **fused.record(), "time_s": round(self.elapsed, 4)}
        if not all(map(math.isfinite, (rec["loss"], rec["grad_norm"]))):
            raise NonFiniteLossError(f"non-finite loss or gradient by step {k} of the fused step ({rec}); "
                                     "rerun with ZIPFAST_FUSED_STEP=0 to stop at the first bad step")
        return rec

    def test_predictions(self, w: torch.Tensor | None = None):
        """(predicted classes [M], labels [M]) on the test split for the prompt of w (default: the
        current point; a zero-shot run uses its template). One text pass; cached image features."""
        feats, labels = self.source.test_set()
        if self.zeroshot_text is not None:
            txt = self.zeroshot_text
        else:
            w = self.w if w is None else w.to(self.device)
            txt = self.engine.text_features(self.space.contexts(w.unsqueeze(0)))[0]
        preds = [self.engine.logits_from_text(feats[i:i + 4096], txt).argmax(-1).cpu()
                 for i in range(0, len(labels), 4096)]
        return torch.cat(preds), labels.cpu()

    def evaluate(self, w: torch.Tensor | None = None) -> float:
        """Test accuracy (%) of the prompt of w (default: the current one)."""
        pred, labels = self.test_predictions(w)
        return 100.0 * int((pred == labels).sum()) / len(labels)

    # ------------------------------------------------------------------ report (run_loop.BudgetedRun.report)

    def method_config(self) -> dict:
        """The method's resolved options (ZIP's own settings are the config's flat fields)."""
        return dataclasses.asdict(resolve_options(self.config.method, self.config.method_options))

    @property
    def param_dim(self) -> int:
        return self.space.dim if self.space else 0

    @property
    def engines(self) -> tuple:
        return (self.engine,)

    @property
    def query_precision(self) -> str:
        return self.engine.precision

    # ------------------------------------------------------------------ checkpoints

    def fingerprint(self) -> dict:
        cfg = self.config.to_dict()
        fp = {k: cfg[k] for k in TRAJECTORY_KEYS}
        fp.update(classnames=self.classnames, text_width=self.tower.width, n_ctx_effective=self.n_ctx)
        return fp

    def state_dict(self) -> dict:
        """Tensors and JSON values only (the checkpoint contract, zipfast.checkpoint)."""
        return {"config": self.config.to_dict(), "w": None if self.w is None else self.w.cpu(),
                "space": self.space.state_dict() if self.space else None,
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "step": self.step, "queries": self.queries, "elapsed": self.elapsed,
                "last_record": self.last_record}

    def save_checkpoint(self, path) -> None:
        """Write checkpoint.safetensors atomically (see zipfast.checkpoint for the format)."""
        write_checkpoint(path, self.state_dict(), self.fingerprint())

    def load_checkpoint(self, path, state: dict | None = None) -> None:
        """Restore a run; the configuration must agree on every trajectory setting.

        state: the checkpoint already read by `read_checkpoint(path)` (avoids a second load).
        The next `fit()` continues the run in its output directory (its log is cut back to
        the checkpoint's step).
        """
        sd = read_checkpoint(path) if state is None else state
        mine, theirs = self.fingerprint(), sd["fingerprint"]
        theirs = {**_IMPLIED, **theirs}
        diff = [f"{k}={theirs.get(k)!r} (checkpoint) vs {mine[k]!r} (this run)" for k in mine if theirs.get(k) != mine[k]]
        if diff:
            raise CheckpointMismatchError(f"checkpoint {path} is from another configuration: " + "; ".join(diff))
        if self.optimizer is not None:
            self.space = space_from_state_dict(sd["space"], self.device)
            opt_state = sd["optimizer"]
            if "w" not in opt_state:  # checkpoints from before the optimiser owned its point
                opt_state = {**opt_state, "w": sd["w"]}
            self.optimizer.load_state_dict(opt_state, self.device)
        self.queries, self.elapsed = int(sd["queries"]), float(sd["elapsed"])
        self.last_record = sd.get("last_record")
        self._mark_resumed(sd.get("path", path))


def read_checkpoint(path) -> dict:
    """The state dict of a zipfast checkpoint file or run directory, with its "fingerprint"
    and "path"; CheckpointError (exit 2) names the file and what is wrong with it."""
    ck = _read(path)
    try:
        return {**ck.state, "fingerprint": dict(ck.fingerprint), "path": ck.path,
                "config": dict(ck.state["config"])}
    except (KeyError, TypeError) as e:
        raise CheckpointMismatchError(f"checkpoint {str(ck.path)!r} lacks the trainer's state ({e}); "
                                      "it was not written by ZIPTrainer") from None


def adapt_config(config: TrainConfig, model, encodes_images: bool) -> tuple[TrainConfig, list[str]]:
    """(config, adjustments) for a run that encodes images: image_size becomes the model's fixed
    input size (a ViT's positional embedding admits no other), and INPUT.TRANSFORMS other than
    the official list run on the PIL augmentation path (the tensor path implements only that
    list). Each change is one log line and one entry of the report's "adjustments"."""
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
        log.info("%s", note)
    return (dataclasses.replace(config, **changes).validate() if changes else config), notes


def _check_intrinsic_dim(intrinsic_dim: int, n_ctx: int, width: int) -> None:
    """Each token's d // m intrinsic coordinates must fit its Fastfood length L = 2^⌈log2 D⌉."""
    L = 1 << max(0, math.ceil(math.log2(width)))
    if intrinsic_dim // n_ctx > L:
        raise ConfigError(
            f"{OFFICIAL_KEYS['intrinsic_dim']} (intrinsic_dim) {intrinsic_dim} is too large for {n_ctx} context tokens "
            f"of width {width}: each token gets {intrinsic_dim} // {n_ctx} = {intrinsic_dim // n_ctx} coordinates, "
            f"its Fastfood projection takes at most {L}; use at most {L * n_ctx}")
