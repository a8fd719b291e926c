"""The ``triton`` backend: op registration and autograd around the Triton kernels of :mod:`fastvdm.kernels`.

One module per op (``group_norm``, ``attention``, ``losses``), as in ``ops/cpu`` and ``ops/cuda``: each wraps
the kernel launchers in ``torch.library.triton_op`` s (so they compose with autograd and, on a GPU,
``torch.compile``) with the autograd wiring shared by every backend, and registers with the dispatcher. The
kernels themselves (``kernels/``, installed as ``fastvdm.kernels``) import nothing of fastvdm.
"""
