// CUDA layernorm_modulate and gated_residual_layernorm_modulate: one block per token.
//
// The block reads the token from global memory once, N channels per thread access, and keeps its
// float32 values (x, or x + y * gate with GATED, which is also stored as the new residual) in
// shared memory. The statistics are then the reference's two-pass float32 mean and centred
// variance over that copy, with no second read of DRAM and none of the cancellation of a one-pass
// sum of squares. A row too wide for the 48 KB of shared memory a block gets without opting in
// (C > 12,224) is recomputed from global memory instead, where it is by then in L1/L2.
#include "common.cuh"

namespace wan_kernels {
namespace {

constexpr int64_t kMaxCachedWidth = 48 * 1024 / sizeof(float) - 64;
// Packs a thread walks (the launch's target) and has in flight at once in the pass that reads the
// row from memory (for_each_pack).
constexpr int kPacks = 2;

template <bool GATED, int N, bool VEC, typename X, typename Y, typename Out>
__global__ void __launch_bounds__(kMaxThreads)
    layernorm_modulate_kernel(Rows<X> xs, Rows<Y> ys, Rows<float> gates, Rows<float> shifts,
                              Rows<float> scales, float* __restrict__ residual, Out* __restrict__ out,
                              int64_t length, int64_t width, float eps, bool round_to_input, bool cached) {
  extern __shared__ float4 cache_storage[];  // float4: 16-byte aligned for the vector accesses
  float* cache = reinterpret_cast<float*>(cache_storage);
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x, b = row / length, t = row % length, packs = width / N;
  const X* xr = xs.row(b, t);
  const Y* yr = ys.row(b, t);
  const float* gr = gates.row(b, t);

  // The float32 value to normalise of pack p, from global memory.
  auto input = [&](int64_t p) {
    Floats<N> h;
    load<N, VEC>(xr + p * N, h.v);
    if constexpr (GATED) {
      float y[N], g[N];
      load<N, VEC>(yr + p * N, y);
      load<N, VEC>(gr + p * N, g);
#pragma unroll
      for (int i = 0; i < N; ++i) h.v[i] = h.v[i] + y[i] * g[i];
    }
    return h;
  };
  // Pack p again: from the shared copy, or recomputed (the same arithmetic, so the same values).
  auto again = [&](int64_t p) {
    if (!cached) return input(p);
    Floats<N> h;
    load<N, true>(cache + p * N, h.v);
    return h;
  };

  float sum = 0.0f;
  for_each_pack<kPacks>(packs, input, [&](int64_t p, const Floats<N>& h) {
    if constexpr (GATED) store<N, VEC>(residual + row * width + p * N, h.v);
    if (cached) store<N, true>(cache + p * N, h.v);
#pragma unroll
    for (int i = 0; i < N; ++i) sum += h.v[i];
  });
  const float mean = block_sum(sum, scratch) / static_cast<float>(width);

  float squares = 0.0f;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Floats<N> h = again(p);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float d = h.v[i] - mean;
      squares += d * d;
    }
  }
  const float rstd = rsqrtf(block_sum(squares, scratch) / static_cast<float>(width) + eps);

  const float* sh = shifts.row(b, t);
  const float* sc = scales.row(b, t);
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    Floats<N> h = again(p);
    float shift[N], scale[N];
    load<N, VEC>(sh + p * N, shift);
    load<N, VEC>(sc + p * N, scale);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      float normed = (h.v[i] - mean) * rstd;
      // The official model rounds the normalised value to the input's dtype before modulating.
      if (round_to_input) normed = round_through<X>(normed);
      h.v[i] = normed * (1.0f + scale[i]) + shift[i];
    }
    store<N, VEC>(out + row * width + p * N, h.v);
  }
}

// x [B, L, C]; with GATED also y and gate, and residual gets x + y * gate (float32).
template <bool GATED, typename X, typename Y, typename Out>
void launch(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& shift,
            const at::Tensor& scale, const at::Tensor& residual, const at::Tensor& out, double eps,
            bool round_to_input) {
  constexpr int kVec = kPack<X, Y, Out>;
  const int64_t length = x.size(1), width = x.size(2);
  const bool cached = width <= kMaxCachedWidth;
  const bool vec = all_packable(kVec, x, y, gate, shift, scale, residual, out);
  WAN_DISPATCH_PACKED(vec, [&] {
    constexpr int N = VEC ? kVec : 1;
    const int threads = row_threads(width / N, kPacks);
    const size_t shared = cached ? width * sizeof(float) : 0;
    layernorm_modulate_kernel<GATED, N, VEC, X, Y, Out>
        <<<row_blocks(x.size(0) * length), threads, shared, c10::cuda::getCurrentCUDAStream()>>>(
            Rows<X>(x), Rows<Y>(y), Rows<float>(gate), Rows<float>(shift), Rows<float>(scale),
            GATED ? residual.mutable_data_ptr<float>() : nullptr, out.mutable_data_ptr<Out>(), length,
            width, static_cast<float>(eps), round_to_input, cached);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor layernorm_modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale,
                              double eps, bool round_to_input, at::ScalarType out_dtype) {
  checks::layernorm_modulate(at::kCUDA, x, shift, scale, eps, out_dtype);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(out_dtype));
  if (out.numel() == 0) return out;
  WAN_DISPATCH_FLOATS(x.scalar_type(), "layernorm_modulate", [&] {
    using X = scalar_t;
    WAN_DISPATCH_FLOATS(out_dtype, "layernorm_modulate", [&] {
      // Without GATED, y, gate and residual are placeholders the kernel never reads.
      launch<false, X, X, scalar_t>(x, x, shift, shift, scale, out, out, eps, round_to_input);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gated_residual_layernorm_modulate(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& shift,
    const at::Tensor& scale, double eps, at::ScalarType out_dtype) {
  checks::gated_residual_layernorm_modulate(at::kCUDA, x, y, gate, shift, scale, eps, out_dtype);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor residual = at::empty(x.sizes(), x.options());
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(out_dtype));
  if (out.numel() == 0) return {residual, out};
  WAN_DISPATCH_FLOATS(y.scalar_type(), "gated_residual_layernorm_modulate", [&] {
    using Y = scalar_t;
    WAN_DISPATCH_FLOATS(out_dtype, "gated_residual_layernorm_modulate", [&] {
      // The residual is float32, so rounding the normalised value to its dtype is a no-op.
      launch<true, float, Y, scalar_t>(x, y, gate, shift, scale, residual, out, eps, false);
    });
  });
  return {residual, out};
}

}  // namespace
}  // namespace wan_kernels

TORCH_LIBRARY_FRAGMENT(wan_kernels_cuda, m) {
  m.def("layernorm_modulate", torch::dispatch(c10::DispatchKey::CUDA, TORCH_FN(wan_kernels::layernorm_modulate)));
  m.def("gated_residual_layernorm_modulate",
        torch::dispatch(c10::DispatchKey::CUDA, TORCH_FN(wan_kernels::gated_residual_layernorm_modulate)));
}
