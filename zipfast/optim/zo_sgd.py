"""ZO-SGD: the plain zeroth-order baseline (MeZO-style Gaussian two-point estimator).

Step: z_j ~ N(0, I) for j = 1..pairs; ask [w + μ z_j ; w − μ z_j];
ĝ = mean_j (L⁺_j − L⁻_j) / (2μ) · z_j; w ← w − η ĝ. No clipping, no momentum, constant
step size. Cost: 2·pairs queries per step.
"""

from __future__ import annotations

import torch

from zipfast.optim.protocol import Optimizer, empty


def gaussian_two_point(loss_plus: torch.Tensor, loss_minus: torch.Tensor, z: torch.Tensor, mu: float) -> torch.Tensor:
    """ĝ [dim] = mean_j (L⁺_j − L⁻_j) / (2μ) · z_j; losses [q], z [q, dim]."""
    return ((loss_plus - loss_minus) / (2 * mu)).unsqueeze(-1).mul(z).mean(0)


class ZOSGD(Optimizer):
    """MeZO-style ZO-SGD from w0 [dim]; perturbations from a private CPU generator."""

    name = "zo-sgd"

    def __init__(self, w0: torch.Tensor, pairs: int = 5, mu: float = 0.01, lr: float = 1e-3, seed: int = 0):
        self._own_point(w0, seed)
        self.pairs, self.mu, self.lr = int(pairs), float(mu), float(lr)

    def ask(self, remaining: int) -> torch.Tensor:
        q = min(self.pairs, remaining // 2)
        if q < 1:
            return empty(self.dim, self.w.device)
        z = torch.randn(q, self.dim, generator=self.generator).to(self.w.device)
        self._pending = z
        return torch.cat([self.w + self.mu * z, self.w - self.mu * z])

    def tell(self, losses: torch.Tensor, accs: torch.Tensor | None = None) -> dict:
        if self._pending is None:
            raise RuntimeError("tell() called without a preceding ask()")
        z = self._pending
        q = z.shape[0]
        self._expect(losses, 2 * q)
        g = gaussian_two_point(losses[:q], losses[q:], z, self.mu)
        self.w = self.w - self.lr * g
        self.step += 1
        self._pending = None
        stats = {"loss": float(losses.mean())}
        if accs is not None:
            stats["train_acc"] = float(accs.mean())
        stats["grad_norm"] = float(torch.linalg.vector_norm(g))
        return stats

    def state_dict(self) -> dict:
        return {"pairs": self.pairs, "mu": self.mu, "lr": self.lr, "dim": self.dim, "step": self.step,
                "w": self.w.cpu(), "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict, device="cpu") -> None:
        self._check_settings(sd, self.state_dict(), ("pairs", "mu", "lr", "dim"))
        self.step = int(sd["step"])
        self.w = sd["w"].to(device)
        self.generator.set_state(sd["generator"])
        self._pending = None
