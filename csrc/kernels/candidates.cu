// One launch: (w, seed, step, c_k) → the 2q antithetic contexts [2q, m, D].
// Block (token i, candidate k): Z row by the low-rank reconstruction, then Fastfood in
// shared memory (pad, ·B, WHT, Π, ·G, WHT, /scale), + ctx0 (+ pos).
#include <cuda_runtime.h>

#include "launch.h"
#include "zipfast/fastfood.h"

namespace zipfast {

__device__ void block_wht(float* x, int L) {
  for (int h = 1; h < L; h *= 2) {
    for (int p = threadIdx.x; p < L / 2; p += blockDim.x) {
      int blk = p / h, off = p % h;
      int a = blk * 2 * h + off;
      butterfly(&x[a], &x[a + h]);
    }
    __syncthreads();
  }
}

__global__ void candidates_kernel(float* out, const float* w, const int64_t* seed_p, const int64_t* step_p,
                                  const float* ck_p, uint32_t stream_id, int dist, int q, ZipLayout lay, int D,
                                  int L, const float* ctx0, const float* B, const int64_t* Pi, const float* G,
                                  const float* divisor, float sqrt_d_over_l, const float* pos) {
  extern __shared__ float buf[];  // [2L]
  float* x = buf;
  float* y = buf + L;
  const int i = blockIdx.x, k = blockIdx.y;
  const uint32_t seed = static_cast<uint32_t>(*seed_p & 0xFFFFFFFF);
  const uint32_t step = static_cast<uint32_t>(*step_p & 0xFFFFFFFF);
  const float ck = *ck_p;
  const int64_t row = static_cast<int64_t>(i) * L;
  for (int t = threadIdx.x; t < L; t += blockDim.x) {
    float zt = t < lay.dt ? lowrank_element(w, lay, i, t, k, q, ck, seed, stream_id, step, dist) : 0.0f;
    x[t] = fmul(zt, B[row + t]);
  }
  __syncthreads();
  block_wht(x, L);
  for (int t = threadIdx.x; t < L; t += blockDim.x) y[t] = fmul(x[Pi[row + t]], G[row + t]);
  __syncthreads();
  block_wht(y, L);
  const float scale = fmul(divisor[i], sqrt_d_over_l);
  float* o = out + (static_cast<int64_t>(k) * lay.m + i) * D;
  for (int t = threadIdx.x; t < D; t += blockDim.x) {
    float v = fadd(ctx0[static_cast<int64_t>(i) * D + t], fdiv(y[t], scale));
    o[t] = pos ? fadd(v, pos[static_cast<int64_t>(i) * D + t]) : v;
  }
}

int launch_candidates(float* out, const float* w, const int64_t* seed, const int64_t* step, const float* ck,
                      uint32_t stream_id, int dist, int q, int m, int r, int dt, int D, int L,
                      const float* ctx0, const float* B, const int64_t* Pi, const float* G, const float* divisor,
                      float sqrt_d_over_l, const float* pos, void* stream) {
  ZipLayout lay{m, r, dt};
  int threads = L < 1024 ? (L < 32 ? 32 : L) : 1024;
  size_t smem = 2 * static_cast<size_t>(L) * sizeof(float);
  dim3 grid(m, 2 * q);
  candidates_kernel<<<grid, threads, smem, static_cast<cudaStream_t>(stream)>>>(
      out, w, seed, step, ck, stream_id, dist, q, lay, D, L, ctx0, B, Pi, G, divisor, sqrt_d_over_l, pos);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace zipfast
