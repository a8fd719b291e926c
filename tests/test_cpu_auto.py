"""The CPU auto rules (fastvdm/ops/cpu_auto.py): what auto runs on CPU tensors, the "torch" option, forcing."""

from __future__ import annotations

import pytest
import torch

import fastvdm.ops as ops
from fastvdm.ops import cpu_auto, reference

HAVE_CPU = "cpu" in ops.available_backends("video_attention")


def _attention_args(dtype=torch.float32):
    q = torch.randn(1, 2, 9, 2, 16, dtype=dtype)
    return (q, q.clone(), q.clone(), "spatial", None)


@pytest.mark.skipif(not HAVE_CPU, reason="the cpu extension is not built")
def test_auto_follows_the_rules_on_cpu():
    assert ops.selected_backend("video_attention", *_attention_args()) == "cpu"
    x = torch.randn(2, 8, 3, 4, 4)
    assert ops.selected_backend("group_norm", x, 4, None, None, 1e-5, None, None, "silu") == "cpu"
    # rows of fewer than 32 values: PyTorch's own GroupNorm (the "torch" option: the reference called directly)
    short = ops.selected_backend("group_norm", torch.randn(2, 8, 2, 2, 2), 4, None, None, 1e-5, None, None, "silu")
    assert short != "cpu"
    # no rule for fp64 (the kernels compute in fp32): the priorities decide, i.e. the reference
    assert ops.selected_backend("video_attention", *_attention_args(torch.float64)) == "reference"


@pytest.mark.skipif(not HAVE_CPU, reason="the cpu extension is not built")
def test_large_attention_stays_on_the_kernel():
    """Forward-only and training calls, spatial and temporal, large and small: the kernel (session 7 measured it
    ahead of or level with SDPA flash and inductor on every benchmarked shape)."""
    spatial = torch.randn(1, 4, 256, 8, 64)  # 537 MFLOP forward
    temporal = torch.randn(2, 16, 512, 8, 64)  # 537 MFLOP forward, sequences of 16 frames
    for x, axis in ((spatial, "spatial"), (temporal, "temporal")):
        with torch.no_grad():
            assert ops.selected_backend("video_attention", x, x, x, axis, None) == "cpu"
        xg = x.clone().requires_grad_()
        assert ops.selected_backend("video_attention", xg, x, x, axis, None) == "cpu"
    # the result is the reference's (float64 check) on the chosen path
    with torch.no_grad():
        out = ops.video_attention(spatial, spatial, spatial, "spatial")
    ref = reference.video_attention(spatial.double(), spatial.double(), spatial.double(), "spatial")
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not HAVE_CPU, reason="the cpu extension is not built")
def test_forcing_bypasses_the_rules(monkeypatch):
    monkeypatch.setitem(cpu_auto._RULES, "video_attention", lambda *a: "torch")
    with ops.use_backend("cpu"):
        assert ops.selected_backend("video_attention", *_attention_args()) == "cpu"


def test_torch_option_is_the_reference_definition_with_autograd(monkeypatch):
    monkeypatch.setitem(cpu_auto._RULES, "video_attention", lambda *a: "torch")
    monkeypatch.setattr(cpu_auto, "_TORCH", {})
    q, k, v, axis, scale = _attention_args()
    q.requires_grad_()
    out = ops.video_attention(q, k, v, axis)
    assert cpu_auto._TORCH["video_attention"].fn is reference.video_attention  # it was chosen
    (dq,) = torch.autograd.grad(out.sum(), q)
    q64 = q.detach().double().requires_grad_()
    ref = reference.video_attention(q64, k.double(), v.double(), axis)
    (dq64,) = torch.autograd.grad(ref.sum(), q64)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dq.double(), dq64, rtol=1e-4, atol=1e-5)


def test_a_rule_naming_an_unavailable_backend_falls_back(monkeypatch):
    monkeypatch.setitem(cpu_auto._RULES, "video_attention", lambda *a: "cuda")
    assert ops.selected_backend("video_attention", *_attention_args()) in ("cpu", "reference")
