"""The compiled extensions: ``fastvdm._C_cpu`` (csrc/cpu, OpenMP) and ``fastvdm._C_cuda`` (csrc/cuda).

Importing an extension registers its kernels as torch ops (``torch.ops.fastvdm_cpu.*`` and
``torch.ops.fastvdm_cuda.*``). Both are optional: a source checkout installed with ``FASTVDM_SKIP_EXT=1``
or without a CUDA toolkit simply lacks them, and the corresponding backend reports why.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

import torch


# name -> (module or None, why it is unavailable or None). A plain dict rather than functools.lru_cache so that
# torch.compile can trace a status check (after the first, eager, call has filled it).
_imported: dict[str, tuple[Optional[ModuleType], Optional[str]]] = {}


def _import(name: str) -> tuple[Optional[ModuleType], Optional[str]]:
    if name not in _imported:
        try:
            _imported[name] = importlib.import_module(name), None
        except ImportError as e:
            _imported[name] = None, f"{name} is not built ({e}); reinstall with `pip install --no-build-isolation -e .`"
    return _imported[name]


def cpu_extension() -> ModuleType:
    """The CPU extension module (raises if it is not built)."""
    module, why = _import("fastvdm._C_cpu")
    if module is None:
        raise ImportError(why)
    return module


def cpu_status() -> Optional[str]:
    """Why the ``cpu`` backend is unavailable, or None."""
    return _import("fastvdm._C_cpu")[1]


def cuda_status() -> Optional[str]:
    """Why the ``cuda`` backend is unavailable, or None."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    return _import("fastvdm._C_cuda")[1]


def openmp_threads() -> Optional[int]:
    """OpenMP threads the CPU extension will use (None if it is not built)."""
    module, _ = _import("fastvdm._C_cpu")
    return None if module is None else int(module.openmp_threads())
