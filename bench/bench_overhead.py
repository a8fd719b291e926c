"""Per-call host overhead of the cpu backend's ops: the eager path (C++ op called directly, or through a plain
autograd.Function) against the ``torch.library`` custom op that torch.compile traces, on 1-element inputs
(so the time is all overhead), forward only and forward + backward. Interleaved rounds, medians.

    python bench/bench_overhead.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import format_table, interleaved_medians, machine_name  # noqa: E402

import fastvdm.ops as ops  # noqa: E402
from fastvdm.ops.cpu import attention as cpu_attention  # noqa: E402
from fastvdm.ops.cpu import group_norm as cpu_group_norm  # noqa: E402
from fastvdm.ops.cpu import losses as cpu_losses  # noqa: E402


def cases():
    """op -> (eager path fn, custom-op fn, differentiable input)."""
    q = torch.randn(1, 1, 1, 1, 32, requires_grad=True)
    x = torch.randn(1, 4, 1, 1, 2, requires_grad=True)
    p = torch.randn(1, 1, requires_grad=True)
    other = torch.randn(1, 1)
    ab = torch.full((1,), 0.5)
    return {
        "video_attention": (lambda: cpu_attention.video_attention(q, q, q, "spatial"),
                            lambda: cpu_attention._custom_op_attention(q, q, q, "spatial"), q),
        "group_norm": (lambda: cpu_group_norm.group_norm(x, 2, None, None, 1e-5, None, None, "silu"),
                       lambda: cpu_group_norm._custom_op_group_norm(x, 2, None, None, 1e-5, None, None, "silu"), x),
        "denoising_loss": (lambda: cpu_losses.denoising_loss(p, other, other, ab, ab, None, "v"),
                           lambda: cpu_losses._custom_op_denoising_loss(p, other, other, ab, ab, None, "v"), p),
        "dmd_loss": (lambda: cpu_losses.dmd_loss(p, other, other, None),
                     lambda: cpu_losses._custom_op_dmd_loss(p, other, other, None), p),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for op, (eager, custom, wrt) in cases().items():
        def fb(fn):
            return lambda: torch.autograd.grad(fn().sum(), wrt)

        def nograd(fn):
            def call():
                with torch.no_grad():
                    return fn()
            return call

        fns = {"eager fwd": nograd(eager), "custom op fwd": nograd(custom), "eager fwd+bwd": fb(eager),
               "custom op fwd+bwd": fb(custom)}
        t = interleaved_medians(fns, rounds=args.repeats)
        rows.append({"op": op, **{k: f"{v * 1e6:.1f}" for k, v in t.items()},
                     "saved fwd+bwd us": f"{(t['custom op fwd+bwd'] - t['eager fwd+bwd']) * 1e6:.1f}"})
    print(f"# per-call host overhead (us), cpu backend, 1-element inputs, {machine_name()}, {args.threads} threads")
    print(format_table(rows, ["op", "eager fwd", "custom op fwd", "eager fwd+bwd", "custom op fwd+bwd",
                              "saved fwd+bwd us"]))
    return rows


if __name__ == "__main__":
    main()
