"""Denoisers: a network wrapped into the samplers' protocol ``denoiser(x_t, t, cond) -> v``.

A *network* is any module ``net(x, t, cond) -> out`` with x (B, 3, T, H, W) (e.g. :class:`fastvdm.models.VideoUNet`,
or a user's own). A *denoiser* turns it into a v-prediction model (v = alpha_t eps - sigma_t x0, see
:mod:`fastvdm.diffusion.schedule`), which is what the samplers, the trainers and the distillation call:

- :class:`VDenoiser`: the network predicts v itself (out = v).
- :class:`PosteriorDenoiser`: EDM-style preconditioning around the render prior g (the point-cloud render, its
  holes filled by :func:`fastvdm.diffusion.hole_fill.pull_push_fill`; the clean view at input frames). With a
  per-pixel prior x0 ~ N(g, s^2) (s = prior_std[0] where the render has a pixel, prior_std[1] in its holes):

      m(x_t)  = E[x0 | x_t] = g + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha g)     (the network's input, c_in)
      c_out   = sigma s / sqrt(alpha^2 s^2 + sigma^2)                                   (that posterior's std)
      x0      = m(x_t) + c_out net(m(x_t), t, cond),      v = (alpha x_t - x0) / sigma

  At net = 0 the denoiser is the Gaussian posterior mean at every noise level (= g at t = 999, where the
  network's input is g exactly and no noise leaks in), and the network's target has unit scale at every t.

Both expose ``encode`` (the network's encoder on the same input the network sees, for the discriminator),
``output_weight(t)`` (the per-sample weight of the v error that weighs the network's own output error alike at
every t: EDM's lambda = 1 / c_out^2, in v units) and ``config.to_dict()`` = the network's config plus a
``"denoiser"`` entry, which :func:`build_denoiser` reads back (checkpoints store that dict).

    net = VideoUNet(VideoUNetConfig.preset("tiny"))
    model = PosteriorDenoiser(net)                    # or wrap your own network the same way
    x0 = DDIMSampler(VSchedule(), 50)(model, cond, shape)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torch import Tensor

from fastvdm.diffusion.hole_fill import render_prior
from fastvdm.diffusion.sampling import Denoiser  # noqa: F401  (the protocol every wrapper follows)
from fastvdm.diffusion.schedule import VSchedule

LEGACY_FIELDS = ("posterior_skip", "render_skip", "fill_holes", "fill_smooth_iters", "prior_std")


class WrappedConfig:
    """The config of a denoiser: attribute reads go to the network's config (``model.config.channels`` works as
    for the bare network); ``to_dict()`` is the network's dict plus ``"denoiser": {"kind": ..., settings}``."""

    def __init__(self, net_config, denoiser: dict):
        self._net_config, self._denoiser = net_config, dict(denoiser)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._net_config, name)

    @property
    def denoiser(self) -> dict:
        return dict(self._denoiser)

    def to_dict(self) -> dict:
        base = self._net_config.to_dict() if hasattr(self._net_config, "to_dict") else {}
        return {**base, "denoiser": dict(self._denoiser)}

    def __eq__(self, other) -> bool:
        return isinstance(other, WrappedConfig) and self.to_dict() == other.to_dict()

    __hash__ = None


class _Wrapper(nn.Module):
    """Shared plumbing: ``self.net``, the schedule, encode/feature-channel pass-through."""

    kind = ""

    def __init__(self, net: nn.Module, schedule: VSchedule | None = None):
        super().__init__()
        self.net = net
        self.schedule = schedule or VSchedule()

    def settings(self) -> dict:
        return {}

    @property
    def config(self) -> WrappedConfig:
        return WrappedConfig(getattr(self.net, "config", None), {"kind": self.kind, **self.settings()})

    @property
    def feature_channels(self) -> int:
        return self.net.feature_channels

    @property
    def multiscale_channels(self) -> list[int]:
        return self.net.multiscale_channels

    def coefs(self, t, like: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t), each (B, 1, 1, 1, 1) in ``like``'s dtype and device."""
        t = torch.as_tensor(t, device=like.device)
        t = t.expand(like.shape[0]) if t.dim() == 0 else t
        return self.schedule._coefs(t, like)

    def network_input(self, x_t: Tensor, t: Tensor, cond: dict) -> Tensor:
        return x_t

    def encode(self, x_t: Tensor, t: Tensor, cond: dict, multiscale: bool = False):
        """The network's ``encode`` on what the network sees (see the class)."""
        return self.net.encode(self.network_input(x_t, t, cond), t, cond, multiscale=multiscale)

    def output_weight(self, t: Tensor) -> Tensor:
        """(B,) float32: weight of the squared v error that equals the squared network-output error."""
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float32).reshape(-1))

    loss_weight = output_weight  # the name the session-2 trainer used

    def save_pretrained(self, folder: str, overwrite: bool = False, **extra) -> str:
        """The network's pretrained folder (:mod:`fastvdm.models.pretrained`) with this wrapper in its config."""
        return save_denoiser(self, folder, overwrite, **extra)

    @classmethod
    def from_pretrained(cls, folder: str, device=None, dtype=None):
        model, config = load_denoiser(folder, device, dtype)
        if not isinstance(model, cls):
            raise ValueError(f"{folder} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


class VDenoiser(_Wrapper):
    """The network is the v-prediction itself: ``v = net(x_t, t, cond)``."""

    kind = "v"

    def forward(self, x_t: Tensor, t: Tensor, cond: dict) -> Tensor:
        return self.net(x_t, t, cond)


class PosteriorDenoiser(_Wrapper):
    """EDM-style posterior preconditioning around the hole-filled render (formulas in the module docstring).

    prior_std: (s where the render has a pixel or at input frames, s in the render's holes); fill_holes: fill
    the render's holes (else they are 0); fill_smooth_iters: Jacobi sweeps per pyramid level of the fill
    (0 = plain pull-push; 5 = multigrid harmonic fill, the tiny teacher's setting).
    """

    kind = "posterior"

    def __init__(self, net: nn.Module, prior_std: tuple = (0.1, 0.2), fill_holes: bool = True,
                 fill_smooth_iters: int = 5, schedule: VSchedule | None = None):
        super().__init__(net, schedule)
        self.prior_std = tuple(float(v) for v in prior_std)
        if len(self.prior_std) != 2 or min(self.prior_std) <= 0:
            raise ValueError(f"prior_std must be two positive numbers (rendered, holes), got {prior_std}")
        self.fill_holes, self.fill_smooth_iters = bool(fill_holes), int(fill_smooth_iters)

    def settings(self) -> dict:
        return {"prior_std": list(self.prior_std), "fill_holes": self.fill_holes,
                "fill_smooth_iters": self.fill_smooth_iters}

    def prior(self, t: Tensor, cond: dict, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(alpha, sigma, g, s^2), each broadcastable to (B, 3, T, H, W)."""
        alpha, sigma = self.coefs(t, like)
        g, mask, flag = render_prior(cond, like, self.fill_holes, self.fill_smooth_iters)
        s_vis, s_hole = self.prior_std
        s2 = (s_hole + (s_vis - s_hole) * torch.where(flag, torch.ones_like(mask), mask)) ** 2
        return alpha, sigma, g, s2

    @staticmethod
    def posterior_mean(prior: tuple, x_t: Tensor) -> Tensor:
        """E[x0 | x_t] under x0 ~ N(g, s^2): g + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha g)."""
        alpha, sigma, g, s2 = prior
        return g + alpha * s2 / (alpha ** 2 * s2 + sigma ** 2) * (x_t.to(g.dtype) - alpha * g)

    def network_input(self, x_t: Tensor, t: Tensor, cond: dict) -> Tensor:
        return self.posterior_mean(self.prior(t, cond, x_t), x_t).to(x_t.dtype)

    def forward(self, x_t: Tensor, t: Tensor, cond: dict) -> Tensor:
        prior = self.prior(t, cond, x_t)
        x_in = self.posterior_mean(prior, x_t).to(x_t.dtype)
        out = self.net(x_in, t, cond)
        alpha, sigma, _, s2 = prior
        x0 = x_in.to(out.dtype) + sigma * (s2 / (alpha ** 2 * s2 + sigma ** 2)).sqrt() * out
        return (alpha * x_t.to(out.dtype) - x0) / sigma

    def output_weight(self, t: Tensor) -> Tensor:
        """1 / (c_out / sigma)^2 = (alpha^2 s^2 + sigma^2) / s^2 with s the hole prior std: from 1 at t = 0 to
        1 / s^2 at t = 999 (the v error is c_out / sigma times the network's output error in the holes)."""
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        s2 = self.prior_std[1] ** 2
        return (alpha ** 2 * s2 + sigma ** 2) / s2

    loss_weight = output_weight


DENOISERS = {"v": VDenoiser, "posterior": PosteriorDenoiser}


def wrap(net: nn.Module, denoiser: dict | None = None) -> nn.Module:
    """Wrap ``net`` as described by ``denoiser`` = {"kind": "v" | "posterior", settings...} (None: "v")."""
    d = dict(denoiser or {"kind": "v"})
    kind = d.pop("kind", "v")
    if kind not in DENOISERS:
        raise ValueError(f"unknown denoiser kind {kind!r}; choose one of {sorted(DENOISERS)}")
    return DENOISERS[kind](net, **d)


def split_config(config: dict) -> tuple[dict, dict]:
    """(network config, denoiser dict) of a stored model config. Reads the ``"denoiser"`` entry, and the
    session-1/2 VideoUNetConfig fields (posterior_skip, fill_holes, fill_smooth_iters, prior_std: the shipped
    models' format) as a posterior denoiser; render_skip (an early experiment) is no longer supported."""
    cfg = dict(config)
    legacy = {k: cfg.pop(k) for k in LEGACY_FIELDS if k in cfg}
    if "denoiser" in cfg:
        return cfg, dict(cfg.pop("denoiser"))
    if legacy.get("render_skip"):
        raise ValueError("model config uses render_skip, which is no longer supported (use a posterior denoiser)")
    if legacy.get("posterior_skip"):
        return cfg, {"kind": "posterior", "prior_std": list(legacy.get("prior_std", (0.1, 0.2))),
                     "fill_holes": bool(legacy.get("fill_holes", False)),
                     "fill_smooth_iters": int(legacy.get("fill_smooth_iters", 0))}
    return cfg, {"kind": "v"}


def build_denoiser(config: dict, network: Callable[[dict], nn.Module] | None = None) -> nn.Module:
    """The denoiser a stored config describes: ``network(net_config)`` (default: a VideoUNet) wrapped by
    :func:`wrap`. The state-dict keys of the result are the network's prefixed with ``net.``."""
    net_cfg, den = split_config(config)
    if network is None:
        from fastvdm.models import VideoUNet, VideoUNetConfig

        network = lambda c: VideoUNet(VideoUNetConfig.from_dict(c))  # noqa: E731
    return wrap(network(net_cfg), den)


def preset_denoiser(name: str, denoiser: str = "posterior") -> nn.Module:
    """A fresh VideoUNet preset (``tiny``/``base``) wrapped by the ``denoiser`` kind with its default settings."""
    from fastvdm.models import VideoUNet, VideoUNetConfig

    return wrap(VideoUNet(VideoUNetConfig.preset(name)), {"kind": denoiser})


def save_denoiser(model: nn.Module, folder: str, overwrite: bool = False, **extra) -> str:
    """A pretrained folder of ``model``: a denoiser wrapper's network plus a ``"denoiser"`` entry (kind and
    settings) in its config, or a bare network as it is (:func:`fastvdm.models.pretrained.save_network`)."""
    from fastvdm.models.pretrained import save_network

    model = getattr(model, "_orig_mod", model)
    if isinstance(model, _Wrapper):
        extra = {**extra, "denoiser": split_config(model.config.to_dict())[1]}
        model = model.net
    return save_network(model, folder, overwrite, **extra)


def load_denoiser(folder: str, device=None, dtype=None) -> tuple:
    """(denoiser in eval mode, config dict) of a pretrained folder: the network wrapped by the config's
    ``"denoiser"`` entry, by the session-2 preconditioning fields of its model_config (the shipped v1 models: a
    PosteriorDenoiser), or else as a plain :class:`VDenoiser`."""
    from fastvdm.models.pretrained import load_network

    net, config = load_network(folder, device, dtype, split=split_config)
    denoiser = config.get("denoiser") or split_config(config["model_config"])[1]
    return wrap(net, denoiser).to(device=device or "cpu", dtype=dtype).eval(), config


def adapt_state_dict(model: nn.Module, sd: dict) -> dict:
    """Checkpoints of a bare network (the session-1/2 format) loaded into a denoiser: prefix the keys ``net.``."""
    if isinstance(model, _Wrapper) and sd and not any(k.startswith("net.") for k in sd):
        return {"net." + k: v for k, v in sd.items()}
    return sd


__all__ = ["Denoiser", "VDenoiser", "PosteriorDenoiser", "WrappedConfig", "wrap", "build_denoiser",
           "split_config", "preset_denoiser", "adapt_state_dict", "save_denoiser", "load_denoiser", "DENOISERS"]
