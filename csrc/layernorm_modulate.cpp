// C++ layernorm_modulate and gated_residual_layernorm_modulate: one token per iteration, the
// tokens split across threads. With GATED the token is first x + y * gate, stored as the new
// residual and then normalised, so the residual stream is read once for both.
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "checks.h"
#include "rows.h"

namespace wan_kernels {
namespace {

template <bool GATED, typename X, typename Y, typename Out>
void layernorm_modulate_kernel(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate,
                               const at::Tensor& shift, const at::Tensor& scale, float* residual,
                               Out* out, double eps, bool round_to_input) {
  const int64_t length = x.size(1), width = x.size(2);
  const Rows<X> xs(x);
  const Rows<Y> ys(y);
  const Rows<float> gates(gate), shifts(shift), scales(scale);
  at::parallel_for(0, x.size(0) * length, row_grain(width), [&](int64_t begin, int64_t end) {
    std::vector<float> h(width);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / length, t = row % length;
      const X* xr = xs.row(b, t);
      if constexpr (GATED) {
        const Y* yr = ys.row(b, t);
        const float* gr = gates.row(b, t);
        float* res = residual + row * width;
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) {
          h[c] = static_cast<float>(xr[c]) + static_cast<float>(yr[c]) * gr[c];
          res[c] = h[c];
        }
      } else {
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) h[c] = static_cast<float>(xr[c]);
      }
      // Two-pass statistics accumulated in double: within an ulp of torch's float32 Welford.
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < width; ++c) sum += h[c];
      const float mean = static_cast<float>(sum / width);
      double squares = 0.0;
#pragma omp simd reduction(+ : squares)
      for (int64_t c = 0; c < width; ++c) {
        const double d = h[c] - mean;
        squares += d * d;
      }
      const float rstd = static_cast<float>(1.0 / std::sqrt(squares / width + eps));
      const float* sh = shifts.row(b, t);
      const float* sc = scales.row(b, t);
      Out* o = out + row * width;
      for (int64_t c = 0; c < width; ++c) {
        float normed = (h[c] - mean) * rstd;
        // The official model rounds the normalised value to the input's dtype before modulating.
        if (round_to_input) normed = round_through<X>(normed);
        o[c] = from_float<Out>(normed * (1.0f + sc[c]) + sh[c]);
      }
    }
  });
}

at::Tensor layernorm_modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale,
                              double eps, bool round_to_input, at::ScalarType out_dtype) {
  checks::layernorm_modulate(at::kCPU, x, shift, scale, eps, out_dtype);
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(out_dtype));
  if (out.numel() == 0) return out;
  WAN_DISPATCH_FLOATS(x.scalar_type(), "layernorm_modulate", [&] {
    using X = scalar_t;
    WAN_DISPATCH_FLOATS(out_dtype, "layernorm_modulate", [&] {
      layernorm_modulate_kernel<false, X, X, scalar_t>(x, x, shift, shift, scale, nullptr,
                                                       out.mutable_data_ptr<scalar_t>(), eps,
                                                       round_to_input);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gated_residual_layernorm_modulate(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& shift,
    const at::Tensor& scale, double eps, at::ScalarType out_dtype) {
  checks::gated_residual_layernorm_modulate(at::kCPU, x, y, gate, shift, scale, eps, out_dtype);
  at::Tensor residual = at::empty(x.sizes(), x.options());
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(out_dtype));
  if (out.numel() == 0) return {residual, out};
  WAN_DISPATCH_FLOATS(y.scalar_type(), "gated_residual_layernorm_modulate", [&] {
    using Y = scalar_t;
    WAN_DISPATCH_FLOATS(out_dtype, "gated_residual_layernorm_modulate", [&] {
      // The residual is float32, so rounding the normalised value to its dtype is a no-op.
      layernorm_modulate_kernel<true, float, Y, scalar_t>(x, y, gate, shift, scale,
                                                          residual.mutable_data_ptr<float>(),
                                                          out.mutable_data_ptr<scalar_t>(), eps,
                                                          false);
    });
  });
  return {residual, out};
}

}  // namespace
}  // namespace wan_kernels

TORCH_LIBRARY_FRAGMENT(wan_kernels_cpp, m) {
  m.def("layernorm_modulate", &wan_kernels::layernorm_modulate);
  m.def("gated_residual_layernorm_modulate", &wan_kernels::gated_residual_layernorm_modulate);
}
