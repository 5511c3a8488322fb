// CUDA gated_residual: x + y * gate in float32, stored in x's dtype. Elementwise: a grid of
// (token, chunk of its channels), N channels per thread access.
#include "common.cuh"

namespace wan_kernels {
namespace {

template <int N, bool VEC, typename X, typename Y>
__global__ void __launch_bounds__(kMaxThreads)
    gated_residual_kernel(Rows<X> xs, Rows<Y> ys, Rows<float> gates, X* __restrict__ out, int64_t length,
                          int64_t width) {
  const int64_t row = blockIdx.x, b = row / length, t = row % length, packs = width / N;
  const X* xr = xs.row(b, t);
  const Y* yr = ys.row(b, t);
  const float* gr = gates.row(b, t);
  for (int64_t p = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    float x[N], y[N], gate[N];
    load<N, VEC>(xr + p * N, x);
    load<N, VEC>(yr + p * N, y);
    load<N, VEC>(gr + p * N, gate);
#pragma unroll
    for (int i = 0; i < N; ++i) x[i] = x[i] + y[i] * gate[i];
    store<N, VEC>(out + row * width + p * N, x);
  }
}

at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
  checks::gated_residual(at::kCUDA, x, y, gate);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (out.numel() == 0) return out;
  const int64_t length = x.size(1), width = x.size(2);
  WAN_DISPATCH_FLOATS(x.scalar_type(), "gated_residual", [&] {
    using X = scalar_t;
    WAN_DISPATCH_FLOATS(y.scalar_type(), "gated_residual", [&] {
      using Y = scalar_t;
      constexpr int kVec = kPack<X, Y>;
      WAN_DISPATCH_PACKED(all_packable(kVec, x, y, gate, out), [&] {
        constexpr int N = VEC ? kVec : 1;
        const int threads = row_threads(width / N, 1);
        const dim3 grid(row_blocks(x.size(0) * length), row_chunks(width / N, threads));
        gated_residual_kernel<N, VEC, X, Y><<<grid, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            Rows<X>(x), Rows<Y>(y), Rows<float>(gate), out.mutable_data_ptr<X>(), length, width);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return out;
}

}  // namespace
}  // namespace wan_kernels

TORCH_LIBRARY_FRAGMENT(wan_kernels_cuda, m) {
  m.def("gated_residual", torch::dispatch(c10::DispatchKey::CUDA, TORCH_FN(wan_kernels::gated_residual)));
}
