"""Networks: the VideoUNet (teacher = student = fake-score architecture) and its conditioning helpers.

    from fastvdm.models import VideoUNet, VideoUNetConfig, make_cond, drop_condition
    net = VideoUNet(VideoUNetConfig.preset("tiny"))    # a plain network F(x, t, cond)
    model = fastvdm.diffusion.PosteriorDenoiser(net)    # the denoiser (preconditioning, hole-fill prior)
    x0, cond = make_cond(batch)              # a collated ClipDataset batch
    v = model(x_t, t, cond)                  # (B, 3, T, H, W), t (B,) in [0, 999]
    feats = model.encode(x_t, t, cond)       # (B, channels[-1], T, H/2^L, W/2^L), for a discriminator
    disc = Discriminator(model)              # frozen encoder + trainable 3D-CNN head: disc(x_t, t, cond) -> (B,)
"""

from fastvdm.models.conditioning import COND_KEYS, drop_condition, make_cond
from fastvdm.models.discriminator import Discriminator, Head3D
from fastvdm.models.unet import VideoUNet, VideoUNetConfig, timestep_embedding

__all__ = ["VideoUNet", "VideoUNetConfig", "make_cond", "drop_condition", "timestep_embedding", "COND_KEYS",
           "Discriminator", "Head3D"]
