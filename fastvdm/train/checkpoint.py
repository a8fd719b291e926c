"""Training checkpoints: one safetensors file per save, written atomically (temp file + fsync + os.replace).

File ``OUT/checkpoints/step_00001234.safetensors`` holds tensors

    model/<name>/<param>        every registered model's state_dict
    ema/<name>/<param>          its EMA copy (models registered with an ema_decay)
    optim/<name>/<pid>/<key>    every optimizer's tensor state (AdamW exp_avg, exp_avg_sq, step)
    rng/<rank>/torch, rng/<rank>/cuda<i>   each rank's torch generator states

and the metadata entry ``meta`` (JSON): format, step, run config, model configs, optimizer param_groups and
non-tensor state, each rank's Python and NumPy RNG states. A crash can leave at most a temp file
``step_XXXXXXXX.safetensors.tmp-<pid>``, never a truncated checkpoint; :func:`latest_checkpoint` ignores temp
files, and :func:`sweep_stale_temps` (run by the training loop at start and after every save) removes those
whose process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Optional

import torch

from fastvdm.errors import UserError

FORMAT = "fastvdm-train-1"
_NAME = re.compile(r"^step_(\d{8})\.safetensors$")


class CheckpointError(UserError):
    """A checkpoint file is missing, corrupt or does not match the models being loaded; the message says which."""


_TEMP = re.compile(r"^.+\.tmp-(\d+)$")


def stale_temps(out_dir: str) -> list[str]:
    """Temp files of fastvdm's atomic writes (``NAME.tmp-<pid>``) in run folder ``out_dir`` and its
    ``checkpoints/`` whose writing process is gone (a SIGKILL during a save)."""
    from fastvdm.outdir import pid_alive

    found = []
    for d in (out_dir, checkpoint_dir(out_dir)):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            m = _TEMP.match(n)
            p = os.path.join(d, n)
            if m and os.path.isfile(p) and not pid_alive(int(m.group(1))):
                found.append(p)
    return sorted(found)


def sweep_stale_temps(out_dir: str, quiet: bool = False) -> list[str]:
    """Remove :func:`stale_temps` of ``out_dir`` (a note on stderr for each); returns the removed paths."""
    import sys

    removed = []
    for p in stale_temps(out_dir):
        try:
            size = os.path.getsize(p)
            os.remove(p)
        except OSError:
            continue
        removed.append(p)
        if not quiet:
            print(f"fastvdm: note: removed {p} ({size / 2 ** 20:.1f} MiB), left by an interrupted save",
                  file=sys.stderr)
    return removed


def checkpoint_dir(out_dir: str) -> str:
    return os.path.join(out_dir, "checkpoints")


def checkpoint_path(out_dir: str, step: int) -> str:
    return os.path.join(checkpoint_dir(out_dir), f"step_{step:08d}.safetensors")


def list_checkpoints(out_dir: str) -> list[tuple[int, str]]:
    """[(step, path)] of the complete checkpoints under ``out_dir``, oldest first."""
    d = checkpoint_dir(out_dir)
    if not os.path.isdir(d):
        return []
    found = [(int(m.group(1)), os.path.join(d, f)) for f in os.listdir(d) if (m := _NAME.match(f))]
    return sorted(found)


def latest_checkpoint(out_dir: str) -> Optional[str]:
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1][1] if ckpts else None


@contextlib.contextmanager
def _staged_file(path: str):
    """Yield a temp path ``path.tmp-<pid>`` to write; on success it is fsynced and renamed to ``path``, on any
    error (or interrupt) removed."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(tensors: dict, meta: dict, path: str) -> None:
    """safetensors file with ``meta`` as JSON metadata, written to a temp file, fsynced, then renamed."""
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _staged_file(path) as tmp:
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp,
                      metadata={"format": FORMAT, "meta": json.dumps(meta)})
        except Exception as e:  # safetensors reports I/O errors (a full disk) as SafetensorError
            m = re.search(r"os error (\d+)", str(e))
            if m is None:
                raise
            code = int(m.group(1))
            raise OSError(code, os.strerror(code), tmp) from None


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file ``path.tmp-<pid>`` (fsynced, renamed; removed on error)."""
    with _staged_file(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def read_checkpoint(path: str) -> tuple[dict, dict]:
    """(tensors, meta) of a checkpoint file; raises FileNotFoundError / CheckpointError naming the problem."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        with safe_open(path, framework="pt") as f:
            md = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a safetensors file: {e}") from None
    if md.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: metadata 'format' is {md.get('format')!r}, expected {FORMAT!r}")
    try:
        meta = json.loads(md["meta"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path}: metadata 'meta' is missing or not JSON ({e})") from None
    return tensors, meta


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or a run folder (its latest checkpoint, else its exported ``model.safetensors``)."""
    if os.path.isdir(path):
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
        export = os.path.join(path, "model.safetensors")
        if os.path.isfile(export):
            return export
        raise FileNotFoundError(f"{path} has no checkpoints/step_*.safetensors and no model.safetensors")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    return path


def save_model(path: str, state_dict: dict, config: dict, name: str = "unet", run_config: Optional[dict] = None,
               **meta) -> str:
    """Write one model's weights as an inference file :func:`load_model` reads: tensors ``model/<name>/*``, meta
    with its config, ``run.config`` (e.g. the ``frames`` and ``size`` it was trained at) and ``meta``. Atomic."""
    out_meta = {"run": {"config": dict(run_config or {})}, "model_configs": {name: dict(config)}, **meta}
    atomic_save({f"model/{name}/{k}": v for k, v in state_dict.items()}, out_meta, path)
    return path


def export_model(src: str, dst: str, name: Optional[str] = None, ema: bool = True, info: Optional[dict] = None) -> str:
    """Write one model of a training checkpoint (or run folder) as a small inference file (:func:`save_model`):
    the EMA weights when ``ema`` and present, the step, the run config, ``exported_from`` and ``info``
    (free-form provenance, e.g. the commands that produced it); no optimizer or RNG state. Returns dst."""
    path = resolve_checkpoint(src)
    tensors, meta = read_checkpoint(path)
    configs = meta.get("model_configs", {})
    if name is None:
        name = "unet" if "unet" in configs else (sorted(configs)[0] if configs else None)
    if name not in configs:
        raise CheckpointError(f"checkpoint {path} has no model {name!r} (it has {sorted(configs)})")
    sd = prefixed(tensors, f"ema/{name}") if ema else {}
    weights = "ema" if sd else "raw"
    if not sd:
        sd = prefixed(tensors, f"model/{name}")
    return save_model(dst, sd, configs[name], name, meta.get("run", {}).get("config", {}), step=meta.get("step"),
                      exported_from=os.path.basename(path), weights=weights, info=info or {})


def prefixed(tensors: dict, prefix: str) -> dict:
    """The entries of ``tensors`` under ``prefix/``, with the prefix removed."""
    p = prefix + "/"
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def load_state_dict_checked(module: torch.nn.Module, sd: dict, what: str) -> None:
    """``module.load_state_dict(sd)`` with a CheckpointError naming missing/unexpected/mis-shaped keys. A module
    sharded by FSDP2 (``fully_shard``: DTensor parameters) gets the full tensors of ``sd`` scattered to its shards
    (``torch.distributed.checkpoint.state_dict.set_model_state_dict``; every rank passes the same ``sd``)."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    bad = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(f"{what}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, "
                              f"shape mismatches {bad[:5]}")
    from torch.distributed.fsdp import FSDPModule

    if isinstance(module, FSDPModule):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, sd, options=StateDictOptions(full_state_dict=True, strict=True))
    else:
        module.load_state_dict(sd)


def load_model(path: str, name: Optional[str] = None, ema: bool = True, device="cpu"):
    """Build and load a model (a VideoUNet wrapped by the denoiser its config names, see
    :func:`fastvdm.diffusion.denoisers.build_denoiser`) from a training checkpoint, a run folder, an exported
    model file, or a ``save_pretrained`` folder. Bare-network checkpoints (the session-1/2 format) load too.

    name: the registered model name (default: the only one / "unet"); ema: the EMA weights when present.
    Returns (model in eval mode, meta dict).
    """
    from fastvdm.diffusion.denoisers import adapt_state_dict, build_denoiser, load_denoiser
    from fastvdm.models.pretrained import is_pretrained_folder

    if os.path.isdir(path) and is_pretrained_folder(path):  # a save_pretrained folder (e.g. a shipped model)
        model, config = load_denoiser(path, device=device)
        stage = "teacher" if config.get("kind") == "teacher" else "distill"
        run = {"config": {"frames": config.get("frames"), "size": config.get("size"), "stage": stage}}
        return model, {"run": run, "step": config.get("provenance", {}).get("step"), "pretrained": config}
    path = resolve_checkpoint(path)
    tensors, meta = read_checkpoint(path)
    configs = meta.get("model_configs", {})
    if not configs:
        raise CheckpointError(f"checkpoint {path} has no model configs")
    if name is None:
        name = "unet" if "unet" in configs else sorted(configs)[0]
    if name not in configs:
        raise CheckpointError(f"checkpoint {path} has no model {name!r} (it has {sorted(configs)})")
    model = build_denoiser(configs[name])
    sd = prefixed(tensors, f"ema/{name}") if ema else {}
    if not sd:
        sd = prefixed(tensors, f"model/{name}")
    check_finite_weights(sd, f"checkpoint {path} model {name!r}")
    load_state_dict_checked(model, adapt_state_dict(model, sd), f"checkpoint {path} model {name!r}")
    return model.to(device).eval(), meta


def check_finite_weights(sd: dict, what: str) -> None:
    """CheckpointError naming the first tensors of ``sd`` that hold NaN or infinity (a diverged or damaged
    model would write black or NaN frames)."""
    bad = [k for k, v in sd.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{what}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[0]!r}); the "
                              "file is damaged or the training diverged: use an earlier checkpoint")
