"""The experimental discriminator heads (experiments/disc_heads.py) on the tiny VideoUNet: multi-scale heads,
hole-weighted pooling, the pixel branch; and that a GAN run with them is rebuilt by a later KL stage.

    python -m pytest experiments          # from the source checkout (not part of tests/)
"""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from experiments.disc_heads import MultiScaleDiscriminator, MultiScaleHead, hole_map  # noqa: E402
from fastvdm.distill.build import head_config, make_discriminator  # noqa: E402
from fastvdm.models.discriminator import Discriminator  # noqa: E402
from test_distill import B, H, T, W, backward_through, clip_cond, small_unet  # noqa: E402,F401


def test_multiscale_hole_weighted_discriminator():
    teacher = small_unet()
    disc = MultiScaleDiscriminator(teacher, width=8, groups=4, hole_weighted=True)
    assert isinstance(disc.head, MultiScaleHead)
    x0, cond = clip_cond()
    backward_through(disc, teacher, x0, cond)
    # hole map: missed pixels of target frames only
    holes = hole_map(cond, x0)
    assert holes.shape == (B, 1, T, H, W)
    assert torch.equal(holes[:, :, 1:], 1 - cond["cond_mask"][:, :, 1:]) and holes[:, :, 0].sum() == 0
    # weighted pooling against a hand computation: one scale, maps given directly
    head = MultiScaleHead([3], width=4, groups=2, uniform_floor=0.5)
    h = torch.randn(2, 3, 2, 4, 4)
    m = head.outs[0](head.blocks[0](h)).float()
    w = torch.zeros(2, 1, 2, 8, 8)
    w[:, :, :, :4, :4] = 1.0  # the top-left quarter of every frame is a hole
    cell = torch.full((2, 1, 2, 4, 4), 0.5)
    cell[:, :, :, :2, :2] += 1.0
    expect = (m * cell).flatten(1).sum(1) / cell.flatten(1).sum(1)
    assert torch.allclose(head([h], w), expect, atol=1e-6)
    assert torch.allclose(head([h]), m.flatten(1).mean(1), atol=1e-6)
    with pytest.raises(TypeError):
        Discriminator(teacher, hole_weighted=True)  # the library's discriminator has no such option


def test_pixel_branch_head_sees_the_clip():
    """With pixel_branch, the first head reads x_t itself: its logit changes with x_t even where the frozen
    encoder's features would not, and the teacher still gets no gradient."""
    teacher = small_unet()
    disc = MultiScaleDiscriminator(teacher, width=8, groups=4, pixel_branch=True)
    assert len(disc.head.blocks) == 1 + len(teacher.multiscale_channels)
    assert disc.head.blocks[0].conv.in_channels == 3
    x0, cond = clip_cond()
    t = torch.tensor([0.0, 5.0])
    x_t = x0.clone().requires_grad_(True)
    disc(x_t, t, cond).sum().backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert disc.head.blocks[0].conv.weight.grad.abs().sum() > 0
    # forward = head([x_t] + encoder features); the pixel head's term is its own pooled map on x_t
    with torch.no_grad():
        feats = teacher.encode(x0, t, cond, multiscale=True)
        full = disc.head([x0] + feats)
        assert torch.allclose(disc(x0, t, cond), full, atol=1e-6)
        pixel_term = lambda x: disc.head.outs[0](disc.head.blocks[0](x)).flatten(1).mean(1)  # noqa: E731
        x_shift = x0 + 0.5 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
        full2 = disc.head([x_shift] + feats)
    assert not torch.allclose(full2, full)
    assert torch.allclose(full2 - full, pixel_term(x_shift) - pixel_term(x0), atol=1e-5)


def test_head_kind_round_trip_through_the_checkpoint_config():
    """build_stage stores the experiment's head config; make_discriminator rebuilds the same head from it."""
    teacher = small_unet()
    cfg = head_config(teacher, width=8, groups=4, kind="multiscale", hole_weighted=True, pixel_branch=True)
    disc = make_discriminator(teacher, cfg)
    assert isinstance(disc, MultiScaleDiscriminator) and disc.pixel_branch and disc.hole_weighted
    again = make_discriminator(teacher, dict(cfg))
    assert again.head.state_dict().keys() == disc.head.state_dict().keys()
    # a checkpoint config of an older run: multiscale flag, no kind
    old = {k: v for k, v in cfg.items() if k != "kind"}
    assert isinstance(make_discriminator(teacher, dict(old, multiscale=True)), MultiScaleDiscriminator)
