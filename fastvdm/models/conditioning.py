"""The model's condition dict: built from a ClipDataset batch, and its "null" version for classifier-free guidance.

cond keys (see :class:`fastvdm.models.VideoUNet`): "cond_rgb" (B, 3, T, H, W), "cond_mask" (B, 1, T, H, W),
"plucker" (B, 6, T, H, W), "is_input" (B, T) bool, "input_frames" (B, 3, T, H, W).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

COND_KEYS = ("cond_rgb", "cond_mask", "plucker", "is_input", "input_frames")


def make_cond(batch: dict, device=None, dtype: torch.dtype = torch.float32) -> tuple[Tensor, dict]:
    """(x0, cond) from a collated ClipDataset batch (dict of (B, C, T, H, W) tensors and "is_input" (B, T)).

    x0 = batch["frames"] (the target video, [-1, 1]); cond["input_frames"] = the same frames (the model reads
    them only at input frames, so frames without ground truth, as in ``clip_from_views``, are never used).
    """
    missing = {"frames", "cond_rgb", "cond_mask", "plucker", "is_input"} - set(batch)
    if missing:
        raise ValueError(f"batch is missing {sorted(missing)}")
    x0 = batch["frames"].to(device=device, dtype=dtype)
    cond = {
        "cond_rgb": batch["cond_rgb"].to(device=device, dtype=dtype),
        "cond_mask": batch["cond_mask"].to(device=device, dtype=dtype),
        "plucker": batch["plucker"].to(device=device, dtype=dtype),
        "is_input": batch["is_input"].to(device=device).bool(),
        "input_frames": x0,
    }
    return x0, cond


def drop_condition(cond: dict, drop: Optional[Tensor] = None) -> dict:
    """The condition with the renders, masks and clean input views removed where ``drop`` (B,) is True (all if None).

    Dropped samples see a zero render, a zero mask and no input frames; the Plücker maps (the cameras) are kept,
    so guidance amplifies what the renders and input views add. Used for condition dropout in training and for
    the unconditional branch of classifier-free guidance.
    """
    B = cond["is_input"].shape[0]
    if drop is None:
        drop = torch.ones(B, dtype=torch.bool, device=cond["is_input"].device)
    drop = drop.to(cond["is_input"].device).bool()
    out = dict(cond)
    for key in ("cond_rgb", "cond_mask"):
        m = drop.reshape((B,) + (1,) * (cond[key].dim() - 1))
        out[key] = torch.where(m, torch.zeros_like(cond[key]), cond[key])
    out["is_input"] = cond["is_input"] & ~drop[:, None]
    return out
