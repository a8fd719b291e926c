"""The render prior of a novel-view denoiser: the point-cloud render with its holes filled classically.

``pull_push_fill`` fills each frame's holes by a pull-push pyramid (optionally a multigrid harmonic fill);
``render_prior(cond, like, smooth_iters)`` returns (g, mask, flag): that filled render, with the clean view at
input frames. It is memoized per condition (one entry, :class:`RenderCache`): a sampler or a distillation step
evaluates several networks on one condition and the fill costs ~7% of a tiny-preset forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pull_push_fill(rgb: Tensor, mask: Tensor, smooth_iters: int = 0) -> Tensor:
    """Fill the holes of each frame by pull-push (Gortler et al. 1996): average the valid pixels down an image
    pyramid (2x2 means, to 1x1), then fill back up, each level keeping its valid fraction w of its own mean
    and taking 1 - w from the bilinearly upsampled coarser level. Valid pixels are unchanged.

    smooth_iters > 0 makes it a multigrid harmonic fill: at every level on the way up, that many Jacobi sweeps
    of Laplace's equation (each hole pixel moves to the mean of its 4 neighbours, replicate border) refine the
    pixels that are not fully valid, so the coarse fill is the initial guess of the finer level's smooth
    solution. On the held-out split (8x32x32) the masked PSNR of the filled render is 23.19 dB with 0 sweeps,
    24.10 with 5 and 24.17 with 10 (OpenCV Telea: 23.70); 5 sweeps cost ~4 ms per 32x32 clip of 8 frames.

    rgb: (B, C, T, H, W); mask: (B, 1, T, H, W) in [0, 1] (1 = valid). Returns (B, C, T, H, W); a frame with
    no valid pixel comes back 0.
    """
    B, C, T, H, W = rgb.shape
    c = (rgb * mask).transpose(1, 2).reshape(B * T, C, H, W)
    w = mask.to(rgb.dtype).transpose(1, 2).reshape(B * T, 1, H, W)
    cs, ws = [c], [w]
    while max(cs[-1].shape[-2:]) > 1:
        cs.append(F.avg_pool2d(cs[-1], 2, ceil_mode=True))
        ws.append(F.avg_pool2d(ws[-1], 2, ceil_mode=True))
    neighbours = torch.tensor([[0., 1., 0.], [1., 0., 1.], [0., 1., 0.]], dtype=rgb.dtype, device=rgb.device)
    neighbours = (neighbours / 4).expand(C, 1, 3, 3)
    col = cs[-1] / ws[-1].clamp_min(1e-6)
    for c, w in zip(reversed(cs[:-1]), reversed(ws[:-1])):
        up = F.interpolate(col, size=c.shape[-2:], mode="bilinear", align_corners=False)
        a = w.clamp(0, 1)
        known = c / w.clamp_min(1e-6) * a
        col = known + (1 - a) * up
        for _ in range(smooth_iters):
            mean4 = F.conv2d(F.pad(col, (1, 1, 1, 1), mode="replicate"), neighbours, groups=C)
            col = known + (1 - a) * mean4
    return col.reshape(B, T, C, H, W).transpose(1, 2)


class RenderCache:
    """One-entry memo of :func:`render_prior`: valid while the condition tensors are the very same objects, not
    modified in place since (same ``_version``), and none of them requires grad. It holds references to those
    tensors (so their ids cannot be reused by new tensors while cached) and to the result; the entry is shared by
    every denoiser with the same fill settings (teacher, student and fake-score model in one distillation step)."""

    def __init__(self):
        self._entry = None  # (key, tensors, versions, result)

    @staticmethod
    def _cacheable(tensors) -> bool:
        return all(isinstance(t, Tensor) and not t.requires_grad for t in tensors)

    def get(self, key, tensors):
        e = self._entry
        if e is None or e[0] != key or not self._cacheable(tensors) or len(e[1]) != len(tensors):
            return None
        if all(a is b and a._version == v for a, b, v in zip(e[1], tensors, e[2])):
            return e[3]
        return None

    def put(self, key, tensors, result) -> None:
        self._entry = (key, tensors, tuple(t._version for t in tensors), result) if self._cacheable(tensors) else None

    def clear(self) -> None:
        self._entry = None


render_cache = RenderCache()


def compute_render_prior(cond: dict, like: Tensor, fill: bool = True, smooth_iters: int = 5
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """(g, mask, flag), not memoized: g (B, 3, T, H, W) the render (``cond_rgb`` * ``cond_mask``), its holes
    filled by :func:`pull_push_fill` when ``fill``, replaced by ``input_frames`` at input frames; mask
    (B, 1, T, H, W) the render mask; flag (B, 1, T, 1, 1) bool, True at input frames. In ``like``'s dtype."""
    flag = cond["is_input"].to(like.device).bool()[:, None, :, None, None]
    mask = cond["cond_mask"].to(like.dtype)
    g = cond["cond_rgb"].to(like.dtype) * mask
    if fill:
        g = pull_push_fill(g, mask, smooth_iters)
    return torch.where(flag, cond["input_frames"].to(like.dtype), g), mask, flag


def render_prior(cond: dict, like: Tensor, fill: bool = True, smooth_iters: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`compute_render_prior`, memoized by :data:`render_cache` (see :class:`RenderCache`)."""
    if torch.compiler.is_compiling():  # a traced graph recomputes it (the memo's identity checks are host logic)
        return compute_render_prior(cond, like, fill, smooth_iters)
    key = (bool(fill), int(smooth_iters), like.dtype, like.device)
    tensors = tuple(cond[k] for k in ("cond_rgb", "cond_mask", "is_input", "input_frames"))
    hit = render_cache.get(key, tensors)
    if hit is not None:
        return hit
    out = compute_render_prior(cond, like, fill, smooth_iters)
    render_cache.put(key, tensors, out)
    return out
