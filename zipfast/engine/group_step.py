"""The fused ZIP step of R runs at once (a run group, zipfast.run.fused_group): ONE text pass.

    per run: candidates into its ctx buffer [2q, m, D]
      → engine.text_features_many([ctx_1 … ctx_R])   (one batched pass of the shared engine)
      → per run: clip_loss, spsa_update into its buffers

Each run's state and buffers are its own `FusedZIPStep`'s (zipfast.engine.step); no host
synchronisation, so on CUDA the whole group step is captured as one CUDA graph (its first replay
checked against the eager group step, like a single run's) and on CPU it runs eagerly. Each run's
trajectory is bit for bit its step alone on CPU, since `text_features_many` is
(tests/engine/test_group_step.py); unverified on a GPU.
"""

from __future__ import annotations

import torch

from zipfast.engine.step import CapturedStep, FusedZIPStep


class FusedZIPGroupStep(CapturedStep):
    """steps: the runs' FusedZIPStep (state holders; their own graphs are never used), all on ONE
    engine with one shape (q, batch size B, feature width E). use_graph: default on CUDA."""

    what = "the run group's fused ZIP step"
    op = "fused_group_step"

    def __init__(self, steps: list[FusedZIPStep], use_graph: bool | None = None):
        if not steps:
            raise ValueError("a group step needs at least one run")
        first = steps[0]
        for s in steps[1:]:
            if s.engine is not first.engine or s.q != first.q or s.feats.shape != first.feats.shape:
                raise ValueError("the runs of a group step must share the engine, q and the minibatch shape")
        self.steps, self.engine, self.device = list(steps), first.engine, first.device
        self.use_graph = (self.device.type == "cuda") if use_graph is None else use_graph
        self.graph = None

    def step_fn(self) -> None:
        """Every run's step on its static buffers, with one text pass (no host synchronisation)."""
        counters = [s._perturb() for s in self.steps]
        txts = self.engine.text_features_many([s.ctx for s in self.steps])
        for s, txt, kc in zip(self.steps, txts, counters):
            s._update(txt, *kc)

    def __call__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """One step of every run on its minibatch (features [B, E], labels [B]), in the runs' order."""
        if len(batches) != len(self.steps):
            raise ValueError(f"{len(batches)} minibatches for {len(self.steps)} runs")
        for s, (feats, labels) in zip(self.steps, batches):
            s.load(feats, labels)
        self._run()

    def _state(self) -> dict:
        return {f"run {i} {n}": t for i, s in enumerate(self.steps) for n, t in s._state().items()}

    def _outputs(self) -> dict:
        return {f"run {i} {n}": t for i, s in enumerate(self.steps) for n, t in s._outputs().items()}

    def _shape(self) -> str:
        return f"{len(self.steps)} runs, {self.steps[0]._shape()}"
