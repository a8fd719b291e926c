"""Distillation machinery on the real architecture (tiny VideoUNet): the discriminator's frozen encoder,
backward simulation on the sampler's timesteps, and one step of each stage."""

import copy

import pytest
import torch

from fastvdm.diffusion import FewStepSampler, VSchedule
from fastvdm.diffusion import noise as device_noise
from fastvdm.distill.gan_stage import GANConfig, GANStage
from fastvdm.distill.kl_stage import KLConfig, KLStage
from fastvdm.distill.simulate import backward_simulation, guided_x0
from fastvdm.models import VideoUNet, VideoUNetConfig, drop_condition
from fastvdm.models.discriminator import Discriminator, Head3D

B, T, H, W = 2, 4, 16, 16


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_unet() -> VideoUNet:
    cfg = VideoUNetConfig(channels=(8, 16), num_res_blocks=1, attention_levels=(1,), head_dim=8, groups=4,
                          temporal_kernel=1)
    model = VideoUNet(cfg)
    with torch.no_grad():  # the output conv starts at zero; give the model a non-trivial prediction
        model.conv_out.weight.normal_(0, 0.1)
    return model


def clip_cond(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(B, 3, T, H, W, generator=g) * 2 - 1
    is_input = torch.zeros(B, T, dtype=torch.bool)
    is_input[:, 0] = True
    cond = {"cond_rgb": torch.rand(B, 3, T, H, W, generator=g), "cond_mask": (torch.rand(B, 1, T, H, W, generator=g) > 0.5).float(),
            "plucker": torch.randn(B, 6, T, H, W, generator=g), "is_input": is_input, "input_frames": x0}
    return x0, cond


class Recorder(torch.nn.Module):
    """Wraps a v-model and records (t, grad enabled) of every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x_t, t, cond):
        self.calls.append((t.tolist(), torch.is_grad_enabled()))
        return self.model(x_t, t, cond)


def backward_through(disc, teacher, x0, cond) -> None:
    """Backpropagate the summed logits of ``disc`` on x0 (noise levels 10 and 700): one logit per clip, no gradient
    into the frozen teacher, a nonzero gradient into the clip (the generator's GAN loss reaches it)."""
    x_t = x0.clone().requires_grad_(True)
    logits = disc(x_t, torch.tensor([10.0, 700.0]), cond)
    assert logits.shape == (B,)
    logits.sum().backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert x_t.grad is not None and x_t.grad.abs().sum() > 0


def test_discriminator_gives_no_gradient_to_teacher():
    teacher = small_unet()
    before = copy.deepcopy(teacher.state_dict())
    disc = Discriminator(teacher, width=16, groups=4)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert {n for n, p in disc.named_parameters() if p.requires_grad} == {f"head.{n}" for n, _ in disc.head.named_parameters()}
    x0, cond = clip_cond()
    backward_through(disc, teacher, x0, cond)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.head.parameters())
    disc.train()
    assert not teacher.training
    # A full GAN step: the student and the head move, the teacher does not.
    student = copy.deepcopy(teacher).requires_grad_(True)
    stage = GANStage(student, disc, FewStepSampler(VSchedule()), GANConfig(lr_g=1e-3, lr_d=1e-3, disc_steps=1))
    head0 = copy.deepcopy(disc.head.state_dict())
    logs = stage.step(x0, cond)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, before[k]) for k, v in student.state_dict().items())
    assert any(not torch.equal(v, head0[k]) for k, v in disc.head.state_dict().items())
    assert set(disc.trainable_state_dict()) == {f"head.{k}" for k in disc.head.state_dict()}


def test_head3d_one_logit_per_clip():
    head = Head3D(16, width=8, depth=3, groups=4)
    for shape in [(3, 16, 4, 4, 4), (3, 16, 2, 1, 1), (3, 16, 1, 3, 5)]:
        assert head(torch.randn(shape)).shape == (3,)
    # Clips are judged independently.
    h = torch.randn(3, 16, 4, 4, 4)
    assert torch.allclose(head(h)[1:], head(h[1:]), atol=1e-5)


def test_multiscale_encode_returns_each_level_and_the_middle():
    model = small_unet()
    x0, cond = clip_cond()
    t = torch.tensor([10.0, 700.0])
    feats = model.encode(x0, t, cond, multiscale=True)
    assert [f.shape[1] for f in feats] == model.multiscale_channels == [8, 16, 16]
    assert [tuple(f.shape[2:]) for f in feats] == [(T, H, W), (T, H // 2, W // 2), (T, H // 2, W // 2)]
    assert torch.equal(feats[-1], model.encode(x0, t, cond))  # the last is the single-scale output


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_backward_simulation_uses_sampler_timesteps(k):
    sampler = FewStepSampler(VSchedule())
    model = Recorder(small_unet())
    x0, cond = clip_cond()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    x, t = backward_simulation(model, sampler, noise, cond, k, generator=torch.Generator().manual_seed(6))
    ts = [c[0][0] for c in model.calls]
    assert ts == [float(s) for s in sampler.timesteps[: k + 1]]
    assert all(len(set(c[0])) == 1 for c in model.calls)  # one timestep for the whole batch
    assert [c[1] for c in model.calls] == [False] * k + [True]  # gradient through the last step only
    assert t.tolist() == [float(sampler.timesteps[k])] * B and x.requires_grad
    assert torch.equal(x[:, :, 0], x0[:, :, 0])  # the clean input frame is pasted back, as the sampler does
    if k == len(sampler.timesteps) - 1:  # the full simulation is the sampler's own output (same random draws)
        ref = sampler(model, cond, x0.shape, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            x_T = device_noise.randn(x0.shape, torch.Generator().manual_seed(5))  # the sampler's x_999
            x_again, _ = backward_simulation(model, sampler, x_T, cond, k, generator=_continue(5, x0.shape))
        assert torch.allclose(x_again, ref, atol=1e-6)


def _continue(seed, shape):
    """A generator in the state the sampler's is in after drawing x_999 of ``shape``."""
    g = torch.Generator().manual_seed(seed)
    device_noise.randn(shape, g)
    return g


class Scale(torch.nn.Module):
    """A cheap v-model: v = w x_t."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x_t, t, cond):
        return self.w * x_t


def test_gan_stage_draws_every_k():
    sampler = FewStepSampler(VSchedule())
    model = Recorder(Scale())
    x0, cond = clip_cond()
    disc = Discriminator(small_unet(), width=16, groups=4)
    stage = GANStage(model, disc, sampler, GANConfig(disc_steps=0))
    ks = set()
    for _ in range(32):
        model.calls.clear()
        stage.generate(x0, cond)
        last_t = model.calls[-1][0][0]
        assert model.calls[-1][1] and not any(c[1] for c in model.calls[:-1])
        k = sampler.timesteps.index(int(last_t))
        assert len(model.calls) == k + 1
        ks.add(k)
    assert ks == {0, 1, 2, 3}


def test_guided_x0_is_linear_guidance():
    sch = VSchedule()
    model = small_unet()
    x0, cond = clip_cond()
    t = torch.tensor([300.0, 600.0])
    x_t = sch.add_noise(x0, torch.randn_like(x0), t)
    with torch.no_grad():
        c = sch.v_to_x0(x_t, model(x_t, t, cond), t)
        u = sch.v_to_x0(x_t, model(x_t, t, drop_condition(cond)), t)
        out = guided_x0(model, sch, x_t, t, cond, guidance=3.0)
    assert torch.allclose(out, u + 3.0 * (c - u), atol=1e-5)
    assert not torch.allclose(c, u)


@pytest.mark.parametrize("weighting,gan_weight,disc_steps", [("softened", 0.0, 0), ("plain", 0.5, 1)])
def test_kl_stage_step(weighting, gan_weight, disc_steps):
    teacher = small_unet()
    before = copy.deepcopy(teacher.state_dict())
    student = copy.deepcopy(teacher)
    fake = copy.deepcopy(teacher)
    disc = Discriminator(teacher, width=16, groups=4)
    x0, cond = clip_cond()
    cfg = KLConfig(weighting=weighting, lr_g=1e-3, lr_fake=1e-3, fake_steps=2, gan_weight=gan_weight,
                   disc_steps=disc_steps, guidance=2.0)
    stage = KLStage(student, teacher, fake, FewStepSampler(VSchedule()), disc, cfg)
    head0 = copy.deepcopy(disc.head.state_dict())
    logs = stage.step(x0, cond)
    assert ("kl_weight" in logs) == (weighting == "softened") and ("loss_g" in logs) == (gan_weight > 0)
    if weighting == "softened":
        assert 0 < logs["kl_weight"] < 1
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    for m in (student, fake):
        assert any(not torch.equal(v, before[k]) for k, v in m.state_dict().items())
    head_moved = any(not torch.equal(v, head0[k]) for k, v in disc.head.state_dict().items())
    assert head_moved == (disc_steps > 0)


class ConstantLogit(torch.nn.Module):
    """A discriminator that answers logit = c for every clip (records the noise levels it is asked at)."""

    def __init__(self, c):
        super().__init__()
        self.c, self.ts = c, []

    def forward(self, x_t, t, cond):
        self.ts.append(t.clone())
        return torch.full((x_t.shape[0],), self.c)


def test_softened_weight_scales_the_dmd_gradient():
    from toys import AffineV, GaussianV

    sch = VSchedule()
    sampler = FewStepSampler(sch, timesteps=(999,))
    grads = {}
    for weighting in ("plain", "softened"):
        torch.manual_seed(0)
        student = AffineV(sch, 0.2, 1.3)
        disc, teacher = ConstantLogit(1.5), Recorder(GaussianV(sch, 1.0, 0.5))
        stage = KLStage(student, teacher, GaussianV(sch, 0.3, 0.9), sampler, disc,
                        KLConfig(weighting=weighting, t_range=(100.0, 900.0)))
        x = student(torch.randn(8, 4), torch.full((8,), 999.0), None) * -1.0  # x0 = -v at t = 999
        loss, logs = stage.student_loss(x, None)
        grads[weighting] = torch.autograd.grad(loss, [student.m, student.c])
        if weighting == "softened":
            assert len(disc.ts) == 1 and ((disc.ts[0] >= 100) & (disc.ts[0] <= 900)).all()
            assert teacher.calls[0][0] == disc.ts[0].tolist()  # judged at the noisy input the scores see
            assert abs(logs["kl_weight"] - torch.sigmoid(torch.tensor(-1.5)).item()) < 1e-6
    w = torch.sigmoid(torch.tensor(-1.5))
    for gp, gs in zip(grads["plain"], grads["softened"]):
        assert gp.abs() > 0 and torch.allclose(gs, w * gp, rtol=1e-5)


DISTILL_SCRIPT = r'''
import os, sys
import torch
from fastvdm.distill import GANConfig, KLConfig, build_stage, stage_step_fn
from fastvdm.models import VideoUNet, VideoUNetConfig
from fastvdm.train import DatasetBatches, RunConfig, train

def clips(n=8, T=4, H=8):
    g = torch.Generator().manual_seed(11)
    items = []
    for i in range(n):
        is_input = torch.zeros(T, dtype=torch.bool)
        is_input[0] = True
        items.append({"frames": torch.rand(3, T, H, H, generator=g) * 2 - 1,
                      "cond_rgb": torch.rand(3, T, H, H, generator=g) * 2 - 1,
                      "cond_mask": (torch.rand(1, T, H, H, generator=g) > 0.5).float(),
                      "plucker": torch.randn(6, T, H, H, generator=g), "is_input": is_input, "scene_seed": i})
    return items

def teacher():
    torch.manual_seed(0)
    cfg = VideoUNetConfig(channels=(8, 16), num_res_blocks=1, attention_levels=(1,), head_dim=8, groups=4,
                          temporal_kernel=1)
    model = VideoUNet(cfg)
    with torch.no_grad():  # the output conv starts at zero; give the model a non-trivial prediction
        model.conv_out.weight.normal_(0, 0.1)
    return model

def main(out, steps, batch, parallel="ddp"):
    torch.set_num_threads(1)
    runs = {"gan": GANConfig(lr_g=1e-3, lr_d=1e-3, disc_steps=2),
            "kl": KLConfig(lr_g=1e-3, lr_fake=1e-3, lr_d=1e-3, fake_steps=2, disc_steps=1, gan_weight=0.5)}
    for kind, config in runs.items():
        if kind == "gan":
            stage, state = build_stage(kind, teacher(), config, head={"width": 8, "groups": 4})
        else:  # the head trained by this world's GAN run
            stage, state = build_stage(kind, teacher(), config, disc=os.path.join(out, "gan"))
        for name, opt in stage.optimizers.items():  # SGD: Adam's first steps are lr * sign(gradient), which turns
            params = opt.param_groups[0]["params"]   # fp rounding in a ~0 gradient into a jump of 2 lr
            stage.optimizers[name] = state.optimizers[name] = torch.optim.SGD(params, lr=0.1)
            state.optimizers[name].param_groups[0]["base_lr"] = 0.1
        run = RunConfig(out_dir=os.path.join(out, kind), steps=steps, seed=2, ckpt_every=steps, amp=False,
                        print_every=0, parallel=parallel)
        train(run, state, stage_step_fn(stage), DatasetBatches(clips(), batch, seed=4))
        if int(os.environ.get("RANK", "0")) == 0:
            with open(os.path.join(out, kind, "ddp.txt"), "w") as f:
                f.write(" ".join(sorted(f"{k}:{type(v).__name__}" for k, v in state.ddp.items())))
            with open(os.path.join(out, kind, "params.txt"), "w") as f:
                f.write(" ".join(sorted(f"{k}:{type(p).__name__}" for k, m in state.models.items()
                                        for p in list(m.parameters())[:1])))

if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
'''


@pytest.fixture(scope="module")
def distill_single(tmp_path_factory):
    """The distill script's 1-process run: (script path, run folder)."""
    import runpy

    root = tmp_path_factory.mktemp("distill")
    script = root / "distill_small.py"
    script.write_text(DISTILL_SCRIPT)
    n = torch.get_num_threads()
    runpy.run_path(str(script))["main"](str(root / "single"), 2, 4)
    torch.set_num_threads(n)
    return script, root / "single"


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_process_gloo_distill_steps_equal_one_process_with_the_summed_batch(distill_single, parallel, tmp_path):
    """GAN stage (two head updates a step) then KL stage (fake-score and head updates, GAN term): 2 steps of
    each under 2-process gloo DDP (or FSDP2) give the logs and weights of 1 process with the summed batch."""
    import json
    import os
    import runpy
    import subprocess
    import sys

    from fastvdm.train import latest_checkpoint, read_checkpoint

    script, single = distill_single
    ddp = tmp_path / parallel
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           str(ddp), "2", "4", parallel]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=400)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    names = {"gan": ["disc_head", "unet"], "kl": ["disc_head", "fake", "unet"]}  # the teacher is never wrapped
    init = runpy.run_path(str(script))["teacher"]().state_dict()
    for kind in ("gan", "kl"):
        wrapper, param = ("DistributedDataParallel", "Parameter") if parallel == "ddp" else ("", "DTensor")
        assert (ddp / kind / "ddp.txt").read_text() == " ".join(f"{n}:{wrapper}" for n in names[kind] if wrapper)
        assert (ddp / kind / "params.txt").read_text() == " ".join(f"{n}:{param}" for n in names[kind])
        assert (single / kind / "ddp.txt").read_text() == ""
        logs = [[json.loads(ln) for ln in open(out / kind / "log.jsonl")] for out in (single, ddp)]
        assert len(logs[0]) == len(logs[1]) == 2
        for a, b in zip(*logs):
            assert sorted(a) == sorted(b)
            for k in a:
                if k != "time":
                    assert b[k] == pytest.approx(a[k], rel=1e-4, abs=2e-6), (kind, b["step"], k)
        ts, td = (read_checkpoint(latest_checkpoint(str(out / kind)))[0] for out in (single, ddp))
        for k in ts:
            if not k.startswith("rng/"):
                torch.testing.assert_close(td[k], ts[k], rtol=1e-4, atol=1e-6, msg=f"{kind} {k}")
        moved = max((ts[f"model/unet/{k}"] - v).abs().max().item() for k, v in init.items())
        assert moved > 1e-4, kind  # the student did move (not a comparison of untouched weights)
