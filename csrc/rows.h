// Shared helpers of the C++ CPU kernels, and of the CUDA kernels (csrc/cuda/common.cuh): row access
// into [B, L, C] tensors, float conversions rounded as torch rounds, and the dispatch over the
// activation dtypes.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/accumulate.h>

#include <algorithm>
#include <cstdint>

namespace wan_kernels {

// Token (b, t) of a [B, L, C] tensor whose channels are contiguous; a token dim of size 1 is
// broadcast (stride 0), as per-sample modulation rows [B, 1, C] are.
template <typename T>
struct Rows {
  const T* data;
  int64_t batch_stride;
  int64_t token_stride;

  explicit Rows(const at::Tensor& t)
      : data(t.const_data_ptr<T>()),
        batch_stride(t.stride(0)),
        token_stride(t.size(1) > 1 ? t.stride(1) : 0) {}

  C10_HOST_DEVICE const T* row(int64_t b, int64_t t) const {
    return data + b * batch_stride + t * token_stride;
  }
};

// c10::BFloat16 and c10::Half convert from float with round-to-nearest-even, as tensor.to() does,
// on the GPU too.
template <typename T>
C10_HOST_DEVICE inline T from_float(float v) {
  return static_cast<T>(v);
}

template <typename T>
C10_HOST_DEVICE inline float round_through(float v) {
  return static_cast<float>(static_cast<T>(v));
}

// t as [N, L, C]: its leading dims flattened (a view when the strides allow), N counted rather than
// inferred (-1), which an empty tensor would leave ambiguous.
inline at::Tensor as_token_rows(const at::Tensor& t) {
  const int64_t count = c10::multiply_integers(t.sizes().begin(), t.sizes().end() - 2);
  return t.reshape({count, t.size(-2), t.size(-1)});
}

// Tokens 0, stride, 2 * stride, ... of ``length``: their count, without forming length + stride - 1,
// which overflows for a stride near INT64_MAX.
C10_HOST_DEVICE inline int64_t sampled_tokens(int64_t length, int64_t stride) {
  return length == 0 ? 0 : (length - 1) / stride + 1;
}

// Rows per parallel task: about 16k elements, enough to amortise the scheduling.
inline int64_t row_grain(int64_t width) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1));
}

}  // namespace wan_kernels

// The activation dtypes the ops accept (wan_kernels.checks.FLOATS): no double, whose
// instantiations would only add compile time.
#define WAN_DISPATCH_FLOATS(TYPE, NAME, ...)                                                   \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)                     \
                                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__)              \
                                         AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__))
