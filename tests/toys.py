"""Low-dimensional toys on which the distillation stages are tested and tuned (no U-Net, seconds on a CPU).

- 1-D Gaussian: data N(mu, s^2) per element; :class:`GaussianV` is the exact v-prediction of a Gaussian
  (closed-form posterior mean), :class:`AffineV` a one-step affine generator x0 = m + c x_T written as a
  v-model at t = 999, and :class:`GaussianLogRatio` the optimal discriminator between two Gaussians.
- 2-D mixture of 8 Gaussians on a circle (:func:`ring_of_gaussians`), a small MLP v-model with an
  ``encode`` (:class:`ToyMLP`), and the sliced Wasserstein distance (:func:`sliced_wasserstein`).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor, nn


def _per_sample(c: Tensor, x: Tensor) -> Tensor:
    return c.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


class GaussianV(nn.Module):
    """Exact v-prediction for data x0 ~ N(mean, std^2) iid per element; x_t, v (B, ...).

    E[x0 | x_t] = mean + alpha std^2 / (alpha^2 std^2 + sigma^2) (x_t - alpha mean); v = (alpha x_t - x0) / sigma.
    ``mean`` and ``log_std`` are parameters (trainable for a fake-score model, frozen for a teacher).
    """

    def __init__(self, schedule, mean: float, std: float):
        super().__init__()
        self.schedule = schedule
        self.mean = nn.Parameter(torch.tensor(float(mean)))
        self.log_std = nn.Parameter(torch.tensor(math.log(std)))

    def forward(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        a = _per_sample(self.schedule.alpha(t), x_t)
        s = _per_sample(self.schedule.sigma(t), x_t)
        var = (2 * self.log_std).exp()
        x0 = self.mean + a * var / (a * a * var + s * s) * (x_t - a * self.mean)
        return (a * x_t - x0) / s


class AffineV(nn.Module):
    """The affine generator x0 = m + c x_t as a v-model (exact at t = 999 where x_t is pure noise)."""

    def __init__(self, schedule, m: float, c: float):
        super().__init__()
        self.schedule = schedule
        self.m = nn.Parameter(torch.tensor(float(m)))
        self.c = nn.Parameter(torch.tensor(float(c)))

    def forward(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        a = _per_sample(self.schedule.alpha(t), x_t)
        s = _per_sample(self.schedule.sigma(t), x_t)
        return (a * x_t - (self.m + self.c * x_t)) / s


class GaussianLogRatio(nn.Module):
    """Optimal discriminator logit log p_real,t(x_t) - log p_fake,t(x_t), summed over a sample's elements.

    p_real = N(mean, std^2) per element; p_fake = the current distribution of an :class:`AffineV` generator
    (N(m, c^2)); both pushed through x_t = alpha x0 + sigma noise. Returns (B,). No trainable parameters.
    """

    def __init__(self, schedule, mean: float, std: float, generator: AffineV):
        super().__init__()
        self.schedule, self.mean, self.std = schedule, float(mean), float(std)
        self.gen = [generator]  # not a submodule: its parameters are not the discriminator's

    def forward(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        a = _per_sample(self.schedule.alpha(t), x_t)
        s = _per_sample(self.schedule.sigma(t), x_t)
        g = self.gen[0]

        def logpdf(m, sd):
            var = a * a * sd * sd + s * s
            return -0.5 * ((x_t - a * m) ** 2 / var + var.log())

        return (logpdf(self.mean, self.std) - logpdf(g.m.detach(), g.c.detach().abs())).flatten(1).sum(1)


def ring_of_gaussians(n: int, modes: int = 8, radius: float = 2.0, std: float = 0.05,
                      generator: Optional[torch.Generator] = None) -> Tensor:
    """(n, 2) samples of a mixture of ``modes`` equal-weight isotropic Gaussians on a circle."""
    k = torch.randint(modes, (n,), generator=generator)
    angle = 2 * math.pi * k.float() / modes
    centres = radius * torch.stack([angle.cos(), angle.sin()], 1)
    return centres + std * torch.randn(n, 2, generator=generator)


class ToyMLP(nn.Module):
    """A small MLP v-model for 2-D points: x_t (B, 2), t (B,) in [0, 999] -> v (B, 2).

    ``encode(x_t, t, cond)`` returns the last hidden features (B, hidden) (the "encoder" a discriminator
    reuses); ``forward`` applies the output layer to them.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, t_features: int = 16):
        super().__init__()
        self.t_features = t_features
        layers, width = [], dim + 2 * t_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, dim)

    def time_features(self, t: Tensor) -> Tensor:
        freqs = torch.exp(torch.linspace(0, math.log(1000.0), self.t_features, device=t.device))
        arg = (t.float()[:, None] / 1000.0) * freqs[None] * math.pi
        return torch.cat([arg.sin(), arg.cos()], 1)

    def encode(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return self.body(torch.cat([x_t, self.time_features(t).to(x_t.dtype)], 1))

    def forward(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return self.out(self.encode(x_t, t, cond))


def sliced_wasserstein(a: Tensor, b: Tensor, projections: int = 256, generator: Optional[torch.Generator] = None) -> float:
    """Sliced 2-Wasserstein distance between point sets a (N, d) and b (N, d) of equal size.

    sqrt(mean over random unit directions u of W2^2(u.a, u.b)), each 1-D W2 from sorted projections.
    """
    if a.shape != b.shape:
        raise ValueError(f"point sets must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    u = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    pa, _ = (a.double() @ u).sort(0)
    pb, _ = (b.double() @ u).sort(0)
    return float((pa - pb).square().mean().sqrt())


def ring_reference(n: int, modes: int = 8, radius: float = 2.0, std: float = 0.05, seed: int = 1) -> Tensor:
    """(n, 2) reference samples of the ring with exactly equal mode counts (no multinomial noise in the metric)."""
    k = torch.arange(n) % modes
    angle = 2 * math.pi * k.float() / modes
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return radius * torch.stack([angle.cos(), angle.sin()], 1) + std * noise


def train_ring_teacher(schedule, steps: int, batch: int = 256, lr: float = 2e-3, seed: int = 0) -> ToyMLP:
    """A :class:`ToyMLP` v-prediction teacher trained on :func:`ring_of_gaussians` (t uniform on 0..999)."""
    from fastvdm.ops import denoising_loss

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ToyMLP()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        x0 = ring_of_gaussians(batch, generator=g)
        t = torch.randint(0, schedule.num_steps, (batch,), generator=g).float()
        noise = torch.randn(x0.shape, generator=g)
        pred = model(schedule.add_noise(x0, noise, t), t, None)
        loss = denoising_loss(pred, x0, noise, schedule.alpha(t), schedule.sigma(t), target="v")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def ring_swd(sample, n: int = 4000, seed: int = 2) -> float:
    """Sliced Wasserstein distance of ``sample(shape, generator) -> (n, 2)`` points to :func:`ring_reference`."""
    x = sample((n, 2), torch.Generator().manual_seed(seed))
    return sliced_wasserstein(x, ring_reference(n), generator=torch.Generator().manual_seed(3))
