"""The reference ops (the oracles) against independent formulations, and their torch.library registration.

video_attention's reference is checked against an einsum formulation in tests/test_attention.py.
"""

import pytest
import torch

import fastvdm.ops as ops
from fastvdm.ops import reference


def _manual_group_norm(x, G, weight, bias, eps, scale, shift, silu):
    """Group statistics written out by hand in float64 (no F.group_norm)."""
    B, C = x.shape[:2]
    xg = x.reshape(B, G, -1)
    mean = xg.mean(-1, keepdim=True)
    var = ((xg - mean) ** 2).mean(-1, keepdim=True)
    y = ((xg - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    bc = (B, C) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.reshape((1, C) + (1,) * (x.dim() - 2))
    if bias is not None:
        y = y + bias.reshape((1, C) + (1,) * (x.dim() - 2))
    if scale is not None:
        y = y * (1 + scale.reshape(bc))
    if shift is not None:
        y = y + shift.reshape(bc)
    return y * torch.sigmoid(y) if silu else y


@pytest.mark.parametrize("shape, G", [((2, 96, 3, 5, 7), 32), ((1, 8, 1, 1, 1), 4), ((3, 12, 9, 11), 3)])
@pytest.mark.parametrize("affine, modulate, silu", [(True, True, True), (False, False, False), (True, False, True)])
def test_group_norm_reference_matches_manual(shape, G, affine, modulate, silu):
    x = torch.randn(shape, dtype=torch.float64) * 3 + 0.5
    B, C = shape[:2]
    w, b = (torch.randn(C, dtype=torch.float64), torch.randn(C, dtype=torch.float64)) if affine else (None, None)
    s, h = (torch.randn(B, C, dtype=torch.float64), torch.randn(B, C, dtype=torch.float64)) if modulate else (None, None)
    act = "silu" if silu else None
    out = reference.group_norm(x, G, w, b, 1e-5, s, h, act)
    expected = _manual_group_norm(x, G, w, b, 1e-5, s, h, silu)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_group_norm_reference_keeps_dtype_and_uses_fp32_statistics():
    x = (torch.randn(2, 8, 4, 4) * 50 + 1000).bfloat16()  # large mean: bf16 statistics would be badly off
    out = reference.group_norm(x, 2)
    assert out.dtype == torch.bfloat16
    expected = _manual_group_norm(x.double(), 2, None, None, 1e-5, None, None, False)
    assert (out.double() - expected).abs().max() < 0.02


def test_registered_group_norm_gradients_match_autograd_of_the_definition():
    x = torch.randn(2, 12, 3, 4, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(12, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    mods = [torch.randn(2, 12, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    g_out = torch.randn(2, 12, 3, 4, dtype=torch.float64)
    inputs = [x, *params, *mods]
    with ops.use_backend("reference"):
        y = ops.group_norm(x, 3, params[0], params[1], 1e-5, mods[0], mods[1], "silu")
    got = torch.autograd.grad(y, inputs, g_out)
    y2 = _manual_group_norm(x, 3, params[0], params[1], 1e-5, mods[0], mods[1], True)
    expected = torch.autograd.grad(y2, inputs, g_out)
    for name, a, e in zip(["x", "weight", "bias", "scale", "shift"], got, expected):
        torch.testing.assert_close(a, e, rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_denoising_loss_reference_matches_explicit_formula(target):
    B = 3
    pred, x0, noise = (torch.randn(B, 2, 5, 4, dtype=torch.float64, requires_grad=(i == 0)) for i in range(3))
    t = torch.rand(B, dtype=torch.float64) * torch.pi / 2
    alpha, sigma, weight = torch.cos(t), torch.sin(t), torch.rand(B, dtype=torch.float64) + 0.5
    with ops.use_backend("reference"):
        loss = ops.denoising_loss(pred, x0, noise, alpha, sigma, weight, target)
    (grad,) = torch.autograd.grad(loss, pred)
    tgt = {"eps": noise, "x0": x0, "v": alpha.view(B, 1, 1, 1) * noise - sigma.view(B, 1, 1, 1) * x0}[target]
    p = pred.detach().clone().requires_grad_()
    expected = sum(weight[b] * ((p[b] - tgt[b]) ** 2).sum() for b in range(B)) / p.numel()
    (expected_grad,) = torch.autograd.grad(expected, p)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-15)


def test_dmd_loss_reference_value_and_gradient():
    B = 2
    x = torch.randn(B, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    real, fake = torch.randn(B, 3, 4, 5, dtype=torch.float64), torch.randn(B, 3, 4, 5, dtype=torch.float64)
    weight = torch.rand(B, dtype=torch.float64)
    with ops.use_backend("reference"):
        loss = ops.dmd_loss(x, real, fake, weight)
    (grad,) = torch.autograd.grad(loss, x)
    g = torch.stack([weight[b] * (fake[b] - real[b]) / (x[b] - real[b]).abs().mean() for b in range(B)]).detach()
    # The surrogate's value is 0.5 * mean(g^2) and, written out with autograd, its gradient is g / numel.
    xs = x.detach().clone().requires_grad_()
    surrogate = 0.5 * ((xs - (xs - g).detach()) ** 2).mean()
    (surrogate_grad,) = torch.autograd.grad(surrogate, xs)
    torch.testing.assert_close(loss, 0.5 * (g**2).mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, surrogate_grad, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(grad, g / x.numel(), rtol=1e-12, atol=0)


def test_dmd_loss_reference_clamps_a_zero_normalizer():
    x = torch.randn(2, 3, 4, requires_grad=True)
    real = x.detach().clone()
    real[1] += 0.3  # sample 0: x == x0_real, sample 1: a normal one
    fake = torch.randn(2, 3, 4)
    with ops.use_backend("reference"):
        loss = ops.dmd_loss(x, real, fake)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    expected0 = (fake[0] - real[0]) / reference.DMD_NORM_EPS / x.numel()
    torch.testing.assert_close(grad[0], expected0, rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_reference_ops_are_registered_custom_ops_that_compile(backend):
    """The whole facade (validation + dispatch) traces into one graph: no graph break at the dispatcher."""
    for op in ops.OPS:  # conv3d's reference is F.conv3d itself (an aten op autocast and compile already know)
        assert op == "conv3d" or hasattr(torch.ops.fastvdm, f"{op}_reference")
    x = torch.randn(2, 8, 3, 4, requires_grad=True)
    scale = torch.randn(2, 8)

    def f(x, scale):
        return ops.group_norm(x, 4, scale=scale, activation="silu").square().mean()

    with ops.use_backend(backend):
        eager = f(x, scale)
        (g_eager,) = torch.autograd.grad(eager, x)
        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)(x, scale)
        (g_comp,) = torch.autograd.grad(compiled, x)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(g_comp, g_eager)
