"""End-to-end benchmark: teacher sampling (50-step DDIM), student sampling (4 steps) and one KL-stage
distillation training step, each with every op forced to the ``reference`` backend, with ``auto`` (the default
backends), and (``compile``) with ``torch.compile`` (inductor) of the models running every op on ``reference``.

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
model and stage-1 discriminator head all training, the teacher frozen). ``compile``: the same modules wrapped in
``torch.compile`` (same parameters; its own KL stage and optimizer state); its compilation happens in its warm-up
calls, which are not timed. ``--no-compile`` leaves it out.

Correctness (printed before the timings; the run stops with exit status 1 if it fails): one denoiser
evaluation ``model(x_t, t, cond)`` on every backend against ``reference``, relative L2 difference, on weights
where it can fail: the seeded model with every parameter perturbed by Gaussian noise (a freshly initialized
model's output convolution is zero, which would make every backend agree trivially), and the shipped teacher
and student (``fastvdm/weights``) where they are installed. The reference output's norm is printed too (it is
not zero, so a wrong kernel shows up as a large difference).
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
CHECK_COLUMNS = ["weights", "backend", "||out||", "rel diff vs reference", "ok"]
CHECK_TOLERANCE = 1e-4  # fp32: the kernels' accumulation order differs from PyTorch's; a wrong kernel is O(1)


def randomized(model: torch.nn.Module, seed: int = 2) -> torch.nn.Module:
    """A copy of ``model`` with every parameter perturbed by N(0, 0.05^2) noise (zero-initialized layers included)."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g).to(p))
    return m


def correctness(teacher, cond, shape, device, backends) -> list[dict]:
    """Rows of the correctness check: each backend's denoiser output against reference's (see the docstring)."""
    models = {"randomized": randomized(teacher).eval()}
    try:
        from fastvdm.pipeline import load_student, load_teacher

        models["shipped teacher"] = load_teacher("tiny", device=device).model.eval()
        models["shipped student"] = load_student("tiny", device=device).model.eval()
    except Exception as e:  # noqa: BLE001 (weights not installed, or a different preset): say so, check the rest
        print(f"# correctness: shipped weights not checked ({type(e).__name__}: {e})", file=sys.stderr)
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(shape, generator=g).to(device)
    t = torch.full((shape[0],), 500.0, device=device)
    rows = []
    for name, model in models.items():
        outs = {}
        for backend in backends:
            fn = torch.compile(model, dynamic=False) if backend == "compile" else model
            with ops.use_backend("reference" if backend == "compile" else backend), torch.no_grad():
                outs[backend] = fn(x_t, t, cond).float()
        ref = outs["reference"]
        for backend, out in outs.items():
            diff = ((out - ref).norm() / ref.norm()).item()
            rows.append({"weights": name, "backend": backend, "||out||": f"{ref.norm().item():.3g}",
                         "rel diff vs reference": f"{diff:.1e}", "ok": "yes" if diff <= CHECK_TOLERANCE else "NO"})
    return rows


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


def run(preset: str, batch: int, frames: int, size: int, device: str, repeats: int, teacher_steps: int,
        compile_: bool = True) -> list[dict]:
    teacher, student, fake, disc, x0, cond = build(preset, batch, frames, size, device)
    schedule = VSchedule()
    ddim, few = DDIMSampler(schedule, num_steps=teacher_steps), FewStepSampler(schedule)
    kl = KLConfig(weighting="softened", fake_steps=1)
    shape = tuple(x0.shape)
    backends = ("reference", "auto") + (("compile",) if compile_ else ())

    check = correctness(teacher, cond, shape, device, backends)
    print(format_table(check, CHECK_COLUMNS), flush=True)
    if any(r["ok"] != "yes" for r in check):
        sys.exit(f"bench_e2e: backends disagree beyond {CHECK_TOLERANCE:g} (table above); not timing a wrong result")

    # Per backend: the models it runs and its KL stage (compile: compiled wrappers of the same modules).
    models = {}
    for backend in backends:
        if backend == "compile":
            t_, s_, f_, d_ = (torch.compile(m, dynamic=False) for m in (teacher, student, fake, disc))
        else:
            t_, s_, f_, d_ = teacher, student, fake, disc
        models[backend] = (t_, s_, KLStage(s_, t_, f_, few, d_, kl))

    def seeded(fn):
        def call():
            torch.manual_seed(1)
            return fn()

        return call

    # what -> (timed call, repeats, warm-up calls, call whose peak memory is reported). The teacher is timed
    # once after a 2-step DDIM warm-up call per backend (below) and its peak memory is that of a 2-step DDIM
    # call: no-grad sampling holds one step's activations at a time, so the peak does not grow with the steps.
    ddim2 = DDIMSampler(schedule, num_steps=2)
    # what -> backend -> (timed call, call whose peak memory is reported or None); repeats, warm-up calls
    tasks = {
        f"teacher sampling ({teacher_steps}-step DDIM)": ({
            b: (seeded(lambda m=m: ddim(m[0], cond, shape)), seeded(lambda m=m: ddim2(m[0], cond, shape)))
            for b, m in models.items()}, 1, 0),
        "student sampling (4 steps)": (
            {b: (seeded(lambda m=m: few(m[1], cond, shape)), None) for b, m in models.items()}, repeats, 2),
        "distillation step (KL stage)": (
            {b: (seeded(lambda m=m: m[2].step(x0, cond)), None) for b, m in models.items()}, repeats, 2),
    }
    rows = []
    clip = f"{batch}x{frames}x{size}x{size}"
    op_backend = {b: "reference" if b == "compile" else b for b in backends}
    for backend in backends:  # first calls of each backend's ops (dispatch caches, thread pools, compilation)
        with ops.use_backend(op_backend[backend]), torch.no_grad():
            ddim2(models[backend][0], cond, shape)
    for what, (fns, reps, warmup) in tasks.items():
        grad = torch.enable_grad if what.startswith("distillation") else torch.no_grad
        times = {b: [] for b in backends}
        for r in range(warmup + reps):  # interleaved rounds: a change of machine load hits all backends alike
            for backend in backends:
                with ops.use_backend(op_backend[backend]), grad():
                    t = median_seconds(fns[backend][0], device, warmup=0, repeats=1)
                if r >= warmup:
                    times[backend].append(t)
        seconds = {b: statistics.median(times[b]) for b in backends}
        for backend in backends:
            with ops.use_backend(op_backend[backend]), grad():
                peak = peak_bytes(fns[backend][1] or fns[backend][0], device)
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
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile (inductor) rows")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = args.frames or (16 if args.device == "cuda" else 8)
    size = args.size or (64 if args.device == "cuda" else 32)
    print(f"# end-to-end on {machine_name()} ({args.device}, torch threads {torch.get_num_threads()}); "
          f"available backends: {', '.join(f'{op}: {ops.available_backends(op)}' for op in ops.OPS)}")
    rows = run(args.preset, args.batch, frames, size, args.device, args.repeats, args.teacher_steps,
               not args.no_compile)
    print(format_table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    main()
