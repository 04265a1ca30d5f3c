// Autograd for instancenorm::forward: the backward op is fed the mean (as its float pair) and inverse std the forward
// saved, so the statistics are never recomputed. Also the Autograd and ADInplaceOrView kernels of the inference ops
// normalize_ and normalize_out: they bump the version of what they write, so a graph that saved it fails in backward
// as after any in-place op, and they refuse to run where autograd would need to record them. normalize_with_stats
// gets the same three flavours: its autograd treats the statistics as inputs, and its backward is plain ATen ops
// (elementwise products and sums over the plane). moments has no derivative and refuses an input that wants one.
//
// Why C++ and not torch.library.register_autograd in Python: the Python wrapper's fixed cost per forward+backward
// is more than the kernels' own time on small inputs, and still a noticeable share of a memory-bound call on the
// network's activations (docs/benchmarks.md has the measurements).
#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "instance_norm.h"

namespace instancenorm {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using OptionalTensor = std::optional<at::Tensor>;

// The op's handle, looked up once per call site (a static in each call_* function).
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

Outputs call_forward(const at::Tensor& input, const OptionalTensor& weight, const OptionalTensor& bias, double eps) {
  static const auto op = find_op<Outputs(const at::Tensor&, const OptionalTensor&, const OptionalTensor&, double)>(
      "instancenorm::forward");
  return op.call(input, weight, bias, eps);
}

Grads call_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
                    const at::Tensor& inv_std, const OptionalTensor& weight, const OptionalTensor& mean_lo) {
  static const auto op = find_op<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                       const OptionalTensor&, const OptionalTensor&)>("instancenorm::backward");
  return op.call(grad_output, input, mean, inv_std, weight, mean_lo);
}

void call_normalize_(const at::Tensor& input, const OptionalTensor& weight, const OptionalTensor& bias, double eps) {
  static const auto op = find_op<void(const at::Tensor&, const OptionalTensor&, const OptionalTensor&, double)>(
      "instancenorm::normalize_");
  op.call(input, weight, bias, eps);
}

void call_normalize_out(const at::Tensor& input, const OptionalTensor& weight, const OptionalTensor& bias, double eps,
                        const at::Tensor& out) {
  static const auto op =
      find_op<void(const at::Tensor&, const OptionalTensor&, const OptionalTensor&, double, const at::Tensor&)>(
          "instancenorm::normalize_out");
  op.call(input, weight, bias, eps, out);
}

Statistics call_moments(const at::Tensor& input, double eps) {
  static const auto op = find_op<Statistics(const at::Tensor&, double)>("instancenorm::moments");
  return op.call(input, eps);
}

at::Tensor call_normalize_with_stats(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                     const OptionalTensor& weight, const OptionalTensor& bias) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                         const OptionalTensor&)>("instancenorm::normalize_with_stats");
  return op.call(input, mean, inv_std, weight, bias);
}

void call_normalize_with_stats_(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                const OptionalTensor& weight, const OptionalTensor& bias) {
  static const auto op = find_op<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                                      const OptionalTensor&)>("instancenorm::normalize_with_stats_");
  op.call(input, mean, inv_std, weight, bias);
}

void call_normalize_with_stats_out(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                   const OptionalTensor& weight, const OptionalTensor& bias, const at::Tensor& out) {
  static const auto op =
      find_op<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                   const OptionalTensor&, const at::Tensor&)>("instancenorm::normalize_with_stats_out");
  op.call(input, mean, inv_std, weight, bias, out);
}

std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// The kernel returns affine gradients per instance (N, C); a per-channel parameter (C,) sums them over N.
at::Tensor gradient_for(const at::Tensor& per_instance, const at::Tensor& param, bool needed) {
  if (!needed) return at::Tensor();
  const at::Tensor grad = param.dim() == 2 ? per_instance : per_instance.sum(0);
  return grad.to(param.scalar_type());
}

class InstanceNormFunction : public torch::autograd::Function<InstanceNormFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const OptionalTensor& weight,
                               const OptionalTensor& bias, double eps) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, mean, inv_std, var, mean_lo] = call_forward(input, weight, bias, eps);
    // The bias is not needed by the backward, only whether it was given (and its dtype, for its gradient).
    ctx->save_for_backward({input, weight.value_or(at::Tensor()), mean, inv_std, mean_lo});
    const bool has_bias = bias.has_value() && bias->defined();
    ctx->saved_data["has_bias"] = has_bias;
    if (has_bias) {
      ctx->saved_data["bias_per_sample"] = bias->dim() == 2;
      ctx->saved_data["bias_dtype"] = static_cast<int64_t>(bias->scalar_type());
    }
    ctx->mark_non_differentiable({mean, inv_std, var, mean_lo});
    ctx->set_materialize_grads(false);  // the statistics never get a gradient: no zero tensors made for them
    return {y, mean, inv_std, var, mean_lo};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1], &mean = saved[2], &inv_std = saved[3], &mean_lo = saved[4];
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const at::Tensor& grad_y = grads[0];
    if (!grad_y.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};  // y was not used
    auto [dx, dweight, dbias] = call_backward(grad_y, input, mean, inv_std, defined_or_none(weight), mean_lo);
    // needs_input_grad counts only the tensor arguments given: an absent weight shifts bias down by one.
    const size_t weight_edge = 1, bias_edge = 1 + size_t(weight.defined());
    at::Tensor bias_grad;
    if (has_bias && ctx->needs_input_grad(bias_edge)) {
      bias_grad = ctx->saved_data["bias_per_sample"].toBool() ? dbias : dbias.sum(0);
      bias_grad = bias_grad.to(static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt()));
    }
    return {ctx->needs_input_grad(0) ? dx : at::Tensor(),
            weight.defined() ? gradient_for(dweight, weight, ctx->needs_input_grad(weight_edge)) : at::Tensor(),
            bias_grad, at::Tensor()};
  }
};

// The backward is not differentiable itself. Under create_graph=True its outputs join the graph, so a gradient
// penalty gets a first-order gradient, and only differentiating that gradient fails, with this message instead
// of torch's silent zeros for an op without autograd.
class InstanceNormBackwardFunction : public torch::autograd::Function<InstanceNormBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* /*ctx*/, const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& mean, const at::Tensor& inv_std, const OptionalTensor& weight,
                               const OptionalTensor& mean_lo) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [dx, dweight, dbias] = call_backward(grad_output, input, mean, inv_std, weight, mean_lo);
    return {dx, dweight, dbias};
  }

  static variable_list backward(AutogradContext* /*ctx*/, variable_list /*grads*/) {
    TORCH_CHECK(false,
                "instancenorm: double backward (differentiating a gradient of instance_norm) is not "
                "supported");
  }
};

// y = (x - mean) * inv_std * w + b with the statistics as inputs, so per element dx = dy * w * inv_std, and per
// instance dmean = -sum(dy * w) * inv_std, dinv_std = sum(dy * w * (x - mean)), dweight = sum(dy * xhat),
// dbias = sum(dy). Computed in the stats dtype with ATen ops on (N, C, 1, ...) views that broadcast over the plane.
class NormalizeWithStatsFunction : public torch::autograd::Function<NormalizeWithStatsFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& mean,
                               const at::Tensor& inv_std, const OptionalTensor& weight, const OptionalTensor& bias) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const at::Tensor y = call_normalize_with_stats(input, mean, inv_std, weight, bias);
    ctx->save_for_backward({input, mean, inv_std, weight.value_or(at::Tensor()), bias.value_or(at::Tensor())});
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &mean = saved[1], &inv_std = saved[2], &weight = saved[3], &bias = saved[4];
    const at::ScalarType acc = stats_dtype(input.scalar_type());
    const int64_t N = input.size(0), C = input.size(1);
    std::vector<int64_t> per_plane(input.dim(), 1), plane_dims;
    per_plane[0] = N, per_plane[1] = C;
    for (int64_t d = 2; d < input.dim(); ++d) plane_dims.push_back(d);
    // A (C,) or (N, C) tensor as (N, C, 1, ...), to broadcast over each plane.
    auto over_plane = [&](const at::Tensor& t) { return t.to(acc).expand({N, C}).reshape(per_plane); };
    auto plane_sum = [&](const at::Tensor& t) { return t.sum(plane_dims); };

    const at::Tensor dy = grads[0].to(acc);
    const at::Tensor dy_w = weight.defined() ? dy * over_plane(weight) : dy;
    const at::Tensor rstd = over_plane(inv_std);
    // Edges number only the tensors given, as in InstanceNormFunction: an absent weight moves the bias down by one.
    const size_t weight_edge = 3, bias_edge = 3 + size_t(weight.defined());
    const bool need_xc = ctx->needs_input_grad(2) || (weight.defined() && ctx->needs_input_grad(weight_edge));
    const at::Tensor xc = need_xc ? input.to(acc) - over_plane(mean) : at::Tensor();
    return {
        ctx->needs_input_grad(0) ? (dy_w * rstd).to(input.scalar_type()) : at::Tensor(),
        ctx->needs_input_grad(1) ? gradient_for(-plane_sum(dy_w * rstd), mean, true) : at::Tensor(),
        ctx->needs_input_grad(2) ? gradient_for(plane_sum(dy_w * xc), inv_std, true) : at::Tensor(),
        weight.defined() && ctx->needs_input_grad(weight_edge) ? gradient_for(plane_sum(dy * xc * rstd), weight, true)
                                                               : at::Tensor(),
        bias.defined() && ctx->needs_input_grad(bias_edge) ? gradient_for(plane_sum(dy), bias, true) : at::Tensor(),
    };
  }
};

template <typename T>
bool wants_grad(const T& arg) {
  if constexpr (std::is_same_v<T, at::Tensor>) return arg.requires_grad();
  else if constexpr (std::is_same_v<T, std::optional<at::Tensor>>) return arg.has_value() && arg->requires_grad();
  else return false;
}

template <typename T>
bool has_forward_grad(const T& arg) {
  if constexpr (std::is_same_v<T, at::Tensor>) return arg.defined() && arg._fw_grad(/*level=*/0).defined();
  else if constexpr (std::is_same_v<T, OptionalTensor>) return arg.has_value() && has_forward_grad(*arg);
  else return false;
}

// A C++ autograd Function has no forward-mode (jvp) formula: without this check a dual input would give a primal
// output with its tangent silently dropped.
template <typename... Args>
void refuse_forward_ad(const char* op, const Args&... args) {
  TORCH_CHECK(!(has_forward_grad(args) || ...), "instancenorm.", op,
              ": forward-mode AD (torch.autograd.forward_ad, "
              "torch.func.jvp / jacfwd) is not supported; use instancenorm.reference.instance_norm for it");
}

// Through Function, which records a graph node, when autograd is recording and an argument wants a gradient; else
// straight to the kernel.
template <typename Function, typename Result, typename Call, typename... Args>
Result record_or_call(const Call& call, const Args&... args) {
  if (!(at::GradMode::is_enabled() && (wants_grad(args) || ...))) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call(args...);
  }
  const variable_list outputs = Function::apply(args...);
  Result result;
  std::apply(
      [&](auto&... out) {
        size_t i = 0;
        ((out = outputs[i++]), ...);
      },
      result);
  return result;
}

Outputs forward_autograd(const at::Tensor& input, const OptionalTensor& weight, const OptionalTensor& bias,
                         double eps) {
  refuse_forward_ad("forward", input, weight, bias);
  return record_or_call<InstanceNormFunction, Outputs>(call_forward, input, weight, bias, eps);
}

at::Tensor normalize_with_stats_autograd(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                         const OptionalTensor& weight, const OptionalTensor& bias) {
  refuse_forward_ad("normalize_with_stats", input, mean, inv_std, weight, bias);
  auto [y] = record_or_call<NormalizeWithStatsFunction, std::tuple<at::Tensor>>(
      [](const auto&... args) { return std::tuple<at::Tensor>(call_normalize_with_stats(args...)); }, input, mean,
      inv_std, weight, bias);
  return y;
}

Grads backward_autograd(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
                        const at::Tensor& inv_std, const OptionalTensor& weight, const OptionalTensor& mean_lo) {
  refuse_forward_ad("backward", grad_output, input, weight);
  return record_or_call<InstanceNormBackwardFunction, Grads>(call_backward, grad_output, input, mean, inv_std, weight,
                                                             mean_lo);
}

// ---- The inference ops. ----

// As torch's own in-place ops: writing into a leaf that requires grad would silently detach it from its graph.
void check_writable(const at::Tensor& t, const char* op) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && t.requires_grad() && t.is_leaf()), "instancenorm.", op,
              ": a leaf Variable that requires grad is being used in an in-place operation.");
}

// These ops have no derivative: while autograd records, no argument may require grad (the message names the
// differentiable call). The kernel then runs below autograd; the ADInplaceOrView kernel bumps the version.
template <typename... Args>
void refuse_autograd(const char* op, const char* differentiable, const Args&... args) {
  refuse_forward_ad(op, args...);
  TORCH_CHECK(!(at::GradMode::is_enabled() && (wants_grad(args) || ...)), "instancenorm.", op,
              " is for inference and not differentiable, but an argument requires grad: use ", differentiable,
              " where gradients are needed");
}

constexpr const char* kInstanceNorm = "instancenorm.instance_norm (without out=)";
constexpr const char* kNormalizeWithStats = "instancenorm.normalize_with_stats (without out=)";

void normalize_autograd(const at::Tensor& input, const OptionalTensor& weight, const OptionalTensor& bias, double eps) {
  check_writable(input, "normalize_");
  refuse_autograd("normalize_", kInstanceNorm, input, weight, bias);
  c10::impl::ExcludeDispatchKeyGuard no_autograd(c10::autograd_dispatch_keyset);
  call_normalize_(input, weight, bias, eps);
}

void normalize_out_autograd(const at::Tensor& input, const OptionalTensor& weight, const OptionalTensor& bias,
                            double eps, const at::Tensor& out) {
  check_writable(out, "normalize_out");
  refuse_autograd("normalize_out", kInstanceNorm, input, weight, bias);
  c10::impl::ExcludeDispatchKeyGuard no_autograd(c10::autograd_dispatch_keyset);
  call_normalize_out(input, weight, bias, eps, out);
}

void normalize_with_stats_inplace_autograd(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                           const OptionalTensor& weight, const OptionalTensor& bias) {
  check_writable(input, "normalize_with_stats_");
  refuse_autograd("normalize_with_stats_", kNormalizeWithStats, input, mean, inv_std, weight, bias);
  c10::impl::ExcludeDispatchKeyGuard no_autograd(c10::autograd_dispatch_keyset);
  call_normalize_with_stats_(input, mean, inv_std, weight, bias);
}

void normalize_with_stats_out_autograd(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                       const OptionalTensor& weight, const OptionalTensor& bias,
                                       const at::Tensor& out) {
  check_writable(out, "normalize_with_stats_out");
  refuse_autograd("normalize_with_stats_out", kNormalizeWithStats, input, mean, inv_std, weight, bias);
  c10::impl::ExcludeDispatchKeyGuard no_autograd(c10::autograd_dispatch_keyset);
  call_normalize_with_stats_out(input, mean, inv_std, weight, bias, out);
}

// The statistics of a graph's activations are read, not trained through: asking for their gradient is a mistake
// worth an error rather than silently detached results.
Statistics moments_autograd(const at::Tensor& input, double eps) {
  refuse_autograd("moments", "input.detach() (the same statistics), or instancenorm.reference.moments,", input);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return call_moments(input, eps);
}

void normalize_inplace_or_view(const at::Tensor& input, const OptionalTensor& weight, const OptionalTensor& bias,
                               double eps) {
  {
    at::AutoDispatchBelowADInplaceOrView below;
    call_normalize_(input, weight, bias, eps);
  }
  torch::autograd::increment_version(input);
}

void normalize_out_inplace_or_view(const at::Tensor& input, const OptionalTensor& weight, const OptionalTensor& bias,
                                   double eps, const at::Tensor& out) {
  {
    at::AutoDispatchBelowADInplaceOrView below;
    call_normalize_out(input, weight, bias, eps, out);
  }
  torch::autograd::increment_version(out);
}

void normalize_with_stats_inplace_or_view(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& inv_std,
                                          const OptionalTensor& weight, const OptionalTensor& bias) {
  {
    at::AutoDispatchBelowADInplaceOrView below;
    call_normalize_with_stats_(input, mean, inv_std, weight, bias);
  }
  torch::autograd::increment_version(input);
}

void normalize_with_stats_out_inplace_or_view(const at::Tensor& input, const at::Tensor& mean,
                                              const at::Tensor& inv_std, const OptionalTensor& weight,
                                              const OptionalTensor& bias, const at::Tensor& out) {
  {
    at::AutoDispatchBelowADInplaceOrView below;
    call_normalize_with_stats_out(input, mean, inv_std, weight, bias, out);
  }
  torch::autograd::increment_version(out);
}

}  // namespace

TORCH_LIBRARY_IMPL(instancenorm, Autograd, m) {
  m.impl("forward", &forward_autograd);
  m.impl("backward", &backward_autograd);
  m.impl("normalize_", &normalize_autograd);
  m.impl("normalize_out", &normalize_out_autograd);
  m.impl("moments", &moments_autograd);
  m.impl("normalize_with_stats", &normalize_with_stats_autograd);
  m.impl("normalize_with_stats_", &normalize_with_stats_inplace_autograd);
  m.impl("normalize_with_stats_out", &normalize_with_stats_out_autograd);
}

TORCH_LIBRARY_IMPL(instancenorm, ADInplaceOrView, m) {
  m.impl("normalize_", &normalize_inplace_or_view);
  m.impl("normalize_out", &normalize_out_inplace_or_view);
  m.impl("normalize_with_stats_", &normalize_with_stats_inplace_or_view);
  m.impl("normalize_with_stats_out", &normalize_with_stats_out_inplace_or_view);
}

}  // namespace instancenorm
