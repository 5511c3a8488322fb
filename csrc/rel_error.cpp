// C++ rel_l1 and rel_l2: per-token partial sums in double, split across threads, then one
// reduction in token order, so results do not depend on the thread count.
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "checks.h"
#include "rows.h"

namespace wan_kernels {
namespace {

template <bool SQUARE, typename A, typename B>
void partial_sums_kernel(const at::Tensor& a, const at::Tensor& b, int64_t stride, double* partials) {
  const int64_t length = a.size(1), width = a.size(2);
  const int64_t sampled = sampled_tokens(length, stride);
  const Rows<A> as(a);
  const Rows<B> bs(b);
  at::parallel_for(0, a.size(0) * sampled, row_grain(width), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / sampled, t = (row % sampled) * stride;
      const A* ar = as.row(n, t);
      const B* br = bs.row(n, t);
      double num = 0.0, den = 0.0;
#pragma omp simd reduction(+ : num, den)
      for (int64_t c = 0; c < width; ++c) {
        const float bv = static_cast<float>(br[c]);
        const float diff = static_cast<float>(ar[c]) - bv;
        num += SQUARE ? static_cast<double>(diff) * diff : std::fabs(diff);
        den += SQUARE ? static_cast<double>(bv) * bv : std::fabs(bv);
      }
      partials[2 * row] = num;
      partials[2 * row + 1] = den;
    }
  });
}

template <bool SQUARE>
at::Tensor relative_error(const at::Tensor& a_in, const at::Tensor& b_in, int64_t stride) {
  const at::Tensor a = as_token_rows(a_in), b = as_token_rows(b_in);
  const int64_t rows = a.size(0) * sampled_tokens(a.size(1), stride);
  std::vector<double> partials(2 * rows);
  if (rows > 0 && a.size(2) > 0) {
    WAN_DISPATCH_FLOATS(a.scalar_type(), "relative_error", [&] {
      using A = scalar_t;
      WAN_DISPATCH_FLOATS(b.scalar_type(), "relative_error", [&] {
        partial_sums_kernel<SQUARE, A, scalar_t>(a, b, stride, partials.data());
      });
    });
  }
  double num = 0.0, den = 0.0;
  for (int64_t row = 0; row < rows; ++row) {
    num += partials[2 * row];
    den += partials[2 * row + 1];
  }
  const double ratio = SQUARE ? std::sqrt(num / den) : num / den;
  at::Tensor out = at::empty({}, a.options().dtype(at::kFloat));
  *out.mutable_data_ptr<float>() = static_cast<float>(ratio);
  return out;
}

at::Tensor rel_l1(const at::Tensor& a, const at::Tensor& b, int64_t stride) {
  checks::relative_error("rel_l1", at::kCPU, a, b, stride);
  return relative_error<false>(a, b, stride);
}

at::Tensor rel_l2(const at::Tensor& a, const at::Tensor& b, int64_t stride) {
  checks::relative_error("rel_l2", at::kCPU, a, b, stride);
  return relative_error<true>(a, b, stride);
}

}  // namespace
}  // namespace wan_kernels

TORCH_LIBRARY_FRAGMENT(wan_kernels_cpp, m) {
  m.def("rel_l1", &wan_kernels::rel_l1);
  m.def("rel_l2", &wan_kernels::rel_l2);
}
