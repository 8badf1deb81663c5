"""ZIP's optimiser family: antithetic SPSA with segmented-uniform perturbations.

"spsa-clip" (ZIP, default), "spsa" (no clipping) and "spsa-gc" (BlackVIP's momentum), as
in the official code. Cost: 2·sp_avg queries per step (10 with the defaults).
"""

from __future__ import annotations

import torch

from zipfast import reference as ref
from zipfast.optim.protocol import Optimizer, empty

OPT_TYPES = ("spsa-clip", "spsa", "spsa-gc")
PERTURBATIONS = ("philox", "official")


class SPSA(Optimizer):
    """Step k (1-based) asks K = 2·pairs candidates [w + c_k z_j ; w − c_k z_j] (pairs =
    sp_avg, fewer only when the budget has less left) and, told their losses, moves
    w ← w − a_k · direction(ĝ). perturbation="philox" (default) draws z_j of step k from the
    counter-based stream (seed mod 2^32, stream 0; counter (coordinate, j, k)) of
    `zipfast.ops.perturb`, identical on every device and backend; "official" draws from a
    private CPU torch.Generator in the official code's order. Either way the trajectory
    depends only on `seed`.

    w0 [dim]: the starting point (ZIP's init_params).
    """

    name = "spsa"

    def __init__(self, w0: torch.Tensor, opt_type: str = "spsa-clip", sp_avg: int = 5,
                 spsa_params=(1.0, 0.01, 0.01, 0.4, 0.1), moms: float = 0.8, seed: int = 0,
                 perturbation: str = "philox"):
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {perturbation!r}; choose one of {', '.join(PERTURBATIONS)}")
        self.perturbation, self.seed = perturbation, seed & 0xFFFFFFFF
        if opt_type not in OPT_TYPES:
            raise ValueError(f"unknown optimiser {opt_type!r}; choose one of {', '.join(OPT_TYPES)}")
        self._own_point(w0, seed)
        self.opt_type, self.sp_avg = opt_type, sp_avg
        self.o, self.c, self.a, self.alpha, self.gamma = (float(v) for v in spsa_params)
        self.b1 = float(moms)
        self.momentum: torch.Tensor | None = None

    def ask(self, remaining: int) -> torch.Tensor:
        """Candidates [2·pairs, δ] for step k = step + 1, pairs = min(sp_avg, remaining // 2)."""
        pairs = min(self.sp_avg, remaining // 2)
        if pairs < 1:
            return empty(self.dim, self.w.device)
        ck = ref.c_k(self.step + 1, self.c, self.gamma)
        z = self._draw(pairs, self.step + 1)
        self._pending = (z, ck)
        return ref.antithetic_candidates(self.w, z, ck)

    def _draw(self, pairs: int, k: int) -> torch.Tensor:
        """z [pairs, δ] of step k."""
        if self.perturbation == "philox":
            from zipfast.ops.perturb import perturb

            return perturb(self.seed, k, pairs, self.dim, device=self.w.device)
        return ref.segmented_uniform(pairs, self.dim, self.generator).to(self.w.device, self.w.dtype)

    def tell(self, losses: torch.Tensor, accs: torch.Tensor | None = None) -> dict:
        """losses [2·pairs] → statistics: loss and train_acc (mean over the last pair), a_k,
        c_k, grad_norm (‖ĝ‖ before clipping), clipped."""
        if self._pending is None:
            raise RuntimeError("tell() called without a preceding ask()")
        z, ck = self._pending
        q = z.shape[0]
        self._expect(losses, 2 * q)
        k = self.step + 1
        ak = ref.a_k(k, self.a, self.o, self.alpha)
        g = ref.spsa_estimate(losses[:q], losses[q:], z, ck)
        clipped = torch.zeros((), dtype=torch.bool, device=g.device)
        if self.opt_type == "spsa-clip":
            d, clipped = ref.clip_to_intrinsic_dim(g)
        elif self.opt_type == "spsa-gc":
            d, self.momentum = ref.gc_direction(g, self.momentum, self.b1, k)
        else:
            d = g
        self.w = self.w - ak * d
        self.step = k
        self._pending = None
        stats = {"loss": float((losses[q - 1] + losses[2 * q - 1]) / 2)}
        if accs is not None:
            stats["train_acc"] = float((accs[q - 1] + accs[2 * q - 1]) / 2)
        stats.update(a_k=ak, c_k=ck, grad_norm=float(torch.linalg.vector_norm(g)), clipped=bool(clipped))
        return stats

    def state_dict(self) -> dict:
        return {"opt_type": self.opt_type, "perturbation": self.perturbation, "sp_avg": self.sp_avg, "dim": self.dim,
                "spsa_params": (self.o, self.c, self.a, self.alpha, self.gamma), "moms": self.b1,
                "step": self.step, "w": self.w.cpu(),
                "momentum": None if self.momentum is None else self.momentum.cpu(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict, device="cpu") -> None:
        sd = {"perturbation": "official", **sd}  # checkpoints from before the counter-based stream
        self._check_settings(sd, self.state_dict(), ("opt_type", "perturbation", "sp_avg", "dim", "spsa_params", "moms"))
        self.step = int(sd["step"])
        self.w = sd["w"].to(device)
        self.momentum = None if sd["momentum"] is None else sd["momentum"].to(device)
        self.generator.set_state(sd["generator"])
        self._pending = None
