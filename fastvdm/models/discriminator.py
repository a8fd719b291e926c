"""The FVGen discriminator: the frozen teacher's encoder feeding a small trainable 3D-CNN head.

    disc = Discriminator(teacher)                   # teacher: a VideoUNet (anything with .encode works)
    logits = disc(x_t, t, cond)                     # (B,): one logit per clip, positive = "real"

The teacher's down blocks + middle block (``teacher.encode(x_t, t, cond)`` -> (B, C, T', H', W')) run on the
noised clip at its noise level t; the head maps those features to one logit per clip. The teacher's weights
are frozen (``requires_grad=False``, always in eval mode) and are shared, not copied: gradients still flow
through the encoder's activations into x_t (the generator's GAN loss needs them), never into its weights.
Only ``head`` is trained; ``trainable_state_dict`` is what a checkpoint needs to hold.

Two options for a discriminator that must tell a sample from a real clip where they differ (a novel-view
student's clips differ from the data mostly in the pixels the render missed):
- ``multiscale=True``: the head is a :class:`MultiScaleHead`, one small head on each down level's features
  (full, 1/2, 1/4 ... resolution) and on the middle block's, their pooled logits summed;
- ``hole_weighted=True`` (multiscale only): each head's logit map is averaged with weights that favour the
  pixels the render missed on target frames (:func:`hole_map`), instead of uniformly;
- ``pixel_branch=True`` (multiscale only): one more head on the noised clip x_t itself (3 channels, full
  resolution), next to the encoder's features. A deviation from FVGen's encoder-only discriminator, for teachers
  whose encoder barely depends on x_t (``bench/disc_probe.py`` measures that: for the shipped tiny teacher the
  pooled middle-block features of a real clip and of the student's clip differ by 0.1% of their spread).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
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


def hole_map(cond: dict, like: Tensor) -> Tensor:
    """(B, 1, T, H, W) in {0, 1}: 1 where the render missed a pixel of a target (non-input) frame."""
    missed = 1.0 - cond["cond_mask"].to(like.device, torch.float32)
    target = (~cond["is_input"].to(like.device).bool()).float()[:, None, :, None, None]
    return missed * target


class MultiScaleHead(nn.Module):
    """One small head per feature scale: Conv3d(3x3x3) + GroupNorm + SiLU, then a 1x1x1 conv to a logit map;
    each map is averaged over (T, h, w) (uniformly, or weighted by ``pool_weights`` resized to the map) and the
    per-scale logits are summed. ``forward(features, pool_weights=None) -> (B,)``; features: a list of
    (B, C_i, T, h_i, w_i); pool_weights: (B, 1, T, H, W) non-negative, at the finest scale's resolution."""

    def __init__(self, in_channels: list[int], width: int = 32, groups: int = 8, uniform_floor: float = 0.05):
        super().__init__()
        if width % groups:
            raise ValueError(f"width={width} must be divisible by groups={groups}")
        self.blocks = nn.ModuleList([_ConvNormAct(c, width, groups) for c in in_channels])
        self.outs = nn.ModuleList([nn.Conv3d(width, 1, 1) for _ in in_channels])
        self.uniform_floor = uniform_floor

    def forward(self, features: list[Tensor], pool_weights: Optional[Tensor] = None) -> Tensor:
        if len(features) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} feature maps, got {len(features)}")
        logit = 0.0
        for h, block, out in zip(features, self.blocks, self.outs):
            m = out(block(h)).float()  # (B, 1, T, h, w)
            if pool_weights is None:
                logit = logit + m.flatten(1).mean(1)
            else:  # weights at this scale: the fraction of missed pixels per cell, plus a uniform floor
                w = F.adaptive_avg_pool3d(pool_weights.float(), m.shape[2:]) + self.uniform_floor
                logit = logit + (m * w).flatten(1).sum(1) / w.flatten(1).sum(1)
        return logit


class Discriminator(nn.Module):
    """Frozen teacher encoder + trainable head; ``forward(x_t, t, cond) -> (B,)`` logits.

    teacher: a model with ``encode(x_t, t, cond) -> features`` (a :class:`VideoUNet`; frozen here, in place).
    head: any module features -> (B,) or (B, 1) logits; default :class:`Head3D` on ``teacher.feature_channels``.
    """

    def __init__(self, teacher: nn.Module, head: Optional[nn.Module] = None, width: int = 128, depth: int = 3,
                 groups: int = 8, multiscale: bool = False, hole_weighted: bool = False, pixel_branch: bool = False):
        super().__init__()
        if (hole_weighted or pixel_branch) and not multiscale:
            raise ValueError("hole_weighted pooling and pixel_branch need multiscale=True (a MultiScaleHead)")
        self.teacher = teacher.requires_grad_(False).eval()
        self.multiscale, self.hole_weighted, self.pixel_branch = multiscale, hole_weighted, pixel_branch
        if head is None:
            channels = ([3] if pixel_branch else []) + (teacher.multiscale_channels if multiscale else [])
            head = (MultiScaleHead(channels, width, groups) if multiscale
                    else Head3D(teacher.feature_channels, width, depth, groups))
        self.head = head

    def train(self, mode: bool = True) -> "Discriminator":
        super().train(mode)
        self.teacher.eval()  # frozen: no dropout, whatever the stage does
        return self

    def forward(self, x_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        if not self.multiscale:
            return self.head(self.teacher.encode(x_t, t, cond)).reshape(x_t.shape[0])
        feats = self.teacher.encode(x_t, t, cond, multiscale=True)
        if self.pixel_branch:
            feats = [x_t] + feats
        weights = hole_map(cond, x_t) if self.hole_weighted else None
        return self.head(feats, weights).reshape(x_t.shape[0])

    def trainable_state_dict(self) -> dict:
        """The head's weights (the teacher's are the teacher checkpoint's), keyed as in ``state_dict``."""
        return {f"head.{k}": v for k, v in self.head.state_dict().items()}
