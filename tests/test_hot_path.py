"""The GPU-first hot path, checked without a GPU where possible.

- No host synchronization in a forward, a backward or a sampling step: on the ``meta`` device every read of
  tensor data on the host (``.item()``, ``bool(t)``, ``.tolist()``, ``.cpu()`` values, data-dependent shapes)
  raises, so running the whole VideoUNet forward/backward and the samplers there proves the traced path never
  waits for the device. Where CUDA exists, ``torch.cuda.set_sync_debug_mode("error")`` checks the same for real.
- Noise is drawn on the target device from per-sample seeds and is the same for a seed whatever the batch (and,
  on a GPU, the same as on the CPU).
- bf16 autocast in the samplers and the pipeline: on for CUDA by default, a flag everywhere.
"""

import pytest
import torch

from fastvdm.diffusion import DDIMSampler, FewStepSampler, VSchedule
from fastvdm.diffusion import noise
from fastvdm.models import VideoUNet, VideoUNetConfig

SMALL = dict(channels=(16, 32), num_res_blocks=1, attention_levels=(1,), head_dim=8, groups=4)


def _cond(B, T, H, device):
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    is_input = torch.zeros(B, T, dtype=torch.bool)
    is_input[:, 0] = True
    return {"cond_rgb": r(B, 3, T, H, H), "cond_mask": (r(B, 1, T, H, H) > 0).float(), "plucker": r(B, 6, T, H, H),
            "is_input": is_input.to(device), "input_frames": r(B, 3, T, H, H)}


def test_meta_tensors_refuse_host_reads():
    """The premise of the meta-device checks: any host read of device data raises there."""
    t = torch.ones(3, device="meta")
    for read in (lambda: t.sum().item(), lambda: bool(t.all()), lambda: t.tolist(), lambda: t.cpu().numpy()):
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


@pytest.mark.parametrize("denoiser", ["v", "posterior"])
def test_unet_forward_and_backward_read_no_device_data(denoiser):
    from fastvdm.diffusion.denoisers import wrap

    m = wrap(VideoUNet(VideoUNetConfig(**SMALL)), {"kind": denoiser}).to("meta")
    B, T, H = 2, 4, 16
    x = torch.randn(B, 3, T, H, H, device="meta", requires_grad=True)
    t = torch.tensor([999.0, 3.5]).to("meta")
    out = m(x, t, _cond(B, T, H, "meta"))
    assert out.shape == x.shape and out.device.type == "meta"
    out.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_schedule_and_samplers_read_no_device_data():
    sch = VSchedule()
    t = torch.tensor([999.0, 10.25]).to("meta")
    x = torch.randn(2, 3, 4, 8, 8, device="meta")
    for y in (sch.alpha(t), sch.sigma(t), sch.snr(t), sch.add_noise(x, x, t), sch.v_to_x0(x, x, t),
              sch.x0_to_v(x, x, t)):
        assert y.device.type == "meta"
    m = VideoUNet(VideoUNetConfig(**SMALL)).to("meta")
    cond = _cond(2, 4, 16, "meta")
    g = torch.Generator().manual_seed(0)
    out = FewStepSampler(sch)(m, cond, (2, 3, 4, 16, 16), generator=g, device="meta")
    assert out.device.type == "meta"
    from fastvdm.models import drop_condition

    out = DDIMSampler(sch, num_steps=3, eta=0.5, guidance=2.0, uncond=drop_condition)(
        m, cond, (2, 3, 4, 16, 16), generator=g, device="meta")
    assert out.device.type == "meta"


def test_schedule_coefficients_live_on_the_device_of_t():
    sch = VSchedule()
    t = torch.tensor([0.0, 10.25, 998.5, 999.0], dtype=torch.float64)
    ab = sch.alpha_bar
    want = torch.stack([ab[0], 0.75 * ab[10] + 0.25 * ab[11], 0.5 * ab[998] + 0.5 * ab[999], ab[999]]).sqrt()
    torch.testing.assert_close(sch.alpha(t).double(), want, rtol=1e-6, atol=1e-7)
    assert sch.alpha(t).dtype == torch.float32
    with pytest.raises(ValueError, match="timesteps"):
        sch.sigma(torch.tensor([-0.5]))
    with pytest.raises(ValueError, match="timesteps"):
        sch.sigma(1000)


@pytest.mark.gpu
def test_no_host_sync_in_forward_backward_and_sampling_step_on_cuda():
    dev = torch.device("cuda")
    m = VideoUNet(VideoUNetConfig(**SMALL)).to(dev)
    cond = _cond(2, 4, 16, dev)
    x = torch.randn(2, 3, 4, 16, 16, device=dev, requires_grad=True)
    t = torch.tensor([999.0, 3.5], device=dev)
    sch = VSchedule()
    sampler = FewStepSampler(sch)
    m(x, t, cond)  # warm-up: one-time setup (the schedule table copy, kernel verification) may sync
    sampler.step(m, x.detach(), 999, cond, 749, generator=torch.Generator(dev).manual_seed(0))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = m(x, t, cond)
        out.square().mean().backward()
        with torch.no_grad():
            sampler.step(m, x.detach(), 999, cond, 749, generator=torch.Generator(dev).manual_seed(0))
            sch.add_noise(x, x, t)
    finally:
        torch.cuda.set_sync_debug_mode(0)


# ------------------------------------------------------------------------------------------------ noise
def test_noise_is_per_sample_and_standard_normal():
    seeds = torch.tensor([3, 2**40 + 7, 11, 2**62 + 1])
    z = noise.randn_from_seeds(seeds, (4, 3, 5, 7))
    assert torch.equal(z[1:2], noise.randn_from_seeds(seeds[1:2], (1, 3, 5, 7)))  # batch-independent
    assert torch.equal(z, noise.randn_from_seeds(seeds, (4, 3, 5, 7)))  # a pure function of the seeds
    big = noise.randn_from_seeds(torch.tensor([5, 6]), (2, 200_001))  # odd count: the last pair half used
    assert big.shape == (2, 200_001)
    assert abs(big.mean().item()) < 0.01 and abs(big.std().item() - 1) < 0.01
    assert abs(torch.corrcoef(big)[0, 1].item()) < 0.01  # samples independent
    assert abs(torch.corrcoef(torch.stack([big[0, :-1], big[0, 1:]]))[0, 1].item()) < 0.01  # neighbours too
    kurt = ((big - big.mean()) ** 4).mean() / big.var() ** 2
    assert abs(kurt.item() - 3) < 0.05  # Gaussian tails, not uniform-ish


def test_noise_from_generators():
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = noise.randn((3, 2, 4), g1)
    b = noise.randn((3, 2, 4), g2)
    assert torch.equal(a, b)
    assert not torch.equal(a, noise.randn((3, 2, 4), g1))  # the generator advances
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    c = noise.randn((2, 8), gens)
    d = noise.randn((1, 8), [torch.Generator().manual_seed(6)])
    assert torch.equal(c[1:], d)  # one generator per sample: sample 1 is seeded by 6 whatever the batch
    with pytest.raises(ValueError, match="one per sample"):
        noise.randn((3, 8), gens)


@pytest.mark.gpu
def test_noise_is_the_same_on_cpu_and_gpu():
    seeds = torch.tensor([1, 2**33 + 5, 77])
    cpu = noise.randn_from_seeds(seeds, (3, 4, 9, 17))
    gpu = noise.randn_from_seeds(seeds.cuda(), (3, 4, 9, 17))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    sampled = [FewStepSampler(VSchedule())(lambda x, t, c: 0.1 * x, {}, (2, 3, 2, 4, 4), device=d,
                                           generator=torch.Generator().manual_seed(0), autocast_bf16=False)
               for d in ("cpu", "cuda")]
    torch.testing.assert_close(sampled[1].cpu(), sampled[0], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ autocast
def _recording_model(seen):
    def model(x, t, cond):
        seen.append(torch.is_autocast_enabled(x.device.type))
        return torch.nn.functional.linear(x, torch.eye(x.shape[-1])) * 0.5  # bf16 under autocast
    return model


@pytest.mark.parametrize("sampler", [FewStepSampler(VSchedule()), DDIMSampler(VSchedule(), num_steps=3)])
def test_sampler_autocast_flag(sampler):
    seen = []
    out = sampler(_recording_model(seen), {}, (2, 3, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    assert seen and not any(seen) and out.dtype == torch.float32  # default: off on the CPU
    seen.clear()
    out = sampler(_recording_model(seen), {}, (2, 3, 2, 4, 4), generator=torch.Generator().manual_seed(0),
                  autocast_bf16=True)
    assert seen and all(seen) and out.dtype == torch.float32  # the network in bf16, the sample in fp32


def test_default_autocast_is_on_for_cuda_only():
    from fastvdm.diffusion.sampling import autocast, autocast_enabled

    assert autocast_enabled("cuda") and autocast_enabled("cuda:1") and not autocast_enabled("cpu")
    assert autocast_enabled("cpu", True) and not autocast_enabled("cuda", False)
    assert autocast("cpu", True).fast_dtype == torch.bfloat16 and not autocast("cpu")._enabled
    with autocast("meta"):  # a device without autocast: a plain context
        pass


def test_pipeline_passes_the_autocast_flag():
    from fastvdm.pipeline import NVSPipeline

    seen = []
    model = VideoUNet(VideoUNetConfig(**SMALL))
    inner = model.forward

    def forward(x, t, cond):
        seen.append(torch.is_autocast_enabled("cpu"))
        return inner(x, t, cond)

    model.forward = forward
    pipe = NVSPipeline(model, "student", frames=4, size=16)
    cond = _cond(1, 4, 16, "cpu")
    plain = pipe(cond, generator=torch.Generator().manual_seed(0), progress=False)
    assert not any(seen)
    bf16 = pipe(cond, generator=torch.Generator().manual_seed(0), progress=False, autocast_bf16=True)
    assert all(seen[4:]) and len(seen) == 8
    assert plain.dtype == bf16.dtype == torch.float32
    assert (plain - bf16).abs().max().item() < 0.1  # same noise, the network in bf16
