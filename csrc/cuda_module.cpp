// pybind11 binding of the CUDA kernels (module zipfast._zipfast_cuda). Arguments are raw
// device pointers and the CUDA stream handle as integers: no libtorch headers, so the
// extension compiles in seconds and does not depend on the torch C++ ABI. The Python side
// (zipfast/ops/*/cuda.py) checks shapes, dtypes and devices before calling.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "kernels/launch.h"

namespace py = pybind11;
using zipfast::launch_candidates;
using zipfast::launch_perturb;
using zipfast::launch_spsa_update;

template <typename T>
static T* ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

static void check(int err, const char* what) {
  if (err != 0) throw std::runtime_error(std::string("zipfast CUDA kernel ") + what + " failed: error " + std::to_string(err));
}

PYBIND11_MODULE(_zipfast_cuda, m) {
  m.doc() = "zipfast CUDA kernels (perturb, candidates, spsa_update)";
  m.def("perturb", [](uintptr_t out, uintptr_t seed, uintptr_t step, uint32_t stream_id, int q, int dim, int dist,
                      uintptr_t stream) {
    check(launch_perturb(ptr<float>(out), ptr<const int64_t>(seed), ptr<const int64_t>(step), stream_id, q, dim, dist,
                         ptr<void>(stream)), "perturb");
  });
  m.def("candidates", [](uintptr_t out, uintptr_t w, uintptr_t seed, uintptr_t step, uintptr_t ck, uint32_t stream_id,
                         int dist, int q, int mm, int r, int dt, int D, int L, uintptr_t ctx0, uintptr_t B, uintptr_t Pi,
                         uintptr_t G, uintptr_t divisor, float sqrt_d_over_l, uintptr_t pos, uintptr_t stream) {
    check(launch_candidates(ptr<float>(out), ptr<const float>(w), ptr<const int64_t>(seed), ptr<const int64_t>(step),
                            ptr<const float>(ck), stream_id, dist, q, mm, r, dt, D, L, ptr<const float>(ctx0),
                            ptr<const float>(B), ptr<const int64_t>(Pi), ptr<const float>(G), ptr<const float>(divisor),
                            sqrt_d_over_l, ptr<const float>(pos), ptr<void>(stream)), "candidates");
  });
  m.def("spsa_update", [](uintptr_t w_out, uintptr_t m_out, uintptr_t stats, uintptr_t w, uintptr_t m_in,
                          uintptr_t losses, uintptr_t seed, uintptr_t step, uintptr_t ak, uintptr_t ck,
                          uint32_t stream_id, int dist, int q, int dim, int mode, float b1, uintptr_t stream) {
    check(launch_spsa_update(ptr<float>(w_out), ptr<float>(m_out), ptr<float>(stats), ptr<const float>(w),
                             ptr<const float>(m_in), ptr<const float>(losses), ptr<const int64_t>(seed),
                             ptr<const int64_t>(step), ptr<const float>(ak), ptr<const float>(ck), stream_id, dist, q,
                             dim, mode, b1, ptr<void>(stream)), "spsa_update");
  });
}
