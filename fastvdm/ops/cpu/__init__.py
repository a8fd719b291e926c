"""The ``cpu`` backend: autograd wrappers around the OpenMP C++ kernels of the ``fastvdm._C_cpu`` extension.

One module per op (``group_norm``, ``losses``) registers its implementation with the dispatcher on import.
"""
