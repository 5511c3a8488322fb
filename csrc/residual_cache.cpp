// C++ residual_apply (x + residual) and residual_capture (out - inp) in float32, row by row.
#include <torch/library.h>

#include "checks.h"
#include "rows.h"

namespace wan_kernels {
namespace {

template <bool SUBTRACT, typename A, typename B>
void residual_kernel(const at::Tensor& a, const at::Tensor& b, float* out) {
  const int64_t width = a.size(1);
  const A* ad = a.const_data_ptr<A>();
  const B* bd = b.const_data_ptr<B>();
  const int64_t a_stride = a.stride(0), b_stride = b.stride(0);
  at::parallel_for(0, a.size(0), row_grain(width), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const A* ar = ad + row * a_stride;
      const B* br = bd + row * b_stride;
      float* o = out + row * width;
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) {
        const float av = static_cast<float>(ar[c]), bv = static_cast<float>(br[c]);
        o[c] = SUBTRACT ? av - bv : av + bv;
      }
    }
  });
}

template <bool SUBTRACT>
at::Tensor residual(const at::Tensor& a_in, const at::Tensor& b_in) {
  at::Tensor out = at::empty(a_in.sizes(), a_in.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  // Rows of the last dim (a view when the strides allow); the checks made sure channels are contiguous.
  const at::Tensor a = a_in.reshape({-1, a_in.size(-1)});
  const at::Tensor b = b_in.reshape({-1, b_in.size(-1)});
  WAN_DISPATCH_FLOATS(a.scalar_type(), "residual", [&] {
    using A = scalar_t;
    WAN_DISPATCH_FLOATS(b.scalar_type(), "residual", [&] {
      residual_kernel<SUBTRACT, A, scalar_t>(a, b, out.mutable_data_ptr<float>());
    });
  });
  return out;
}

at::Tensor residual_apply(const at::Tensor& x, const at::Tensor& residual_in) {
  checks::residual_apply(at::kCPU, x, residual_in);
  return residual<false>(x, residual_in);
}

at::Tensor residual_capture(const at::Tensor& out, const at::Tensor& inp) {
  checks::residual_capture(at::kCPU, out, inp);
  return residual<true>(out, inp);
}

}  // namespace
}  // namespace wan_kernels

TORCH_LIBRARY_FRAGMENT(wan_kernels_cpp, m) {
  m.def("residual_apply", &wan_kernels::residual_apply);
  m.def("residual_capture", &wan_kernels::residual_capture);
}
