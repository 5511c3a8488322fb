// Shared helpers of the CUDA kernels, beside those they share with the C++ CPU kernels (../rows.h:
// Rows, round_through, WAN_DISPATCH_FLOATS; ../checks.h: the argument checks): vector loads and
// stores of up to 16 bytes, block-wide sums and launch geometry.
//
// Every kernel computes in float32 as the references do. The extension is built with --fmad=false
// (see wan_kernels/native.py), so a * b + c rounds the product and the sum separately, as torch's
// separate ops do, rather than once as a fused multiply-add.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../checks.h"
#include "../rows.h"

namespace wan_kernels {

// N consecutive elements, aligned so that one access moves them in 16-byte pieces (or all N*sizeof(T)
// bytes at once when fewer): a row of bfloat16 is read 8 channels per ld.global.v4.
template <typename T, int N>
struct alignas(std::min<size_t>(16, N * sizeof(T))) Pack {
  T v[N];
};

// Elements per pack for 16-byte accesses of the narrowest of the activation types.
template <typename... T>
constexpr int kPack = static_cast<int>(16 / std::min({sizeof(T)...}));

// N elements from p as float: one vector access when ALIGNED (p on a Pack boundary), else one by one.
template <int N, bool ALIGNED, typename T>
__device__ __forceinline__ void load(const T* p, float (&out)[N]) {
  if constexpr (ALIGNED) {
    const Pack<T, N> pack = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = static_cast<float>(pack.v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = static_cast<float>(p[i]);
  }
}

// N floats stored to p as T, rounded to nearest even; as load for the access.
template <int N, bool ALIGNED, typename T>
__device__ __forceinline__ void store(T* p, const float (&in)[N]) {
  if constexpr (ALIGNED) {
    Pack<T, N> pack;
#pragma unroll
    for (int i = 0; i < N; ++i) pack.v[i] = static_cast<T>(in[i]);
    *reinterpret_cast<Pack<T, N>*>(p) = pack;
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) p[i] = static_cast<T>(in[i]);
  }
}

// N floats as a value, so that a pack's loads can be returned and held in an array.
template <int N>
struct Floats {
  float v[N];
};

// Loads and uses the packs [0, packs) of a row this thread walks (p = threadIdx.x, then every
// blockDim.x-th), K at a time: the K packs' loads (load(p), returning what use needs) are all issued
// before the first use(p, loaded), so a thread has K requests in flight rather than waiting on each
// in turn (nvcc does not unroll the runtime-bounded loop by itself). The packs are used in the
// order a one-at-a-time loop uses them, so per-thread sums are the same.
template <int K, typename Load, typename Use>
__device__ __forceinline__ void for_each_pack(int64_t packs, Load&& load, Use&& use) {
  using Loaded = decltype(load(int64_t{0}));
  const int64_t step = blockDim.x;
  for (int64_t first = threadIdx.x; first < packs; first += K * step) {
    Loaded loaded[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (first + k * step < packs) loaded[k] = load(first + k * step);
    }
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (first + k * step < packs) use(first + k * step, loaded[k]);
    }
  }
}

// The sum of v over the warp, the same value in every lane: a xor butterfly adds each pair in both
// lanes in the same two operands, so all lanes round alike.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The sum of v over the block (blockDim.x a multiple of 32), returned to every thread, in an order
// fixed by the launch geometry, so repeated runs give the same bits. scratch: 32 shared elements.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  __syncthreads();  // a previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  // Every warp sums the warp sums itself: no third barrier to broadcast the result.
  return warp_sum(lane < blockDim.x / 32 ? scratch[lane] : T(0));
}

// Whether every row of t starts on a Pack<T, n> boundary and its width is a multiple of n, so the
// kernels may read it n elements at a time.
inline bool packable(const at::Tensor& t, int64_t n) {
  const int64_t bytes = std::min<int64_t>(16, n * t.element_size());
  if (reinterpret_cast<uintptr_t>(t.const_data_ptr()) % bytes != 0 || t.size(-1) % n != 0) return false;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) {
    if (t.size(d) > 1 && t.stride(d) % n != 0) return false;
  }
  return true;
}

template <typename... Tensors>
bool all_packable(int64_t n, const Tensors&... tensors) {
  return (packable(tensors, n) && ...);
}

// Threads of a block walking `packs` packs of one row, about `per_thread` each: a multiple of 32
// (block_sum needs whole warps), at most kMaxThreads.
constexpr int kMaxThreads = 512;
inline int row_threads(int64_t packs, int64_t per_thread) {
  const int64_t threads = (packs + per_thread - 1) / per_thread;
  return static_cast<int>(std::clamp<int64_t>((threads + 31) / 32 * 32, 32, kMaxThreads));
}

// grid.x of a launch with one block per row.
inline unsigned row_blocks(int64_t rows) {
  TORCH_CHECK(rows <= INT32_MAX, "wan_kernels: at most 2^31 - 1 rows per launch, got ", rows);
  return static_cast<unsigned>(rows);
}

// Blocks along a row for an elementwise kernel that strides over the rest (grid.y's limit).
inline unsigned row_chunks(int64_t packs, int threads) {
  return static_cast<unsigned>(std::clamp<int64_t>((packs + threads - 1) / threads, 1, 65535));
}

}  // namespace wan_kernels

// Instantiate BODY with a compile-time VEC: PACK-element vector accesses when COND, else one by one.
#define WAN_DISPATCH_PACKED(COND, ...) \
  [&] {                                \
    if (COND) {                        \
      constexpr bool VEC = true;       \
      return __VA_ARGS__();            \
    }                                  \
    constexpr bool VEC = false;        \
    return __VA_ARGS__();              \
  }()
