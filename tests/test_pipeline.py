"""The importable pipeline (load_student / load_teacher), model export, and the shipped weights."""

import os

import pytest
import torch

from fastvdm.models import VideoUNet, VideoUNetConfig, make_cond
from fastvdm.pipeline import NVSPipeline, load_student, load_teacher, shipped_models, weights_manifest
from fastvdm.train import CheckpointError, load_model, save_model

SMALL = dict(channels=(8, 16), num_res_blocks=1, attention_levels=(1,), head_dim=8, groups=4, temporal_kernel=1)


def _small_denoiser():
    from fastvdm.diffusion.denoisers import PosteriorDenoiser

    return PosteriorDenoiser(VideoUNet(VideoUNetConfig(**SMALL)), fill_smooth_iters=2)


def _clip_batch(n=2, frames=8, size=32, seed=0):
    from fastvdm.data.dataset import ClipDataset

    ds = ClipDataset("test", num_frames=frames, size=size, num_inputs=(2, 2))
    return torch.utils.data.default_collate([ds[i] for i in range(seed, seed + n)])


def _small_model_file(path, seed=0):
    torch.manual_seed(seed)
    m = _small_denoiser()
    torch.nn.init.normal_(m.net.conv_out.weight, std=0.05)  # a non-trivial output layer
    save_model(str(path), m.state_dict(), m.config.to_dict(), run_config={"frames": 8, "size": 32}, step=7)
    return m


def test_shipped_models_and_manifest():
    import hashlib

    from fastvdm.models.pretrained import read_config

    shipped = shipped_models()
    assert {"teacher_tiny", "student_tiny"} <= set(shipped)
    files = {n: sorted(os.listdir(p)) for n, p in shipped.items()}
    total = sum(os.path.getsize(os.path.join(shipped[n], f)) for n in shipped for f in files[n])
    assert total <= 40 * 2 ** 20, f"shipped weights are {total / 2 ** 20:.1f} MiB (limit 40)"
    manifest = weights_manifest()
    for name in ("teacher_tiny", "student_tiny"):
        entry = manifest["models"][name]
        assert entry["command"] and entry["seed"] is not None
        assert sorted(entry["files"]) == files[name] == ["config.json", "model.safetensors"]
        for f, rec in entry["files"].items():
            with open(os.path.join(shipped[name], f), "rb") as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == rec["sha256"], f"{name}/{f}"
        config = read_config(shipped[name])
        assert config["kind"] == name.split("_")[0] and config["parameterization"] == "v"
        assert (config["frames"], config["size"]) == (entry["run_config"]["frames"], entry["run_config"]["size"])


def test_load_student_samples_a_clip():
    pipe = load_student("tiny", device="cpu")
    teacher = load_teacher("tiny", device="cpu")
    assert isinstance(pipe, NVSPipeline) and pipe.kind == "student" and teacher.kind == "teacher"
    assert (pipe.frames, pipe.size) == (teacher.frames, teacher.size)
    batch = _clip_batch(frames=pipe.frames, size=pipe.size)
    x0, cond = make_cond(batch)
    out = pipe(cond, generator=torch.Generator().manual_seed(3), progress=False)
    assert out.shape == x0.shape and pipe.last_nfe == 4
    assert out.min() >= -1 and out.max() <= 1 and torch.isfinite(out).all()
    is_in = batch["is_input"][:, None, :, None, None].expand_as(x0)
    torch.testing.assert_close(out[is_in], x0[is_in])  # the input views come back unchanged
    again = pipe(cond, generator=torch.Generator().manual_seed(3), progress=False)
    torch.testing.assert_close(out, again)  # a function of the generator's seed
    two = pipe(cond, generator=torch.Generator().manual_seed(3), num_steps=2, progress=False)
    assert pipe.last_nfe == 2 and not torch.equal(two, out)
    teacher(cond, generator=torch.Generator().manual_seed(3), num_steps=3, progress=False)
    assert teacher.last_nfe == 3  # the step count reaches the DDIM sampler too


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped students: .*tiny"):
        load_student("no-such-model")
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_student(str(bad))
    m = _small_model_file(tmp_path / "m.safetensors")
    pipe = load_student(str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        pipe({"cond_rgb": torch.rand(1, 3, 8, 32, 32)})
    assert pipe.meta["step"] == 7 and pipe.model.config.to_dict() == m.config.to_dict()


def test_save_and_export_round_trip(tmp_path):
    """export_model keeps exactly the EMA weights and the run config, and is far smaller than the checkpoint."""
    from fastvdm.train import RunConfig, TrainState, export_model, save_checkpoint

    torch.manual_seed(0)
    state = TrainState()
    model = state.add_model("unet", _small_denoiser(), ema_decay=0.9)
    state.add_optimizer("unet", torch.optim.AdamW(model.parameters(), lr=1e-3))
    with torch.no_grad():
        for p, pe in zip(model.parameters(), state.emas["unet"].parameters()):
            p.normal_()
            pe.normal_()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    state.optimizers["unet"].step()
    state.step = 5
    run = RunConfig(out_dir=str(tmp_path / "run"), steps=5, config={"frames": 8, "size": 32})
    save_checkpoint(run, state)
    dst = export_model(str(tmp_path / "run"), str(tmp_path / "model.safetensors"), info={"command": "x"})
    loaded, meta = load_model(dst)
    for (k, v), (k2, v2) in zip(loaded.state_dict().items(), state.emas["unet"].state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert meta["step"] == 5 and meta["weights"] == "ema" and meta["run"]["config"]["size"] == 32
    assert meta["info"] == {"command": "x"}
    ckpt = os.path.join(str(tmp_path / "run"), "checkpoints", os.listdir(str(tmp_path / "run" / "checkpoints"))[0])
    assert os.path.getsize(dst) < 0.4 * os.path.getsize(ckpt)


def test_pipeline_works_with_torch_compile(tmp_path):
    """pipe.compile() wraps the network in torch.compile; the samples match eager."""
    _small_model_file(tmp_path / "m.safetensors", seed=1)
    pipe = load_student(str(tmp_path / "m.safetensors"), device="cpu")
    _, cond = make_cond(_clip_batch(n=1))
    eager = pipe(cond, generator=torch.Generator().manual_seed(0), progress=False)
    torch._dynamo.reset()
    pipe.compile()
    compiled = pipe(cond, generator=torch.Generator().manual_seed(0), progress=False)
    assert (compiled - eager).abs().max() < 1e-4


def test_ops_import_on_their_own():
    import subprocess
    import sys

    code = ("from fastvdm.ops import group_norm; import torch; x = torch.randn(2, 8, 3, 4, 4); "
            "print(float((group_norm(x, 4) - torch.nn.functional.group_norm(x, 4)).abs().max()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) < 1e-5


def test_save_pretrained_round_trip_and_export(tmp_path):
    """A network and a pipeline survive save_pretrained / from_pretrained bit for bit; a training checkpoint
    exports to the same folder format; an existing folder is not overwritten without overwrite=True."""
    from fastvdm.models.pretrained import read_config
    from fastvdm.pipeline import export_pretrained

    m = _small_model_file(tmp_path / "m.safetensors", seed=2)
    folder = m.save_pretrained(str(tmp_path / "net"), frames=8, size=32)
    again = VideoUNet.from_pretrained(folder)  # the bare network of the PosteriorDenoiser m
    assert again.config == m.net.config and not again.training
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), m.net.state_dict().values()))
    wrapped = type(m).from_pretrained(folder)  # the denoiser, with its settings
    assert wrapped.config.to_dict() == m.config.to_dict()
    assert all(torch.equal(a, b) for a, b in zip(wrapped.state_dict().values(), m.state_dict().values()))
    with pytest.raises(FileExistsError, match="overwrite"):
        m.save_pretrained(folder)
    pipe = NVSPipeline(m.eval(), "teacher", frames=8, size=32, guidance=2.0)
    pipe.default_steps = 3
    pfolder = pipe.save_pretrained(str(tmp_path / "pipe"))
    loaded = NVSPipeline.from_pretrained(pfolder, device="cpu")
    assert (loaded.kind, loaded.frames, loaded.size, loaded.guidance, loaded.default_steps) == ("teacher", 8, 32, 2.0, 3)
    _, cond = make_cond(_clip_batch(n=1))
    a = pipe(cond, generator=torch.Generator().manual_seed(1), progress=False)
    b = loaded(cond, generator=torch.Generator().manual_seed(1), progress=False)
    assert torch.equal(a, b) and loaded.last_nfe == 6  # 3 guided steps
    assert load_teacher(pfolder).kind == "teacher"
    with pytest.raises(ValueError, match="is a teacher model, not a student"):
        load_student(pfolder)
    exported = export_pretrained(str(tmp_path / "m.safetensors"), str(tmp_path / "exp"), "student")
    cfg = read_config(exported)
    assert cfg["kind"] == "student" and cfg["provenance"]["step"] == 7 and cfg["size"] == 32
    assert all(torch.equal(a, b) for a, b in zip(load_student(exported).model.state_dict().values(),
                                                   m.state_dict().values()))
