// Per-element math of the SPSA update (zipfast/ops/spsa_update/reference.py).
#pragma once
#include "perturb_math.h"

namespace zipfast {

enum SpsaMode : int { kSpsa = 0, kSpsaClip = 1, kSpsaGc = 2 };

// ĝ_i = mean_j (L⁺_j − L⁻_j) / ((2c)·z_ji); losses = [L⁺_0..L⁺_{q-1}, L⁻_0..L⁻_{q-1}].
ZF_HD float ghat_element(const float* losses, int q, float two_ck, uint32_t seed, uint32_t stream,
                         uint32_t step, uint32_t i, int dist) {
  float acc = 0.0f;
  for (int j = 0; j < q; ++j) {
    float z = z_at(seed, stream, step, static_cast<uint32_t>(j), i, dist);
    acc = fadd(acc, fdiv(fsub(losses[j], losses[q + j]), fmul(two_ck, z)));
  }
  return fdiv(acc, static_cast<float>(q));
}

// Direction and new momentum of one coordinate: clip scale f (1 when not clipping);
// spsa-gc: m ← g (first step) or b1·m + g, d = g + b1·m.
ZF_HD float direction_element(float g, float f, int mode, float b1, float m_old, bool first, float* m_new) {
  if (mode == kSpsaGc) {
    float m = first ? g : fadd(fmul(b1, m_old), g);
    *m_new = m;
    return fadd(g, fmul(b1, m));
  }
  *m_new = m_old;
  return mode == kSpsaClip ? fmul(g, f) : g;
}

// w ← w − a_k·d.
ZF_HD float update_element(float w, float ak, float d) { return fsub(w, fmul(ak, d)); }

}  // namespace zipfast
