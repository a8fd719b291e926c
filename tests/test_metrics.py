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
