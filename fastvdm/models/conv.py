"""Conv3d: an ``nn.Conv3d`` (same parameters and state_dict) whose convolution is the op
:func:`fastvdm.ops.conv3d`, so it runs on the fastest backend for its inputs (on CPU float32: oneDNN forward and
backward, :mod:`fastvdm.ops.cpu.conv3d`; elsewhere ``F.conv3d``). Padding modes other than zeros, groups and
string paddings take nn.Conv3d's own path.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from fastvdm import ops


class Conv3d(nn.Conv3d):
    """nn.Conv3d through :func:`fastvdm.ops.conv3d` (see the module docstring)."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode == "zeros" and self.groups == 1 and not isinstance(self.padding, str) and x.dim() == 5:
            return ops.conv3d(x, weight, bias, self.stride, self.padding, self.dilation)
        return super()._conv_forward(x, weight, bias)
