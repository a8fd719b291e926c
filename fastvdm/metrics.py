"""Image metrics that need no weights: PSNR and SSIM, with masked variants.

Inputs are images (..., C, H, W) (any leading batch dims; for the model's video layout (B, C, T, H, W) pass
``x.transpose(1, 2)``); the result has the leading shape (...), float64. ``data_range`` is required: 1 for
images in [0, 1], 2 for [-1, 1], 255 for 8-bit. ``mask`` (broadcastable to the images, e.g. (..., 1, H, W))
selects the scored pixels, e.g. ``mask = 1 - cond_mask`` scores only what the point-cloud render missed;
an image whose mask is empty scores NaN.

SSIM follows Wang et al. 2004 (and scikit-image's ``structural_similarity`` with ``gaussian_weights=True,
sigma=1.5, use_sample_covariance=False``): an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma),
K1 = 0.01, K2 = 0.03, symmetric ("reflect" in scipy) boundary handling, per channel, averaged over
channels. Unmasked, the map is averaged without a 5-pixel border, as scikit-image does; masked, the map
is averaged over the masked pixels of the whole image (holes often touch the border).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(pred: torch.Tensor, target: torch.Tensor, data_range: float, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() < 3:
        raise ValueError(f"{name}: expected images (..., C, H, W), got shape {tuple(pred.shape)}")
    if not data_range > 0:
        raise ValueError(f"{name}: data_range must be > 0, got {data_range}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None, reduce_dims: int) -> torch.Tensor:
    dims = tuple(range(-reduce_dims, 0))
    if mask is None:
        return values.mean(dim=dims)
    m = torch.as_tensor(mask, dtype=torch.float64, device=values.device).expand_as(values)
    return (values * m).sum(dim=dims) / m.sum(dim=dims)


def psnr(pred: torch.Tensor, target: torch.Tensor, *, data_range: float,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB over the last three dims (C, H, W): 10 log10(range^2 / MSE)."""
    _check(pred, target, data_range, "psnr")
    err = (pred.double() - target.double()) ** 2
    mse = _masked_mean(err, mask, 3)
    return 10 * torch.log10(data_range ** 2 / mse)


def _gaussian_blur_symmetric(x: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Separable Gaussian filter of (N, 1, H, W) with symmetric boundary (edge sample repeated)."""
    g = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device) / sigma) ** 2)
    g = g / g.sum()

    def sym_index(n: int) -> torch.Tensor:
        i = torch.arange(-radius, n + radius, device=x.device) % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)

    h, w = x.shape[-2:]
    x = x.index_select(-2, sym_index(h))
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    x = x.index_select(-1, sym_index(w))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def ssim_map(pred: torch.Tensor, target: torch.Tensor, *, data_range: float, sigma: float = 1.5,
             truncate: float = 3.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per-pixel SSIM (..., C, H, W) float64 (Gaussian window of std ``sigma``, radius int(truncate*sigma+0.5))."""
    _check(pred, target, data_range, "ssim")
    shape = pred.shape
    x = pred.double().reshape(-1, 1, *shape[-2:])
    y = target.double().reshape(-1, 1, *shape[-2:])
    r = int(truncate * sigma + 0.5)
    stats = _gaussian_blur_symmetric(torch.cat([x, y, x * x, y * y, x * y], 1).reshape(-1, 1, *shape[-2:]), sigma, r)
    ux, uy, uxx, uyy, uxy = stats.reshape(-1, 5, *shape[-2:]).unbind(1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(shape)


def ssim(pred: torch.Tensor, target: torch.Tensor, *, data_range: float, mask: torch.Tensor | None = None,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity over the last three dims (C, H, W) (see the module docstring)."""
    s = ssim_map(pred, target, data_range=data_range, sigma=sigma)
    if mask is not None:
        return _masked_mean(s, mask, 3)
    pad = int(3.5 * sigma + 0.5)
    h, w = s.shape[-2:]
    if h <= 2 * pad or w <= 2 * pad:
        raise ValueError(f"ssim: images of {h}x{w} pixels are too small for the {2 * pad + 1}x{2 * pad + 1} window")
    return s[..., pad:h - pad, pad:w - pad].mean(dim=(-3, -2, -1))


__all__ = ["psnr", "ssim", "ssim_map"]
