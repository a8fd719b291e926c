"""fastvdm: fast video-diffusion novel-view synthesis on hand-written Triton and CUDA C++ kernels.

Submodules are imported on demand so that `import fastvdm` stays cheap:
``fastvdm.ops`` (the kernel-backed ops), ``fastvdm.data``, ``fastvdm.models``, ``fastvdm.diffusion``,
``fastvdm.train``, ``fastvdm.distill``. ``fastvdm.load_student`` / ``fastvdm.load_teacher`` (from
:mod:`fastvdm.pipeline`) load the shipped or a trained model as a ready-to-call pipeline.
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import fastvdm` does not import torch
    if name in ("load_student", "load_teacher", "NVSPipeline"):
        from fastvdm import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'fastvdm' has no attribute {name!r}")
