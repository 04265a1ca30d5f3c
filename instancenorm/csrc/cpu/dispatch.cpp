// Picks the CPU kernel variant for this machine once, on first use, as ATen's DispatchStub does.
//
// setup.py compiles cpu/instance_norm_cpu.cpp once per instruction set: DEFAULT (the compiler's baseline, runs on
// any CPU of the architecture) and, on x86-64, AVX2 and AVX512. This file is compiled with baseline flags only, so
// loading the library never executes an instruction the CPU lacks. INSTANCENORM_CPU_CAPABILITY=default|avx2|avx512
// lowers the choice (e.g. to compare variants); asking for more than the CPU supports gets the best it supports.
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

#include "instance_norm.h"

namespace instancenorm {

#define INSTANCENORM_DECLARE_VARIANT(name) \
  namespace name {                         \
  void forward(const ForwardArgs& args);   \
  void backward(const BackwardArgs& args); \
  void apply(const ApplyArgs& args);       \
  }
INSTANCENORM_DECLARE_VARIANT(DEFAULT)
#ifdef INSTANCENORM_CPU_AVX2
INSTANCENORM_DECLARE_VARIANT(AVX2)
#endif
#ifdef INSTANCENORM_CPU_AVX512
INSTANCENORM_DECLARE_VARIANT(AVX512)
#endif
#undef INSTANCENORM_DECLARE_VARIANT

namespace {

enum class Capability { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

struct Variant {
  const char* name;
  ForwardKernel forward;
  BackwardKernel backward;
  ApplyKernel apply;
};

// The best level this CPU (and its OS, which must save the wider registers: libgcc's cpu model checks XGETBV)
// supports, among the variants this build has.
Capability supported() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
#ifdef INSTANCENORM_CPU_AVX512
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")) {
    return Capability::kAvx512;
  }
#endif
#ifdef INSTANCENORM_CPU_AVX2
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Capability::kAvx2;
#endif
#endif
  return Capability::kDefault;
}

Capability requested(Capability best) {
  const char* env = std::getenv("INSTANCENORM_CPU_CAPABILITY");
  if (env == nullptr || *env == '\0') return best;
  std::string value(env);
  std::transform(value.begin(), value.end(), value.begin(), [](unsigned char c) { return std::tolower(c); });
  Capability want;
  if (value == "default") want = Capability::kDefault;
  else if (value == "avx2") want = Capability::kAvx2;
  else if (value == "avx512") want = Capability::kAvx512;
  else TORCH_CHECK(false, "INSTANCENORM_CPU_CAPABILITY must be default, avx2 or avx512, got '", env, "'");
  return std::min(want, best);
}

Variant make_variant(Capability c) {
  switch (c) {
#ifdef INSTANCENORM_CPU_AVX512
    case Capability::kAvx512: return {"avx512", &AVX512::forward, &AVX512::backward, &AVX512::apply};
#endif
#ifdef INSTANCENORM_CPU_AVX2
    case Capability::kAvx2: return {"avx2", &AVX2::forward, &AVX2::backward, &AVX2::apply};
#endif
    default: return {"default", &DEFAULT::forward, &DEFAULT::backward, &DEFAULT::apply};
  }
}

const Variant& variant() {
  static const Variant chosen = make_variant(requested(supported()));
  return chosen;
}

std::string cpu_capability() { return variant().name; }

}  // namespace

void forward_cpu(const ForwardArgs& args) { variant().forward(args); }
void backward_cpu(const BackwardArgs& args) { variant().backward(args); }
void apply_cpu(const ApplyArgs& args) { variant().apply(args); }

TORCH_LIBRARY_FRAGMENT(instancenorm, m) { m.def("cpu_capability() -> str", &cpu_capability); }

TORCH_LIBRARY_IMPL(instancenorm, CPU, m) {
  m.impl("forward", &forward_op<forward_cpu>);
  m.impl("normalize_", &normalize_op<forward_cpu>);
  m.impl("normalize_out", &normalize_out_op<forward_cpu>);
  m.impl("backward", &backward_op<backward_cpu>);
  m.impl("moments", &moments_op<forward_cpu>);
  m.impl("normalize_with_stats", &normalize_with_stats_op<apply_cpu>);
  m.impl("normalize_with_stats_", &normalize_with_stats_inplace_op<apply_cpu>);
  m.impl("normalize_with_stats_out", &normalize_with_stats_out_op<apply_cpu>);
}

}  // namespace instancenorm
