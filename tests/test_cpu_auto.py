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
def test_large_forward_only_attention_goes_to_sdpa():
    """Forward-only calls of >= 100 MFLOP over sequences of more than 64 tokens take PyTorch's SDPA; with gradients,
    small, or over short sequences (temporal), the kernel."""
    q = torch.randn(1, 4, 256, 8, 64)  # spatial: 537 MFLOP forward
    args = (q, q.clone(), q.clone(), "spatial", None)
    assert cpu_auto.attention_flops(q.shape, "spatial") == 4.0 * 32 * 256 * 256 * 64
    with torch.no_grad():
        assert ops.selected_backend("video_attention", *args) == "reference"  # the "torch" option
        assert ops.selected_backend("video_attention", *_attention_args()) == "cpu"  # small
    assert ops.selected_backend("video_attention", *args) == "reference"  # no input needs a gradient
    qg = q.clone().requires_grad_()
    assert ops.selected_backend("video_attention", qg, q, q, "spatial", None) == "cpu"
    with torch.no_grad():
        assert ops.selected_backend("video_attention", qg, q, q, "spatial", None) == "reference"
    # temporal / joint sequence counting: B*S*H sequences of T; B*H of T*S
    assert cpu_auto.attention_flops((2, 16, 512, 8, 64), "temporal") == 4.0 * 2 * 512 * 8 * 16 * 16 * 64
    # a large forward-only temporal call (537 MFLOP over sequences of 16 frames) stays on the kernel
    t = torch.randn(2, 16, 512, 8, 64)
    with torch.no_grad():
        assert ops.selected_backend("video_attention", t, t, t, "temporal", None) == "cpu"
    # the length bound: 65 tokens go to SDPA when large enough, 64 do not
    long_ = torch.randn(1, 64, 65, 8, 64)
    short = torch.randn(1, 64, 64, 8, 64)
    with torch.no_grad():
        assert ops.selected_backend("video_attention", long_, long_, long_, "spatial", None) == "reference"
        assert ops.selected_backend("video_attention", short, short, short, "spatial", None) == "cpu"
    assert cpu_auto.attention_flops((2, 3, 5, 4, 8), "joint") == 4.0 * 2 * 4 * 15 * 15 * 8
    # the result is the reference's (float64 check) on the chosen path
    with torch.no_grad():
        out = ops.video_attention(*args[:4])
    ref = reference.video_attention(q.double(), q.double(), q.double(), "spatial")
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
