"""`ZIPTrainer`: the drop-in replacement for the official ZIP trainer.

Data flow of one step k: minibatch (seeded by (seed, k)) → image features → optimiser asks
K candidates w_j → parameter space gives contexts → engine gives K losses → optimiser is
told them and updates w. Every loss evaluation is one query; the budget is never exceeded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import __version__
from .data.imagefolder import FewShotImageFolder
from .data.planted import PlantedTask
from .data.sources import DecodedImageSource, FeatureSource, ImageSource, batch_indices, derive_seed
from .batched import make_engine
from .engine import autocast_for
from .env import resolve_device, versions
from .io import save_json, save_text, save_torch
from .config import TrainConfig, official_model_name
from .optim import SPSA
from .space import ZIPSpace, random_ctx0
from .text import ClassPrompts, TextTower, init_context_from_text

CHECKPOINT_FORMAT = "zipfast-checkpoint-v1"
# Settings that determine the trajectory: a checkpoint only resumes a run that agrees on all.
TRAJECTORY_KEYS = ("model", "pretrained", "n_ctx", "ctx_init", "intrinsic_dim", "rank", "opt_type", "sp_avg",
                   "spsa_params", "moms", "batch_size", "shots", "seed", "image_size", "interpolation",
                   "pixel_mean", "pixel_std", "transforms", "precision", "dataset", "test_per_class",
                   "feature_bank", "augment")
_SEED_SPACE, _SEED_CTX0, _SEED_PARAMS, _SEED_OPTIM = 10, 11, 12, 13


class NonFiniteLossError(RuntimeError):
    pass


class CheckpointMismatchError(ValueError):
    pass


class ZIPTrainer:
    """ZIP black-box prompt tuning of a frozen open_clip CLIP model.

    model: an open_clip CLIP model; classnames: list of str; config: TrainConfig;
    data: a PlantedTask, a FewShotImageFolder (encoded by the model's image tower),
    or a FeatureSource of precomputed image features. ctx0 [m, D] overrides the initial
    context (the planted task passes its own). output_dir receives log.jsonl,
    checkpoint.pt and report.json.
    """

    def __init__(self, model, classnames, config: TrainConfig, data, tokenizer=None, ctx0=None,
                 output_dir=None, progress: bool = True):
        config.validate()
        self.config, self.progress = config, progress
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
        if ctx0 is None and config.ctx_init:
            ctx0 = init_context_from_text(self.tower, tokenizer, config.ctx_init)
            prefix = config.ctx_init.replace("_", " ")
        else:
            prefix = None
        if ctx0 is None:
            ctx0 = random_ctx0(config.n_ctx, self.tower.width, torch.Generator().manual_seed(
                derive_seed(seed, _SEED_CTX0)))
        if ctx0.shape[-1] != self.tower.width:
            raise ValueError(f"ctx0 has width {ctx0.shape[-1]}, the text tower {self.tower.width}")
        self.n_ctx = ctx0.shape[0]
        self.prompts = ClassPrompts.build(self.tower, tokenizer, self.classnames, self.n_ctx, prefix)
        self.space = ZIPSpace.create(ctx0.float().to(self.device), config.intrinsic_dim, config.rank,
                                     torch.Generator().manual_seed(derive_seed(seed, _SEED_SPACE)))
        self.w = self.space.init_params(torch.Generator().manual_seed(derive_seed(seed, _SEED_PARAMS)))
        self.optimizer = SPSA(self.space.dim, config.opt_type, config.sp_avg, config.spsa_params, config.moms,
                              seed=derive_seed(seed, _SEED_OPTIM))
        self.engine = make_engine(config.backend, self.tower, self.prompts, config.precision)
        self.queries = 0
        self.elapsed = 0.0
        self.last_record: dict | None = None
        # callables hook(trainer, record) run after every step (periodic evaluation: paper.hooks)
        self.step_hooks: list = []
        self.output_dir = Path(output_dir) if output_dir else None

    # ------------------------------------------------------------------ data

    def _source(self, data):
        c = self.config
        if isinstance(data, PlantedTask):
            data = FeatureSource(data.train_features, data.train_labels, data.test_features, data.test_labels)
        elif isinstance(data, FewShotImageFolder):
            if len(data.classnames) != len(self.classnames):
                raise ValueError(f"{len(self.classnames)} class names for a dataset of {len(data.classnames)} classes")
            bar = tqdm(total=len(data.train), desc="feature bank", unit="image",
                       disable=not (self.progress and c.feature_bank))
            args = (data, self.model, c.image_size, c.pixel_mean, c.pixel_std, c.interpolation, self.device,
                    c.test_batch_size, lambda: autocast_for(self.device, c.precision))
            if c.augment == "tensor":  # decode once, batched crop/flip on the device (data.gpu_augment)
                dbar = tqdm(total=len(data.train), desc="decode", unit="image", disable=not self.progress)
                data = DecodedImageSource(*args, bank_views=c.feature_bank, seed=c.seed, progress=bar.update,
                                          decode_progress=dbar.update)
                dbar.close()
            else:
                data = ImageSource(*args, bank_views=c.feature_bank, seed=c.seed, progress=bar.update)
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
        return self.optimizer.step

    def _paths(self):
        d = self.output_dir
        return (d / "checkpoint.pt", d / "log.jsonl", d / "report.json") if d else (None, None, None)

    def fit(self) -> dict:
        """Run ZIP steps until the query budget is spent; returns the final report."""
        c = self.config
        ckpt, log_path, report_path = self._paths()
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a") if log_path is not None else None
        bar = tqdm(total=c.budget, initial=self.queries, unit="query", disable=not self.progress,
                   dynamic_ncols=True, desc="ZIP")
        start = time.perf_counter() - self.elapsed
        try:
            while (pairs := min(c.sp_avg, (c.budget - self.queries) // 2)) >= 1:
                k = self.step + 1
                idx = batch_indices(self.source.n_train, c.batch_size, k, c.seed)
                feats, labels = self.source.train_batch(idx, k, c.seed)
                cand = self.optimizer.ask(self.w, pairs)
                losses, accs = self.engine.losses(self.space.contexts(cand), feats, labels.to(self.device))
                if not bool(torch.isfinite(losses).all()):
                    self.optimizer.discard()
                    self.elapsed = time.perf_counter() - start
                    where = ""
                    if ckpt is not None:
                        self.save_checkpoint(ckpt)
                        where = f"; the last good state (step {self.step}, {self.queries} queries) is in {ckpt}"
                    raise NonFiniteLossError(
                        f"non-finite loss at step {k} (losses {losses.tolist()}){where}. Lower the step size "
                        f"a (TRAINER.ZIP.SPSA_PARAMS[2]) or perturbation c, or use precision fp32.")
                self.w, info = self.optimizer.tell(self.w, losses)
                self.queries += len(cand)
                self.elapsed = time.perf_counter() - start
                q = len(cand) // 2
                rec = {"step": k, "queries": self.queries, "loss": float(info["loss"]),
                       "train_acc": float((accs[q - 1] + accs[2 * q - 1]) / 2), "a_k": info["a_k"],
                       "c_k": info["c_k"], "grad_norm": float(info["grad_norm"]), "clipped": bool(info["clipped"]),
                       "time_s": round(self.elapsed, 4)}
                self.last_record = rec
                for hook in self.step_hooks:
                    hook(self, rec)
                if log is not None and (k % c.log_every == 0 or self.queries + 2 > c.budget):
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                bar.update(len(cand))
                bar.set_postfix(loss=f"{rec['loss']:.4f}", acc=f"{rec['train_acc']:.1f}", refresh=False)
                if ckpt is not None and c.checkpoint_every and k % c.checkpoint_every == 0:
                    self.save_checkpoint(ckpt)
        finally:
            bar.close()
            if log is not None:
                log.close()
        if ckpt is not None:
            self.save_checkpoint(ckpt)
        report = self.report(test_acc=self.evaluate())
        if report_path is not None:
            save_json(report, report_path)
        return report

    def evaluate(self, w: torch.Tensor | None = None) -> float:
        """Test accuracy (%) of the prompt of w (default: the current one)."""
        w = self.w if w is None else w.to(self.device)
        feats, labels = self.source.test_set()
        ctx = self.space.contexts(w.unsqueeze(0))
        txt = self.engine.text_features(ctx)[0]
        correct = 0
        for i in range(0, len(labels), 4096):
            logits = self.engine.logits_from_text(feats[i:i + 4096], txt)
            correct += int((logits.argmax(-1) == labels[i:i + 4096].to(logits.device)).sum())
        return 100.0 * correct / len(labels)

    def report(self, test_acc: float | None = None) -> dict:
        c = self.config
        rec = self.last_record or {}
        return {
            "config": c.to_dict(), "seed": c.seed, "queries": self.queries, "steps": self.step,
            "budget": c.budget, "wall_time_s": round(self.elapsed, 3),
            "queries_per_s": round(self.queries / self.elapsed, 2) if self.elapsed > 0 else None,
            "train_loss": rec.get("loss"), "train_acc": rec.get("train_acc"), "test_acc": test_acc,
            "n_classes": len(self.classnames), "param_dim": self.space.dim, "backend": self.engine.name,
            "precision": self.engine.precision,
            "fallbacks": list(getattr(self.engine, "fallbacks", [])),  # every substitution, also logged
            "device": str(self.device), "versions": versions(),
        }

    # ------------------------------------------------------------------ checkpoints

    def fingerprint(self) -> dict:
        cfg = self.config.to_dict()
        fp = {k: cfg[k] for k in TRAJECTORY_KEYS}
        fp.update(classnames=self.classnames, text_width=self.tower.width, n_ctx_effective=self.n_ctx)
        return fp

    def state_dict(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "fingerprint": self.fingerprint(),
                "w": self.w.cpu(), "space": self.space.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step, "queries": self.queries, "elapsed": self.elapsed,
                "last_record": self.last_record, "zipfast": __version__}

    def save_checkpoint(self, path) -> None:
        save_torch(self.state_dict(), path)

    def load_checkpoint(self, path, state: dict | None = None) -> None:
        """Restore a run; the configuration must agree on every trajectory setting.

        state: the checkpoint already read by `read_checkpoint(path)` (avoids a second load).
        """
        sd = read_checkpoint(path) if state is None else state
        mine, theirs = self.fingerprint(), sd["fingerprint"]
        diff = [f"{k}={theirs.get(k)!r} (checkpoint) vs {mine[k]!r} (this run)" for k in mine if theirs.get(k) != mine[k]]
        if diff:
            raise CheckpointMismatchError(f"checkpoint {path} is from another configuration: " + "; ".join(diff))
        self.space = ZIPSpace.from_state_dict(sd["space"], self.device)
        self.w = sd["w"].to(self.device)
        self.optimizer.load_state_dict(sd["optimizer"], self.device)
        self.queries, self.elapsed = int(sd["queries"]), float(sd["elapsed"])
        self.last_record = sd.get("last_record")
        _, log_path, _ = self._paths()
        if log_path is not None and log_path.exists():
            _truncate_log(log_path, self.step)


def read_checkpoint(path) -> dict:
    """The state dict of a zipfast checkpoint file (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    sd = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(sd, dict) or sd.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path} is not a zipfast checkpoint ({CHECKPOINT_FORMAT})")
    return sd


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past the checkpoint's step (a crash may have left some)."""
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    save_text("".join(ln + "\n" for ln in keep), path)
