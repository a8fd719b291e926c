"""Triton kernels of fastvdm, installed as ``fastvdm.kernels``.

One module per op (``group_norm``, ``attention``, ``losses``): the kernels, the ``torch.library.triton_op``
wrapper with its autograd, and the registration with :mod:`fastvdm.ops` (the only way they are reached).
On the CPU they run only under ``TRITON_INTERPRET=1`` (tests, fp32).
"""
