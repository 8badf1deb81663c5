// Host-side launchers of the CUDA kernels. Pointers are device pointers taken from torch
// tensors on the Python side (zipfast/ops/*/cuda.py); `stream` is the current CUDA stream,
// so launches are captured by CUDA graphs. Each returns a cudaError_t as int (0 = ok).
#pragma once
#include <cstdint>

namespace zipfast {

int launch_perturb(float* out, const int64_t* seed, const int64_t* step, uint32_t stream_id, int q, int dim,
                   int dist, void* stream);

int launch_candidates(float* out, const float* w, const int64_t* seed, const int64_t* step, const float* ck,
                      uint32_t stream_id, int dist, int q, int m, int r, int dt, int D, int L,
                      const float* ctx0, const float* B, const int64_t* Pi, const float* G, const float* divisor,
                      float sqrt_d_over_l, const float* pos, void* stream);

int launch_spsa_update(float* w_out, float* m_out, float* stats, const float* w, const float* m_in,
                       const float* losses, const int64_t* seed, const int64_t* step, const float* ak,
                       const float* ck, uint32_t stream_id, int dist, int q, int dim, int mode, float b1,
                       void* stream);

}  // namespace zipfast
