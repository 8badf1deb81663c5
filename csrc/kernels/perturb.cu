#include <cuda_runtime.h>

#include "launch.h"
#include "zipfast/perturb_math.h"

namespace zipfast {

__global__ void perturb_kernel(float* out, const int64_t* seed, const int64_t* step, uint32_t stream_id,
                               int dim, int dist) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  int j = blockIdx.y;
  if (i >= dim) return;
  uint32_t s = static_cast<uint32_t>(*seed & 0xFFFFFFFF), k = static_cast<uint32_t>(*step & 0xFFFFFFFF);
  out[static_cast<int64_t>(j) * dim + i] = z_at(s, stream_id, k, static_cast<uint32_t>(j), static_cast<uint32_t>(i), dist);
}

int launch_perturb(float* out, const int64_t* seed, const int64_t* step, uint32_t stream_id, int q, int dim,
                   int dist, void* stream) {
  dim3 grid((dim + 255) / 256, q);
  perturb_kernel<<<grid, 256, 0, static_cast<cudaStream_t>(stream)>>>(out, seed, step, stream_id, dim, dist);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace zipfast
