"""Self-verifying auto (fastvdm.ops._verify): a kernel auto would pick is checked once against the reference;
one that raises or mismatches warns once, naming it, and auto falls back to the next backend for the rest of
the process. On this CPU-only machine FASTVDM_VERIFY=all turns verification on for the CPU-side backends (on a
GPU it is on by default); a deliberately broken kernel is registered with a top auto priority."""

import json
import subprocess
import sys
import warnings

import pytest
import torch

import fastvdm.ops as ops
from fastvdm.ops import _dispatch, _verify


@pytest.fixture(autouse=True)
def _fresh_verdicts(monkeypatch):
    monkeypatch.setenv("FASTVDM_VERIFY", "all")
    _verify.reset()
    yield
    _verify.reset()


def _gn_args():
    x = torch.randn(2, 8, 3, 4, 5)
    return (x, 4, torch.randn(8), torch.randn(8), 1e-5, torch.randn(2, 8), torch.randn(2, 8), "silu")


def _install(monkeypatch, op, fn, backend="cpu"):
    """Register ``fn`` as ``backend``'s ``op`` with the highest CPU auto priority; returns its call counter."""
    calls = []

    def counted(*args):
        calls.append(1)
        return fn(*args)

    impl = _dispatch.Implementation(op, backend, counted, lambda *a: None, {"cpu": 99})
    monkeypatch.setitem(_dispatch._registry[op], backend, impl)
    monkeypatch.setattr(_dispatch, "backend_status", lambda b: None if b in ("reference", backend) else "off")
    return calls


def test_every_cpu_side_backend_passes_its_check():
    rows = _verify.verify_all("cpu")
    assert rows, "no kernel backend was checked"
    assert {r.op for r in rows} == set(ops.OPS)
    bad = [r for r in rows if not r.ok]
    assert not bad, _verify.format_table(bad)
    assert all(r.max_error is not None and r.max_error < 2e-2 for r in rows)


@pytest.mark.parametrize("failure", ["mismatch", "raises", "nan"])
def test_failing_kernel_warns_once_and_auto_falls_back(monkeypatch, failure):
    from fastvdm.ops import reference

    def broken(x, num_groups, weight, bias, eps, scale, shift, activation):
        if failure == "raises":
            raise RuntimeError("illegal memory access (simulated)")
        y = reference.group_norm(x, num_groups, weight, bias, eps, scale, shift, activation)
        return y * 1.01 if failure == "mismatch" else y + float("nan")

    calls = _install(monkeypatch, "group_norm", broken)
    args = _gn_args()
    with pytest.warns(RuntimeWarning, match=r"cpu kernel for group_norm \(float32 on cpu\) failed its check"):
        y = ops.group_norm(*args)
    checked = len(calls)
    assert checked >= 1  # the check ran the broken kernel ...
    torch.testing.assert_close(y, reference.group_norm(*args))  # ... and the call itself went to the reference
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        for _ in range(3):
            ops.group_norm(*args)
    assert len(calls) == checked  # never called again, never re-checked
    assert ops.selected_backend("group_norm", *args) == "reference"
    [v] = _verify.verdicts()
    assert not v.ok and v.backend == "cpu" and v.op == "group_norm"
    with ops.use_backend("cpu"):  # forcing still reaches the kernel (to debug it)
        if failure == "raises":
            with pytest.raises(RuntimeError, match="simulated"):
                ops.group_norm(*args)
        else:
            ops.group_norm(*args)
    assert len(calls) == checked + 1


def test_failure_is_per_dtype(monkeypatch):
    from fastvdm.ops import reference

    def wrong_in_bf16(x, *rest):
        y = reference.group_norm(x, *rest)
        return y * 1.2 if x.dtype == torch.bfloat16 else y

    _install(monkeypatch, "group_norm", wrong_in_bf16)
    args = _gn_args()
    assert ops.selected_backend("group_norm", *args) == "cpu"
    bf = tuple(a.bfloat16() if isinstance(a, torch.Tensor) else a for a in args)
    with pytest.warns(RuntimeWarning, match="bfloat16"):
        assert ops.selected_backend("group_norm", *bf) == "reference"
    assert ops.selected_backend("group_norm", *args) == "cpu"


def test_a_correct_kernel_is_checked_once_and_kept(monkeypatch):
    from fastvdm.ops import reference

    calls = _install(monkeypatch, "dmd_loss", reference.dmd_loss)
    x = torch.randn(2, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            ops.dmd_loss(x, torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    [v] = _verify.verdicts()
    assert v.ok and v.max_error < 1e-6  # fp32 reference vs float64
    assert len(calls) == 2 + 3  # two check cases, then the three calls


def test_default_mode_verifies_gpus_only(monkeypatch):
    monkeypatch.delenv("FASTVDM_VERIFY")
    assert _verify.enabled_for("cuda") and not _verify.enabled_for("cpu")
    monkeypatch.setenv("FASTVDM_VERIFY", "0")
    assert not _verify.enabled_for("cuda")


def test_verdicts_are_cached_on_disk_per_install(monkeypatch, tmp_path):
    from fastvdm.ops import reference

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_verify, "_cache_enabled", lambda device: True)

    def wrong(x, *rest):
        return reference.dmd_loss(x, *rest) * 2

    calls = _install(monkeypatch, "dmd_loss", wrong)
    x = torch.randn(2, 3, 4)
    with pytest.warns(RuntimeWarning):
        ops.dmd_loss(x, x + 1, x - 1)
    path = tmp_path / "fastvdm" / "verify" / "cpu.json"
    saved = json.loads(path.read_text())
    assert saved["fingerprint"] == _verify.install_fingerprint()
    assert [r["ok"] for r in saved["verdicts"]] == [False]
    _verify.reset()  # a new process on the same machine and install: the verdict comes from disk
    n = len(calls)
    ops.dmd_loss(x, x + 1, x - 1)
    assert len(calls) == n and ops.selected_backend("dmd_loss", x, x, x, None) == "reference"
    saved["fingerprint"] = "another-install"  # another version or edited kernels: checked again
    path.write_text(json.dumps(saved))
    _verify.reset()
    with pytest.warns(RuntimeWarning):
        ops.dmd_loss(x, x + 1, x - 1)
    assert len(calls) > n


def test_info_verify_prints_the_table():
    proc = subprocess.run(
        [sys.executable, "-m", "fastvdm", "info", "--verify"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verification against the float64 reference" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if " PASS " in line]
    assert any(line.startswith("group_norm") for line in rows), proc.stdout
    assert " FAIL " not in proc.stdout
