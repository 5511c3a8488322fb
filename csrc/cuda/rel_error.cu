// CUDA rel_l1 and rel_l2: one block per sampled token writes its partial sums (float32), then one
// block reduces them in a fixed order (in double) and divides. Two launches, no atomics and no host
// synchronisation: the result is a 0-d float32 tensor on the device, the same bits every run for
// inputs of the same layout (the block size follows the packing their alignment allows), and both
// launches can be captured in a CUDA graph.
#include <cmath>

#include "common.cuh"

namespace wan_kernels {
namespace {

constexpr int kFinishThreads = 1024;

template <bool SQUARE, int N, bool VEC, typename A, typename B>
__global__ void __launch_bounds__(kMaxThreads)
    partial_sums_kernel(const A* __restrict__ a, const B* __restrict__ b, int64_t a_sn, int64_t a_sl,
                        int64_t b_sn, int64_t b_sl, int64_t sampled, int64_t stride, int64_t width,
                        float* __restrict__ partials) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x, n = row / sampled, t = (row % sampled) * stride, packs = width / N;
  const A* ar = a + n * a_sn + t * a_sl;
  const B* br = b + n * b_sn + t * b_sl;
  float num = 0.0f, den = 0.0f;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    float av[N], bv[N];
    load<N, VEC>(ar + p * N, av);
    load<N, VEC>(br + p * N, bv);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float diff = av[i] - bv[i];
      num += SQUARE ? diff * diff : fabsf(diff);
      den += SQUARE ? bv[i] * bv[i] : fabsf(bv[i]);
    }
  }
  num = block_sum(num, scratch);
  den = block_sum(den, scratch);
  if (threadIdx.x == 0) {
    partials[2 * row] = num;
    partials[2 * row + 1] = den;
  }
}

template <bool SQUARE>
__global__ void __launch_bounds__(kFinishThreads)
    finish_kernel(const float* __restrict__ partials, int64_t rows, float* __restrict__ out) {
  __shared__ double scratch[32];
  double num = 0.0, den = 0.0;
  for (int64_t row = threadIdx.x; row < rows; row += blockDim.x) {
    num += partials[2 * row];
    den += partials[2 * row + 1];
  }
  num = block_sum(num, scratch);
  den = block_sum(den, scratch);
  // No tokens: 0 / 0, NaN, as the reference's empty sums give.
  if (threadIdx.x == 0) *out = static_cast<float>(SQUARE ? sqrt(num / den) : num / den);
}

template <bool SQUARE>
at::Tensor relative_error(const at::Tensor& a_in, const at::Tensor& b_in, int64_t stride) {
  const c10::cuda::CUDAGuard guard(a_in.device());
  const at::Tensor a = as_token_rows(a_in), b = as_token_rows(b_in);
  const int64_t sampled = sampled_tokens(a.size(1), stride), rows = a.size(0) * sampled, width = a.size(2);
  const auto cuda_stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor out = at::empty({}, a.options().dtype(at::kFloat));
  at::Tensor partials = at::empty({std::max<int64_t>(rows, 1), 2}, a.options().dtype(at::kFloat));
  if (rows > 0) {
    WAN_DISPATCH_FLOATS(a.scalar_type(), "relative_error", [&] {
      using A = scalar_t;
      WAN_DISPATCH_FLOATS(b.scalar_type(), "relative_error", [&] {
        using B = scalar_t;
        constexpr int kVec = kPack<A, B>;
        WAN_DISPATCH_PACKED(all_packable(kVec, a, b), [&] {
          constexpr int N = VEC ? kVec : 1;
          partial_sums_kernel<SQUARE, N, VEC, A, B>
              <<<row_blocks(rows), row_threads(width / N, 4), 0, cuda_stream>>>(
                  a.const_data_ptr<A>(), b.const_data_ptr<B>(), a.stride(0), a.stride(1), b.stride(0),
                  b.stride(1), sampled, stride, width, partials.mutable_data_ptr<float>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    });
  }
  finish_kernel<SQUARE><<<1, kFinishThreads, 0, cuda_stream>>>(partials.const_data_ptr<float>(), rows,
                                                                out.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor rel_l1(const at::Tensor& a, const at::Tensor& b, int64_t stride) {
  checks::relative_error("rel_l1", at::kCUDA, a, b, stride);
  return relative_error<false>(a, b, stride);
}

at::Tensor rel_l2(const at::Tensor& a, const at::Tensor& b, int64_t stride) {
  checks::relative_error("rel_l2", at::kCUDA, a, b, stride);
  return relative_error<true>(a, b, stride);
}

}  // namespace
}  // namespace wan_kernels

TORCH_LIBRARY_FRAGMENT(wan_kernels_cuda, m) {
  m.def("rel_l1", torch::dispatch(c10::DispatchKey::CUDA, TORCH_FN(wan_kernels::rel_l1)));
  m.def("rel_l2", torch::dispatch(c10::DispatchKey::CUDA, TORCH_FN(wan_kernels::rel_l2)));
}
