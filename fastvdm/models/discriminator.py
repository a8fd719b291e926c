"""The FVGen discriminator: the frozen teacher's encoder feeding a small trainable 3D-CNN head.

    disc = Discriminator(teacher)                   # teacher: a VideoUNet (anything with .encode works)
    logits = disc(x_t, t, cond)                     # (B,): one logit per clip, positive = "real"

The teacher's down blocks + middle block (``teacher.encode(x_t, t, cond)`` -> (B, C, T', H', W')) run on the
noised clip at its noise level t; the head maps those features to one logit per clip. The teacher's weights
are frozen (``requires_grad=False``, always in eval mode) and are shared, not copied: gradients still flow
through the encoder's activations into x_t (the generator's GAN loss needs them), never into its weights.
Only ``head`` is trained; ``trainable_state_dict`` is what a checkpoint needs to hold.

Research variants (heads on every encoder scale, hole-weighted pooling, a pixel-branch head on x_t) live in
``experiments/disc_heads.py`` of the source checkout; they plug in through
:func:`fastvdm.distill.build.register_head_kind`.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from fastvdm.models.conv import Conv3d
from fastvdm.ops import group_norm


class _ConvNormAct(nn.Module):
    """Conv3d -> GroupNorm -> SiLU (the norm and activation fused in :func:`fastvdm.ops.group_norm`)."""

    def __init__(self, cin: int, cout: int, groups: int, stride=1):
        super().__init__()
        self.conv = Conv3d(cin, cout, 3, stride=stride, padding=1)
        self.groups = groups
        self.weight = nn.Parameter(torch.ones(cout))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: Tensor) -> Tensor:
        return group_norm(self.conv(x), self.groups, self.weight, self.bias, activation="silu")


class Head3D(nn.Module):
    """Trainable 3D-CNN head: features (B, C, T, H, W) -> logits (B,).

    ``depth`` blocks of Conv3d(3x3x3) + GroupNorm + SiLU (the first maps C -> width, the others halve H and W
    with stride (1, 2, 2)), then a 1x1x1 conv to one channel averaged over (T, H, W).
    """

    def __init__(self, in_channels: int, width: int = 128, depth: int = 3, groups: int = 8):
        super().__init__()
        if width % groups:
            raise ValueError(f"width={width} must be divisible by groups={groups}")
        self.blocks = nn.ModuleList(
            [_ConvNormAct(in_channels if i == 0 else width, width, groups, stride=1 if i == 0 else (1, 2, 2))
             for i in range(depth)]
        )
        self.out = nn.Conv3d(width, 1, 1)

    def forward(self, h: Tensor) -> Tensor:
        for block in self.blocks:  # a stride-2 3x3 conv (padding 1) keeps a size of 1 at 1
            h = block(h)
        return self.out(h).flatten(1).mean(1)


class Discriminator(nn.Module):
    """Frozen teacher encoder + trainable head; ``forward(x_t, t, cond) -> (B,)`` logits.

    teacher: a model with ``encode(x_t, t, cond) -> features`` (a :class:`VideoUNet`; frozen here, in place).
    head: any module features -> (B,) or (B, 1) logits; default :class:`Head3D` on ``teacher.feature_channels``.
    """

    def __init__(self, teacher: nn.Module, head: Optional[nn.Module] = None, width: int = 128, depth: int = 3,
                 groups: int = 8):
        super().__init__()
        self.teacher = teacher.requires_grad_(False).eval()
        self.head = head if head is not None else Head3D(teacher.feature_channels, width, depth, groups)

    def train(self, mode: bool = True) -> "Discriminator":
        super().train(mode)
        self.teacher.eval()  # frozen: no dropout, whatever the stage does
        return self

    def forward(self, x_t: Tensor, t: Tensor, cond: Any, head: Optional[nn.Module] = None) -> Tensor:
        """(B,) logits. head: the module to run as the head (default ``self.head``; e.g. its
        DistributedDataParallel wrapper, so that only the trainable head is wrapped, never the teacher)."""
        return (self.head if head is None else head)(self.teacher.encode(x_t, t, cond)).reshape(x_t.shape[0])

    def trainable_state_dict(self) -> dict:
        """The head's weights (the teacher's are the teacher checkpoint's), keyed as in ``state_dict``."""
        return {f"head.{k}": v for k, v in self.head.state_dict().items()}
