"""The optimiser protocol every zipfast method implements.

An optimiser works on flat parameter vectors w ∈ R^dim and never sees the model, the
parameter space or the data. It owns all of its state (its current point, step sizes,
momentum, a CMA-ES distribution, masks, a stage, its random generators). One round:

    cand = opt.ask(n)            # [K, dim] with 0 ≤ K ≤ n; K == 0: cannot step
    losses = <the K losses of cand, one batched engine pass on one minibatch>
    stats = opt.tell(losses)     # dict of step statistics, logged as is

`n` is the number of candidates the budget can still pay for: the queries (loss evaluations)
left divided by what one candidate costs (1 for every method but BPT-VLM, whose candidate
is evaluated on an epoch of minibatches). An optimiser never asks for more: it shrinks its
request (fewer antithetic pairs, an early stage switch) or returns K = 0, and the trainer
then stops. The trainer owns the budget and counts the queries, identically for every method.

`point` is the vector the method would report now (ZIP's w, the CMA-ES mean, ...): the
trainer evaluates test accuracy on it. `batch_index` is the 1-based index of the minibatch
the next ask's candidates are evaluated on, for every trainer; rounds that belong to one
logical step (a gradient probe followed by a population) return the same index so they share
data. BPT-VLM's CMA-ES names its next candidate instead (each candidate reads its own epoch).

`state_dict()` returns a nested dict of str keys whose leaves are torch tensors or JSON
values (a torch.Generator state is a uint8 tensor); `load_state_dict()` restores it
exactly (lists stand in for tuples), so a resumed run is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import torch


class Optimizer:
    """Base class: ask/tell over flat vectors; subclasses set `name` and `dim`."""

    name = "optimizer"
    dim: int
    step: int = 0  # completed ask/tell rounds

    def _own_point(self, w0: torch.Tensor, seed: int) -> None:
        """Start at a float32 copy of w0 [dim], step 0, with a private CPU generator seeded by seed."""
        self.w = w0.detach().clone().float()
        self.dim = self.w.shape[-1]
        self.step = 0
        self.generator = torch.Generator().manual_seed(seed)
        self._pending = None

    @property
    def point(self) -> torch.Tensor:
        """The current point w [dim] (float32, on the optimiser's device)."""
        return self.w

    @property
    def batch_index(self) -> int:
        """Minibatch index of the next ask (default: one fresh minibatch per round)."""
        return self.step + 1

    def ask(self, remaining: int) -> torch.Tensor:
        """Candidates [K, dim], K ≤ remaining (K = 0 means no round fits in the budget)."""
        raise NotImplementedError

    def tell(self, losses: torch.Tensor, accs: torch.Tensor | None = None) -> dict:
        """losses [K] (and training accuracies [K] in %, optional) of the last ask → statistics."""
        raise NotImplementedError

    def discard(self) -> None:
        """Forget the last ask() (its losses were unusable). What the ask changed (a generator's
        draw, a stage switch…) is undone by the trainer, which restores the state dict it took
        before the ask (zipfast.run.loop.raise_if_nonfinite)."""
        self._pending = None

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, sd: dict, device="cpu") -> None:
        raise NotImplementedError

    def _check_settings(self, sd: dict, mine: dict, keys) -> None:
        """Refuse a state saved with other hyper-parameters (lists compare equal to tuples)."""
        for key in keys:
            theirs = tuple(sd[key]) if isinstance(mine[key], tuple) and isinstance(sd[key], list) else sd[key]
            if theirs != mine[key]:
                raise ValueError(f"{self.name} state is for {key}={sd[key]!r}, this run has {mine[key]!r}")

    def _expect(self, losses: torch.Tensor, k: int) -> None:
        if losses.shape != (k,):
            raise ValueError(f"{self.name}: expected {k} losses, got shape {tuple(losses.shape)}")


def empty(dim: int, device=None) -> torch.Tensor:
    """The K = 0 answer of ask(): no round fits in the remaining budget."""
    return torch.empty(0, dim, device=device)
