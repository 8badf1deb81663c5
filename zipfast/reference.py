"""The reference semantics of ZIP, as pure functions of explicit tensors.

Every fast path in zipfast (the batched engine, future Triton/CUDA kernels) and any
outside implementation is checked against these functions. Nothing here holds state or
touches a global RNG: the parameter vector, the Fastfood randomness, ctx0, the
perturbations and the step number are all arguments. Shapes use

    m  context tokens         D  text width           L = 2^ceil(log2 D)
    d  intrinsic dimension    d_t = d // m            r  rank
    δ  = m·r + r + d_t·r + d_t (length of the flat parameter vector w)
    q  perturbation pairs per step (sp_avg)           K  candidates

Semantics follow the ZIP paper and its official code (LOG-postech/ZIP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# --------------------------------------------------------------------------- dimensions


def token_intrinsic_dim(intrinsic_dim: int, n_ctx: int) -> int:
    """d_t = d // m: the per-token intrinsic size (the official code floors)."""
    return intrinsic_dim // n_ctx


def token_dim_of(delta: int, n_ctx: int, rank: int) -> int:
    """d_t of a parameter vector of length δ (the inverse of `param_dim` in d_t)."""
    return (delta - n_ctx * rank - rank) // (rank + 1)


def param_dim(n_ctx: int, intrinsic_dim: int, rank: int) -> int:
    """δ, the length of w = [U (m×r), s (r), V (d_t×r), shared_V (d_t)]."""
    d_t = token_intrinsic_dim(intrinsic_dim, n_ctx)
    return n_ctx * rank + rank + d_t * rank + d_t


def split_params(w: torch.Tensor, n_ctx: int, d_t: int, rank: int):
    """Views of w[..., δ] as (U [..., m, r], s [..., r], V [..., d_t, r], shared_V [..., d_t]).

    The flat order is the official `parameters_to_vector` order of IntrinsicLearner.
    """
    sizes = (n_ctx * rank, rank, d_t * rank, d_t)
    if w.shape[-1] != sum(sizes):
        raise ValueError(f"parameter vector has length {w.shape[-1]}, expected δ = {sum(sizes)}")
    u, s, v, sv = torch.split(w, sizes, dim=-1)
    lead = w.shape[:-1]
    return u.reshape(*lead, n_ctx, rank), s, v.reshape(*lead, d_t, rank), sv


def init_params(n_ctx: int, intrinsic_dim: int, rank: int, generator: torch.Generator,
                dtype=torch.float32) -> torch.Tensor:
    """w0 [δ]: U = 0, s = 1, V ~ N(0, 1), shared_V = 0 (the official initialisation)."""
    d_t = token_intrinsic_dim(intrinsic_dim, n_ctx)
    u = torch.zeros(n_ctx * rank, dtype=dtype)
    s = torch.ones(rank, dtype=dtype)
    v = torch.randn(d_t * rank, generator=generator, dtype=dtype)
    sv = torch.zeros(d_t, dtype=dtype)
    return torch.cat([u, s, v, sv])


# --------------------------------------------------------------------------- Fastfood


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh–Hadamard transform over the last dim (a power of two).

    Equals x @ H with H the Sylvester Hadamard matrix (symmetric, entries ±1).
    """
    n = x.shape[-1]
    if n & (n - 1) or n == 0:
        raise ValueError(f"Walsh–Hadamard size must be a power of two, got {n}")
    lead = x.shape[:-1]
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        y = y.reshape(-1, n // (2 * h), 2, h)
        a, b = y[:, :, 0], y[:, :, 1]
        y = torch.stack((a + b, a - b), dim=2)
        h *= 2
    return y.reshape(*lead, n)


@dataclass
class FastfoodParams:
    """The fixed randomness of m per-token Fastfood projections R^{d_t} → R^D.

    B [m, L] (±1), Pi [m, L] (a permutation per token), G [m, L] (N(0, 1)),
    divisor [m] = sqrt(L · Σ G²).
    """

    B: torch.Tensor
    Pi: torch.Tensor
    G: torch.Tensor
    divisor: torch.Tensor
    D: int

    @property
    def L(self) -> int:
        return self.B.shape[-1]

    @property
    def n_ctx(self) -> int:
        return self.B.shape[0]

    def to(self, device=None, dtype=None) -> "FastfoodParams":
        fd = dtype or self.G.dtype
        return FastfoodParams(self.B.to(device, fd), self.Pi.to(device), self.G.to(device, fd),
                              self.divisor.to(device, fd), self.D)

    def state_dict(self) -> dict:
        return {"B": self.B, "Pi": self.Pi, "G": self.G, "divisor": self.divisor, "D": self.D}

    @classmethod
    def from_state_dict(cls, sd: dict) -> "FastfoodParams":
        return cls(sd["B"], sd["Pi"], sd["G"], sd["divisor"], int(sd["D"]))


def draw_fastfood(n_ctx: int, D: int, generator: torch.Generator) -> FastfoodParams:
    """Draw the Fastfood randomness of n_ctx tokens (token by token: B, Π, G)."""
    L = 1 << max(0, math.ceil(math.log2(D)))
    Bs, Pis, Gs = [], [], []
    for _ in range(n_ctx):
        Bs.append(torch.randint(0, 2, (L,), generator=generator).float() * 2 - 1)
        Pis.append(torch.randperm(L, generator=generator))
        Gs.append(torch.randn(L, generator=generator))
    G = torch.stack(Gs)
    divisor = torch.sqrt(L * (G * G).sum(-1))
    return FastfoodParams(torch.stack(Bs), torch.stack(Pis), G, divisor, D)


def fastfood_project(x: torch.Tensor, ff: FastfoodParams) -> torch.Tensor:
    """Per-token Fastfood: x [..., m, d_t] → [..., m, D].

    F_i(x) = H(G_i ⊙ Π_i(H(B_i ⊙ pad_L(x))))[:D] / (divisor_i · sqrt(D / L)).
    """
    m, d_t = x.shape[-2:]
    L, D = ff.L, ff.D
    if m != ff.n_ctx:
        raise ValueError(f"got {m} token rows but Fastfood randomness for {ff.n_ctx} tokens")
    if d_t > L:
        raise ValueError(f"intrinsic size per token {d_t} exceeds Fastfood length {L}")
    v = torch.nn.functional.pad(x, (0, L - d_t)) * ff.B
    v = fwht(v)
    v = torch.gather(v, -1, ff.Pi.expand(*v.shape[:-1], L))  # y[j] = v[Π[j]]
    v = fwht(v * ff.G)
    scale = ff.divisor * math.sqrt(D / L)
    return v[..., :D] / scale.unsqueeze(-1)


def reconstruct_ctx(w: torch.Tensor, ctx0: torch.Tensor, ff: FastfoodParams, rank: int) -> torch.Tensor:
    """Contexts of a batch of parameter vectors: w [K, δ] → ctx [K, m, D].

    Z = U·diag(s)·Vᵀ + 1·shared_Vᵀ (m × d_t); ctx_i = ctx0_i + F_i(Z_i).
    """
    m = ctx0.shape[0]
    d_t = token_dim_of(w.shape[-1], m, rank)
    u, s, v, sv = split_params(w, m, d_t, rank)
    z = torch.einsum("kmr,kr,kdr->kmd", u, s, v) + sv.unsqueeze(-2)
    return ctx0 + fastfood_project(z, ff)


# --------------------------------------------------------------------------- SPSA


def segmented_uniform(q: int, delta: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """z [q, δ]: |z| ~ U[0.5, 1), sign ± with probability ½ (the official draw order:
    per pair, δ uniforms then δ Bernoulli signs)."""
    out = torch.empty(q, delta, dtype=dtype)
    half = torch.full((delta,), 0.5)
    for j in range(q):
        mag = (torch.rand(delta, generator=generator) + 1) / 2
        neg = torch.bernoulli(half, generator=generator)
        out[j] = torch.where(neg.bool(), -mag, mag)
    return out


def antithetic_candidates(w: torch.Tensor, z: torch.Tensor, c_k) -> torch.Tensor:
    """Candidates [2q, δ]: rows 0..q-1 are w + c_k z_j, rows q..2q-1 are w − c_k z_j."""
    return torch.cat([w + c_k * z, w - c_k * z])


def spsa_estimate(loss_plus: torch.Tensor, loss_minus: torch.Tensor, z: torch.Tensor, c_k) -> torch.Tensor:
    """ĝ [δ] = mean_j (L⁺_j − L⁻_j) / (2 c_k z_j), losses [q], z [q, δ]."""
    return ((loss_plus - loss_minus).unsqueeze(-1) / ((2 * c_k) * z)).mean(0)


def clip_to_intrinsic_dim(g: torch.Tensor):
    """ZIP's intrinsic-dimensional clipping: if ‖g‖ ≥ √δ, g ← g·√δ/‖g‖.

    Returns (g', clipped) with clipped a 0-dim bool tensor (no host sync).
    """
    bound = math.sqrt(g.shape[-1])
    norm = torch.linalg.vector_norm(g)
    clipped = norm >= bound
    return torch.where(clipped, g * (bound / norm), g), clipped


def gc_direction(g: torch.Tensor, momentum: torch.Tensor | None, b1: float, step: int):
    """spsa-gc (BlackVIP): m ← ĝ at step 1, else m ← b1·m + ĝ; direction ĝ + b1·m.

    Returns (direction, new momentum).
    """
    m = g.clone() if step <= 1 or momentum is None else b1 * momentum + g
    return g + b1 * m, m


def a_k(step: int, a: float, o: float, alpha: float) -> float:
    """Step size a / (k + o)^α at step k ≥ 1."""
    return a / (step + o) ** alpha


def c_k(step: int, c: float, gamma: float) -> float:
    """Perturbation scale c / k^γ at step k ≥ 1."""
    return c / step ** gamma


# --------------------------------------------------------------------------- loss


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """exp(logit_scale) · normalise(img) [B, E] @ normalise(txt) [..., C, E]ᵀ → [..., B, C]."""
    img = torch.nn.functional.normalize(image_features, dim=-1)
    txt = torch.nn.functional.normalize(text_features, dim=-1)
    return torch.exp(torch.as_tensor(logit_scale)) * img @ txt.transpose(-1, -2)
