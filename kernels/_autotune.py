"""Autotuning policy of the Triton kernels: bucketed keys, one choice for all ranks.

- :func:`tune_bucket`: sequence lengths are rounded up to a power of two before they reach an autotune key, so a
  model tunes once per bucket (not once per U-Net level and resolution).
- :func:`autotune`: ``triton.autotune`` whose benchmark runs on rank 0 only when ``torch.distributed`` is
  initialized with more than one rank: rank 0 times each candidate config and broadcasts its timings, and every
  other rank uses them instead of timing its own. All ranks therefore pick the same config (timing noise can
  no longer make DDP ranks run different kernels, with different rounding) and the non-zero ranks spend no
  time benchmarking. Every rank reaches the same kernel launch with the same shapes in SPMD training, which is
  what the broadcast (one per candidate config, on the first launch of a key only) relies on.
"""

from __future__ import annotations

import triton


def tune_bucket(n: int) -> int:
    """n rounded up to a power of two (>= 16): the autotune key of a sequence length."""
    return max(16, triton.next_power_of_2(int(n)))


def _bench_here(kernel_call, quantiles=None):
    """Time ``kernel_call`` on this process's GPU with Triton's own default benchmarker."""
    from triton.runtime import driver

    return driver.active.get_benchmarker()(kernel_call, quantiles=quantiles)


def _distributed():
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def rank0_do_bench(kernel_call, quantiles=None, **_):
    """Triton ``do_bench`` replacement: rank 0's timings, broadcast to every rank (see the module doc).

    A config that fails on rank 0 (out of resources, compile error) re-raises there, where the autotuner
    turns it into an infinite time, and is reported as infinitely slow to the other ranks."""
    dist = _distributed()
    if dist is None:
        return _bench_here(kernel_call, quantiles=quantiles)
    box = [None]
    error = None
    if dist.get_rank() == 0:
        try:
            box[0] = _bench_here(kernel_call, quantiles=quantiles)
        except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks are told
            error, box[0] = e, "failed"
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0] == "failed":
        inf = float("inf")
        return [inf] * len(quantiles) if quantiles else inf
    return box[0]


def autotune(configs, key, **kwargs):
    """``triton.autotune(configs, key, **kwargs)`` with :func:`rank0_do_bench` as its benchmark."""
    return triton.autotune(configs, key, do_bench=rank0_do_bench, **kwargs)
