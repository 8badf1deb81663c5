"""The SPSA update with counter-regenerated perturbations, the readable truth.

Given the 2q losses [L⁺_0..L⁺_{q-1}, L⁻_0..L⁻_{q-1}] of step k (1-based):

    z      = perturb(seed, stream, k) [q, δ]          (regenerated, never stored)
    ĝ      = mean_j (L⁺_j − L⁻_j) / (2 c_k z_j)        (zipfast.reference.spsa_estimate)
    d      = ĝ                      "spsa"
             clip ĝ at √δ           "spsa-clip" (ZIP)   (zipfast.reference.clip_to_intrinsic_dim)
             ĝ + b1·m, m ← ĝ (k=1) or b1·m + ĝ          "spsa-gc"
    w_new  = w − a_k·d
    stats  = [a_k, c_k, ‖ĝ‖, clipped, (L⁺_{q-1} + L⁻_{q-1}) / 2]   float32 [5]

a_k = a / (k + o)^α and c_k = c / k^γ come from `schedules(k)`, computed on k's device.
"""

from __future__ import annotations

import torch

from zipfast import reference as ref
from zipfast.ops.perturb import reference as perturb_ref

MODES = ("spsa", "spsa-clip", "spsa-gc")
MODE_CODES = {"spsa": 0, "spsa-clip": 1, "spsa-gc": 2}
STATS = ("a_k", "c_k", "grad_norm", "clipped", "loss")


def schedules(step: torch.Tensor, a: float, o: float, alpha: float, c: float, gamma: float):
    """(a_k, c_k) float32 [] on step's device for the 1-based step k (int64 tensor): no host sync.

    Evaluated in float64 then rounded, as the host formulas (zipfast.reference.a_k / c_k) are."""
    k = step.to(torch.float64).reshape(())
    return (a / (k + o) ** alpha).float(), (c / k ** gamma).float()


def spsa_update(w: torch.Tensor, momentum: torch.Tensor, losses: torch.Tensor, seed, step: torch.Tensor,
                ak: torch.Tensor, ck: torch.Tensor, stream: int = 0, dist: str = "segmented",
                mode: str = "spsa-clip", b1: float = 0.8):
    """w [δ], momentum [δ] (zeros before the first spsa-gc step), losses [2q], step k [] →
    (w_new [δ], momentum_new [δ], stats [5])."""
    q = losses.shape[0] // 2
    z = perturb_ref.perturb(seed, stream, step, q, w.shape[-1], dist, device=w.device)
    g = ref.spsa_estimate(losses[:q].float(), losses[q:].float(), z, ck)
    norm = torch.linalg.vector_norm(g)
    clipped = torch.zeros((), dtype=torch.bool, device=w.device)
    m_new = momentum
    if mode == "spsa-clip":
        d, clipped = ref.clip_to_intrinsic_dim(g)
    elif mode == "spsa-gc":
        m_new = torch.where(step.reshape(()) <= 1, g, b1 * momentum + g)
        d = g + b1 * m_new
    else:
        d = g
    w_new = w - ak * d
    stats = torch.stack([ak.float(), ck.float(), norm, clipped.float(),
                         (losses[q - 1] + losses[2 * q - 1]).float() / 2])
    return w_new, m_new.clone(), stats
