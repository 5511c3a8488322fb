// C++ qk_rmsnorm_rope: RMSNorm over a token's full width, then the interleaved rotary embedding of
// its heads; one token per iteration, queries and keys one after the other.
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "checks.h"
#include "rows.h"

namespace wan_kernels {
namespace {

template <typename X>
void rmsnorm_rope_kernel(const at::Tensor& x, const float* weight, const float* cos, const float* sin,
                         int64_t half_head, double eps, X* out) {
  const int64_t length = x.size(1), width = x.size(2);
  const Rows<X> xs(x);
  at::parallel_for(0, x.size(0) * length, row_grain(width), [&](int64_t begin, int64_t end) {
    std::vector<float> normed(width);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t t = row % length;
      const X* xr = xs.row(row / length, t);
      double squares = 0.0;
#pragma omp simd reduction(+ : squares)
      for (int64_t c = 0; c < width; ++c) {
        const double v = static_cast<float>(xr[c]);
        squares += v * v;
      }
      // As the reference: float32 mean square plus eps, then 1 / sqrt.
      const float rstd = 1.0f / std::sqrt(static_cast<float>(squares / width) + static_cast<float>(eps));
      // As reference.rms_norm: the normalised value is rounded to the input dtype before the weight.
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) {
        normed[c] = round_through<X>(static_cast<float>(xr[c]) * rstd) * weight[c];
      }
      const float* cos_t = cos + t * half_head;
      const float* sin_t = sin + t * half_head;
      X* o = out + row * width;
      for (int64_t pair = 0; pair < width / 2; ++pair) {
        const int64_t j = pair % half_head;
        const float even = normed[2 * pair], odd = normed[2 * pair + 1];
        o[2 * pair] = from_float<X>(even * cos_t[j] - odd * sin_t[j]);
        o[2 * pair + 1] = from_float<X>(even * sin_t[j] + odd * cos_t[j]);
      }
    }
  });
}

at::Tensor rmsnorm_rope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos,
                        const at::Tensor& sin, int64_t num_heads, double eps) {
  const int64_t width = x.size(2);
  at::Tensor out = at::empty({x.size(0), x.size(1), num_heads, width / num_heads}, x.options());
  if (out.numel() == 0) return out;
  WAN_DISPATCH_FLOATS(x.scalar_type(), "qk_rmsnorm_rope", [&] {
    rmsnorm_rope_kernel<scalar_t>(x, weight.const_data_ptr<float>(), cos.const_data_ptr<float>(),
                                  sin.const_data_ptr<float>(), width / num_heads / 2, eps,
                                  out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> qk_rmsnorm_rope(const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& weight_q, const at::Tensor& weight_k,
                                                   const at::Tensor& cos, const at::Tensor& sin,
                                                   int64_t num_heads, double eps) {
  checks::qk_rmsnorm_rope(at::kCPU, q, k, weight_q, weight_k, cos, sin, num_heads, eps);
  return {rmsnorm_rope(q, weight_q.contiguous(), cos, sin, num_heads, eps),
          rmsnorm_rope(k, weight_k.contiguous(), cos, sin, num_heads, eps)};
}

}  // namespace
}  // namespace wan_kernels

TORCH_LIBRARY_FRAGMENT(wan_kernels_cpp, m) {
  m.def("qk_rmsnorm_rope", &wan_kernels::qk_rmsnorm_rope);
}
