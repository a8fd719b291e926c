"""One folder per trained network: ``config.json`` (architecture, its config, parameterization, schedule, and
whatever the caller adds: frames, size, ...) and ``model.safetensors`` (the weights).

    model.save_pretrained("my_unet", frames=8, size=32)      # any network with this mixin
    net = VideoUNet.from_pretrained("my_unet")               # the bare network (or load_network -> (net, config))

This layer knows networks only. A network saved inside a denoiser (:mod:`fastvdm.diffusion.denoisers`, e.g. the
teacher's PosteriorDenoiser) stores the network's config and weights plus a ``"denoiser"`` entry (kind and
settings); :func:`fastvdm.diffusion.denoisers.load_denoiser` wraps the network back (also for folders whose
model_config still carries the session-2 preconditioning fields: the shipped v1 models).

The folder is written to a temporary sibling and renamed into place, so an interrupted save leaves no
half-written folder; an existing folder is replaced only with ``overwrite=True``. :class:`fastvdm.pipeline.NVSPipeline`
adds its sampler settings to the same config (``NVSPipeline.save_pretrained`` / ``from_pretrained``).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
from typing import Callable, Optional

import torch

from fastvdm.errors import UserError

FORMAT = "fastvdm-pretrained/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# architecture name -> (module, network class, config class with to_dict / from_dict)
ARCHITECTURES = {"VideoUNet": ("fastvdm.models.unet", "VideoUNet", "VideoUNetConfig")}
# what every shipped network is: v-prediction on the zero-terminal-SNR 1000-step schedule (fastvdm.diffusion)
DEFAULTS = {"parameterization": "v", "schedule": {"kind": "zero_terminal_snr", "num_steps": 1000}}


def is_pretrained_folder(path: str) -> bool:
    """Whether ``path`` is a folder with a config.json of this format."""
    cfg = os.path.join(str(path), CONFIG_NAME)
    if not os.path.isfile(cfg):
        return False
    try:
        with open(cfg) as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def save_network(model: torch.nn.Module, folder: str, overwrite: bool = False, **extra) -> str:
    """Write network ``model`` (config with ``to_dict``, state dict) as a pretrained folder; ``extra`` goes into
    the config JSON (JSON-serializable; e.g. ``denoiser=`` from :mod:`fastvdm.diffusion.denoisers`, which saves
    its wrappers through this). Returns the folder."""
    from safetensors.torch import save_file

    model = getattr(model, "_orig_mod", model)
    arch = type(getattr(model, "_orig_mod", model)).__name__
    if arch not in ARCHITECTURES:
        raise ValueError(f"save_pretrained: unknown architecture {arch} (known: {sorted(ARCHITECTURES)})")
    folder = os.path.abspath(folder)
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)) and not overwrite:
        raise FileExistsError(f"{folder} exists and is not empty (pass overwrite=True to replace it)")
    config = {"format": FORMAT, "architecture": arch, "model_config": model.config.to_dict(), **DEFAULTS, **extra}
    text = json.dumps(config, indent=2) + "\n"  # fails here, before anything is written, if not serializable
    tmp = f"{folder}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        sd = {k: v.detach().cpu().contiguous() for k, v in getattr(model, "_orig_mod", model).state_dict().items()}
        save_file(sd, os.path.join(tmp, WEIGHTS_NAME), metadata={"format": FORMAT})
        with open(os.path.join(tmp, CONFIG_NAME), "w") as f:
            f.write(text)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        elif os.path.exists(folder):
            os.remove(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_config(folder: str) -> dict:
    """The config JSON of a pretrained folder (FileNotFoundError / ValueError naming what is wrong)."""
    path = os.path.join(str(folder), CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: no {CONFIG_NAME} (not a pretrained folder; save one with save_pretrained)")
    try:
        with open(path) as f:
            config = json.load(f)
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if config.get("format") != FORMAT:
        raise UserError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    if config.get("architecture") not in ARCHITECTURES:
        raise UserError(f"{path}: unknown architecture {config.get('architecture')!r}")
    return config


def load_network(folder: str, device=None, dtype: Optional[torch.dtype] = None,
                 split: Optional[Callable[[dict], tuple]] = None):
    """(network in eval mode, config dict) from a pretrained folder; the weights must match the config exactly.
    ``split(model_config) -> (network config, rest)``: what of the stored model config is the network's (the
    denoiser layer passes :func:`fastvdm.diffusion.denoisers.split_config`; default: all of it)."""
    from safetensors.torch import load_file

    config = read_config(folder)
    module, net_name, cfg_name = ARCHITECTURES[config["architecture"]]
    mod = importlib.import_module(module)
    cfg_cls = getattr(mod, cfg_name)
    if split is not None:
        net_cfg = split(config["model_config"])[0]
    else:  # the network's own fields (a denoiser's settings stored beside them are not the network's)
        own = {f.name for f in dataclasses.fields(cfg_cls)} if dataclasses.is_dataclass(cfg_cls) else None
        net_cfg = {k: v for k, v in config["model_config"].items() if own is None or k in own}
    model = getattr(mod, net_name)(cfg_cls.from_dict(net_cfg))
    weights = os.path.join(str(folder), WEIGHTS_NAME)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME}")
    sd, own = load_file(weights), model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    bad = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or bad:
        raise UserError(f"{weights} does not match its config: missing keys {missing[:5]}, unexpected keys "
                         f"{unexpected[:5]}, shape mismatches {bad[:5]}")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"{weights}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[0]!r}); the "
                        "weights are damaged: re-export them")
    model.load_state_dict(sd)
    model = model.to(device=device or "cpu", dtype=dtype)
    return model.eval(), config


class PretrainedMixin:
    """``save_pretrained(folder, overwrite=False, **extra)`` and ``cls.from_pretrained(folder, device=None)``."""

    def save_pretrained(self, folder: str, overwrite: bool = False, **extra) -> str:
        return save_network(self, folder, overwrite, **extra)

    @classmethod
    def from_pretrained(cls, folder: str, device=None, dtype: Optional[torch.dtype] = None):
        model, config = load_network(folder, device, dtype)
        if not isinstance(model, cls):
            raise ValueError(f"{folder} holds a {config['architecture']}, not a {cls.__name__}")
        return model


__all__ = ["save_network", "load_network", "read_config", "is_pretrained_folder", "PretrainedMixin", "FORMAT"]
