"""FVGen distillation of a diffusers video U-Net into a 4-step student, on fastvdm's kernels: the whole recipe.

    python examples/distill_diffusers.py --out runs/svd_student                       # tiny random SVD-style U-Net
    python examples/distill_diffusers.py --unet path/to/svd/unet --latents clips.safetensors --out runs/svd4

Steps (FVGen, ICCV 2025, on fastvdm.distill):
1. the teacher: a diffusers U-Net (``--unet``: a local ``save_pretrained`` folder of a
   UNetSpatioTemporalConditionModel; default: a tiny random one, to show the mechanics) with its scheduler's
   parameterization, wrapped by :class:`fastvdm.integrations.diffusers_distill.DiffusersVModel` as a
   ``model(x_t, t, cond) -> v``; ``apply_fastvdm`` puts teacher, student and fake-score U-Nets on fastvdm's
   fused GroupNorm and video attention;
2. GAN stage: the student (a copy of the teacher) against a discriminator made of the frozen teacher's down
   and middle blocks plus a trainable 3D-CNN head;
3. softened reverse-KL stage: DMD score difference between the teacher and an online fake-score U-Net, weighted
   by the stage-1 discriminator;
4. the student is saved with ``save_pretrained`` (safetensors + config) and samples in 4 steps
   (``FewStepSampler``).

Data: ``--latents`` is a safetensors file with ``latents`` (N, 4, T, H, W) (VAE latents of real clips, scaled
as the U-Net expects), ``image_latents`` (N, 4, 1, H, W), ``encoder_hidden_states`` (N, 1, D) and
``added_time_ids`` (N, 3); without it, random tensors of those shapes stand in (the losses then only show that
the recipe runs). The output folder must not exist unless ``--force``.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the student U-Net (save_pretrained); must not exist")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--unet", help="local diffusers folder of an SVD U-Net (default: a tiny random one)")
    p.add_argument("--latents", help="safetensors file of training latents (see above; default: random)")
    p.add_argument("--gan-steps", type=int, default=4, help="GAN-stage student updates (default 4)")
    p.add_argument("--kl-steps", type=int, default=4, help="KL-stage student updates (default 4)")
    p.add_argument("--batch", type=int, default=2, help="clips per step (default 2)")
    p.add_argument("--frames", type=int, default=3, help="frames per random clip (default 3)")
    p.add_argument("--size", type=int, default=8, help="latent size of random clips (default 8)")
    p.add_argument("--no-fastvdm", action="store_true", help="keep the stock diffusers modules (for comparison)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def fail(msg: str) -> None:
    print(f"distill_diffusers: error: {msg}", file=sys.stderr)
    sys.exit(2)


def tiny_svd_unet():
    from diffusers import UNetSpatioTemporalConditionModel

    return UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=24, cross_attention_dim=16,
        num_attention_heads=(2, 4), num_frames=3,
    )


def svd_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", interpolation_type="linear", use_karras_sigmas=True, sigma_min=0.002,
        sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous",
    )


def load_data(args, unet, gen):
    keys = ("latents", "image_latents", "encoder_hidden_states", "added_time_ids")
    if args.latents:
        from safetensors.torch import load_file

        if not os.path.isfile(args.latents):
            fail(f"--latents {args.latents}: no such file")
        data = load_file(args.latents)
        missing = [k for k in keys if k not in data]
        if missing:
            fail(f"--latents {args.latents}: missing tensors {missing} (expected {list(keys)})")
        return data
    n, d = 4 * args.batch, unet.config.cross_attention_dim
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return dict(latents=r(n, 4, args.frames, args.size, args.size), image_latents=r(n, 4, 1, args.size, args.size),
                encoder_hidden_states=r(n, 1, d), added_time_ids=r(n, 3))


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.path.exists(args.out) and not args.force:
        fail(f"--out {args.out} exists; pass --force to replace it")
    try:
        import diffusers  # noqa: F401
    except ImportError:
        fail("needs diffusers: pip install 'fastvdm[diffusers]'")
    from fastvdm.diffusion import FewStepSampler, VSchedule
    from fastvdm.distill import GANConfig, GANStage, KLConfig, KLStage
    from fastvdm.integrations.diffusers import apply_fastvdm, remove_fastvdm
    from fastvdm.integrations.diffusers_distill import DiffusersVModel
    from fastvdm.models import Discriminator

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    if args.unet:
        from diffusers import UNetSpatioTemporalConditionModel

        if not os.path.isdir(args.unet):
            fail(f"--unet {args.unet}: not a folder (a diffusers save_pretrained folder of the U-Net)")
        teacher_unet = UNetSpatioTemporalConditionModel.from_pretrained(args.unet)
    else:
        teacher_unet = tiny_svd_unet()
    data = load_data(args, teacher_unet, gen)
    sched = svd_scheduler()

    # 1. teacher, student, fake score; fastvdm's kernels in all three
    unets = [teacher_unet, copy.deepcopy(teacher_unet), copy.deepcopy(teacher_unet)]
    if not args.no_fastvdm:
        print(apply_fastvdm(unets[0]))
        for u in unets[1:]:
            apply_fastvdm(u)
    teacher, student, fake = (DiffusersVModel(u, sched) for u in unets)
    teacher.requires_grad_(False)
    disc = Discriminator(teacher, width=32, depth=2, groups=8)
    sampler = FewStepSampler(VSchedule())

    def batch(i):
        idx = torch.randint(len(data["latents"]), (args.batch,), generator=gen)
        cond = {k: data[k][idx] for k in ("image_latents", "encoder_hidden_states", "added_time_ids")}
        return data["latents"][idx], cond

    # 2. GAN stage
    gan = GANStage(student, disc, sampler, GANConfig(lr_g=1e-5, lr_d=2e-4, disc_steps=2))
    for i in range(args.gan_steps):
        logs = gan.step(*batch(i))
        print(f"gan {i + 1}/{args.gan_steps}: " + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()), flush=True)
    # 3. softened reverse-KL stage
    kl = KLStage(student, teacher, fake, sampler, disc, KLConfig(weighting="softened", fake_steps=2))
    for i in range(args.kl_steps):
        logs = kl.step(*batch(i))
        print(f"kl {i + 1}/{args.kl_steps}: " + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()), flush=True)

    # 4. a 4-step sample, then save the student (stock modules: the folder loads without fastvdm)
    x0, cond = batch(0)
    with torch.no_grad():
        clip = sampler(student, cond, x0.shape)
    print(f"4-step student sample: {tuple(clip.shape)}, mean {clip.mean():.3f}, std {clip.std():.3f}")
    if not args.no_fastvdm:
        remove_fastvdm(student.unet)
    parent = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".distill_diffusers_", dir=parent)
    student.unet.save_pretrained(tmp, safe_serialization=True)  # nothing half-written at --out
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.replace(tmp, args.out)
    print(f"student U-Net saved to {args.out} (safetensors + config.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
