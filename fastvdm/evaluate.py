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
then the mean over clips (clips without missed pixels are left out of the masked means); and, pooled over all
clips, the distribution metrics of :mod:`fastvdm.metrics` on the hole pixels of the target frames:

- ``swd``         patch sliced Wasserstein distance (Laplacian pyramid, 3 levels, 7x7 patches, <= 64 per frame and
                  level, 128 projections, seed 0) between generated and real hole content (``swd_levels`` per level)
- ``hf_ratio``    high-frequency energy (finest Laplacian level) in the holes, generated / real
- ``temporal_mse`` mean squared difference between consecutive frames warped by the ground-truth geometry (depth,
                  poses), over the holes of the later frame (clips with ``depth`` only); ``temporal_mse_real`` is
                  the same for the real frames (the warp's own floor)
``sec_per_clip`` is
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


def _target_frames(x: Tensor, is_input: Tensor) -> Tensor:
    """(N, C, H, W): the non-input frames of a batch (B, C, T, H, W)."""
    return x.transpose(1, 2)[~is_input.bool()]


def _distribution(real: list, fake: list, holes: list, tc: tuple, tc_real: tuple) -> dict:
    from fastvdm.metrics import hf_energy_ratio, patch_swd

    r, f, m = torch.cat(real), torch.cat(fake), torch.cat(holes)
    swd = patch_swd(r, f, m)
    return {"swd": swd["swd"], "swd_levels": swd["swd_levels"], "hf_ratio": hf_energy_ratio(r, f, m),
            "temporal_mse": tc[0] / tc[1] if tc[1] > 0 else float("nan"),
            "temporal_mse_real": tc_real[0] / tc_real[1] if tc_real[1] > 0 else float("nan")}


def _temporal(pred: Tensor, batch: dict, b: int) -> tuple[float, float]:
    from fastvdm.metrics import temporal_error

    if "depth" not in batch:
        return 0.0, 0.0
    holes = 1 - batch["cond_mask"][b].transpose(0, 1).double()  # (T, 1, H, W)
    return temporal_error(pred[b].transpose(0, 1), batch["depth"][b], batch["c2w"][b], batch["intrinsics"][b], holes)


def evaluate(dataset, methods: dict[str, Callable[[dict], tuple[Tensor, int]]], clips: Optional[int] = None,
             batch_size: int = 8, progress: bool = False, distribution: bool = True) -> dict:
    """Run every method over the first ``clips`` items of ``dataset``; returns {method: mean scores}
    (with ``distribution``, also the pooled distribution metrics of the module docstring).

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
    fakes: dict[str, list] = {m: [] for m in methods}
    tcs = {m: [0.0, 0.0] for m in methods}
    reals, holes, tc_real = [], [], [0.0, 0.0]
    for start in tqdm(range(0, n, batch_size), desc="eval", disable=not progress):
        batch = torch.utils.data.default_collate([dataset[i] for i in range(start, min(start + batch_size, n))])
        if distribution:
            reals.append(_target_frames(batch["frames"], batch["is_input"]).double())
            holes.append(1 - _target_frames(batch["cond_mask"], batch["is_input"]).double())
            for b in range(batch["frames"].shape[0]):
                e, k = _temporal(batch["frames"], batch, b)
                tc_real[0] += e
                tc_real[1] += k
        for name, fn in methods.items():
            t0 = time.perf_counter()
            pred, k = fn(batch)
            secs[name] += time.perf_counter() - t0
            nfe[name] = k
            pred = _paste(pred.float().cpu().clamp(-1, 1), batch["frames"], batch["is_input"])
            for b in range(pred.shape[0]):
                per[name].append(clip_scores(pred[b], batch["frames"][b], batch["cond_mask"][b], batch["is_input"][b]))
                if distribution:
                    e, k = _temporal(pred, batch, b)
                    tcs[name][0] += e
                    tcs[name][1] += k
            if distribution:
                fakes[name].append(_target_frames(pred, batch["is_input"]).double())
    result = {}
    for name, rows in per.items():
        agg = {k: float(np.nanmean([r[k] for r in rows])) for k in ("psnr", "psnr_masked", "ssim", "ssim_masked",
                                                                      "hole_fraction")}
        agg.update(sec_per_clip=secs[name] / n, nfe_per_clip=nfe[name], clips=n)
        if distribution:
            agg.update(_distribution(reals, fakes[name], holes, tcs[name], tc_real))
        result[name] = agg
    return result


def harmonic_fill(cond_rgb: Tensor, cond_mask: Tensor, smooth_iters: int = 5) -> Tensor:
    """The render with its holes filled by the multigrid harmonic fill the tiny/base VideoUNet presets start from
    (:func:`fastvdm.diffusion.hole_fill.pull_push_fill`): the model's own classical prior, to show what the network adds."""
    from fastvdm.diffusion.hole_fill import pull_push_fill

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
    if all("swd" in r for r in result.values()):
        cols[4:4] = [("swd", "SWD(holes)", "{:.4f}"), ("hf_ratio", "HF ratio", "{:.3f}"),
                     ("temporal_mse", "TC MSE", "{:.5f}")]
    w = max(len(k) for k in result) + 2
    lines = ["method".ljust(w) + "".join(h.rjust(13) for _, h, _ in cols)]
    for name, r in result.items():
        lines.append(name.ljust(w) + "".join(f.format(r[k]).rjust(13) for k, _, f in cols))
    any_row = next(iter(result.values()))
    lines.append(f"({any_row['clips']} held-out clips; target frames only; holes = {100 * any_row['hole_fraction']:.1f}% "
                 "of target pixels)")
    if "temporal_mse_real" in any_row:
        lines.append(f"(SWD/HF ratio/TC MSE: hole pixels of the target frames; TC MSE of the real frames = "
                     f"{any_row['temporal_mse_real']:.5f}, the geometric warp's floor)")
    return "\n".join(lines)


__all__ = ["opencv_inpaint", "harmonic_fill", "clip_scores", "evaluate", "baseline_methods", "sampler_method", "format_table"]
