"""Verify before trusting: ``auto`` checks a kernel once against the reference before it uses it.

The first time ``auto`` would pick an (op, backend, dtype, device) combination on a device type where
verification is on (CUDA by default), that backend's implementation runs once on small fresh random inputs
(odd sizes, strided views) and its output and gradients are compared with the float64 reference
(:mod:`fastvdm.ops.reference`) at the DESIGN.md tolerances (relative error ||out - ref|| / ||ref||: fp32
1e-4, attention 2e-4, bf16/fp16 2e-2; any NaN fails). A kernel that raises or mismatches gets one warning
naming it and is skipped by ``auto`` for the rest of the process (the next backend by priority serves, in the
end the reference). ``use_backend`` / ``FASTVDM_BACKEND`` still force a backend without any check.

Environment:
- ``FASTVDM_VERIFY``: ``cuda`` (default: verify on GPUs only), ``all`` (every device type, the CPU backends
  too), ``0`` (never verify: trust every backend, as before).
- ``FASTVDM_VERIFY_CACHE``: ``1`` (default) keeps verdicts for GPUs in
  ``$XDG_CACHE_HOME/fastvdm/verify/`` (``~/.cache`` by default), one JSON file per device name, keyed by the
  fastvdm, torch and Triton versions and a digest of the kernel sources and extension binaries, so a later
  process on the same machine and install does not re-run the checks; ``0`` keeps them in memory only.

``fastvdm info --verify`` runs every check (:func:`verify_all`) and prints :func:`format_table`.
Under ``torch.compile`` no check runs (it cannot be traced): verdicts already known are used, an unknown
combination is trusted; run one eager call (or ``fastvdm info --verify``) first on a new machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

# DESIGN.md tolerances (relative error against the float64 reference).
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2, torch.float64: 1e-10}
ATTENTION_TOLERANCE = {torch.float32: 2e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2, torch.float64: 1e-10}


@dataclass
class Verdict:
    """Outcome of one check. ok: passed; detail: why not (or "passed"); max_error: worst relative error seen
    over the forward and every gradient of every case (None if it raised); seconds: wall time of the check."""

    op: str
    backend: str
    dtype: str
    device: str
    ok: bool
    detail: str
    max_error: Optional[float] = None
    seconds: float = 0.0


_verdicts: dict[tuple[str, str, str, str], Verdict] = {}
_lock = threading.RLock()
_local = threading.local()  # .active: a check is running in this thread (no nested checks)
_disk_loaded: set[str] = set()


# ------------------------------------------------------------------------------------------------ policy
def _verify_mode() -> str:
    mode = os.environ.get("FASTVDM_VERIFY", "cuda").strip().lower() or "cuda"
    return mode


def enabled_for(device_type: str) -> bool:
    """Whether ``auto`` verifies backends on this device type (``FASTVDM_VERIFY``)."""
    mode = _verify_mode()
    if mode in ("0", "off", "no", "false"):
        return False
    if mode == "all":
        return True
    return device_type in {m.strip() for m in mode.split(",")}


def _device_key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def _key(op: str, backend: str, dtype: torch.dtype, device: torch.device) -> tuple[str, str, str, str]:
    return (op, backend, str(dtype).replace("torch.", ""), _device_key(device))


def trusted(impl, device: torch.device, args: tuple) -> bool:
    """Whether ``auto`` may use ``impl`` for a call with ``args`` on ``device`` (runs the check the first time).

    The reference is always trusted; so is everything where verification is off for the device type."""
    if impl.backend == "reference" or not enabled_for(device.type):
        return True
    dtype = args[0].dtype
    key = _key(impl.op, impl.backend, dtype, device)
    verdict = _verdicts.get(key)
    if verdict is not None:
        return verdict.ok
    if torch.compiler.is_compiling() or getattr(_local, "active", False):
        return True
    verdict = verify(impl.op, impl.backend, dtype, device)
    return verdict.ok


def reset() -> None:
    """Forget every verdict held in memory (tests; the disk cache is untouched)."""
    with _lock:
        _verdicts.clear()
        _disk_loaded.clear()


def verdicts() -> list[Verdict]:
    """Every verdict of this process so far."""
    return list(_verdicts.values())


# ------------------------------------------------------------------------------------------------ disk cache
def _cache_enabled(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get("FASTVDM_VERIFY_CACHE", "1") != "0"


def install_fingerprint() -> str:
    """Digest of what a verdict depends on: fastvdm/torch/Triton versions, the kernel sources and the compiled
    extensions (so an edited kernel or a rebuilt extension is checked again)."""
    import fastvdm

    h = hashlib.sha256()
    h.update(f"{fastvdm.__version__}|{torch.__version__}|{torch.version.cuda}".encode())
    try:
        import triton

        h.update(triton.__version__.encode())
    except ImportError:
        pass
    roots = [os.path.dirname(os.path.abspath(fastvdm.__file__))]
    try:
        import fastvdm.kernels as kernels_pkg

        roots.append(os.path.dirname(os.path.abspath(kernels_pkg.__file__)))
    except ImportError:
        pass
    for root in roots:
        for sub in ("", "ops", "ops/cpu", "ops/cuda", "ops/triton"):
            folder = os.path.join(root, sub)
            if not os.path.isdir(folder):
                continue
            for name in sorted(os.listdir(folder)):
                if name.endswith((".py", ".so", ".pyd")):
                    with open(os.path.join(folder, name), "rb") as f:
                        h.update(name.encode())
                        h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def _cache_path(device: torch.device) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return os.path.join(base, "fastvdm", "verify", f"{safe}.json")


def _load_disk(device: torch.device) -> None:
    path = _cache_path(device)
    if path in _disk_loaded:
        return
    _disk_loaded.add(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return
    if data.get("fingerprint") != install_fingerprint():
        return
    dev = _device_key(device)
    for row in data.get("verdicts", []):
        v = Verdict(**{**row, "device": dev})
        _verdicts.setdefault((v.op, v.backend, v.dtype, v.device), v)


def _save_disk(device: torch.device) -> None:
    path = _cache_path(device)
    dev = _device_key(device)
    rows = [asdict(v) for v in _verdicts.values() if v.device == dev]
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"fingerprint": install_fingerprint(), "verdicts": rows}, f, indent=1)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError:
        pass  # a read-only home only costs re-running the checks


# ------------------------------------------------------------------------------------------------ the checks
def _cases(op: str, dtype: torch.dtype, device: torch.device, gen: torch.Generator) -> list[tuple[tuple, list[int]]]:
    """Small fresh random inputs for ``op``: a list of (positional args, indices of the differentiable args).
    Odd sizes and strided views (a fused QKV projection, a transposed x) on purpose."""

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)

    if op == "video_attention":
        cases = []
        for axis, (B, T, S) in (("spatial", (2, 3, 37)), ("temporal", (2, 9, 5)), ("joint", (1, 3, 13))):
            qkv = randn(B, T, S, 3, 2, 32)  # (B, T, S, 3, heads, D): q, k, v are strided views into one tensor
            q, k, v = qkv.unbind(3)
            cases.append(((q, k, v, axis, None), [0, 1, 2]))
        return cases
    if op == "group_norm":
        x = randn(2, 12, 3, 7, 5).transpose(3, 4)  # (B, C, T, W, H) view: non-contiguous
        B, C = x.shape[:2]
        w, b, sc, sh = randn(C), randn(C), 0.5 * randn(B, C), randn(B, C)
        return [
            ((x, 4, w, b, 1e-5, sc, sh, "silu"), [0, 2, 3, 5, 6]),
            ((randn(3, 8, 5, 11), 2, None, None, 1e-5, None, None, None), [0]),
        ]
    if op == "denoising_loss":
        shape = (3, 4, 5, 7)
        cases = []
        for target in ("eps", "x0", "v"):
            a = torch.rand(3, generator=gen).to(device=device, dtype=dtype)
            w = (torch.rand(3, generator=gen) + 0.5).to(device=device, dtype=dtype)
            args = (randn(*shape), randn(*shape), randn(*shape), a, (1 - a * a).sqrt(), w, target)
            cases.append((args, [0]))
        return cases
    if op == "dmd_loss":
        shape = (3, 4, 5, 7)
        w = torch.rand(3, generator=gen).to(device=device, dtype=dtype)
        return [((randn(*shape), randn(*shape), randn(*shape), w), [0]), ((randn(*shape), randn(*shape), randn(*shape), None), [0])]
    if op == "conv3d":
        x = randn(2, 5, 6, 9, 7)
        return [
            ((x, randn(6, 5, 3, 3, 3), randn(6), (1, 1, 1), (1, 1, 1), (1, 1, 1)), [0, 1, 2]),
            ((x, randn(4, 5, 1, 3, 3), None, (1, 2, 2), (0, 1, 1), (1, 1, 1)), [0, 1]),
        ]
    raise ValueError(f"no verification inputs for op {op!r}")


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    if out.shape != ref.shape:
        return float("inf")
    if not torch.isfinite(out).all():
        return float("nan")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def _run(fn: Callable, args: tuple, grad_idx: list[int], grad_out_seed: int, grad_dtype: torch.dtype):
    """fn(*args) and the gradients of the differentiable args under a random upstream gradient (drawn in
    float64, rounded to ``grad_dtype`` so the kernel and the reference see the same values)."""
    leaves = {i: args[i].detach().clone().requires_grad_(True) for i in grad_idx}
    call = tuple(leaves.get(i, a) for i, a in enumerate(args))
    out = fn(*call)
    g = torch.Generator().manual_seed(grad_out_seed)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(grad_dtype)
    grad_out = grad_out.to(device=out.device, dtype=out.dtype)
    grads = torch.autograd.grad(out, [leaves[i] for i in grad_idx], grad_outputs=grad_out)
    return out, grads


def check(op: str, impl_fn: Callable, dtype: torch.dtype, device: torch.device, supports=None, seed=None):
    """Compare ``impl_fn`` with the float64 reference of ``op`` on fresh random inputs.
    Returns (ok, detail, max_error)."""
    from fastvdm.ops import reference

    ref_fn = getattr(reference, op)
    tol = (ATTENTION_TOLERANCE if op == "video_attention" else TOLERANCE)[dtype]
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n, (args, grad_idx) in enumerate(_cases(op, dtype, device, gen)):
        if supports is not None:
            why = supports(*args)
            if why is not None:
                return False, f"rejects the check's inputs ({why})", None
        try:
            out, grads = _run(impl_fn, args, grad_idx, seed + n, dtype)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as e:  # a kernel that cannot even run is the case this module exists for
            return False, f"raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", None
        args64 = tuple(a.double() if isinstance(a, torch.Tensor) else a for a in args)
        out_ref, grads_ref = _run(ref_fn, args64, grad_idx, seed + n, dtype)
        for what, got, want in [("output", out, out_ref)] + [
            (f"grad of arg {i}", g, r) for i, g, r in zip(grad_idx, grads, grads_ref)
        ]:
            err = _rel_error(got, want)
            if not err <= tol:  # NaN fails too
                return False, f"{what} of case {n} off: relative error {err:.2e} > {tol:.0e}", err
            worst = max(worst, err)
    return True, "passed", worst


def verify(op: str, backend: str, dtype: torch.dtype, device: torch.device, force: bool = False) -> Verdict:
    """The verdict for (op, backend, dtype, device): cached, else checked now (and warned about on failure)."""
    from fastvdm.ops import _dispatch

    device = torch.device(device)
    key = _key(op, backend, dtype, device)
    with _lock:
        if _cache_enabled(device) and not force:
            _load_disk(device)
        if not force and key in _verdicts:
            return _verdicts[key]
        impl = _dispatch._registry[op].get(backend)
        t0 = time.perf_counter()
        if impl is None:
            ok, detail, err = False, f"backend {backend!r} does not implement {op}", None
        else:
            _local.active = True
            try:
                ok, detail, err = check(op, impl.fn, dtype, device, supports=impl.supports)
            finally:
                _local.active = False
        verdict = Verdict(op, backend, key[2], key[3], ok, detail, err, time.perf_counter() - t0)
        _verdicts[key] = verdict
        if not ok and impl is not None:
            warnings.warn(
                f"fastvdm: the {backend} kernel for {op} ({key[2]} on {key[3]}) failed its check against the "
                f"reference ({detail}); auto falls back to the next backend for the rest of this process "
                f"(force it with use_backend({backend!r}) to debug)",
                RuntimeWarning,
                stacklevel=2,
            )
        if _cache_enabled(device):
            _save_disk(device)
        return verdict


def verifiable(device: torch.device) -> list[tuple[str, str, torch.dtype]]:
    """Every (op, backend, dtype) a check applies to on ``device``: the non-reference backends available here
    that accept that device, in the dtypes they would serve there."""
    from fastvdm.ops import OPS, _dispatch, available_backends

    device = torch.device(device)
    dtypes = [torch.float32, torch.bfloat16, torch.float16] if device.type == "cuda" else [torch.float32, torch.bfloat16]
    rows = []
    for op in OPS:
        for backend in available_backends(op):
            if backend == "reference":
                continue
            impl = _dispatch._registry[op][backend]
            gen = torch.Generator().manual_seed(0)
            for dtype in dtypes:
                args = _cases(op, dtype, device, gen)[0][0]
                if impl.supports(*args) is None:
                    rows.append((op, backend, dtype))
    return rows


def verify_all(device=None, force: bool = True) -> list[Verdict]:
    """Run every applicable check on ``device`` (default: the current GPU, else the CPU) and return them."""
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    return [verify(op, backend, dtype, device, force=force) for op, backend, dtype in verifiable(device)]


def format_table(rows: list[Verdict]) -> str:
    """The verification table (one line per check), as ``fastvdm info --verify`` prints it."""
    head = f"{'op':<16} {'backend':<9} {'dtype':<9} {'device':<8} {'result':<6} {'max rel err':>11} {'time s':>7}  detail"
    lines = [head, "-" * len(head)]
    for v in rows:
        err = "-" if v.max_error is None else f"{v.max_error:.2e}"
        lines.append(
            f"{v.op:<16} {v.backend:<9} {v.dtype:<9} {v.device:<8} {'PASS' if v.ok else 'FAIL':<6} {err:>11} "
            f"{v.seconds:>7.2f}  {v.detail}"
        )
    return "\n".join(lines)
