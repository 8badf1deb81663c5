"""Zeroth-order optimisers on flat parameter vectors, in ask/tell form.

An optimiser asks for K candidate vectors and is told their K losses; it never sees the
parameter space or the model. `SPSA` covers the official ZIP family:
"spsa-clip" (ZIP, default), "spsa" (no clipping) and "spsa-gc" (BlackVIP's momentum).
"""

from __future__ import annotations

import torch

from . import reference as ref

OPT_TYPES = ("spsa-clip", "spsa", "spsa-gc")


class SPSA:
    """Antithetic SPSA with segmented-uniform perturbations, averaged over `sp_avg` pairs.

    Step k (1-based) asks K = 2·pairs candidates [w + c_k z_j ; w − c_k z_j] and, told their
    losses, moves w ← w − a_k · direction(ĝ). Perturbations come from a private CPU
    generator, so the trajectory depends only on `seed`, not on the device.
    """

    def __init__(self, dim: int, opt_type: str = "spsa-clip", sp_avg: int = 5,
                 spsa_params=(1.0, 0.01, 0.01, 0.4, 0.1), moms: float = 0.8, seed: int = 0):
        if opt_type not in OPT_TYPES:
            raise ValueError(f"unknown optimiser {opt_type!r}; choose one of {', '.join(OPT_TYPES)}")
        self.dim, self.opt_type, self.sp_avg = dim, opt_type, sp_avg
        self.o, self.c, self.a, self.alpha, self.gamma = (float(v) for v in spsa_params)
        self.b1 = float(moms)
        self.step = 0  # completed steps
        self.momentum: torch.Tensor | None = None
        self.generator = torch.Generator().manual_seed(seed)
        self._pending = None

    def ask(self, w: torch.Tensor, pairs: int | None = None) -> torch.Tensor:
        """Candidates [2·pairs, δ] for step k = self.step + 1 (pairs ≤ sp_avg; the last step of a
        budget may use fewer)."""
        pairs = self.sp_avg if pairs is None else pairs
        if not 1 <= pairs <= self.sp_avg:
            raise ValueError(f"pairs must be in [1, {self.sp_avg}], got {pairs}")
        k = self.step + 1
        ck = ref.c_k(k, self.c, self.gamma)
        z = ref.segmented_uniform(pairs, self.dim, self.generator).to(w.device, w.dtype)
        self._pending = (z, ck)
        return ref.antithetic_candidates(w, z, ck)

    def discard(self) -> None:
        """Forget the last ask() (its losses were unusable); the step counter is unchanged."""
        self._pending = None

    def tell(self, w: torch.Tensor, losses: torch.Tensor):
        """losses [2·pairs] of the asked candidates → (new w [δ], info dict of step statistics)."""
        if self._pending is None:
            raise RuntimeError("tell() called without a preceding ask()")
        z, ck = self._pending
        q = z.shape[0]
        if losses.shape != (2 * q,):
            raise ValueError(f"expected {2 * q} losses, got shape {tuple(losses.shape)}")
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
        w_new = w - ak * d
        self.step = k
        self._pending = None
        info = {"a_k": ak, "c_k": ck, "grad_norm": torch.linalg.vector_norm(g), "clipped": clipped,
                "loss": (losses[q - 1] + losses[2 * q - 1]) / 2}
        return w_new, info

    def state_dict(self) -> dict:
        return {"opt_type": self.opt_type, "sp_avg": self.sp_avg, "dim": self.dim,
                "spsa_params": (self.o, self.c, self.a, self.alpha, self.gamma), "moms": self.b1,
                "step": self.step, "momentum": None if self.momentum is None else self.momentum.cpu(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict, device="cpu"):
        mine = self.state_dict()
        for key in ("opt_type", "sp_avg", "dim", "spsa_params", "moms"):
            theirs = tuple(sd[key]) if isinstance(mine[key], tuple) else sd[key]
            if theirs != mine[key]:
                raise ValueError(f"optimiser state is for {key}={sd[key]!r}, this run has {mine[key]!r}")
        self.step = int(sd["step"])
        self.momentum = None if sd["momentum"] is None else sd["momentum"].to(device)
        self.generator.set_state(sd["generator"])
