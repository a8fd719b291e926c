"""Triton kernels of fastvdm, installed as ``fastvdm.kernels``: leaves that import nothing of fastvdm.

One module per op (``group_norm``, ``attention`` with ``flash_attention`` and ``temporal_attention``,
``losses``): the ``@triton.jit`` kernels and their launchers, which follow the same contract as the C++
extensions' functions. The ops built on them (``torch.library.triton_op`` s), their autograd and their
registration with :mod:`fastvdm.ops` (the only way they are reached) are in :mod:`fastvdm.ops.triton`.
On the CPU they run only under ``TRITON_INTERPRET=1`` (tests, fp32).
"""
