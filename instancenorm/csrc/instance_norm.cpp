// The backend-independent half of every op: argument checks, layout choice, output allocation.
#include "instance_norm.h"

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/core/DeviceGuard.h>

#include <limits>

namespace instancenorm {
namespace {

// (N, M, C) in memory: strides (M*C, 1, ..., C) with size-1 dims ignored, as PyTorch's channels_last does.
bool is_channels_last(const at::Tensor& x) {
  int64_t expected = x.size(1);
  for (int64_t d = x.dim() - 1; d >= 2; --d) {
    if (x.size(d) != 1 && x.stride(d) != expected) return false;
    expected *= x.size(d);
  }
  return (x.size(1) == 1 || x.stride(1) == 1) && (x.size(0) == 1 || x.stride(0) == expected);
}

// Whether b is laid out in memory as a is: equal strides wherever a dim has more than one element (the stride of a
// size-1 dim never moves a pointer, so a slice such as randn(1, 6, 8, 8)[:, :3] is as dense as a fresh tensor).
bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) != 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

// The tensor a kernel reads: x itself when it is dense NC* or N*C, otherwise a contiguous copy.
at::Tensor dense_layout(const at::Tensor& x, bool* channels_last) {
  if (x.is_contiguous()) {
    *channels_last = false;
    return x;
  }
  if (is_channels_last(x)) {
    *channels_last = true;
    return x;
  }
  *channels_last = false;
  return x.contiguous();
}

Geometry check_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() >= 3, "instancenorm.", op,
              ": expected input of shape (N, C, *spatial) with at least 3 "
              "dims, got ",
              x.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "instancenorm.", op, ": expected a float32, float64, float16 or bfloat16 input, got ", dtype);
  Geometry g;
  g.N = x.size(0);
  g.C = x.size(1);
  g.M = 1;
  for (int64_t d = 2; d < x.dim(); ++d) g.M *= x.size(d);
  return g;
}

// weight/bias of shape (C,) or (N, C), expanded to a contiguous (N, C) tensor in the stats dtype.
at::Tensor affine_nc(const std::optional<at::Tensor>& param, const at::Tensor& x, const Geometry& g, double fill,
                     const char* name) {
  const auto options = x.options().dtype(stats_dtype(x.scalar_type()));
  if (!param.has_value() || !param->defined()) return at::full({g.N, g.C}, fill, options);
  const at::Tensor& p = *param;
  TORCH_CHECK(p.device() == x.device(), "instancenorm: ", name, " is on ", p.device(), " but input is on ", x.device());
  TORCH_CHECK(at::isFloatingType(p.scalar_type()), "instancenorm: ", name, " must be floating point, got ",
              p.scalar_type());
  const bool per_channel = p.dim() == 1 && p.size(0) == g.C;
  const bool per_sample = p.dim() == 2 && p.size(0) == g.N && p.size(1) == g.C;
  TORCH_CHECK(per_channel || per_sample, "instancenorm: ", name, " must have shape (C,) = (", g.C, ",) or (N, C) = (",
              g.N, ", ", g.C, "), got ", p.sizes());
  return p.to(options.dtype()).expand({g.N, g.C}).contiguous();
}

void check_stats(const at::Tensor& s, const at::Tensor& x, const Geometry& g, const char* name) {
  TORCH_CHECK(s.device() == x.device(), "instancenorm.backward: ", name, " is on ", s.device(), " but input is on ",
              x.device());
  TORCH_CHECK(s.dim() == 2 && s.size(0) == g.N && s.size(1) == g.C, "instancenorm.backward: ", name,
              " must have shape (N, C) = (", g.N, ", ", g.C, "), got ", s.sizes());
  TORCH_CHECK(s.scalar_type() == stats_dtype(x.scalar_type()), "instancenorm.backward: ", name, " must be ",
              stats_dtype(x.scalar_type()), " for a ", x.scalar_type(), " input, got ", s.scalar_type());
}

}  // namespace

at::ScalarType stats_dtype(at::ScalarType input_dtype) { return input_dtype == at::kDouble ? at::kDouble : at::kFloat; }

namespace {

// Checks and fills everything a forward kernel reads and writes, except the output, which the caller chooses.
ForwardArgs prepare_forward(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, double eps, const char* op) {
  Geometry g = check_input(input, op);
  TORCH_CHECK(eps >= 0, "instancenorm.", op, ": eps must be >= 0, got ", eps);
  ForwardArgs a;
  a.x = dense_layout(input, &g.channels_last);
  a.g = g;
  a.eps = eps;
  a.weight = affine_nc(weight, input, g, 1.0, "weight");
  a.bias = affine_nc(bias, input, g, 0.0, "bias");
  const auto stats_options = input.options().dtype(stats_dtype(input.scalar_type()));
  a.mean = at::empty({g.N, g.C}, stats_options);
  a.inv_std = at::empty({g.N, g.C}, stats_options);
  a.var = at::empty({g.N, g.C}, stats_options);
  a.mean_lo = at::empty({g.N, g.C}, stats_options);
  return a;
}

// Checks and fills everything an apply kernel reads; the statistics, like the affine parameters, may be (C,).
ApplyArgs prepare_apply(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                        const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                        const char* op) {
  Geometry g = check_input(input, op);
  ApplyArgs a;
  a.x = dense_layout(input, &g.channels_last);
  a.g = g;
  a.mean = affine_nc(mean, input, g, 0.0, "mean");
  a.inv_std = affine_nc(inv_std, input, g, 1.0, "inv_std");
  a.weight = affine_nc(weight, input, g, 1.0, "weight");
  a.bias = affine_nc(bias, input, g, 0.0, "bias");
  return a;
}

void run_apply(const ApplyArgs& a, ApplyKernel kernel) {
  if (a.g.N * a.g.C * a.g.M == 0) return;
  c10::OptionalDeviceGuard guard(a.x.device());
  kernel(a);
}

// In place needs the input itself as the kernel reads it (x_read).
void check_in_place(const at::Tensor& input, const at::Tensor& x_read, const char* op) {
  TORCH_CHECK(x_read.is_same(input), "instancenorm.", op,
              ": input must be contiguous or channels_last to be normalized in place");
}

void check_out(const at::Tensor& input, const at::Tensor& x_read, const Geometry& g, const at::Tensor& out,
               const char* op) {
  TORCH_CHECK(
      out.sizes() == input.sizes() && out.scalar_type() == input.scalar_type() && out.device() == input.device(),
      "instancenorm.", op, ": out must be a ", input.scalar_type(), " tensor of shape ", input.sizes(), " on ",
      input.device(), ", got ", out.scalar_type(), " ", out.sizes(), " on ", out.device());
  // The kernels write out in the layout they read x in; a strided input is read from a contiguous copy.
  TORCH_CHECK(same_layout(x_read, out), "instancenorm.", op, ": out must have the memory format the input is read in (",
              g.channels_last ? "channels_last" : "contiguous", "), got strides ", out.strides());
  at::assert_no_partial_overlap(out, x_read);  // out may be the input itself (in place), but not part of it
}

void run_forward(ForwardArgs& a, ForwardKernel kernel) {
  if (a.g.N * a.g.C == 0) return;
  if (a.g.M == 0) {  // statistics of an empty set, as torch.mean gives them
    for (at::Tensor* s : {&a.mean, &a.inv_std, &a.var, &a.mean_lo}) s->fill_(std::numeric_limits<double>::quiet_NaN());
    return;
  }
  c10::OptionalDeviceGuard guard(a.x.device());
  kernel(a);
}

}  // namespace

Outputs forward_impl(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                     const std::optional<at::Tensor>& bias, double eps, ForwardKernel kernel) {
  ForwardArgs a = prepare_forward(input, weight, bias, eps, "forward");
  a.y = at::empty_like(a.x);
  run_forward(a, kernel);
  return {a.y, a.mean, a.inv_std, a.var, a.mean_lo};
}

void normalize_impl(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                    const std::optional<at::Tensor>& bias, double eps, ForwardKernel kernel) {
  ForwardArgs a = prepare_forward(input, weight, bias, eps, "normalize_");
  check_in_place(input, a.x, "normalize_");
  a.y = a.x;  // every kernel reads an element (or its chunk) before writing the same place
  run_forward(a, kernel);
}

void normalize_out_impl(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias, double eps, const at::Tensor& out,
                        ForwardKernel kernel) {
  ForwardArgs a = prepare_forward(input, weight, bias, eps, "normalize_out");
  check_out(input, a.x, a.g, out, "normalize_out");
  a.y = out;
  run_forward(a, kernel);
}

Statistics moments_impl(const at::Tensor& input, double eps, ForwardKernel kernel) {
  ForwardArgs a = prepare_forward(input, std::nullopt, std::nullopt, eps, "moments");
  run_forward(a, kernel);  // no output: the kernel stops after the statistics
  return {a.mean, a.inv_std, a.var};
}

at::Tensor normalize_with_stats_impl(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                     const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                     ApplyKernel kernel) {
  ApplyArgs a = prepare_apply(input, mean, inv_std, weight, bias, "normalize_with_stats");
  a.y = at::empty_like(a.x);
  run_apply(a, kernel);
  return a.y;
}

void normalize_with_stats_inplace_impl(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                       const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                       ApplyKernel kernel) {
  ApplyArgs a = prepare_apply(input, mean, inv_std, weight, bias, "normalize_with_stats_");
  check_in_place(input, a.x, "normalize_with_stats_");
  a.y = a.x;
  run_apply(a, kernel);
}

void normalize_with_stats_out_impl(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                   const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                   const at::Tensor& out, ApplyKernel kernel) {
  ApplyArgs a = prepare_apply(input, mean, inv_std, weight, bias, "normalize_with_stats_out");
  check_out(input, a.x, a.g, out, "normalize_with_stats_out");
  a.y = out;
  run_apply(a, kernel);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(const at::Tensor& grad_output, const at::Tensor& input,
                                                             const at::Tensor& mean, const at::Tensor& inv_std,
                                                             const std::optional<at::Tensor>& weight,
                                                             const std::optional<at::Tensor>& mean_lo,
                                                             BackwardKernel kernel) {
  Geometry g = check_input(input, "backward");
  TORCH_CHECK(grad_output.sizes() == input.sizes(), "instancenorm.backward: grad_output has shape ",
              grad_output.sizes(), " but input has ", input.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), "instancenorm.backward: grad_output is ",
              grad_output.scalar_type(), " but input is ", input.scalar_type());
  TORCH_CHECK(grad_output.device() == input.device(), "instancenorm.backward: grad_output is on ", grad_output.device(),
              " but input is on ", input.device());
  check_stats(mean, input, g, "mean");
  check_stats(inv_std, input, g, "inv_std");
  const bool has_mean_lo = mean_lo.has_value() && mean_lo->defined();
  if (has_mean_lo) check_stats(*mean_lo, input, g, "mean_lo");
  c10::OptionalDeviceGuard guard(input.device());

  BackwardArgs a;
  a.x = dense_layout(input, &g.channels_last);
  a.g = g;
  // dy must share x's layout; a gradient arriving in another layout is copied once.
  a.dy = same_layout(a.x, grad_output) ? grad_output : at::empty_like(a.x).copy_(grad_output);
  a.mean = mean.contiguous();
  a.mean_lo = has_mean_lo ? mean_lo->contiguous() : at::zeros_like(a.mean);
  a.inv_std = inv_std.contiguous();
  a.weight = affine_nc(weight, input, g, 1.0, "weight");
  a.dx = at::empty_like(a.x);
  // Fresh (N, C) contiguous tensors, whatever mean's strides (the fake implementation promises the same).
  a.dweight = at::zeros({g.N, g.C}, mean.options());
  a.dbias = at::zeros({g.N, g.C}, mean.options());
  if (g.N * g.C > 0 && g.M > 0) kernel(a);
  return {a.dx, a.dweight, a.dbias};
}

}  // namespace instancenorm
