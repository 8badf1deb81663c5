// Host-only build of the kernels' per-element math (module zipfast._zipfast_host):
// the same __host__ __device__ inline functions the CUDA kernels call, compiled by the
// host compiler with -ffp-contract=off and no CUDA runtime, so pytest can check them
// against the PyTorch references on a machine without a GPU (tests/ops/).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <vector>

#include "zipfast/fastfood.h"
#include "zipfast/spsa_math.h"

namespace py = pybind11;
using namespace zipfast;
using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

static std::array<uint32_t, 4> philox(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  std::array<uint32_t, 4> out;
  philox4x32_10(ctr.data(), key.data(), out.data());
  return out;
}

static F32 perturb(uint32_t seed, uint32_t stream, uint32_t step, int q, int dim, int dist) {
  F32 out({q, dim});
  auto o = out.mutable_unchecked<2>();
  for (int j = 0; j < q; ++j)
    for (int i = 0; i < dim; ++i) o(j, i) = z_at(seed, stream, step, j, i, dist);
  return out;
}

template <float (*fn)(float)>
static F32 map1(F32 x) {
  F32 out(x.request().shape);
  const float* a = x.data();
  float* o = out.mutable_data();
  for (py::ssize_t t = 0; t < x.size(); ++t) o[t] = fn(a[t]);
  return out;
}

static F32 fwht(F32 x) {  // over the last dim
  F32 out(x.request().shape);
  const int n = static_cast<int>(x.shape(x.ndim() - 1));
  std::copy(x.data(), x.data() + x.size(), out.mutable_data());
  for (py::ssize_t row = 0; row < x.size() / n; ++row) fwht_serial(out.mutable_data() + row * n, n);
  return out;
}

// The fused candidates op, serially, from the kernel's per-element functions.
static F32 candidates(F32 w, uint32_t seed, uint32_t stream, uint32_t step, float ck, int dist, int q, int r,
                      F32 ctx0, F32 B, I64 Pi, F32 G, F32 divisor, float sqrt_d_over_l) {
  const int m = static_cast<int>(ctx0.shape(0)), D = static_cast<int>(ctx0.shape(1)), L = static_cast<int>(B.shape(1));
  const int dt = (static_cast<int>(w.size()) - m * r - r) / (r + 1);
  ZipLayout lay{m, r, dt};
  F32 out({2 * q, m, D});
  float* o = out.mutable_data();
  std::vector<float> x(L), y(L);
  for (int k = 0; k < 2 * q; ++k)
    for (int i = 0; i < m; ++i) {
      const int64_t row = static_cast<int64_t>(i) * L;
      for (int t = 0; t < L; ++t) {
        float zt = t < dt ? lowrank_element(w.data(), lay, i, t, k, q, ck, seed, stream, step, dist) : 0.0f;
        x[t] = fmul(zt, B.data()[row + t]);
      }
      fwht_serial(x.data(), L);
      for (int t = 0; t < L; ++t) y[t] = fmul(x[Pi.data()[row + t]], G.data()[row + t]);
      fwht_serial(y.data(), L);
      const float scale = fmul(divisor.data()[i], sqrt_d_over_l);
      for (int t = 0; t < D; ++t)
        o[(static_cast<int64_t>(k) * m + i) * D + t] = fadd(ctx0.data()[static_cast<int64_t>(i) * D + t], fdiv(y[t], scale));
    }
  return out;
}

// The SPSA update, serially: returns (w_new, m_new, stats [a_k, c_k, ‖ĝ‖, clipped, loss]).
static py::tuple spsa_update(F32 w, F32 m_in, F32 losses, uint32_t seed, uint32_t stream, int64_t step, float ak,
                             float ck, int dist, int mode, float b1) {
  const int dim = static_cast<int>(w.size()), q = static_cast<int>(losses.size() / 2);
  std::vector<float> g(dim);
  float sq = 0.0f;
  for (int i = 0; i < dim; ++i) {
    g[i] = ghat_element(losses.data(), q, fmul(2.0f, ck), seed, stream, static_cast<uint32_t>(step), i, dist);
    sq = fadd(sq, fmul(g[i], g[i]));
  }
  const float norm = fsqrt(sq), bound = std::sqrt(static_cast<float>(dim));
  const bool clipped = mode == kSpsaClip && norm >= bound;
  const float f = clipped ? fdiv(bound, norm) : 1.0f;
  F32 w_out({dim}), m_out({dim}), stats({5});
  for (int i = 0; i < dim; ++i) {
    float mn;
    float d = direction_element(g[i], f, mode, b1, m_in.data()[i], step <= 1, &mn);
    m_out.mutable_data()[i] = mn;
    w_out.mutable_data()[i] = update_element(w.data()[i], ak, d);
  }
  float* s = stats.mutable_data();
  s[0] = ak; s[1] = ck; s[2] = norm; s[3] = clipped ? 1.0f : 0.0f;
  s[4] = fmul(fadd(losses.data()[q - 1], losses.data()[2 * q - 1]), 0.5f);
  return py::make_tuple(w_out, m_out, stats);
}

PYBIND11_MODULE(_zipfast_host, m) {
  m.doc() = "host (CPU) build of the zipfast CUDA kernels' per-element math, for tests";
  m.def("philox4x32_10", &philox);
  m.def("perturb", &perturb);
  m.def("log_unit", &map1<log_unit>);
  m.def("cos_2pi", &map1<cos_2pi>);
  m.def("fwht", &fwht);
  m.def("candidates", &candidates);
  m.def("spsa_update", &spsa_update);
}
