"""Image metrics that need no weights: PSNR and SSIM, with masked variants, and distribution metrics of hole
fills (patch sliced Wasserstein distance, high-frequency energy ratio, temporal consistency; end of module).

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


# ----------------------------------------------------------------------------------------------------------------
# Distribution metrics of hole fills (no downloaded weights). A per-pixel metric (PSNR) rewards a blurry mean
# fill; these compare generated hole content with real hole content as distributions:
#
# - laplacian_pyramid / hole_patches / sliced_wasserstein: the patch SWD of Karras et al. 2018 (PGGAN), restricted
#   to hole pixels. Each frame is split into a Laplacian pyramid (5-tap binomial blur, 2x decimation; the last
#   level is the low-pass residual); at every level, 7x7 patches (all channels, reflect padding) centred on pixels
#   whose level-resolution hole mask (2x2 means of the full one) is >= 0.5 are sampled (at most ``per_frame`` per
#   frame, seeded), real and generated at the same centres. Both sets are normalized by the *real* set's
#   per-channel mean and std (so the distance is in units of real variation and sees contrast loss), projected on
#   ``projections`` random unit directions (seeded), and the 1-D Wasserstein-1 distances of the projections (mean
#   |difference| of sorted values, sets resampled to a common quantile grid when their sizes differ) are averaged.
#   The result per level, and their mean, is reported (lower is better; 0 for identical sets).
# - hf_energy_ratio: sum over hole pixels of the squared finest Laplacian level of the generated frames over the
#   same sum for the real frames (1 = as much fine detail as the data; < 1 blurry, > 1 grainy).
# - temporal_error: consecutive generated frames warped by the known geometry: each pixel of frame t+1 (with
#   its z-depth) is unprojected, projected into frame t and frame t is sampled there (bilinear); pixels that fall
#   outside frame t or are occluded there (relative depth mismatch > ``depth_tol``) are skipped. The error is the
#   mean squared difference over the remaining pixels of the ``region`` (e.g. the holes of frame t+1).


def _binomial_blur(x: torch.Tensor) -> torch.Tensor:
    """5-tap binomial [1 4 6 4 1] / 16 separable blur of (N, C, H, W), reflect padding (replicate below 3 px)."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) >= 3 else "replicate"
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode=mode), k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode=mode), k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Laplacian pyramid of images (N, C, H, W): [L_0, ..., L_{levels-2}, G_{levels-1}] with G_0 = x,
    G_{k+1} = blur(G_k)[::2, ::2], L_k = G_k - upsample(G_{k+1}) (bilinear to G_k's size). The levels sum back
    to x exactly: x = L_0 + up(L_1 + up(... + up(G_last)))."""
    if levels < 1:
        raise ValueError(f"laplacian_pyramid: levels must be >= 1, got {levels}")
    out, g = [], x
    for _ in range(levels - 1):
        down = _binomial_blur(g)[..., ::2, ::2]
        out.append(g - F.interpolate(down, size=g.shape[-2:], mode="bilinear", align_corners=False))
        g = down
    out.append(g)
    return out


def hole_patches(real: torch.Tensor, fake: torch.Tensor, holes: torch.Tensor, levels: int = 3, patch: int = 7,
                 per_frame: int = 64, generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per pyramid level, (real patches, generated patches), each (N_level, C * patch^2) float64, taken at the same
    hole-centred positions (see the section comment). real, fake: frames (N, C, H, W); holes: (N, 1, H, W) in
    {0, 1} (1 = hole)."""
    if real.shape != fake.shape or holes.shape[0] != real.shape[0] or holes.shape[-2:] != real.shape[-2:]:
        raise ValueError(f"hole_patches: real {tuple(real.shape)}, fake {tuple(fake.shape)} and holes "
                         f"{tuple(holes.shape)} must describe the same frames")
    pr, pf = laplacian_pyramid(real.double(), levels), laplacian_pyramid(fake.double(), levels)
    m, r = holes.double(), patch // 2
    out = []
    for lr, lf in zip(pr, pf):
        if m.shape[-2:] != lr.shape[-2:]:
            m = F.avg_pool2d(m, 2, ceil_mode=True)
        sel_r, sel_f = [], []
        mode = "reflect" if min(lr.shape[-2:]) > r else "replicate"
        ur = F.unfold(F.pad(lr, (r, r, r, r), mode=mode), patch)  # (N, C*p*p, H*W)
        uf = F.unfold(F.pad(lf, (r, r, r, r), mode=mode), patch)
        for i in range(lr.shape[0]):
            idx = torch.nonzero(m[i, 0].flatten() >= 0.5).flatten()
            if idx.numel() == 0:
                continue
            if idx.numel() > per_frame:
                idx = idx[torch.randperm(idx.numel(), generator=generator)[:per_frame]]
            sel_r.append(ur[i][:, idx].T)
            sel_f.append(uf[i][:, idx].T)
        d = ur.shape[1]
        out.append((torch.cat(sel_r) if sel_r else torch.zeros(0, d, dtype=torch.float64),
                    torch.cat(sel_f) if sel_f else torch.zeros(0, d, dtype=torch.float64)))
    return out


def _quantiles(sorted_x: torch.Tensor, n: int) -> torch.Tensor:
    """Values of sorted columns (M, P) at the n quantile midpoints (i + 0.5) / n (linear interpolation)."""
    m = sorted_x.shape[0]
    if m == n:
        return sorted_x
    pos = ((torch.arange(n, dtype=torch.float64) + 0.5) / n * m - 0.5).clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    w = (pos - lo)[:, None]
    return sorted_x[lo] * (1 - w) + sorted_x[hi] * w


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 128, channels: int = 3,
                       generator: torch.Generator | None = None, normalize: bool = True) -> float:
    """Sliced Wasserstein-1 distance between point sets a (N, D) (real) and b (M, D) (generated).

    normalize: divide both by a's per-channel std after subtracting a's per-channel mean (D = channels * k,
    channel-major as F.unfold lays patches out). Then ``projections`` random unit directions (from
    ``generator``), and per direction the mean absolute difference of the sorted projections (at common
    quantiles when N != M); the mean over directions. NaN if a set is empty."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return float("nan")
    a, b = a.double(), b.double()
    if normalize:
        d = a.shape[1]
        if d % channels:
            raise ValueError(f"sliced_wasserstein: dimension {d} is not a multiple of channels={channels}")
        ac = a.reshape(a.shape[0], channels, -1)
        mean = ac.mean((0, 2), keepdim=True)
        std = ac.std((0, 2), keepdim=True).clamp_min(1e-8)
        a = ((ac - mean) / std).reshape(a.shape[0], -1)
        b = ((b.reshape(b.shape[0], channels, -1) - mean) / std).reshape(b.shape[0], -1)
    dirs = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, _ = (a @ dirs).sort(0)
    pb, _ = (b @ dirs).sort(0)
    n = max(pa.shape[0], pb.shape[0])
    return float((_quantiles(pa, n) - _quantiles(pb, n)).abs().mean())


def patch_swd(real: torch.Tensor, fake: torch.Tensor, holes: torch.Tensor, levels: int = 3, patch: int = 7,
              per_frame: int = 64, projections: int = 128, seed: int = 0) -> dict:
    """Patch SWD of hole content: {"swd": mean over levels, "swd_levels": [per level], "patches": [counts]}.
    real, fake: (N, C, H, W) frames; holes (N, 1, H, W) (1 = hole). Deterministic given ``seed``."""
    g = torch.Generator().manual_seed(seed)
    sets = hole_patches(real, fake, holes, levels, patch, per_frame, g)
    per = [sliced_wasserstein(a, b, projections, real.shape[1], g) for a, b in sets]
    ok = [v for v in per if v == v]
    return {"swd": float(sum(ok) / len(ok)) if ok else float("nan"), "swd_levels": per,
            "patches": [int(a.shape[0]) for a, _ in sets]}


def hf_energy(x: torch.Tensor, holes: torch.Tensor) -> float:
    """Sum over hole pixels (holes (N, 1, H, W), 1 = hole) of the squared finest Laplacian level of x (N, C, H, W)."""
    lap = laplacian_pyramid(x.double(), 2)[0]
    return float((lap ** 2 * holes.double()).sum())


def hf_energy_ratio(real: torch.Tensor, fake: torch.Tensor, holes: torch.Tensor) -> float:
    """hf_energy(fake) / hf_energy(real) over the same hole pixels (NaN if the real energy is 0)."""
    e = hf_energy(real, holes)
    return hf_energy(fake, holes) / e if e > 0 else float("nan")


def warp_previous(frames: torch.Tensor, depth: torch.Tensor, c2w: torch.Tensor, intrinsics: torch.Tensor,
                  depth_tol: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame t warped into frame t+1's camera by the known geometry, for t = 0..T-2.

    frames (T, C, H, W); depth (T, H, W) z-depth of each frame (> 0); c2w (T, 4, 4) OpenCV camera-to-world;
    intrinsics (T, 4) fx, fy, cx, cy in pixels. Returns warped (T-1, C, H, W) (frame t sampled at the projections
    of frame t+1's pixels) and valid (T-1, 1, H, W) in {0, 1}: the projection lies inside frame t and its depth
    agrees with frame t's depth there within ``depth_tol`` (relative), i.e. the point is visible in both."""
    T, C, H, W = frames.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    warped, valid = [], []
    for t in range(T - 1):
        fx, fy, cx, cy = intrinsics[t + 1].double().tolist()
        z = depth[t + 1].double()
        pc = torch.stack([(u - cx) / fx * z, (v - cy) / fy * z, z, torch.ones_like(z)], -1)  # camera t+1
        world = pc @ c2w[t + 1].double().T
        cam = world @ torch.linalg.inv(c2w[t].double()).T
        fx0, fy0, cx0, cy0 = intrinsics[t].double().tolist()
        zt = cam[..., 2]
        ut = fx0 * cam[..., 0] / zt.clamp_min(1e-9) + cx0
        vt = fy0 * cam[..., 1] / zt.clamp_min(1e-9) + cy0
        grid = torch.stack([ut / W * 2 - 1, vt / H * 2 - 1], -1)[None]  # align_corners=False pixel centres
        img = F.grid_sample(frames[t:t + 1].double(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        dt = F.grid_sample(depth[t][None, None].double(), grid, mode="nearest", padding_mode="border",
                           align_corners=False)[0, 0]
        inside = (ut >= 0.5) & (ut <= W - 0.5) & (vt >= 0.5) & (vt <= H - 0.5) & (zt > 0) & (z > 0)
        agree = (zt - dt).abs() <= depth_tol * zt.abs()
        warped.append(img[0])
        valid.append((inside & agree).double()[None])
    return torch.stack(warped), torch.stack(valid)


def temporal_error(frames: torch.Tensor, depth: torch.Tensor, c2w: torch.Tensor, intrinsics: torch.Tensor,
                   region: torch.Tensor | None = None, depth_tol: float = 0.05) -> tuple[float, float]:
    """(sum of squared errors, number of pixel-channels) between frame t+1 and frame t warped into it
    (:func:`warp_previous`), over valid pixels in ``region`` (T, 1, H, W) of frame t+1 (None: all pixels). The
    mean is the first divided by the second; the parts let a caller pool clips."""
    warped, valid = warp_previous(frames, depth, c2w, intrinsics, depth_tol)
    m = valid if region is None else valid * region[1:].double()
    err = ((warped - frames[1:].double()) ** 2 * m).sum()
    return float(err), float(m.sum() * frames.shape[1])


__all__ = ["psnr", "ssim", "ssim_map", "laplacian_pyramid", "hole_patches", "sliced_wasserstein", "patch_swd",
           "hf_energy", "hf_energy_ratio", "warp_previous", "temporal_error"]
