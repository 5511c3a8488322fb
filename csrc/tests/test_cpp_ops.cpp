// C++ tests of the wan_kernels ops, run by ctest (see CMakeLists.txt).
//
//   wan_kernels_cpp_test LIBRARY CASE [NAMESPACE DEVICE]
//
// e.g. `wan_kernels_cpp_test libwan_kernels_cpp.so all` (namespace wan_kernels_cpp on the CPU, the
// default) or `wan_kernels_cpp_test libwan_kernels_cuda.so all wan_kernels_cuda cuda`.
// Loads the library as torch.ops.load_library does (dlopen), calls each op through the dispatcher
// with a typed handle (so a schema that drifted from these signatures fails here), and compares it
// with a plain ATen computation of wan_kernels/reference.py on the same device, in float32 and
// bfloat16, at an odd width and a power-of-two one, with per-sample [B, 1, C] and per-token
// [B, L, C] modulation. Tolerances are those of tests/kernels/tolerances.py, keyed by the coarsest
// dtype a result was rounded through. Exit status: 0 when every check of the case passes, 1
// otherwise, 2 on bad usage, 77 (ctest's skip) for a CUDA run where no GPU is available.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace {

int failures = 0;
int checks = 0;
std::string op_namespace = "wan_kernels_cpp";
at::Device device = at::kCPU;

// A failed check prints where and why, and the case goes on (so one run shows every failure).
#define WAN_CHECK(cond, ...)                                                                   \
  do {                                                                                         \
    ++checks;                                                                                  \
    if (!(cond)) {                                                                             \
      ++failures;                                                                              \
      std::cerr << __FILE__ << ":" << __LINE__ << ": FAILED " #cond ": " << c10::str(__VA_ARGS__) \
                << "\n";                                                                       \
    }                                                                                          \
  } while (0)

constexpr double kEps = 1e-6;
constexpr double kReductionRtol = 1e-5;  // rel_l1 / rel_l2: float32 sums in another order

struct Tolerance {
  double rtol, atol, rel_l2;
};

// tests/kernels/tolerances.py: rtol one ulp of the dtype, atol one ulp of a value up to 8.
Tolerance tolerance(at::ScalarType rounded_through) {
  switch (rounded_through) {
    case at::kFloat: return {std::ldexp(1.0, -20), std::ldexp(1.0, -18), 1e-6};
    case at::kHalf: return {std::ldexp(1.0, -10), std::ldexp(1.0, -7), 2e-4};
    case at::kBFloat16: return {std::ldexp(1.0, -7), std::ldexp(1.0, -4), 2e-3};
    default: TORCH_CHECK(false, "no tolerance for ", rounded_through);
  }
}

// The dtype of lower precision (larger ulp, which rtol is) of the two.
at::ScalarType coarsest(at::ScalarType a, at::ScalarType b) {
  return tolerance(a).rtol >= tolerance(b).rtol ? a : b;
}

// |actual - expected| <= atol + rtol |expected| everywhere (torch.testing.assert_close), and the
// relative L2 error of the whole tensor within the dtype's bound.
void expect_close(const std::string& what, const at::Tensor& actual, const at::Tensor& expected,
                  at::ScalarType rounded_through) {
  WAN_CHECK(actual.scalar_type() == expected.scalar_type(), what, ": dtype ", actual.scalar_type(),
            ", expected ", expected.scalar_type());
  WAN_CHECK(actual.sizes() == expected.sizes(), what, ": shape ", actual.sizes(), ", expected ",
            expected.sizes());
  if (actual.sizes() != expected.sizes()) return;
  const Tolerance tol = tolerance(rounded_through);
  const at::Tensor a = actual.to(at::kDouble), e = expected.to(at::kDouble);
  const at::Tensor excess = (a - e).abs() - (tol.atol + tol.rtol * e.abs());
  const int64_t bad = (excess > 0).sum().item<int64_t>();
  WAN_CHECK(bad == 0, what, ": ", bad, " of ", a.numel(), " elements beyond rtol ", tol.rtol, " atol ",
            tol.atol, " (largest excess ", excess.max().item<double>(), ")");
  const double rel = ((a - e).norm() / e.norm().clamp_min(1e-30)).item<double>();
  WAN_CHECK(rel <= tol.rel_l2, what, ": relative L2 error ", rel, " > ", tol.rel_l2);
}

void expect_scalar_close(const std::string& what, const at::Tensor& actual, const at::Tensor& expected) {
  WAN_CHECK(actual.scalar_type() == at::kFloat && actual.dim() == 0, what, ": want a float32 scalar, got ",
            actual.scalar_type(), " of shape ", actual.sizes());
  const double a = actual.item<double>(), e = expected.item<double>();
  WAN_CHECK(std::abs(a - e) <= kReductionRtol * std::abs(e), what, ": ", a, ", expected ", e);
}

// The op's typed handle; throws (and the case fails) when the op or that signature is missing.
template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const std::string& name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow((op_namespace + "::" + name).c_str(), "")
      .typed<Signature>();
}

// Seeded standard-normal values times scale, rounded to dtype, on the device under test
// (tests/kernels/cases.py's randn).
at::Tensor randn(at::IntArrayRef shape, at::ScalarType dtype, uint64_t seed, double scale = 1.0) {
  at::manual_seed(seed);
  return (at::randn(shape) * scale).to(dtype).to(device);
}

const std::vector<std::vector<int64_t>> kShapes = {{2, 7, 77}, {1, 5, 256}};
const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kBFloat16};
const std::vector<bool> kPerToken = {false, true};

// A float32 modulation row: per-token [B, L, C] or per-sample [B, 1, C].
at::Tensor modulation(at::IntArrayRef shape, bool per_token, uint64_t seed, double scale = 1.0) {
  return randn({shape[0], per_token ? shape[1] : 1, shape[2]}, at::kFloat, seed, scale);
}

std::string label(const std::string& name, at::IntArrayRef shape, at::ScalarType dtype, bool per_token) {
  return c10::str(name, " ", shape, " ", dtype, per_token ? " per-token" : " per-sample");
}

// ---- references (wan_kernels/reference.py) ---------------------------------------------------

at::Tensor ref_layernorm_modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale,
                                  bool round_to_input, at::ScalarType out_dtype) {
  at::Tensor normed = at::layer_norm(x.to(at::kFloat), {x.size(-1)}, {}, {}, kEps);
  if (round_to_input) normed = normed.to(x.scalar_type());
  return (normed.to(at::kFloat) * (1 + scale) + shift).to(out_dtype);
}

at::Tensor ref_gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
  return (x.to(at::kFloat) + y.to(at::kFloat) * gate).to(x.scalar_type());
}

at::Tensor ref_rmsnorm_rope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos,
                            const at::Tensor& sin, int64_t num_heads) {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor rstd = at::rsqrt(x32.pow(2).mean({-1}, true) + kEps);
  const at::Tensor normed = (x32 * rstd).to(x.scalar_type()) * weight;
  const at::Tensor pairs = normed.to(at::kFloat).unflatten(-1, {num_heads, -1}).unflatten(-1, {-1, 2});
  const at::Tensor even = pairs.select(-1, 0), odd = pairs.select(-1, 1);
  return at::stack({even * cos - odd * sin, even * sin + odd * cos}, -1).flatten(-2).to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> sampled(const at::Tensor& a, const at::Tensor& b, int64_t stride) {
  const auto every = [stride](const at::Tensor& t) {
    return t.slice(-2, 0, std::nullopt, stride).to(at::kFloat);
  };
  return {every(a), every(b)};
}

at::Tensor ref_rel_l1(const at::Tensor& a, const at::Tensor& b, int64_t stride) {
  const auto [a32, b32] = sampled(a, b, stride);
  return (a32 - b32).abs().sum() / b32.abs().sum();
}

at::Tensor ref_rel_l2(const at::Tensor& a, const at::Tensor& b, int64_t stride) {
  const auto [a32, b32] = sampled(a, b, stride);
  return at::sqrt((a32 - b32).square().sum() / b32.square().sum());
}

// ---- cases -----------------------------------------------------------------------------------

// The ops' C++ signatures, as csrc/*.cpp define them (typed() checks them against the schemas).
using In = const at::Tensor&;
using TensorPair = std::tuple<at::Tensor, at::Tensor>;
using NormSig = at::Tensor(In, In, In, double, bool, at::ScalarType);
using GatedSig = at::Tensor(In, In, In);
using GatedNormSig = TensorPair(In, In, In, In, In, double, at::ScalarType);
using RopeSig = TensorPair(In, In, In, In, In, In, int64_t, double);
using RelSig = at::Tensor(In, In, int64_t);
using PairSig = at::Tensor(In, In);

void test_layernorm_modulate() {
  const auto lnm = op<NormSig>("layernorm_modulate");
  for (const auto& shape : kShapes) {
    for (const auto dtype : kDtypes) {
      for (const bool per_token : kPerToken) {
        const at::Tensor x = randn(shape, dtype, 1);
        const at::Tensor shift = modulation(shape, per_token, 2);
        const at::Tensor scale = modulation(shape, per_token, 3, 0.5);
        for (const bool round_to_input : {true, false}) {
          for (const auto out_dtype : {at::kFloat, dtype}) {
            const auto rounded = coarsest(out_dtype, round_to_input ? dtype : at::kFloat);
            expect_close(c10::str(label("layernorm_modulate", shape, dtype, per_token), " round_to_input=",
                                  round_to_input, " out=", out_dtype),
                         lnm.call(x, shift, scale, kEps, round_to_input, out_dtype),
                         ref_layernorm_modulate(x, shift, scale, round_to_input, out_dtype), rounded);
          }
        }
      }
    }
  }
}

void test_gated_residual() {
  const auto gated = op<GatedSig>("gated_residual");
  for (const auto& shape : kShapes) {
    for (const auto dtype : kDtypes) {
      for (const bool per_token : kPerToken) {
        const at::Tensor gate = modulation(shape, per_token, 3), y = randn(shape, dtype, 2);
        // A float32 residual stream (the Wan model's), then one in the activations' dtype.
        for (const auto x_dtype : {at::kFloat, dtype}) {
          const at::Tensor x = randn(shape, x_dtype, 1);
          expect_close(c10::str(label("gated_residual", shape, dtype, per_token), " x=", x_dtype),
                       gated.call(x, y, gate), ref_gated_residual(x, y, gate), x_dtype);
        }
      }
    }
  }
}

void test_gated_residual_layernorm_modulate() {
  const auto fused = op<GatedNormSig>("gated_residual_layernorm_modulate");
  for (const auto& shape : kShapes) {
    for (const auto dtype : kDtypes) {
      for (const bool per_token : kPerToken) {
        const at::Tensor x = randn(shape, at::kFloat, 1), y = randn(shape, dtype, 2);
        const at::Tensor gate = modulation(shape, per_token, 3), shift = modulation(shape, per_token, 4);
        const at::Tensor scale = modulation(shape, per_token, 5, 0.5);
        const at::Tensor residual = ref_gated_residual(x, y, gate);
        for (const auto out_dtype : {at::kFloat, dtype}) {
          const auto [got_residual, got_out] = fused.call(x, y, gate, shift, scale, kEps, out_dtype);
          const std::string what = label("gated_residual_layernorm_modulate", shape, dtype, per_token) +
                                   " out=" + c10::str(out_dtype);
          expect_close(what + " residual", got_residual, residual, at::kFloat);
          expect_close(what + " modulated", got_out,
                       ref_layernorm_modulate(residual, shift, scale, true, out_dtype), out_dtype);
        }
      }
    }
  }
}

void test_qk_rmsnorm_rope() {
  const auto rope = op<RopeSig>("qk_rmsnorm_rope");
  // [B, L, C] and head dim: 3 heads of 32 (width not a power of two), 2 heads of 128.
  const std::vector<std::pair<std::vector<int64_t>, int64_t>> cases = {{{2, 7, 96}, 32}, {{1, 5, 256}, 128}};
  for (const auto& [shape, head_dim] : cases) {
    for (const auto dtype : kDtypes) {
      const at::Tensor q = randn(shape, dtype, 1), k = randn(shape, dtype, 2);
      const at::Tensor weight_q = 1 + randn({shape[2]}, at::kFloat, 3, 0.1);
      const at::Tensor weight_k = 1 + randn({shape[2]}, at::kFloat, 4, 0.1);
      const at::Tensor angles = randn({shape[1], 1, head_dim / 2}, at::kFloat, 5, 3.0);
      const at::Tensor cos = angles.cos(), sin = angles.sin();
      const int64_t heads = shape[2] / head_dim;
      const auto [got_q, got_k] = rope.call(q, k, weight_q, weight_k, cos, sin, heads, kEps);
      const std::string what =
          c10::str("qk_rmsnorm_rope ", at::IntArrayRef(shape), " ", dtype, " heads=", heads);
      expect_close(what + " q", got_q, ref_rmsnorm_rope(q, weight_q, cos, sin, heads), dtype);
      expect_close(what + " k", got_k, ref_rmsnorm_rope(k, weight_k, cos, sin, heads), dtype);
    }
  }
}

void test_rel_error() {
  const auto rel_l1 = op<RelSig>("rel_l1");
  const auto rel_l2 = op<RelSig>("rel_l2");
  // [B, L, C] and [B, H, L, C] (leading dims flattened), same or mixed dtypes, every and every 3rd token.
  const std::vector<std::vector<int64_t>> shapes = {{2, 9, 77}, {2, 2, 9, 256}};
  for (const auto& shape : shapes) {
    for (const auto dtype : kDtypes) {
      for (const auto b_dtype : {dtype, at::kFloat}) {
        const at::Tensor b = randn(shape, b_dtype, 1);
        const at::Tensor a = (b.to(at::kFloat) + randn(shape, at::kFloat, 2, 0.1)).to(dtype);
        for (const int64_t stride : {1, 3}) {
          const std::string what =
              c10::str(at::IntArrayRef(shape), " ", dtype, "/", b_dtype, " stride=", stride);
          expect_scalar_close("rel_l1 " + what, rel_l1.call(a, b, stride), ref_rel_l1(a, b, stride));
          expect_scalar_close("rel_l2 " + what, rel_l2.call(a, b, stride), ref_rel_l2(a, b, stride));
        }
      }
    }
  }
}

void test_residual_cache() {
  const auto apply = op<PairSig>("residual_apply");
  const auto capture = op<PairSig>("residual_capture");
  const std::vector<std::vector<int64_t>> shapes = {{2, 7, 77}, {5, 256}};
  for (const auto& shape : shapes) {
    for (const auto dtype : kDtypes) {
      const at::Tensor x = randn(shape, dtype, 1), r = randn(shape, at::kFloat, 2);
      const std::string what = c10::str(at::IntArrayRef(shape), " ", dtype);
      expect_close("residual_apply " + what, apply.call(x, r), x.to(at::kFloat) + r, at::kFloat);
      expect_close("residual_capture " + what, capture.call(r, x), r - x.to(at::kFloat), at::kFloat);
    }
  }
}

// Whether calling fn throws a c10::Error whose message contains want ("" for any message).
bool throws_error_containing(const std::function<void()>& fn, const std::string& want, std::string& message) {
  try {
    fn();
  } catch (const c10::Error& err) {
    message = err.what_without_backtrace();
    return message.find(want) != std::string::npos;
  }
  message = "(no exception)";
  return false;
}

// The ops check their arguments themselves (csrc/checks.h), as wan_kernels/ops.py does: a tensor
// of the wrong rank, dtype, size, layout or device throws a c10::Error (a Python exception) that
// names the op, rather than reading out of bounds.
void test_bad_input() {
  const auto lnm = op<NormSig>("layernorm_modulate");
  const auto gated = op<GatedSig>("gated_residual");
  const auto fused = op<GatedNormSig>("gated_residual_layernorm_modulate");
  const auto rope = op<RopeSig>("qk_rmsnorm_rope");
  const auto rel_l1 = op<RelSig>("rel_l1");
  const auto rel_l2 = op<RelSig>("rel_l2");
  const auto apply = op<PairSig>("residual_apply");
  const auto capture = op<PairSig>("residual_capture");
  // x [B, L, C] = [2, 3, 8], a per-sample row [B, 1, C]; qk_rmsnorm_rope with 2 heads of 4.
  const at::Tensor x = randn({2, 3, 8}, at::kFloat, 1), row = randn({2, 1, 8}, at::kFloat, 2);
  const at::Tensor weight = randn({8}, at::kFloat, 3), table = randn({3, 1, 2}, at::kFloat, 4);
  // Right rank, wrong size; then a strided last dim; then a tensor on another device.
  const at::Tensor narrow = x.slice(-1, 0, 4), strided = x.slice(-1, 0, 8, 2);
  const at::Tensor elsewhere = x.to(device.is_cuda() ? at::Device(at::kCPU) : at::Device(at::kMeta));
  const std::vector<std::tuple<std::string, std::string, std::function<void()>>> cases = {
      // Wrong rank: x [L, C] instead of [B, L, C].
      {"layernorm_modulate", "2-D x", [&] { lnm.call(x[0], row, row, kEps, true, at::kFloat); }},
      {"rel_l1", "1-D inputs", [&] { rel_l1.call(x[0][0], x[0][0], 1); }},
      // Wrong dtype.
      {"gated_residual", "an int32 x", [&] { gated.call(x.to(at::kInt), x, row); }},
      {"layernorm_modulate", "an int64 x",
       [&] { lnm.call(x.to(at::kLong), row, row, kEps, true, at::kFloat); }},
      {"layernorm_modulate", "an int8 out_dtype", [&] { lnm.call(x, row, row, kEps, true, at::kChar); }},
      {"gated_residual_layernorm_modulate", "a bfloat16 x",
       [&] { fused.call(x.to(at::kBFloat16), x, row, row, row, kEps, at::kFloat); }},
      {"qk_rmsnorm_rope", "k of another dtype",
       [&] { rope.call(x, x.to(at::kBFloat16), weight, weight, table, table, 2, kEps); }},
      // Wrong size, one per op.
      {"layernorm_modulate", "a narrow shift", [&] { lnm.call(x, narrow, row, kEps, true, at::kFloat); }},
      {"gated_residual", "a narrow y", [&] { gated.call(x, narrow, row); }},
      {"gated_residual_layernorm_modulate", "a scale [B, 2, C]",
       [&] { fused.call(x, x, row, row, x.slice(1, 0, 2), kEps, at::kFloat); }},
      {"qk_rmsnorm_rope", "a short weight_k",
       [&] { rope.call(x, x, weight, weight.slice(0, 0, 6), table, table, 2, kEps); }},
      {"qk_rmsnorm_rope", "a cos of the wrong head size",
       [&] { rope.call(x, x, weight, weight, randn({3, 1, 4}, at::kFloat, 5), table, 2, kEps); }},
      {"qk_rmsnorm_rope", "C not split into even heads",
       [&] { rope.call(x, x, weight, weight, table, table, 3, kEps); }},
      {"rel_l1", "a narrow b", [&] { rel_l1.call(x, narrow, 1); }},
      {"rel_l2", "a narrow b", [&] { rel_l2.call(x, narrow, 1); }},
      {"rel_l2", "stride 0", [&] { rel_l2.call(x, x, 0); }},
      {"residual_apply", "a narrow residual", [&] { apply.call(x, narrow); }},
      {"residual_capture", "a narrow inp", [&] { capture.call(x, narrow); }},
      // A last dim that is not contiguous, a tensor on another device.
      {"residual_capture", "a strided out", [&] { capture.call(strided, narrow); }},
      {"gated_residual", "a gate on another device", [&] { gated.call(x, x, elsewhere); }},
      {"rel_l1", "inputs on another device", [&] { rel_l1.call(elsewhere, elsewhere, 1); }},
  };
  std::string message;
  for (const auto& [name, what, call] : cases) {
    WAN_CHECK(throws_error_containing(call, "wan_kernels::" + name + ": ", message), name, " with ", what,
              ": ", message);
  }
  // An op the library does not have.
  WAN_CHECK(throws_error_containing([] { op<PairSig>("no_such_op"); }, "no_such_op", message),
            "looking up a missing op: ", message);
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, std::function<void()>> cases = {
      {"layernorm_modulate", test_layernorm_modulate},
      {"gated_residual", test_gated_residual},
      {"gated_residual_layernorm_modulate", test_gated_residual_layernorm_modulate},
      {"qk_rmsnorm_rope", test_qk_rmsnorm_rope},
      {"rel_error", test_rel_error},
      {"residual_cache", test_residual_cache},
      {"bad_input", test_bad_input},
  };
  if ((argc != 3 && argc != 5) || (cases.count(argv[2]) == 0 && std::string(argv[2]) != "all")) {
    std::cerr << "usage: " << argv[0] << " LIBRARY CASE [NAMESPACE DEVICE], CASE one of: all";
    for (const auto& [name, fn] : cases) std::cerr << " " << name;
    std::cerr << "\n";
    return 2;
  }
  if (argc == 5) {
    op_namespace = argv[3];
    device = at::Device(argv[4]);
    if (device.is_cuda() && !at::hasCUDA()) {
      std::cout << argv[2] << ": skipped, no CUDA device\n";
      return 77;
    }
  }
  if (dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::cerr << "cannot load " << argv[1] << ": " << dlerror() << "\n";
    return 1;
  }
  for (const auto& [name, fn] : cases) {
    if (name != argv[2] && std::string(argv[2]) != "all") continue;
    try {
      fn();
    } catch (const std::exception& err) {
      ++failures;
      std::cerr << name << ": unexpected exception: " << err.what() << "\n";
    }
  }
  std::cout << argv[2] << ": " << checks - failures << " of " << checks << " checks passed\n";
  return failures == 0 ? 0 : 1;
}
