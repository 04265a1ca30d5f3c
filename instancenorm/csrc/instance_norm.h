// Instance normalization: the contract shared by the CPU and CUDA kernels.
//
// For input x of shape (N, C, *spatial) with M = prod(spatial), per (n, c):
//   mean = sum(x) / M,  var = sum((x - mean)^2) / M  (biased),  inv_std = 1 / sqrt(var + eps)
//   y    = (x - mean) * inv_std * weight[n, c] + bias[n, c]
// The mean is also returned as a float pair (mean + mean_lo == the exact mean to twice the stats precision): with a
// large offset (x = 1e4 + noise) x - mean rounded to float would be wrong by up to half an ulp of the offset, far
// more than the noise allows; the backward takes mean_lo back so it is as exact as the forward. var is the biased
// variance itself (running_var needs it; rebuilding it from inv_std loses it below eps and around 0).
// moments computes the statistics alone (the forward's first phase); normalize_with_stats applies given ones (its
// second phase), y = (x - mean) * inv_std * weight + bias with mean and inv_std of shape (N, C) or (C,): video
// normalizes each frame with statistics that move slowly across frames, not with the frame's own.
// Backward, with xhat = (x - mean) * inv_std:
//   dweight[n, c] = sum(dy * xhat),  dbias[n, c] = sum(dy)
//   dx = weight * inv_std * (dy - dbias / M - xhat * dweight / M)
//
// The shared driver (instance_norm.cpp) validates arguments, picks the memory layout, allocates outputs and
// expands the affine parameters to (N, C); a backend kernel only does arithmetic on dense memory.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace instancenorm {

// Sizes of the problem viewed as (N, C, M). channels_last: memory is (N, M, C) (NHWC / NLC); else (N, C, M).
struct Geometry {
  int64_t N = 0;
  int64_t C = 0;
  int64_t M = 0;
  bool channels_last = false;
};

struct ForwardArgs {
  Geometry g;
  at::Tensor x;       // dense in g's layout, dtype T
  at::Tensor weight;  // (N, C) contiguous, stats dtype
  at::Tensor bias;    // (N, C) contiguous, stats dtype
  double eps;
  at::Tensor y;        // like x; undefined for moments, which computes the statistics only
  at::Tensor mean;     // (N, C) stats dtype
  at::Tensor inv_std;  // (N, C) stats dtype
  at::Tensor var;      // (N, C) stats dtype
  at::Tensor mean_lo;  // (N, C) stats dtype: exact mean - mean
};

struct BackwardArgs {
  Geometry g;
  at::Tensor dy;  // same layout and dtype as x
  at::Tensor x;
  at::Tensor mean;     // (N, C) stats dtype
  at::Tensor mean_lo;  // (N, C) stats dtype, zeros when the caller has none
  at::Tensor inv_std;  // (N, C) stats dtype
  at::Tensor weight;   // (N, C) contiguous, stats dtype
  at::Tensor dx;       // like x
  at::Tensor dweight;  // (N, C) stats dtype: sum(dy * xhat) per instance
  at::Tensor dbias;    // (N, C) stats dtype: sum(dy) per instance
};

// normalize_with_stats: every per-instance tensor is given, expanded to (N, C).
struct ApplyArgs {
  Geometry g;
  at::Tensor x;        // dense in g's layout, dtype T
  at::Tensor mean;     // (N, C) contiguous, stats dtype
  at::Tensor inv_std;  // (N, C) contiguous, stats dtype
  at::Tensor weight;   // (N, C) contiguous, stats dtype
  at::Tensor bias;     // (N, C) contiguous, stats dtype
  at::Tensor y;        // like x
};

using ForwardKernel = void (*)(const ForwardArgs&);
// forward's results: y, mean, inv_std, var, mean_lo.
using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using BackwardKernel = void (*)(const BackwardArgs&);
using ApplyKernel = void (*)(const ApplyArgs&);
// moments' results: mean, inv_std, var.
using Statistics = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Statistics are kept in float for float/half/bfloat16 inputs and in double for double inputs.
at::ScalarType stats_dtype(at::ScalarType input_dtype);

Outputs forward_impl(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                     const std::optional<at::Tensor>& bias, double eps, ForwardKernel kernel);

// In place, for inference: input is overwritten with the output; the statistics are not returned.
void normalize_impl(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                    const std::optional<at::Tensor>& bias, double eps, ForwardKernel kernel);

// Into out, for inference: out has the input's shape, dtype, device and (dense) memory format, and is either the
// input itself or does not overlap it; the statistics are not returned.
void normalize_out_impl(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias, double eps, const at::Tensor& out, ForwardKernel kernel);

Statistics moments_impl(const at::Tensor& input, double eps, ForwardKernel kernel);

// The three flavours of normalize_with_stats, with the rules of forward, normalize_ and normalize_out.
at::Tensor normalize_with_stats_impl(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                     const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                     ApplyKernel kernel);
void normalize_with_stats_inplace_impl(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                       const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                       ApplyKernel kernel);
void normalize_with_stats_out_impl(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                   const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                   const at::Tensor& out, ApplyKernel kernel);

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(const at::Tensor& grad_output, const at::Tensor& input,
                                                             const at::Tensor& mean, const at::Tensor& inv_std,
                                                             const std::optional<at::Tensor>& weight,
                                                             const std::optional<at::Tensor>& mean_lo,
                                                             BackwardKernel kernel);

// One typed entry point per op and kernel, for TORCH_LIBRARY_IMPL.
template <ForwardKernel kernel>
Outputs forward_op(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                   const std::optional<at::Tensor>& bias, double eps) {
  return forward_impl(input, weight, bias, eps, kernel);
}

template <ForwardKernel kernel>
void normalize_op(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                  const std::optional<at::Tensor>& bias, double eps) {
  normalize_impl(input, weight, bias, eps, kernel);
}

template <ForwardKernel kernel>
void normalize_out_op(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias, double eps, const at::Tensor& out) {
  normalize_out_impl(input, weight, bias, eps, out, kernel);
}

template <BackwardKernel kernel>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_op(const at::Tensor& grad_output, const at::Tensor& input,
                                                           const at::Tensor& mean, const at::Tensor& inv_std,
                                                           const std::optional<at::Tensor>& weight,
                                                           const std::optional<at::Tensor>& mean_lo) {
  return backward_impl(grad_output, input, mean, inv_std, weight, mean_lo, kernel);
}

template <ForwardKernel kernel>
Statistics moments_op(const at::Tensor& input, double eps) {
  return moments_impl(input, eps, kernel);
}

template <ApplyKernel kernel>
at::Tensor normalize_with_stats_op(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                   const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias) {
  return normalize_with_stats_impl(input, mean, inv_std, weight, bias, kernel);
}

template <ApplyKernel kernel>
void normalize_with_stats_inplace_op(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                     const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias) {
  normalize_with_stats_inplace_impl(input, mean, inv_std, weight, bias, kernel);
}

template <ApplyKernel kernel>
void normalize_with_stats_out_op(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                 const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                 const at::Tensor& out) {
  normalize_with_stats_out_impl(input, mean, inv_std, weight, bias, out, kernel);
}

// CPU: one kernel per instruction set (cpu/instance_norm_cpu.cpp compiled once per variant); forward_cpu,
// backward_cpu and apply_cpu call the variant cpu/dispatch.cpp chose for this CPU when the library was loaded.
void forward_cpu(const ForwardArgs& args);
void backward_cpu(const BackwardArgs& args);
void apply_cpu(const ApplyArgs& args);
#ifdef INSTANCENORM_WITH_CUDA
void forward_cuda(const ForwardArgs& args);
void backward_cuda(const BackwardArgs& args);
void apply_cuda(const ApplyArgs& args);
#endif

}  // namespace instancenorm
