"""Assemble a distillation stage and the training state it checkpoints, from a teacher and earlier runs.

    teacher, _ = load_model("runs/teacher_tiny", ema=True)
    stage, state = build_stage("gan", teacher, GANConfig(), head={"width": 64})
    train(RunConfig(out_dir="runs/gan", steps=500), state, stage_step_fn(stage), DatasetBatches(clips, 2))
    stage, state = build_stage("kl", teacher, KLConfig(), init="runs/gan")       # student + head from the GAN run

The student is registered as model ``"unet"`` (with an EMA), so ``fastvdm.train.load_model(OUT)`` returns it;
the discriminator head as ``"disc_head"`` (with its config, so a later KL stage can rebuild it), the KL
stage's fake-score model as ``"fake"``.
"""

from __future__ import annotations

import copy
from typing import Optional, Union

import torch
from torch import nn

from fastvdm.diffusion import FewStepSampler, VSchedule
from fastvdm.distill.gan_stage import GANConfig, GANStage
from fastvdm.distill.kl_stage import KLConfig, KLStage
from fastvdm.errors import UserError

HEAD_DEFAULTS = {"width": 64, "depth": 3}


def _encoder_head(teacher: nn.Module, **cfg):
    from fastvdm.models.discriminator import Discriminator

    return Discriminator(teacher, **cfg)


# head kind -> factory(teacher, **config) -> a discriminator whose trainable parameters are ``.head``. "encoder"
# is FVGen's (frozen teacher encoder + Head3D); experiments register more (experiments/disc_heads.py).
HEAD_KINDS = {"encoder": _encoder_head}
_EXPERIMENT_KEYS = ("multiscale", "hole_weighted", "pixel_branch")  # written by older runs, False = encoder


def register_head_kind(name: str, factory) -> None:
    """Make head kind ``name`` buildable: ``factory(teacher, **config) -> discriminator`` (config: the head's
    checkpoint config without ``kind`` and ``in_channels``)."""
    HEAD_KINDS[name] = factory


def head_config(teacher: nn.Module, **overrides) -> dict:
    """The discriminator head's config as stored in a checkpoint: kind, in_channels, width, depth, groups
    (+ overrides, e.g. an experiment's options)."""
    cfg = {"kind": "encoder", **HEAD_DEFAULTS, **overrides}
    cfg.setdefault("groups", min(8, cfg["width"]))
    return {"in_channels": teacher.feature_channels, **cfg}


def make_discriminator(teacher: nn.Module, cfg: dict):
    """The discriminator (frozen ``teacher`` + a head) of a head config (see :data:`HEAD_KINDS`)."""
    kwargs = {k: v for k, v in cfg.items() if k not in ("in_channels", "kind")}
    kind = cfg.get("kind") or ("multiscale" if kwargs.get("multiscale") else "encoder")
    if kind == "encoder":
        kwargs = {k: v for k, v in kwargs.items() if k not in _EXPERIMENT_KEYS or v}
    if kind not in HEAD_KINDS:
        raise UserError(f"discriminator head kind {kind!r} is not registered here (kinds: {sorted(HEAD_KINDS)}); "
                        "it is an experiment: import its module from the source checkout first "
                        "(e.g. experiments.disc_heads)")
    return HEAD_KINDS[kind](teacher, **kwargs)


def load_disc_head(run: str, teacher: nn.Module):
    """The discriminator (frozen ``teacher`` + the head trained in GAN-stage run ``run``) and its head config."""
    from fastvdm.train import read_checkpoint, resolve_checkpoint
    from fastvdm.train.checkpoint import load_state_dict_checked, prefixed

    path = resolve_checkpoint(run)
    tensors, meta = read_checkpoint(path)
    hc = meta.get("model_configs", {}).get("disc_head")
    if not hc:
        raise UserError(f"{path} has no discriminator head (is it a --stage gan run?)")
    disc = make_discriminator(teacher, hc)
    load_state_dict_checked(disc.head, prefixed(tensors, "model/disc_head"), f"{path} disc_head")
    return disc, hc


def build_stage(kind: str, teacher: nn.Module, config: Union[GANConfig, KLConfig, None] = None, *,
                init: Optional[str] = None, disc: Optional[str] = None, head: Optional[dict] = None,
                ema: float = 0.99, device: Union[str, torch.device] = "cpu"):
    """(stage, :class:`fastvdm.train.TrainState`) for ``kind`` "gan" (stage 1) or "kl" (stage 2).

    teacher: the frozen teacher (set to requires_grad False here). gan: the student starts from the teacher;
    ``head`` overrides the head config (width, depth, groups). kl: the student starts from ``init`` (a GAN-stage
    run or checkpoint) or the teacher, the fake-score model from the teacher, the discriminator head from
    ``disc`` (default ``init``; none: no softened weight is possible, use ``weighting="plain"``).
    """
    from fastvdm.train import TrainState, load_model

    if kind not in ("gan", "kl"):
        raise UserError(f"stage must be 'gan' or 'kl', got {kind!r}")
    if kind == "gan" and (init or disc):
        raise UserError("init and disc are options of the kl stage")
    teacher.requires_grad_(False)
    sampler = FewStepSampler(VSchedule())
    state = TrainState()
    if kind == "gan":
        student = copy.deepcopy(teacher).train().requires_grad_(True)
        hc = head_config(teacher, **(head or {}))
        d = make_discriminator(teacher, hc).to(device)
        stage = GANStage(student, d, sampler, config or GANConfig())
        state.add_model("disc_head", d.head, config=hc)
    else:
        if init:
            student, _ = load_model(init, name="unet", ema=True, device=device)
            student.train().requires_grad_(True)
        else:
            student = copy.deepcopy(teacher).train().requires_grad_(True)
        fake = copy.deepcopy(teacher).train().requires_grad_(True)
        disc_run = disc or init
        d, hc = load_disc_head(disc_run, teacher) if disc_run else (None, None)
        d = d.to(device) if d is not None else None
        stage = KLStage(student, teacher, fake, sampler, d, config or KLConfig())
        state.add_model("fake", fake)
        if d is not None:
            state.add_model("disc_head", d.head, config=hc)
    state.add_model("unet", student, ema_decay=ema)  # the student: load_model(OUT) returns its EMA
    for name, opt in stage.optimizers.items():
        state.add_optimizer(name, opt)
    return stage, state


def stage_step_fn(stage):
    """The training loop's ``step_fn(ctx, batch)`` for a stage: the batch's condition, then ``stage.step`` with
    the step's per-sample generators (so its randomness does not depend on how the batch is split over ranks;
    under torch.distributed the trainable models run through DistributedDataParallel, see the stages)."""
    from fastvdm.distill.simulate import StepRng
    from fastvdm.models import make_cond

    def step_fn(ctx, batch):
        x0, cond = make_cond(batch, ctx.device)
        return stage.step(x0, cond, ctx, StepRng.of(ctx, batch))

    return step_fn


__all__ = ["build_stage", "stage_step_fn", "load_disc_head", "make_discriminator", "head_config", "register_head_kind",
           "HEAD_KINDS"]
