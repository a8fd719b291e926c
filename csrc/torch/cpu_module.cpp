// Python module of the CPU extension (fastvdm._C_cpu). The ops themselves are registered with
// TORCH_LIBRARY_FRAGMENT(fastvdm_cpu, ...) in one binding file per op (csrc/torch/cpu_*.cpp), so that
// every op stays in its own translation unit.
#include <Python.h>
#include <torch/library.h>

#include "cpu/attention.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {
int64_t openmp_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
}  // namespace

TORCH_LIBRARY_FRAGMENT(fastvdm_cpu, m) {
  m.def("openmp_threads() -> int", &openmp_threads);
}

static PyObject* py_openmp_threads(PyObject*, PyObject*) { return PyLong_FromLongLong(openmp_threads()); }

static PyObject* py_attention_isa(PyObject*, PyObject*) { return PyUnicode_FromString(fastvdm::attention_isa()); }

static PyMethodDef methods[] = {
    {"openmp_threads", py_openmp_threads, METH_NOARGS, "OpenMP threads used by the CPU kernels."},
    {"attention_isa", py_attention_isa, METH_NOARGS,
     "Instruction set of the CPU attention kernels: avx512, avx2 or baseline (env FASTVDM_CPU_ISA lowers it)."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C_cpu",
                                        "fastvdm CPU kernels (ops under torch.ops.fastvdm_cpu)", -1, methods};

PyMODINIT_FUNC PyInit__C_cpu(void) { return PyModule_Create(&module_def); }
