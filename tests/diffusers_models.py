"""Tiny random-weight diffusers video U-Nets (the four classes fastvdm.integrations.diffusers patches) and
matching random inputs, shared by the diffusers integration tests.

Every parameter gets fresh Gaussian noise on top of diffusers' initialization, so no layer is zero (diffusers
zero-initializes e.g. TemporalConvLayer's last conv and the transformers' proj_out) and every patched op is on
the gradient path. Models are returned in eval mode (UNet3D's temporal convs have dropout 0.1).
"""

from __future__ import annotations

import torch

MODEL_NAMES = ("svd", "unet3d", "motion", "i2vgen")


def build(name: str, seed: int = 0, channels=(32, 64), groups: int = 32, dtype=torch.float32):
    """A tiny U-Net of the class ``name`` (see MODEL_NAMES) with random weights. ``groups`` applies where the
    class lets it be configured (SVD's ResNet blocks always use 32 groups)."""
    import diffusers

    torch.manual_seed(seed)
    common = dict(sample_size=8, out_channels=4, block_out_channels=tuple(channels), layers_per_block=1)
    if name == "svd":
        model = diffusers.UNetSpatioTemporalConditionModel(
            in_channels=8,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=24,
            cross_attention_dim=16,
            transformer_layers_per_block=1,
            num_attention_heads=(2, 4),
            num_frames=3,
            **common,
        )
    elif name == "unet3d":
        model = diffusers.UNet3DConditionModel(
            in_channels=4,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=16,
            attention_head_dim=8,
            norm_num_groups=groups,
            **common,
        )
    elif name == "motion":
        model = diffusers.UNetMotionModel(
            in_channels=4,
            down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
            up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"),
            cross_attention_dim=16,
            num_attention_heads=2,
            norm_num_groups=groups,
            motion_num_attention_heads=2,
            motion_max_seq_length=8,
            **common,
        )
    elif name == "i2vgen":
        model = diffusers.I2VGenXLUNet(
            in_channels=4,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=16,
            attention_head_dim=8,
            num_attention_heads=2,
            norm_num_groups=groups,
            **common,
        )
    else:
        raise ValueError(f"unknown model {name!r}; one of {MODEL_NAMES}")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.to(dtype).eval()


def inputs(name: str, batch: int = 2, frames: int = 3, size: int = 8, seed: int = 1, dtype=torch.float32) -> dict:
    """Keyword arguments of ``model(**inputs)`` for a model from :func:`build` (random, fixed by ``seed``)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    t = torch.tensor([7.0, 500.0, 250.0, 999.0])[:batch]
    if name == "svd":  # (B, F, C, H, W); image embedding (B, 1, D); 3 added time ids
        return dict(sample=rand(batch, frames, 8, size, size), timestep=t,
                    encoder_hidden_states=rand(batch, 1, 16), added_time_ids=rand(batch, 3))
    if name == "unet3d":  # (B, C, F, H, W)
        return dict(sample=rand(batch, 4, frames, size, size), timestep=t, encoder_hidden_states=rand(batch, 5, 16))
    if name == "motion":  # AnimateDiff takes the prompt embedding once per frame: (B * F, L, D)
        return dict(sample=rand(batch, 4, frames, size, size), timestep=t,
                    encoder_hidden_states=rand(batch * frames, 5, 16))
    if name == "i2vgen":
        return dict(sample=rand(batch, 4, frames, size, size), timestep=t, fps=torch.full((batch,), 8.0),
                    image_latents=rand(batch, 4, frames, size, size), image_embeddings=rand(batch, 16),
                    encoder_hidden_states=rand(batch, 5, 16))
    raise ValueError(f"unknown model {name!r}; one of {MODEL_NAMES}")


def to_double(inp: dict) -> dict:
    return {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in inp.items()}
