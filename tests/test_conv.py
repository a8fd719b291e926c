"""fastvdm.ops.conv3d: every backend (reference = F.conv3d; cpu = oneDNN forward and backward on CPU float32)
against F.conv3d in float64 on fresh random inputs: outputs, the three gradients, the gradient of a gradient
(an R1-style penalty), odd shapes, strides, dilation; dispatch rules; the Conv3d module on top of the op."""

import pytest
import torch
import torch.nn.functional as F

import fastvdm.ops as ops
from fastvdm.models.conv import Conv3d
from oracle import TOLERANCE, all_backends, assert_rel_close, device_for

# (batch, in, out, kernel, stride, padding, dilation, input (D, H, W))
CASES = [
    (1, 5, 7, (3, 3, 3), 1, (1, 1, 1), 1, (5, 9, 11)),
    (2, 6, 4, (1, 3, 3), 1, (0, 1, 1), 1, (3, 8, 7)),
    (1, 4, 6, (3, 3, 3), (1, 2, 2), (1, 1, 1), 1, (4, 9, 10)),  # downsampling: PyTorch's backward path
    (3, 3, 5, (3, 1, 3), 1, (1, 0, 1), 1, (6, 5, 5)),
    (1, 3, 2, (3, 3, 3), 1, (2, 2, 2), (2, 2, 2), (5, 7, 6)),  # dilated
    (1, 32, 32, (3, 3, 3), 1, (1, 1, 1), 1, (8, 16, 16)),  # a tiny-preset shape (slow path in PyTorch)
]


def _inputs(case, device, bias=True):
    b, cin, cout, k, *_, size = case
    gen = torch.Generator().manual_seed(abs(hash(case)) % 2**31)
    x = torch.randn((b, cin) + size, generator=gen)
    w = torch.randn((cout, cin) + k, generator=gen) * 0.2
    bb = torch.randn(cout, generator=gen) if bias else None
    return [t.to(device) if t is not None else None for t in (x, w, bb)], gen


@pytest.mark.parametrize("backend", all_backends("conv3d"))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv3d_matches_float64_reference(backend, case):
    device = device_for(backend)
    (x, w, b), gen = _inputs(case, device)
    stride, pad, dil = case[4:7]
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
    with ops.use_backend(backend):
        y = ops.conv3d(*leaves, stride, pad, dil)
    if backend == "cpu":
        assert "OneDNNConv3d" in type(y.grad_fn).__name__  # the oneDNN path ran, not a silent fallback
    l64 = [t.double().requires_grad_(True) for t in (x, w, b)]
    y64 = F.conv3d(*l64, stride, pad, dil)
    assert y.dtype == torch.float32
    assert_rel_close(y, y64, TOLERANCE[torch.float32])
    g = torch.randn(y.shape, generator=gen).to(device)
    grads = torch.autograd.grad(y, leaves, g)
    grads64 = torch.autograd.grad(y64, l64, g.double())
    for got, want, name in zip(grads, grads64, ("x", "weight", "bias")):
        assert_rel_close(got, want, TOLERANCE[torch.float32], f"d{name}")


@pytest.mark.parametrize("backend", all_backends("conv3d"))
def test_conv3d_without_bias_and_double_backward(backend):
    """d/dw of ||d(sum y^2)/dx||^2 (the shape of an R1 penalty through the discriminator's encoder)."""
    device = device_for(backend)
    case = (1, 3, 4, (3, 3, 3), 1, (1, 1, 1), 1, (4, 6, 6))
    (x, w, _), _ = _inputs(case, device, bias=False)

    def penalty(conv, x, w):
        x = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad((conv(x, w) ** 2).sum(), x, create_graph=True)
        return (gx ** 2).sum()

    w32 = w.clone().requires_grad_(True)
    with ops.use_backend(backend):
        (gw,) = torch.autograd.grad(penalty(lambda x, w: ops.conv3d(x, w, None, 1, 1), x, w32), w32)
    w64 = w.double().requires_grad_(True)
    (gw64,) = torch.autograd.grad(penalty(lambda x, w: F.conv3d(x, w, None, 1, 1), x.double(), w64), w64)
    assert_rel_close(gw, gw64, TOLERANCE[torch.float32], "d penalty / dw")


def test_auto_serves_cpu_float32_on_onednn_and_leaves_the_rest_to_the_reference():
    if "cpu" not in ops.available_backends("conv3d"):
        pytest.skip("no cpu backend (C++ extension) or no oneDNN here")
    x, w = torch.randn(1, 2, 3, 4, 4), torch.randn(3, 2, 3, 3, 3)
    if ops.backend_status("cpu") is None and torch.backends.mkldnn.is_available():
        assert ops.selected_backend("conv3d", x, w, None, (1,) * 3, (1,) * 3, (1,) * 3) == "cpu"
    y = ops.conv3d(x.double(), w.double(), None, 1, 1)
    assert "OneDNN" not in type(y.grad_fn or object()).__name__
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast must see F.conv3d to cast it
        assert ops.selected_backend("conv3d", x, w, None, (1,) * 3, (1,) * 3, (1,) * 3) == "reference"
    with pytest.raises(ops.BackendUnavailableError, match="float32"), ops.use_backend("cpu"):
        ops.conv3d(x.double(), w.double())


def test_conv3d_validates_its_arguments():
    x, w = torch.randn(1, 2, 3, 4, 4), torch.randn(3, 2, 3, 3, 3)
    with pytest.raises(ValueError, match="input channels"):
        ops.conv3d(x, torch.randn(3, 5, 3, 3, 3))
    with pytest.raises(ValueError, match="bias"):
        ops.conv3d(x, w, torch.randn(4))
    with pytest.raises(ValueError, match="stride"):
        ops.conv3d(x, w, None, stride=0)
    with pytest.raises(ValueError, match="padding"):
        ops.conv3d(x, w, None, padding=(1, 1))
    with pytest.raises(ValueError, match="conv3d needs"):
        ops.conv3d(x[0], w)


def test_conv3d_module_uses_the_op_and_keeps_nn_conv3d_state_dict():
    conv = Conv3d(2, 3, 3, padding=1)
    assert set(conv.state_dict()) == {"weight", "bias"}
    x = torch.randn(1, 2, 3, 4, 4)
    with ops.use_backend("reference"):
        y = conv(x)
    torch.testing.assert_close(y, F.conv3d(x, conv.weight, conv.bias, padding=1))
    if "cpu" in ops.available_backends("conv3d"):
        with ops.use_backend("cpu"):
            assert "OneDNN" in type(conv(x).grad_fn).__name__
    y64 = conv.double()(x.double())  # float64: the reference, F.conv3d
    torch.testing.assert_close(y64, F.conv3d(x.double(), conv.weight, conv.bias, padding=1))


def test_conv3d_module_leaves_cpu_autocast_to_pytorch():
    conv = Conv3d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16  # autocast saw the convolution
    torch.testing.assert_close(y.float(), F.conv3d(x, conv.weight, conv.bias, padding=1), rtol=3e-2, atol=3e-2)


def test_conv3d_compiles_through_the_facade():
    conv = Conv3d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 3, 4, 4)
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), F.conv3d(x, conv.weight, conv.bias, padding=1), rtol=1e-5, atol=1e-5)
