// C++ gated_residual: x + y * gate in float32, stored in x's dtype, one token per iteration.
#include <torch/library.h>

#include "checks.h"
#include "rows.h"

namespace wan_kernels {
namespace {

template <typename X, typename Y>
void gated_residual_kernel(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, X* out) {
  const int64_t length = x.size(1), width = x.size(2);
  const Rows<X> xs(x);
  const Rows<float> gates(gate);
  const Rows<Y> ys(y);
  at::parallel_for(0, x.size(0) * length, row_grain(width), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / length, t = row % length;
      const X* xr = xs.row(b, t);
      const Y* yr = ys.row(b, t);
      const float* gr = gates.row(b, t);
      X* o = out + row * width;
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) {
        o[c] = from_float<X>(static_cast<float>(xr[c]) + static_cast<float>(yr[c]) * gr[c]);
      }
    }
  });
}

at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
  checks::gated_residual(at::kCPU, x, y, gate);
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (out.numel() == 0) return out;
  WAN_DISPATCH_FLOATS(x.scalar_type(), "gated_residual", [&] {
    using X = scalar_t;
    WAN_DISPATCH_FLOATS(y.scalar_type(), "gated_residual", [&] {
      gated_residual_kernel<X, scalar_t>(x, y, gate, out.mutable_data_ptr<X>());
    });
  });
  return out;
}

}  // namespace
}  // namespace wan_kernels

TORCH_LIBRARY_FRAGMENT(wan_kernels_cpp, m) {
  m.def("gated_residual", &wan_kernels::gated_residual);
}
