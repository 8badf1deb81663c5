// Per-element math of the fused candidates op (zipfast/ops/candidates/reference.py):
// antithetic candidate coordinates, ZIP's low-rank reconstruction and the Fastfood
// Walsh–Hadamard butterfly. Parameter layout of w [δ]: U [m, r], s [r], V [d_t, r],
// shared_V [d_t] (the official parameters_to_vector order).
#pragma once
#include "perturb_math.h"

namespace zipfast {

struct ZipLayout {
  int m, r, dt;
  ZF_HD int u(int i, int rr) const { return i * r + rr; }
  ZF_HD int s(int rr) const { return m * r + rr; }
  ZF_HD int v(int t, int rr) const { return m * r + r + t * r + rr; }
  ZF_HD int sv(int t) const { return m * r + r + dt * r + t; }
  ZF_HD int dim() const { return m * r + r + dt * r + dt; }
};

// Coordinate `idx` of candidate k: w + c·z_j (k < q) or w − c·z_j (k ≥ q), j = k mod q.
ZF_HD float candidate_coord(const float* w, int idx, int k, int q, float ck, uint32_t seed,
                            uint32_t stream, uint32_t step, int dist) {
  int j = k < q ? k : k - q;
  float t = fmul(ck, z_at(seed, stream, step, static_cast<uint32_t>(j), static_cast<uint32_t>(idx), dist));
  return k < q ? fadd(w[idx], t) : fsub(w[idx], t);
}

// Z[i, t] = Σ_rr (U[i,rr]·s[rr])·V[t,rr] + shared_V[t] of candidate k (t < d_t).
ZF_HD float lowrank_element(const float* w, const ZipLayout& lay, int i, int t, int k, int q, float ck,
                            uint32_t seed, uint32_t stream, uint32_t step, int dist) {
  float acc = 0.0f;
  for (int rr = 0; rr < lay.r; ++rr) {
    float u = candidate_coord(w, lay.u(i, rr), k, q, ck, seed, stream, step, dist);
    float s = candidate_coord(w, lay.s(rr), k, q, ck, seed, stream, step, dist);
    float v = candidate_coord(w, lay.v(t, rr), k, q, ck, seed, stream, step, dist);
    acc = fadd(acc, fmul(fmul(u, s), v));
  }
  return fadd(acc, candidate_coord(w, lay.sv(t), k, q, ck, seed, stream, step, dist));
}

// The Walsh–Hadamard butterfly: (a, b) → (a + b, a − b).
ZF_HD void butterfly(float* a, float* b) {
  float x = *a, y = *b;
  *a = fadd(x, y);
  *b = fsub(x, y);
}

// Unnormalised in-place WHT of x[0..n) (n a power of two), serial (host tests, tiny n).
ZF_HD void fwht_serial(float* x, int n) {
  for (int h = 1; h < n; h *= 2)
    for (int i = 0; i < n; i += 2 * h)
      for (int t = i; t < i + h; ++t) butterfly(&x[t], &x[t + h]);
}

}  // namespace zipfast
