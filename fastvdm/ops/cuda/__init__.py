"""The ``cuda`` backend: autograd wrappers around the CUDA C++ kernels of the ``fastvdm._C_cuda`` extension.

One module per op (``group_norm``, ``attention``, ``losses``) registers its implementation with the
dispatcher on import.
"""
