"""Shared helpers for testing ops against their float64 reference (tolerances of DESIGN.md)."""

from __future__ import annotations

import torch

import fastvdm.ops as ops

# Relative error ||out - ref|| / ||ref||, the reference in float64.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2, torch.float64: 1e-10}
ATTENTION_TOLERANCE = {torch.float32: 2e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2, torch.float64: 1e-10}


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def assert_rel_close(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "output") -> None:
    """Fail on any NaN/inf, on a shape mismatch, or on relative error above ``tol``."""
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{what}: non-finite values"
    err = rel_error(out, ref)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def assert_grad_close(out: torch.Tensor, ref: torch.Tensor, grad_out: torch.Tensor, tol: float, what: str) -> None:
    """:func:`assert_rel_close` for a gradient. One that is zero in exact arithmetic (attention's dq, dk over
    sequences of length 1, where out = v; a float64 reference leaves ~1e-17 of rounding there) has no scale of
    its own: there the error is measured relative to the incoming gradient ``grad_out`` instead."""
    if ref.double().norm() <= 1e-12 * grad_out.double().norm():
        assert torch.isfinite(out).all(), f"{what}: non-finite values"
        err = (out.double().norm() / grad_out.double().norm()).item()
        assert err <= tol, f"{what}: expected zeros, ||out|| / ||dO|| = {err:.3e} > {tol:.1e}"
    else:
        assert_rel_close(out, ref, tol, what)


def kernel_backends(op: str) -> list[str]:
    """The non-reference backends that serve ``op`` in this process (what a parametrized suite runs over)."""
    return [b for b in ops.available_backends(op) if b != "reference"]


def all_backends(op: str) -> list[str]:
    return ops.available_backends(op)


def device_for(backend: str) -> torch.device:
    """The device a backend's tests run on: CUDA for triton/cuda where there is a GPU, else the CPU."""
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return torch.device("cuda")
    if backend == "reference" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def dtypes_for(backend: str) -> list[torch.dtype]:
    """fp32 everywhere; bf16 too except under the Triton interpreter (no bf16 tl.dot there)."""
    if backend == "triton" and not torch.cuda.is_available():
        return [torch.float32]
    return [torch.float32, torch.bfloat16]
