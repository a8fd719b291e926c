"""The distillation stages on low-dimensional toys with known answers (tests/toys.py).

- 1-D Gaussian: the teacher's v-prediction is exact (closed form), the student an affine one-step generator;
  the KL stage (plain DMD and softened KL with the optimal discriminator) must bring the student's mean and
  standard deviation within 5% of the data's.
- 2-D ring of 8 Gaussians: a small MLP teacher trained here; the GAN stage must bring the 4-step student's
  sliced Wasserstein distance to the data below that of the undistilled 4-step student (the teacher's weights).
"""

import copy

import pytest
import torch
from torch import nn

from fastvdm.diffusion import FewStepSampler, VSchedule
from fastvdm.distill.gan_stage import GANConfig, GANStage
from fastvdm.distill.kl_stage import KLConfig, KLStage
from toys import AffineV, GaussianLogRatio, GaussianV, ring_of_gaussians, ring_swd, train_ring_teacher
from fastvdm.models.discriminator import Discriminator

MEAN, STD = 1.0, 0.5


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("weighting", ["plain", "softened"])
def test_kl_stage_matches_gaussian(weighting):
    sch = VSchedule()
    sampler = FewStepSampler(sch, timesteps=(999,))  # the affine student is a one-step generator
    teacher = GaussianV(sch, MEAN, STD).requires_grad_(False)
    fake = GaussianV(sch, MEAN, STD)  # initialized from the teacher, as in FVGen
    student = AffineV(sch, m=-0.5, c=1.5)
    disc = GaussianLogRatio(sch, MEAN, STD, student)  # the optimal discriminator for the current student
    cfg = KLConfig(weighting=weighting, lr_g=1.5e-2, lr_fake=3e-2, fake_steps=3)
    stage = KLStage(student, teacher, fake, sampler, disc if weighting == "softened" else None, cfg)
    like = torch.zeros(64, 16)  # 64 samples of 16 iid elements each
    for i in range(200):
        if i == 140:
            for g in stage.opt_g.param_groups:
                g["lr"] *= 0.1
        logs = stage.step(like)
    assert ("kl_weight" in logs) == (weighting == "softened")
    mean, std = student.m.item(), student.c.abs().item()
    assert abs(mean - MEAN) < 0.05 * MEAN, f"student mean {mean:.4f} vs {MEAN}"
    assert abs(std - STD) < 0.05 * STD, f"student std {std:.4f} vs {STD}"
    # The generated samples themselves (one-step sampler) have those moments.
    x = sampler(student, {}, (4096, 16), generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - MEAN) < 0.05 * MEAN and abs(x.std().item() - STD) < 0.05 * STD


def test_gan_stage_improves_four_step_student_on_ring():
    sch = VSchedule()
    sampler = FewStepSampler(sch)
    assert sampler.timesteps == [999, 749, 499, 249]
    teacher = train_ring_teacher(sch, steps=600, seed=0)

    def swd(model):
        return ring_swd(lambda shape, g: sampler(model, {}, shape, generator=g))

    student = copy.deepcopy(teacher).requires_grad_(True)
    swd_before = swd(student)  # the undistilled 4-step student = the teacher's weights, 4 steps
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 1))
    disc = Discriminator(teacher, head)
    teacher_state = copy.deepcopy(teacher.state_dict())
    # Two time-scale: the head (lr 3e-4) is updated twice per student update (lr 2e-5); noise levels t <= 500.
    stage = GANStage(student, disc, sampler, GANConfig(lr_g=2e-5, lr_d=3e-4, disc_steps=2, t_range=(0, 500)))
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        stage.step(ring_of_gaussians(256, generator=g))
    swd_after = swd(student)
    assert swd_after < 0.9 * swd_before, f"SWD {swd_before:.4f} -> {swd_after:.4f}"
    for k, v in teacher.state_dict().items():  # the discriminator's encoder stayed frozen
        assert torch.equal(v, teacher_state[k]), k
