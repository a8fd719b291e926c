// Python module of the CUDA extension (fastvdm._C_cuda). The ops themselves are registered with
// TORCH_LIBRARY_FRAGMENT(fastvdm_cuda, ...) in one binding file per op (csrc/torch/cuda_*.cpp), which call
// the torch-free kernels of csrc/cuda/*.cu with raw pointers and the current CUDA stream.
#include <Python.h>

static PyMethodDef methods[] = {{nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C_cuda",
                                        "fastvdm CUDA kernels (ops under torch.ops.fastvdm_cuda)", -1, methods};

PyMODINIT_FUNC PyInit__C_cuda(void) { return PyModule_Create(&module_def); }
