// The op schemas (one library, one definition) and the Python module that loading them needs.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing instancenorm._C runs the static TORCH_LIBRARY registrations below and in each backend file.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}

TORCH_LIBRARY(instancenorm, m) {
  // forward -> (y, mean, inv_std, var, mean_lo); see instance_norm.h.
  m.def("forward(Tensor input, Tensor? weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("normalize_(Tensor(a!) input, Tensor? weight, Tensor? bias, float eps) -> ()");
  m.def("normalize_out(Tensor input, Tensor? weight, Tensor? bias, float eps, *, Tensor(a!) out) -> ()");
  m.def(
      "backward(Tensor grad_output, Tensor input, Tensor mean, Tensor inv_std, Tensor? weight, Tensor? mean_lo=None)"
      " -> (Tensor, Tensor, Tensor)");
  // The forward's two phases alone: moments -> (mean, inv_std, var), and normalizing with given statistics.
  m.def("moments(Tensor input, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("normalize_with_stats(Tensor input, Tensor mean, Tensor inv_std, Tensor? weight, Tensor? bias) -> Tensor");
  m.def("normalize_with_stats_(Tensor(a!) input, Tensor mean, Tensor inv_std, Tensor? weight, Tensor? bias) -> ()");
  m.def(
      "normalize_with_stats_out(Tensor input, Tensor mean, Tensor inv_std, Tensor? weight, Tensor? bias, *,"
      " Tensor(a!) out) -> ()");
}
