"""SharpZO: sharpness-aware CMA-ES warm-up, then sparse ZO-SGD with Z-pruning.

Over w ∈ R^d (d = 512 by default; the parameter space maps w to p0 + reshape(A·w)).

Stage 1, for `change_point` generations (two rounds each, on the same minibatch):
  probe:      estimate ĝ at the CMA-ES mean θ — "rge": `grad_dirs` antithetic Gaussian
              directions, ĝ = mean_j (L(θ+μ_g u_j) − L(θ−μ_g u_j)) / (2μ_g) · u_j, 2·grad_dirs
              queries; "cge" (the released code's estimator): one coordinate at a time,
              ĝ_i = (L(θ+μ_g e_i) − L(θ−μ_g e_i)) / (2μ_g), 2·d queries;
              then ε* = ρ·ĝ/‖ĝ‖ (0 if ĝ = 0).
  population: x_i ~ N(θ, σ²C) from pycma (popsize candidates), fitness L(x_i + ε*), and
              pycma is told (x_i, fitness).
Stage 2, from the stage-1 mean, one round per step (plus a mask round every P steps):
  mask:       (if `prune`) at stage-2 steps 0, P, 2P, …: a gradient estimate G at w (same
              estimator and cost as the probe), score S = |w|² ⊙ zscore(|G|), and Ω keeps
              ⌊keep_fraction·d⌋ coordinates: the highest scores ("top", the paper) or the
              lowest ("bottom", what the released code's ascending sort selects).
  step:       z_j ~ N(0, I) ⊙ Ω (j = 1..pairs), ĝ = mean_j (L(w+μz_j) − L(w−μz_j)) / (2μ) · z_j,
              w ← w − η ĝ. With `accumulate` (the released code), the direction is instead a
              running sum of every estimate since the last gradient estimate (no reset).
              With `popsize_rows` (the released code), from the second stage-2 step on each z_j
              is the mean of popsize N(0, I) rows (norm ≈ 1/√popsize of one row): the release's
              parameter becomes [popsize, d] once its [popsize, d] coordinate-gradient copy is
              broadcast into the first update, every row draws its own z, and the prompt is the
              row mean — so the loss sees w̄ ± μ·mean_rows(z) and w̄ moves by η·ĝ(mean_rows(z)).

Budget: a generation that no longer fits the remaining queries ends stage 1 early; a mask
round that does not fit keeps the previous mask (all ones if there is none); the last step
uses fewer pairs. pycma draws from a private numpy Generator seeded from `seed` (never the
global numpy state); its state is checkpointed as the fitness history and rebuilt by
replaying it, which reproduces it bit for bit.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from zipfast.optim.protocol import Optimizer, empty
from zipfast.optim.zo_sgd import gaussian_two_point

log = logging.getLogger("zipfast.optim")
GRAD_ESTIMATORS = ("rge", "cge")


def _one_blas_thread():
    """pycma's d×d linear algebra is small: one BLAS thread is 5–50× faster than OpenBLAS's thread pool on a
    shared machine, and a fixed thread count keeps its floating-point reductions (hence resume) reproducible."""
    return threadpool_limits(1, "blas")
MASK_ENDS = ("top", "bottom")


def zscore(x: torch.Tensor) -> torch.Tensor:
    """(x − mean) / (population std + 1e-8)."""
    return (x - x.mean()) / (x.std(unbiased=False) + 1e-8)


def zpruning_score(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """S = |w|² ⊙ zscore(|G|) [d]."""
    return w.abs().square() * zscore(g.abs())


def keep_mask(score: torch.Tensor, fraction: float, end: str) -> torch.Tensor:
    """Binary mask [d] keeping max(1, ⌊fraction·d⌋) coordinates of the `end` ("top": highest,
    "bottom": lowest) of the score; ties resolved by index (stable sort)."""
    k = max(1, int(fraction * score.numel()))
    order = torch.sort(score, descending=end == "top", stable=True).indices[:k]
    mask = torch.zeros_like(score)
    mask[order] = 1.0
    return mask


def sharpness_eps(g: torch.Tensor, rho: float) -> torch.Tensor:
    """ε* = ρ·g/‖g‖ (zero when g = 0)."""
    norm = torch.linalg.vector_norm(g)
    return torch.zeros_like(g) if float(norm) == 0.0 else g * (rho / norm)


class SharpZO(Optimizer):
    name = "sharpzo"
    SETTINGS = ("dim", "popsize", "sigma0", "rho", "change_point", "grad_estimator", "grad_dirs", "grad_mu",
                "mu", "lr", "pairs", "prune", "prune_interval", "keep_fraction", "mask_end", "accumulate", "bound",
                "popsize_rows", "seed")

    def __init__(self, w0: torch.Tensor, popsize: int = 40, sigma0: float = 0.4, rho: float = 0.1,
                 change_point: int = 50, grad_estimator: str = "rge", grad_dirs: int = 5, grad_mu: float = 1e-3,
                 mu: float = 1e-3, lr: float = 1e-3, pairs: int = 1, prune: bool = True, prune_interval: int = 200,
                 keep_fraction: float = 0.1, mask_end: str = "top", accumulate: bool = False, bound: float = 0.0,
                 popsize_rows: bool = False, seed: int = 0):
        if grad_estimator not in GRAD_ESTIMATORS:
            raise ValueError(f"grad_estimator {grad_estimator!r}: choose one of {', '.join(GRAD_ESTIMATORS)}")
        if mask_end not in MASK_ENDS:
            raise ValueError(f"mask_end {mask_end!r}: choose one of {', '.join(MASK_ENDS)}")
        self.device = w0.device
        self.dim = w0.shape[-1]
        self.popsize, self.sigma0, self.rho, self.change_point = int(popsize), float(sigma0), float(rho), int(change_point)
        self.grad_estimator, self.grad_dirs, self.grad_mu = grad_estimator, int(grad_dirs), float(grad_mu)
        self.mu, self.lr, self.pairs = float(mu), float(lr), int(pairs)
        self.prune, self.prune_interval, self.keep_fraction = bool(prune), int(prune_interval), float(keep_fraction)
        self.mask_end, self.accumulate, self.bound, self.seed = mask_end, bool(accumulate), float(bound), int(seed)
        self.popsize_rows = bool(popsize_rows)
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0
        self.logical = 0  # completed generations + stage-2 steps (the minibatch counter)
        self.stage, self.phase = 1, "probe"
        self.gen = 0
        self.fitness: list[list[float]] = []
        self.eps = torch.zeros(self.dim, device=self.device)
        self.g_last: torch.Tensor | None = None
        self.w0 = w0.float()
        self.w: torch.Tensor | None = None  # stage-2 point
        self.mask: torch.Tensor | None = None
        self.acc: torch.Tensor | None = None
        self.j = 0  # completed stage-2 steps
        self.mask_at = -1  # stage-2 step whose mask round is done
        self.switch_reason: str | None = None
        self._pending = None
        self.es = self._new_es()

    # ------------------------------------------------------------------ pycma

    def _new_es(self):
        import cma

        rng = np.random.Generator(np.random.PCG64(self.seed))
        opts = {"popsize": self.popsize, "seed": np.nan, "randn": lambda *shape: rng.standard_normal(shape),
                "verbose": -10, "verb_log": 0, "verb_disp": 0, "maxiter": np.inf,
                "tolx": 0, "tolfun": 0, "tolfunhist": 0, "tolstagnation": np.inf, "tolflatfitness": np.inf}
        if self.bound > 0:
            opts["bounds"] = [-self.bound, self.bound]
        return cma.CMAEvolutionStrategy(self.w0.cpu().double().numpy(), self.sigma0, inopts=opts)

    # ------------------------------------------------------------------ protocol

    @property
    def point(self) -> torch.Tensor:
        if self.stage == 1:
            return torch.as_tensor(self.es.mean, dtype=torch.float32).to(self.device)
        return self.w

    @property
    def batch_index(self) -> int:
        return self.logical + 1

    def grad_cost(self) -> int:
        """Queries of one gradient estimate: 2·grad_dirs (rge) or 2·d (cge)."""
        return 2 * (self.grad_dirs if self.grad_estimator == "rge" else self.dim)

    def generation_cost(self) -> int:
        return (self.grad_cost() if self.rho > 0 else 0) + self.popsize

    def ask(self, remaining: int) -> torch.Tensor:
        if self.stage == 1 and self.phase == "probe":
            if self.gen >= self.change_point:
                self._switch("change point")
            elif remaining < self.generation_cost():
                self._switch(f"budget: {remaining} queries left, a generation costs {self.generation_cost()}")
            elif self.rho <= 0:
                self.phase = "population"
        if self.stage == 1:
            if self.phase == "probe":
                return self._ask_grad(self.point, "probe")
            return self._ask_population()
        return self._ask_stage2(remaining)

    def _switch(self, reason: str) -> None:
        self.w = self.point.clone()  # the stage-1 (CMA-ES) mean
        self.stage, self.phase, self.switch_reason = 2, "step", reason
        self.acc = self.g_last.clone() if (self.accumulate and self.g_last is not None) else None
        log.info("sharpzo: stage 2 from round %d (%d generations; %s)", self.step + 1, self.gen, reason)

    def _directions(self) -> torch.Tensor:
        if self.grad_estimator == "cge":
            return torch.eye(self.dim)
        return torch.randn(self.grad_dirs, self.dim, generator=self.generator)

    def _ask_grad(self, at: torch.Tensor, phase: str) -> torch.Tensor:
        u = self._directions().to(self.device)
        self._pending = (phase, u)
        return torch.cat([at + self.grad_mu * u, at - self.grad_mu * u])

    def _ask_population(self) -> torch.Tensor:
        with _one_blas_thread():
            xs = self.es.ask()
        x = torch.as_tensor(np.asarray(xs), dtype=torch.float32).to(self.device)
        self._pending = ("population", xs)
        return x + self.eps

    def _ask_stage2(self, remaining: int) -> torch.Tensor:
        if self.prune and self.mask_at != self.j and self.j % self.prune_interval == 0:
            self.mask_at = self.j
            if remaining >= self.grad_cost() + 2:
                return self._ask_grad(self.w, "mask")
            log.info("sharpzo: mask round at stage-2 step %d skipped (budget); keeping the %s mask", self.j,
                     "previous" if self.mask is not None else "all-ones")
        q = min(self.pairs, remaining // 2)
        if q < 1:
            return empty(self.dim, self.device)
        if self.popsize_rows and self.j >= 1:  # the release's [popsize, d] parameter, seen through its row mean
            z = torch.randn(q, self.popsize, self.dim, generator=self.generator).mean(1)
        else:
            z = torch.randn(q, self.dim, generator=self.generator)
        z = z.to(self.device)
        self._pending = ("step", z)
        zm = z if self.mask is None else z * self.mask
        return torch.cat([self.w + self.mu * zm, self.w - self.mu * zm])

    def tell(self, losses: torch.Tensor, accs: torch.Tensor | None = None) -> dict:
        if self._pending is None:
            raise RuntimeError("tell() called without a preceding ask()")
        phase, data = self._pending
        n = len(data) if phase == "population" else 2 * data.shape[0]
        self._expect(losses, n)
        self._pending = None
        stats = {"stage": self.stage, "phase": phase, "loss": float(losses.mean())}
        if accs is not None:
            stats["train_acc"] = float(accs.mean())
        if phase in ("probe", "mask"):
            g = self._estimate(losses, data)
            stats["grad_norm"] = float(torch.linalg.vector_norm(g))
            self.g_last = g
            if phase == "probe":
                self.eps = sharpness_eps(g, self.rho)
                stats["eps_norm"] = float(torch.linalg.vector_norm(self.eps))
                self.phase = "population"
            else:
                self.mask = keep_mask(zpruning_score(self.w, g), self.keep_fraction, self.mask_end)
                if self.accumulate:
                    self.acc = g.clone()
                stats["mask_kept"] = int(self.mask.sum())
        elif phase == "population":
            fit = [float(v) for v in losses.double().cpu()]
            with _one_blas_thread():
                self.es.tell(data, fit)
            self.fitness.append(fit)
            self.gen += 1
            self.logical += 1
            self.phase = "probe"
            stats.update(generation=self.gen, best_loss=min(fit), sigma=float(self.es.sigma))
        else:
            q = data.shape[0]
            proj = (losses[:q] - losses[q:]) / (2 * self.mu)
            g = (proj.unsqueeze(-1) * data).mean(0)  # unmasked z, as the released code accumulates
            mask = 1.0 if self.mask is None else self.mask
            if self.accumulate:
                self.acc = g if self.acc is None else self.acc + g
                direction = self.acc * mask
            else:
                direction = g * mask
            self.w = self.w - self.lr * direction
            self.j += 1
            self.logical += 1
            stats["grad_norm"] = float(torch.linalg.vector_norm(g * mask))
        self.step += 1
        return stats

    def _estimate(self, losses: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """ĝ [d] from the losses of [θ + μ_g u ; θ − μ_g u]: the mean over random directions
        (rge) or one difference quotient per coordinate (cge, u = I)."""
        q = u.shape[0]
        if self.grad_estimator == "cge":
            return (losses[:q] - losses[q:]) / (2 * self.grad_mu)
        return gaussian_two_point(losses[:q], losses[q:], u, self.grad_mu)

    # ------------------------------------------------------------------ state

    def settings(self) -> dict:
        return {k: getattr(self, k) for k in self.SETTINGS}

    def state_dict(self) -> dict:
        def t(x):
            return None if x is None else x.cpu()

        return {**self.settings(), "step": self.step, "logical": self.logical, "stage": self.stage,
                "phase": self.phase, "gen": self.gen, "j": self.j, "mask_at": self.mask_at,
                "switch_reason": self.switch_reason, "w0": self.w0.cpu(),
                "fitness": torch.tensor(self.fitness, dtype=torch.float64).reshape(len(self.fitness), self.popsize),
                "cma_mean": torch.as_tensor(np.array(self.es.mean)), "eps": t(self.eps), "g_last": t(self.g_last),
                "w": t(self.w), "mask": t(self.mask), "acc": t(self.acc), "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict, device="cpu") -> None:
        sd = {"popsize_rows": False, **sd}  # checkpoints from before the setting drew one row
        self._check_settings(sd, self.settings(), self.SETTINGS)
        self.device = torch.device(device)

        def t(x):
            return None if x is None else x.to(self.device)

        self.w0 = sd["w0"].to(self.device)
        self.es = self._new_es()
        self.fitness = []
        with _one_blas_thread():
            for row in sd["fitness"].tolist():  # replay: the private RNG redraws the same populations
                self.es.tell(self.es.ask(), row)
                self.fitness.append(row)
        if not np.array_equal(np.array(self.es.mean), sd["cma_mean"].numpy()):
            raise ValueError("replaying the CMA-ES fitness history did not reproduce the saved mean "
                             "(another pycma version?); this checkpoint cannot be resumed bit-exactly")
        for key in ("step", "logical", "stage", "gen", "j", "mask_at"):
            setattr(self, key, int(sd[key]))
        self.phase, self.switch_reason = sd["phase"], sd["switch_reason"]
        self.eps, self.g_last, self.w, self.mask, self.acc = (t(sd[k]) for k in ("eps", "g_last", "w", "mask", "acc"))
        self.generator.set_state(sd["generator"])
        self._pending = None

