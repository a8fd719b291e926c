"""Triton kernels at scale: int64 offsets past 2**31, autotune keys bucketed to powers of two, and one autotune
choice for every rank (rank 0's timings broadcast under torch.distributed).

The offset test runs the kernels' own address helpers inside a tiny probe kernel under the interpreter with
strides whose products pass 2**31 and stores the offsets (no memory is touched at them), so it needs no 8 GB
tensor; the interpreter wraps int32 products around like the GPU does, so int32 address math fails it."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from fastvdm.kernels import _autotune  # noqa: E402
from fastvdm.kernels import flash_attention as flash  # noqa: E402
from fastvdm.kernels import temporal_attention as temporal  # noqa: E402

interpreter_only = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="the offset probes run under the Triton interpreter"
)


@triton.jit
def _temporal_probe(OUT, row0, S, H, stride_b, stride_t, stride_s, stride_h, stride_d,
                    BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = row0 + tl.arange(0, BLOCK_R)
    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    offs = temporal._tile_offsets(rows, S, H, offs_t, offs_d, stride_b, stride_t, stride_s, stride_h, stride_d)
    r = tl.arange(0, BLOCK_R)
    idx = (r[:, None, None] * BLOCK_T + offs_t[None, :, None]) * BLOCK_D + offs_d[None, None, :]
    tl.store(OUT + idx, offs)


@triton.jit
def _flash_probe(OUT, z, n0, G, H, INNER, s_b, s_g, s_h, s_o, s_i, s_d,
                 SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    base = flash._batch_offset(z, G, H, s_b, s_g, s_h)
    offs = base + flash._seq_offset(n, INNER, s_o, s_i, SPLIT)[:, None] + offs_d.to(tl.int64)[None, :] * s_d
    tl.store(OUT + tl.arange(0, BLOCK_N)[:, None] * BLOCK_D + offs_d[None, :], offs)


@interpreter_only
def test_temporal_attention_offsets_are_int64_past_2_pow_31():
    # A fused QKV (B, T, S, 3, heads, D) view: T = 64 frames of 128 x 128 tokens, 16 heads of 64 channels
    # (3.2e9 elements per sample, 6.4 GB in bf16). stride_t = S * 3 * heads * D = 50,331,648, so the product
    # t * stride_t itself reaches 63 * stride_t ~ 3.2e9 > 2**31 (and batch 1 starts at ~3.2e9).
    B, T, S, H, D = 2, 64, 128 * 128, 16, 64
    stride_t, stride_s, stride_h, stride_d = S * 3 * H * D, 3 * H * D, D, 1
    stride_b = T * stride_t
    R, BT, BD = 4, 64, 16
    t = np.arange(BT, dtype=np.int64)[:, None]
    d = np.arange(BD, dtype=np.int64)[None, :]
    for row0 in (0, S * H - 2, B * S * H - R):  # the first rows, across a batch boundary, the very last rows
        out = torch.zeros(R * BT * BD, dtype=torch.int64)
        _temporal_probe[(1,)](out, row0, S, H, stride_b, stride_t, stride_s, stride_h, stride_d,
                              BLOCK_R=R, BLOCK_T=BT, BLOCK_D=BD)
        got = out.reshape(R, BT, BD).numpy()
        for i in range(R):
            r = row0 + i
            b, s, h = r // (S * H), (r // H) % S, r % H
            want = b * stride_b + s * stride_s + h * stride_h + t * stride_t + d * stride_d
            np.testing.assert_array_equal(got[i], want, err_msg=f"row {r}")
    assert (T - 1) * stride_t > 2**31 and want.max() > 2**32


@interpreter_only
@pytest.mark.parametrize("split", [False, True])
def test_flash_attention_offsets_are_int64_past_2_pow_31(split):
    # joint attention over T*S = 64 * 16384 tokens of a fused QKV tensor; the last tokens sit past 2**31.
    T, S, H, D = 64, 128 * 128, 8, 64
    s_i, s_o, s_h, s_d = 3 * H * D, S * 3 * H * D, D, 1
    if not split:  # one stride for the flattened sequence
        s_o = 0
    s_b, s_g, G, INNER = T * S * 3 * H * D, 0, 1, S
    BN, BD = 16, 16
    z = 1 * H + 7  # batch 1, head 7
    n0 = T * S - BN
    out = torch.zeros(BN * BD, dtype=torch.int64)
    _flash_probe[(1,)](out, z, n0, G, H, INNER, s_b, s_g, s_h, s_o, s_i, s_d, SPLIT=split, BLOCK_N=BN, BLOCK_D=BD)
    n = np.arange(n0, n0 + BN, dtype=np.int64)[:, None]
    seq = (n // INNER) * s_o + (n % INNER) * s_i if split else n * s_i
    want = 1 * s_b + 7 * s_h + seq + np.arange(BD, dtype=np.int64)[None, :] * s_d
    assert want.max() > 2**31
    np.testing.assert_array_equal(out.reshape(BN, BD).numpy(), want)


# ------------------------------------------------------------------------------------------------ autotune
def test_tune_keys_are_power_of_two_buckets():
    assert [_autotune.tune_bucket(n) for n in (1, 16, 17, 256, 257, 4096, 4097)] == [16, 16, 32, 256, 512, 4096,
                                                                                     8192]
    assert "N" not in flash._TUNE_KEY and "N_BUCKET" in flash._TUNE_KEY
    assert "T" not in temporal._TUNE_KEY and "BLOCK_T" in temporal._TUNE_KEY
    for tuner in list(flash._TUNED.values()) + list(temporal._TUNED.values()):
        assert tuner._do_bench is _autotune.rank0_do_bench
        assert all(k in tuner.arg_names for k in tuner.keys)


def test_single_process_benchmarks_locally(monkeypatch):
    monkeypatch.setattr(_autotune, "_bench_here", lambda fn, quantiles=None: [fn(), 0.0, 0.0])
    assert _autotune.rank0_do_bench(lambda: 3.5, quantiles=(0.5, 0.2, 0.8)) == [3.5, 0.0, 0.0]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, out):
    import torch.distributed as dist

    from fastvdm.kernels import _autotune as at

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    calls = []

    def bench_here(fn, quantiles=None):  # each rank would time differently
        calls.append(1)
        if rank == 0 and len(calls) == 2:
            raise RuntimeError("out of resources (simulated)")
        return [float(10 * rank + len(calls)), 0.0, 0.0]

    at._bench_here = bench_here
    got = []
    for _ in range(3):  # three candidate configs; the second fails on rank 0
        try:
            got.append(at.rank0_do_bench(lambda: None, quantiles=(0.5, 0.2, 0.8)))
        except RuntimeError as e:
            got.append(str(e))
    out[rank] = (got, len(calls))
    dist.destroy_process_group()


def test_ranks_use_rank0_timings():
    port = _free_port()
    out = mp.Manager().dict()
    mp.spawn(_rank_main, args=(2, port, out), nprocs=2, join=True)
    (got0, calls0), (got1, calls1) = out[0], out[1]
    assert got0 == [[1.0, 0.0, 0.0], "out of resources (simulated)", [3.0, 0.0, 0.0]]
    assert got1 == [[1.0, 0.0, 0.0], [float("inf")] * 3, [3.0, 0.0, 0.0]]  # rank 0's numbers, not 11, 12, 13
    assert calls0 == 3 and calls1 == 0  # rank 1 never benchmarks
