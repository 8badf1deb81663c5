"""`Trainer`: the one trainer of every method (the drop-in replacement of the official trainers).

Data flow of one round: the optimiser is asked for as many candidates as the budget can pay for
(queries left ÷ the evaluator's cost per candidate) → K candidates [K, dim] → the evaluator turns
them, through the prompt space, and the minibatch the optimiser names into K losses → the
optimiser is told them and returns its statistics, logged as is. The run (zipfast.run.loop) owns
the budget, which is never exceeded, the log, checkpoints, hooks, signals and the report,
identically for every method. What differs between methods is their file in zipfast.methods.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch

from zipfast import __version__
from zipfast.methods import get, options_dict
from zipfast.methods.base import Seeds
from zipfast.run.checkpoint import CheckpointMismatchError, write_checkpoint
from zipfast.run.identity import data_identity, differences, weights_fingerprint
from zipfast.run.loop import BudgetedRun, NonFiniteLossError, as_run_dir, raise_if_nonfinite, snapshot
from zipfast.run.state import STATE_FORMAT, read_run
from zipfast.run.task import fit


class Trainer(BudgetedRun):
    """Black-box prompt tuning of a frozen open_clip CLIP model with config.method (ZIP by default).

    model: an open_clip CLIP model; classnames: list of str; config: TrainConfig; data: a
    PlantedTask, a FewShotImageFolder (the image-side methods need one), or a FeatureSource of
    precomputed image features. options: the method's options in full (default: the task's
    defaults and config.method_options); ctx0 [m, D]: the initial context of a text-side method
    (the planted task passes its own); encoder: BlackVIP's (default: from its options); template:
    the fixed text of BAR/BlackVIP (default: the dataset's). output_dir (a path or a `RunDir`)
    receives log.jsonl, checkpoint.safetensors and report.json; `fit()` locks it for the run and
    refuses one that holds another run's files unless the run was resumed (`load_checkpoint`) or
    overwrite=True. adjustments: changes the caller made to the config, for the report.
    """

    def __init__(self, model, classnames, config, data, tokenizer=None, *, options=None, ctx0=None, encoder=None,
                 template: str | None = None, output_dir=None, progress: bool = True, overwrite: bool = False,
                 adjustments=(), encoder_source: str | None = None, cache: dict | None = None):
        self.progress = progress
        self.weights = weights_fingerprint(model)  # before fit() moves or casts it: what the caller gave
        task, self.options = fit(config, model, data, classnames, tokenizer, options=options, encoder=encoder,
                                 encoder_source=encoder_source, template=template, ctx0=ctx0, cache=cache,
                                 adjustments=adjustments, progress=progress)
        self.method = get(task.config.method)
        self.config, self.device, self.model = task.config, task.device, task.model
        self.classnames, self.adjustments = task.classnames, task.adjustments
        self.space, self.optimizer, self.evaluator = self.method.build(task, self.options, Seeds(task.config.seed))
        self.template = self.evaluator.template
        self.data_identity = data_identity(task.config.dataset, data, task.classnames)
        self.queries, self.elapsed = 0, 0.0
        self.last_record: dict | None = None
        self.step_hooks: list = []  # callables hook(trainer, record) after every round (zipfast.run.hooks)
        self.run_dir = as_run_dir(output_dir, overwrite)
        self.output_dir = self.run_dir.path if self.run_dir is not None else None

    # ------------------------------------------------------------------ what the evaluator holds

    @property
    def engine(self):
        """The query engine of the report's backend and test precision."""
        return self.evaluator.engine

    @property
    def engines(self) -> tuple:
        return self.evaluator.engines

    @property
    def query_precision(self) -> str:
        return self.evaluator.query_precision

    @property
    def source(self):
        return self.evaluator.source

    @property
    def cost(self) -> int:
        """Queries one candidate costs."""
        return self.evaluator.cost

    @property
    def param_dim(self) -> int:
        return self.space.dim if self.space is not None else 0

    @property
    def loop_label(self) -> str:
        return self.config.method

    def method_config(self) -> dict:
        """The method's resolved options (ZIP's own settings are the config's flat fields)."""
        return options_dict(self.options)

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
        """Replace the current point (a prompt read back for evaluation); optimisers whose point is a
        plain vector (ZIP, ZO-SGD) only."""
        if not isinstance(getattr(self.optimizer, "w", None), torch.Tensor):
            raise AttributeError(f"the point of method {self.config.method!r} cannot be set directly; "
                                 "use load_checkpoint()")
        self.optimizer.w = value

    @property
    def batches(self) -> int:
        """Minibatches consumed so far by a per-candidate-epoch evaluator (BPT-VLM), or the rounds'."""
        return (self.optimizer.batch_index - 1) * self.cost

    def _prepare_rounds(self) -> None:
        self._fused = None
        if self.optimizer is not None:
            self.evaluator.prepare(self.space)
            self._fused = self.evaluator.fused(self.space, self.optimizer, self.config, self.step_hooks)

    def _round(self, remaining: int) -> tuple[int, dict | None]:
        if self.optimizer is None:  # zero-shot CLIP: nothing to train
            return 0, None
        if self._fused_fits(remaining):  # the CUDA-graph step
            self._fused(*self.evaluator.fused_batch(self.step + 1))
            return self._fused_stepped()
        pending = self._ask(remaining)
        if pending is None:
            return 0, None
        losses, accs = self.evaluator.losses(self.space, pending.cand, pending.batch_index)
        return self._tell(pending, losses, accs)

    def _ask(self, remaining: int) -> "Pending | None":
        """The optimiser's candidates of this round, as many as `remaining` queries pay for (None: none
        fit): the first half of a round, whose losses a run group (zipfast.run.group) computes with
        other runs'."""
        cost = self.cost
        before = snapshot(self.optimizer.state_dict())  # restored if this round's losses are not finite
        cand = self.optimizer.ask(remaining // cost)
        if len(cand) == 0:
            return None
        spent = len(cand) * cost
        if spent > remaining:
            self.optimizer.discard()
            raise RuntimeError(f"{self.optimizer.name} asked for {len(cand)} candidates"
                               + (f" ({spent} queries)" if cost > 1 else "") +
                               f" with only {remaining} queries left in the budget")
        return Pending(cand, self.optimizer.batch_index, spent, self.step, before,
                       self.evaluator.snapshot(self.space))

    def _tell(self, pending: "Pending", losses: torch.Tensor, accs: torch.Tensor) -> tuple[int, dict]:
        """The second half of a round: the losses [K] (or [K, cost]) and accuracies [K] of its
        candidates told to the optimiser → (queries spent, the round's record)."""
        step, spent = pending.step, pending.spent
        self._tick()
        if not bool(torch.isfinite(losses).all()):
            self.evaluator.restore(self.space, pending.held)  # the checkpoint below is the state before this round
            raise_if_nonfinite(losses, self.optimizer, pending.before, self.checkpoint_path, self.save_checkpoint,
                               f"at step {step + 1} (after {self.queries} queries)",
                               f"step {step}, {self.queries} queries", self.method.hint)
        stats = self.optimizer.tell(losses, accs)
        self.queries += spent
        rec = {"step": step + 1, "queries": self.queries, **stats}
        if self.optimizer.step == step:
            # a generation evaluated in part and never told (BPT-VLM's last one of a budget, as officially):
            # its record is step s + 1, marked partial, so no two records share a step number
            rec["partial"] = True
        rec.setdefault("train_acc", float(accs.float().mean()))
        rec["time_s"] = round(self._tick(), 4)
        return spent, rec

    def _fused_fits(self, remaining: int) -> bool:
        """Whether this round is a fused step: the fused step applies and a whole one (2q queries) fits
        in `remaining` (else the plain round, which asks for what fits)."""
        return self._fused is not None and remaining >= 2 * self.config.sp_avg

    def _fused_stepped(self) -> tuple[int, dict | None]:
        """After one fused step on this run's `FusedZIPStep` buffers (alone, or as its part of a run
        group's step, zipfast.run.fused_group): the optimiser takes the new state → (2q queries
        spent, the record). The host reads the step's statistics only on log, checkpoint and final
        steps and where a step hook is due (record None otherwise), so a non-finite loss raises
        NonFiniteLossError there."""
        c, k, fused = self.config, self.step + 1, self._fused
        opt = self.optimizer  # the optimiser stays the owner of the state (checkpoints, evaluate)
        opt.w, opt.step = fused.w.clone(), k
        if c.opt_type == "spsa-gc":
            opt.momentum = fused.momentum.clone()
        self.queries += 2 * c.sp_avg
        self._tick()
        last = self.queries + 2 * c.sp_avg > c.budget
        save = self.run_dir is not None and c.checkpoint_every and k % c.checkpoint_every == 0
        if not (k % c.log_every == 0 or last or save or any(h.due(self) for h in self.step_hooks)):
            return 2 * c.sp_avg, None
        rec = {"step": k, "queries": self.queries, **fused.record(), "time_s": round(self.elapsed, 4)}
        if not all(map(math.isfinite, (rec["loss"], rec["grad_norm"]))):
            raise NonFiniteLossError(f"non-finite loss or gradient by step {k} of the fused step ({rec}); "
                                     "rerun with ZIPFAST_FUSED_STEP=0 to stop at the first bad step")
        return 2 * c.sp_avg, rec

    # ------------------------------------------------------------------ evaluation

    def test_predictions(self, w: torch.Tensor | None = None, split: str = "test"):
        """(predicted classes [M], labels [M]) on the test split (or split "val": the few-shot validation
        split) for the prompt of w (default: the current point; a zero-shot run classifies with its template)."""
        pred, labels, _ = self.evaluator.predict(self.space, self.w if w is None else w, split)
        return pred, labels

    def test_metrics(self, w: torch.Tensor | None = None, split: str = "test") -> tuple[float, float | None]:
        """(accuracy in %, mean loss of the training objective, where the evaluator computes it) on the
        test split, or on the validation split (split "val")."""
        pred, labels, loss = self.evaluator.predict(self.space, self.w if w is None else w, split)
        return (100.0 * int((pred == labels).sum()) / len(labels) if len(labels) else 0.0), loss

    def evaluate(self, w: torch.Tensor | None = None, split: str = "test") -> float:
        """Test accuracy (%) of the prompt of w (default: the current point); split "val": validation accuracy."""
        return self.test_metrics(w, split)[0]

    def val_accuracy(self, w: torch.Tensor | None = None) -> float:
        """Accuracy (%) on the few-shot validation split (min(shots, 4) images per class; model selection,
        e.g. `zipfast sweep`) of the prompt of w (default: the current point). A UserError (one line, what
        to do) when the data gives no validation split."""
        return self.test_metrics(w, "val")[0]

    # ------------------------------------------------------------------ checkpoints (layout v2, zipfast.run.state)

    def fingerprint(self) -> dict:
        cfg = self.config.to_dict()
        return {"method": self.config.method, "method_config": self.method_config(),
                **{k: cfg[k] for k in self.evaluator.trajectory_keys}, "classnames": self.classnames,
                **self.evaluator.fingerprint(), "data": self.data_identity, "weights": self.weights}

    def state_dict(self) -> dict:
        """Tensors and JSON values only (the checkpoint contract, zipfast.run.checkpoint)."""
        opt = self.optimizer
        return {"format": STATE_FORMAT, "method": self.config.method, "config": self.config.to_dict(),
                "point": None if opt is None else opt.point.detach().cpu(),
                "optimizer": None if opt is None else opt.state_dict(),
                "space": None if self.space is None else self.space.state_dict(),
                "step": self.step, "queries": self.queries, "elapsed": self.elapsed,
                "last_record": self.last_record, "template": self.template, "zipfast": __version__}

    def save_checkpoint(self, path) -> None:
        """Write checkpoint.safetensors atomically (tensors in safetensors, the rest in JSON; never pickle)."""
        write_checkpoint(path, self.state_dict(), self.fingerprint())

    def load_checkpoint(self, path, checkpoint=None) -> None:
        """Restore a run (any layout, zipfast.run.state); the configuration must agree on every
        trajectory setting; the dataset and the weights are compared by content, not path (zipfast.run.identity).
        checkpoint: the one already read by `read_run(path)`. The next `fit()`
        continues the run in its output directory (its log is cut back to the checkpoint's step)."""
        ck = read_run(path) if checkpoint is None else checkpoint
        diff = differences(ck.fingerprint, self.fingerprint())
        if diff:
            raise CheckpointMismatchError(f"checkpoint {ck.path} is from another configuration: " + "; ".join(diff))
        sd = ck.state
        with _content_of(ck.path):
            queries, elapsed = sd["queries"], float(sd["elapsed"])
            if not (isinstance(queries, int) and not isinstance(queries, bool) and queries >= 0):
                raise ValueError(f"queries {queries!r} is not a count of queries")
            if self.optimizer is not None:
                self._load_space(sd["space"])
                self.optimizer.load_state_dict(sd["optimizer"], self.device)
                if self.optimizer.point.shape != (self.space.dim,) or self.optimizer.step < 0:
                    raise ValueError(f"the optimiser's point has shape {tuple(self.optimizer.point.shape)} for a "
                                     f"space of {self.space.dim} dimensions, step {self.optimizer.step}")
        self.queries, self.elapsed = queries, elapsed
        if sd.get("v1_batches") is not None and int(sd["v1_batches"]) != self.batches:
            raise CheckpointMismatchError(f"{ck.path}: its minibatch counter ({sd['v1_batches']}) disagrees with its "
                                          f"optimiser's ({self.batches}); the checkpoint is inconsistent")
        self.last_record = sd.get("last_record")
        self._mark_resumed(ck.path)

    def _load_space(self, sd: dict) -> None:
        """The checkpointed space: in place where it holds modules (BlackVIP's decoder statistics), else
        rebuilt from its state (projections, Fastfood parameters, the frame)."""
        if hasattr(self.space, "load_state_dict"):
            self.space.load_state_dict(sd)
        else:
            self.space = type(self.space).from_state_dict(sd, self.device)

    def load_prompt(self, source) -> torch.Tensor:
        """The trained prompt of another run's checkpoint (a file, a run folder or a read `Checkpoint`),
        to evaluate here: `trainer.evaluate(trainer.load_prompt(path))`. Only the method and the
        settings that shape the prompt must agree (zipfast.run.prompt); the classes, dataset and seed
        may differ. Sets the space from the checkpoint and returns the point [dim]; the optimiser and
        the query count are left as they are."""
        from zipfast.run.checkpoint import Checkpoint
        from zipfast.run.prompt import check_prompt_settings, require_method
        from zipfast.run.state import upgrade

        ck = upgrade(source) if isinstance(source, Checkpoint) else read_run(source)
        require_method(ck, self.config.method)
        check_prompt_settings(ck, self.config.method, self.config.to_dict(), self.method_config(), self.weights)
        with _content_of(ck.path):
            if self.space is not None and ck.state.get("space") is not None:
                self._load_space(ck.state["space"])
            point = ck.state["point"].float().to(self.device)
            if self.space is not None and point.shape != (self.space.dim,):
                raise ValueError(f"the point has shape {tuple(point.shape)} for a space of {self.space.dim} dimensions")
        return point


class Pending(NamedTuple):
    """A round asked for and not yet told: its candidates [K, dim], the optimiser's minibatch index,
    the queries it costs, the step before it, the optimiser's and the evaluator's state before it."""

    cand: torch.Tensor
    batch_index: int
    spent: int
    step: int
    before: dict
    held: object


@contextlib.contextmanager
def _content_of(path):
    """A checkpoint whose file is sound (its checksum holds) but whose content does not fit this run's method
    (a missing part, a vector of another length, a count that is not one) is refused naming the file."""
    try:
        yield
    except CheckpointMismatchError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as e:
        what = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        raise CheckpointMismatchError(f"checkpoint {str(path)!r} does not hold a state this run's method "
                                      f"({what}); use another checkpoint") from None


def read_checkpoint(path) -> dict:
    """The state dict (layout v2) of a zipfast checkpoint file or run directory, with its "fingerprint"
    and "path"; CheckpointError (exit 2) names the file and what is wrong with it."""
    ck = read_run(path)
    return {**ck.state, "fingerprint": dict(ck.fingerprint), "path": ck.path, "config": dict(ck.state["config"])}


ZIPTrainer = Trainer  # the official ZIP trainer's name (the drop-in API); every method runs on it
