"""PSNR / SSIM against scikit-image's implementations (the oracle) on fresh random images."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fastvdm.metrics import psnr, ssim, ssim_map


def _pair(gen, shape, noise=0.1):
    """A smooth-ish random image and a noisy copy, in [0, 1]."""
    a = torch.rand(shape, generator=gen, dtype=torch.float64)
    a = torch.nn.functional.avg_pool2d(a.reshape(-1, 1, *shape[-2:]), 3, 1, 1).reshape(shape)
    b = (a + noise * torch.randn(shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return a, b


def _sk_ssim(a, b, data_range, full=False):
    return structural_similarity(a, b, data_range=data_range, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, full=full)


@pytest.mark.parametrize("shape", [(3, 32, 40), (1, 23, 17)])
def test_psnr_ssim_match_skimage(shape):
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        a, b = _pair(gen, shape)
        assert psnr(b, a, data_range=1.0).item() == pytest.approx(
            peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=1.0), abs=1e-9)
        assert ssim(b, a, data_range=1.0).item() == pytest.approx(_sk_ssim(a.numpy(), b.numpy(), 1.0), abs=1e-9)


def test_batched_and_range():
    gen = torch.Generator().manual_seed(2)
    a, b = _pair(gen, (2, 3, 3, 24, 24))
    a2, b2 = a * 2 - 1, b * 2 - 1  # [-1, 1] images with data_range 2 give the same scores
    p, s = psnr(b2, a2, data_range=2.0), ssim(b2, a2, data_range=2.0)
    assert p.shape == s.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            an, bn = a2[i, j].numpy(), b2[i, j].numpy()
            assert p[i, j].item() == pytest.approx(peak_signal_noise_ratio(an, bn, data_range=2.0), abs=1e-9)
            assert s[i, j].item() == pytest.approx(_sk_ssim(an, bn, 2.0), abs=1e-9)
    assert ssim(a, a, data_range=1.0).allclose(torch.ones(2, 3, dtype=torch.float64))


def test_masked_variants():
    gen = torch.Generator().manual_seed(3)
    a, b = _pair(gen, (3, 30, 30))
    mask = (torch.rand(1, 30, 30, generator=gen) < 0.3).double()
    m = mask[0].bool().numpy()
    an, bn = a.numpy(), b.numpy()
    mse = ((an - bn) ** 2)[:, m].mean()
    assert psnr(b, a, data_range=1.0, mask=mask).item() == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-9)
    _, smap = _sk_ssim(an, bn, 1.0, full=True)  # per-pixel map, averaged over channels by skimage
    assert ssim(b, a, data_range=1.0, mask=mask).item() == pytest.approx(smap[:, m].mean(), abs=1e-9)
    assert ssim_map(b, a, data_range=1.0).numpy() == pytest.approx(smap, abs=1e-9)
    # a worse prediction only outside the mask does not change the masked score
    worse = torch.where(mask.bool(), b, 1 - b)
    assert psnr(worse, a, data_range=1.0, mask=mask).item() == pytest.approx(psnr(b, a, data_range=1.0, mask=mask).item())


def test_bad_input():
    x = torch.rand(3, 16, 16)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, x[:2], data_range=1.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, x, data_range=0)
    with pytest.raises(ValueError, match="too small"):
        ssim(x[:, :8, :8], x[:, :8, :8], data_range=1.0)


# ------------------------------------------------------------------------------- distribution metrics (issue 19)
def test_laplacian_pyramid_sums_back_and_ignores_constants():
    import torch.nn.functional as F

    from fastvdm.metrics import laplacian_pyramid

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 17, 12, generator=g, dtype=torch.float64)
    pyr = laplacian_pyramid(x, 3)
    assert [tuple(p.shape[-2:]) for p in pyr] == [(17, 12), (9, 6), (5, 3)]
    rec = pyr[-1]
    for lap in reversed(pyr[:-1]):
        rec = lap + F.interpolate(rec, size=lap.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(rec, x, rtol=0, atol=1e-12)
    const = torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)
    assert laplacian_pyramid(const, 2)[0].abs().max() < 1e-12


def test_sliced_wasserstein_hand_computed():
    from fastvdm.metrics import sliced_wasserstein

    a = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    # one dimension: every direction is +-1, so SWD is the 1-D W1 = mean |sorted a - sorted b|
    assert abs(sliced_wasserstein(a, a + 1, 8, channels=1, normalize=False) - 1.0) < 1e-12
    assert sliced_wasserstein(a, a.flip(0), 8, channels=1, normalize=False) == 0.0
    # unequal sizes: a's quantiles at (i + 0.5) / 4 of {0, 1} are 0, 0.25, 0.75, 1 vs b = 0, 0.5, 1, 1.5
    v = sliced_wasserstein(torch.tensor([[0.0], [1.0]]), torch.tensor([[1.5], [0.0], [1.0], [0.5]]), 4, 1,
                           normalize=False)
    assert abs(v - (0 + 0.25 + 0.25 + 0.5) / 4) < 1e-12
    # normalized by a's std: a shift of one real std is a distance of 1
    assert abs(sliced_wasserstein(a, a + a.std(), 8, channels=1) - 1.0) < 1e-12
    # 2-D shift (c, 0): per direction w the projections shift by c w_x, so SWD = mean_w |c w_x|
    g = torch.Generator().manual_seed(3)
    pts = torch.randn(50, 2, generator=g, dtype=torch.float64)
    v = sliced_wasserstein(pts, pts + torch.tensor([0.7, 0.0], dtype=torch.float64), 16, 2,
                           torch.Generator().manual_seed(5), normalize=False)
    dirs = torch.randn(2, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    assert abs(v - (0.7 * dirs[0].abs()).mean().item()) < 1e-12
    assert sliced_wasserstein(a[:0], a, 4, 1) != sliced_wasserstein(a[:0], a, 4, 1)  # empty: NaN


def test_patch_swd_and_hf_ratio_look_only_at_holes():
    from fastvdm.metrics import hf_energy_ratio, patch_swd

    g = torch.Generator().manual_seed(1)
    real = torch.randn(6, 3, 16, 16, generator=g, dtype=torch.float64)
    holes = torch.zeros(6, 1, 16, 16, dtype=torch.float64)
    holes[..., 4:12, 2:10] = 1
    assert patch_swd(real, real.clone(), holes)["swd"] == 0.0
    outside = real + 5 * (1 - holes) * torch.randn(real.shape, generator=g, dtype=torch.float64)
    r = patch_swd(real, outside, holes, levels=1, patch=1)  # 1x1 patches at hole pixels: untouched there
    assert r["swd"] == 0.0 and r["patches"] == [6 * 64]
    noisy = [patch_swd(real, real + s * torch.randn(real.shape, generator=g, dtype=torch.float64), holes)["swd"]
             for s in (0.1, 0.5, 2.0)]
    assert 0 < noisy[0] < noisy[1] < noisy[2]
    blur = (real + real.roll(1, -1) + real.roll(-1, -1)) / 3
    assert abs(hf_energy_ratio(real, 2 * real, holes) - 4.0) < 1e-9  # the Laplacian is linear
    assert abs(hf_energy_ratio(real, real + 0.4, holes) - 1.0) < 1e-9  # constants carry no fine detail
    assert hf_energy_ratio(real, blur, holes) < 0.6


def _plane_clip(T=3, H=8, W=12, shift=2, seed=0):
    """A textured fronto-parallel plane at z = 2 seen by a camera translating along x so that the image shifts
    by ``shift`` pixels per frame: frame t at column u shows texture column u + t * shift."""
    g = torch.Generator().manual_seed(seed)
    tex = torch.rand(3, H, W + T * shift, generator=g, dtype=torch.float64)
    fx = 10.0
    frames = torch.stack([tex[:, :, t * shift:t * shift + W] for t in range(T)])
    c2w = torch.eye(4, dtype=torch.float64).repeat(T, 1, 1)
    c2w[:, 0, 3] = torch.arange(T, dtype=torch.float64) * shift * 2.0 / fx  # dx = shift * z / fx
    intr = torch.tensor([[fx, fx, W / 2, H / 2]] * T, dtype=torch.float64)
    return frames, torch.full((T, H, W), 2.0, dtype=torch.float64), c2w, intr


def test_temporal_error_hand_computed():
    from fastvdm.metrics import temporal_error, warp_previous

    frames, depth, c2w, intr = _plane_clip()
    warped, valid = warp_previous(frames, depth, c2w, intr)
    # frame t+1's column u comes from frame t's column u + 2: inside frame t for u < W - 2
    assert valid.shape == (2, 1, 8, 12) and torch.equal(valid[:, 0, :, :10], torch.ones(2, 8, 10, dtype=torch.float64))
    assert valid[:, 0, :, 10:].sum() == 0
    torch.testing.assert_close(warped[:, :, :, :10], frames[1:, :, :, :10], rtol=0, atol=1e-9)
    sse, n = temporal_error(frames, depth, c2w, intr)
    assert sse < 1e-15 and n == 2 * 8 * 10 * 3
    noise = 0.1 * torch.randn(frames[2:].shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    noisy = frames.clone()
    noisy[2:] += noise
    region = torch.zeros(3, 1, 8, 12, dtype=torch.float64)
    region[2, :, :, 3:7] = 1  # score only these pixels of frame 2
    sse, n = temporal_error(noisy, depth, c2w, intr, region)
    assert abs(sse / n - (noise[0, :, :, 3:7] ** 2).mean().item()) < 1e-12 and n == 8 * 4 * 3
    # an occluder in frame t (depth far from the projected depth) invalidates those pixels
    occl = depth.clone()
    occl[0, :, 5:9] = 1.0
    _, v2 = warp_previous(frames, occl, c2w, intr)
    assert v2[0, 0, :, 3:7].sum() == 0 and v2[0, 0, :, :3].sum() == 8 * 3
