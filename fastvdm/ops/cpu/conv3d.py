"""``conv3d`` on the ``cpu`` backend: float32 3-D convolutions, forward and backward, on oneDNN.

PyTorch's CPU choice of convolution algorithm is tuned for 2-D images: a batch-1 3-D convolution with a
kernel of at most 3x3 and fewer than 20,480 values in (B, C, D, H) goes to its slow vol2col path, in the
forward and again in ``convolution_backward``. That is every convolution of the tiny preset on one clip
(sampling, the benchmarks, batch-1 training). ``python bench/bench_conv.py`` (2-core VM, 1 thread),
1x32x8x32x32 input, 32 -> 32 channels, 3x3x3 kernel:

    forward          slow path 18.9 ms   oneDNN 5.3 ms
    grad of input    slow path 33.2 ms   oneDNN 5.1 ms   (a forward convolution with the flipped kernel)
    grad of weight   slow path 17.5 ms   oneDNN 6.4 ms   (a forward convolution of the input with the output
                                                           gradient as kernel, batch and channels swapped)

:class:`OneDNNConv3dFunction`: the forward is ``aten.mkldnn_convolution``; for stride 1 the backward is the two
convolutions above (also ``aten.mkldnn_convolution``, so the backward is itself differentiable, e.g. for an R1
penalty), for other strides it is PyTorch's ``convolution_backward``. Not served here (the reference,
``F.conv3d``, runs them): other dtypes and devices, CPU autocast (which must see the convolution to cast it)
and ``torch.compile`` tracing. At the batch sizes of training, where PyTorch picks oneDNN itself, the backward
above is still 1.1-1.5x faster than PyTorch's in forward + backward (bench/RESULTS.md).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fastvdm.ops import _dispatch

_mkldnn_conv = torch.ops.aten.mkldnn_convolution


def onednn_available() -> bool:
    """Whether this torch build has oneDNN and it is enabled (``torch.backends.mkldnn.enabled``)."""
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


class OneDNNConv3dFunction(torch.autograd.Function):
    """y = conv3d(x, weight, bias) with zero padding, groups 1, on oneDNN; x (B, Ci, D, H, W) float32 CPU,
    weight (Co, Ci, kd, kh, kw), bias (Co,) or None; stride, padding, dilation: 3-tuples of ints."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation) -> Tensor:
        x, weight = x.contiguous(), weight.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.conf = (tuple(stride), tuple(padding), tuple(dilation), bias is not None)
        return _mkldnn_conv(x, weight, bias, padding, stride, dilation, 1)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        if all(s == 1 for s in stride) and all(d == 1 for d in dilation):
            if need_x:  # full correlation with the flipped, transposed kernel
                kernel = weight.flip(2, 3, 4).transpose(0, 1).contiguous()
                pad = [k - 1 - p for k, p in zip(weight.shape[2:], padding)]
                grad_x = _mkldnn_conv(grad_out, kernel, None, pad, [1, 1, 1], [1, 1, 1], 1)
            if need_w:  # (Ci, B, ...) correlated with (Co, B, ...) -> (Ci, Co, kd, kh, kw)
                gw = _mkldnn_conv(x.transpose(0, 1).contiguous(), grad_out.transpose(0, 1).contiguous(), None,
                                  padding, [1, 1, 1], [1, 1, 1], 1)
                grad_w = gw.transpose(0, 1)
        else:
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, stride, padding, dilation, False, [0, 0, 0], 1,
                [need_x, need_w, False])
        if has_bias and need_b:
            grad_b = grad_out.sum((0, 2, 3, 4))
        return grad_x, grad_w, grad_b, None, None, None


def conv3d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: tuple, padding: tuple, dilation: tuple) -> Tensor:
    """The signature of ``fastvdm.ops.conv3d`` (stride, padding, dilation as 3-tuples) on oneDNN."""
    return OneDNNConv3dFunction.apply(x, weight, bias, stride, padding, dilation)


def supports(x, weight, bias, stride, padding, dilation) -> Optional[str]:
    if torch.compiler.is_compiling():  # first: the checks below are not traceable
        return "torch.compile traces F.conv3d"
    if x.device.type != "cpu":
        return f"the cpu backend runs on CPU tensors, got a tensor on {x.device}"
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or (bias is not None and bias.dtype != torch.float32):
        return f"conv3d on the cpu backend is float32 only, got {x.dtype}"
    if not onednn_available():
        return "this torch build has no oneDNN (or torch.backends.mkldnn.enabled is False)"
    if torch.is_autocast_enabled("cpu"):
        return "CPU autocast is on (it must see F.conv3d to cast it)"
    return None


# auto on CPU (as models/conv.py's Conv3d did before it became this op): bench/bench_conv.py measures
# forward + backward 3-5x faster than F.conv3d on the tiny preset's batch-1 shapes. At batch 2-4, RESULTS.md's run
# measured 1.1-1.5x, a 3-repeat run on the loaded shared machine (issue 18) 0.6-0.7x: to re-measure on a quiet one.
_dispatch.register("conv3d", "cpu", conv3d, supports=supports, auto={"cpu": 10})
