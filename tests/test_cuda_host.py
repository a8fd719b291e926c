"""Host-side tests of the CUDA kernels' launch logic (csrc/tests/*.cpp), run here without a GPU.

The launch configuration, grid sizing (huge batches, tails), strided addressing and shared-memory layouts of
csrc/cuda/*.cu live in plain C++ headers (csrc/cuda/*_launch.h). These tests build the C++ test programs with
CMake (``-DFASTVDM_CUDA=OFF``: only the host tests are built, no nvcc needed) and run them through ctest; without
cmake they are compiled directly with the C++ compiler.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST_TESTS = sorted(p.stem for p in (ROOT / "csrc" / "tests").glob("test_*.cpp"))


def _run(cmd, cwd=None, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def host_build(tmp_path_factory):
    """A CMake build directory with the host-side test programs (None when cmake is not installed)."""
    if shutil.which("cmake") is None or shutil.which("ctest") is None:
        return None
    build = tmp_path_factory.mktemp("csrc_host_build")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(["cmake", "-S", str(ROOT), "-B", str(build), *gen, "-DFASTVDM_CUDA=OFF", "-DCMAKE_BUILD_TYPE=Release"])
    _run(["cmake", "--build", str(build), "-j2", "--target", *HOST_TESTS])
    return build


def test_host_tests_exist():
    assert {"test_losses_launch", "test_group_norm_launch", "test_attention_launch"} <= set(HOST_TESTS)


@pytest.mark.parametrize("name", HOST_TESTS)
def test_cuda_launch_logic(name, host_build, tmp_path):
    if host_build is not None:
        out = _run(["ctest", "--test-dir", str(host_build), "--output-on-failure", "-R", f"^{name}$"])
        assert "1 tests passed" in out or "100% tests passed" in out, out
        return
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("neither cmake nor a C++ compiler is available")
    exe = tmp_path / name
    _run([cxx, "-std=c++17", "-O1", "-I", str(ROOT / "csrc"), str(ROOT / "csrc" / "tests" / f"{name}.cpp"), "-o", str(exe)])
    assert "all checks passed" in _run([str(exe)])
