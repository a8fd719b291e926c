"""Build and install fastvdm.

    pip install -r requirements.txt                  # torch==2.13.0 (CPU) and the runtime dependencies
    pip install --no-build-isolation -e .            # torch must be importable at build time

Extensions:
- ``fastvdm._C_cpu`` (csrc/cpu/*.cpp + csrc/torch/cpu_*.cpp, OpenMP): always built.
- ``fastvdm._C_cuda`` (csrc/cuda/*.cu + csrc/torch/cuda_*.cpp): built only where torch has CUDA and nvcc is
  found; otherwise a one-line notice.
- ``FASTVDM_SKIP_EXT=1`` builds none (the ``reference`` backend, and ``triton`` on a GPU, still work).
"""

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(*patterns):
    files = []
    for pattern in patterns:
        files += sorted(glob.glob(os.path.join(ROOT, pattern)))
    return [os.path.relpath(f, ROOT) for f in files]


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
    include = [os.path.join(ROOT, "csrc")]
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    exts = [
        cpp_extension.CppExtension(
            "fastvdm._C_cpu",
            _sources("csrc/cpu/*.cpp", "csrc/torch/cpu_*.cpp"),
            include_dirs=include,
            extra_compile_args={"cxx": ["-O3", "-std=c++17"] + openmp},
            extra_link_args=openmp,
        )
    ]
    if torch.version.cuda is None:
        print("fastvdm: this torch has no CUDA; skipping the CUDA extension (reference/cpu backends only)")
    elif cpp_extension.CUDA_HOME is None:
        print("fastvdm: nvcc not found (set CUDA_HOME); skipping the CUDA extension")
    else:
        exts.append(
            cpp_extension.CUDAExtension(
                "fastvdm._C_cuda",
                _sources("csrc/cuda/*.cu", "csrc/torch/cuda_*.cpp"),
                include_dirs=include,
                extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": ["-O3", "-std=c++17", "--use_fast_math"]},
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
