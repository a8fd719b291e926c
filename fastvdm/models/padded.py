"""Run a video network at any H x W: pad to the multiple its down-sampling needs, crop the output back.

``PaddedNetwork(model, multiple)`` is a drop-in ``model(x_t, t, cond) -> v`` for the samplers (it wraps the
network call and leaves the network untouched). Padding goes to the bottom and right edges, so pixel (i, j) keeps
its place and no crop offset is needed: the padded condition is a hole (render and mask 0, at input frames too),
the noisy sample, the clean input frames and the Plücker maps are continued by edge replication (the noise keeps
its statistics in the reflected case; replicated rays are simply the border rays). The output is cropped to
the input's H x W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ZERO_PAD = ("cond_rgb", "cond_mask")


def required_multiple(model: nn.Module) -> int:
    """2^(levels - 1) for a VideoUNet (its H and W must be multiples of it); 1 for other callables."""
    cfg = getattr(model, "config", None)
    return 2 ** (len(cfg.channels) - 1) if cfg is not None and hasattr(cfg, "channels") else 1


def padded_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    """The smallest (H', W') >= (h, w) that are multiples of ``multiple``."""
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


def _pad(x: Tensor, ph: int, pw: int, zero: bool, mode: str) -> Tensor:
    if ph == 0 and pw == 0:
        return x
    if zero:
        return F.pad(x, (0, pw, 0, ph))
    lead = x.shape[:-2]
    y = x.reshape(-1, *x.shape[-3:]) if x.dim() >= 4 else x[None]
    if mode == "reflect" and (ph >= x.shape[-2] or pw >= x.shape[-1]):
        mode = "replicate"
    y = F.pad(y, (0, pw, 0, ph), mode=mode)
    return y.reshape(*lead, y.shape[-2], y.shape[-1])


class PaddedNetwork(nn.Module):
    """``model`` evaluated on inputs padded to multiples of ``multiple`` (default: what the model needs).

    x_t: (B, C, T, H, W) with any H, W; cond: the model's condition dict with (B, C, T, H, W) maps. Returns
    the model's (B, C', T, H, W) output for the top-left H x W of the padded frame.
    """

    def __init__(self, model: nn.Module, multiple: int | None = None):
        super().__init__()
        self.model = model
        self.multiple = required_multiple(model) if multiple is None else int(multiple)
        if self.multiple < 1:
            raise ValueError(f"PaddedNetwork: multiple must be >= 1, got {self.multiple}")

    @property
    def config(self):
        return self.model.config

    def forward(self, x_t: Tensor, t: Tensor, cond: dict) -> Tensor:
        h, w = x_t.shape[-2:]
        hp, wp = padded_size(h, w, self.multiple)
        ph, pw = hp - h, wp - w
        if ph == 0 and pw == 0:
            return self.model(x_t, t, cond)
        pc = {}
        for k, v in cond.items():
            if torch.is_tensor(v) and v.dim() == 5 and v.shape[-2:] == (h, w):
                pc[k] = _pad(v, ph, pw, k in _ZERO_PAD, "replicate")
            else:
                pc[k] = v
        out = self.model(_pad(x_t, ph, pw, False, "reflect"), t, pc)
        return out[..., :h, :w]
