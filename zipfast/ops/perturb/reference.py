"""Counter-based perturbations: Philox4x32-10 and its maps to floats, in plain PyTorch.

This module is the truth for `zipfast.ops.perturb`; the Triton kernel (`triton.py`) and
the CUDA kernel (`csrc/include/zipfast/philox.h`, `perturb_math.h`) follow it bit for bit.

The stream (defined once, here)
-------------------------------
One Philox4x32-10 block per coordinate (Salmon et al. 2011, the generator of cuRAND's
`curand_init(Philox4_32_10)` and Triton's `tl.randint4x`):

    key     (k0, k1)          = (seed mod 2^32, stream)
    counter (c0, c1, c2, c3)  = (coordinate i, perturbation j, step, 0)
    output  (r0, r1, r2, r3)  = philox4x32_10(counter, key)

so z[j, i] of step `step` depends only on (seed, stream, step, j, i): nothing is stored,
any implementation regenerates it anywhere. The four output words have fixed roles:

    segmented uniform (ZIP)   |z| = ((r0 >> 9) + 2^23) · 2^-24   ∈ [0.5, 1), 2^23 levels
                              sign = − iff bit 31 of r1 is set
    Rademacher                ±1 with the same sign bit (r1 bit 31)
    Gaussian (Box–Muller)     u1 = ((r2 >> 8) + 1) · 2^-24 ∈ (0, 1]
                              u2 =  (r3 >> 8)      · 2^-24 ∈ [0, 1)
                              z  = sqrt(−2 ln u1) · cos(2π u2)

The uniforms are exact in float32 (integers < 2^24 times a power of two), so the
segmented-uniform and Rademacher values are identical on every IEEE machine. ln and cos
are NOT taken from a math library (libm, CUDA and Triton differ in the last bit): they
are fixed float32 polynomials below, evaluated with correctly rounded +, −, ×, ÷ and
sqrt only, in a fixed order and without fused multiply-add, so the Gaussian is
bit-identical too. Its error against exact Box–Muller on the same (u1, u2) is below
GAUSSIAN_MAX_ULP = 6 float32 ulp of the exact value for every one of the 2^48 pairs: over all
2^24 values of each, the radius sqrt(−2 ln u1) is within 2.63·2^-24 and cos(2π u2) within
2.84·2^-24 relative, and the product adds ½ ulp (checked exhaustively in
tests/ops/test_perturb.py). Sampled, 20,000,000 draws (seed 1, steps 1–20) reach 4.18 ulp;
0.59 % of draws are above 2 ulp and 0.008 % above 3.
"""

from __future__ import annotations

import torch

GAUSSIAN_MAX_ULP = 6  # proven bound of `gaussian` against exact Box–Muller (module docstring)

MASK32 = 0xFFFFFFFF
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers (Random123)
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
ROUNDS = 10
DISTRIBUTIONS = ("segmented", "gaussian", "rademacher")
DIST_CODES = {name: i for i, name in enumerate(DISTRIBUTIONS)}  # the kernels' integer codes

# float32 constants of the Gaussian map (exact float32 values, written to round-trip).
LN2_HI, LN2_LO = 0.693359375, -0.000212194442
SQRT2 = 1.41421354
TWO_PI = 6.28318548
INV3, INV5, INV7, INV9, INV11 = 0.333333343, 0.200000003, 0.142857149, 0.111111112, 0.0909090936
C2, C4, C6, C8, C10 = -0.5, 0.0416666679, -0.00138888892, 2.48015876e-05, -2.755732e-07
S3, S5, S7, S9 = -0.166666672, 0.00833333377, -0.000198412701, 2.75573188e-06


def _mulhilo(a: torch.Tensor, m: int):
    """(hi, lo) 32-bit words of a·m for a in [0, 2^32) held in int64 (no int64 overflow)."""
    m_lo, m_hi = m & 0xFFFF, m >> 16
    p_lo = a * m_lo                        # < 2^48
    p_hi = a * m_hi                        # < 2^48; a·m = p_hi·2^16 + p_lo
    low = p_lo + ((p_hi & 0xFFFF) << 16)   # < 2^49
    return (p_hi >> 16) + (low >> 32), low & MASK32


def philox4x32(counter: torch.Tensor, key: torch.Tensor, rounds: int = ROUNDS) -> torch.Tensor:
    """Philox4x32-R: counter [..., 4], key [..., 2] (int64 holding uint32) → [..., 4] int64."""
    c0, c1, c2, c3 = counter.to(torch.int64).unbind(-1)
    k0, k1 = key.to(torch.int64).unbind(-1)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack([c0, c1, c2, c3], -1)


def words(seed, stream: int, step, q: int, dim: int, device=None) -> torch.Tensor:
    """The Philox outputs of one step: [q, dim, 4] int64 (uint32 values).

    seed, step: ints or integer tensors (0-dim or [1]) — tensors stay on their device (no sync).
    """
    if isinstance(step, torch.Tensor):
        device = step.device
    i = torch.arange(dim, dtype=torch.int64, device=device).view(1, dim)
    j = torch.arange(q, dtype=torch.int64, device=device).view(q, 1)
    step_t = torch.as_tensor(step, dtype=torch.int64, device=device).reshape(()) & MASK32
    seed_t = torch.as_tensor(seed, dtype=torch.int64, device=device).reshape(()) & MASK32
    shape = (q, dim)
    counter = torch.stack([i.expand(shape), j.expand(shape), step_t.expand(shape),
                           torch.zeros(shape, dtype=torch.int64, device=device)], -1)
    key = torch.stack([seed_t.expand(shape), torch.full(shape, stream & MASK32, dtype=torch.int64,
                                                          device=device)], -1)
    return philox4x32(counter, key)


# --------------------------------------------------------------------------- maps


def _div_rn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 a / b (via float64: exact, double rounding is harmless here)."""
    return (a.double() / b.double()).float()


def _sqrt_rn(a: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 sqrt: torch's vectorised CPU sqrt is not (last-bit errors)."""
    return torch.sqrt(a.double()).float()


def uniform24(r: torch.Tensor) -> torch.Tensor:
    """(r >> 8) · 2^-24 ∈ [0, 1), float32, exact."""
    return (r >> 8).to(torch.float32) * 2.0 ** -24


def segmented(r0: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    """ZIP's segmented uniform: |z| ∈ [0.5, 1) from r0, sign from bit 31 of r1."""
    mag = ((r0 >> 9) + (1 << 23)).to(torch.float32) * 2.0 ** -24
    return torch.where((r1 >> 31) == 1, -mag, mag)


def rademacher(r1: torch.Tensor) -> torch.Tensor:
    """±1 from bit 31 of r1 (set → −1)."""
    return 1.0 - 2.0 * (r1 >> 31).to(torch.float32)


def _horner(x: torch.Tensor, coeffs) -> torch.Tensor:
    """c0 + x·(c1 + x·(… + x·c_n)) in float32, in this order (the kernels round in the same order)."""
    p = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        p = c + x * p
    return p
def log_unit(u: torch.Tensor) -> torch.Tensor:
    """ln u for float32 u ∈ (0, 1] by the fixed polynomial (see the module docstring)."""
    bits = u.view(torch.int32)
    e = ((bits >> 23) & 0xFF) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)  # u = m · 2^e, m ∈ [1, 2)
    big = m > SQRT2
    m = torch.where(big, m * 0.5, m)                           # m ∈ [√½, √2]
    e = torch.where(big, e + 1, e).to(torch.float32)
    s = _div_rn(m - 1.0, m + 1.0)
    lnm = (s + s) * _horner(s * s, (1.0, INV3, INV5, INV7, INV9, INV11))
    return e * LN2_HI + (e * LN2_LO + lnm)


def cos_2pi(u: torch.Tensor) -> torch.Tensor:
    """cos(2π u) for float32 u ∈ [0, 1) by exact reduction to [0, π/4] and fixed polynomials."""
    a = (u - 0.5).abs()                                  # cos(2πu) = −cos(2πa)
    hi = a > 0.25
    b = torch.where(hi, 0.5 - a, a)                      # b ∈ [0, 1/4]
    sgn = torch.where(hi, 1.0, -1.0)
    sw = b > 0.125
    x = torch.where(sw, 0.25 - b, b)                     # cos(2πb) = sin(2π(1/4 − b))
    th = x * TWO_PI
    t2 = th * th
    c = _horner(t2, (1.0, C2, C4, C6, C8, C10))
    s = th * _horner(t2, (1.0, S3, S5, S7, S9))
    return sgn * torch.where(sw, s, c)


def gaussian(r2: torch.Tensor, r3: torch.Tensor) -> torch.Tensor:
    """Box–Muller from words r2, r3: sqrt(−2 ln u1) · cos(2π u2)."""
    u1 = ((r2 >> 8) + 1).to(torch.float32) * 2.0 ** -24
    u2 = uniform24(r3)
    return _sqrt_rn(-2.0 * log_unit(u1)) * cos_2pi(u2)


def from_words(w: torch.Tensor, dist: str) -> torch.Tensor:
    """Philox words [..., 4] → float32 perturbation [...] of distribution `dist`."""
    r0, r1, r2, r3 = w.unbind(-1)
    if dist == "segmented":
        return segmented(r0, r1)
    if dist == "gaussian":
        return gaussian(r2, r3)
    if dist == "rademacher":
        return rademacher(r1)
    raise ValueError(f"unknown perturbation distribution {dist!r}; choose one of {', '.join(DISTRIBUTIONS)}")


def perturb(seed, stream: int, step, q: int, dim: int, dist: str = "segmented", device=None) -> torch.Tensor:
    """z [q, dim] float32 of step `step`: z[j, i] from Philox block (i, j, step, 0) keyed (seed, stream)."""
    return from_words(words(seed, stream, step, q, dim, device), dist)
