"""fastvdm.models.conv.Conv3d (oneDNN forward and backward on CPU float32) against torch's nn.Conv3d in float64:
outputs, the three gradients, the gradient of a gradient (an R1-style penalty), odd shapes, strides."""

import pytest
import torch

from fastvdm.models.conv import Conv3d, onednn_available

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN")

# (batch, in, out, kernel, stride, padding, input (D, H, W))
CASES = [
    (1, 5, 7, (3, 3, 3), 1, (1, 1, 1), (5, 9, 11)),
    (2, 6, 4, (1, 3, 3), 1, (0, 1, 1), (3, 8, 7)),
    (1, 4, 6, (3, 3, 3), (1, 2, 2), (1, 1, 1), (4, 9, 10)),  # downsampling: PyTorch's backward path
    (3, 3, 5, (3, 1, 3), 1, (1, 0, 1), (6, 5, 5)),
    (1, 32, 32, (3, 3, 3), 1, (1, 1, 1), (8, 16, 16)),  # a tiny-preset shape (slow path in PyTorch)
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv3d_matches_float64_reference(case):
    b, cin, cout, k, stride, pad, size = case
    gen = torch.Generator().manual_seed(hash(case) % 2**31)
    conv = Conv3d(cin, cout, k, stride=stride, padding=pad)
    ref = torch.nn.Conv3d(cin, cout, k, stride=stride, padding=pad).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.2)
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
        ref.weight.copy_(conv.weight.double())
        ref.bias.copy_(conv.bias.double())
    x = torch.randn((b, cin) + size, generator=gen).requires_grad_(True)
    y = conv(x)
    assert y.grad_fn is not None and "OneDNNConv3d" in type(y.grad_fn).__name__
    x64 = x.detach().double().requires_grad_(True)
    y64 = ref(x64)
    assert y.shape == y64.shape and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    g = torch.randn(y.shape, generator=gen)
    grads = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    grads64 = torch.autograd.grad(y64, (x64, ref.weight, ref.bias), g.double())
    for got, want, name in zip(grads, grads64, ("input", "weight", "bias")):
        scale = want.abs().max().item()
        err = (got.double() - want).abs().max().item() / scale
        assert err < 1e-5, f"d{name}: relative error {err:.2e}"


def test_conv3d_double_backward():
    """d/dw of ||d(sum y^2)/dx||^2 (the shape of an R1 penalty through the discriminator's encoder)."""
    gen = torch.Generator().manual_seed(3)
    conv = Conv3d(3, 4, 3, padding=1)
    ref = torch.nn.Conv3d(3, 4, 3, padding=1).double()
    with torch.no_grad():
        ref.weight.copy_(conv.weight.double())
        ref.bias.copy_(conv.bias.double())
    x = torch.randn(1, 3, 4, 6, 6, generator=gen)

    def penalty(module, inp):
        inp = inp.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad((module(inp) ** 2).sum(), inp, create_graph=True)
        return (gx ** 2).sum()

    (gw,) = torch.autograd.grad(penalty(conv, x), conv.weight)
    (gw64,) = torch.autograd.grad(penalty(ref, x.double()), ref.weight)
    assert (gw.double() - gw64).abs().max() / gw64.abs().max() < 1e-5


def test_conv3d_falls_back_for_other_dtypes_and_keeps_its_state_dict():
    conv = Conv3d(2, 3, 3, padding=1)
    assert set(conv.state_dict()) == {"weight", "bias"}
    x = torch.randn(1, 2, 3, 4, 4, dtype=torch.float64)
    y = conv.double()(x)
    assert "OneDNN" not in type(y.grad_fn).__name__  # float64: nn.Conv3d's own path
    torch.testing.assert_close(y, torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=1))


def test_conv3d_leaves_cpu_autocast_to_pytorch():
    conv = Conv3d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16  # autocast saw the convolution
    torch.testing.assert_close(y.float(), torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=1),
                               rtol=3e-2, atol=3e-2)
