"""fastvdm.integrations.diffusers on tiny random-weight U-Nets of the four supported diffusers classes.

- patched vs stock: output and parameter gradients of the patched fp32 model against the stock model run in
  float64 (the oracle), on every available backend (DESIGN.md tolerances: 1e-4 relative for the output and for
  the whole gradient; 1e-3 per parameter tensor, because the stock fp32 model itself is 1.3e-4 away from
  float64 on its smallest gradients); a spy checks that fastvdm's ops really ran;
- remove_fastvdm restores the stock model bit for bit (outputs and gradients);
- torch.compile of a patched model: no graph break inside fastvdm (torch._dynamo.explain), and the compiled
  model matches eager;
- convergence (Liger-Kernel style): 25 Adam steps with and without the patch give the same loss curve;
- errors: unknown model types, double patching, removing twice.
Triton runs under the interpreter here, where each kernel program costs milliseconds: its cases use the
smallest clips and are marked slow.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("diffusers")

import fastvdm.ops as ops  # noqa: E402
from diffusers_models import MODEL_NAMES, build, inputs, to_double  # noqa: E402
from fastvdm.integrations.diffusers import (  # noqa: E402
    FastvdmAttnProcessor,
    SingleKeyCrossAttnProcessor,
    UnsupportedModelError,
    apply_fastvdm,
    is_patched,
    remove_fastvdm,
)
from oracle import all_backends, rel_error  # noqa: E402

OUT_TOL = 1e-4
GRAD_TOL = 1e-4
PER_TENSOR_TOL = 1e-3


def _backend_params():
    params = []
    backends = set(all_backends("group_norm")) & set(all_backends("video_attention"))
    for backend in ("reference", "cpu", "triton"):
        if backend not in backends:
            continue
        for name in MODEL_NAMES:
            # SVD under the Triton interpreter takes ~20 min on 2 loaded cores: `-m slow` only
            marks = (pytest.mark.slow,) if (backend, name) == ("triton", "svd") else ()
            params.append(pytest.param(name, backend, id=f"{name}-{backend}", marks=marks))
    return params


def _shape(name: str, backend: str) -> dict:
    """Clip and group settings: the interpreter gets the smallest clip and few groups where configurable (SVD's
    ResNet blocks always have 32 groups)."""
    if backend == "triton" and not torch.cuda.is_available():
        model = dict(channels=(32, 32)) if name == "svd" else dict(channels=(16, 32), groups=8)
        return dict(model=model, clip=dict(batch=1, frames=2, size=4))
    return dict(model={}, clip={})


def _forward_backward(model, inp):
    """Output and {name: gradient} of sum(y * r) for a fixed random r."""
    model.zero_grad(set_to_none=True)
    y = model(**inp).sample
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(y.dtype)
    (y * r).sum().backward()
    grads = {n.removeprefix("_orig_mod."): p.grad.detach().clone()  # torch.compile's wrapper prefixes names
             for n, p in model.named_parameters() if p.grad is not None}
    return y.detach(), grads


_ORACLE: dict = {}


def _oracle(name: str, shape: dict):
    """The stock model in float64: output and gradients (cached per model and shape)."""
    key = (name, repr(shape))
    if key not in _ORACLE:
        model = build(name, dtype=torch.float64, **shape["model"])
        _ORACLE[key] = _forward_backward(model, to_double(inputs(name, **shape["clip"])))
    return _ORACLE[key]


class _Spy:
    """Counts the calls of fastvdm.ops.group_norm / video_attention (monkeypatched on the ops module)."""

    def __init__(self, monkeypatch):
        self.calls = {"group_norm": 0, "video_attention": 0}
        for op in self.calls:
            real = getattr(ops, op)

            def counted(*args, _real=real, _op=op, **kwargs):
                self.calls[_op] += 1
                return _real(*args, **kwargs)

            monkeypatch.setattr(ops, op, counted)


def _assert_grads_close(grads, grads_ref, what):
    assert set(grads) == set(grads_ref), f"{what}: parameters without a gradient: {set(grads_ref) ^ set(grads)}"
    names = sorted(grads_ref)
    flat = torch.cat([grads[n].double().flatten() for n in names])
    flat_ref = torch.cat([grads_ref[n].double().flatten() for n in names])
    err = rel_error(flat, flat_ref)
    assert torch.isfinite(flat).all(), f"{what}: non-finite gradients"
    assert err <= GRAD_TOL, f"{what}: all parameter gradients, relative error {err:.2e} > {GRAD_TOL:.0e}"
    # per tensor, relative to its own norm, floored at 1e-3 of an average tensor's (analytically zero gradients,
    # e.g. a conv bias feeding a 1-channel GroupNorm group, are pure rounding noise in both models)
    floor = 1e-3 * flat_ref.norm().item() / len(names) ** 0.5
    for n in names:
        diff = (grads[n].double() - grads_ref[n].double()).norm().item()
        err = diff / max(grads_ref[n].double().norm().item(), floor)
        assert err <= PER_TENSOR_TOL, f"{what}: d{n} relative error {err:.2e} > {PER_TENSOR_TOL:.0e}"


@pytest.mark.parametrize("name,backend", _backend_params())
def test_patched_matches_stock(name, backend, monkeypatch):
    shape = _shape(name, backend)
    y_ref, grads_ref = _oracle(name, shape)
    model = build(name, **shape["model"])
    inp = inputs(name, **shape["clip"])
    report = apply_fastvdm(model)
    assert is_patched(model)
    spy = _Spy(monkeypatch)
    with ops.use_backend(backend):
        y, grads = _forward_backward(model, inp)
    n_norms = sum(isinstance(m, nn.GroupNorm) for m in model.modules())
    n_self = sum(isinstance(getattr(m, "processor", None), FastvdmAttnProcessor) for m in model.modules())
    assert n_self > 0 and report.count("self-attention") == n_self
    # one group_norm call per GroupNorm module (some are called more than once), attention per processor
    assert spy.calls["group_norm"] >= n_norms, spy.calls
    assert spy.calls["video_attention"] >= n_self, spy.calls
    err = rel_error(y, y_ref)
    assert torch.isfinite(y).all() and err <= OUT_TOL, f"{name} on {backend}: output relative error {err:.2e}"
    _assert_grads_close(grads, grads_ref, f"{name} on {backend}")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_remove_restores_stock_bit_for_bit(name):
    model = build(name)
    inp = inputs(name)
    processors = {n: m.processor for n, m in model.named_modules() if hasattr(m, "set_processor")}
    y0, g0 = _forward_backward(model, inp)
    apply_fastvdm(model)
    y1, _ = _forward_backward(model, inp)
    assert not torch.equal(y0, y1)  # the patch is live: different rounding
    remove_fastvdm(model)
    assert not is_patched(model)
    y2, g2 = _forward_backward(model, inp)
    assert torch.equal(y0, y2)
    assert set(g0) == set(g2) and all(torch.equal(g0[n], g2[n]) for n in g0)
    for n, m in model.named_modules():
        assert "forward" not in m.__dict__, f"{n} still has an instance forward"
        if n in processors:
            assert m.processor is processors[n]


def test_report_lists_patched_and_left_modules(capsys):
    model = build("svd")
    report = apply_fastvdm(model, verbose=True)
    printed = capsys.readouterr().out
    assert "UNetSpatioTemporalConditionModel" in printed and "cross-attention" in printed
    n_resnets = sum(type(m).__name__ == "ResnetBlock2D" for m in model.modules())
    assert report.count("ResnetBlock2D") == n_resnets > 0
    assert report.count("TemporalResnetBlock") > 0
    # SVD: every cross-attention attends to one image embedding (the single-key processor)
    cross = [path for path, why in report.patched if why.startswith("cross-attention to one conditioning token")]
    n_cross = sum(isinstance(getattr(m, "processor", None), SingleKeyCrossAttnProcessor) for m in model.modules())
    assert cross and all(path.endswith("attn2") for path in cross) and len(cross) == n_cross
    # text-conditioned U-Nets: cross-attention stays on diffusers' processor
    model = build("unet3d")
    report = apply_fastvdm(model)
    left = [path for path, why in report.left if why.startswith("cross-attention")]
    assert left and all(path.endswith("attn2") for path in left)
    assert not any(why.startswith("cross-attention") for _, why in report.patched)
    assert not any(isinstance(getattr(m, "processor", None), SingleKeyCrossAttnProcessor) for m in model.modules())


def test_single_key_cross_attention_is_exact_and_falls_back():
    """SingleKeyCrossAttnProcessor against diffusers' processor in float64: output and the gradients of every
    parameter and input (the queries' and the q/k projections' exactly zero); calls it does not cover (two
    conditioning tokens, a mask, dropout in training) run diffusers' processor unchanged."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8, dropout=0.1).double().eval()
    stock = attn.processor
    x, ctx = torch.randn(3, 5, 16, dtype=torch.float64), torch.randn(3, 1, 12, dtype=torch.float64)
    r = torch.randn(3, 5, 16, dtype=torch.float64)

    def run():
        attn.zero_grad(set_to_none=True)
        xs, cs = x.clone().requires_grad_(), ctx.clone().requires_grad_()
        y = attn(xs, encoder_hidden_states=cs)
        (y * r).sum().backward()
        return y.detach(), [xs.grad, cs.grad] + [p.grad for p in attn.parameters()]

    y_ref, g_ref = run()
    attn.set_processor(SingleKeyCrossAttnProcessor(stock))
    y, g = run()
    assert rel_error(y, y_ref) < 1e-12
    assert all(a is not None for a in g)
    for a, b in zip(g, g_ref):
        assert (a - b).norm() <= 1e-12 * (1 + b.norm())
    assert g[0].abs().max() == 0 and attn.to_q.weight.grad.abs().max() == 0  # the queries do not contribute
    # not covered: the stock processor, bit for bit
    ctx2, mask = torch.randn(3, 2, 12, dtype=torch.float64), torch.zeros(3, 1, 1, dtype=torch.float64)
    for kwargs in (dict(encoder_hidden_states=ctx2), dict(encoder_hidden_states=ctx, attention_mask=mask)):
        want = stock(attn, x, **kwargs)
        assert torch.equal(attn(x, **kwargs), want)
    attn.train()  # dropout 0.1 active: per-token masks, so the stock path
    torch.manual_seed(1)
    want = stock(attn, x, ctx)
    torch.manual_seed(1)
    assert torch.equal(attn(x, encoder_hidden_states=ctx), want)


def test_options_patch_only_what_is_asked():
    model = build("unet3d")
    report = apply_fastvdm(model, group_norm=False)
    assert report.count("self-attention") > 0 and report.count("ResnetBlock2D") == 0
    assert not any("forward" in m.__dict__ for m in model.modules())
    remove_fastvdm(model)
    report = apply_fastvdm(model, attention=False)
    assert report.count("self-attention") == 0 and report.count("TemporalConvLayer") > 0
    assert not any(isinstance(getattr(m, "processor", None), FastvdmAttnProcessor) for m in model.modules())


def test_unknown_models_and_misuse_raise_clear_errors():
    import diffusers

    with pytest.raises(UnsupportedModelError, match="supported diffusers video U-Nets"):
        apply_fastvdm(nn.Sequential(nn.GroupNorm(2, 4), nn.SiLU()))
    image_unet = diffusers.UNet2DModel(sample_size=8, block_out_channels=(32, 32), layers_per_block=1,
                                       down_block_types=("DownBlock2D", "DownBlock2D"),
                                       up_block_types=("UpBlock2D", "UpBlock2D"))
    with pytest.raises(UnsupportedModelError, match="UNet2DModel"):
        apply_fastvdm(image_unet)
    assert not any("forward" in m.__dict__ for m in image_unet.modules())  # nothing half-patched
    model = build("motion")
    with pytest.raises(ValueError, match="not patched"):
        remove_fastvdm(model)
    apply_fastvdm(model)
    with pytest.raises(ValueError, match="already patched"):
        apply_fastvdm(model)


def test_processor_falls_back_for_calls_it_does_not_cover():
    """A patched self-attention module called with encoder states or a mask runs diffusers' processor."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    stock = attn.processor
    x, ctx = torch.randn(3, 5, 16), torch.randn(3, 4, 16)
    y_self, y_ctx = attn(x), attn(x, encoder_hidden_states=ctx)
    attn.set_processor(FastvdmAttnProcessor("spatial", stock))
    with ops.use_backend("reference"):
        assert rel_error(attn(x), y_self) < 1e-5
        assert torch.equal(attn(x, encoder_hidden_states=ctx), y_ctx)  # the stock processor, unchanged


def _break_frames(explanation):
    frames = []
    for reason in explanation.break_reasons:
        for frame in getattr(reason, "user_stack", []) or []:
            frames.append((frame.filename, reason.reason))
    return frames


@pytest.mark.parametrize("name", ["svd", "unet3d"])
def test_torch_compile_has_no_graph_break_in_fastvdm(name):
    import torch._dynamo

    model = build(name)
    inp = inputs(name, batch=1, frames=2, size=8)
    apply_fastvdm(model)
    torch._dynamo.reset()
    with ops.use_backend("cpu" if "cpu" in all_backends("group_norm") else "reference"):
        explanation = torch._dynamo.explain(model)(**inp)
        in_fastvdm = [(f, why) for f, why in _break_frames(explanation) if "fastvdm" in f]
        assert not in_fastvdm, f"graph breaks inside fastvdm: {in_fastvdm}"
        assert explanation.graph_count >= 1
        eager, eager_grads = _forward_backward(model, inp)
        compiled = torch.compile(model, backend="aot_eager")
        y, grads = _forward_backward(compiled, inp)
    torch._dynamo.reset()
    assert rel_error(y, eager) < 1e-5
    _assert_grads_close(grads, eager_grads, f"compiled {name}")


def _train(model, steps: int, seed: int = 0) -> list:
    """Adam on a fixed denoising-style regression batch; the loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    inp = inputs("svd", batch=2, frames=2, size=8, seed=seed)
    target = torch.randn(inp["sample"][:, :, :4].shape, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (model(**inp).sample - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_convergence_matches_stock():
    """Liger-Kernel style: the same training run with and without the patch gives the same loss curve and
    the same final weights (SVD-style U-Net, 25 Adam steps, the backend auto picks)."""
    steps = 25
    stock = build("svd")
    patched = build("svd")
    apply_fastvdm(patched)
    losses_stock = _train(stock, steps)
    losses_patched = _train(patched, steps)
    assert losses_stock[-1] < 0.7 * losses_stock[0], "the run must actually train"
    for i, (a, b) in enumerate(zip(losses_stock, losses_patched)):
        assert abs(a - b) <= 1e-4 * abs(a) + 1e-7, f"step {i}: loss {b} patched vs {a} stock"
    remove_fastvdm(patched)
    p_stock = torch.cat([p.detach().flatten() for p in stock.parameters()])
    p_patched = torch.cat([p.detach().flatten() for p in patched.parameters()])
    # 1e-3, not 1e-4: Adam turns the rounding noise of analytically-zero gradients (biases feeding 1-channel
    # GroupNorm groups) into full-size steps of random sign, in both runs alike
    assert rel_error(p_patched, p_stock) < 1e-3


def test_svd_temporal_blocks_keep_the_frames_major_layout(monkeypatch):
    """Patched SVD: the temporal self-attention reads (B, T, S, heads, D) views of the frames-major tokens (the
    stock block's (B * S, T, C) permute copy would show up as S = 1), and the output matches the float64 stock
    model (test_patched_matches_stock checks the gradients)."""
    calls = []
    real = ops.video_attention

    def spy(q, k, v, axis, *args, **kwargs):
        calls.append((tuple(q.shape), axis))
        return real(q, k, v, axis, *args, **kwargs)

    model = build("svd")
    inp = inputs("svd")
    report = apply_fastvdm(model)
    assert report.count("TemporalBasicTransformerBlock") > 0
    monkeypatch.setattr(ops, "video_attention", spy)
    with torch.no_grad():
        y = model(**inp).sample
    temporal = [shape for shape, axis in calls if axis == "temporal"]
    assert temporal and all(shape[2] > 1 for shape in temporal), temporal
    y_ref, _ = _oracle("svd", _shape("svd", "reference"))
    assert rel_error(y, y_ref) <= OUT_TOL
