"""The importable novel-view pipeline: a trained VideoUNet plus its sampler, ready to call.

    import torch
    from fastvdm import load_student
    from fastvdm.data.dataset import ClipDataset
    from fastvdm.models import make_cond

    pipe = load_student("tiny")                       # shipped weights (no network), or a run folder / file
    batch = torch.utils.data.default_collate([ClipDataset("test", num_frames=8, size=32)[0]])
    _, cond = make_cond(batch)                        # renders, masks, Plücker maps, input views
    video = pipe(cond, generator=torch.Generator().manual_seed(0))   # (B, 3, T, H, W) in [-1, 1], 4 steps

    views = pipe.densify(input_views, path_cameras)   # scene_io.View inputs -> generated RGB along a camera path

``load_student`` gives the distilled 4-step student (``FewStepSampler``, 1 or 2 steps also work);
``load_teacher`` the multi-step teacher (``DDIMSampler``, 50 steps by default). Both take a shipped name
(:func:`shipped_models`), a run folder (latest checkpoint) or a checkpoint / exported model file. The network
is an ordinary ``nn.Module`` (``pipe.model``); ``pipe.compile()`` wraps it in ``torch.compile`` (the samplers'
Python loop and random draws stay eager), which is the way to use the pipeline with ``torch.compile``.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import torch
from torch import Tensor

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def shipped_models() -> dict:
    """{name: path} of the model files shipped with the package (``fastvdm/weights/*.safetensors``)."""
    if not os.path.isdir(WEIGHTS_DIR):
        return {}
    return {f[:-len(".safetensors")]: os.path.join(WEIGHTS_DIR, f) for f in sorted(os.listdir(WEIGHTS_DIR))
            if f.endswith(".safetensors")}


def resolve_model_path(path_or_name: str, role: str) -> str:
    """A shipped name ("tiny" -> ``{role}_tiny``, or the full file stem) or a path that exists."""
    shipped = shipped_models()
    for key in (f"{role}_{path_or_name}", path_or_name):
        if key in shipped and not os.path.exists(path_or_name):
            return shipped[key]
    if os.path.exists(path_or_name):
        return path_or_name
    names = sorted({k.split("_", 1)[1] for k in shipped if k.startswith(role + "_")})
    raise FileNotFoundError(f"{role} {path_or_name!r}: no such file or folder, and not a shipped model "
                            f"(shipped {role}s: {names or 'none'})")


class NVSPipeline:
    """A VideoUNet and its sampler. ``__call__(cond, generator=None, num_steps=None, progress=True)`` samples a
    clip: cond is the model's condition dict (:func:`fastvdm.models.make_cond`), all (B, C, T, H, W) with T and
    H = W as the model was trained (``frames``, ``size``); returns (B, 3, T, H, W) in [-1, 1] with the clean
    input views pasted at their frames. ``last_nfe``: network evaluations of the latest call.

    kind: "student" (few-step, default ``num_steps`` 4) or "teacher" (DDIM, default 50).
    """

    def __init__(self, model: torch.nn.Module, kind: str = "student", frames: int = 8, size: int = 32,
                 guidance: float = 1.0, meta: Optional[dict] = None):
        from fastvdm.diffusion import DDIMSampler, FewStepSampler, VSchedule

        if kind not in ("student", "teacher"):
            raise ValueError(f"kind must be 'student' or 'teacher', got {kind!r}")
        self.model, self.kind, self.frames, self.size = model, kind, int(frames), int(size)
        self.meta = meta or {}
        sch = VSchedule()
        self.sampler = FewStepSampler(sch) if kind == "student" else DDIMSampler(sch, num_steps=50, guidance=guidance)
        self.default_steps = 4 if kind == "student" else 50
        self.last_nfe = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def compile(self, **kwargs) -> "NVSPipeline":
        """Wrap the network in ``torch.compile(**kwargs)`` (in place); returns self."""
        self.model = torch.compile(self.model, **kwargs)
        return self

    def _check(self, cond: dict) -> None:
        from fastvdm.models import COND_KEYS

        missing = set(COND_KEYS) - set(cond)
        if missing:
            raise ValueError(f"cond is missing {sorted(missing)} (build it with fastvdm.models.make_cond)")
        rgb = cond["cond_rgb"]
        if rgb.dim() != 5 or rgb.shape[1] != 3:
            raise ValueError(f"cond['cond_rgb'] must be (B, 3, T, H, W), got {tuple(rgb.shape)}")
        down = 2 ** (len(self.model.config.channels) - 1) if hasattr(self.model, "config") else 1
        if rgb.shape[-1] % down or rgb.shape[-2] % down:
            raise ValueError(f"frame size {rgb.shape[-2]}x{rgb.shape[-1]}: height and width must be multiples "
                             f"of {down}")

    def __call__(self, cond: dict, generator: Optional[torch.Generator] = None, num_steps: Optional[int] = None,
                 progress: bool = True, autocast_bf16: Optional[bool] = None) -> Tensor:
        """Sample; ``autocast_bf16`` runs the network under bf16 autocast (None: on for CUDA, off on the CPU).
        ``generator`` may also be a list of B generators (one per sample); noise is drawn on the model's
        device and is the same on the CPU and a GPU for a seed."""
        self._check(cond)
        B, _, T, H, W = cond["cond_rgb"].shape
        steps = self.default_steps if num_steps is None else int(num_steps)
        if steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {steps}")
        dev = self.device
        cond = {k: v.to(dev) for k, v in cond.items()}
        with torch.no_grad():
            out = self.sampler(self.model, cond, (B, 3, T, H, W), generator=generator, progress=progress,
                               num_steps=steps, autocast_bf16=autocast_bf16)
        self.last_nfe = self.sampler.last_nfe
        return out.clamp(-1, 1)

    def densify(self, views: Sequence, cameras: Sequence, input_indices: Optional[Sequence[int]] = None,
                points: Optional[Tensor] = None, point_colors: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None, num_steps: Optional[int] = None,
                progress: bool = False) -> dict:
        """Complete one camera path from posed RGB-D views.

        views: K ``fastvdm.data.scene_io.View`` (rgb (3, H, W) in [0, 1], depth in metres, or a point cloud
        via ``points``/``point_colors``); cameras: the T path cameras; input_indices: where the views sit on
        the path (default evenly spaced, first and last included). Images are centre-cropped and resized to
        the model's size. Returns {"rgb": (T, 3, size, size) in [0, 1] (inputs at their frames),
        "cameras": the T cameras at that size, "cond_rgb", "cond_mask": the condition renders, "nfe"}.
        """
        from fastvdm.data.dataset import clip_from_views
        from fastvdm.data.scene_io import square_view
        from fastvdm.models import make_cond

        clip = clip_from_views(views, cameras, self.size, input_indices=input_indices, points=points,
                               point_colors=point_colors)
        batch = torch.utils.data.default_collate([clip])
        _, cond = make_cond(batch)
        out = self(cond, generator=generator, num_steps=num_steps, progress=progress)[0].cpu()
        cams = [square_view(None, self.size, c) for c in cameras]
        return {"rgb": ((out.transpose(0, 1) + 1) / 2).clamp(0, 1), "cameras": cams,
                "cond_rgb": ((clip["cond_rgb"].transpose(0, 1) + 1) / 2).clamp(0, 1),
                "cond_mask": clip["cond_mask"].transpose(0, 1), "nfe": self.last_nfe}


def _load(path_or_name: str, kind: str, device=None, ema: bool = True, guidance: float = 1.0) -> NVSPipeline:
    from fastvdm.train import load_model

    path = resolve_model_path(path_or_name, kind)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model, meta = load_model(path, ema=ema, device=device)
    cfg = meta.get("run", {}).get("config", {})
    return NVSPipeline(model, kind, frames=int(cfg.get("frames", 8)), size=int(cfg.get("size", 32)), guidance=guidance,
                       meta=meta)


def load_student(path_or_name: str = "tiny", device=None, ema: bool = True) -> NVSPipeline:
    """The distilled few-step student (4 steps by default) from a shipped name, run folder or file."""
    return _load(path_or_name, "student", device, ema)


def load_teacher(path_or_name: str = "tiny", device=None, ema: bool = True, guidance: float = 1.0) -> NVSPipeline:
    """The multi-step teacher (50-step DDIM by default, classifier-free ``guidance``) from a shipped name, run
    folder or file."""
    return _load(path_or_name, "teacher", device, ema, guidance)


def weights_manifest() -> dict:
    """The provenance record of the shipped weights (``fastvdm/weights/MANIFEST.json``), or {}."""
    p = os.path.join(WEIGHTS_DIR, "MANIFEST.json")
    if not os.path.isfile(p):
        return {}
    with open(p) as f:
        return json.load(f)


__all__ = ["NVSPipeline", "load_student", "load_teacher", "shipped_models", "resolve_model_path",
           "weights_manifest", "WEIGHTS_DIR"]
