"""A clear error for double backward through a kernel backend's backward op.

The kernel backends (``cpu``, ``cuda``, ``triton``) implement first derivatives only: their backward ops
have no derivative of their own. Without a formula, autograd fails deep inside with "no autograd formula was
registered" for an internal op name; :func:`refuse_double_backward` registers one that raises a
:class:`~fastvdm.ops.BackendUnavailableError` naming the op, the backend and what to do. First-order
gradients are unaffected (the formula runs only when the backward op itself is differentiated, i.e. with
``create_graph=True`` and a second ``backward``).
"""

from __future__ import annotations

from fastvdm.ops._dispatch import BACKENDS, BackendUnavailableError


# Ops whose reference implementation can be differentiated twice (measured: tests/test_faults.py).
_REFERENCE_HAS_DOUBLE_BACKWARD = ("group_norm",)


def refuse_double_backward(backward_op, op: str) -> None:
    """Register an autograd formula on custom op ``backward_op`` (a ``torch.library`` op of backend ``op``
    kernels) that raises a one-line BackendUnavailableError when it is differentiated."""
    qualname = getattr(backward_op, "_name", "") or getattr(backward_op, "__name__", "")
    backend = next((b for b in BACKENDS if f"_{b}_" in f"_{qualname.split('::')[-1]}_"), "this")

    def setup(ctx, inputs, output):
        pass

    if op in _REFERENCE_HAS_DOUBLE_BACKWARD:
        hint = f"run that part under fastvdm.ops.use_backend('reference', ops=['{op}'])"
    else:
        hint = "no backend supports it (the reference's PyTorch attention has no double backward either)"

    def backward(ctx, *grads):
        raise BackendUnavailableError(
            f"double backward (create_graph=True, then differentiating the gradient) through {op} is not "
            f"supported by the {backend!r} backend; {hint}"
        )

    backward_op.register_autograd(backward, setup_context=setup)


__all__ = ["refuse_double_backward"]
