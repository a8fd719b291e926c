"""Backend registry and selection for the ops of :mod:`fastvdm.ops`.

Every op (``video_attention``, ``group_norm``, ``denoising_loss``, ``dmd_loss``, ``conv3d``) has one implementation
per backend that serves it. A backend module registers its implementations with :func:`register` when it is
imported; the registry imports backend modules lazily, the first time an op is dispatched or the backends are
listed, so ``import fastvdm.ops`` never pays for Triton or a C++ extension it does not use.

Selection, per call:

1. a backend forced by :func:`use_backend` in the calling thread (innermost context wins; other threads are
   not affected), else
2. a backend forced by the ``FASTVDM_BACKEND`` environment variable (read at call time), else
3. ``auto``: among the backends that implement the op, are available, and accept these inputs, the one with
   the highest ``auto`` priority for the inputs' device type. A backend that has not shown itself faster than
   the reference on a device (see ``bench/``) does not declare a priority there and is never picked by auto.
   On a GPU, auto first verifies the kernel once against the reference and skips one that fails
   (:mod:`fastvdm.ops._verify`).

A forced backend that cannot serve a call raises :class:`BackendUnavailableError` naming the backend and why.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Optional, Sequence

import torch

from fastvdm.errors import UserError
from fastvdm.ops import _verify, cpu_auto

OPS = ("video_attention", "group_norm", "denoising_loss", "dmd_loss", "conv3d")
BACKENDS = ("reference", "triton", "cuda", "cpu")

# Modules that register each backend's implementations. A module that does not exist (yet) is skipped; any
# other import error is a bug and propagates.
_BACKEND_MODULES: dict[str, tuple[str, ...]] = {
    "reference": ("fastvdm.ops.reference",),
    "triton": ("fastvdm.ops.triton.group_norm", "fastvdm.ops.triton.attention", "fastvdm.ops.triton.losses"),
    "cpu": ("fastvdm.ops.cpu.group_norm", "fastvdm.ops.cpu.attention", "fastvdm.ops.cpu.losses",
            "fastvdm.ops.cpu.conv3d"),
    "cuda": ("fastvdm.ops.cuda.group_norm", "fastvdm.ops.cuda.attention", "fastvdm.ops.cuda.losses"),
}


class BackendUnavailableError(UserError, RuntimeError):
    """An op was asked of a backend that cannot serve it (not installed, not implemented, or bad inputs)."""


@dataclass(frozen=True)
class Implementation:
    """One backend's implementation of one op.

    fn: callable with the op's public signature (positional order as in :mod:`fastvdm.ops`).
    supports: ``supports(*args) -> str | None``: why these inputs cannot be served (None if they can).
    auto: device type -> priority for ``auto`` selection (higher wins); absent device = never auto there.
    out_fn: ``out_fn(out, *args)``, the op written into a caller's tensor (``group_norm(..., out=)``), or None
    (the op's public function then computes with ``fn`` and copies).
    """

    op: str
    backend: str
    fn: Callable
    supports: Callable[..., Optional[str]] = field(default=lambda *args: None)
    auto: Mapping[str, int] = field(default_factory=dict)
    out_fn: Optional[Callable] = None


_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
_registry: dict[str, dict[str, Implementation]] = {op: {} for op in OPS}
_loaded: set[str] = set()


class _ThreadForcing(threading.local):
    """Per-thread stack of (backend name, ops it applies to as a sorted tuple, or None for all), innermost last.

    A ``threading.local`` holding a plain *list* (mutated in place, never reassigned): each thread sees only its
    own forcing, and torch.compile traces the read without a graph break and guards on the list's length and
    entries through the thread-local (the guard is evaluated in the calling thread, so a graph compiled under
    one forcing recompiles, not silently reuses, under another). Measured in tests/test_dispatch.py.
    """

    def __init__(self):
        self.stack: list[tuple[str, Optional[tuple]]] = []


_forcing = _ThreadForcing()


def register(
    op: str,
    backend: str,
    fn: Callable,
    supports: Optional[Callable[..., Optional[str]]] = None,
    auto: Optional[Mapping[str, int]] = None,
    out_fn: Optional[Callable] = None,
) -> None:
    """Register ``fn`` as ``backend``'s implementation of ``op`` (called by backend modules at import)."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops are {OPS}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; backends are {BACKENDS}")
    _registry[op][backend] = Implementation(
        op, backend, fn, supports or (lambda *args: None), dict(auto or {}), out_fn
    )


def backend_status(backend: str) -> Optional[str]:
    """Why ``backend`` is unavailable in this process, or None if it is available."""
    if backend == "reference":
        return None
    if backend == "triton":
        if not _TRITON_INSTALLED:
            return "triton is not installed (pip install triton)"
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            return "no CUDA device (on the CPU, Triton runs only under TRITON_INTERPRET=1, for tests)"
        return None
    if backend == "cpu":
        from fastvdm.ops import extensions

        return extensions.cpu_status()
    if backend == "cuda":
        from fastvdm.ops import extensions

        return extensions.cuda_status()
    raise ValueError(f"unknown backend {backend!r}; backends are {BACKENDS}")


def _load(backend: str) -> None:
    if backend in _loaded or backend_status(backend) is not None:
        return
    _loaded.add(backend)
    for module in _BACKEND_MODULES[backend]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if not (module == e.name or module.startswith(f"{e.name}.")):
                raise


def load_available_backends() -> None:
    """Import every available backend's implementations now (``fastvdm.ops`` does this at import, so that
    ``torch.compile`` never has to trace an import)."""
    for backend in BACKENDS:
        _load(backend)


def available_backends(op: Optional[str] = None) -> list[str]:
    """Backends available in this install (with ``op``: only those that implement that op here)."""
    if op is not None and op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops are {OPS}")
    names = []
    for backend in BACKENDS:
        if backend_status(backend) is not None:
            continue
        _load(backend)
        if op is None or backend in _registry[op]:
            names.append(backend)
    return names


@contextlib.contextmanager
def use_backend(name: str, ops: Optional[Sequence[str]] = None) -> Iterator[None]:
    """Force backend ``name`` for every op (or only for ``ops``) inside the ``with`` block.

    ``name="auto"`` restores automatic selection. Nested contexts: the innermost wins for the ops it names.
    """
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {('auto',) + BACKENDS}")
    if ops is not None:
        unknown = set(ops) - set(OPS)
        if unknown:
            raise ValueError(f"unknown ops {sorted(unknown)}; ops are {OPS}")
    entry = (name, tuple(sorted(set(ops))) if ops is not None else None)
    stack = _forcing.stack  # this thread's
    stack.append(entry)
    try:
        yield
    finally:
        if stack and stack[-1] is entry:
            stack.pop()
        else:  # exited out of order (generators): drop this entry only
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] is entry:
                    del stack[i]
                    break


def forced_backend(op: str) -> Optional[str]:
    """The backend forced for ``op`` right now (context manager, then ``FASTVDM_BACKEND``), or None for auto."""
    stack = _forcing.stack
    for i in range(len(stack) - 1, -1, -1):
        name, ops = stack[i]
        if ops is None or op in ops:
            return None if name == "auto" else name
    return env_backend()


def env_backend() -> Optional[str]:
    """The backend forced by the ``FASTVDM_BACKEND`` environment variable (None: unset or ``auto``).

    Raises :class:`BackendUnavailableError` (a one-line message naming the variable) for a value that is not a
    backend name."""
    env = os.environ.get("FASTVDM_BACKEND", "").strip()
    if env and env != "auto":
        if env not in BACKENDS:
            raise BackendUnavailableError(
                f"FASTVDM_BACKEND={env!r} is not a backend; set it to one of {', '.join(('auto',) + BACKENDS)} "
                "or unset it"
            )
        return env
    return None


def resolve(op: str, device: torch.device, *args) -> Implementation:
    """The implementation that serves this call of ``op`` on ``device`` with positional ``args``."""
    forced = forced_backend(op)
    if forced is not None:
        why = backend_status(forced)
        if why is not None:
            raise BackendUnavailableError(f"backend {forced!r} cannot run {op}: {why}")
        _load(forced)
        impl = _registry[op].get(forced)
        if impl is None:
            raise BackendUnavailableError(f"backend {forced!r} does not implement {op}")
        why = impl.supports(*args)
        if why is not None:
            raise BackendUnavailableError(f"backend {forced!r} cannot run {op} on these inputs: {why}")
        return impl
    if device.type == "cpu":  # the CPU per-shape rules (fastvdm/ops/cpu_auto.py); None = use the priorities
        impl = cpu_auto.choose(op, args, _registry, backend_status, _load)
        if impl is not None and _verify.trusted(impl, device, args):
            return impl
    candidates = []
    for backend in BACKENDS:
        if backend_status(backend) is not None:
            continue
        _load(backend)
        impl = _registry[op].get(backend)
        if impl is None or device.type not in impl.auto or impl.supports(*args) is not None:
            continue
        candidates.append(impl)
    # Highest priority first; a kernel auto has not yet verified against the reference on this device is
    # checked once now, and one that failed is skipped (fastvdm.ops._verify).
    for impl in sorted(candidates, key=lambda i: -i.auto[device.type]):
        if _verify.trusted(impl, device, args):
            return impl
    return _registry[op]["reference"]  # the reference serves every device
