"""fastvdm: fast video-diffusion novel-view synthesis on hand-written Triton and CUDA C++ kernels.

Submodules are imported on demand so that `import fastvdm` stays cheap:
``fastvdm.ops`` (the kernel-backed ops), ``fastvdm.data``, ``fastvdm.models``, ``fastvdm.diffusion``,
``fastvdm.train``, ``fastvdm.distill``.
"""

__version__ = "0.1.0"
