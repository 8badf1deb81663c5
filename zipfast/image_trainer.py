"""`ImagePromptTrainer`: BPT-VLM, BAR and BlackVIP on the batched image engine.

Data flow of one step: optimiser.ask(allowance) → K candidates [K, dim] → parameter space /
prompter (frame, coordinator, visual tokens + text context) → image engine (K × B images in
one batched pass; for BPT-VLM also one batched text pass) → K losses → optimiser.tell.
The trainer owns the budget and the query count: one query = one loss evaluation of one
candidate on one minibatch, and the budget is never exceeded.

Minibatches: BAR and BlackVIP evaluate all candidates of a step on the step's minibatch
(as officially). BPT-VLM's fitness of a candidate is its mean loss over one epoch of
minibatches (each one query), every candidate drawing the next epoch of the loader, as the
official trainer does. Minibatch t (1, 2, …) and its augmentation are derived from
(seed, t), so resumes are bit-exact.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .errors import UserError
from . import __version__
from .batched import make_engine
from .config import TrainConfig
from .data.transforms import DEFAULT_CHOICES
from .data.pixels import build_pixel_source
from .data.sources import batch_indices, derive_seed
from .image_config import fit_bar_sizes, method_config
from .image_options import METHODS, config_to_dict
from .image_engine import image_logits, losses_and_accuracy, make_image_engine
from .image_optim import BARGradientFree, PyCMA, SPSAGC
from .image_prompt import CHECKPOINT_FORMAT
from .image_tower import ImageTower
from .methods import engine_backends
from .checkpoint import CheckpointMismatchError, read_checkpoint, write_checkpoint
from .env import resolve_device
from .zeroshot import DEFAULT_TEMPLATE  # BAR/BlackVIP's fixed text when no dataset template is known
from .run_loop import BudgetedRun, as_run_dir, raise_if_nonfinite, snapshot
from .prompters import BPTVLMSpace, CoordinatorPrompter, ReprogrammingFrame
from .text import ClassPrompts, TextTower

log = logging.getLogger("zipfast.image")

_SEED_SPACE, _SEED_PARAMS, _SEED_OPTIM = 20, 21, 22
_TRAJECTORY = ("model", "pretrained", "batch_size", "shots", "seed", "image_size", "interpolation",
               "pixel_mean", "pixel_std", "transforms", "augment", "precision", "dataset", "test_per_class")


class ImagePromptTrainer(BudgetedRun):
    """method: "bptvlm" | "bar" | "blackvip"; model: an open_clip CLIP; classnames; config:
    TrainConfig (shared settings); method_cfg: the method's config (defaults when None);
    data: a FewShotImageFolder. encoder: BlackVIP's coordinator encoder, built by
    `prompters.blackvip.load_coordinator_encoder` from the config when None.
    """

    def __init__(self, method: str, model, classnames, config: TrainConfig, data, method_cfg=None, tokenizer=None,
                 encoder=None, template: str = DEFAULT_TEMPLATE, output_dir=None, progress: bool = True,
                 overwrite: bool = False, adjustments=()):
        if method not in METHODS:
            raise UserError(f"unknown image method {method!r}; choose one of {', '.join(METHODS)}")
        config.validate()
        self.method, self.config, self.progress = method, config, progress
        self.template = template if method != "bptvlm" else None  # BPT-VLM learns its text context
        self.mcfg = method_cfg if method_cfg is not None else method_config(method)
        self.device = resolve_device(config.device)
        self.model = model.to(self.device).eval()
        self.classnames = list(classnames)
        if tokenizer is None:
            import open_clip

            tokenizer = open_clip.get_tokenizer(config.model)
        self.tower = ImageTower(self.model)
        precision = config.precision
        if method == "bar" and precision == "auto":
            # BAR's one-sided differences move W by β = 0.01 along a unit vector of 150,528 dims:
            # the loss changes by ~1e-5 relative, far below bf16/fp16 rounding. The official BAR runs fp32.
            precision = "fp32"
            log.info("BAR: precision auto -> fp32 (its loss differences are below bf16/fp16 resolution)")
        self.backends = engine_backends(method, config.backend)  # {tower: engine backend}, checked by validate
        self.engine = make_image_engine(self.backends["image"], self.tower, precision)
        if precision != config.precision:  # listed in the report's fallbacks
            self.engine.fallbacks.append({"what": "precision", "requested": config.precision, "used": precision,
                                          "why": "BAR's loss differences are below bf16/fp16 resolution"})
        official = query_precision(method, self.mcfg, self.device)
        if official:
            log.info("%s: training queries under %s autocast (the official trainer's), tests in %s", method,
                     official, self.engine.precision)
        self.query_precision = official or self.engine.precision
        self._check_sizes()
        c, seed = config, config.seed
        self.source, notes = build_pixel_source(data, c.image_size, c.pixel_mean, c.pixel_std,
                                                           c.interpolation, c.transforms, c.augment, self.device,
                                                           progress)
        self.adjustments = [*adjustments, *notes]  # the caller's changes to the config, then the data path's
        if len(data.classnames) != len(self.classnames):
            raise UserError(f"{len(self.classnames)} class names for a dataset of {len(data.classnames)} classes")
        self.steps_per_epoch = max(1, self.source.n_train // c.batch_size)
        g_space = torch.Generator().manual_seed(derive_seed(seed, _SEED_SPACE))
        g_params = torch.Generator().manual_seed(derive_seed(seed, _SEED_PARAMS))
        seed_opt = derive_seed(seed, _SEED_OPTIM)
        m = self.mcfg
        self.text_features = None
        if method == "bptvlm":
            self.tower.require_tokens()
            text = TextTower(self.model)
            self.prompts = ClassPrompts.build(text, tokenizer, self.classnames, m.tokens_l)
            self.text_engine = make_engine(self.backends["text"], text, self.prompts, precision)
            self.space = BPTVLMSpace.create(text.token_embedding.weight, self.model.visual.conv1.weight, m.tokens_l,
                                            m.tokens_v, m.intrinsic_dim_l, m.intrinsic_dim_v, m.sigma, g_space
                                            ).to(self.device)
            # pycma is seeded with SEED itself, as the official shallow_cma
            self.optimizer = PyCMA(self.space.dim, m.pop_size, m.sigma, seed, m.cma_budget, m.bound, m.best)
            self.cost = self.steps_per_epoch  # queries per candidate
        else:
            self.text_features = self._fixed_text(tokenizer, template)
            if method == "bar":
                self.space = ReprogrammingFrame(m.frame_size, c.image_size, c.pixel_mean, c.pixel_std)
                self.optimizer = BARGradientFree(self.space.init_params(g_params), m.q, m.smooth, m.sigma, m.lrs,
                                                 m.decaying, m.max_epoch * self.steps_per_epoch, seed_opt)
            else:
                if encoder is None:
                    from .prompters.blackvip import load_coordinator_encoder

                    encoder = load_coordinator_encoder(m.backbone, m.encoder or None, seed=seed)
                encoder = encoder.to(self.device)
                self.space = CoordinatorPrompter(encoder, encoder.z_dim, m.src_dim, m.p_eps, c.pixel_mean,
                                                 c.pixel_std, c.image_size)
                self.optimizer = SPSAGC(self.space.init_params(g_params), m.sp_avg, m.spsa_params, m.moms, seed_opt,
                                        m.opt_type)
            self.cost = 1
        self.queries, self.elapsed = 0, 0.0
        self.last_record: dict | None = None
        self.run_dir = as_run_dir(output_dir, overwrite)
        self.output_dir = self.run_dir.path if self.run_dir is not None else None
        self.step_hooks: list = []  # called as hook(trainer, record) after every step (e.g. test curves)

    # ------------------------------------------------------------------ setup

    def _check_sizes(self) -> None:
        size = self.tower.image_size
        c = self.config
        want = self.mcfg.frame_size if self.method == "bar" else c.image_size
        key = "TRAINER.BAR.FRAME_SIZE" if self.method == "bar" else "INPUT.SIZE (image_size)"
        if size is not None and want != size:
            raise UserError(f"{key} is {want} but the model's image tower takes {size} px; set it to {size}")

    def _fixed_text(self, tokenizer, template: str) -> torch.Tensor:
        """The hand-written prompt's text features [1, C, E] (normalised), computed once."""
        tokens = tokenizer([template.format(n.replace("_", " ")) for n in self.classnames]).to(self.device)
        with torch.no_grad():
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1).unsqueeze(0)

    # ------------------------------------------------------------------ one step

    def _batch(self, t: int):
        c = self.config
        idx = batch_indices(self.source.n_train, c.batch_size, t, c.seed)
        return self.source.train_batch(idx, t, c.seed)

    def evaluate_candidates(self, cand: torch.Tensor):
        """cand [K, dim] → (losses, accuracies [K]) on the minibatch(es) the optimiser names (its
        batch_index; the counter moves when it is told). Counts K × cost queries. losses: [K], or
        for BPT-VLM [K, cost], each candidate's loss on each of its minibatches (its fitness is
        their mean)."""
        K = cand.shape[0]
        if self.method != "bptvlm":
            x, y = self._batch(self.optimizer.batch_index)  # every candidate of the step on its minibatch
            feats = self.engine.features(self.space, cand, x, precision=self.query_precision)
            logits = image_logits(feats, self.text_features, self.tower.logit_scale.detach())
            return losses_and_accuracy(logits, y, self.mcfg.focal_g if self.method == "bar" else None)
        text = F.normalize(self.text_engine.text_features(self.space.text_ctx(cand)), dim=-1)  # one text pass
        losses, total_a = [], torch.zeros(K)
        first = self.batches  # minibatches consumed by the candidates evaluated so far
        for b in range(self.cost):  # candidate k reads minibatches first + k·cost + b + 1
            pairs = [self._batch(first + k * self.cost + b + 1) for k in range(K)]
            x, y = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
            feats = self.engine.features(self.space, cand, x, precision=self.query_precision)
            lo, ac = losses_and_accuracy(image_logits(feats, text, self.tower.logit_scale.detach()), y.to(self.device))
            losses.append(lo.cpu())
            total_a = total_a + ac.cpu()
        return torch.stack(losses, 1), total_a / self.cost

    @property
    def step(self) -> int:
        return self.optimizer.step

    @property
    def loop_label(self) -> str:
        return self.method

    def _prepare_rounds(self) -> None:
        if self.method == "blackvip":
            self.space.train()  # the official decoder queries in training mode (BatchNorm batch statistics)

    def _round(self, remaining: int) -> tuple[int, dict | None]:
        optimizer_before = snapshot(self.optimizer.state_dict())  # restored if the losses are not finite
        cand = self.optimizer.ask(remaining // self.cost)
        if cand.shape[0] == 0:
            return 0, None
        before = self._evaluation_state()
        losses, accs = self.evaluate_candidates(cand)
        self._tick()
        if not bool(torch.isfinite(losses).all()):
            self._restore_evaluation_state(before)  # the checkpoint below is the state before this step
            raise_if_nonfinite(losses, self.optimizer, optimizer_before, self.checkpoint_path, self.save_checkpoint,
                               f"after {self.queries} queries", f"{self.queries} queries")
        step = self.optimizer.step
        info = self.optimizer.tell(losses.cpu())
        spent = cand.shape[0] * self.cost
        self.queries += spent
        rec = {"step": self.optimizer.step, "queries": self.queries, **info}
        if self.optimizer.step == step:
            # BPT-VLM's last generation of a budget, evaluated in part and never told (as officially):
            # its record is step s + 1, marked partial, so no two records share a step number.
            rec.update(step=step + 1, partial=True)
        return spent, {**rec, "train_acc": float(accs.mean()), "time_s": round(self._tick(), 4)}

    @property
    def batches(self) -> int:
        """Minibatches consumed so far, named by the optimiser: its batch_index is the next step's
        minibatch (BAR, BlackVIP) or the next candidate (BPT-VLM, `cost` minibatches each)."""
        return (self.optimizer.batch_index - 1) * self.cost

    def _evaluation_state(self):
        """What evaluating candidates changes outside the optimiser: BlackVIP's BatchNorm running
        statistics (BAR's frame and BPT-VLM's projections are fixed; the minibatch counter is the
        optimiser's, restored with it)."""
        return [(m.clone(), v.clone()) for m, v in self.space.running] if self.method == "blackvip" else None

    def _restore_evaluation_state(self, running) -> None:
        if running is not None:
            self.space.running = running

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, w: torch.Tensor | None = None) -> float:
        """Test accuracy (%) of the optimiser's point (BPT-VLM: the best candidate seen), or of w."""
        return self.test_metrics(w)[0]

    def test_metrics(self, w: torch.Tensor | None = None) -> tuple[float, float]:
        """(accuracy in %, mean training-objective loss) on the test split, of the point or of w."""
        pred, true, loss = self.test_predictions(w)
        return 100.0 * float((pred == true).float().mean()) if len(true) else 0.0, loss

    def test_predictions(self, w: torch.Tensor | None = None):
        """(predictions [M], labels [M], mean loss) on the test split, of the point or of w."""
        w = (self.optimizer.point if w is None else w).unsqueeze(0)
        if self.method == "blackvip":
            self.space.eval()  # BatchNorm with the running statistics, as the official test
        text = self.text_features
        if self.method == "bptvlm":
            text = F.normalize(self.text_engine.text_features(self.space.text_ctx(w)), dim=-1)
        preds, trues, loss_sum = [], [], 0.0
        gamma = self.mcfg.focal_g if self.method == "bar" else None
        try:
            for x, y in self.source.test_batches(self.config.test_batch_size):
                feats = self.engine.features(self.space, w, x)
                logits = image_logits(feats, text, self.tower.logit_scale.detach())
                loss, _ = losses_and_accuracy(logits, y, gamma)
                preds.append(logits[0].argmax(-1).cpu())
                trues.append(y)
                loss_sum += float(loss[0]) * len(y)
        finally:
            if self.method == "blackvip":
                self.space.train()
        pred, true = torch.cat(preds), torch.cat(trues)
        return pred, true, loss_sum / max(1, len(true))

    # ------------------------------------------------------------------ report (run_loop.BudgetedRun.report)

    def method_config(self) -> dict:
        return config_to_dict(self.mcfg)

    @property
    def param_dim(self) -> int:
        return self.space.dim

    @property
    def engines(self) -> tuple:
        return (self.engine, getattr(self, "text_engine", None))

    # ------------------------------------------------------------------ checkpoints

    def fingerprint(self) -> dict:
        cfg = self.config.to_dict()
        return {"method": self.method, **{k: cfg[k] for k in _TRAJECTORY}, "method_config": config_to_dict(self.mcfg),
                "classnames": self.classnames, "template": self.template}

    def _implied(self) -> dict:
        """Trajectory settings added to the fingerprint after the first image checkpoints, with the
        values those checkpoints ran (so a resume names the flag to pass instead of failing)."""
        return {"augment": "pil", "transforms": list(DEFAULT_CHOICES),
                "template": None if self.method == "bptvlm" else DEFAULT_TEMPLATE}

    def state_dict(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "step": self.step,
                "template": self.template,
                "optimizer": self.optimizer.state_dict(),
                "space": self.space.state_dict(), "queries": self.queries, "batches": self.batches,
                "elapsed": self.elapsed, "last_record": self.last_record, "zipfast": __version__}

    def save_checkpoint(self, path) -> None:
        """Tensors in safetensors, the rest in JSON (zipfast.checkpoint); never pickle."""
        write_checkpoint(path, self.state_dict(), self.fingerprint())

    def load_checkpoint(self, path) -> None:
        ck = read_checkpoint(path)
        sd = ck.state
        if sd.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointMismatchError(f"{ck.path} is not a checkpoint of an image-side method "
                                          f"({CHECKPOINT_FORMAT}); it holds {sd.get('format')!r}")
        mine, theirs = self.fingerprint(), {**self._implied(), **ck.fingerprint}
        # method settings added after a checkpoint was written: their defaults are what it ran
        theirs["method_config"] = {**config_to_dict(type(self.mcfg)()), **theirs.get("method_config", {})}
        diff = [f"{k}={theirs.get(k)!r} (checkpoint) vs {mine[k]!r} (this run)" for k in mine if theirs.get(k) != mine[k]]
        if diff:
            raise CheckpointMismatchError(f"checkpoint {ck.path} is from another configuration: " + "; ".join(diff))
        self.optimizer.load_state_dict(sd["optimizer"])
        if self.method == "blackvip":
            self.space.load_state_dict(sd["space"])
        elif self.method == "bptvlm":
            self.space = BPTVLMSpace.from_state_dict(sd["space"], self.device)
        self.queries, self.elapsed = int(sd["queries"]), float(sd["elapsed"])
        if int(sd["batches"]) != self.batches:
            raise CheckpointMismatchError(f"{ck.path}: its minibatch counter ({sd['batches']}) disagrees with its "
                                          f"optimiser's ({self.batches}); the checkpoint is inconsistent")
        self.last_record = sd.get("last_record")
        self._mark_resumed(ck.path)

    def load_prompt(self, source) -> torch.Tensor:
        """The trained prompt of another run's checkpoint (a file, a run folder or a read
        `Checkpoint`), to evaluate here: `trainer.evaluate(trainer.load_prompt(path))`. Only the
        method and the settings that shape the prompt must agree (zipfast.image_prompt); the
        classes, dataset and seed may differ. Sets what turns the point into a prompt (BPT-VLM:
        its projections; BlackVIP: the decoder's BatchNorm running statistics) and returns the
        point [dim]. The optimiser and the query count are left as they are."""
        from .checkpoint import Checkpoint
        from .image_prompt import check_prompt_settings, prompt_point, require_method

        ck = require_method(source if isinstance(source, Checkpoint) else read_checkpoint(source), self.method)
        check_prompt_settings(ck, self.method, self.config.to_dict(), config_to_dict(self.mcfg))
        if self.method == "bptvlm":
            self.space = BPTVLMSpace.from_state_dict(ck.state["space"], self.device)
        elif self.method == "blackvip":
            self.space.load_state_dict(ck.state["space"])
        return prompt_point(ck)


def query_precision(method: str, mcfg, device: torch.device) -> str | None:
    """The precision of the training queries where it is not the run's, else None: BlackVIP with
    autocast "official" on CUDA runs them under fp16 autocast, as the official trainer wraps every
    query in `torch.cuda.amp.autocast()` whatever PREC says (off CUDA that autocast does nothing)."""
    if method == "blackvip" and mcfg.autocast == "official" and device.type == "cuda":
        return "fp16"
    return None


def evaluate_checkpoint(sd: dict, config: TrainConfig, build_run) -> float:
    """Test accuracy (%) of an image-method checkpoint's prompt (`sd`: its state dict with
    "fingerprint" and "path", as `trainer.read_checkpoint` returns it) on `config`'s data: the
    checkpoint's config with the caller's overrides (another dataset, test_per_class, weights
    path…). Only the method and the prompt-shaping settings must agree (`load_prompt`); no
    training image is decoded. BAR/BlackVIP classify with the template the run trained with."""
    import dataclasses

    method = sd["fingerprint"]["method"]
    mcfg = method_config(method, **sd["fingerprint"]["method_config"])
    model, tokenizer, classnames, data = build_run(config)
    data = dataclasses.replace(data, train=[])  # nothing trains
    trainer = ImagePromptTrainer(method, model, classnames, config, data, mcfg, tokenizer=tokenizer,
                                 template=sd.get("template") or DEFAULT_TEMPLATE, progress=False)
    return trainer.evaluate(trainer.load_prompt(sd["path"]))


def fit_to_model(cfg: TrainConfig, mcfg, model) -> tuple[TrainConfig, object, list[str]]:
    """(cfg, mcfg, adjustments) of an image-method run on `model`: the image size is the model's
    input size (trainer.adapt_config), and for BAR the frame is that size and the image inside it
    194/224 of it (image_config.fit_bar_sizes). Every change is logged and listed."""
    import dataclasses

    from .trainer import adapt_config

    if cfg.method == "bar":  # its INPUT.SIZE is the image inside the frame: set below from the frame, not adapted
        from .models import model_image_size

        cfg = dataclasses.replace(cfg, image_size=model_image_size(model) or cfg.image_size)
    cfg, notes = adapt_config(cfg, model, encodes_images=True)
    if cfg.method == "bar":  # the image sits inside the frame: 194 px in 224 (INPUT.SIZE of the official yaml)
        cfg, mcfg, bar_notes = fit_bar_sizes(cfg, mcfg, "frame_size" in cfg.method_options)
        notes += bar_notes
    return cfg, mcfg, notes


def prepare_image_run(cfg: TrainConfig, model, encoder_source: str | None = None, cache: dict | None = None):
    """(cfg, mcfg, adjustments, encoder, template) of an image-method run on `model`, the same for
    `zipfast train` and `zipfast compare`: the task's method defaults then cfg.method_options
    (zipfast.image_task), BlackVIP's encoder (`encoder_source` overrides the option), the model
    fitting (fit_to_model) and BAR/BlackVIP's template (the dataset's; None for BPT-VLM)."""
    import dataclasses

    from . import image_task
    from .methods import resolve_options

    options, notes = image_task.method_options(cfg.dataset, cfg.method, cfg.method_options)
    mcfg = resolve_options(cfg.method, options)  # parses KEY=VALUE strings, validates
    if encoder_source and cfg.method == "blackvip":
        mcfg = dataclasses.replace(mcfg, encoder=encoder_source)
    cfg, mcfg, fit_notes = fit_to_model(cfg, mcfg, model)
    encoder = image_task.coordinator_encoder(cfg, mcfg, cache) if cfg.method == "blackvip" else None
    template = None if cfg.method == "bptvlm" else image_task.template(cfg.dataset)
    return cfg, mcfg, [*notes, *fit_notes], encoder, template


def resume_template(path, method: str, template: str | None) -> tuple[str | None, list[str]]:
    """(template, notes) a resume from the checkpoint at `path` continues with: the checkpoint's
    (DEFAULT_TEMPLATE for image checkpoints written before the template was recorded), so the
    trajectory stays the one it started; a difference from this run's rule is logged and noted."""
    if method == "bptvlm":
        return template, []
    ck = read_checkpoint(path)
    theirs = ck.fingerprint.get("template", DEFAULT_TEMPLATE)
    if theirs is None or theirs == template:
        return template, []
    note = (f"template: the checkpoint {ck.path} trained {method} with {theirs!r}; a fresh run on "
            f"{ck.fingerprint.get('dataset')!r} would use {template!r}; the resume keeps {theirs!r}")
    log.warning(note)
    return theirs, [note]


def train_image_method(cfg: TrainConfig, args, build_run, run=None, resume=None) -> dict:
    """`zipfast train --method bptvlm|bar|blackvip --data FOLDER [--method-opt KEY=VALUE …]` → the report.

    build_run is the CLI's (passed in: this module sits below the CLI); run: the output RunDir
    the CLI already holds (or None); resume: a checkpoint path to continue. Every change made to
    the config (image size, augmentation path, BAR's frame) is logged and listed in the report's
    "adjustments".
    """
    from .config import ConfigError
    from .data.imagefolder import FewShotImageFolder
    from .methods import resolve_options

    resolve_options(cfg.method, cfg.method_options)  # bad settings fail before the model loads
    model, tokenizer, classnames, data = build_run(cfg)
    if not isinstance(data, FewShotImageFolder):
        raise ConfigError(f"--method {cfg.method} acts on the image tower and needs images: pass --data an image "
                          f"folder (got {cfg.dataset!r})")
    cfg, mcfg, notes, encoder, template = prepare_image_run(cfg, model, getattr(args, "blackvip_encoder", None))
    if resume is not None:
        template, resume_notes = resume_template(resume, cfg.method, template)
        notes += resume_notes
    trainer = ImagePromptTrainer(cfg.method, model, classnames, cfg, data, mcfg, tokenizer=tokenizer,
                                 encoder=encoder, template=template or DEFAULT_TEMPLATE, output_dir=run,
                                 progress=not args.no_progress, adjustments=notes)
    if resume is not None:
        trainer.load_checkpoint(resume)
        print(f"resumed from {resume} at step {trainer.step} ({trainer.queries} queries)")
    if getattr(args, "eval_every", None):
        from .paper.hooks import EvalEvery

        hook = EvalEvery(args.eval_every, run.path if run is not None else None)
        trainer.step_hooks.append(hook)
    return trainer.fit()
