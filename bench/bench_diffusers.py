"""Stock vs fastvdm-patched diffusers video U-Nets at their real block widths, forward and forward+backward.

    python bench/bench_diffusers.py                                  # SVD, 1 thread, 5 interleaved rounds
    python bench/bench_diffusers.py --models svd unet3d motion i2vgen --repeats 3 --markdown
    python bench/bench_diffusers.py --variants stock gn all temporal  # which patch variants to time
    python bench/bench_diffusers.py --clock cpu --blocks down_blocks.0   # thread CPU time (shared machines)

The whole models (1.0-1.5 B parameters) do not fit forward+backward on a small CPU machine, so each U-Net is
built from its default (real) diffusers config on the ``meta`` device, a forward on meta tensors records every
top-level block's inputs (shapes only, no compute), and then each block in turn is materialized with random
weights, fed random inputs of the recorded shapes (zeros for SVD's image_only_indicator), timed, and freed.
``unet`` rows are the sums over the blocks (the stem, time embedding and output conv, a few percent of the
work, are not timed).

Variants, timed in interleaved rounds (each variant once per round, medians; ratios within one run):
- ``stock``: the diffusers block as is (GroupNorm, SiLU, adds; attention through torch's SDPA);
- ``all``: after ``apply_fastvdm(unet)`` (fused GroupNorms and every covered self-attention on fastvdm);
- ``gn``: ``apply_fastvdm(unet, attention=False)`` (fused GroupNorms; attention stays on torch's SDPA);
- ``temporal``: ``apply_fastvdm(unet, attention="temporal")`` (spatial attention stays on SDPA);
all with fastvdm's ``auto`` backends (on CPU: the ``cpu`` OpenMP kernels).

Allocator (``--allocator``): by default the process keeps freed memory (``bench.timing.keep_freed_memory``).
With glibc's defaults every large buffer (weight gradients, oneDNN's reordered weights and scratch) is mapped
fresh and page-faulted in on every call, the same for every variant: half of a 1280-channel block's
forward+backward, +-10% from run to run, which hides the differences being measured. ``--allocator system``
measures with glibc's defaults.
fwd+bwd: forward, then the gradients of the block's parameters and floating inputs for a random upstream
gradient. fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import keep_freed_memory, machine_name  # noqa: E402

MODELS = ("svd", "unet3d", "motion", "i2vgen")
# wall: elapsed time. cpu: CPU time of the calling thread (time.thread_time), which leaves out the time the thread
# waits while other processes run: on a shared machine it is the steadier measure, and with --threads 1 every op
# runs on the calling thread, so it counts all the work (cache and memory-bandwidth sharing still show).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
VARIANTS = {"stock": None, "all": True, "gn": False, "temporal": "temporal"}  # -> apply_fastvdm(attention=...)
CLASSES = {
    "svd": "UNetSpatioTemporalConditionModel",
    "unet3d": "UNet3DConditionModel",
    "motion": "UNetMotionModel",
    "i2vgen": "I2VGenXLUNet",
}


def meta_inputs(name: str, config, batch: int, frames: int, size: int) -> dict:
    """Model inputs on the meta device for a clip of ``frames`` frames of size x size latents."""
    m = dict(device="meta")
    cross = config.cross_attention_dim
    if name == "svd":
        return dict(sample=torch.empty(batch, frames, config.in_channels, size, size, **m),
                    timestep=torch.empty(batch, **m), encoder_hidden_states=torch.empty(batch, 1, cross, **m),
                    added_time_ids=torch.empty(batch, 3, **m))
    sample = torch.empty(batch, config.in_channels, frames, size, size, **m)
    if name == "unet3d":
        return dict(sample=sample, timestep=torch.empty(batch, **m), encoder_hidden_states=torch.empty(batch, 8, cross, **m))
    if name == "motion":
        return dict(sample=sample, timestep=torch.empty(batch, **m),
                    encoder_hidden_states=torch.empty(batch * frames, 8, cross, **m))
    return dict(sample=sample, timestep=torch.empty(batch, **m), fps=torch.empty(batch, **m),
                image_latents=torch.empty(batch, config.in_channels, frames, size, size, **m),
                image_embeddings=torch.empty(batch, cross, **m), encoder_hidden_states=torch.empty(batch, 8, cross, **m))


def top_blocks(unet) -> list:
    """(name, module) of the U-Net's down, mid and up blocks, in execution order."""
    blocks = [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)]
    blocks.append(("mid_block", unet.mid_block))
    blocks += [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    return blocks


def record_block_inputs(unet, inputs: dict) -> dict:
    """{block name: (args, kwargs)} of one meta forward (tensors are meta: only shapes and dtypes)."""
    records, hooks = {}, []
    for name, block in top_blocks(unet):
        def hook(_module, args, kwargs, _name=name):
            records[_name] = (args, kwargs)
        hooks.append(block.register_forward_pre_hook(hook, with_kwargs=True))
    with torch.no_grad(), torch.device("meta"):  # factory calls inside diffusers' forward land on meta too
        unet(**inputs)
    for h in hooks:
        h.remove()
    return records


def materialize(block, gen: torch.Generator) -> None:
    """Random weights on the CPU: matrices ~ N(0, 1/fan_in), norm weights ~ 1, biases small."""
    block.to_empty(device="cpu")
    with torch.no_grad():
        for pname, p in block.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / (p[0].numel() ** 0.5))
            elif "norm" in pname and pname.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
        for b in block.buffers():
            b.zero_()


def real_inputs(args, kwargs, gen: torch.Generator):
    def make(key, v):
        if isinstance(v, torch.Tensor) and v.device.type == "meta":
            if key == "image_only_indicator" or not v.is_floating_point():
                return torch.zeros(v.shape, dtype=v.dtype)
            return torch.randn(v.shape, generator=gen).to(v.dtype)
        if isinstance(v, tuple):
            return tuple(make(key, t) for t in v)
        return v

    return tuple(make(None, a) for a in args), {k: make(k, v) for k, v in kwargs.items()}


def first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return first_tensor(out[0])
    raise TypeError(f"block output {type(out)}")


def all_tensors(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in all_tensors(o)]
    return []


def time_block(block, args, kwargs, grad: bool, clock=time.perf_counter) -> float:
    leaves = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor) and a.is_floating_point()]
    t0 = clock()
    if grad:
        for leaf in leaves:
            leaf.grad = None
        block.zero_grad(set_to_none=True)
        outs = all_tensors(block(*args, **kwargs))
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    else:
        with torch.no_grad():
            block(*args, **kwargs)
    return clock() - t0


def bench_model(name: str, args) -> list:
    import diffusers

    from fastvdm.integrations.diffusers import apply_fastvdm, remove_fastvdm

    with torch.device("meta"):
        unet = getattr(diffusers, CLASSES[name])()
    unet.to("meta")  # a few parameters (AlphaBlender.mix_factor) are built with torch.Tensor([...]) on the CPU
    records = record_block_inputs(unet, meta_inputs(name, unet.config, args.batch, args.frames, args.size))
    report = apply_fastvdm(unet)
    remove_fastvdm(unet)
    print(f"# {CLASSES[name]}: {report.summary()}", file=sys.stderr)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for block_name, block in top_blocks(unet):
        if block_name not in records or (args.blocks and block_name not in args.blocks):
            continue
        materialize(block, gen)
        bargs, bkwargs = real_inputs(*records[block_name], gen)
        for leaf in list(bargs) + list(bkwargs.values()):
            if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
                leaf.requires_grad_(True)
        variants = ["stock"] + [v for v in args.variants if v != "stock"]
        times = {(v, p): [] for v in variants for p in ("fwd", "fwd+bwd")}
        for rnd in range(args.warmup + args.repeats):
            for variant in variants:
                if variant != "stock":
                    apply_fastvdm(unet, attention=VARIANTS[variant])
                for p, grad in (("fwd", False), ("fwd+bwd", True)):
                    t = time_block(block, bargs, bkwargs, grad, CLOCKS[args.clock])
                    if rnd >= args.warmup:
                        times[(variant, p)].append(t)
                if variant != "stock":
                    remove_fastvdm(unet)
        shape = tuple(first_tensor(bargs[0] if bargs else next(iter(bkwargs.values()))).shape)
        for p in ("fwd", "fwd+bwd"):
            row = dict(model=name, block=block_name, input=shape, pass_=p)
            for v in variants:
                row[f"{v}_ms"] = 1e3 * statistics.median(times[(v, p)])
            rows.append(row)
            print(f"{name} {block_name} {shape} {p}: " + ", ".join(
                f"{v} {row[f'{v}_ms']:.1f} ms ({row['stock_ms'] / row[f'{v}_ms']:.2f}x)" for v in variants),
                file=sys.stderr, flush=True)
        block.to("meta")  # free the weights
        del bargs, bkwargs
    for p in ("fwd", "fwd+bwd"):
        row = dict(model=name, block="unet", input="sum of blocks", pass_=p)
        for v in variants:
            row[f"{v}_ms"] = sum(r[f"{v}_ms"] for r in rows if r["pass_"] == p and r["model"] == name)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["svd"], choices=MODELS, help="U-Net classes (default: svd)")
    parser.add_argument("--batch", type=int, default=1, help="clips per batch (default 1)")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip (default 4)")
    parser.add_argument("--size", type=int, default=16, help="latent height = width (default 16: a 128 px video)")
    parser.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (default 1)")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=["gn", "all"],
                        help="patch variants timed against stock (default: gn all)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: the calling thread's CPU time (needs --threads 1; "
                             "steadier on a shared machine)")
    parser.add_argument("--blocks", nargs="+", help="only these blocks (e.g. down_blocks.0 mid_block)")
    parser.add_argument("--allocator", choices=("keep", "system"), default="keep",
                        help="keep (default): glibc malloc keeps freed memory, so weight gradients and oneDNN "
                             "buffers are not page-faulted in again on every call (half of a 1280-channel block's "
                             "fwd+bwd otherwise, the same for stock and patched, +-10%% run to run); system: "
                             "glibc's defaults")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures the calling thread only: use it with --threads 1")
    torch.set_num_threads(args.threads)
    allocator = keep_freed_memory() if args.allocator == "keep" else "allocator: system default"
    rows = []
    for name in args.models:
        rows += bench_model(name, args)
    header = (f"machine: {machine_name()}, torch {torch.__version__}, {args.threads} thread(s), fp32, "
              f"batch {args.batch}, {args.frames} frames, {args.size}x{args.size} latents, "
              f"median of {args.repeats} interleaved rounds, {args.clock} clock; {allocator}")
    print(header)
    variants = [v for v in args.variants if v != "stock"]
    if args.markdown:
        print("\n| model | block | input | pass | stock ms | " + " | ".join(f"{v} ms (speedup)" for v in variants)
              + " |\n|---|---|---|---|---|" + "---|" * len(variants))
        for r in rows:
            shape = "x".join(map(str, r["input"])) if isinstance(r["input"], tuple) else r["input"]
            cells = " | ".join(f"{r[f'{v}_ms']:.0f} ({r['stock_ms'] / r[f'{v}_ms']:.2f}x)" for v in variants)
            print(f"| {r['model']} | {r['block']} | {shape} | {r['pass_']} | {r['stock_ms']:.0f} | {cells} |")
    else:
        for r in rows:
            print(r)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(header=header, rows=rows), f, indent=1, default=str)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
