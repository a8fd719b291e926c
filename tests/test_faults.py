"""Fault injection: every case of issue 17 (and the related ones that already held), replayed so none comes back.

Each CLI case runs ``fastvdm`` (in this process through ``fastvdm.cli.main``, the entry point ``python -m
fastvdm`` calls, or as a subprocess where a signal is involved) inside a fresh working directory holding a
copy of a small scene, and asserts the exit code, the one-line message, and that the scene folder and the
working directory are byte-identical afterwards (hashes of every file, folder and link). Faults that need the
operating system to misbehave (read-only or full disk, a mount point, a kill while writing) are injected by
``tests/faultwrap.py``, which replaces only the OS calls' answers; the fastvdm code paths are the real ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from fastvdm.cli import main as fastvdm_main

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import faultwrap  # noqa: E402


# ---------------------------------------- helpers
def tree_hash(root: str) -> dict:
    """{relative path: sha256 of the bytes | 'dir' | 'link -> target'} of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            out[os.path.relpath(p, root)] = f"link -> {os.readlink(p)}" if os.path.islink(p) else "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                out[os.path.relpath(p, root)] = f"link -> {os.readlink(p)}"
            else:
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def base_scene(tmp_path_factory):
    """A 2-view 32x32 scene folder with depth and a point cloud, written by ``fastvdm data make``."""
    root = tmp_path_factory.mktemp("base")
    rc = fastvdm_main(["data", "make", "--out", str(root / "scenes"), "--scenes", "1", "--size", "32", "--views",
                       "2", "--seed", "0", "--ply", "--no-progress"])
    assert rc == 0
    return str(root / "scenes" / "scene_00000")


class Workdir:
    """A fresh working directory (the cwd during the test) with a copy of the scene at ``./S``."""

    def __init__(self, tmp_path, base_scene, capsys, monkeypatch):
        self.root = str(tmp_path / "work")
        os.makedirs(self.root)
        self.scene = os.path.join(self.root, "S")
        shutil.copytree(base_scene, self.scene)
        self.tmp, self.capsys, self.monkeypatch = str(tmp_path), capsys, monkeypatch
        monkeypatch.chdir(self.root)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        os.makedirs(str(tmp_path / "home"), exist_ok=True)
        self.before = None

    def snapshot(self):
        self.before = (tree_hash(self.scene), tree_hash(self.root))

    def run(self, *argv, env=None):
        """(exit code, stdout, stderr) of ``fastvdm ARGV`` in this process, with faults from ``env``."""
        self.capsys.readouterr()
        with pytest.MonkeyPatch.context() as mp:
            for k, v in (env or {}).items():
                mp.setenv(k, v)
            for obj, name, new in faultwrap.patches(dict(os.environ, **(env or {}))):
                mp.setattr(obj, name, new)
            try:
                rc = fastvdm_main([str(a) for a in argv])
            except SystemExit as e:  # argparse
                rc = e.code
        out, err = self.capsys.readouterr()
        return rc, out, err

    def fails(self, *argv, match: str, env=None, unchanged: bool = True) -> str:
        """Run, assert exit code 2 with exactly one error line containing ``match`` (no traceback) and, with
        ``unchanged``, the scene and the working directory byte-identical. Returns the error line."""
        self.snapshot()
        rc, out, err = self.run(*argv, env=env)
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ": error: " in ln]
        assert rc == 2, (rc, err)
        assert "Traceback" not in err, err
        assert len(errors) == 1 and errors[0] == lines[-1], err
        assert match in errors[0], (match, errors[0])
        if unchanged:
            self.assert_unchanged()
        return errors[0]

    def assert_unchanged(self, ignore: tuple = ()):
        scene, cwd = tree_hash(self.scene), tree_hash(self.root)
        assert scene == self.before[0], "the input scene changed"
        strip = lambda t: {k: v for k, v in t.items() if not any(k == i or k.startswith(i + os.sep) for i in ignore)}
        assert strip(cwd) == strip(self.before[1]), "the working directory changed"

    def transforms(self) -> dict:
        with open(os.path.join(self.scene, "transforms.json")) as f:
            return json.load(f)

    def write_transforms(self, meta: dict) -> None:
        with open(os.path.join(self.scene, "transforms.json"), "w") as f:
            json.dump(meta, f)


@pytest.fixture
def wd(tmp_path, base_scene, capsys, monkeypatch):
    return Workdir(tmp_path, base_scene, capsys, monkeypatch)


def densify(*extra):
    return ("densify", "S", "--no-progress", "--threads", "1") + extra


def subprocess_env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(HERE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.pop("FASTVDM_BACKEND", None)
    env.update(extra)
    return env


def wait_for(path: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {path}: {proc.stderr.read()}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


# ---------------------------------------- 1. data loss
def test_out_is_the_input(wd):
    wd.fails(*densify("--out", "S", "--force"), match="is the input S")
    os.symlink("S", "link")  # the same folder under another name
    wd.fails(*densify("--out", "link", "--force"), match="is the input S")


def test_out_is_the_parent_of_the_input(wd):
    wd.fails("densify", os.path.join(wd.root, "S"), "--out", wd.root, "--force", "--no-progress",
             match="is the working directory")
    os.makedirs(os.path.join(wd.root, "data"))
    shutil.move(wd.scene, os.path.join(wd.root, "data", "S"))
    wd.scene = os.path.join(wd.root, "data", "S")
    wd.fails("densify", "data/S", "--out", "data", "--force", "--no-progress", match="contains the input data/S")


def test_out_inside_the_input(wd):
    wd.fails(*densify("--out", "S/dense", "--force"), match="lies inside the input S")


@pytest.mark.parametrize("cmd", ["densify", "data"])
def test_empty_out_is_refused(wd, cmd):
    argv = densify("--out", "", "--force") if cmd == "densify" else (
        "data", "make", "--out", "", "--scenes", "1", "--force", "--no-progress")
    wd.fails(*argv, match="--out is empty")


@pytest.mark.parametrize("out, match", [(".", "is the working directory"), ("..", "contains the working directory"),
                                        ("/", "filesystem root"), ("~", "is your home directory")])
def test_out_is_cwd_parent_home_or_root(wd, out, match):
    wd.fails("data", "make", "--out", out, "--scenes", "1", "--force", "--no-progress", match=match)


def test_out_inside_the_package_is_refused(wd):
    from fastvdm.pipeline import shipped_models

    wd.fails(*densify("--out", shipped_models()["student_tiny"], "--force"), match="fastvdm's own package folder")


def test_out_whose_parent_is_a_file(wd):
    with open("notes.txt", "w") as f:
        f.write("x")
    wd.fails(*densify("--out", "notes.txt/dense"), match="notes.txt is a file, not a folder")
    wd.fails(*densify("--out", "notes.txt", "--force"), match="exists and is a file")


def test_existing_output_needs_force(wd):
    os.makedirs("dense")
    with open("dense/keep.txt", "w") as f:
        f.write("mine")
    wd.fails(*densify("--out", "dense"), match="exists and is not empty (use --force")


def test_python_m_fastvdm_entry_point(wd):
    """The same through the real entry point, `python -m fastvdm`, in a child process: exit 2, one line."""
    wd.snapshot()
    r = subprocess.run([sys.executable, "-m", "fastvdm", "densify", "S", "--out", "S", "--force"], cwd=wd.root,
                       env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "fastvdm densify: error: --out S (" + os.path.realpath(wd.scene) + ") is the input S; write the output to "
        "another folder"], r.stderr
    wd.assert_unchanged()


# ---------------------------------------- 2. silent wrong results
def _png_modes_scene(wd, mode):
    from PIL import Image

    meta = wd.transforms()
    path = os.path.join(wd.scene, meta["frames"][0]["file_path"])
    rgb = np.asarray(Image.open(path).convert("RGB"))
    if mode == "I;16":
        grey = (rgb.mean(-1) * 257).astype(np.uint16)  # 16-bit: 0..65535
        Image.fromarray(grey).save(path)
        return grey.astype(np.float64) / 65535
    if mode == "RGBA":
        Image.fromarray(np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], -1)).save(path)
        return rgb / 255.0
    if mode in ("L", "P", "1", "LA"):
        Image.fromarray(rgb).convert(mode).save(path)
        return np.asarray(Image.open(path).convert("RGB")) / 255.0
    if mode == "CMYK":
        jpg = os.path.splitext(path)[0] + ".jpg"
        Image.fromarray(rgb).convert("CMYK").save(jpg)
        meta["frames"][0]["file_path"] = os.path.relpath(jpg, wd.scene)
        wd.write_transforms(meta)
        return None
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "L", "P", "1", "LA"])
def test_every_accepted_png_mode_reads_right(wd, mode, capsys):
    """Case 2: a 16-bit greyscale PNG became pure white (PIL clipped I;16); alpha is dropped with a note."""
    from fastvdm.data.scene_io import read_scene

    want = _png_modes_scene(wd, mode)
    capsys.readouterr()
    got = read_scene(wd.scene).views[0].rgb.double()
    want = torch.from_numpy(np.asarray(want, dtype=np.float64))
    if want.dim() == 2:
        want = want[None].expand(3, -1, -1)
    else:
        want = want.permute(2, 0, 1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    if mode == "I;16":
        assert got.max() < 1.0 and got.std() > 0.05  # not clipped to white
    note = capsys.readouterr().err
    assert ("alpha channel" in note) == (mode in ("RGBA", "LA"))


def test_unsupported_image_mode_is_refused(wd):
    _png_modes_scene(wd, "CMYK")
    wd.fails(*densify("--out", "dense"), match="has PIL mode 'CMYK'")


def _set_depth(wd, fn, ext="npy"):
    from PIL import Image

    meta = wd.transforms()
    fr = meta["frames"][0]
    path = os.path.join(wd.scene, fr["depth_file_path"])
    d = np.asarray(Image.open(path)).astype(np.float32) * 1e-3
    new = os.path.splitext(path)[0] + "." + ext
    arr = fn(d)
    if ext == "npy":
        np.save(new, arr.astype(np.float32))
    else:
        Image.fromarray(arr.astype(np.uint16)).save(new)
    fr["depth_file_path"] = os.path.relpath(new, wd.scene)
    wd.write_transforms(meta)
    return fr["depth_file_path"]


def test_all_zero_depth_is_refused(wd):
    name = _set_depth(wd, lambda d: np.zeros_like(d), "png")
    line = wd.fails(*densify("--out", "dense"), match="is 0 everywhere")
    assert "frames[0].depth_file_path" in line and name in line


def test_depth_unit_scale_factor_zero_is_refused(wd):
    meta = wd.transforms()
    meta["depth_unit_scale_factor"] = 0
    wd.write_transforms(meta)
    wd.fails(*densify("--out", "dense"), match="'depth_unit_scale_factor' must be a positive number")


def test_absurd_depth_is_refused(wd):
    _set_depth(wd, lambda d: np.where(d > 0, 1e30, 0))
    wd.fails(*densify("--out", "dense"), match="reaches 1e+30 m")


@pytest.mark.parametrize("fl", [1e-30, 1e30])
def test_absurd_focal_length_is_refused(wd, fl):
    meta = wd.transforms()
    meta["fl_x"] = fl
    wd.write_transforms(meta)
    line = wd.fails(*densify("--out", "dense"), match="is not a plausible focal length")
    assert "frames[0]" in line and "'fl_x'" in line


def test_nan_weights_are_refused_at_load(wd):
    """A checkpoint with one NaN weight wrote black frames; now refused at load (pretrained folder and
    training-checkpoint file alike)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from fastvdm.pipeline import shipped_models
    from fastvdm.train.checkpoint import save_model

    shutil.copytree(shipped_models()["student_tiny"], "nan_student")
    weights = os.path.join("nan_student", "model.safetensors")
    with safe_open(weights, "pt") as f:
        md = f.metadata()
    t = load_file(weights)
    k = sorted(t)[len(t) // 2]
    t[k] = t[k].clone()
    t[k].view(-1)[0] = float("nan")
    save_file(t, weights, metadata=md)
    wd.fails(*densify("--out", "dense", "--ckpt", "nan_student"), match="hold NaN or infinite values")
    from fastvdm.pipeline import load_student

    pipe = load_student("tiny", device="cpu")
    sd = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    sd[k.split("/", 2)[-1] if k.split("/", 2)[-1] in sd else sorted(sd)[0]].view(-1)[0] = float("inf")
    save_model("nan_student.safetensors", sd, pipe.model.config.to_dict(), run_config={"stage": "kl", "frames": 8,
                                                                                        "size": 32})
    wd.fails(*densify("--out", "dense", "--ckpt", "nan_student.safetensors"), match="hold NaN or infinite values")


def test_nan_condition_is_refused_at_the_pipeline_boundary():
    from fastvdm.data.dataset import ClipDataset
    from fastvdm.errors import UserError
    from fastvdm.models import make_cond
    from fastvdm.pipeline import load_student

    pipe = load_student("tiny", device="cpu")
    batch = torch.utils.data.default_collate([ClipDataset("test", num_frames=pipe.frames, size=pipe.size)[0]])
    _, cond = make_cond(batch)
    cond["cond_rgb"][0, :, 3, 5, 7] = float("nan")
    with pytest.raises(UserError, match=r"cond\['cond_rgb'\] holds 3 NaN"):
        pipe(cond, num_steps=1, progress=False)


# ---------------------------------------- 3. threads
def test_backend_forcing_is_per_thread():
    import fastvdm.ops as ops

    x = torch.randn(2, 8, 3, 4)
    args = (x, 4, None, None, 1e-5, None, None, None)
    inside, go = threading.Event(), threading.Event()

    def forcer():
        with ops.use_backend("cuda" if not torch.cuda.is_available() else "reference"):
            inside.set()
            go.wait(10)

    t = threading.Thread(target=forcer)
    t.start()
    inside.wait(10)
    try:
        with ops.use_backend("reference"):
            assert {ops.selected_backend("group_norm", *args) for _ in range(100)} == {"reference"}
        ops.group_norm(x, 4)  # this thread is not forced: works while the other forces cuda
    finally:
        go.set()
        t.join()


# ---------------------------------------- 4. one line, not a traceback
def test_read_only_output_is_refused_before_any_work(wd):
    os.makedirs("ro")
    line = wd.fails(*densify("--out", "ro/dense"), match="cannot write in", env={"FAULT_READONLY": "ro"})
    assert "read-only" in line


def test_full_disk_is_one_line_and_leaves_nothing(wd):
    os.makedirs("full")
    wd.fails(*densify("--out", "full/dense"), match="No space left on device", env={"FAULT_NOSPACE": "full"})
    assert os.listdir("full") == []


def test_read_only_working_directory_for_demo(wd):
    wd.fails("demo", "--teacher-steps", "1", "--no-progress", match="cannot write in",
             env={"FAULT_READONLY": wd.root})


def test_bad_backend_variable_is_one_line_before_any_work(wd):
    wd.fails(*densify("--out", "dense"), match="FASTVDM_BACKEND='garbage' is not a backend",
             env={"FASTVDM_BACKEND": "garbage"})
    rc, out, err = wd.run("info", env={"FASTVDM_BACKEND": "garbage"})
    assert rc == 0 and "FASTVDM_BACKEND: 'garbage': INVALID" in out


def test_non_string_file_path(wd):
    meta = wd.transforms()
    meta["frames"][1]["file_path"] = 5
    wd.write_transforms(meta)
    wd.fails(*densify("--out", "dense"), match="frames[1]: field 'file_path' must be a file path")


def test_cameras_folder_or_malformed_file(wd):
    os.makedirs("cams")
    wd.fails(*densify("--out", "dense", "--cameras", "cams"), match="--cameras cams is a folder")
    with open("cams.json", "w") as f:
        f.write('{"frames": [1, 2,')
    wd.fails(*densify("--out", "dense", "--cameras", "cams.json"), match="--cameras cams.json: invalid JSON at line 1")
    wd.fails(*densify("--out", "dense", "--cameras", "nope.json"), match="nope.json not found")


# ---------------------------------------- 5. leftovers
def test_sigkill_while_writing_is_cleaned_by_the_next_run(wd, tmp_path):
    """A SIGKILL while the output is being written leaves only `.<out>.tmp-<pid>-*`; the next run removes it."""
    wd.snapshot()
    flag = str(tmp_path / "writing")
    argv = ["data", "make", "--out", "made", "--scenes", "1", "--size", "16", "--views", "3", "--no-progress"]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "faultwrap.py")] + argv, cwd=wd.root,
                            env=subprocess_env(FAULT_PAUSE_AFTER="2", FAULT_PAUSE_FILE=flag),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(flag, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    left = [n for n in os.listdir(wd.root) if n.startswith(".made.tmp-")]
    assert len(left) == 1 and not os.path.exists("made")
    assert os.listdir(os.path.join(left[0], "scene_00000", "images"))  # it was killed mid-write
    rc, out, err = wd.run(*argv)
    assert rc == 0 and f"removed {os.path.join(wd.root, left[0])}" in err
    assert sorted(n for n in os.listdir(wd.root) if n.startswith(".made")) == []
    wd.assert_unchanged(ignore=("made",))


def test_sigkill_during_checkpoint_save_is_cleaned_and_resume_checks_config(wd, tmp_path):
    flag = str(tmp_path / "saving")
    argv = ["train", "teacher", "--synthetic", "--preset", "tiny", "--steps", "1", "--out", "run", "--frames", "4",
            "--size", "16", "--clips", "2", "--batch", "1", "--threads", "1", "--warmup", "0"]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "faultwrap.py")] + argv, cwd=wd.root,
                            env=subprocess_env(FAULT_PAUSE_CHECKPOINT=flag),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(flag, proc, timeout=300)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    temps = os.listdir(os.path.join("run", "checkpoints"))
    assert len(temps) == 1 and temps[0].startswith("step_00000001.safetensors.tmp-"), temps
    argv[argv.index("--steps") + 1] = "2"
    rc, out, err = wd.run(*argv)
    assert rc == 0 and "removed" in err and temps[0] in err, err
    assert sorted(os.listdir(os.path.join("run", "checkpoints"))) == ["step_00000002.safetensors"]
    # 7. resuming with another clip size is refused, the run folder untouched
    argv[argv.index("--size") + 1] = "24"
    argv[argv.index("--steps") + 1] = "3"
    line = wd.fails(*argv, match="size 16 -> 24")
    assert "--allow-config-change" in line


def test_training_into_a_folder_of_other_files_is_refused(wd):
    os.makedirs("docs")
    with open(os.path.join("docs", "config.txt"), "w") as f:
        f.write("mine")
    wd.fails("train", "teacher", "--synthetic", "--steps", "1", "--out", "docs", "--frames", "4", "--size", "16",
             match="exists and is not a folder this command wrote (it has none of checkpoints")
    wd.fails("train", "teacher", "--synthetic", "--steps", "1", "--out", "S", match="exists and is not a folder this command wrote")


def test_force_onto_a_mount_point_is_refused_and_leaves_nothing(wd):
    os.makedirs("mnt")
    with open("mnt/old.txt", "w") as f:
        f.write("old")
    wd.fails(*densify("--out", "mnt", "--force"), match="is a mount point", env={"FAULT_MOUNTPOINT": "mnt"})
    assert [n for n in os.listdir(wd.root) if n.startswith(".mnt.")] == []


def test_failed_replace_restores_the_previous_output(tmp_path, monkeypatch):
    from fastvdm.outdir import staged_output_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    real_rename = os.rename

    def rename(src, dst):
        if os.path.basename(str(src)).startswith(".out.tmp-"):
            raise OSError(18, "Invalid cross-device link", str(src))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        with staged_output_dir(str(out), force=True) as tmp:
            with open(os.path.join(tmp, "new.txt"), "w") as f:
                f.write("new")
    assert sorted(os.listdir(tmp_path)) == ["out"] and (out / "old.txt").read_text() == "old"


def test_stale_temporaries_of_dead_processes_only(tmp_path):
    from fastvdm.outdir import stale_temporaries
    from fastvdm.train.checkpoint import stale_temps

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f".o.tmp-{dead.pid}-abc", f".o.old-{dead.pid}-xyz", f".o.tmp-{os.getpid()}-live", ".o.tmp-legacy",
                 f".other.tmp-{dead.pid}-abc"):
        (tmp_path / name).mkdir()
    got = sorted(os.path.basename(p) for p in stale_temporaries(str(tmp_path / "o")))
    assert got == sorted([f".o.tmp-{dead.pid}-abc", f".o.old-{dead.pid}-xyz", ".o.tmp-legacy"])
    (tmp_path / "checkpoints").mkdir()
    for name in (f"step_00000001.safetensors.tmp-{dead.pid}", f"step_00000002.safetensors.tmp-{os.getpid()}"):
        (tmp_path / "checkpoints" / name).write_bytes(b"x")
    assert [os.path.basename(p) for p in stale_temps(str(tmp_path))] == [f"step_00000001.safetensors.tmp-{dead.pid}"]


# ---------------------------------------- 6. demo
def test_demo_refuses_to_overwrite_an_existing_folder(wd):
    os.makedirs("fastvdm-demo")
    for n in ("grid.png", "metrics.json"):
        with open(os.path.join("fastvdm-demo", n), "w") as f:
            f.write("mine")
    wd.fails("demo", "--teacher-steps", "1", "--no-progress", match="fastvdm-demo (")
    assert "exists and is not empty (use --force" in wd.fails("demo", "--no-progress", match="demo: error:")


def test_demo_interrupted_leaves_nothing(wd, tmp_path):
    wd.snapshot()
    flag = str(tmp_path / "writing")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "faultwrap.py"), "demo", "--teacher-steps", "1",
                             "--no-progress", "--threads", "1"], cwd=wd.root,
                            env=subprocess_env(FAULT_PAUSE_AFTER="1", FAULT_PAUSE_FILE=flag),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell that started pytest in the background ignores SIGINT for its children;
                            # give the child the default disposition, as an interactive user's command has
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(flag, proc, timeout=300)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    wd.assert_unchanged()


# ---------------------------------------- 8. wrong model
def test_teacher_as_student_is_refused(wd):
    wd.fails(*densify("--out", "dense", "--ckpt", "teacher_tiny"), match="is a teacher model, not a student")


def test_local_folder_shadowing_a_shipped_name_is_noted(wd, capsys):
    from fastvdm.pipeline import resolve_model_path, shipped_models

    os.makedirs("tiny")
    capsys.readouterr()
    assert resolve_model_path("tiny", "student") == "tiny"
    assert "not the shipped model of that name (write shipped:tiny" in capsys.readouterr().err
    assert resolve_model_path("shipped:tiny", "student") == shipped_models()["student_tiny"]
    os.rmdir("tiny")
    assert resolve_model_path("tiny", "student") == shipped_models()["student_tiny"]


# ---------------------------------------- 9. ops
@pytest.mark.parametrize("groups", [2.5, "4", 2.0, True])
def test_group_norm_num_groups_must_be_an_int(groups):
    import fastvdm.ops as ops

    with pytest.raises(TypeError, match="num_groups must be an int"):
        ops.group_norm(torch.randn(2, 8, 5), groups)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_double_backward_says_unsupported(backend):
    import fastvdm.ops as ops

    if backend not in ops.available_backends("group_norm"):
        pytest.skip(f"{backend} not available here")
    x = torch.randn(2, 8, 3, 4, requires_grad=True)
    with ops.use_backend(backend):
        y = ops.group_norm(x, 4, activation="silu")
        (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        with pytest.raises(ops.BackendUnavailableError, match=f"double backward .* not supported by the '{backend}'"):
            g.sum().backward()
    with ops.use_backend("reference"):  # what the message recommends works
        y = ops.group_norm(x, 4, activation="silu")
        (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        g.sum().backward()


@pytest.mark.parametrize("scale", [1e20, 1e25])
def test_group_norm_overflowing_inputs_give_nan_not_finite_garbage(scale):
    """Triton returned finite ~1e22 on 1e20 inputs (the fp32 variance overflowed and was clamped to 0) where
    the reference returns NaN. Every backend now gives, per group, NaN or the right value (float64 truth);
    where the reference is NaN everywhere (1e25), so is every backend."""
    import fastvdm.ops as ops

    x = torch.randn(2, 8, 3, 4) * scale
    truth = torch.nn.functional.group_norm(x.double(), 4).float().reshape(2, 4, -1)
    with ops.use_backend("reference"):
        ref_nan = ops.group_norm(x, 4).isnan()
    for b in ops.available_backends("group_norm"):
        with ops.use_backend(b):
            got = ops.group_norm(x, 4).reshape(2, 4, -1)
        if b != "reference":
            nan = got.isnan().all(-1)
            ok = torch.isfinite(got).all(-1) & ((got - truth).abs().amax(-1) < 1e-3)
            assert (nan | ok).all(), b
        if bool(ref_nan.all()):
            assert got.isnan().all(), b
# ---------------------------------------- held already
def test_corrupt_checkpoint(wd):
    with open("broken.safetensors", "wb") as f:
        f.write(b"\x00" * 100)
    wd.fails(*densify("--out", "dense", "--ckpt", "broken.safetensors"), match="corrupt or not a safetensors file")


def test_missing_transforms_and_nan_depth(wd):
    _set_depth(wd, lambda d: np.where(d > 0, np.nan, 0))
    wd.fails(*densify("--out", "dense"), match="contains NaN or infinite values")
    os.remove(os.path.join(wd.scene, "transforms.json"))
    wd.fails(*densify("--out", "dense"), match="transforms.json not found")


def test_debug_shows_the_traceback_and_bugs_keep_it(wd, monkeypatch):
    wd.snapshot()
    rc, out, err = wd.run("--debug", *densify("--out", "S", "--force"))
    assert rc == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("fastvdm densify: error:")
    import fastvdm.data.scene_io as scene_io

    def bug(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(scene_io, "read_scene", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        fastvdm_main(list(densify("--out", "dense")))
    wd.assert_unchanged()


def test_a_good_run_still_works_and_writes_only_its_output(wd):
    wd.snapshot()
    rc, out, err = wd.run(*densify("--out", "dense", "--steps", "1"))
    assert rc == 0, err
    assert os.path.isfile(os.path.join("dense", "transforms.json"))
    assert [n for n in os.listdir(wd.root) if n.startswith(".")] == []
    wd.assert_unchanged(ignore=("dense",))


def _tmpfs(path: str, size: str) -> bool:
    """Mount a small tmpfs at ``path`` (root only); False where that is not possible."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True).returncode == 0


def test_really_full_disk(wd):
    """A real full file system (a 64 KiB tmpfs; needs root, else skipped: the simulated cases above still run):
    scene export and a checkpoint save both end in one line, leaving nothing but the run folder's small files."""
    full = os.path.join(wd.tmp, "full")
    if not _tmpfs(full, "64k"):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        wd.fails("data", "make", "--out", os.path.join(full, "d"), "--scenes", "2", "--size", "64", "--views", "4",
                 "--no-progress", match="No space left on device")
        assert os.listdir(full) == []
        run = os.path.join(full, "run")
        wd.fails("train", "teacher", "--synthetic", "--steps", "1", "--out", run, "--frames", "4", "--size", "16",
                 "--clips", "2", "--batch", "1", "--threads", "1", "--warmup", "0", match="No space left on device")
        assert os.listdir(os.path.join(run, "checkpoints")) == []  # the partial temp file was removed
    finally:
        subprocess.run(["umount", full], capture_output=True)


def test_checkpoint_save_on_a_full_disk_is_an_os_error(tmp_path, monkeypatch):
    """safetensors reports a full disk as SafetensorError("... os error 28"): it becomes an OSError (one line)."""
    import errno

    import safetensors.torch

    from fastvdm.train.checkpoint import atomic_save

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError) as e:
        atomic_save({"x": torch.zeros(2)}, {}, str(tmp_path / "c.safetensors"))
    assert e.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []


def test_really_read_only_disk(wd):
    """A real read-only file system (tmpfs remounted ro; needs root, else skipped): refused before any work."""
    ro = os.path.join(wd.tmp, "ro")
    if not _tmpfs(ro, "1m"):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        assert subprocess.run(["mount", "-o", "remount,ro", ro], capture_output=True).returncode == 0
        line = wd.fails(*densify("--out", os.path.join(ro, "dense")), match="cannot write in")
        assert "Read-only file system" in line
    finally:
        subprocess.run(["umount", ro], capture_output=True)


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_colour_png_is_scaled_not_clipped(tmp_path, channels, capsys):
    """48/64-bit PNGs (PIL reads them as 8-bit RGB/RGBA): values come back scaled to [0, 1] (to 8-bit precision)."""
    import cv2

    from fastvdm.data.scene_io import read_image

    a = (np.random.default_rng(0).random((6, 5, channels)) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "x.png"), a)
    rgb, alpha = read_image(str(tmp_path / "x.png"), "test")
    want = torch.from_numpy(a[..., 2::-1].astype(np.float64) / 65535).permute(2, 0, 1)
    assert alpha == (channels == 4)
    assert (rgb.double() - want).abs().max() < 1 / 255  # PIL keeps the high byte


def test_stale_file_temps_of_dead_processes(tmp_path):
    from fastvdm.outdir import sweep_stale_file_temps

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for n in (f"c.safetensors.tmp-{dead.pid}", f"c.safetensors.tmp-{os.getpid()}", f"d.safetensors.tmp-{dead.pid}"):
        (tmp_path / n).write_bytes(b"x")
    removed = sweep_stale_file_temps(str(tmp_path / "c.safetensors"), quiet=True)
    assert [os.path.basename(p) for p in removed] == [f"c.safetensors.tmp-{dead.pid}"]
    assert sorted(os.listdir(tmp_path)) == sorted([f"c.safetensors.tmp-{os.getpid()}", f"d.safetensors.tmp-{dead.pid}"])


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_attention_double_backward_says_unsupported(backend):
    import fastvdm.ops as ops

    if backend not in ops.available_backends("video_attention"):
        pytest.skip(f"{backend} not available here")
    q = torch.randn(1, 2, 4, 1, 8, requires_grad=True)
    with ops.use_backend(backend):
        o = ops.video_attention(q, q, q, "joint")
        (g,) = torch.autograd.grad(o.square().sum(), q, create_graph=True)
        with pytest.raises(ops.BackendUnavailableError, match=f"not supported by the '{backend}' backend; no backend"):
            g.sum().backward()


def test_output_file_guard(tmp_path):
    """`--json` style outputs: never an input, never a folder, never through a file, empty refused."""
    from fastvdm.errors import OutputError
    from fastvdm.outdir import check_output_file

    (tmp_path / "ckpt.safetensors").write_bytes(b"x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "f").write_text("x")
    for path, match in ((tmp_path / "ckpt.safetensors", "is the input"), (tmp_path / "dir", "is a folder"),
                        (tmp_path / "f" / "x.json", "is a file, not a folder"), ("", "is empty")):
        with pytest.raises(OutputError, match=match):
            check_output_file(str(path), [str(tmp_path / "ckpt.safetensors")], "--json")
    assert check_output_file(str(tmp_path / "new" / "eval.json"), [], "--json").endswith("eval.json")
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_sample_writes_beside_the_scene_never_inside(wd):
    """`fastvdm sample` wrote SCENE/samples (inside the input); its default is now SCENE_samples beside it."""
    from fastvdm.pipeline import shipped_models

    wd.snapshot()
    teacher = shipped_models()["teacher_tiny"]
    rc, out, err = wd.run("sample", "--ckpt", teacher, "--scene", "S", "--steps", "1", "--frames", "2")
    assert rc == 0, err
    assert os.path.isfile(os.path.join("S_samples", "grid.png"))
    wd.assert_unchanged(ignore=("S_samples",))
    wd.fails("sample", "--ckpt", teacher, "--scene", "S", "--steps", "1", "--frames", "2", "--out", "S/samples",
             match="lies inside the input S")


def test_sigterm_cleans_up_like_ctrl_c(wd, tmp_path):
    """SIGTERM (a job scheduler's stop) while writing: the staged folder is removed, exit 130, one line."""
    wd.snapshot()
    flag = str(tmp_path / "writing")
    argv = ["data", "make", "--out", "made", "--scenes", "1", "--size", "16", "--views", "3", "--no-progress"]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "faultwrap.py")] + argv, cwd=wd.root,
                            env=subprocess_env(FAULT_PAUSE_AFTER="2", FAULT_PAUSE_FILE=flag),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(flag, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    wd.assert_unchanged()
