// CUDA residual_apply (x + residual) and residual_capture (out - inp) in float32. Elementwise over
// the rows of the last dim: a grid of (row, chunk of its channels), N channels per thread access.
#include "common.cuh"

namespace wan_kernels {
namespace {

template <bool SUBTRACT, int N, bool VEC, typename A, typename B>
__global__ void __launch_bounds__(kMaxThreads)
    residual_kernel(const A* __restrict__ a, const B* __restrict__ b, int64_t a_stride, int64_t b_stride,
                    int64_t width, float* __restrict__ out) {
  const int64_t row = blockIdx.x, packs = width / N;
  for (int64_t p = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    float av[N], bv[N];
    load<N, VEC>(a + row * a_stride + p * N, av);
    load<N, VEC>(b + row * b_stride + p * N, bv);
#pragma unroll
    for (int i = 0; i < N; ++i) av[i] = SUBTRACT ? av[i] - bv[i] : av[i] + bv[i];
    store<N, VEC>(out + row * width + p * N, av);
  }
}

template <bool SUBTRACT>
at::Tensor residual(const at::Tensor& a_in, const at::Tensor& b_in) {
  const c10::cuda::CUDAGuard guard(a_in.device());
  at::Tensor out = at::empty(a_in.sizes(), a_in.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  // Rows of the last dim (a view when the strides allow); the checks made sure channels are contiguous.
  const at::Tensor a = a_in.reshape({-1, a_in.size(-1)});
  const at::Tensor b = b_in.reshape({-1, b_in.size(-1)});
  const int64_t width = a.size(1);
  WAN_DISPATCH_FLOATS(a.scalar_type(), "residual", [&] {
    using A = scalar_t;
    WAN_DISPATCH_FLOATS(b.scalar_type(), "residual", [&] {
      using B = scalar_t;
      constexpr int kVec = kPack<A, B>;
      WAN_DISPATCH_PACKED(all_packable(kVec, a, b), [&] {
        constexpr int N = VEC ? kVec : 1;
        const int threads = row_threads(width / N, 1);
        const dim3 grid(row_blocks(a.size(0)), row_chunks(width / N, threads));
        residual_kernel<SUBTRACT, N, VEC, A, B><<<grid, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            a.const_data_ptr<A>(), b.const_data_ptr<B>(), a.stride(0), b.stride(0), width,
            out.mutable_data_ptr<float>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return out;
}

at::Tensor residual_apply(const at::Tensor& x, const at::Tensor& residual_in) {
  checks::residual_apply(at::kCUDA, x, residual_in);
  return residual<false>(x, residual_in);
}

at::Tensor residual_capture(const at::Tensor& out, const at::Tensor& inp) {
  checks::residual_capture(at::kCUDA, out, inp);
  return residual<true>(out, inp);
}

}  // namespace
}  // namespace wan_kernels

TORCH_LIBRARY_FRAGMENT(wan_kernels_cuda, m) {
  m.def("residual_apply", torch::dispatch(c10::DispatchKey::CUDA, TORCH_FN(wan_kernels::residual_apply)));
  m.def("residual_capture", torch::dispatch(c10::DispatchKey::CUDA, TORCH_FN(wan_kernels::residual_capture)));
}
