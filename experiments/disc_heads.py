"""Experimental discriminator heads (not FVGen's; the shipped student does not use them).

For a discriminator that must tell a sample from a real clip where they differ (a novel-view student's clips
differ from the data mostly in the pixels the render missed):
- :class:`MultiScaleHead`: one small head on each down level's features of the frozen teacher encoder (full,
  1/2, 1/4 ... resolution) and on the middle block's, their pooled logits summed;
- ``hole_weighted=True``: each head's logit map is averaged with weights that favour the pixels the render
  missed on target frames (:func:`hole_map`), instead of uniformly;
- ``pixel_branch=True``: one more head on the noised clip x_t itself (3 channels, full resolution), next to
  the encoder's features: for teachers whose encoder barely depends on x_t (``experiments/disc_probe.py``
  measures that: for the shipped tiny teacher the pooled middle-block features of a real clip and of the
  student's clip differ by 0.1% of their spread).

Importing this module registers the head kind "multiscale" with :func:`fastvdm.distill.build.register_head_kind`,
so ``build_stage(..., head={"kind": "multiscale", ...})`` and KL stages loading such a GAN run work.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastvdm.distill.build import register_head_kind
from fastvdm.models.discriminator import Discriminator, _ConvNormAct


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


class MultiScaleDiscriminator(Discriminator):
    """Frozen teacher encoder (every scale: ``teacher.encode(..., multiscale=True)``) + a :class:`MultiScaleHead`,
    optionally hole-weighted and with a pixel-branch head on x_t. ``forward(x_t, t, cond) -> (B,)`` logits."""

    def __init__(self, teacher: nn.Module, width: int = 32, groups: int = 8, hole_weighted: bool = False,
                 pixel_branch: bool = False, depth: int = 3, multiscale: bool = True):
        channels = ([3] if pixel_branch else []) + list(teacher.multiscale_channels)
        super().__init__(teacher, head=MultiScaleHead(channels, width, groups))
        self.hole_weighted, self.pixel_branch = hole_weighted, pixel_branch

    def forward(self, x_t: Tensor, t: Tensor, cond: Any, head: Optional[nn.Module] = None) -> Tensor:
        feats = self.teacher.encode(x_t, t, cond, multiscale=True)
        if self.pixel_branch:
            feats = [x_t] + feats
        weights = hole_map(cond, x_t) if self.hole_weighted else None
        return (self.head if head is None else head)(feats, weights).reshape(x_t.shape[0])


register_head_kind("multiscale", MultiScaleDiscriminator)
