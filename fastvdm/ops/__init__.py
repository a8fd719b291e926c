"""fastvdm.ops: the kernel-backed ops, one public function each, dispatched to a backend.

    from fastvdm.ops import video_attention, group_norm, denoising_loss, dmd_loss, conv3d
    from fastvdm.ops import available_backends, use_backend

Backends: ``reference`` (pure PyTorch, always there: the definition), ``triton`` (GPU; on the CPU only under
``TRITON_INTERPRET=1``, for tests), ``cuda`` (csrc, GPU) and ``cpu`` (csrc C++, OpenMP). ``auto`` (the default)
picks the fastest available backend for the inputs' device; ``with use_backend("cpu"):`` (for the calling
thread only) or the environment variable ``FASTVDM_BACKEND=cpu`` forces one. Every op composes with autograd. Shapes, units and the exact
mathematical definitions are in :mod:`fastvdm.ops.reference`.

The public functions validate their inputs (shapes, dtypes, devices) once, here, so that every backend sees
the same well-formed call and every user gets the same error message.
"""

from __future__ import annotations

import numbers
from typing import Optional

import torch
from torch import Tensor

from fastvdm.ops._dispatch import (
    BACKENDS,
    OPS,
    BackendUnavailableError,
    available_backends,
    backend_status,
    load_available_backends,
    resolve,
    use_backend,
)

__all__ = [
    "video_attention",
    "group_norm",
    "denoising_loss",
    "dmd_loss",
    "conv3d",
    "available_backends",
    "use_backend",
    "selected_backend",
    "backend_status",
    "BackendUnavailableError",
    "OPS",
    "BACKENDS",
]

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
AXES = ("spatial", "temporal", "joint")


def _check_float(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (fp32, bf16, fp16 or fp64), got {t.dtype}")


def _check_like(name: str, t: Tensor, ref_name: str, ref: Tensor, same_dtype: bool = True) -> None:
    _check_float(name, t)
    if t.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")
    if same_dtype and t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")


def _check_vector(name: str, t: Optional[Tensor], shape: tuple, ref: Tensor) -> None:
    if t is None:
        return
    _check_float(name, t)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but the input is on {ref.device}")


def selected_backend(op: str, *args) -> str:
    """Name of the backend that a call ``op(*args)`` would run on right now (for logs and benchmarks)."""
    return resolve(op, args[0].device, *args).backend


def video_attention(q: Tensor, k: Tensor, v: Tensor, axis: str, scale: Optional[float] = None) -> Tensor:
    """Softmax attention over the spatial, temporal or joint axis of a (B, T, S, heads, D) token tensor.

    q, k, v: (B, T, S, heads, D), any strides (typically views into one (B, T, S, 3, heads, D) fused QKV
    projection: no copy is made by the kernel backends). axis: "spatial" (over S per frame), "temporal"
    (over T per token position) or "joint" (over all T*S). scale: logit scale, default D**-0.5.
    Returns (B, T, S, heads, D), contiguous, in q's dtype. Differentiable in q, k, v.
    """
    _check_float("q", q)
    if q.dim() != 5:
        raise ValueError(f"q must have shape (B, T, S, heads, D), got {tuple(q.shape)}")
    _check_like("k", k, "q", q)
    _check_like("v", v, "q", q)
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    if q.numel() == 0:
        raise ValueError(f"video_attention got an empty tensor of shape {tuple(q.shape)}")
    if scale is not None:
        scale = float(scale)
    args = (q, k, v, axis, scale)
    return resolve("video_attention", q.device, *args).fn(*args)


def group_norm(
    x: Tensor,
    num_groups: int,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
    scale: Optional[Tensor] = None,
    shift: Optional[Tensor] = None,
    activation: Optional[str] = None,
    input_bias: Optional[Tensor] = None,
    *,
    out: Optional[Tensor] = None,
) -> Tensor:
    """act(GroupNorm(x + input_bias) * (1 + scale) + shift), fused.

    x: (B, C, *rest), e.g. video (B, C, T, H, W) (contiguous or channels_last_3d) or image (B, C, H, W);
    C divisible by num_groups. weight, bias: (C,) or None. scale, shift: (B, C) or None (per-sample
    modulation). activation: None or "silu". input_bias: (B, C) or None, added to x before the statistics
    (a ResNet block's GroupNorm(h + temb)). Statistics in fp32. Returns x's shape and dtype.
    Differentiable in x, weight, bias, scale, shift, input_bias.

    out (keyword-only): a tensor to write the result into and return, for callers that reuse memory (inference:
    no fresh output, no first-touch page faults). It must have x's shape, dtype and device and x's memory
    layout (x's strides when x is contiguous or channels-last, else contiguous); ``out=x`` (in place) is
    allowed. Not differentiable: refused when autograd would record the call (use ``torch.no_grad()``).
    Backends with an out kernel (``cpu``) write directly; the others compute and copy.
    """
    _check_float("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must have shape (B, C, ...), got {tuple(x.shape)}")
    B, C = x.shape[:2]
    if isinstance(num_groups, bool) or not isinstance(num_groups, (numbers.Integral, torch.SymInt)):
        raise TypeError(f"num_groups must be an int, got {type(num_groups).__name__} {num_groups!r}")
    num_groups = int(num_groups)
    if num_groups <= 0 or C % num_groups != 0:
        raise ValueError(f"num_groups={num_groups} must be positive and divide the {C} channels of x")
    for name, t in (("weight", weight), ("bias", bias)):
        _check_vector(name, t, (C,), x)
    for name, t in (("scale", scale), ("shift", shift), ("input_bias", input_bias)):
        _check_vector(name, t, (B, C), x)
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    if x.numel() == 0:
        raise ValueError(f"group_norm got an empty tensor of shape {tuple(x.shape)}")
    args = (x, num_groups, weight, bias, float(eps), scale, shift, activation)
    if input_bias is not None:  # only then: backends and callers that predate input_bias see 8 arguments
        args = args + (input_bias,)
    if out is not None:
        return _group_norm_out(out, args)
    return resolve("group_norm", x.device, *args).fn(*args)


def _group_norm_out(out: Tensor, args: tuple) -> Tensor:
    """group_norm(*args) written into ``out`` (see :func:`group_norm`'s ``out``)."""
    x = args[0]
    if not isinstance(out, Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must have x's shape, dtype and device {tuple(x.shape)}, {x.dtype}, {x.device}; got "
                         f"{tuple(out.shape)}, {out.dtype}, {out.device}")
    try:  # the layouts the kernels read in place: (B, C, S) or (B, S, C) in memory
        x3 = x.view(x.shape[0], x.shape[1], -1)
        dense = x3.is_contiguous() or x3.transpose(1, 2).is_contiguous()
    except RuntimeError:  # not viewable as (B, C, S)
        dense = False
    if dense:
        if out.stride() != x.stride():
            raise ValueError(f"out must have x's strides {x.stride()}, got {out.stride()}")
    elif not out.is_contiguous():
        raise ValueError(f"out must be contiguous when x is neither contiguous nor channels-last, got strides "
                         f"{out.stride()}")
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in args + (out,)):
        raise RuntimeError("group_norm(out=...) is not differentiable: call it under torch.no_grad(), or drop out=")
    impl = resolve("group_norm", x.device, *args)
    if impl.out_fn is not None and not torch.compiler.is_compiling():
        impl.out_fn(out, *args)
    else:
        out.copy_(impl.fn(*args))
    return out


def denoising_loss(
    pred: Tensor,
    x0: Tensor,
    noise: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    weight: Optional[Tensor] = None,
    target: str = "v",
) -> Tensor:
    """mean over all elements of weight_b * (pred - target)^2, target built on the fly.

    pred, x0, noise: (B, ...) of one shape and dtype. alpha, sigma, weight: (B,) per sample (weight None = 1).
    target: "eps" (noise), "x0" or "v" (alpha*noise - sigma*x0). Returns a 0-dim fp32 tensor (fp32
    accumulation). Differentiable in pred only.
    """
    _check_float("pred", pred)
    if pred.dim() < 1 or pred.numel() == 0:
        raise ValueError(f"pred must have shape (B, ...) and be non-empty, got {tuple(pred.shape)}")
    _check_like("x0", x0, "pred", pred)
    _check_like("noise", noise, "pred", pred)
    B = pred.shape[0]
    for name, t in (("alpha", alpha), ("sigma", sigma)):
        if t is None:
            raise ValueError(f"{name} is required: a (B,) = ({B},) tensor")
        _check_vector(name, t, (B,), pred)
    _check_vector("weight", weight, (B,), pred)
    if target not in ("eps", "x0", "v"):
        raise ValueError(f"target must be 'eps', 'x0' or 'v', got {target!r}")
    args = (pred, x0, noise, alpha, sigma, weight, target)
    return resolve("denoising_loss", pred.device, *args).fn(*args)


def dmd_loss(x: Tensor, x0_real: Tensor, x0_fake: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Distribution-matching (DMD) surrogate loss whose gradient in x is g / numel.

    Per sample b: g = weight_b * (x0_fake - x0_real) / mean(|x - x0_real|) (normalizer clamped at
    ``reference.DMD_NORM_EPS``); loss = 0.5 * mean((x - sg(x - g))^2).
    x, x0_real, x0_fake: (B, ...) of one shape and dtype; weight: (B,) or None (softened reverse KL: the
    detached sigmoid(-logit) of the GAN-stage discriminator). Returns a 0-dim fp32 tensor.
    """
    _check_float("x", x)
    if x.dim() < 1 or x.numel() == 0:
        raise ValueError(f"x must have shape (B, ...) and be non-empty, got {tuple(x.shape)}")
    _check_like("x0_real", x0_real, "x", x)
    _check_like("x0_fake", x0_fake, "x", x)
    _check_vector("weight", weight, (x.shape[0],), x)
    args = (x, x0_real, x0_fake, weight)
    return resolve("dmd_loss", x.device, *args).fn(*args)


def _triple(name: str, v) -> tuple:
    t = (v,) * 3 if isinstance(v, int) else tuple(v)
    if len(t) != 3 or not all(isinstance(i, int) for i in t):
        raise ValueError(f"{name} must be an int or 3 ints, got {v!r}")
    return tuple(int(i) for i in t)


def conv3d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0, dilation=1) -> Tensor:
    """3-D convolution (cross-correlation, zero padding, groups 1), as ``torch.nn.functional.conv3d``.

    x: (B, Ci, D, H, W); weight: (Co, Ci, kd, kh, kw); bias: (Co,) or None; stride (>= 1), padding (>= 0),
    dilation (>= 1): an int or 3 ints. Returns (B, Co, D', H', W') with D' = (D + 2 pd - dd (kd - 1) - 1) // sd + 1
    (likewise H', W'). Differentiable in x, weight, bias (twice: the ``cpu`` backward is itself convolutions).
    """
    _check_float("x", x)
    _check_float("weight", weight)
    if x.dim() != 5 or weight.dim() != 5:
        raise ValueError(f"conv3d needs x (B, Ci, D, H, W) and weight (Co, Ci, kd, kh, kw), got {tuple(x.shape)} "
                         f"and {tuple(weight.shape)}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight has {weight.shape[1]} input channels but x has {x.shape[1]}")
    if weight.device != x.device:
        raise ValueError(f"weight is on {weight.device} but x is on {x.device}")
    _check_vector("bias", bias, (weight.shape[0],), x)
    stride, padding, dilation = _triple("stride", stride), _triple("padding", padding), _triple("dilation", dilation)
    if min(stride) < 1 or min(padding) < 0 or min(dilation) < 1:
        raise ValueError(f"stride and dilation must be >= 1 and padding >= 0, got {stride}, {padding}, {dilation}")
    args = (x, weight, bias, stride, padding, dilation)
    return resolve("conv3d", x.device, *args).fn(*args)


load_available_backends()
