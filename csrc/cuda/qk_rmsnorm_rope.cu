// CUDA qk_rmsnorm_rope: RMSNorm over a token's full width, then the interleaved rotary embedding of
// its heads; one block per token, one launch for the queries and one for the keys.
//
// As in layernorm_modulate.cu, the block reads the token once and keeps its float32 values in
// shared memory for the second pass (or re-reads them from L1/L2 when C > 12,224). The channels are
// walked in packs of N (even), so each thread holds whole (even, odd) pairs: channel c = 2 * pair + i
// of head pair / (D/2) rotates by the angle of table column pair % (D/2), as the reference's
// [L, 1, D/2] cos/sin broadcast over the heads.
#include "common.cuh"

namespace wan_kernels {
namespace {

constexpr int64_t kMaxCachedWidth = 48 * 1024 / sizeof(float) - 64;

template <int N, bool VEC, typename X>
__global__ void __launch_bounds__(kMaxThreads)
    rmsnorm_rope_kernel(Rows<X> xs, const float* __restrict__ weight, const float* __restrict__ cos,
                        const float* __restrict__ sin, X* __restrict__ out, int64_t length, int64_t width,
                        unsigned half_head, float eps, bool cached) {
  static_assert(N % 2 == 0, "a pack holds whole (even, odd) pairs");
  extern __shared__ float4 cache_storage[];  // float4: 16-byte aligned for the vector accesses
  float* cache = reinterpret_cast<float*>(cache_storage);
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x, t = row % length, packs = width / N;
  const X* xr = xs.row(row / length, t);

  float squares = 0.0f;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    float v[N];
    load<N, VEC>(xr + p * N, v);
    if (cached) store<N, true>(cache + p * N, v);
#pragma unroll
    for (int i = 0; i < N; ++i) squares += v[i] * v[i];
  }
  // As the reference: float32 mean square plus eps, then 1 / sqrt.
  const float rstd = rsqrtf(block_sum(squares, scratch) / static_cast<float>(width) + eps);

  const float* cos_t = cos + t * half_head;
  const float* sin_t = sin + t * half_head;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    float v[N], w[N];
    if (cached) {
      load<N, true>(cache + p * N, v);
    } else {
      load<N, VEC>(xr + p * N, v);
    }
    load<N, VEC>(weight + p * N, w);
#pragma unroll
    for (int i = 0; i < N; i += 2) {
      // As reference.rms_norm: the normalised value is rounded to the input dtype before the weight.
      const float even = round_through<X>(v[i] * rstd) * w[i];
      const float odd = round_through<X>(v[i + 1] * rstd) * w[i + 1];
      // 32-bit: a 64-bit remainder is a long software sequence on the GPU.
      const unsigned j = static_cast<unsigned>((p * N + i) / 2) % half_head;
      const float c = cos_t[j], s = sin_t[j];
      v[i] = even * c - odd * s;
      v[i + 1] = even * s + odd * c;
    }
    store<N, VEC>(out + row * width + p * N, v);
  }
}

at::Tensor rmsnorm_rope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos,
                        const at::Tensor& sin, int64_t num_heads, double eps) {
  const int64_t length = x.size(1), width = x.size(2);
  at::Tensor out = at::empty({x.size(0), length, num_heads, width / num_heads}, x.options());
  if (out.numel() == 0) return out;
  const bool cached = width <= kMaxCachedWidth;
  WAN_DISPATCH_FLOATS(x.scalar_type(), "qk_rmsnorm_rope", [&] {
    using X = scalar_t;
    constexpr int kVec = kPack<X>;
    WAN_DISPATCH_PACKED(all_packable(kVec, x, weight, out), [&] {
      // Unaligned: one pair at a time, element by element.
      constexpr int N = VEC ? kVec : 2;
      const int threads = row_threads(width / N, 2);
      const size_t shared = cached ? width * sizeof(float) : 0;
      rmsnorm_rope_kernel<N, VEC, X>
          <<<row_blocks(x.size(0) * length), threads, shared, c10::cuda::getCurrentCUDAStream()>>>(
              Rows<X>(x), weight.const_data_ptr<float>(), cos.const_data_ptr<float>(),
              sin.const_data_ptr<float>(), out.mutable_data_ptr<X>(), length, width,
              static_cast<unsigned>(width / num_heads / 2), static_cast<float>(eps), cached);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> qk_rmsnorm_rope(const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& weight_q, const at::Tensor& weight_k,
                                                   const at::Tensor& cos, const at::Tensor& sin,
                                                   int64_t num_heads, double eps) {
  checks::qk_rmsnorm_rope(at::kCUDA, q, k, weight_q, weight_k, cos, sin, num_heads, eps);
  const c10::cuda::CUDAGuard guard(q.device());
  return {rmsnorm_rope(q, weight_q.contiguous(), cos, sin, num_heads, eps),
          rmsnorm_rope(k, weight_k.contiguous(), cos, sin, num_heads, eps)};
}

}  // namespace
}  // namespace wan_kernels

TORCH_LIBRARY_FRAGMENT(wan_kernels_cuda, m) {
  m.def("qk_rmsnorm_rope", torch::dispatch(c10::DispatchKey::CUDA, TORCH_FN(wan_kernels::qk_rmsnorm_rope)));
}
