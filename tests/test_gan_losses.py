"""fastvdm.distill loss helpers: softened reverse-KL weight (and its derivation), GAN losses, R1 penalty.

Checked against closed forms written independently in float64 (log/exp of sigmoids, analytic gradients) on
fresh random inputs; the softened-KL derivation is checked numerically on two 1-D Gaussians.
"""

from __future__ import annotations

import math

import pytest
import torch

from fastvdm.distill import gan_discriminator_loss, gan_generator_loss, r1_penalty, softened_kl_weight

F64 = torch.float64


def _close(a, b, tol=1e-12):
    a, b = torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64)
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, rtol=tol, atol=tol), f"{a} != {b}"


# ---------------------------------------------------------------------------------------------- softened KL
def test_softened_kl_weight_is_detached_sigmoid_of_minus_logit():
    logits = (4 * torch.randn(64, dtype=F64)).requires_grad_(True)
    w = softened_kl_weight(logits)
    assert w.shape == logits.shape and w.dtype == F64
    assert not w.requires_grad and w.grad_fn is None
    _close(w, 1.0 / (1.0 + torch.exp(logits.detach())))
    extreme = softened_kl_weight(torch.tensor([-200.0, 200.0], dtype=torch.float32))
    assert torch.isfinite(extreme).all() and extreme[0] == 1.0 and extreme[1] < 1e-30


def _normal_logpdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


def test_softened_kl_weight_scales_the_score_difference():
    """grad_x log(m / p_r) = sigmoid(-logit) * (s_f - s_r), m = (p_r + p_f) / 2, logit = log p_r - log p_f."""
    mu_f, std_f = torch.tensor(1.3, dtype=F64), torch.tensor(0.7, dtype=F64)
    zero, one = torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64)
    x = (2 * torch.randn(200, dtype=F64)).requires_grad_(True)
    log_r, log_f = _normal_logpdf(x, zero, one), _normal_logpdf(x, mu_f, std_f)
    log_m = torch.logaddexp(log_r, log_f) - math.log(2)
    (lhs,) = torch.autograd.grad((log_m - log_r).sum(), x)
    s_r, s_f = -x.detach(), -(x.detach() - mu_f) / std_f**2
    _close(lhs, softened_kl_weight(log_r - log_f) * (s_f - s_r), 1e-10)


def test_softened_kl_gradient_matches_the_mixture_kl():
    """d/dmu KL(m || p_r) = 1/2 E_z[sigmoid(-logit(x)) (s_f(x) - s_r(x)) dx/dmu] for p_f = N(mu, s^2), x = mu + s z.

    Both sides by quadrature on a fine grid in float64: the left by autograd through the integral, the right
    with the weight from softened_kl_weight. Also: without the weight (plain reverse-KL integrand) it differs.
    """
    grid = torch.linspace(-14.0, 14.0, 56001, dtype=F64)
    dx = grid[1] - grid[0]
    zero, one = torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64)
    mu = torch.tensor(0.9, dtype=F64, requires_grad=True)
    std = torch.tensor(0.8, dtype=F64)

    log_r, log_f = _normal_logpdf(grid, zero, one), _normal_logpdf(grid, mu, std)
    log_m = torch.logaddexp(log_r, log_f) - math.log(2)
    kl = torch.trapezoid(log_m.exp() * (log_m - log_r), dx=dx)
    (lhs,) = torch.autograd.grad(kl, mu)

    z = grid
    phi = _normal_logpdf(z, zero, one).exp()
    m = mu.detach()
    x = m + std * z  # dx/dmu = 1
    logit = _normal_logpdf(x, zero, one) - _normal_logpdf(x, m, std)
    score_diff = -(x - m) / std**2 - (-x)  # s_f - s_r
    rhs = 0.5 * torch.trapezoid(phi * softened_kl_weight(logit) * score_diff, dx=dx)
    unweighted = 0.5 * torch.trapezoid(phi * score_diff, dx=dx)
    _close(lhs, rhs, 1e-8)
    assert abs(lhs.item() - unweighted.item()) > 1e-2


# ---------------------------------------------------------------------------------------------- GAN losses
def _naive_log_sigmoid(t):
    return torch.log(1.0 / (1.0 + torch.exp(-t)))


@pytest.mark.parametrize("kind", ["non_saturating", "hinge"])
def test_generator_loss_value_and_gradient(kind):
    fake = (3 * torch.randn(7, 3, dtype=F64)).requires_grad_(True)
    loss = gan_generator_loss(fake, kind)
    (grad,) = torch.autograd.grad(loss, fake)
    f = fake.detach()
    if kind == "non_saturating":
        expected = -_naive_log_sigmoid(f).mean()
        expected_grad = -(1.0 - torch.sigmoid(f)) / f.numel()  # d/df -log sigmoid(f) = -(1 - sigmoid(f))
    else:
        expected = -f.mean()
        expected_grad = torch.full_like(f, -1.0 / f.numel())
    _close(loss, expected)
    _close(grad, expected_grad)


@pytest.mark.parametrize("kind", ["non_saturating", "hinge"])
def test_discriminator_loss_value_and_gradient(kind):
    real = (3 * torch.randn(9, dtype=F64)).requires_grad_(True)
    fake = (3 * torch.randn(5, dtype=F64)).requires_grad_(True)
    loss = gan_discriminator_loss(real, fake, kind)
    g_real, g_fake = torch.autograd.grad(loss, (real, fake))
    r, f = real.detach(), fake.detach()
    if kind == "non_saturating":
        expected = -_naive_log_sigmoid(r).mean() - torch.log(1.0 - torch.sigmoid(f)).mean()
        exp_real = -(1.0 - torch.sigmoid(r)) / r.numel()
        exp_fake = torch.sigmoid(f) / f.numel()
    else:
        expected = torch.clamp(1.0 - r, min=0).mean() + torch.clamp(1.0 + f, min=0).mean()
        exp_real = -(r < 1).to(F64) / r.numel()
        exp_fake = (f > -1).to(F64) / f.numel()
    _close(loss, expected)
    _close(g_real, exp_real)
    _close(g_fake, exp_fake)


def test_non_saturating_losses_are_stable_for_large_logits():
    big = torch.tensor([-300.0, 300.0])
    assert gan_generator_loss(big).item() == pytest.approx(150.0)  # softplus(300) / 2; softplus(-300) ~ 0
    assert gan_discriminator_loss(big, big).item() == pytest.approx(300.0)


def test_unknown_gan_kind_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        gan_generator_loss(torch.zeros(2), "wasserstein")
    with pytest.raises(ValueError, match="kind"):
        gan_discriminator_loss(torch.zeros(2), torch.zeros(2), "lsgan")


# ---------------------------------------------------------------------------------------------- R1
def test_r1_penalty_closed_form_and_its_gradient():
    """D_b(x) = sum_i a_i x_bi^2: grad_x D_b = 2 a x_b, R1 = gamma/2 mean_b sum_i 4 a_i^2 x_bi^2;
    d R1 / d a_i = gamma/2 mean_b 8 a_i x_bi^2 (the penalty keeps its graph: it trains D)."""
    gamma = 0.37
    a = torch.randn(3, 4, dtype=F64, requires_grad=True)
    x = torch.randn(5, 3, 4, dtype=F64, requires_grad=True)
    logits = (a * x.square()).flatten(1).sum(1)
    pen = r1_penalty(logits, x, gamma)
    xd, ad = x.detach(), a.detach()
    _close(pen, gamma / 2 * (4 * ad**2 * xd**2).flatten(1).sum(1).mean())
    (grad_a,) = torch.autograd.grad(pen, a)
    _close(grad_a, gamma / 2 * (8 * ad * xd**2).mean(0))


def test_r1_penalty_needs_inputs_with_grad():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(x.sum(1), x)
