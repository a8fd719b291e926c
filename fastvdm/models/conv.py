"""Conv3d that runs CPU float32 convolutions, forward and backward, on oneDNN.

PyTorch's CPU choice of convolution algorithm is tuned for 2-D images: a batch-1 3-D convolution with a
kernel of at most 3x3 and fewer than 20,480 values in (B, C, D, H) goes to its slow vol2col path, in the
forward and again in ``convolution_backward``. That is every convolution of the tiny preset on one clip
(sampling, the benchmarks, batch-1 training). ``python bench/bench_conv.py`` (2-core VM, 1 thread),
1x32x8x32x32 input, 32 -> 32 channels, 3x3x3 kernel:

    forward          slow path 18.9 ms   oneDNN 5.3 ms
    grad of input    slow path 33.2 ms   oneDNN 5.1 ms   (a forward convolution with the flipped kernel)
    grad of weight   slow path 17.5 ms   oneDNN 6.4 ms   (a forward convolution of the input with the output
                                                           gradient as kernel, batch and channels swapped)

:class:`Conv3d` is an ``nn.Conv3d`` (same parameters and state_dict) whose CPU float32 calls go through
:class:`OneDNNConv3dFunction`: the forward is ``aten.mkldnn_convolution``; for stride 1 the backward is the
two convolutions above (also ``aten.mkldnn_convolution``, so the backward is itself differentiable, e.g. for an
R1 penalty), for other strides it is PyTorch's ``convolution_backward``. Every other device, dtype and padding
mode, CPU autocast (which must see the convolution to cast it) and ``torch.compile`` tracing take nn.Conv3d's
path unchanged. At the batch sizes of training, where PyTorch picks oneDNN itself, the backward above is still
1.1-1.5x faster than PyTorch's in forward + backward (bench/RESULTS.md).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

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


class Conv3d(nn.Conv3d):
    """nn.Conv3d whose CPU float32 forward and backward run on oneDNN (see the module docstring)."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
                and x.dim() == 5 and self.padding_mode == "zeros" and self.groups == 1
                and not isinstance(self.padding, str) and onednn_available()
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
            return OneDNNConv3dFunction.apply(x, weight, bias, self.stride, self.padding, self.dilation)
        return super()._conv_forward(x, weight, bias)
