"""CMA-ES in ask/tell form: pycma itself (as the official BPT-VLM `es_algorithms/CMA_ES.py`), its numpy
RNG isolated, its state stored as seed + fitness history (replayed on load). BPT-VLM runs it on its
projected token space, `zip-cma` on ZIP's low-rank space."""

from __future__ import annotations

import numpy as np
import torch

from zipfast.optim.protocol import Optimizer, empty


class _NumpyRNG:
    """pycma draws from numpy's global RNG: run it under a private state, leave the caller's alone."""

    def __init__(self):
        self.state = None

    def __enter__(self):
        self._outer = np.random.get_state()
        if self.state is not None:
            np.random.set_state(self.state)

    def __exit__(self, *exc):
        self.state = np.random.get_state()
        np.random.set_state(self._outer)


BEST_RULES = ("epoch", "running")
POINTS = ("best", "mean")  # what `point` stands for: the best candidate seen, or the distribution mean


class PyCMA(Optimizer):
    """CMA-ES (pycma) from mean 0 with σ0 = SIGMA and population POP_SIZE, options as the
    official shallow_cma: seed = SEED, maxiter = BUDGET / POP_SIZE, bounds ±BOUND if BOUND > 0.

    A generation's candidates may be asked in several parts (the last one of a budget is
    evaluated in part and never told, as officially). `point` is the best candidate seen
    (the official BPT-VLM tests its best prompt), `mean` the distribution mean.

    Which candidate is best (`best`): "epoch" keeps the lowest fitness (mean loss over the
    candidate's epoch of minibatches); "running" is the official trainer's rule (ZIP's
    trainers/bptvlm.py `run_epoch`): after each minibatch the running mean so far is compared
    with the lowest value seen, so a candidate whose first minibatches were lucky can win over
    one whose full-epoch fitness is lower. Both tell pycma the full-epoch fitness; ties keep
    the earlier candidate.
    """

    name = "pycma"

    def __init__(self, dim: int, popsize: int = 15, sigma: float = 1.0, seed: int = 1, cma_budget: int = 6000,
                 bound: float = 0.0, best: str = "epoch", x0: torch.Tensor | None = None, report: str = "best"):
        if popsize < 2 or sigma <= 0 or cma_budget < popsize:
            raise ValueError(f"CMA-ES needs POP_SIZE ≥ 2, SIGMA > 0 and BUDGET ≥ POP_SIZE; got POP_SIZE={popsize}, "
                             f"SIGMA={sigma}, BUDGET={cma_budget}")
        if best not in BEST_RULES:
            raise ValueError(f"best {best!r}: choose one of {', '.join(BEST_RULES)}")
        if report not in POINTS:
            raise ValueError(f"report {report!r}: choose one of {', '.join(POINTS)}")
        self.dim, self.popsize, self.sigma, self.seed = int(dim), int(popsize), float(sigma), int(seed)
        self.cma_budget, self.bound, self.best, self.report = int(cma_budget), float(bound), best, report
        # the initial mean (BPT-VLM: 0, as officially); pycma keeps it, so a resume needs the same one
        self.x0 = None if x0 is None else x0.detach().double().cpu().reshape(-1)
        if self.x0 is not None and self.x0.numel() != self.dim:
            raise ValueError(f"x0 has {self.x0.numel()} values for a {self.dim}-dimensional search")
        self.history: list[list[float]] = []  # fitnesses of every told generation
        self.best_x = torch.zeros(self.dim, dtype=torch.float64)
        self.best_f: float | None = None
        self._start()

    def _options(self) -> dict:
        opts = {"seed": self.seed, "popsize": self.popsize, "maxiter": self.cma_budget / self.popsize,
                "verbose": -1}
        if self.bound > 0:
            opts["bounds"] = [-self.bound, self.bound]
        return opts

    def _start(self) -> None:
        import cma

        self._rng = _NumpyRNG()
        with self._rng:
            x0 = self.dim * [0] if self.x0 is None else self.x0.tolist()
            self.es = cma.CMAEvolutionStrategy(x0, self.sigma, inopts=self._options())
        self._solutions = None  # the current generation (numpy arrays), once asked
        self._fitness: list[float] = []
        self._asked = 0

    @property
    def point(self) -> torch.Tensor:
        """The best candidate seen (BPT-VLM, as officially), or with report="mean" the distribution mean."""
        return self.best_x.float() if self.report == "best" else self.mean.float()

    @property
    def mean(self) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.es.mean, dtype=np.float64).copy())

    @property
    def step(self) -> int:
        return len(self.history)

    @property
    def batch_index(self) -> int:
        """1 + the candidates evaluated so far (told): BPT-VLM's candidate k of the next ask reads
        its epoch of minibatches from there (zipfast.evaluate.image)."""
        return len(self.history) * self.popsize + (len(self._fitness) if self._solutions is not None else 0) + 1

    def _generation(self):
        if self._solutions is None:
            with self._rng:
                self._solutions = self.es.ask()
            self._fitness, self._asked = [], 0
        return self._solutions

    def ask(self, allowance: int) -> torch.Tensor:
        """The next min(allowance, remaining of this generation) candidates [K, dim] (float32, as the
        official prompts; pycma is told its own float64 solutions)."""
        if allowance < 1:
            return empty(self.dim)
        sols = self._generation()
        if self._asked != len(self._fitness):
            raise RuntimeError("ask() again before tell() of the previous candidates")
        part = sols[self._asked:self._asked + allowance]
        self._asked += len(part)
        return torch.from_numpy(np.stack(part)).float()

    def discard(self) -> None:
        self._asked = len(self._fitness)

    def tell(self, losses: torch.Tensor, accs: torch.Tensor | None = None) -> dict:
        """losses: [K] fitnesses, or [K, b] the losses of each candidate's b minibatches (in the
        order evaluated; the fitness is their mean, and the "running" rule reads their prefix means)."""
        per_batch = losses.detach().float().cpu()
        per_batch = per_batch.unsqueeze(1) if per_batch.dim() == 1 else per_batch
        nb = per_batch.shape[1]
        fit = per_batch[:, 0]
        for b in range(1, nb):  # float32, in minibatch order: the fitness pycma has always been told
            fit = fit + per_batch[:, b]
        losses = [float(v) for v in (fit / nb).double()]
        n = self._asked - len(self._fitness)
        if len(losses) != n:
            raise ValueError(f"expected {n} losses, got {len(losses)}")
        # the values compared with the best so far, per candidate: the fitness, or every running mean
        # (in float64, as the official trainer's AverageMeter sums Python floats)
        prefix = per_batch.double().cumsum(1) / torch.arange(1, nb + 1, dtype=torch.float64)
        seen = [[f] for f in losses] if self.best == "epoch" else prefix.tolist()
        start = len(self._fitness)
        for i, row in enumerate(seen):
            for f in row:
                if self.best_f is None or f < self.best_f:
                    self.best_f = f
                    self.best_x = torch.from_numpy(self._solutions[start + i].copy())
        self._fitness += losses
        info = {"loss": min(losses), "mean_loss": sum(losses) / len(losses), "best_loss": self.best_f,
                "generation": len(self.history) + 1, "evaluated": len(self._fitness)}
        if accs is not None:
            info["train_acc"] = float(accs.detach().float().mean())
        if len(self._fitness) == self.popsize:
            with self._rng:
                self.es.tell(self._solutions, self._fitness)
            self.history.append(self._fitness)
            self._solutions = None
            info["sigma"] = float(self.es.sigma)
        return info

    def state_dict(self) -> dict:
        return {"kind": "pycma", "dim": self.dim, "popsize": self.popsize, "sigma": self.sigma, "seed": self.seed,
                "cma_budget": self.cma_budget, "bound": self.bound, "best": self.best,
                **({} if self.report == "best" else {"report": self.report}),
                **({} if self.x0 is None else {"x0": self.x0.clone()}),
                "history": torch.tensor(self.history, dtype=torch.float64).view(-1, self.popsize),
                "partial": torch.tensor(self._fitness if self._solutions is not None else [], dtype=torch.float64),
                "best_x": self.best_x.clone(), "best_f": self.best_f}

    def load_state_dict(self, sd: dict, device="cpu") -> None:
        """Rebuild pycma by replaying every told generation (pycma is deterministic given its seed
        and the fitnesses), then re-ask a partly evaluated generation."""
        # settings added later, as the checkpoints written before them ran
        sd = {"best": "epoch", "report": "best", **sd}
        mine = {**self.state_dict(), "report": self.report}
        self._check_settings(sd, mine, ("kind", "dim", "popsize", "sigma", "seed", "cma_budget", "bound", "best",
                                        "report"))
        theirs_x0 = sd.get("x0")
        if (theirs_x0 is None) != (self.x0 is None) or (theirs_x0 is not None and
                                                         not torch.equal(theirs_x0.double(), self.x0)):
            raise ValueError("pycma state starts from another mean x0 than this run's")
        self._start()
        self.history = []
        for row in sd["history"].tolist():
            sols = self._generation()
            with self._rng:
                self.es.tell(sols, row)
            self.history.append(row)
            self._solutions = None
        partial = sd["partial"].tolist()
        if partial:
            self._generation()
            self._fitness, self._asked = partial, len(partial)
        self.best_x = sd["best_x"].clone().to(torch.float64)
        self.best_f = None if sd["best_f"] is None else float(sd["best_f"])


def point_from_state(sd: dict) -> torch.Tensor:
    """The point [dim] (float32) that `point` gives after `load_state_dict(sd)`, read without
    rebuilding the optimiser (its other settings, e.g. the seed of pycma, need not match):
    BAR's w, BlackVIP's decoder vector, BPT-VLM's best candidate seen."""
    kind = sd.get("kind")
    if kind == "bar-rgf":
        return sd["w"].float().clone()
    if kind == "blackvip-spsa":
        return sd["spsa"]["w"].float().clone()
    if kind == "pycma":
        return sd["best_x"].float().clone()
    raise ValueError(f"optimiser state of kind {kind!r} is not an image-side optimiser's "
                     "(bar-rgf, blackvip-spsa or pycma)")
