// SPSA update in one block: regenerate z from the counters, ĝ, ‖ĝ‖ (block reduction),
// clip / momentum, w ← w − a_k·d. Statistics [a_k, c_k, ‖ĝ‖, clipped, loss] stay on the
// device (no host synchronisation). a_k and c_k are device scalars computed from the
// step counter (zipfast/ops/spsa_update/reference.py: schedules).
#include <cuda_runtime.h>

#include "launch.h"
#include "zipfast/spsa_math.h"

namespace zipfast {

constexpr int kThreads = 1024;

__global__ void spsa_update_kernel(float* w_out, float* m_out, float* stats, const float* w, const float* m_in,
                                   const float* losses, const int64_t* seed_p, const int64_t* step_p,
                                   const float* ak_p, const float* ck_p, uint32_t stream_id, int dist, int q,
                                   int dim, int mode, float b1) {
  __shared__ float red[kThreads];
  const uint32_t seed = static_cast<uint32_t>(*seed_p & 0xFFFFFFFF);
  const int64_t k = *step_p;
  const uint32_t step = static_cast<uint32_t>(k & 0xFFFFFFFF);
  const float ak = *ak_p, ck = *ck_p, two_ck = fmul(2.0f, ck);
  float part = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float g = ghat_element(losses, q, two_ck, seed, stream_id, step, static_cast<uint32_t>(i), dist);
    w_out[i] = g;  // staged: the norm is needed before the update
    part = fadd(part, fmul(g, g));
  }
  red[threadIdx.x] = part;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) red[threadIdx.x] = fadd(red[threadIdx.x], red[threadIdx.x + s]);
    __syncthreads();
  }
  const float norm = fsqrt(red[0]);
  const float bound = sqrtf(static_cast<float>(dim));
  const bool clipped = mode == kSpsaClip && norm >= bound;
  const float f = clipped ? fdiv(bound, norm) : 1.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float mn;
    float d = direction_element(w_out[i], f, mode, b1, m_in[i], k <= 1, &mn);
    m_out[i] = mn;
    w_out[i] = update_element(w[i], ak, d);
  }
  if (threadIdx.x == 0) {
    stats[0] = ak;
    stats[1] = ck;
    stats[2] = norm;
    stats[3] = clipped ? 1.0f : 0.0f;
    stats[4] = fmul(fadd(losses[q - 1], losses[2 * q - 1]), 0.5f);
  }
}

int launch_spsa_update(float* w_out, float* m_out, float* stats, const float* w, const float* m_in,
                       const float* losses, const int64_t* seed, const int64_t* step, const float* ak,
                       const float* ck, uint32_t stream_id, int dist, int q, int dim, int mode, float b1,
                       void* stream) {
  spsa_update_kernel<<<1, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      w_out, m_out, stats, w, m_in, losses, seed, step, ak, ck, stream_id, dist, q, dim, mode, b1);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace zipfast
