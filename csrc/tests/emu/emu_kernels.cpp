// The CUDA kernels of csrc/cuda compiled as C++ for the CPU emulator (cuda_emu.h), for the emulated build of the
// torch bindings (tests/test_cuda_bindings_emulated.py).
#include "cuda_emu.h"  // first: the emulated execution model

#include "../../cuda/attention.cu"
#include "../../cuda/group_norm.cu"
#include "../../cuda/losses.cu"
