"""BAR's optimiser: a one-sided randomized gradient-free estimate (q random unit directions,
1 + q queries per step) with BAR's polynomial step-size decay, in ask/tell form."""

from __future__ import annotations

import torch

from zipfast.errors import UserError
from zipfast.optim.protocol import Optimizer, empty


class BARGradientFree(Optimizer):
    """Step k asks [w ; w + β·u_1 ; … ; w + β·u_q], u_j uniform on the unit sphere of R^d, and
    updates w ← w − a_k · Σ_j (d / q) · u_j · (L(w + β u_j) − L(w)) / β with
    a_k = (lr0 − lr_min) · (1 − min(k, T) / T)^decay + lr_min, T = total_steps · decay.

    Official values (TRAINER.BAR): q = SP_AVG 5, β = SMOOTH 0.01, σ = SIMGA 1 (the scale of
    the Gaussian draw before normalisation, so it cancels), LRS (10, 0.1), DECAYING 0.9;
    total_steps = OPTIM.MAX_EPOCH × minibatches per epoch.
    """

    name = "bar-rgf"

    def __init__(self, w0: torch.Tensor, q: int = 5, beta: float = 0.01, sigma: float = 1.0,
                 lrs=(10.0, 0.1), decay: float = 0.9, total_steps: int = 1000, seed: int = 0):
        if q < 1 or beta <= 0 or sigma <= 0 or decay <= 0 or total_steps < 1:
            raise UserError(f"BAR needs q ≥ 1, SMOOTH > 0, SIMGA > 0, DECAYING > 0 and total steps ≥ 1; got "
                             f"q={q}, SMOOTH={beta}, SIMGA={sigma}, DECAYING={decay}, total steps={total_steps}")
        self._own_point(w0.reshape(-1), seed)
        self.q, self.beta, self.sigma = int(q), float(beta), float(sigma)
        self.lr0, self.lr_min = (float(v) for v in lrs)
        self.decay, self.total_steps = float(decay), int(total_steps)

    def lr(self, k: int) -> float:
        T = self.total_steps * self.decay
        return (self.lr0 - self.lr_min) * (1 - min(k, T) / T) ** self.decay + self.lr_min

    def ask(self, allowance: int) -> torch.Tensor:
        """[1 + q', d] with q' = min(q, allowance − 1); nothing when fewer than 2 queries remain."""
        q = min(self.q, allowance - 1)
        if q < 1:
            return empty(self.dim)
        u = torch.randn(q, self.dim, generator=self.generator) * self.sigma
        u = u / torch.linalg.vector_norm(u, dim=1, keepdim=True)
        self._pending = u
        return torch.cat([self.w.unsqueeze(0), self.w + self.beta * u])

    def tell(self, losses: torch.Tensor, accs: torch.Tensor | None = None) -> dict:
        if self._pending is None:
            raise RuntimeError("tell() called without a preceding ask()")
        u = self._pending
        q = u.shape[0]
        losses = losses.detach().float().cpu()
        if losses.shape != (1 + q,):
            raise ValueError(f"expected {1 + q} losses, got shape {tuple(losses.shape)}")
        k = self.step + 1
        g = (self.dim / q) * ((losses[1:] - losses[0]) / self.beta) @ u
        ak = self.lr(k)
        self.w = self.w - ak * g
        self.step, self._pending = k, None
        return {"loss": float(losses[0]), "lr": ak, "grad_norm": float(torch.linalg.vector_norm(g)), "q": q}

    def state_dict(self) -> dict:
        return {"kind": "bar-rgf", "w": self.w.clone(), "q": self.q, "beta": self.beta, "sigma": self.sigma,
                "lrs": [self.lr0, self.lr_min], "decay": self.decay, "total_steps": self.total_steps,
                "step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict, device="cpu") -> None:
        self._check_settings(sd, self.state_dict(), ("kind", "q", "beta", "sigma", "lrs", "decay", "total_steps"))
        self.w, self.step = sd["w"].clone().float(), int(sd["step"])
        self._pending = None
        self.generator.set_state(sd["generator"])
