"""Evaluation on the held-out split: a model's samples against two classical baselines.

Methods: ``render`` (the raw point-cloud render: holes stay 0, mid-grey), ``opencv`` (the render with its holes
filled by OpenCV's Telea inpainting, per frame, radius 3), ``harmonic_fill`` (the multigrid harmonic fill that the
VideoUNet presets take as their starting point, so the table shows what the network adds to it) and any sampler
of a model. Every method gets the
clean input views at the input frames, and only the other (target) frames are scored, so the numbers measure
novel views. Per clip, over its target frames (images in [-1, 1], data range 2):

- ``psnr``        over all pixels (pooled MSE of the clip's target frames)
- ``psnr_masked`` over the pixels the render missed (cond_mask = 0) (pooled MSE over those pixels)
- ``ssim``        mean over frames of SSIM (metrics.ssim: Gaussian window, 5-pixel border excluded)
- ``ssim_masked`` mean of the SSIM map over the missed pixels
then the mean over clips (clips without missed pixels are left out of the masked means). ``sec_per_clip`` is
the wall time of the method divided by the clips; ``nfe_per_clip`` the network evaluations a clip needs (a
batched evaluation counts once per clip).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from fastvdm.metrics import psnr, ssim, ssim_map

DATA_RANGE = 2.0  # [-1, 1]


def opencv_inpaint(cond_rgb: Tensor, cond_mask: Tensor, radius: float = 3.0) -> Tensor:
    """Fill the holes of renders with cv2.inpaint (Telea). cond_rgb (B, 3, T, H, W) in [-1, 1], cond_mask
    (B, 1, T, H, W) in {0, 1} (1 = rendered). Returns (B, 3, T, H, W) float32 in [-1, 1] (8-bit quantized, as
    OpenCV works in uint8). A frame with no rendered pixel stays 0."""
    import cv2

    out = cond_rgb.detach().float().cpu().clone()
    B, _, T = cond_rgb.shape[:3]
    for b in range(B):
        for t in range(T):
            valid = cond_mask[b, 0, t].cpu() > 0.5
            if bool(valid.all()) or not bool(valid.any()):
                continue
            img = ((cond_rgb[b, :, t].cpu().float().permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255)
            img = np.ascontiguousarray(img.to(torch.uint8).numpy())
            holes = np.ascontiguousarray((~valid).to(torch.uint8).numpy() * 255)
            filled = cv2.inpaint(img, holes, radius, cv2.INPAINT_TELEA)
            out[b, :, t] = torch.from_numpy(filled).float().permute(2, 0, 1) / 127.5 - 1.0
    return out


def clip_scores(pred: Tensor, target: Tensor, cond_mask: Tensor, is_input: Tensor) -> dict:
    """Scores of one clip: pred, target (3, T, H, W) in [-1, 1], cond_mask (1, T, H, W), is_input (T,)."""
    sel = ~is_input.bool()
    if not bool(sel.any()):
        raise ValueError("clip has no target frame (every frame is an input view)")
    p, g = pred[:, sel].transpose(0, 1).double(), target[:, sel].transpose(0, 1).double()  # (T', 3, H, W)
    holes = (1 - cond_mask[:, sel].transpose(0, 1).double()).expand_as(p)
    err = (p - g) ** 2
    out = {"psnr": 10 * math.log10(DATA_RANGE ** 2 / max(err.mean().item(), 1e-20)),
           "ssim": ssim(p, g, data_range=DATA_RANGE).mean().item(), "psnr_masked": float("nan"),
           "ssim_masked": float("nan"), "hole_fraction": holes.mean().item()}
    if holes.sum() > 0:
        mse = (err * holes).sum().item() / holes.sum().item()
        out["psnr_masked"] = 10 * math.log10(DATA_RANGE ** 2 / max(mse, 1e-20))
        out["ssim_masked"] = ((ssim_map(p, g, data_range=DATA_RANGE) * holes).sum() / holes.sum()).item()
    return out


def _paste(pred: Tensor, frames: Tensor, is_input: Tensor) -> Tensor:
    return torch.where(is_input.bool()[:, None, :, None, None], frames, pred)


def evaluate(dataset, methods: dict[str, Callable[[dict], tuple[Tensor, int]]], clips: Optional[int] = None,
             batch_size: int = 8, progress: bool = False) -> dict:
    """Run every method over the first ``clips`` items of ``dataset``; returns {method: mean scores}.

    methods: name -> fn(batch) -> (pred (B, 3, T, H, W) in [-1, 1], network evaluations per clip), where batch
    is a collated dataset batch. Input frames are pasted into every prediction before scoring.
    """
    from tqdm import tqdm

    n = len(dataset) if clips is None else min(int(clips), len(dataset))
    if n < 1:
        raise ValueError("evaluate: no clips")
    per: dict[str, list] = {m: [] for m in methods}
    secs = {m: 0.0 for m in methods}
    nfe = {m: 0 for m in methods}
    for start in tqdm(range(0, n, batch_size), desc="eval", disable=not progress):
        batch = torch.utils.data.default_collate([dataset[i] for i in range(start, min(start + batch_size, n))])
        for name, fn in methods.items():
            t0 = time.perf_counter()
            pred, k = fn(batch)
            secs[name] += time.perf_counter() - t0
            nfe[name] = k
            pred = _paste(pred.float().cpu().clamp(-1, 1), batch["frames"], batch["is_input"])
            for b in range(pred.shape[0]):
                per[name].append(clip_scores(pred[b], batch["frames"][b], batch["cond_mask"][b], batch["is_input"][b]))
    result = {}
    for name, rows in per.items():
        agg = {k: float(np.nanmean([r[k] for r in rows])) for k in ("psnr", "psnr_masked", "ssim", "ssim_masked",
                                                                      "hole_fraction")}
        agg.update(sec_per_clip=secs[name] / n, nfe_per_clip=nfe[name], clips=n)
        result[name] = agg
    return result


def harmonic_fill(cond_rgb: Tensor, cond_mask: Tensor, smooth_iters: int = 5) -> Tensor:
    """The render with its holes filled by the multigrid harmonic fill the tiny/base VideoUNet presets start from
    (:func:`fastvdm.models.unet.pull_push_fill`): the model's own classical prior, to show what the network adds."""
    from fastvdm.models.unet import pull_push_fill

    mask = cond_mask.float()
    return pull_push_fill(cond_rgb.float() * mask, mask, smooth_iters)


def baseline_methods(radius: float = 3.0) -> dict:
    """The classical baselines: the raw render, its OpenCV (Telea) inpainting, and its harmonic fill."""
    return {"render": lambda b: (b["cond_rgb"], 0),
            "opencv_telea": lambda b: (opencv_inpaint(b["cond_rgb"], b["cond_mask"], radius), 0),
            "harmonic_fill": lambda b: (harmonic_fill(b["cond_rgb"], b["cond_mask"]), 0)}


def sampler_method(model, sampler, seed: int = 0, num_steps: Optional[int] = None, device="cpu") -> Callable:
    """A method that samples ``model`` with ``sampler`` (a :class:`fastvdm.diffusion.DDIMSampler` /
    :class:`~fastvdm.diffusion.FewStepSampler`), one generator per batch seeded by (seed, batch's first scene
    seed), so results do not depend on what else is evaluated; the network evaluations are counted by
    :func:`fastvdm.diffusion.count_nfe` (per clip: a batch is one evaluation per clip)."""
    from fastvdm.diffusion import count_nfe
    from fastvdm.models import make_cond

    def fn(batch):
        x0, cond = make_cond(batch, device)
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(batch["scene_seed"][0]))
        net = count_nfe(model)
        with torch.no_grad():
            out = sampler(net, cond, tuple(x0.shape), generator=g, num_steps=num_steps)
        return out, net.calls

    return fn


def format_table(result: dict) -> str:
    """The result as an aligned text table (one row per method)."""
    cols = [("psnr", "PSNR", "{:.2f}"), ("psnr_masked", "PSNR(holes)", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"),
            ("ssim_masked", "SSIM(holes)", "{:.4f}"), ("sec_per_clip", "s/clip", "{:.3f}"),
            ("nfe_per_clip", "NFE/clip", "{}")]
    w = max(len(k) for k in result) + 2
    lines = ["method".ljust(w) + "".join(h.rjust(13) for _, h, _ in cols)]
    for name, r in result.items():
        lines.append(name.ljust(w) + "".join(f.format(r[k]).rjust(13) for k, _, f in cols))
    any_row = next(iter(result.values()))
    lines.append(f"({any_row['clips']} held-out clips; target frames only; holes = {100 * any_row['hole_fraction']:.1f}% "
                 "of target pixels)")
    return "\n".join(lines)


__all__ = ["opencv_inpaint", "harmonic_fill", "clip_scores", "evaluate", "baseline_methods", "sampler_method", "format_table"]
