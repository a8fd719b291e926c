"""Pure-PyTorch definitions of every fastvdm op: the oracles every kernel backend is tested against.

The plain functions (``video_attention``, ``group_norm``, ``denoising_loss``, ``dmd_loss``) are the
definitions. They are also registered as ``torch.ops.fastvdm.<op>_reference`` custom ops with autograd, which
is what the ``reference`` backend dispatches to, so every backend is an opaque op of the same kind to
autograd and ``torch.compile``.

Precision: computations run in ``promote_types(input dtype, float32)`` (fp32 for bf16/fp16 inputs, fp64 for
fp64 inputs, which is how tests build the float64 reference), results are cast back to the input dtype; the
losses return a float32 (or float64) scalar.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastvdm.ops import _dispatch
from fastvdm.ops.signatures import GROUP_NORM_PARAMS, GroupNormArgs, tensor_args, with_signature

# The DMD normalizer mean(|x - x0_real|) is clamped from below by this value, so a sample whose x equals
# x0_real (normalizer 0) gets a finite, very large gradient instead of inf/NaN. 1e-6 is far below the
# normalizer of any real sample (pixels in [-1, 1]), so the clamp never changes a real update.
DMD_NORM_EPS = 1e-6


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against ``like``."""
    return t.reshape((like.shape[0],) + (1,) * (like.dim() - 1))


# ---------------------------------------------------------------------------------------------- attention
def _to_sequences(x: Tensor, axis: str) -> Tensor:
    """(B, T, S, heads, D) -> (sequences, heads, L, D) for ``axis``.

    4-D, because PyTorch's fused SDPA kernels (the CPU flash kernel among them) take only (batch, heads, L, D)
    and send anything else to the unfused math path (3-4x slower on the CPU). A view for "spatial" and
    "joint" on contiguous inputs; "temporal" gathers the frames of each position (a copy)."""
    B, T, S, H, D = x.shape
    if axis == "spatial":
        return x.permute(0, 1, 3, 2, 4).reshape(B * T, H, S, D)  # (B*T, H, S, D)
    if axis == "temporal":
        return x.permute(0, 2, 3, 1, 4).reshape(B * S, H, T, D)  # (B*S, H, T, D)
    if axis == "joint":
        return x.reshape(B, T * S, H, D).permute(0, 2, 1, 3)  # (B, H, T*S, D)
    raise ValueError(f"axis must be 'spatial', 'temporal' or 'joint', got {axis!r}")


def _from_sequences(o: Tensor, axis: str, shape: torch.Size) -> Tensor:
    """Inverse of :func:`_to_sequences`: (sequences, heads, L, D) -> (B, T, S, heads, D), contiguous."""
    B, T, S, H, D = shape
    if axis == "spatial":
        o = o.reshape(B, T, H, S, D).permute(0, 1, 3, 2, 4)
    elif axis == "temporal":
        o = o.reshape(B, S, H, T, D).permute(0, 3, 1, 2, 4)
    else:
        o = o.permute(0, 2, 1, 3).reshape(B, T, S, H, D)
    return o.contiguous()


def video_attention(q: Tensor, k: Tensor, v: Tensor, axis: str, scale: Optional[float] = None) -> Tensor:
    """Softmax attention of a video token tensor along ``axis``.

    q, k, v: (B, T, S, heads, D), any strides; S = h*w tokens per frame.
    axis: "spatial" attends over S for each (B, T, head); "temporal" over T for each (B, S, head);
    "joint" over all T*S tokens for each (B, head).
    scale: logit scale, default 1/sqrt(D).
    Returns (B, T, S, heads, D), contiguous, in q's dtype.
    """
    c = _compute_dtype(q.dtype)
    qs, ks, vs = (_to_sequences(t, axis).to(c) for t in (q, k, v))
    o = F.scaled_dot_product_attention(qs, ks, vs, scale=scale)
    return _from_sequences(o, axis, q.shape).to(q.dtype)


# ---------------------------------------------------------------------------------------------- group norm
def group_norm(x: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               eps: float = 1e-5, scale: Optional[Tensor] = None, shift: Optional[Tensor] = None,
               activation: Optional[str] = None, input_bias: Optional[Tensor] = None) -> Tensor:
    """act(GroupNorm(x + input_bias) * (1 + scale) + shift).

    x: (B, C, *rest), e.g. (B, C, T, H, W); statistics per (sample, group of C/num_groups channels) over the
    group's channels and all of ``rest``, biased variance, in fp32 (fp64 for fp64 input).
    weight, bias: (C,) affine of the normalization, or None. scale, shift: (B, C) per-sample modulation
    (e.g. from the timestep embedding), or None. activation: None or "silu". input_bias: (B, C) added to x
    before the normalization (e.g. the time embedding of a diffusers ResNet block in "default" mode:
    GroupNorm(h + temb)), or None.
    Returns a tensor of x's shape and dtype.
    """
    c = _compute_dtype(x.dtype)
    cast = lambda t: None if t is None else t.to(c)  # noqa: E731
    bc = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
    xc = x.to(c)
    if input_bias is not None:
        xc = xc + input_bias.to(c).reshape(bc)
    y = F.group_norm(xc, num_groups, cast(weight), cast(bias), eps)
    if scale is not None:
        y = y * (1 + scale.to(c).reshape(bc))
    if shift is not None:
        y = y + shift.to(c).reshape(bc)
    if activation == "silu":
        y = F.silu(y)
    elif activation is not None:
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    return y.to(x.dtype)


# ---------------------------------------------------------------------------------------------- losses
def denoising_target(x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor, target: str) -> Tensor:
    """The regression target of a denoiser: "eps" -> noise, "x0" -> x0, "v" -> alpha*noise - sigma*x0."""
    if target == "eps":
        return noise
    if target == "x0":
        return x0
    if target == "v":
        return _per_sample(alpha, x0) * noise - _per_sample(sigma, x0) * x0
    raise ValueError(f"target must be 'eps', 'x0' or 'v', got {target!r}")


def denoising_loss(
    pred: Tensor,
    x0: Tensor,
    noise: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    weight: Optional[Tensor] = None,
    target: str = "v",
) -> Tensor:
    """mean over all elements of weight_b * (pred - target)^2.

    pred, x0, noise: (B, ...) of one shape; alpha, sigma, weight: (B,) per sample (weight None = 1).
    Returns a 0-dim fp32 tensor (fp64 for fp64 input). Differentiable in pred only:
    d loss / d pred = 2 * weight_b * (pred - target) / numel.
    """
    c = _compute_dtype(pred.dtype)
    tgt = denoising_target(x0.to(c), noise.to(c), alpha.to(c), sigma.to(c), target)
    per_sample = (pred.to(c) - tgt).square().reshape(pred.shape[0], -1).sum(1)
    if weight is not None:
        per_sample = per_sample * weight.to(c)
    return per_sample.sum() / pred.numel()


def dmd_direction(x: Tensor, x0_real: Tensor, x0_fake: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """g = weight_b * (x0_fake - x0_real) / max(mean_b |x - x0_real|, DMD_NORM_EPS), in the compute dtype.

    The mean is per sample over all of its elements; see ``DMD_NORM_EPS`` for the clamp.
    """
    c = _compute_dtype(x.dtype)
    x, x0_real, x0_fake = x.to(c), x0_real.to(c), x0_fake.to(c)
    norm = (x - x0_real).abs().reshape(x.shape[0], -1).mean(1).clamp_min(DMD_NORM_EPS)
    g = (x0_fake - x0_real) / _per_sample(norm, x)
    if weight is not None:
        g = g * _per_sample(weight.to(c), x)
    return g


def dmd_loss(x: Tensor, x0_real: Tensor, x0_fake: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Distribution-matching surrogate 0.5 * mean((x - sg(x - g))^2) with g from :func:`dmd_direction`.

    x, x0_real, x0_fake: (B, ...) of one shape; weight: (B,) or None (e.g. the softened-KL weight
    sigmoid(-logit) of the GAN-stage discriminator). The value equals 0.5 * mean(g^2); the gradient is
    d loss / d x = g / numel, with x0_real, x0_fake and weight treated as constants.
    Returns a 0-dim fp32 tensor (fp64 for fp64 input).
    """
    g = dmd_direction(x, x0_real, x0_fake, weight)
    xc = x.to(g.dtype)
    return 0.5 * (xc - (xc - g).detach()).square().mean()


def conv3d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0, dilation=1) -> Tensor:
    """3-D convolution (cross-correlation) with zero padding, groups 1: ``F.conv3d`` itself.

    x (B, Ci, D, H, W), weight (Co, Ci, kd, kh, kw), bias (Co,) or None; stride, padding, dilation: ints or
    3-tuples. Returns (B, Co, D', H', W'). Registered as it is (an aten op, not a custom op), so that autocast,
    ``torch.compile`` and double backward see PyTorch's own convolution.
    """
    return F.conv3d(x, weight, bias, stride, padding, dilation)


# ---------------------------------------------------------------------------------------------- registration
# Autograd for the registered ops. Attention and group norm differentiate the definition itself (torch.func.vjp,
# recomputing the forward); the losses write their closed-form gradient directly.


@torch.library.custom_op("fastvdm::video_attention_reference", mutates_args=())
def _video_attention_op(q: Tensor, k: Tensor, v: Tensor, axis: str, scale: Optional[float]) -> Tensor:
    return video_attention(q, k, v, axis, scale)


@_video_attention_op.register_fake
def _(q, k, v, axis, scale):
    return torch.empty(q.shape, dtype=q.dtype, device=q.device)


def _attention_setup(ctx, inputs, output):
    q, k, v, ctx.axis, ctx.scale = inputs
    ctx.save_for_backward(q, k, v)


def _attention_backward(ctx, grad):
    q, k, v = ctx.saved_tensors
    _, vjp = torch.func.vjp(lambda q, k, v: video_attention(q, k, v, ctx.axis, ctx.scale), q, k, v)
    return (*vjp(grad), None, None)


_video_attention_op.register_autograd(_attention_backward, setup_context=_attention_setup)


@torch.library.custom_op("fastvdm::group_norm_reference", mutates_args=())
@with_signature(GROUP_NORM_PARAMS, Tensor)
def _group_norm_op(*args) -> Tensor:
    return group_norm(*args)


@_group_norm_op.register_fake
def _(x, *args):
    return torch.empty_like(x)


_GN_TENSORS = tuple(GroupNormArgs._fields.index(n) for n in tensor_args(GROUP_NORM_PARAMS))  # x, weight, ...


def _group_norm_setup(ctx, inputs, output):
    ctx.inputs = [None if i in _GN_TENSORS else a for i, a in enumerate(inputs)]
    ctx.save_for_backward(*(inputs[i] for i in _GN_TENSORS))


def _group_norm_backward(ctx, grad):
    args = list(ctx.inputs)
    for i, t in zip(_GN_TENSORS, ctx.saved_tensors):
        args[i] = t
    live = [i for i in _GN_TENSORS if args[i] is not None and ctx.needs_input_grad[i]]

    def f(*tensors):
        a = list(args)
        for i, t in zip(live, tensors):
            a[i] = t
        return group_norm(*a)

    grads = [None] * len(args)
    if live:
        _, vjp = torch.func.vjp(f, *(args[i] for i in live))
        for i, g in zip(live, vjp(grad)):
            grads[i] = g
    return tuple(grads)


_group_norm_op.register_autograd(_group_norm_backward, setup_context=_group_norm_setup)


@torch.library.custom_op("fastvdm::denoising_loss_reference", mutates_args=())
def _denoising_loss_op(
    pred: Tensor, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor, weight: Optional[Tensor], target: str
) -> Tensor:
    return denoising_loss(pred, x0, noise, alpha, sigma, weight, target)


@_denoising_loss_op.register_fake
def _(pred, x0, noise, alpha, sigma, weight, target):
    return torch.empty((), dtype=_compute_dtype(pred.dtype), device=pred.device)


def _denoising_setup(ctx, inputs, output):
    pred, x0, noise, alpha, sigma, weight, ctx.target = inputs
    ctx.save_for_backward(pred, x0, noise, alpha, sigma, weight)


def _denoising_backward(ctx, grad):
    pred, x0, noise, alpha, sigma, weight = ctx.saved_tensors
    c = _compute_dtype(pred.dtype)
    tgt = denoising_target(x0.to(c), noise.to(c), alpha.to(c), sigma.to(c), ctx.target)
    coef = 2.0 * grad.to(c) / pred.numel()
    if weight is not None:
        coef = coef * _per_sample(weight.to(c), pred)
    dpred = (coef * (pred.to(c) - tgt)).to(pred.dtype)
    return dpred, None, None, None, None, None, None


_denoising_loss_op.register_autograd(_denoising_backward, setup_context=_denoising_setup)


@torch.library.custom_op("fastvdm::dmd_loss_reference", mutates_args=())
def _dmd_loss_op(x: Tensor, x0_real: Tensor, x0_fake: Tensor, weight: Optional[Tensor]) -> Tensor:
    return dmd_loss(x, x0_real, x0_fake, weight)


@_dmd_loss_op.register_fake
def _(x, x0_real, x0_fake, weight):
    return torch.empty((), dtype=_compute_dtype(x.dtype), device=x.device)


def _dmd_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _dmd_backward(ctx, grad):
    x, x0_real, x0_fake, weight = ctx.saved_tensors
    g = dmd_direction(x, x0_real, x0_fake, weight)
    return ((g / x.numel()) * grad.to(g.dtype)).to(x.dtype), None, None, None


_dmd_loss_op.register_autograd(_dmd_backward, setup_context=_dmd_setup)

_ALL_DEVICES = {"cpu": 0, "cuda": 0}
_dispatch.register("video_attention", "reference", _video_attention_op, auto=_ALL_DEVICES)
_dispatch.register("group_norm", "reference", _group_norm_op, auto=_ALL_DEVICES)
_dispatch.register("denoising_loss", "reference", _denoising_loss_op, auto=_ALL_DEVICES)
_dispatch.register("dmd_loss", "reference", _dmd_loss_op, auto=_ALL_DEVICES)
_dispatch.register("conv3d", "reference", conv3d, auto=_ALL_DEVICES)
