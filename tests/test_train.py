"""The training loop: exact resume after a kill, 2-process gloo DDP == one process with the summed batch,
checkpoint integrity and errors, EMA, deterministic sharded batches."""

import json
import os
import runpy
import shutil
import subprocess
import sys

import pytest
import torch

from fastvdm.train import (CheckpointError, DatasetBatches, TrainState, latest_checkpoint, list_checkpoints,
                           load_model, read_checkpoint)
from fastvdm.train.checkpoint import atomic_save

SCRIPT = r'''
import os, signal, sys
import torch
from fastvdm.models import VideoUNet, VideoUNetConfig
from fastvdm.train import DatasetBatches, RunConfig, TrainState, train
from fastvdm.train.teacher import TeacherStep

def clips(n=12, T=4, H=8):
    g = torch.Generator().manual_seed(123)
    items = []
    for i in range(n):
        is_input = torch.zeros(T, dtype=torch.bool)
        is_input[0] = True
        items.append({"frames": torch.rand(3, T, H, H, generator=g) * 2 - 1,
                      "cond_rgb": torch.rand(3, T, H, H, generator=g) * 2 - 1,
                      "cond_mask": (torch.rand(1, T, H, H, generator=g) > 0.5).float(),
                      "plucker": torch.randn(6, T, H, H, generator=g), "is_input": is_input, "scene_seed": i})
    return items

def main(out, steps, batch, crash, parallel="ddp"):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    state = TrainState()
    cfg = VideoUNetConfig(channels=(8, 16), attention_levels=(1,), head_dim=8, groups=4, temporal_kernel=3)
    model = state.add_model("unet", VideoUNet(cfg), ema_decay=0.9)
    state.add_optimizer("unet", torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01))
    teacher = TeacherStep(p_uncond=0.3)

    def step_fn(ctx, batch):
        if ctx.step == crash:
            os.kill(os.getpid(), signal.SIGKILL)  # die mid-run, without any cleanup
        return teacher(ctx, batch)

    run = RunConfig(out_dir=out, steps=steps, seed=1, ckpt_every=2, keep_last=0, warmup_steps=5, amp=False,
                    print_every=0, parallel=parallel)
    train(run, state, step_fn, DatasetBatches(clips(), batch, seed=3))
    if int(os.environ.get("RANK", "0")) == 0:  # which models ran under DistributedDataParallel / were sharded
        with open(os.path.join(out, "ddp.txt"), "w") as f:
            f.write(" ".join(f"{k}:{type(v).__name__}" for k, v in state.ddp.items()))
        with open(os.path.join(out, "params.txt"), "w") as f:
            f.write(" ".join(sorted({type(p).__name__ for m in (model, state.emas["unet"]) for p in m.parameters()})))

if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:])
'''


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("script") / "train_small.py"
    path.write_text(SCRIPT)
    return str(path)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _in_process(script, out, steps, batch):
    runpy.run_path(script)["main"](str(out), steps, batch, -1)


def _log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def _final(out):
    return read_checkpoint(latest_checkpoint(str(out)))[0]


def test_kill_and_resume_reproduces_the_uninterrupted_run(script, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _in_process(script, ref, 6, 2)
    killed = subprocess.run([sys.executable, script, str(run), "6", "2", "5"], env=_env(), capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert [e["step"] for e in _log(run)] == [1, 2, 3, 4, 5]  # step 5 logged, then killed before its checkpoint
    assert [s for s, _ in list_checkpoints(str(run))] == [2, 4]
    with open(latest_checkpoint(str(run)) + ".tmp-999", "wb") as f:  # debris of a write cut by a crash
        f.write(b"\0" * 100)
    _in_process(script, run, 6, 2)  # resumes from step 4
    a, b = _log(ref), _log(run)
    assert [e["step"] for e in b] == [1, 2, 3, 4, 5, 6]
    assert [(e["loss"], e["grad_norm"]) for e in a] == [(e["loss"], e["grad_norm"]) for e in b]  # bitwise
    ta, tb = _final(ref), _final(run)
    assert sorted(ta) == sorted(tb) and any(k.startswith("ema/") for k in ta) and any(k.startswith("optim/") for k in ta)
    for k in ta:
        if not k.startswith("rng/"):
            assert torch.equal(ta[k], tb[k]), k


def test_two_process_gloo_ddp_equals_one_process_with_the_summed_batch(script, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _in_process(script, single, 3, 4)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", script,
           str(ddp), "3", "4", "-1"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    ls, ld = _log(single), _log(ddp)
    assert len(ld) == 3
    for a, b in zip(ls, ld):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    ts, td = _final(single), _final(ddp)
    moved = 0.0
    for k in ts:
        if k.startswith("model/"):
            torch.testing.assert_close(td[k], ts[k], rtol=1e-4, atol=1e-6, msg=k)
    init = runpy.run_path(script)  # the weights did move (the comparison is not of untouched initial weights)
    torch.manual_seed(0)
    m0 = init["VideoUNet"](init["VideoUNetConfig"](channels=(8, 16), attention_levels=(1,), head_dim=8, groups=4,
                                                   temporal_kernel=3))
    for k, v in m0.state_dict().items():
        moved = max(moved, (ts[f"model/unet/{k}"] - v).abs().max().item())
    assert moved > 1e-3
    ranks = {k.split("/")[1] for k in td if k.startswith("rng/")}
    assert ranks == {"0", "1"}
    assert (ddp / "ddp.txt").read_text() == "unet:DistributedDataParallel"  # gradients reduced by DDP's buckets
    assert (single / "ddp.txt").read_text() == ""  # one process: the plain model


def _torchrun(script, out, steps, batch, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", script,
           str(out), str(steps), str(batch), "-1", *extra]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]


def _resume_copy(src, dst, step):
    """A copy of run folder ``src`` cut back to its checkpoint of ``step`` (as if stopped there)."""
    shutil.copytree(src, dst)
    for s, path in list_checkpoints(str(dst)):
        if s > step:
            os.remove(path)


def test_two_process_gloo_fsdp_equals_one_process_and_its_checkpoints_resume_anywhere(script, tmp_path):
    single, fsdp = tmp_path / "single", tmp_path / "fsdp"
    _in_process(script, single, 3, 4)
    _torchrun(script, fsdp, 3, 4, "fsdp")
    assert (fsdp / "params.txt").read_text() == "DTensor"  # model and EMA sharded (FSDP2)
    assert (fsdp / "ddp.txt").read_text() == ""  # no DDP wrapper: FSDP reduces the gradients
    ls, lf = _log(single), _log(fsdp)
    assert [e["step"] for e in lf] == [1, 2, 3]
    for a, b in zip(ls, lf):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    ts, tf = _final(single), _final(fsdp)  # full state dicts, in the unsharded format
    assert sorted(k for k in ts if not k.startswith("rng/")) == sorted(k for k in tf if not k.startswith("rng/"))
    for k in ts:
        if not k.startswith("rng/"):
            torch.testing.assert_close(tf[k], ts[k], rtol=1e-4, atol=1e-6, msg=k)
    assert any(not torch.equal(tf[k], tf["model/" + k[4:]]) for k in tf if k.startswith("ema/"))  # EMA != model
    # the FSDP run's step-2 checkpoint continues in ONE process like the single run
    one = tmp_path / "one"
    _resume_copy(fsdp, one, 2)
    _in_process(script, one, 3, 4)
    assert _log(one)[2]["loss"] == pytest.approx(ls[2]["loss"], rel=1e-5)
    for k, v in _final(one).items():
        if not k.startswith("rng/"):
            torch.testing.assert_close(v, ts[k], rtol=1e-4, atol=1e-6, msg=k)
    # and resumed under FSDP it reproduces the uninterrupted FSDP run exactly
    again = tmp_path / "again"
    _resume_copy(fsdp, again, 2)
    _torchrun(script, again, 3, 4, "fsdp")
    assert [(e["loss"], e["grad_norm"]) for e in _log(again)] == [(e["loss"], e["grad_norm"]) for e in lf]
    for k, v in _final(again).items():
        assert torch.equal(v, tf[k]), k


def test_checkpoint_errors_and_load_model(script, tmp_path):
    out = tmp_path / "run"
    _in_process(script, out, 2, 2)
    model, meta = load_model(str(out))
    assert meta["step"] == 2 and model.config.channels == (8, 16) and not model.training
    tensors = read_checkpoint(latest_checkpoint(str(out)))[0]
    for k, v in model.net.state_dict().items():  # a bare network's checkpoint: loaded as a VDenoiser around it
        assert torch.equal(v, tensors[f"ema/unet/{k}"])
    raw, _ = load_model(str(out), ema=False)
    assert any(not torch.equal(a, b) for a, b in zip(raw.state_dict().values(), model.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        load_model(str(tmp_path))
    bad = tmp_path / "bad.safetensors"
    good = open(latest_checkpoint(str(out)), "rb").read()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(str(bad))
    other = tmp_path / "other.safetensors"
    atomic_save({"x": torch.zeros(1)}, {}, str(other))
    with pytest.raises(CheckpointError, match="no model configs"):
        load_model(str(other))
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]  # atomic_save left no temp file


def test_ema_update():
    state = TrainState()
    lin = torch.nn.Linear(2, 2)
    state.add_model("m", lin, ema_decay=0.9, config={})
    w0 = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    state.update_emas()
    torch.testing.assert_close(state.emas["m"].weight, 0.9 * w0 + 0.1 * (w0 + 1.0))


def test_dataset_batches_shard_and_cover_epochs():
    data = [{"i": torch.tensor(i)} for i in range(10)]
    batches = DatasetBatches(data, 4, seed=5)
    seen = torch.cat([batches(s)["i"] for s in range(5)])  # 20 samples = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    for s in range(5):
        full = batches(s)
        parts = [batches(s, r, 2) for r in range(2)]
        assert torch.equal(torch.cat([p["i"] for p in parts]), full["i"])
        assert torch.equal(torch.cat([p["sample_id"] for p in parts]), torch.arange(4 * s, 4 * s + 4))
    with pytest.raises(ValueError, match="divisible"):
        batches(0, 0, 3)


def test_lr_factor_warmup_then_cosine():
    from fastvdm.train.loop import RunConfig, lr_factor

    run = RunConfig(out_dir="unused", steps=1100, warmup_steps=100, lr_schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(run, 0) == pytest.approx(0.01) and lr_factor(run, 99) == pytest.approx(1.0)
    assert lr_factor(run, 100) == pytest.approx(1.0)
    assert lr_factor(run, 600) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: the mean of the two ends
    assert lr_factor(run, 1100) == pytest.approx(0.1) and lr_factor(run, 5000) == pytest.approx(0.1)
    assert lr_factor(RunConfig(out_dir="unused", steps=10), 7) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor(RunConfig(out_dir="unused", steps=10, lr_schedule="step"), 3)


def test_parallel_refusals(tmp_path):
    import torch.distributed as dist

    from fastvdm.errors import UserError
    from fastvdm.train import RunConfig, train

    with pytest.raises(UserError, match="parallel must be one of"):
        train(RunConfig(out_dir=str(tmp_path / "run"), steps=1, parallel="zero"), TrainState(), None, None)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        state = TrainState()
        a = state.add_model("a", torch.nn.Linear(2, 2), config={})
        b = state.add_model("b", torch.nn.Linear(2, 2), config={})
        state.add_optimizer("ab", torch.optim.SGD(list(a.parameters()) + list(b.parameters()), lr=0.1))
        with pytest.raises(UserError, match="optimizer 'ab' holds parameters of model 'a' and of other models"):
            state.shard(torch.device("cpu"))
    finally:
        dist.destroy_process_group()
