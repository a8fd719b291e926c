r"""Loss helpers of the distillation stages that need no kernel: the softened reverse-KL weight and GAN losses.

The heavy, elementwise-over-the-whole-video losses (``denoising_loss``, ``dmd_loss``) are ops with kernels in
:mod:`fastvdm.ops`; what lives here acts on per-sample discriminator logits (shape (B,) or (B, ...)) and is
small, so it is plain PyTorch:

- :func:`softened_kl_weight`: the per-sample weight sigmoid(-logit) that turns the DMD (reverse-KL) update
  into the softened reverse-KL update of FVGen; pass it as ``weight`` to :func:`fastvdm.ops.dmd_loss`.
- :func:`gan_generator_loss`, :func:`gan_discriminator_loss`: non-saturating (softplus) and hinge GAN losses.
- :func:`r1_penalty`: the R1 gradient penalty on real samples for the discriminator.

Convention: a logit is the discriminator's raw output, positive for "real"; D(x) = sigmoid(logit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["softened_kl_weight", "gan_generator_loss", "gan_discriminator_loss", "r1_penalty", "GAN_KINDS"]

GAN_KINDS = ("non_saturating", "hinge")


def softened_kl_weight(logits: Tensor) -> Tensor:
    r"""Per-sample weight of the softened reverse-KL update: ``sigmoid(-logits)``, detached.

    logits: discriminator logits of the generated samples, any shape (typically (B,)); returns the same shape
    and dtype, without autograd history (the weight is a constant of the generator update).

    Derivation. Let p_r be the real (teacher) distribution, p_f the generator's (x = G_theta(z)), and
    s_r = grad_x log p_r, s_f = grad_x log p_f their scores. The DMD generator update is the gradient of the
    reverse KL,

        grad_theta KL(p_f || p_r) = E_z[(s_f(x) - s_r(x)) dx/dtheta],

    (the score-function term E_{p_f}[grad_theta log p_f] = grad_theta of the integral of p_f = 0 vanishes).
    The softened objective replaces p_f by the mixture m = (p_r + p_f) / 2, whose samples are half real (no
    theta dependence) and half generated, so by the same argument

        grad_theta KL(m || p_r) = 1/2 E_z[(grad_x log m(x) - s_r(x)) dx/dtheta].

    With grad_x log m = (p_r s_r + p_f s_f) / (p_r + p_f):

        grad_x log m - s_r = p_f / (p_r + p_f) * (s_f - s_r),

    i.e. the reverse-KL integrand times p_f / (p_r + p_f). The optimal discriminator between real and fake
    samples (logistic loss, real = 1) is D*(x) = p_r / (p_r + p_f), with logit log p_r - log p_f, so

        p_f / (p_r + p_f) = 1 - D*(x) = sigmoid(-logit(x)).

    The weight damps the update where the generator's samples already look real (D -> 1) and keeps it where
    they look fake; unlike the reverse KL, KL(m || p_r) is finite where the supports do not overlap. The
    constant 1/2 is absorbed in the learning rate. Use the GAN-stage discriminator's logits as the estimate
    of the optimal one; ``fastvdm.ops.dmd_loss(x, x0_real, x0_fake, weight=softened_kl_weight(logits))``.
    """
    return torch.sigmoid(-logits.detach())


def _check_kind(kind: str) -> None:
    if kind not in GAN_KINDS:
        raise ValueError(f"kind must be one of {GAN_KINDS}, got {kind!r}")


def gan_generator_loss(fake_logits: Tensor, kind: str = "non_saturating") -> Tensor:
    """Generator loss on the discriminator logits of generated samples (any shape), averaged to a scalar.

    "non_saturating": mean(softplus(-fake)) = -mean(log D(G(z))) (stable for large |logits|).
    "hinge": -mean(fake).
    """
    _check_kind(kind)
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    return -fake_logits.mean()


def gan_discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: str = "non_saturating") -> Tensor:
    """Discriminator loss on the logits of real and of generated (detached) samples, a scalar.

    "non_saturating" (logistic): mean(softplus(-real)) + mean(softplus(fake))
                                 = -mean(log D(x_real)) - mean(log(1 - D(x_fake))).
    "hinge": mean(relu(1 - real)) + mean(relu(1 + fake)).
    """
    _check_kind(kind)
    if kind == "non_saturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def r1_penalty(real_logits: Tensor, real_inputs: Tensor, gamma: float = 1.0) -> Tensor:
    """R1 gradient penalty gamma / 2 * E_b ||grad_x D(x_b)||^2 on real samples (Mescheder et al. 2018).

    real_inputs: (B, ...) real samples with ``requires_grad=True``; real_logits: the discriminator's logits
    computed from them, (B,) or (B, ...) (summed per sample). The discriminator must treat samples
    independently (so the gradient of the summed logits is each sample's own gradient). The gradient is
    taken with ``create_graph=True``, so the returned scalar trains the discriminator.
    """
    if not real_inputs.requires_grad:
        raise ValueError("r1_penalty needs real_inputs with requires_grad=True, and real_logits computed from them")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return 0.5 * gamma * grad.square().flatten(1).sum(1).mean()
