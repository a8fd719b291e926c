"""The importable novel-view pipeline: a trained VideoUNet plus its sampler, ready to call.

    import torch
    from fastvdm import load_student
    from fastvdm.data.dataset import ClipDataset
    from fastvdm.models import make_cond

    pipe = load_student("tiny")                       # shipped weights (no network), or a run folder / file
    batch = torch.utils.data.default_collate([ClipDataset("test", num_frames=8, size=32)[0]])
    _, cond = make_cond(batch)                        # renders, masks, Plücker maps, input views
    video = pipe(cond, generator=torch.Generator().manual_seed(0))   # (B, 3, T, H, W) in [-1, 1], 4 steps

    views = pipe.densify(input_views, path_cameras)   # scene_io.View inputs -> RGB along a path, full resolution
    densify_scene("capture/", "dense/")               # a whole capture folder -> a dense nerfstudio folder

``load_student`` gives the distilled 4-step student (``sample_few_step``, 1 or 2 steps also work);
``load_teacher`` the multi-step teacher (``sample_ddim``, 50 steps by default). Both take a shipped name
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
    """{name: folder} of the pretrained models shipped with the package (``fastvdm/weights/<name>/``, each a
    :meth:`NVSPipeline.save_pretrained` folder)."""
    from fastvdm.models.pretrained import is_pretrained_folder

    if not os.path.isdir(WEIGHTS_DIR):
        return {}
    return {f: os.path.join(WEIGHTS_DIR, f) for f in sorted(os.listdir(WEIGHTS_DIR))
            if is_pretrained_folder(os.path.join(WEIGHTS_DIR, f))}


SHIPPED_PREFIX = "shipped:"


def resolve_model_path(path_or_name: str, role: str) -> str:
    """The model file or run folder meant by ``path_or_name`` for ``role`` ("student" / "teacher").

    ``shipped:NAME`` is always a shipped model (``tiny`` -> ``{role}_tiny``, or the full file stem). A plain
    name is a path when one exists (a note on stderr says when such a folder or file shadows a shipped name),
    else a shipped name. Raises FileNotFoundError (a one-line message listing the shipped names)."""
    shipped = shipped_models()
    names = sorted({k.split("_", 1)[1] for k in shipped if k.startswith(role + "_")})
    spec = str(path_or_name)
    if not spec.strip():
        raise FileNotFoundError(f"{role} model name is empty (shipped {role}s: {names or 'none'}, or give a run "
                                "folder or checkpoint file)")
    explicit = spec.startswith(SHIPPED_PREFIX)
    name = spec[len(SHIPPED_PREFIX):] if explicit else spec
    hit = next((shipped[k] for k in (f"{role}_{name}", name) if k in shipped), None)
    if explicit:
        if hit is None:
            raise FileNotFoundError(f"{role} {spec!r}: not a shipped model (shipped {role}s: {names or 'none'})")
        return hit
    if os.path.exists(spec):
        if hit is not None:
            import sys

            print(f"fastvdm: note: {role} {spec!r} is the local {'folder' if os.path.isdir(spec) else 'file'} "
                  f"{os.path.abspath(spec)}, not the shipped model of that name (write {SHIPPED_PREFIX}{name} for "
                  "the shipped one)", file=sys.stderr)
        return spec
    if hit is not None:
        return hit
    raise FileNotFoundError(f"{role} {spec!r}: no such file or folder, and not a shipped model "
                            f"(shipped {role}s: {names or 'none'})")


def model_kind(meta: dict) -> Optional[str]:
    """"student" or "teacher" from a checkpoint's meta (its training stage), or None when it does not say."""
    stage = str(meta.get("run", {}).get("config", {}).get("stage", "")).lower()
    if stage == "teacher":
        return "teacher"
    if stage in ("gan", "kl", "distill-gan", "distill-kl") or stage.startswith("distill"):
        return "student"
    return None


def check_finite_condition(cond: dict, where: str = "cond") -> None:
    """:class:`~fastvdm.errors.UserError` if a floating tensor of the condition dict holds NaN or infinity
    (one bad pixel would spread through the attention layers to most of the clip)."""
    from fastvdm.errors import UserError

    for k, v in cond.items():
        if isinstance(v, Tensor) and v.is_floating_point():
            bad = ~torch.isfinite(v)
            if bool(bad.any()):
                raise UserError(f"{where}[{k!r}] holds {int(bad.sum())} NaN or infinite value(s) of "
                                f"{v.numel()}; fix the input images, depth or cameras it was built from")


class NVSPipeline:
    """A VideoUNet and its sampler. ``__call__(cond, generator=None, num_steps=None, progress=True)`` samples a
    clip: cond is the model's condition dict (:func:`fastvdm.models.make_cond`), all (B, C, T, H, W) with any
    H x W (the network call is padded to the multiple the U-Net needs and cropped back,
    :class:`fastvdm.models.padded.PaddedNetwork`; it was trained at ``frames`` x ``size`` x ``size``);
    returns (B, 3, T, H, W) in [-1, 1] with the clean input views pasted at their frames. It composes the
    functions of :mod:`fastvdm.diffusion`: the model (counted by ``count_nfe``, guided for the teacher) ->
    ``sample_few_step`` / ``sample_ddim`` -> ``paste_inputs``. ``last_nfe``: network evaluations of the latest
    call.

    kind: "student" (few-step, default ``num_steps`` 4) or "teacher" (DDIM, default 50).
    """

    def __init__(self, model: torch.nn.Module, kind: str = "student", frames: int = 8, size: int = 32,
                 guidance: float = 1.0, meta: Optional[dict] = None):
        from fastvdm.diffusion import VSchedule

        if kind not in ("student", "teacher"):
            raise ValueError(f"kind must be 'student' or 'teacher', got {kind!r}")
        self.model, self.kind, self.frames, self.size = model, kind, int(frames), int(size)
        self.meta = meta or {}
        self.schedule, self.guidance = VSchedule(), float(guidance)
        self.default_steps = 4 if kind == "student" else 50
        self.last_nfe = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def config(self) -> dict:
        """What :meth:`save_pretrained` records beside the network's own config: the sampler and the clip geometry."""
        sampler = ({"name": "few_step", "default_steps": self.default_steps} if self.kind == "student" else
                   {"name": "ddim", "default_steps": self.default_steps, "guidance": self.guidance})
        return {"kind": self.kind, "frames": self.frames, "size": self.size, "sampler": sampler}

    def save_pretrained(self, folder: str, overwrite: bool = False, **extra) -> str:
        """One folder: config.json (architecture, parameterization, schedule, kind, frames, size, sampler,
        ``extra``) + model.safetensors; :meth:`from_pretrained` reads it back. Returns the folder."""
        from fastvdm.diffusion.denoisers import save_denoiser

        return save_denoiser(self.model, folder, overwrite, **self.config(), **extra)

    @classmethod
    def from_pretrained(cls, folder_or_name: str, device=None, kind: Optional[str] = None) -> "NVSPipeline":
        """A pipeline from a :meth:`save_pretrained` folder or a shipped name (``student_tiny``, ``teacher_tiny``;
        with ``kind``, also ``tiny``). ``kind`` (optional) must match the folder's."""
        from fastvdm.diffusion.denoisers import load_denoiser

        shipped = shipped_models()
        if kind is not None:
            folder = resolve_model_path(folder_or_name, kind)
        elif not os.path.exists(folder_or_name) and folder_or_name in shipped:
            folder = shipped[folder_or_name]
        else:
            folder = folder_or_name
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model, config = load_denoiser(folder, device=torch.device(device))
        if kind is not None and config.get("kind") != kind:
            from fastvdm.errors import UserError

            found = config.get("kind")
            hint = ("shipped:tiny, or a `fastvdm train distill` run" if kind == "student"
                    else "shipped:tiny, or a `fastvdm train teacher` run")
            raise UserError(f"{folder_or_name!r} ({folder}) is a {found} model, not a {kind}: give a {kind} ({hint}); "
                            f"in Python, load_{found} loads it (or pass check_kind=False)")
        sampler = config.get("sampler", {})
        pipe = cls(model, config.get("kind", "student"), frames=config.get("frames", 8), size=config.get("size", 32),
                   guidance=sampler.get("guidance", 1.0), meta=config)
        pipe.default_steps = int(sampler.get("default_steps", pipe.default_steps))
        return pipe

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
        check_finite_condition(cond)

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
        from fastvdm.diffusion import (count_nfe, guided, initial_state, paste_inputs, sample_ddim, sample_few_step,
                                       trailing_timesteps)

        dev = self.device
        cond = {k: v.to(dev) for k, v in cond.items()}
        from fastvdm.models.padded import PaddedNetwork, padded_size, required_multiple

        net = self.model
        if padded_size(H, W, required_multiple(net)) != (H, W):  # any H x W: pad for the U-Net, crop back
            net = PaddedNetwork(net)
        net = count_nfe(net)
        ts = trailing_timesteps(steps)  # 4 steps: the student's grid (999, 749, 499, 249)
        with torch.no_grad():
            x = initial_state((B, 3, T, H, W), ts[0], generator, self.schedule, dev)
            if self.kind == "student":
                out = sample_few_step(net, x, ts, generator, cond, self.schedule, progress, autocast_bf16)
            else:
                from fastvdm.models import drop_condition

                out = sample_ddim(guided(net, self.guidance, drop_condition), x, ts, generator, cond, self.schedule,
                                  progress=progress, autocast_bf16=autocast_bf16)
        self.last_nfe = net.calls
        return paste_inputs(out, cond).clamp(-1, 1)

    def densify(self, views: Sequence, cameras: Sequence, input_indices: Optional[Sequence[int]] = None,
                points: Optional[Tensor] = None, point_colors: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None, num_steps: Optional[int] = None,
                progress: bool = False, **options) -> dict:
        """Complete one camera path from posed views at the capture's own resolution (no crop, no resize).

        views: K ``fastvdm.data.scene_io.View`` (rgb (3, H, W) in [0, 1]; depth in metres, or None: then the
        point cloud ``points``/``point_colors`` in [0, 1], or two-view stereo between the views); cameras:
        the T path cameras (any size, one aspect ratio); input_indices: where the views sit on the path
        (default evenly spaced, first and last included; their cameras replace the path's there). The
        non-input frames are generated by :func:`fastvdm.densify.densify_clip` (full-resolution z-buffered
        warp kept where the inputs see, the model's output upsampled into the holes only; ``options`` go to
        it, e.g. max_pixels, feather, harmonize). Returns {"rgb": (T, 3, H, W) in [0, 1] at the cameras'
        size (the input photos at their frames), "cameras": the T cameras, "seen" (T, 1, H, W) in {0, 1}
        (what the inputs see; 1 at input frames; also as "cond_mask"), "cond_rgb": (T, 3, H, W) the warps,
        "working_size": (h, w) the network ran at, "nfe"}.
        """
        from fastvdm.densify import densify_clip, scene_geometry
        from fastvdm.errors import UserError

        for i, v in enumerate(views):
            for what, t in (("rgb", v.rgb), ("depth", v.depth)):
                if t is not None and not bool(torch.isfinite(t).all()):
                    raise UserError(f"densify: input view {i} ({v.name or 'unnamed'}) {what} holds NaN or infinite "
                                    "values; fix the file it was read from")
        if points is not None and not bool(torch.isfinite(points).all()):
            raise UserError("densify: the point cloud holds NaN or infinite positions")

        k, t = len(views), len(cameras)
        if input_indices is None:
            input_indices = [0] if k == 1 else [round(j * (t - 1) / (k - 1)) for j in range(k)]
        input_indices = [int(i) for i in input_indices]
        if len(input_indices) != k or len(set(input_indices)) != k or not all(0 <= i < t for i in input_indices):
            raise UserError(f"densify: input_indices must be {k} distinct frames in [0, {t}), got {input_indices}")
        geom = scene_geometry(views, points, point_colors, options.pop("stereo", "auto"))
        tgt = [i for i in range(t) if i not in set(input_indices)]
        res = densify_clip(self, views, [cameras[i] for i in tgt], geom, input_positions=input_indices,
                           generator=generator, num_steps=num_steps, progress=progress, **options)
        cams, rgb, seen, warp = list(cameras), [None] * t, [None] * t, [None] * t
        for i, v in zip(input_indices, views):
            cams[i], rgb[i], warp[i] = v.camera, v.rgb, v.rgb
            seen[i] = torch.ones(1, *v.rgb.shape[1:])
        for j, i in enumerate(tgt):
            rgb[i], seen[i], warp[i] = res["rgb"][j], res["seen"][j], res["warp"][j]
        if len({tuple(x.shape) for x in rgb}) != 1:
            sizes = sorted({tuple(x.shape[1:]) for x in rgb})
            raise ValueError(f"densify: the path's cameras differ in size ({sizes}); use "
                             "fastvdm.densify.densify_clip for mixed sizes")
        seen_t = torch.stack(seen)
        return {"rgb": torch.stack(rgb), "cameras": cams, "seen": seen_t, "cond_mask": seen_t,
                "cond_rgb": torch.stack(warp), "working_size": res["working_size"], "nfe": res["nfe"]}


def _load(path_or_name: str, kind: str, device=None, ema: bool = True, guidance: float = 1.0,
          check_kind: bool = True) -> NVSPipeline:
    from fastvdm.errors import UserError
    from fastvdm.models.pretrained import is_pretrained_folder
    from fastvdm.train import load_model

    path = resolve_model_path(path_or_name, kind)
    if is_pretrained_folder(path):
        pipe = NVSPipeline.from_pretrained(path, device, kind if check_kind else None)
        if pipe.kind != kind:  # check_kind=False: use it as asked
            pipe = NVSPipeline(pipe.model, kind, pipe.frames, pipe.size, guidance, pipe.meta)
        if kind == "teacher" and guidance != 1.0:
            pipe.guidance = float(guidance)
        return pipe
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model, meta = load_model(path, ema=ema, device=device)
    found = model_kind(meta)
    if check_kind and found is not None and found != kind:
        other = "load_teacher / --teacher" if found == "teacher" else "load_student / --student, --ckpt"
        hint = ("a distilled student (shipped:tiny, or a `fastvdm train distill` run)" if kind == "student"
                else "a teacher (shipped:tiny, or a `fastvdm train teacher` run)")
        raise UserError(f"{path_or_name!r} ({path}) is a {found} model, not a {kind}: give {hint}; a {found} is "
                        f"loaded with {other}")
    cfg = meta.get("run", {}).get("config", {})
    return NVSPipeline(model, kind, frames=int(cfg.get("frames", 8)), size=int(cfg.get("size", 32)), guidance=guidance,
                       meta=meta)


def export_pretrained(checkpoint: str, folder: str, kind: str, name: Optional[str] = None, ema: bool = True,
                      overwrite: bool = False, **extra) -> str:
    """Export one network of a training checkpoint (or run folder, or exported model file) as a pretrained
    folder (:meth:`NVSPipeline.save_pretrained`): the EMA weights when ``ema`` and present, frames and size from
    the run config, the step and source in ``provenance`` (plus ``extra``). Returns the folder."""
    from fastvdm.train import load_model, resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    model, meta = load_model(path, name, ema=ema)
    cfg = meta.get("run", {}).get("config", {})
    pipe = NVSPipeline(model, kind, frames=int(cfg.get("frames", 8)), size=int(cfg.get("size", 32)))
    provenance = {"source": os.path.basename(path), "step": meta.get("step"), "weights": "ema" if ema else "raw",
                  **extra.pop("provenance", {})}
    return pipe.save_pretrained(folder, overwrite, provenance=provenance, **extra)


def load_student(path_or_name: str = "tiny", device=None, ema: bool = True, check_kind: bool = True) -> NVSPipeline:
    """The distilled few-step student (4 steps by default) from a shipped name (``tiny``, ``shipped:tiny``), a
    pretrained folder, a run folder or a checkpoint / exported model file. A file whose training stage says it is a teacher is refused unless ``check_kind=False``."""
    return _load(path_or_name, "student", device, ema, check_kind=check_kind)


def load_teacher(path_or_name: str = "tiny", device=None, ema: bool = True, guidance: float = 1.0,
                 check_kind: bool = True) -> NVSPipeline:
    """The multi-step teacher (50-step DDIM by default, classifier-free ``guidance``) from a shipped name, a
    pretrained folder, a run folder or a checkpoint / exported model file. A distilled student is refused unless ``check_kind=False``."""
    return _load(path_or_name, "teacher", device, ema, guidance, check_kind=check_kind)


def weights_manifest() -> dict:
    """The provenance record of the shipped weights (``fastvdm/weights/MANIFEST.json``), or {}."""
    p = os.path.join(WEIGHTS_DIR, "MANIFEST.json")
    if not os.path.isfile(p):
        return {}
    with open(p) as f:
        return json.load(f)


def densify_scene(scene, out_dir: Optional[str] = None, cameras=None, **kwargs):
    """Densify a capture folder (nerfstudio or COLMAP) or ``SceneData`` and write it as a nerfstudio folder.

    See :func:`fastvdm.densify.densify_scene` (the whole job: inputs, stereo, target cameras, path planning,
    clips, compositing at full resolution, output folder); returns its ``DensifyResult``. ``pipe`` defaults to
    ``load_student(model)`` (model "tiny": the shipped student).
    """
    from fastvdm.densify import densify_scene as _densify_scene

    if kwargs.get("pipe") is None:  # loaded after the inputs are read and checked (input errors come first)
        model = kwargs.get("model", "tiny")
        kwargs["pipe"] = lambda: load_student(model)
    return _densify_scene(scene, out_dir, cameras, **kwargs)


__all__ = ["NVSPipeline", "densify_scene", "load_student", "load_teacher", "export_pretrained", "shipped_models",
           "resolve_model_path", "model_kind", "check_finite_condition", "SHIPPED_PREFIX",
           "weights_manifest", "WEIGHTS_DIR"]
