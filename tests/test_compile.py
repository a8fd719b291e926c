"""torch.compile(fullgraph=True) of the VideoUNet forward and backward and of whole sampling steps, on the CPU
backends: no graph break anywhere (a break is an error under fullgraph=True), and the compiled results equal
eager. The backend is "aot_eager" (Dynamo's full trace plus AOTAutograd's joint forward/backward graph, without
Inductor's C++ code generation, which would only add minutes of compiling on this machine); on a GPU the same
graphs go to Inductor and CUDA graphs. Triton ops compile only on a GPU (DESIGN.md), see test_attention.py."""

import pytest
import torch

from fastvdm.diffusion import VSchedule, few_step, sample_ddim
from fastvdm.models import VideoUNet, VideoUNetConfig

SMALL = dict(channels=(16, 32), num_res_blocks=1, attention_levels=(1,), head_dim=8, groups=4)
B, T, H = 2, 4, 16


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _inputs():
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    is_input = torch.zeros(B, T, dtype=torch.bool)
    is_input[:, 0] = True
    cond = {"cond_rgb": r(B, 3, T, H, H), "cond_mask": (r(B, 1, T, H, H) > 0).float(), "plucker": r(B, 6, T, H, H),
            "is_input": is_input, "input_frames": r(B, 3, T, H, H)}
    return r(B, 3, T, H, H), torch.tensor([999.0, 3.5]), cond


def _model(denoiser="v"):
    from fastvdm.diffusion.denoisers import wrap

    torch.manual_seed(0)
    m = wrap(VideoUNet(VideoUNetConfig(**SMALL)), {"kind": denoiser})
    with torch.no_grad():  # zero-initialized output layers would make every output (and most gradients) 0
        for p in m.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.normal_(0, 0.1)
    return m


@pytest.mark.parametrize("denoiser", ["posterior"])  # the plain network: the explain test
def test_unet_forward_and_backward_compile_to_one_graph(denoiser):
    m = _model(denoiser)
    x, t, cond = _inputs()

    def loss_and_grads(fn):
        xx = x.clone().requires_grad_(True)
        out = fn(xx, t, cond)
        out.square().mean().backward()
        grads = [xx.grad] + [p.grad.clone() for p in m.parameters()]
        m.zero_grad(set_to_none=True)
        return out.detach(), grads

    eager_out, eager_grads = loss_and_grads(m)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    comp_out, comp_grads = loss_and_grads(compiled)
    torch.testing.assert_close(comp_out, eager_out, rtol=1e-4, atol=1e-5)
    assert eager_out.abs().max() > 1e-3
    for a, b in zip(comp_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_whole_sampling_steps_compile_to_one_graph():
    m = _model("posterior").eval()
    x, _, cond = _inputs()
    sch = VSchedule()
    seeds = torch.tensor([5, 2**40 + 3])  # generators are host objects: a compiled step takes per-sample seeds

    def student_step(x, seeds):
        return few_step(m, x, 999, 749, seeds, cond, sch)

    def teacher_steps(x):
        return sample_ddim(m, x, [999, 666, 333], None, cond, sch)

    with torch.no_grad():
        torch.testing.assert_close(torch.compile(student_step, fullgraph=True, backend="aot_eager")(x, seeds),
                                   student_step(x, seeds), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.compile(teacher_steps, fullgraph=True, backend="aot_eager")(x),
                                   teacher_steps(x), rtol=1e-4, atol=1e-5)


def test_explain_reports_no_break():
    """The same, as Dynamo reports it (41 graphs / 40 breaks before: schedule .item()-style checks and
    torch.backends.mkldnn.is_available in the convolution)."""
    m = _model()
    x, t, cond = _inputs()
    report = torch._dynamo.explain(m)(x, t, cond)
    assert (report.graph_count, report.graph_break_count) == (1, 0), [b.reason for b in report.break_reasons]
