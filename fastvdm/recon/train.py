"""Fit a ``VoxelGrid`` to posed images (optionally with depth and per-pixel masks) on the CPU.

Loss per iteration on a random batch of rays drawn from all training pixels:

    mean_rays(|rgb - target|^2)                                  photometric, every supervised pixel
  + depth_weight * mean_depth_rays(|z - z_target| / z_target)    relative z-depth error, pixels with depth
  + tv_density * TV(raw density) + tv_color * TV(raw colour)     smoothness (grid.total_variation)

Adam on the raw grid, learning rate decaying exponentially from ``lr`` to ``lr * lr_final``. The box is the
bounding box of the depth maps' points and the camera centres, padded by ``pad`` of its size on each side;
with ``init_from_depth`` the grid starts from those points (``VoxelGrid.init_from_points``): a depth map
is an input here, the same way an SfM point cloud initializes 3D Gaussian splatting.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from fastvdm.data.cameras import Camera
from fastvdm.data.warp import unproject
from fastvdm.recon.grid import VoxelGrid, camera_ray_bundle


@dataclass
class TrainView:
    """One training image. rgb: (3, H, W) in [0, 1]; depth: (H, W) z-depth in metres, 0 = unknown, or None;
    mask: (H, W) bool/float, pixels to supervise (None: all); source: a label ("input", "generated", ...)."""

    camera: Camera
    rgb: torch.Tensor
    depth: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    source: str = "input"


@dataclass
class ReconConfig:
    """Trainer settings (defaults: 64x64 scenes in well under a minute of one CPU core)."""

    max_res: int = 48  # grid points along the box's longest side
    iters: int = 200
    batch_rays: int = 2048
    lr: float = 0.1
    lr_final: float = 0.1  # final learning rate, relative to lr
    depth_weight: float = 0.1
    tv_density: float = 1e-4
    tv_color: float = 1e-3
    pad: float = 0.05
    init_from_depth: bool = True
    seed: int = 0
    threads: int = 1  # torch intra-op threads during the fit (restored afterwards)
    log_every: int = 100

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    grid: VoxelGrid
    seconds: float  # wall time
    log: list = field(default_factory=list)  # (iteration, loss, photometric mse) every log_every iterations
    box: tuple = ()  # (lo, hi) of the grid, metres
    cpu_seconds: float = 0.0  # CPU time of this process during the fit (less sensitive to machine load)


def scene_box(views: Sequence[TrainView], pad: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding box (lo, hi) of the depth points of ``views`` and all camera centres, padded by ``pad`` of
    its extent on each side. Without any depth: the camera centres padded by 2 m (a guess; pass a box)."""
    centres = torch.stack([v.camera.center.float() for v in views])
    pts = [centres]
    with_depth = [v for v in views if v.depth is not None and bool((v.depth > 0).any())]
    for v in with_depth:
        p, _ = unproject(v.rgb[None], v.depth[None], [v.camera])
        pts.append(p)
    p = torch.cat(pts)
    lo, hi = p.min(0).values, p.max(0).values
    if not with_depth:
        return lo - 2.0, hi + 2.0
    ext = (hi - lo).clamp(min=1e-3)
    return lo - pad * ext, hi + pad * ext


def _gather_rays(views: Sequence[TrainView]) -> dict:
    rays = camera_ray_bundle([v.camera for v in views])
    rgb = torch.cat([v.rgb.float().permute(1, 2, 0).reshape(-1, 3) for v in views])
    depth = torch.cat([(v.depth.float() if v.depth is not None else torch.zeros(v.rgb.shape[1:])).reshape(-1)
                       for v in views])
    mask = torch.cat([(v.mask.float() if v.mask is not None else torch.ones(v.rgb.shape[1:])).reshape(-1) > 0.5
                      for v in views])
    keep = mask.nonzero(as_tuple=True)[0]
    return {"origins": rays["origins"][keep], "dirs": rays["dirs"][keep], "zscale": rays["zscale"][keep],
            "rgb": rgb[keep], "depth": depth[keep]}


def fit(views: Sequence[TrainView], cfg: ReconConfig | None = None, box=None, progress: bool = False) -> FitResult:
    """Reconstruct a VoxelGrid from ``views`` (see the module docstring). ``box``: optional (lo, hi)."""
    from tqdm import tqdm

    cfg = cfg or ReconConfig()
    if not views:
        raise ValueError("fit: no training views")
    n_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        lo, hi = scene_box(views, cfg.pad) if box is None else (torch.as_tensor(box[0]), torch.as_tensor(box[1]))
        grid = VoxelGrid.for_box(lo, hi, cfg.max_res)
        if cfg.init_from_depth:
            dv = [v for v in views if v.depth is not None]
            if dv:
                p, c = unproject(torch.stack([v.rgb for v in dv]).float(), torch.stack([v.depth for v in dv]).float(),
                                 [v.camera for v in dv])
                grid.init_from_points(p, c)
        rays = _gather_rays(views)
        n = rays["rgb"].shape[0]
        if n == 0:
            raise ValueError("fit: the masks leave no pixel to supervise")
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.Adam(grid.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        gamma = cfg.lr_final ** (1.0 / max(1, cfg.iters))
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
        log = []
        for it in tqdm(range(cfg.iters), desc="recon", disable=not progress, unit="it"):
            idx = torch.randint(n, (min(cfg.batch_rays, n),), generator=gen)
            out = grid.render(rays["origins"][idx], rays["dirs"][idx], rays["zscale"][idx])
            mse = ((out["rgb"] - rays["rgb"][idx]) ** 2).mean()
            loss = mse
            zt = rays["depth"][idx]
            has = zt > 0
            if cfg.depth_weight > 0 and bool(has.any()):
                loss = loss + cfg.depth_weight * ((out["depth"][has] - zt[has]).abs() / zt[has]).mean()
            if cfg.tv_density > 0 or cfg.tv_color > 0:
                tv_d, tv_c = grid.total_variation()
                loss = loss + cfg.tv_density * tv_d + cfg.tv_color * tv_c
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if (it + 1) % cfg.log_every == 0 or it == cfg.iters - 1:
                log.append((it + 1, float(loss.detach()), float(mse.detach())))
    finally:
        torch.set_num_threads(n_threads)
    return FitResult(grid, time.perf_counter() - t0, log, (lo.tolist(), hi.tolist()), time.process_time() - c0)


def evaluate(grid: VoxelGrid, cameras: Sequence[Camera], targets: torch.Tensor) -> dict:
    """PSNR / SSIM (data range 1) of the grid's renders of ``cameras`` against ``targets`` (V, 3, H, W) in
    [0, 1]. Returns per-view lists, their means and the renders (V, 3, H, W)."""
    from fastvdm.metrics import psnr, ssim

    rgb, _, _ = grid.render_views(cameras)
    rgb = rgb.clamp(0, 1)
    p = psnr(rgb, targets.float(), data_range=1.0)
    s = ssim(rgb, targets.float(), data_range=1.0)
    return {"psnr": p.tolist(), "ssim": s.tolist(), "psnr_mean": float(p.mean()), "ssim_mean": float(s.mean()),
            "renders": rgb}


def read_train_views(folder: str, source: str, use_depth: bool):
    """(the scene folder as read by :func:`fastvdm.data.scene_io.read_scene`, its views as TrainViews tagged
    ``source``; depth kept only with ``use_depth``)."""
    from fastvdm.data.scene_io import read_scene

    data = read_scene(folder, load_depth=use_depth, load_points=False)
    return data, [TrainView(v.camera, v.rgb, v.depth if use_depth else None, None, source) for v in data.views]


def _save_png(path: str, rgb: torch.Tensor) -> None:
    from PIL import Image

    Image.fromarray((rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(path)


def reconstruct_folder(scene: str, out: str, cfg: ReconConfig | None = None, extra: Sequence[str] = (),
                       test: str | None = None, progress: bool = False) -> dict:
    """Fit a grid to scene folder ``scene`` (RGB + depth) plus the ``extra`` folders (RGB only, e.g. generated
    views); write OUT/grid.safetensors, OUT/renders/train_XXXXX.png (and test_XXXXX.png of the ``test`` folder's
    views) and OUT/metrics.json; returns those metrics (train PSNR, and held-out PSNR / SSIM with ``test``)."""
    import json
    import os

    from safetensors.torch import save_file

    from fastvdm.metrics import psnr

    cfg = cfg or ReconConfig()
    _, views = read_train_views(scene, "input", True)
    for e in extra:
        views += read_train_views(e, "extra", False)[1]
    res = fit(views, cfg, progress=progress)
    os.makedirs(os.path.join(out, "renders"), exist_ok=True)
    save_file(res.grid.state(), os.path.join(out, "grid.safetensors"))
    train_rgb, _, _ = res.grid.render_views([v.camera for v in views])
    for i, img in enumerate(train_rgb):
        _save_png(os.path.join(out, "renders", f"train_{i:05d}.png"), img)
    train_psnr = psnr(train_rgb.clamp(0, 1), torch.stack([v.rgb for v in views]), data_range=1.0)
    metrics = {"scene": os.path.abspath(scene), "extra": [os.path.abspath(e) for e in extra],
               "train_views": len(views), "seconds": res.seconds, "grid_shape_xyz": list(res.grid.shape_xyz),
               "box": res.box, "train_psnr_mean": float(train_psnr.mean()), "log": res.log, "config": cfg.to_dict()}
    if test:
        data, _ = read_train_views(test, "test", False)
        ev = evaluate(res.grid, [v.camera for v in data.views], torch.stack([v.rgb for v in data.views]))
        for i, img in enumerate(ev.pop("renders")):
            _save_png(os.path.join(out, "renders", f"test_{i:05d}.png"), img)
        metrics["test"] = ev
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


__all__ = ["TrainView", "ReconConfig", "FitResult", "fit", "evaluate", "scene_box", "read_train_views",
           "reconstruct_folder"]
