"""Build and install fastvdm.

    pip install -r requirements.txt                  # torch==2.13.0 (CPU) and the runtime dependencies
    pip install --no-build-isolation -e .            # torch must be importable at build time

Extensions:
- ``fastvdm._C_cpu`` (csrc/cpu/*.cpp + csrc/torch/cpu_*.cpp, OpenMP): always built.
- ``fastvdm._C_cuda`` (csrc/cuda/*.cu + csrc/torch/cuda_*.cpp): built only where torch has CUDA and the CUDA
  toolkit is found; otherwise a one-line notice. The toolkit root is ``CUDA_HOME`` (or ``CUDA_PATH``) if set,
  else the root behind ``nvcc`` on PATH (its real path, or the ``TOP`` that ``nvcc --dryrun`` reports, so a
  wrapper script or a link in a general ``bin/`` folder is followed), else ``/usr/local/cuda``; a root counts
  only if it has ``include/cuda_runtime_api.h``. Without a GPU to detect, ``TORCH_CUDA_ARCH_LIST`` defaults to
  ``8.0;9.0+PTX`` (the archs CI compiles with CMake). ``FASTVDM_REQUIRE_CUDA=1`` turns a skipped CUDA
  extension into an error (CI uses it).
- Both compile with the C++ standard torch's own headers are built for (read from torch: C++20 for 2.13).
- ``FASTVDM_SKIP_EXT=1`` builds none (the ``reference`` backend, and ``triton`` on a GPU, still work).
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(*patterns):
    files = []
    for pattern in patterns:
        files += sorted(glob.glob(os.path.join(ROOT, pattern)))
    return [os.path.relpath(f, ROOT) for f in files]


def torch_cxx_standard(torch_dir: str, cpp_extension_source: str) -> str:
    """The ``-std=c++NN`` flag torch's headers expect: TorchConfig.cmake's CXX_STANDARD, else the flag
    torch.utils.cpp_extension itself passes, else c++17."""
    config = os.path.join(torch_dir, "share", "cmake", "Torch", "TorchConfig.cmake")
    if os.path.exists(config):
        m = re.search(r"CXX_STANDARD\s+(\d+)", open(config).read())
        if m:
            return f"-std=c++{m.group(1)}"
    found = re.findall(r"-std=c\+\+(\d+)", cpp_extension_source)
    if found:
        return f"-std=c++{max(set(found), key=found.count)}"
    return "-std=c++17"


def _has_cuda_headers(root) -> bool:
    return bool(root) and os.path.isfile(os.path.join(root, "include", "cuda_runtime_api.h"))


def find_cuda_home():
    """(root, None) for the CUDA toolkit root holding include/cuda_runtime_api.h, or (None, one-line why)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root:
            if _has_cuda_headers(root):
                return os.path.abspath(root), None
            return None, (
                f"{var}={root} has no include/cuda_runtime_api.h: set {var} to the CUDA toolkit root "
                "(the folder holding bin/nvcc and include/cuda_runtime_api.h)"
            )
    tried = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        tried.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        try:  # nvcc reports its own install root; this follows wrapper scripts that exec the real nvcc
            out = subprocess.run(
                [nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True, timeout=60
            )
            m = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.M)
            if m:
                tried.append(os.path.normpath(m.group(1).strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    tried.append("/usr/local/cuda")
    for root in tried:
        if _has_cuda_headers(root):
            return os.path.realpath(root), None
    where = "nvcc is not on PATH" if nvcc is None else f"nvcc is {nvcc}"
    return None, (
        f"no CUDA toolkit with include/cuda_runtime_api.h found ({where}; tried {', '.join(dict.fromkeys(tried))}): "
        "set CUDA_HOME=/path/to/cuda (the folder holding bin/nvcc and include/cuda_runtime_api.h)"
    )


def extensions():
    if os.environ.get("FASTVDM_SKIP_EXT", "0") == "1":
        print("fastvdm: FASTVDM_SKIP_EXT=1, building no C++/CUDA extension")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        sys.exit(
            "fastvdm: torch must be installed before building (pip install -r requirements.txt), and pip must "
            "run with --no-build-isolation so the build sees it; or set FASTVDM_SKIP_EXT=1"
        )
    import inspect

    std = torch_cxx_standard(os.path.dirname(torch.__file__), inspect.getsource(cpp_extension))
    include = [os.path.join(ROOT, "csrc")]
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    exts = [
        cpp_extension.CppExtension(
            "fastvdm._C_cpu",
            _sources("csrc/cpu/*.cpp", "csrc/torch/cpu_*.cpp"),
            include_dirs=include,
            extra_compile_args={"cxx": ["-O3", std] + openmp},
            extra_link_args=openmp,
        )
    ]
    require_cuda = os.environ.get("FASTVDM_REQUIRE_CUDA", "0") == "1"
    cuda_home, why = (None, "this torch has no CUDA") if torch.version.cuda is None else find_cuda_home()
    if cuda_home is None:
        if require_cuda:
            sys.exit(f"fastvdm: FASTVDM_REQUIRE_CUDA=1 but the CUDA extension cannot be built: {why}")
        print(f"fastvdm: skipping the CUDA extension: {why}")
    else:
        # torch.utils.cpp_extension guesses CUDA_HOME at import from `which nvcc`; give it the verified root.
        cpp_extension.CUDA_HOME = cuda_home
        os.environ["CUDA_HOME"] = cuda_home
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        print(f"fastvdm: building the CUDA extension with CUDA_HOME={cuda_home} ({std})")
        exts.append(
            cpp_extension.CUDAExtension(
                "fastvdm._C_cuda",
                _sources("csrc/cuda/*.cu", "csrc/torch/cuda_*.cpp"),
                include_dirs=include,
                extra_compile_args={"cxx": ["-O3", std], "nvcc": ["-O3", std, "--use_fast_math"]},
            )
        )
    return exts, {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = extensions()

setup(
    name="fastvdm",
    version="0.1.0",
    description="Fast video-diffusion novel-view synthesis (FVGen) on hand-written Triton and CUDA C++ kernels",
    long_description=open(os.path.join(ROOT, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["fastvdm", "fastvdm.*"]) + ["fastvdm.kernels"],
    package_dir={"fastvdm.kernels": "kernels"},
    package_data={"fastvdm": ["weights/*.json", "weights/*/*.json", "weights/*/*.safetensors"]},  # shipped models
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=[
        "torch>=2.6",
        "numpy",
        "safetensors",
        "tqdm",
        "pillow",
        "scikit-image",
        "opencv-python-headless",  # the inpainting baseline of `fastvdm eval`
    ],
    extras_require={
        "triton": ["triton"],
        "diffusers": ["diffusers>=0.30"],  # fastvdm.integrations.diffusers
        "test": ["pytest", "einops", "triton", "diffusers>=0.30"],
    },
    entry_points={"console_scripts": ["fastvdm=fastvdm.cli:main"]},
)
