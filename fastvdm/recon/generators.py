"""Pluggable view generators for the reconstruction benchmark.

A generator is a callable ``gen(case) -> Generated``: given a benchmark case (a sparse input scene folder and
the camera path to densify, see ``fastvdm.recon.evaluate.Case``) it returns extra training views for the
path's non-input cameras and the wall time it spent. Built in (``make_generator(spec)``):

- ``warp``: the raw point-cloud renders of the input views' RGB-D (``fastvdm.data.warp.render_points``,
  the model's conditioning); only the pixels the render covers supervise (a sanity baseline).
- ``oracle``: the ray-caster's ground-truth images of the path cameras: a perfect generator, an upper bound
  (not a model).
- ``folder:PATTERN``: generated views already on disk, e.g. ``fastvdm densify`` output; ``{case}`` in
  PATTERN is replaced by the case name (``scene_00003_k2``). The folder is a scene folder (transforms.json);
  frames at an input camera are skipped. Generation time comes from its transforms.json top-level field
  ``generation_seconds`` (and ``nfe``) or from ``timing.json`` ``{"seconds": ..., "nfe": ...}`` beside it;
  without either it is NaN (unknown), never guessed.
- ``py:MODULE:FUNCTION``: ``FUNCTION(inputs_dir, cameras) -> rgb (T, 3, H, W) in [0, 1]`` (or a list of
  (3, H, W)), one image per camera of ``cameras`` (the non-input path cameras); timed here.
- ``model:CKPT[@SAMPLER[@STEPS[@SUPERVISE]]]``: a trained checkpoint or run folder sampled here (``ddim``,
  default 50 steps: the teacher; ``fewstep``: the 4-step student; SUPERVISE ``all`` (default) or ``holes``:
  only the pixels the input render missed supervise), see ``model_generator``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from fastvdm.recon.train import TrainView


@dataclass
class Generated:
    """Views from a generator, its wall time in seconds (NaN if unknown) and network evaluations (or None)."""

    views: list = field(default_factory=list)
    seconds: float = 0.0
    nfe: int | None = None


def _same_camera(a, b, tol: float = 1e-4) -> bool:
    return float((a.c2w - b.c2w).abs().max()) < tol


def warp_generator(case) -> Generated:
    from fastvdm.data.warp import render_points, unproject

    t0 = time.perf_counter()
    inp = case.inputs()
    rgb = torch.stack([v.rgb for v in inp.views])
    depth = torch.stack([v.depth for v in inp.views])
    pts, cols = unproject(rgb, depth, [v.camera for v in inp.views])
    cams = case.generated_cameras()
    h, w = cams[0].height, cams[0].width
    img, mask, _ = render_points(pts, cols, cams, h, w)
    views = [TrainView(c, img[i], None, mask[i, 0], "warp") for i, c in enumerate(cams)]
    return Generated(views, time.perf_counter() - t0, 0)


def oracle_generator(case) -> Generated:
    t0 = time.perf_counter()
    gt = case.path_ground_truth()
    inputs = case.inputs().views
    views = [TrainView(v.camera, v.rgb, None, None, "oracle") for v in gt.views
             if not any(_same_camera(v.camera, i.camera) for i in inputs)]
    return Generated(views, time.perf_counter() - t0, 0)


def folder_generator(pattern: str) -> Callable:
    from fastvdm.data.scene_io import read_scene

    def gen(case) -> Generated:
        folder = pattern.replace("{case}", case.name)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"generated views for {case.name}: folder {folder} not found")
        data = read_scene(folder, load_depth=False, load_points=False)
        inputs = case.inputs().views
        views = [TrainView(v.camera, v.rgb, None, None, "generated") for v in data.views
                 if not any(_same_camera(v.camera, i.camera) for i in inputs)]
        secs, nfe = data.meta.get("generation_seconds"), data.meta.get("nfe")
        timing = os.path.join(folder, "timing.json")
        if secs is None and os.path.isfile(timing):
            with open(timing) as f:
                t = json.load(f)
            secs, nfe = t.get("seconds"), t.get("nfe", nfe)
        return Generated(views, math.nan if secs is None else float(secs), None if nfe is None else int(nfe))

    return gen


def python_generator(target: str) -> Callable:
    mod, _, fn = target.rpartition(":")
    if not mod:
        raise ValueError(f"generator 'py:{target}': expected py:MODULE:FUNCTION")
    func = getattr(importlib.import_module(mod), fn)

    def gen(case) -> Generated:
        cams = case.generated_cameras()
        t0 = time.perf_counter()
        out = func(case.inputs_dir, cams)
        secs = time.perf_counter() - t0
        imgs = torch.stack(list(out)) if not torch.is_tensor(out) else out
        if imgs.shape[0] != len(cams):
            raise ValueError(f"generator {target}: returned {imgs.shape[0]} images for {len(cams)} cameras")
        return Generated([TrainView(c, imgs[i].float().clamp(0, 1), None, None, "generated")
                          for i, c in enumerate(cams)], secs, None)

    return gen


def model_generator(ckpt: str, sampler: str = "ddim", steps: int | None = None, seed: int = 0,
                    guidance: float = 1.0, supervise: str = "all") -> Callable:
    """A trained VideoUNet (teacher or student checkpoint / run folder) densifying the case's clip.

    sampler "ddim" (default 50 steps, the teacher) or "fewstep" (the 4-step student grid; ``steps`` 1 or 2
    for the shorter trailing grids). supervise: "all" pixels of the generated views, or only their "holes"
    (the pixels the point-cloud render of the inputs missed: what the model adds beyond the inputs; elsewhere
    the generated view is a low-resolution copy of what the input views already supervise). The clip is
    :meth:`fastvdm.pipeline.NVSPipeline.densify` of the case's inputs along its path at the case's own resolution
    (the inputs' full-resolution warp kept where they see, the model's output in the holes); its non-input
    frames come back as views at the path cameras. The time covers building the condition
    and sampling, on this process's device (CPU without CUDA).
    """
    from fastvdm.pipeline import load_student, load_teacher

    if sampler not in ("ddim", "fewstep"):
        raise ValueError(f"model generator: sampler must be ddim or fewstep, got {sampler!r}")
    if supervise not in ("all", "holes"):
        raise ValueError(f"model generator: supervise must be 'all' or 'holes', got {supervise!r}")
    pipe = load_teacher(ckpt, guidance=guidance) if sampler == "ddim" else load_student(ckpt)

    def gen(case) -> Generated:
        idx = case.input_indices()
        cams = [v.camera for v in case.path_ground_truth().views]
        t0 = time.perf_counter()
        out = pipe.densify(case.inputs().views, cams, idx, generator=torch.Generator().manual_seed(seed),
                           num_steps=steps)
        secs = time.perf_counter() - t0
        holes = out["cond_mask"][:, 0] < 0.5  # (T, size, size)
        views = [TrainView(c, out["rgb"][i], None, holes[i] if supervise == "holes" else None, "generated")
                 for i, c in enumerate(out["cameras"]) if i not in set(idx)]
        return Generated(views, secs, out["nfe"])

    return gen


def make_generator(spec: str) -> Callable | None:
    """The generator for ``spec`` (see the module docstring); ``inputs`` (no generator) gives None."""
    if spec == "inputs":
        return None
    if spec == "warp":
        return warp_generator
    if spec == "oracle":
        return oracle_generator
    if spec.startswith("folder:"):
        return folder_generator(spec[len("folder:"):])
    if spec.startswith("py:"):
        return python_generator(spec[len("py:"):])
    if spec.startswith("model:"):  # model:CKPT[@SAMPLER[@STEPS[@SUPERVISE]]]
        parts = spec[len("model:"):].split("@")
        return model_generator(parts[0], parts[1] if len(parts) > 1 else "ddim",
                               int(parts[2]) if len(parts) > 2 and parts[2] else None,
                               supervise=parts[3] if len(parts) > 3 else "all")
    raise ValueError(f"unknown generator {spec!r} (use inputs, warp, oracle, folder:PATTERN, py:MODULE:FUNCTION "
                     "or model:CKPT[@SAMPLER[@STEPS]])")
