"""CPU 3-D convolution: the op fastvdm.ops.conv3d on its cpu backend (oneDNN forward and backward, through the
Conv3d module the models use) against nn.Conv3d (F.conv3d, the op's reference).

    python bench/bench_conv.py [--threads 1] [--repeats 15]      # or: fastvdm bench kernels --op conv3d

Rows: the tiny preset's 3x3x3 convolutions at batch 1 (where PyTorch's own choice is its slow vol2col path) and
at the batch sizes of training (where PyTorch already picks oneDNN for the forward). Columns: forward (no grad),
dx alone, dw alone (for nn.Conv3d: ``aten.convolution_backward`` with one output requested; for Conv3d: the
oneDNN convolution its backward runs) and forward + backward through autograd; median of --repeats after a
warm-up call, the two implementations interleaved call by call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import format_table, machine_name  # noqa: E402
import fastvdm.ops as ops  # noqa: E402
from fastvdm.models.conv import Conv3d  # noqa: E402

# (batch, in channels, out channels, frames, size)
SHAPES = [(1, 32, 32, 8, 32), (1, 64, 64, 8, 16), (1, 14, 32, 8, 32), (2, 32, 32, 8, 32), (4, 32, 32, 8, 32),
          (2, 64, 64, 8, 16)]
COLUMNS = ["shape", "impl", "fwd ms", "dx ms", "dw ms", "fwd+bwd ms", "fwd+bwd vs nn.Conv3d"]


def timed(fns: dict, repeats: int) -> dict:
    """name -> median seconds, the callables interleaved round by round after one warm-up call each."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--device", choices=["cpu"], default="cpu", help="the cpu backend is the op's only kernel")
    args = p.parse_args(argv)
    if "cpu" not in ops.available_backends("conv3d"):
        raise SystemExit(f"conv3d has no cpu backend here: {ops.backend_status('cpu') or 'no oneDNN'}")
    torch.set_num_threads(args.threads)
    mk, cb = torch.ops.aten.mkldnn_convolution, torch.ops.aten.convolution_backward
    rows = []
    for B, ci, co, T, H in SHAPES:
        torch.manual_seed(0)
        ref = torch.nn.Conv3d(ci, co, 3, padding=1)
        ours = Conv3d(ci, co, 3, padding=1)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(B, ci, T, H, H, requires_grad=True)
        dy = torch.randn(B, co, T, H, H)
        w = ref.weight.detach()
        one, pad = [1, 1, 1], [1, 1, 1]
        kernel_dx = w.flip(2, 3, 4).transpose(0, 1).contiguous()
        xt, dyt = x.detach().transpose(0, 1).contiguous(), dy.transpose(0, 1).contiguous()

        def fwd(m):
            def call():
                with torch.no_grad(), ops.use_backend("cpu", ["conv3d"]):
                    m(x)
            return call

        def fwd_bwd(m):
            def call():
                with ops.use_backend("cpu", ["conv3d"]):
                    return torch.autograd.grad(m(x), (x, m.weight, m.bias), dy)
            return call

        t = timed({
            "nn fwd": fwd(ref), "ours fwd": fwd(ours),
            "nn dx": lambda: cb(dy, x.detach(), w, [co], one, pad, one, False, [0, 0, 0], 1, [True, False, False]),
            "ours dx": lambda: mk(dy, kernel_dx, None, pad, one, one, 1),
            "nn dw": lambda: cb(dy, x.detach(), w, [co], one, pad, one, False, [0, 0, 0], 1, [False, True, True]),
            "ours dw": lambda: mk(xt, dyt, None, pad, one, one, 1),
            "nn all": fwd_bwd(ref), "ours all": fwd_bwd(ours),
        }, args.repeats)
        for impl, key in (("nn.Conv3d", "nn"), ("Conv3d (oneDNN)", "ours")):
            rows.append({"shape": f"{B}x{ci}->{co}x{T}x{H}x{H}", "impl": impl,
                         "fwd ms": f"{t[key + ' fwd'] * 1e3:.2f}", "dx ms": f"{t[key + ' dx'] * 1e3:.2f}",
                         "dw ms": f"{t[key + ' dw'] * 1e3:.2f}", "fwd+bwd ms": f"{t[key + ' all'] * 1e3:.2f}",
                         "fwd+bwd vs nn.Conv3d": f"{t['nn all'] / t[key + ' all']:.2f}x"})
    print(f"# 3x3x3 Conv3d on {machine_name()}, float32, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(format_table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    main()
