// Argument checks of the ops' host entry points, shared by the C++ CPU kernels (csrc/*.cpp) and the
// CUDA ones (csrc/cuda/*.cu through common.cuh): the checks of wan_kernels/ops.py and
// wan_kernels/checks.py, so that the compiled ops called directly (torch.ops.wan_kernels_cpp.*,
// torch.ops.wan_kernels_cuda.*, the CMake library) reject what their kernels would misread instead of
// reading out of bounds. A failure throws c10::Error (RuntimeError in Python), "wan_kernels::<op>:
// <argument> must be <expected>, got <actual>". The checks read sizes, strides, dtypes and devices
// only: a few integer comparisons per tensor and no allocation (a message is built only on failure).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <utility>

// TORCH_CHECK naming the op of `call`; the message's arguments are evaluated only when cond fails.
#define WAN_CHECK_ARG(call, cond, ...) TORCH_CHECK(cond, "wan_kernels::", (call).op, ": ", __VA_ARGS__)

namespace wan_kernels::checks {

using Dtypes = c10::ArrayRef<at::ScalarType>;
// The activation dtypes (wan_kernels.checks.FLOATS, those WAN_DISPATCH_FLOATS instantiates), and float32.
constexpr std::array<at::ScalarType, 3> kFloats = {at::kFloat, at::kBFloat16, at::kHalf};
constexpr std::array<at::ScalarType, 1> kFloat32 = {at::kFloat};

// One call of an op: its name, and the device all its tensors must be on, that of the first, which
// must be of the backend's type (the CPU kernels read host memory, the CUDA kernels device memory).
struct Call {
  const char* op;
  const char* first;
  c10::Device device;

  Call(const char* op_name, c10::DeviceType backend, const char* first_name, const at::Tensor& t)
      : op(op_name), first(first_name), device(t.defined() ? t.device() : c10::Device(backend)) {
    WAN_CHECK_ARG(*this, t.defined(), first, " must be a tensor, got an undefined one");
    WAN_CHECK_ARG(*this, device.type() == backend, first, " must be on a ", backend, " device, got ", device);
  }
};

struct Rank {
  int64_t min, max;
};
constexpr Rank exactly(int64_t n) { return {n, n}; }
constexpr Rank at_least(int64_t n) { return {n, std::numeric_limits<int64_t>::max()}; }

// t: dense, on the call's device, of one of dtypes, of a rank within `rank` (whose min is at least
// 1), and contiguous in its last dim (the kernels walk a row's channels as one array).
inline void tensor(const Call& c, const char* name, const at::Tensor& t, Dtypes dtypes, Rank rank) {
  WAN_CHECK_ARG(c, t.defined(), name, " must be a tensor, got an undefined one");
  WAN_CHECK_ARG(c, t.layout() == at::kStrided, name, " must be a dense tensor, got layout ", t.layout());
  WAN_CHECK_ARG(c, t.device() == c.device, name, " must be on the device of ", c.first, " (", c.device,
                "), got ", t.device());
  WAN_CHECK_ARG(c, std::find(dtypes.begin(), dtypes.end(), t.scalar_type()) != dtypes.end(), name,
                " must be one of ", dtypes, ", got ", t.scalar_type());
  WAN_CHECK_ARG(c, rank.min <= t.dim() && t.dim() <= rank.max, name, " must be ",
                rank.min == rank.max ? "" : "at least ", rank.min, "-D, got shape ", t.sizes());
  WAN_CHECK_ARG(c, t.size(-1) <= 1 || t.stride(-1) == 1, name,
                " must be contiguous in its last dimension, got stride ", t.stride(-1));
}

inline void same_shape(const Call& c, const char* name, const at::Tensor& t, const char* like_name,
                       const at::Tensor& like) {
  WAN_CHECK_ARG(c, t.sizes() == like.sizes(), name, " must have the shape of ", like_name, " ", like.sizes(),
                ", got ", t.sizes());
}

// t: a float32 per-sample [B, 1, C] or per-token [B, L, C] modulation row of x [B, L, C].
inline void modulation(const Call& c, const char* name, const at::Tensor& t, const at::Tensor& x) {
  tensor(c, name, t, kFloat32, exactly(3));
  const bool rows =
      t.size(0) == x.size(0) && (t.size(1) == 1 || t.size(1) == x.size(1)) && t.size(2) == x.size(2);
  WAN_CHECK_ARG(c, rows, name, " must be [B, 1, C] or [B, L, C] of x ", x.sizes(), ", got ", t.sizes());
}

inline void positive(const Call& c, const char* name, int64_t value) {
  WAN_CHECK_ARG(c, value >= 1, name, " must be a positive int, got ", value);
}

inline void epsilon(const Call& c, double eps) {
  WAN_CHECK_ARG(c, eps >= 0, "eps must be a non-negative float, got ", eps);
}

// ---- the ops, as wan_kernels/ops.py checks them ---------------------------------------------------

inline void norm_input(const Call& c, const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale,
                       double eps, at::ScalarType out_dtype, Dtypes x_dtypes) {
  tensor(c, "x", x, x_dtypes, exactly(3));
  modulation(c, "shift", shift, x);
  modulation(c, "scale", scale, x);
  epsilon(c, eps);
  WAN_CHECK_ARG(c, std::find(kFloats.begin(), kFloats.end(), out_dtype) != kFloats.end(),
                "out_dtype must be one of ", Dtypes(kFloats), ", got ", out_dtype);
}

inline void gated_input(const Call& c, const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
  tensor(c, "x", x, kFloats, exactly(3));
  tensor(c, "y", y, kFloats, at_least(1));
  same_shape(c, "y", y, "x", x);
  modulation(c, "gate", gate, x);
}

// Two tensors of one shape: rel_l1 and rel_l2 [..., L, C], the residual ops [..., C].
inline void pair(const Call& c, const char* a_name, const at::Tensor& a, const char* b_name,
                 const at::Tensor& b, int64_t min_dim) {
  tensor(c, a_name, a, kFloats, at_least(min_dim));
  tensor(c, b_name, b, kFloats, at_least(1));
  same_shape(c, b_name, b, a_name, a);
}

inline void layernorm_modulate(c10::DeviceType backend, const at::Tensor& x, const at::Tensor& shift,
                               const at::Tensor& scale, double eps, at::ScalarType out_dtype) {
  norm_input(Call("layernorm_modulate", backend, "x", x), x, shift, scale, eps, out_dtype, kFloats);
}

inline void gated_residual(c10::DeviceType backend, const at::Tensor& x, const at::Tensor& y,
                           const at::Tensor& gate) {
  gated_input(Call("gated_residual", backend, "x", x), x, y, gate);
}

inline void gated_residual_layernorm_modulate(c10::DeviceType backend, const at::Tensor& x,
                                              const at::Tensor& y, const at::Tensor& gate,
                                              const at::Tensor& shift, const at::Tensor& scale, double eps,
                                              at::ScalarType out_dtype) {
  const Call c("gated_residual_layernorm_modulate", backend, "x", x);
  gated_input(c, x, y, gate);
  // The kernel reads x as the float32 residual stream.
  norm_input(c, x, shift, scale, eps, out_dtype, kFloat32);
}

// rel_l1 and rel_l2.
inline void relative_error(const char* op, c10::DeviceType backend, const at::Tensor& a,
                           const at::Tensor& b, int64_t stride) {
  const Call c(op, backend, "a", a);
  pair(c, "a", a, "b", b, 2);
  positive(c, "stride", stride);
}

inline void residual_apply(c10::DeviceType backend, const at::Tensor& x, const at::Tensor& residual) {
  pair(Call("residual_apply", backend, "x", x), "x", x, "residual", residual, 1);
}

inline void residual_capture(c10::DeviceType backend, const at::Tensor& out, const at::Tensor& inp) {
  pair(Call("residual_capture", backend, "out", out), "out", out, "inp", inp, 1);
}

// q, k [B, L, C] of one dtype; weight_q, weight_k float32 [C]; cos, sin contiguous float32
// [L, 1, D/2] tables, D = C / num_heads even.
inline void qk_rmsnorm_rope(c10::DeviceType backend, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& weight_q, const at::Tensor& weight_k, const at::Tensor& cos,
                            const at::Tensor& sin, int64_t num_heads, double eps) {
  const Call c("qk_rmsnorm_rope", backend, "q", q);
  tensor(c, "q", q, kFloats, exactly(3));
  tensor(c, "k", k, {q.scalar_type()}, exactly(3));
  same_shape(c, "k", k, "q", q);
  positive(c, "num_heads", num_heads);
  epsilon(c, eps);
  const int64_t length = q.size(1), width = q.size(2), half = width / num_heads / 2;
  WAN_CHECK_ARG(c, width % num_heads == 0 && (width / num_heads) % 2 == 0, "C = ", width, " must split into ",
                num_heads, " heads of an even size");
  for (const auto& [name, weight] : {std::pair{"weight_q", &weight_q}, std::pair{"weight_k", &weight_k}}) {
    tensor(c, name, *weight, kFloat32, exactly(1));
    WAN_CHECK_ARG(c, weight->size(0) == width, name, " must be [C] = [", width, "], got ", weight->sizes());
  }
  for (const auto& [name, table] : {std::pair{"cos", &cos}, std::pair{"sin", &sin}}) {
    tensor(c, name, *table, kFloat32, at_least(1));
    WAN_CHECK_ARG(c, table->sizes() == c10::IntArrayRef({length, 1, half}) && table->is_contiguous(), name,
                  " must be a contiguous [L, 1, D/2] = [", length, ", 1, ", half, "] table, got shape ",
                  table->sizes(), " strides ", table->strides());
  }
}

}  // namespace wan_kernels::checks
