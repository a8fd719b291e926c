"""Evaluation: metric bookkeeping against hand-computed values, the OpenCV baseline, and the eval/sample/train CLIs
end to end on a tiny checkpoint."""

import json
import math
import os

import pytest
import torch

from fastvdm.cli import main as cli
from fastvdm.evaluate import clip_scores, evaluate, format_table, opencv_inpaint


def _clip(T=3, H=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(3, T, H, H, generator=g) * 2 - 1
    mask = torch.ones(1, T, H, H)
    mask[:, :, 4:8, 4:12] = 0  # 32 of 256 pixels missed in every frame
    is_input = torch.zeros(T, dtype=torch.bool)
    is_input[0] = True
    return frames, mask, is_input


def test_clip_scores_against_hand_computed_values():
    gt, mask, is_input = _clip()
    pred = gt + 0.1 * (1 - mask)  # error 0.1 on the holes only
    pred[:, 0] = 5.0  # the input frame is not scored
    s = clip_scores(pred, gt, mask, is_input)
    assert s["psnr_masked"] == pytest.approx(10 * math.log10(4 / 0.01), abs=1e-5)
    assert s["psnr"] == pytest.approx(10 * math.log10(4 / (0.01 * 32 / 256)), abs=1e-5)
    assert s["hole_fraction"] == pytest.approx(32 / 256)
    same = clip_scores(gt, gt, mask, is_input)
    assert same["ssim"] == pytest.approx(1.0) and same["ssim_masked"] == pytest.approx(1.0)
    assert s["ssim_masked"] < 1.0
    full = clip_scores(pred, gt, torch.ones_like(mask), is_input)
    assert math.isnan(full["psnr_masked"]) and math.isnan(full["ssim_masked"])
    with pytest.raises(ValueError, match="no target frame"):
        clip_scores(pred, gt, mask, torch.ones(3, dtype=torch.bool))


def test_opencv_inpaint_fills_a_smooth_ramp():
    H = 16
    ramp = torch.linspace(-0.8, 0.8, H).view(1, 1, 1, H).expand(3, 2, H, H).clone()  # (3, T, H, W)
    mask = torch.ones(1, 2, H, H)
    mask[:, 0, 6:9, 9:14] = 0  # ramp values 0.16 .. 0.69 in the hole
    mask[:, 1] = 0  # a frame with nothing rendered stays as it is
    render = ramp * mask
    out = opencv_inpaint(render[None], mask[None])[0]
    holes = mask[0, 0] == 0
    err = (out[:, 0][:, holes] - ramp[:, 0][:, holes]).abs().max().item()
    assert err < 0.1, err  # less than one pixel's step of the ramp (0.107); the zero fill is off by 0.69
    assert (out[:, 0][:, ~holes] - ramp[:, 0][:, ~holes]).abs().max().item() <= 1 / 127.5  # 8-bit round trip
    assert torch.equal(out[:, 1], render[:, 1])


def test_evaluate_aggregates_per_method():
    items = []
    for i in range(3):
        gt, mask, is_input = _clip(seed=i)
        gt = gt * 0.8  # so that gt + 0.1 is not clamped to [-1, 1]
        items.append({"frames": gt, "cond_rgb": gt * mask, "cond_mask": mask, "is_input": is_input, "scene_seed": i})
    res = evaluate(items, {"off_by_0.1": lambda b: (b["frames"] + 0.1, 7),
                           "render": lambda b: (b["cond_rgb"], 0)}, batch_size=2)
    r = res["off_by_0.1"]
    assert r["psnr"] == pytest.approx(10 * math.log10(4 / 0.01), abs=1e-6)
    assert r["psnr_masked"] == pytest.approx(r["psnr"], abs=1e-6) and r["nfe_per_clip"] == 7 and r["clips"] == 3
    assert res["render"]["psnr_masked"] < r["psnr_masked"]
    assert "off_by_0.1" in format_table(res)


def test_evaluate_distribution_metrics_match_the_metric_functions():
    """The pooled SWD / HF ratio / temporal error of evaluate equal the fastvdm.metrics functions applied by hand to
    the target frames' hole pixels of all clips; the ground truth scores SWD 0 and HF ratio 1."""
    from fastvdm.data.dataset import ClipDataset
    from fastvdm.metrics import hf_energy_ratio, patch_swd, temporal_error

    items = [ClipDataset("test", num_frames=4, size=16, num_clips=3, paths="extrapolate")[i] for i in range(3)]
    blur = lambda x: torch.nn.functional.avg_pool3d(x, (1, 3, 3), 1, (0, 1, 1), count_include_pad=False)  # noqa: E731
    res = evaluate(items, {"gt": lambda b: (b["frames"], 0), "blur": lambda b: (blur(b["frames"]), 0)}, batch_size=2)
    assert res["gt"]["swd"] == 0 and res["gt"]["hf_ratio"] == pytest.approx(1.0)
    assert res["gt"]["temporal_mse"] == pytest.approx(res["gt"]["temporal_mse_real"])
    sel = [~it["is_input"] for it in items]
    real = torch.cat([it["frames"].transpose(0, 1)[s].double() for it, s in zip(items, sel)])
    holes = torch.cat([1 - it["cond_mask"].transpose(0, 1)[s].double() for it, s in zip(items, sel)])
    pasted = [torch.where(it["is_input"][None, :, None, None], it["frames"], blur(it["frames"])) for it in items]
    fake = torch.cat([p.transpose(0, 1)[s].double() for p, s in zip(pasted, sel)])
    assert res["blur"]["swd"] == pytest.approx(patch_swd(real, fake, holes)["swd"], rel=1e-9)
    assert res["blur"]["hf_ratio"] == pytest.approx(hf_energy_ratio(real, fake, holes), rel=1e-9) and res["blur"]["hf_ratio"] < 1
    parts = [temporal_error(p.transpose(0, 1), it["depth"], it["c2w"], it["intrinsics"],
                            1 - it["cond_mask"].transpose(0, 1).double()) for p, it in zip(pasted, items)]
    assert res["blur"]["temporal_mse"] == pytest.approx(sum(e for e, _ in parts) / sum(n for _, n in parts), rel=1e-9)
    assert "SWD(holes)" in format_table(res)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-step tiny teacher on 2 procedural clips of 4 frames at 16x16, and a test-split cache."""
    from fastvdm.data.dataset import ClipDataset, cache_clips

    root = tmp_path_factory.mktemp("run")
    test_cache = str(root / "test.safetensors")
    cache_clips(ClipDataset("test", num_frames=4, size=16, num_clips=2), test_cache, progress=False)
    out = str(root / "teacher")
    rc = cli(["train", "teacher", "--synthetic", "--frames", "4", "--size", "16", "--clips", "2", "--steps", "2",
              "--batch", "2", "--out", out, "--preset", "tiny", "--ckpt-every", "1", "--threads", "1"])
    assert rc == 0
    return root, out, test_cache


def test_train_eval_cli_end_to_end(tiny_run, capsys):
    root, out, test_cache = tiny_run
    with open(os.path.join(out, "log.jsonl")) as f:
        assert [json.loads(ln)["step"] for ln in f] == [1, 2]
    js = str(root / "eval.json")
    rc = cli(["eval", "--ckpt", out, "--steps", "1", "2", "--clips", "2", "--batch", "2", "--data", test_cache,
              "--json", js, "--no-progress"])
    assert rc == 0
    report = json.load(open(js))
    assert report["step"] == 2 and report["frames"] == 4 and report["size"] == 16
    res = report["results"]
    assert set(res) == {"render", "opencv_telea", "harmonic_fill", "model_ddim1", "model_ddim2"}
    assert res["model_ddim1"]["nfe_per_clip"] == 1 and res["model_ddim2"]["nfe_per_clip"] == 2
    assert res["opencv_telea"]["psnr_masked"] > res["render"]["psnr_masked"]
    assert res["harmonic_fill"]["psnr_masked"] > res["render"]["psnr_masked"]
    for r in res.values():
        assert r["clips"] == 2 and all(math.isfinite(r[k]) for k in ("psnr", "ssim", "sec_per_clip"))
    assert "opencv_telea" in capsys.readouterr().out
    assert cli(["eval", "--ckpt", str(root / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_sample_cli_writes_frames_video_and_grid(tiny_run, tmp_path):
    from PIL import Image

    _, out, _ = tiny_run
    scenes = str(tmp_path / "scenes")
    assert cli(["data", "make", "--out", scenes, "--scenes", "1", "--views", "5", "--size", "16", "--no-progress"]) == 0
    dest = str(tmp_path / "samples")
    rc = cli(["sample", "--ckpt", out, "--scene", os.path.join(scenes, "scene_00000"), "--steps", "2",
              "--inputs", "2", "--out", dest, "--scale", "2"])
    assert rc == 0
    assert sorted(os.listdir(os.path.join(dest, "frames"))) == [f"frame_{i:05d}.png" for i in range(4)]
    grid = Image.open(os.path.join(dest, "grid.png"))
    assert grid.size == (4 * 16 * 2, 3 * 16 * 2)  # 4 frames; condition / generated / ground truth
    video = [f for f in os.listdir(dest) if f.startswith("video.")]
    assert video and os.path.getsize(os.path.join(dest, video[0])) > 0
    assert not [f for f in os.listdir(dest) if ".tmp" in f]


def test_distill_cli_gan_then_kl_from_the_gan_run(tiny_run, tmp_path):
    """`fastvdm train distill`: a GAN-stage run, then a KL-stage run whose student and head come from it."""
    from fastvdm.train import load_model, read_checkpoint, latest_checkpoint

    _, teacher, _ = tiny_run
    common = ["--synthetic", "--frames", "4", "--size", "16", "--clips", "2", "--batch", "2", "--threads", "1",
              "--ckpt-every", "1", "--head-width", "8"]
    gan = str(tmp_path / "gan")
    assert cli(["train", "distill", "--teacher", teacher, "--stage", "gan", "--steps", "1", "--out", gan] + common) == 0
    tensors, meta = read_checkpoint(latest_checkpoint(gan))
    assert meta["model_configs"]["disc_head"]["width"] == 8
    assert any(k.startswith("model/disc_head") for k in tensors)
    kl = str(tmp_path / "kl")
    assert cli(["train", "distill", "--teacher", teacher, "--stage", "kl", "--init", gan, "--steps", "1",
                "--out", kl] + common) == 0
    kl_tensors, kl_meta = read_checkpoint(latest_checkpoint(kl))
    # the head came from the GAN run (and stays fixed: --disc-steps defaults to 0 in the KL stage)
    heads = [k for k in tensors if k.startswith("model/disc_head")]
    assert heads and all(torch.equal(kl_tensors[k], tensors[k]) for k in heads)
    assert any(k.startswith("model/fake") for k in kl_tensors)
    assert load_model(kl)[0].config == load_model(gan)[0].config
    assert cli(["train", "distill", "--teacher", teacher, "--stage", "gan", "--init", gan, "--steps", "1",
                "--out", str(tmp_path / "bad")] + common) == 2


def test_export_cli_writes_a_pretrained_folder(tiny_run, tmp_path, capsys):
    from fastvdm.models.pretrained import read_config
    from fastvdm.pipeline import load_teacher
    from fastvdm.train import load_model

    _, teacher, _ = tiny_run
    out = str(tmp_path / "exported")
    assert cli(["export", teacher, "--out", out]) == 0
    cfg = read_config(out)
    assert cfg["kind"] == "teacher" and (cfg["frames"], cfg["size"]) == (4, 16) and cfg["provenance"]["step"] == 2
    ema, _ = load_model(teacher)
    pipe = load_teacher(out)
    assert all(torch.equal(a, b) for a, b in zip(pipe.model.state_dict().values(), ema.state_dict().values()))
    assert cli(["export", teacher, "--out", out]) == 2  # not overwritten without --force
    assert "--force" in capsys.readouterr().err
    assert cli(["export", teacher, "--out", out, "--force", "--kind", "student"]) == 0
    assert read_config(out)["kind"] == "student"
