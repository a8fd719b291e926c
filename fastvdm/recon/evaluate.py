"""The held-out reconstruction benchmark behind ``fastvdm eval-recon``.

Cases: held-out procedural scenes (the test split's scene seeds, ``ClipDataset("test").scene_seed(i)``),
each with a camera path of 2T - 1 poses (``Scene.sample_poses`` with ``rng = default_rng([TEST_SEED, i,
7])``, horizontal FOV uniform in [50, 75] degrees, ``size`` x ``size`` pixels). The even poses are the
T-frame clip a generator densifies; the odd poses (T - 1 views between them) are the held-out test views,
seen by no condition. K input views (RGB + depth, 8-bit images, millimetre depth) sit at clip frames
round(j (T - 1) / (K - 1)) (``clip_from_views``' default). Layout on disk, one folder per case::

    OUT/cases/scene_00003_k2/inputs/   scene folder: the K input views with depth (what a user has)
    OUT/cases/scene_00003_k2/path/     scene folder: the T clip cameras (transforms.json, top-level
                                        "input_indices"); its images are ground truth, read only by the
                                        "oracle" generator
    OUT/cases/scene_00003_k2/test/     scene folder: the T - 1 held-out views (ground truth)

A condition is a generator (``fastvdm.recon.generators``); the reconstruction trains on the input views
(with depth) plus the generator's views (RGB only) with the same ``ReconConfig`` for every condition.
Reported per case and condition: held-out PSNR / SSIM (data range 1, on the 8-bit ground truth), the
generator's wall time, the reconstruction's wall time and their sum.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import numpy as np
import torch

from fastvdm.recon.train import ReconConfig, TrainView, evaluate, fit


def case_name(scene_index: int, num_inputs: int) -> str:
    return f"scene_{scene_index:05d}_k{num_inputs}"


@dataclass
class Case:
    """One benchmark case on disk (see the module docstring)."""

    root: str

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.root))

    @property
    def inputs_dir(self) -> str:
        return os.path.join(self.root, "inputs")

    @cached_property
    def _inputs(self):
        from fastvdm.data.scene_io import read_scene

        return read_scene(self.inputs_dir)

    def inputs(self):
        """The input views (``SceneData``), with depth."""
        return self._inputs

    @cached_property
    def _path(self):
        from fastvdm.data.scene_io import read_scene

        return read_scene(os.path.join(self.root, "path"), load_depth=False)

    def path_ground_truth(self):
        """The clip's T views with their ground-truth images (``SceneData``; for the oracle only)."""
        return self._path

    def input_indices(self) -> list[int]:
        return [int(i) for i in self._path.meta["input_indices"]]

    def generated_cameras(self) -> list:
        """The clip cameras that are not input views (what a generator must produce)."""
        idx = set(self.input_indices())
        return [v.camera for i, v in enumerate(self._path.views) if i not in idx]

    @cached_property
    def _test(self):
        from fastvdm.data.scene_io import read_scene

        return read_scene(os.path.join(self.root, "test"))

    def test(self):
        """The held-out views (``SceneData``)."""
        return self._test


def make_case(out_dir: str, scene_index: int, num_inputs: int, size: int = 64, frames: int = 16) -> Case:
    """Render and write one case (see the module docstring); returns it. Rewrites an existing case."""
    from fastvdm.data.cameras import Camera
    from fastvdm.data.dataset import TEST_SEED, ClipDataset, one_thread
    from fastvdm.data.scene_io import View, write_scene
    from fastvdm.data.scenes import Scene

    if not 1 <= num_inputs <= frames:
        raise ValueError(f"make_case: need 1 <= inputs <= frames, got {num_inputs}, {frames}")
    seed = ClipDataset("test").scene_seed(scene_index)
    rng = np.random.default_rng([TEST_SEED, scene_index, 7])
    with one_thread():
        scene = Scene.random(seed)
        poses = scene.sample_poses(rng, 2 * frames - 1)
        fov = rng.uniform(50.0, 75.0)
        cams = [Camera.from_fov(p, fov, size, size) for p in poses]
        rgb, depth = scene.render(cams)
    clip, test = list(range(0, 2 * frames - 1, 2)), list(range(1, 2 * frames - 1, 2))
    idx = [0] if num_inputs == 1 else [round(j * (frames - 1) / (num_inputs - 1)) for j in range(num_inputs)]
    root = os.path.join(out_dir, case_name(scene_index, num_inputs))
    write_scene(os.path.join(root, "inputs"), [View(cams[clip[i]], rgb[clip[i]], depth[clip[i]]) for i in idx])
    tf = write_scene(os.path.join(root, "path"), [View(cams[j], rgb[j]) for j in clip])
    with open(tf) as f:
        meta = json.load(f)
    meta["input_indices"] = idx
    meta["scene_seed"] = seed
    with open(tf, "w") as f:
        json.dump(meta, f, indent=2)
    write_scene(os.path.join(root, "test"), [View(cams[j], rgb[j], depth[j]) for j in test])
    return Case(root)


def run_case(case: Case, generator: Callable | None, cfg: ReconConfig) -> dict:
    """Reconstruct ``case`` from its inputs plus ``generator``'s views; evaluate on its held-out views."""
    from fastvdm.recon.generators import Generated

    inputs = [TrainView(v.camera, v.rgb, v.depth, None, "input") for v in case.inputs().views]
    gen = generator(case) if generator is not None else Generated()
    res = fit(inputs + gen.views, cfg)
    test = case.test()
    ev = evaluate(res.grid, [v.camera for v in test.views], torch.stack([v.rgb for v in test.views]))
    return {"psnr": ev["psnr_mean"], "ssim": ev["ssim_mean"], "psnr_views": ev["psnr"],
            "gen_s": gen.seconds, "recon_s": res.seconds, "recon_cpu_s": res.cpu_seconds,
            "total_s": gen.seconds + res.seconds,
            "nfe": gen.nfe, "train_views": len(inputs) + len(gen.views), "generated_views": len(gen.views),
            "final_mse": res.log[-1][2] if res.log else None}


def summarize(results: dict, conditions: Sequence[str]) -> list[dict]:
    """Mean over cases per (inputs K, condition): rows with psnr, ssim, gen_s, recon_s, total_s, n, and the
    paired PSNR gain over the ``inputs`` condition on the same cases (``d_psnr``) where that exists."""
    rows = []
    ks = sorted({int(name.rsplit("_k", 1)[1]) for name in results})
    for k in ks:
        names = [n for n in results if n.endswith(f"_k{k}")]
        for cond in conditions:
            have = [n for n in names if cond in results[n]]
            if not have:
                continue
            vals = {key: float(np.mean([results[n][cond][key] for n in have]))
                    for key in ("psnr", "ssim", "gen_s", "recon_s", "total_s")}
            paired = [n for n in have if "inputs" in results[n]]
            d = (float(np.mean([results[n][cond]["psnr"] - results[n]["inputs"]["psnr"] for n in paired]))
                 if paired else math.nan)
            wins = sum(results[n][cond]["psnr"] > results[n]["inputs"]["psnr"] for n in paired)
            rows.append({"inputs": k, "condition": cond, "n": len(have), **vals, "d_psnr": d,
                         "wins": f"{wins}/{len(paired)}"})
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    lines = ["| K inputs | condition | scenes | PSNR dB | SSIM | dPSNR vs inputs | beats inputs | gen s | recon s "
             "| total s |", "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda x, p: "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{p}f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['inputs']} | {r['condition']} | {r['n']} | {f(r['psnr'], 2)} | {f(r['ssim'], 3)} | "
                     f"{f(r['d_psnr'], 2)} | {r['wins']} | {f(r['gen_s'], 2)} | {f(r['recon_s'], 1)} | "
                     f"{f(r['total_s'], 1)} |")
    return "\n".join(lines)


def prepare_cases(cases_dir: str, scene_indices: Sequence[int], input_counts: Sequence[int], size: int = 64,
                  frames: int = 16) -> list[Case]:
    """The cases of ``scene_indices`` x ``input_counts`` under ``cases_dir``, made where not complete yet."""
    os.makedirs(cases_dir, exist_ok=True)
    cases = []
    for i in scene_indices:
        for k in input_counts:
            root = os.path.join(cases_dir, case_name(i, k))
            done = all(os.path.isfile(os.path.join(root, d, "transforms.json")) for d in ("inputs", "path", "test"))
            cases.append(Case(root) if done else make_case(cases_dir, i, k, size, frames))
    return cases


def run_benchmark(out: str, cases: Sequence[Case], conditions: Sequence[tuple], cfg: ReconConfig,
                  log: Callable[[str], None] = lambda line: print(line, flush=True)) -> str:
    """Run every (case, condition) not already in OUT/results.json (resumable: the file is rewritten atomically
    after every run) and write OUT/results.md. conditions: (name, generator, spec) triples (spec: the text a
    result was made with; a result with another spec is redone). Returns the markdown table."""
    path = os.path.join(out, "results.json")
    results = {}
    if os.path.isfile(path):
        with open(path) as f:
            results = json.load(f).get("cases", {})
    names = [c[0] for c in conditions]
    for case in cases:
        for name, gen, spec in conditions:
            entry = results.setdefault(case.name, {})
            if name in entry and entry[name].get("spec") == spec:
                continue
            entry[name] = dict(run_case(case, gen, cfg), spec=spec)
            r = entry[name]
            log(f"{case.name} {name}: PSNR {r['psnr']:.2f} SSIM {r['ssim']:.3f} gen {r['gen_s']:.2f} s "
                f"recon {r['recon_s']:.1f} s")
            rows = summarize({c.name: results[c.name] for c in cases if c.name in results}, names)
            with open(path + ".tmp", "w") as f:
                json.dump({"config": cfg.to_dict(), "conditions": {c[0]: c[2] for c in conditions},
                           "summary": rows, "cases": results}, f, indent=2)
            os.replace(path + ".tmp", path)
    rows = summarize({c.name: results[c.name] for c in cases if c.name in results}, names)
    table = markdown_table(rows)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n")
    return table
