"""End-to-end benchmark: teacher sampling (50-step DDIM), student sampling (4 steps) and one KL-stage
distillation training step, each with every op forced to the ``reference`` backend and with ``auto``.

    python bench/bench_e2e.py                         # tiny preset, this machine's device
    python bench/bench_e2e.py --preset base --frames 16 --size 256     # on a GPU
    fastvdm bench e2e --preset tiny                   # the same, plus a JSON record

Weights are freshly initialized (seeded): time and memory do not depend on what the weights learned, and this
benchmark must run on any install. Each row is one call, timed as the median of ``--repeats`` calls after one
warm-up call, the two backends' calls interleaved round by round (so a change of machine load hits both alike),
with the torch RNG reseeded before each call so both backends do identical work (the KL step draws its
backward-simulation depth k at random). Peak memory: bytes allocated during one call above the level
before it (CUDA: max_memory_allocated; CPU: torch.profiler [memory] events, running sum). The distillation step
is ``KLStage.step`` with softened weighting, one fake-score update per student update (student, fake-score
model and stage-1 discriminator head all training, the teacher frozen).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastvdm.ops as ops  # noqa: E402
from bench.bench_losses import peak_bytes  # noqa: E402
from bench.timing import format_table, machine_name, median_seconds  # noqa: E402
from fastvdm.data.dataset import ClipDataset  # noqa: E402
from fastvdm.diffusion import DDIMSampler, FewStepSampler, VSchedule  # noqa: E402
from fastvdm.distill import KLConfig, KLStage  # noqa: E402
from fastvdm.diffusion.denoisers import preset_denoiser  # noqa: E402
from fastvdm.models import Discriminator, make_cond  # noqa: E402

COLUMNS = ["preset", "clip", "what", "backend", "seconds", "peak MB", "speedup vs reference"]


def build(preset: str, batch: int, frames: int, size: int, device: str):
    """Seeded teacher/student/fake/discriminator and one held-out batch (x0, cond) on ``device``."""
    torch.manual_seed(0)
    teacher = preset_denoiser(preset).to(device).eval().requires_grad_(False)
    student, fake = copy.deepcopy(teacher).train().requires_grad_(True), copy.deepcopy(teacher).train().requires_grad_(True)
    disc = Discriminator(teacher).to(device)
    data = ClipDataset("test", num_frames=frames, size=size, num_clips=batch)
    items = [data[i] for i in range(batch)]
    collated = {k: torch.stack([it[k] for it in items]) for k in ("frames", "cond_rgb", "cond_mask", "plucker", "is_input")}
    x0, cond = make_cond(collated, device=device)
    return teacher, student, fake, disc, x0, cond


def run(preset: str, batch: int, frames: int, size: int, device: str, repeats: int, teacher_steps: int) -> list[dict]:
    teacher, student, fake, disc, x0, cond = build(preset, batch, frames, size, device)
    schedule = VSchedule()
    ddim, few = DDIMSampler(schedule, num_steps=teacher_steps), FewStepSampler(schedule)
    stage = KLStage(student, teacher, fake, few, disc, KLConfig(weighting="softened", fake_steps=1))
    shape = tuple(x0.shape)

    def seeded(fn):
        def call():
            torch.manual_seed(1)
            return fn()

        return call

    # what -> (timed call, repeats, warm-up calls, call whose peak memory is reported). The teacher is timed
    # once after a 2-step DDIM warm-up call per backend (below) and its peak memory is that of a 2-step DDIM
    # call: no-grad sampling holds one step's activations at a time, so the peak does not grow with the steps.
    ddim2 = DDIMSampler(schedule, num_steps=2)
    tasks = {
        f"teacher sampling ({teacher_steps}-step DDIM)": (
            seeded(lambda: ddim(teacher, cond, shape)), 1, 0, seeded(lambda: ddim2(teacher, cond, shape))),
        "student sampling (4 steps)": (seeded(lambda: few(student, cond, shape)), repeats, 1, None),
        "distillation step (KL stage)": (seeded(lambda: stage.step(x0, cond)), repeats, 1, None),
    }
    rows = []
    clip = f"{batch}x{frames}x{size}x{size}"
    backends = ("reference", "auto")
    for backend in backends:  # first calls of each backend's ops (dispatch caches, thread pools) are not timed
        with ops.use_backend(backend), torch.no_grad():
            ddim2(teacher, cond, shape)
    for what, (fn, reps, warmup, peak_fn) in tasks.items():
        grad = torch.enable_grad if what.startswith("distillation") else torch.no_grad
        times = {b: [] for b in backends}
        for r in range(warmup + reps):  # interleaved rounds: a change of machine load hits both backends alike
            for backend in backends:
                with ops.use_backend(backend), grad():
                    t = median_seconds(fn, device, warmup=0, repeats=1)
                if r >= warmup:
                    times[backend].append(t)
        seconds = {b: statistics.median(times[b]) for b in backends}
        for backend in backends:
            with ops.use_backend(backend), grad():
                peak = peak_bytes(peak_fn or fn, device)
            rows.append({
                "preset": preset, "clip": clip, "what": what, "backend": backend,
                "seconds": f"{seconds[backend]:.3f}", "peak MB": f"{peak / 2**20:.1f}",
                "speedup vs reference": f"{seconds['reference'] / seconds[backend]:.2f}x",
            })
            print(f"  {what:34s} {backend:9s} {seconds[backend]:8.3f} s", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=None, help="default: 8 on the CPU, 16 on a GPU")
    p.add_argument("--size", type=int, default=None, help="default: 32 on the CPU (tiny), 64 on a GPU")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--teacher-steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch and the OpenMP kernels)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = args.frames or (16 if args.device == "cuda" else 8)
    size = args.size or (64 if args.device == "cuda" else 32)
    print(f"# end-to-end on {machine_name()} ({args.device}, torch threads {torch.get_num_threads()}); "
          f"available backends: {', '.join(f'{op}: {ops.available_backends(op)}' for op in ops.OPS)}")
    rows = run(args.preset, args.batch, frames, size, args.device, args.repeats, args.teacher_steps)
    print(format_table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    main()
