"""The one training loop (teacher training and both distillation stages).

See :mod:`fastvdm.train` for the usage contract. The pieces:

- :class:`RunConfig`: steps, seed, checkpoint cadence, clipping, warmup, AMP, out_dir.
- :class:`TrainState`: the registered models (with optional EMA) and optimizers, and the step counter.
- :class:`StepContext`: what a ``step_fn`` gets: the state, per-sample generators, ``backward_step``.
- :func:`train`: DDP setup, resume, the step loop, logging (``OUT/log.jsonl``), atomic checkpoints.
- :class:`DatasetBatches`: ``get_batch(step, rank, world_size)`` over a map-style dataset, a pure function of
  (seed, step), so that resuming needs no data-loader state.

Data parallelism: under ``torchrun`` (``WORLD_SIZE`` > 1) every rank runs the same step on its shard of the
global batch. A step function that calls its network through ``ctx.model(name)`` gets it wrapped in
``torch.nn.parallel.DistributedDataParallel``: its gradients are averaged over the ranks in buckets while the
backward pass runs (overlapping communication with compute); ``ctx.wrap(module)`` does the same for a registered
model given as the module (the distillation stages call every forward whose backward updates a model this way).
``backward_step`` averages, by one all-reduce, only the gradients DDP did not already reduce (models called
directly, e.g. a custom discriminator), then clips and steps. Backend gloo on CPU, nccl on GPU.

Sharded data parallelism: ``RunConfig(parallel="fsdp")`` (``fastvdm train teacher --fsdp``) shards every model
that has trainable parameters, and its EMA, with FSDP2 (``torch.distributed.fsdp.fully_shard``: each
``fsdp_unit`` submodule, e.g. the U-Net's blocks, then the whole model) over the ranks: parameters, gradients
and optimizer states become DTensors of which each rank holds 1/world_size; gradients are reduce-scattered
(averaged) during the backward. The EMA is updated on the local shards. Checkpoints hold the FULL state
(``get_model_state_dict``/``get_optimizer_state_dict`` with ``full_state_dict=True, cpu_offload=True``: a
collective, rank 0 writes), in the same format as unsharded runs: a FSDP run resumes in one process or under DDP
and back, exactly. With one process there is nothing to shard and the run is the plain one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from fastvdm.errors import UserError
from fastvdm.train import checkpoint as ckpt


# ------------------------------------------------------------------------------------------- distributed
def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun (WORLD_SIZE > 1) initializes the process group once: nccl
    with one GPU per LOCAL_RANK when CUDA is available, else gloo on the CPU. Idempotent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            if not dist.is_initialized():
                dist.init_process_group("nccl")
            return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local)
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size(), torch.device("cpu")
    return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# ------------------------------------------------------------------------------------------- config/state
@dataclass
class RunConfig:
    """out_dir: run folder (checkpoints/, log.jsonl, config.json); steps: total optimization steps (a resumed
    run continues to this); seed: the run's seed (per-sample generators, initial RNG); ckpt_every: save every N
    steps (and at the end); keep_last: checkpoints kept (0 = all); grad_clip: max global grad norm per
    optimizer (0 = off); warmup_steps: linear LR warmup; lr_schedule: "constant" after the warmup, or "cosine"
    (from the base LR at the end of the warmup down to min_lr_ratio x base LR at ``steps``); amp: bf16 autocast on CUDA; print_every: terminal
    line every N steps (0 = never); config: extra JSON saved in config.json and every checkpoint; resume_keys:
    entries of ``config`` a resumed run must not change (refused unless ``allow_config_change``); parallel:
    with several ranks, "ddp" (every rank holds every model; DistributedDataParallel) or "fsdp" (models with
    trainable parameters sharded by FSDP2, see the module docstring)."""

    out_dir: str
    steps: int
    seed: int = 0
    ckpt_every: int = 100
    keep_last: int = 3
    grad_clip: float = 1.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    amp: bool = True
    print_every: int = 10
    config: dict = field(default_factory=dict)
    resume_keys: tuple = ("stage", "preset", "frames", "size", "data", "clips", "batch", "teacher", "init",
                          "p_uncond")
    allow_config_change: bool = False
    parallel: str = "ddp"


PARALLEL = ("ddp", "fsdp")


def lr_factor(run: "RunConfig", step: int) -> float:
    """The factor on every optimizer's base LR at (0-based) ``step``: linear warmup, then constant or cosine."""
    if run.warmup_steps > 0 and step < run.warmup_steps:
        return (step + 1) / run.warmup_steps
    if run.lr_schedule == "constant":
        return 1.0
    if run.lr_schedule != "cosine":
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {run.lr_schedule!r}")
    span = max(run.steps - run.warmup_steps, 1)
    progress = min(max(step - run.warmup_steps, 0) / span, 1.0)
    return run.min_lr_ratio + (1 - run.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class TrainState:
    """Models, their EMAs and optimizers under names; ``step`` = optimization steps done."""

    def __init__(self):
        self.models: dict[str, torch.nn.Module] = {}
        self.model_configs: dict[str, dict] = {}
        self.emas: dict[str, torch.nn.Module] = {}
        self.ema_decay: dict[str, float] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.step = 0
        self.ddp: dict[str, torch.nn.Module] = {}  # DistributedDataParallel wrappers (not checkpointed)
        self.sharded: dict[str, torch.nn.Module] = {}  # optimizer name -> the FSDP2-sharded model it updates

    def add_model(self, name: str, model: torch.nn.Module, ema_decay: Optional[float] = None,
                  config: Optional[dict] = None) -> torch.nn.Module:
        """Register ``model`` (checkpointed; with ``ema_decay``, an EMA copy updated after every step).
        config: its JSON config (default ``model.config.to_dict()`` when it has one), for ``load_model``."""
        self.models[name] = model
        if config is None and hasattr(getattr(model, "config", None), "to_dict"):
            config = model.config.to_dict()
        self.model_configs[name] = config or {}
        if ema_decay is not None:
            self.emas[name] = copy.deepcopy(model).eval().requires_grad_(False)
            self.ema_decay[name] = float(ema_decay)
        return model

    def add_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        for g in optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])
        self.optimizers[name] = optimizer
        return optimizer

    @torch.no_grad()
    def update_emas(self) -> None:
        """ema = decay ema + (1 - decay) model, on each rank's shards when sharded (elementwise: the same values);
        buffers copied."""
        for m in self.models.values():  # a root FSDP module keeps its parameters gathered after a no-grad forward
            if _is_fsdp(m):
                m.reshard()
        for name, ema in self.emas.items():
            d = self.ema_decay[name]
            for pe, p in zip(ema.parameters(), self.models[name].parameters()):
                _local(pe).lerp_(_local(p.detach()), 1.0 - d)
            for be, b in zip(ema.buffers(), self.models[name].buffers()):
                be.copy_(b)

    def shard(self, device: torch.device) -> None:
        """FSDP2: shard, over all ranks, every model with trainable parameters and its EMA (``fully_shard`` on
        each submodule whose class sets ``fsdp_unit = True``, then on the model), and point the optimizers at the
        sharded parameters. Call before any optimizer step. Collective. Raises UserError when an optimizer mixes a
        sharded model's parameters with others (its state could not be gathered per model)."""
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        for name, m in self.models.items():
            if not any(p.requires_grad for p in m.parameters()):
                continue
            old = {id(p): n for n, p in m.named_parameters()}
            _fully_shard(m, mesh)
            new = dict(m.named_parameters())
            if name in self.emas:
                _fully_shard(self.emas[name], mesh)
            for oname, opt in self.optimizers.items():
                mine = [id(p) in old for g in opt.param_groups for p in g["params"]]
                if not any(mine):
                    continue
                if not all(mine):
                    raise UserError(f"FSDP: optimizer {oname!r} holds parameters of model {name!r} and of other "
                                    "models; give each sharded model its own optimizer (or use DDP)")
                if opt.state:
                    raise UserError(f"FSDP: optimizer {oname!r} has already stepped; shard before training")
                for g in opt.param_groups:
                    g["params"] = [new[old[id(p)]] for p in g["params"]]
                self.sharded[oname] = m

    # ------------------------------------------------------------------ checkpoint
    def tensors_and_meta(self) -> tuple[dict, dict]:
        """(tensors, meta) of a checkpoint: full (unsharded) tensors on the CPU. Collective when models are sharded
        (every rank calls it; only rank 0's result is complete)."""
        tensors, meta = {}, {"step": self.step, "model_configs": self.model_configs, "ema_decay": self.ema_decay,
                             "optimizers": {}}
        for name, m in self.models.items():
            tensors.update({f"model/{name}/{k}": v for k, v in _full_state(m).items()})
        for name, m in self.emas.items():
            tensors.update({f"ema/{name}/{k}": v for k, v in _full_state(m).items()})
        for name, opt in self.optimizers.items():
            sd = _full_optimizer_state(self.sharded[name], opt) if name in self.sharded else opt.state_dict()
            scalars = {}
            for pid, st in sd["state"].items():
                for k, v in st.items():
                    if isinstance(v, torch.Tensor):
                        tensors[f"optim/{name}/{pid}/{k}"] = v
                    else:
                        scalars.setdefault(str(pid), {})[k] = v
            meta["optimizers"][name] = {"param_groups": sd["param_groups"], "scalars": scalars}
        return tensors, meta

    def load(self, tensors: dict, meta: dict, where: str) -> None:
        for name, m in self.models.items():
            ckpt.load_state_dict_checked(m, ckpt.prefixed(tensors, f"model/{name}"), f"{where} model {name!r}")
        for name, m in self.emas.items():
            ckpt.load_state_dict_checked(m, ckpt.prefixed(tensors, f"ema/{name}"), f"{where} EMA of {name!r}")
        for name, opt in self.optimizers.items():
            if name not in meta.get("optimizers", {}):
                raise ckpt.CheckpointError(f"{where} has no optimizer {name!r}")
            om = meta["optimizers"][name]
            state: dict[int, dict] = {}
            for k, v in ckpt.prefixed(tensors, f"optim/{name}").items():
                pid, key = k.split("/", 1)
                state.setdefault(int(pid), {})[key] = v
            for pid, st in om["scalars"].items():
                state.setdefault(int(pid), {}).update(st)
            base = [g["base_lr"] for g in opt.param_groups]  # the LR comes from the code/CLI, not the file
            try:
                sd = {"state": state, "param_groups": om["param_groups"]}
                if name in self.sharded:
                    _load_full_optimizer_state(self.sharded[name], opt, sd)
                else:
                    opt.load_state_dict(sd)
            except (ValueError, KeyError) as e:
                raise ckpt.CheckpointError(f"{where} optimizer {name!r} does not match: {e}") from None
            for g, b in zip(opt.param_groups, base):
                g["base_lr"] = b
        self.step = int(meta["step"])


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a view: writes go to the parameter), else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _is_sharded(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _is_fsdp(model: torch.nn.Module) -> bool:
    """Whether ``model`` was sharded by ``fully_shard`` (its parameters are DTensors, except the root's while they
    are gathered: after a forward without gradient, until ``reshard()``)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _fully_shard(model: torch.nn.Module, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    for sub in model.modules():
        if sub is not model and getattr(type(sub), "fsdp_unit", False):
            fully_shard(sub, mesh=mesh)
    fully_shard(model, mesh=mesh)


_FULL = dict(full_state_dict=True, cpu_offload=True)


def _full_state(model: torch.nn.Module) -> dict:
    """``model.state_dict()``; of a sharded model the full tensors on rank 0's CPU (collective; {} elsewhere)."""
    if not _is_fsdp(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(**_FULL))


def _full_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The full state of the optimizer of a sharded model in ``opt.state_dict()``'s format (parameters numbered
    in param_groups order), on rank 0's CPU (collective; empty elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sd = get_optimizer_state_dict(model, opt, options=StateDictOptions(**_FULL))
    if not sd:
        return {"state": {}, "param_groups": []}
    ids, groups = {}, []
    for g in sd["param_groups"]:
        groups.append({**g, "params": [ids.setdefault(fqn, len(ids)) for fqn in g["params"]]})
    return {"state": {ids[fqn]: st for fqn, st in sd["state"].items()}, "param_groups": groups}


def _load_full_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer, sd: dict) -> None:
    """Load ``opt.state_dict()``-format full state ``sd`` into the optimizer of a sharded model (every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {id(p): n for n, p in model.named_parameters()}
    fqns = [names[id(p)] for g in opt.param_groups for p in g["params"]]
    saved = [pid for g in sd["param_groups"] for pid in g["params"]]
    if len(saved) != len(fqns):
        raise ValueError(f"the file has {len(saved)} parameters, the optimizer {len(fqns)}")
    fqn = dict(zip(saved, fqns))
    groups = [{**g, "params": [fqn[pid] for pid in g["params"]]} for g in sd["param_groups"]]
    set_optimizer_state_dict(model, opt, {"state": {fqn[pid]: st for pid, st in sd["state"].items()},
                                          "param_groups": groups}, options=StateDictOptions(full_state_dict=True))


# ------------------------------------------------------------------------------------------- step context
def _sample_seed(seed: int, step: int, sample_id: int) -> int:
    return int(np.random.SeedSequence([seed, step, sample_id]).generate_state(1, np.uint64)[0] >> 1)


class StepContext:
    """Handed to ``step_fn(ctx, batch)`` once per step.

    state, step (0-based index of this step), rank, world_size, device, amp (bf16 autocast on), run.
    ``generator(sample_id)``: a CPU torch.Generator seeded by (run seed, step, sample_id): draw each sample's
    noise/timestep from it and the randomness of a global batch does not depend on how it is split over ranks.
    ``step_generator()``: a CPU torch.Generator seeded by (run seed, step) alike on every rank: for draws the whole
    global batch shares.
    ``model(name)``: the model to call (under DDP its DistributedDataParallel wrapper); ``wrap(module)``: the
    same for a registered model given as the module (any other module is returned as it is).
    ``backward_step(opt_name, loss)``: backward, gradient averaging over ranks (by DDP during the backward for
    models called through ``model(name)``, else one all-reduce), clip, warmup LR, optimizer step, zero grads;
    returns the pre-clip gradient norm (float).
    """

    def __init__(self, run: RunConfig, state: TrainState, step: int, rank: int, world_size: int,
                 device: torch.device, amp: bool):
        self.run, self.state, self.step, self.rank, self.world_size = run, state, step, rank, world_size
        self.device, self.amp = device, amp
        self._ddp_params: set[int] = set()  # parameters whose gradients DDP reduces in this step

    def model(self, name: str) -> torch.nn.Module:
        """Model ``name`` for one forward and one backward in this step: under DDP (WORLD_SIZE > 1) its
        ``DistributedDataParallel`` wrapper, created on first use (bucketed gradient all-reduce overlapped with
        the backward; buffers are not re-broadcast: ranks start from rank 0's), else the model itself."""
        m = self.state.models[name]
        if not _distributed() or not any(p.requires_grad for p in m.parameters()) or \
                _is_fsdp(m):  # FSDP2 reduces a sharded model's gradients itself
            return m
        wrapped = self.state.ddp.get(name)
        if wrapped is None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = self.state.ddp[name] = DistributedDataParallel(m, device_ids=ids, broadcast_buffers=False)
        self._ddp_params.update(id(p) for p in m.parameters())
        return wrapped

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``model(name)`` of the registered model that is ``module``; ``module`` itself when it is not one."""
        for name, m in self.state.models.items():
            if m is module:
                return self.model(name)
        return module

    def generator(self, sample_id: int) -> torch.Generator:
        return torch.Generator().manual_seed(_sample_seed(self.run.seed, self.step, int(sample_id)))

    def step_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(_sample_seed(self.run.seed, self.step, 2**64 - 1))  # no sample's id

    def backward_step(self, opt_name: str, loss: torch.Tensor, retain_graph: bool = False) -> float:
        opt = self.state.optimizers[opt_name]
        params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
        loss.backward(retain_graph=retain_graph)
        manual = [p for p in params if id(p) not in self._ddp_params and not _is_sharded(p)]  # DDP, FSDP: reduced
        if _distributed() and manual:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in manual]
            flat = torch.cat([g.reshape(-1).float() for g in grads])
            dist.all_reduce(flat)
            flat /= self.world_size
            off = 0
            for p, g in zip(manual, grads):
                n = g.numel()
                p.grad = flat[off:off + n].view_as(p).to(p.dtype)
                off += n
        if self.run.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.run.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if _is_sharded(norm):
            norm = norm.full_tensor()
        f = lr_factor(self.run, self.step)
        for g in opt.param_groups:  # the LR is a function of (base LR, step): a resumed run may change it
            g["lr"] = g["base_lr"] * f
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(norm)


# ------------------------------------------------------------------------------------------- data
class DatasetBatches:
    """``get_batch(step, rank, world_size)`` over a map-style dataset: a pure function of (seed, step).

    The global batch of step s is the dataset items at positions [s B, (s + 1) B) of the concatenation of
    per-epoch permutations (epoch e: ``default_rng([seed, e]).permutation(len)``); rank r gets the r-th of
    ``world_size`` equal slices. Each item gets "sample_id" = s B + position in the global batch (for
    ``StepContext.generator``). batch_size: the global batch, divisible by the world size.
    """

    def __init__(self, dataset, batch_size: int, seed: int = 0, workers: int = 0):
        if len(dataset) < 1:
            raise ValueError("DatasetBatches: empty dataset")
        self.dataset, self.batch_size, self.seed = dataset, int(batch_size), int(seed)
        self.workers = int(workers)
        self._perm: dict[int, np.ndarray] = {}
        self._loader = None  # (iterator, next step, rank, world) when workers > 0

    def _index(self, pos: int) -> int:
        n = len(self.dataset)
        epoch = pos // n
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n)}
        return int(self._perm[epoch][pos % n])

    def _positions(self, step: int, rank: int, world_size: int) -> list[tuple[int, int]]:
        """(dataset index, sample_id) of this rank's items of ``step``."""
        if self.batch_size % world_size:
            raise ValueError(f"batch size {self.batch_size} is not divisible by the world size {world_size}")
        local = self.batch_size // world_size
        return [(self._index(step * self.batch_size + j), step * self.batch_size + j)
                for j in range(rank * local, (rank + 1) * local)]

    def __call__(self, step: int, rank: int = 0, world_size: int = 1) -> dict:
        if self.workers > 0:
            return self._from_workers(step, rank, world_size)
        return _collate([_Items(self.dataset)[p] for p in self._positions(step, rank, world_size)])

    def _from_workers(self, step: int, rank: int, world_size: int) -> dict:
        """The same batch, loaded ahead by ``workers`` DataLoader processes (they read a memory-mapped cache
        without copying it); consecutive steps stream, any other step restarts the stream there."""
        if self._loader is None or self._loader[1:] != (step, rank, world_size):
            steps = _StepPositions(self, step, rank, world_size)
            loader = torch.utils.data.DataLoader(_Items(self.dataset), batch_sampler=steps, num_workers=self.workers,
                                                 collate_fn=_collate, prefetch_factor=2)
            self._loader = (iter(loader), step, rank, world_size)
        it = self._loader[0]
        batch = next(it)
        self._loader = (it, step + 1, rank, world_size)
        return batch


class _Items(torch.utils.data.Dataset):
    """dataset[(index, sample_id)] -> the item with its "sample_id"."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, pos: tuple[int, int]) -> dict:
        item = dict(self.dataset[pos[0]])
        item["sample_id"] = pos[1]
        return item


def _collate(items: list) -> dict:
    return torch.utils.data.default_collate(items)


class _StepPositions(torch.utils.data.Sampler):
    """Batch sampler: this rank's (index, sample_id) lists of steps start, start + 1, ... (unbounded)."""

    def __init__(self, batches: "DatasetBatches", start: int, rank: int, world_size: int):
        self.batches, self.start, self.rank, self.world = batches, start, rank, world_size
        self.batches._positions(start, rank, world_size)  # validate now, not in a worker

    def __iter__(self):
        step = self.start
        while True:
            yield self.batches._positions(step, self.rank, self.world)
            step += 1


# ------------------------------------------------------------------------------------------- RNG state
def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _rng_tensors_meta(states: list[dict]) -> tuple[dict, list]:
    tensors, meta = {}, []
    for r, st in enumerate(states):
        tensors[f"rng/{r}/torch"] = st["torch"]
        for i, s in enumerate(st.get("cuda", [])):
            tensors[f"rng/{r}/cuda{i}"] = s
        npst = st["numpy"]
        meta.append({"python": [st["python"][0], list(st["python"][1]), st["python"][2]],
                     "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])]})
    return tensors, meta


def _set_rng(tensors: dict, meta: list, rank: int) -> None:
    if rank >= len(meta):  # resumed with more ranks than saved: seed the new ranks deterministically
        return
    torch.set_rng_state(tensors[f"rng/{rank}/torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(t for t in tensors if t.startswith(f"rng/{rank}/cuda"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    py = meta[rank]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta[rank]["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


# ------------------------------------------------------------------------------------------- the loop
def save_checkpoint(run: RunConfig, state: TrainState, rank: int = 0) -> Optional[str]:
    """Collective: every rank contributes its RNG state (and, under FSDP, its shards); rank 0 writes the file
    atomically. Returns the path (rank 0) or None."""
    states = [_rng_state()]
    if _distributed():
        states = [None] * dist.get_world_size()
        dist.all_gather_object(states, _rng_state())
    path = None
    tensors, meta = state.tensors_and_meta()  # collective when models are sharded
    if rank == 0:
        rt, rm = _rng_tensors_meta(states)
        tensors.update(rt)
        meta.update(rng=rm, run=_run_json(run))
        path = ckpt.checkpoint_path(run.out_dir, state.step)
        ckpt.atomic_save(tensors, meta, path)
        if run.keep_last > 0:
            for _, old in ckpt.list_checkpoints(run.out_dir)[:-run.keep_last]:
                os.remove(old)
        ckpt.sweep_stale_temps(run.out_dir)  # temp files of killed saves count against no --keep: remove them
    if _distributed():
        dist.barrier()
    return path


def _run_json(run: RunConfig) -> dict:
    return json.loads(json.dumps(asdict(run), default=str))


def check_resume_config(run: RunConfig, saved: dict, where: str) -> None:
    """Refuse to resume a run whose checkpoint was trained with other values of ``run.resume_keys`` (clip
    frames, size, preset, data, ...: continuing would silently mix them), unless ``run.allow_config_change``."""
    if run.allow_config_change:
        return
    changed = [(k, saved[k], run.config[k]) for k in run.resume_keys
               if k in saved and k in run.config and saved[k] != run.config[k]]
    if changed:
        what = ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changed)
        raise UserError(f"{run.out_dir}: resuming {where} with a different config ({what}); give another --out, "
                        "the original values, or --allow-config-change to continue anyway")


def _trim_log(path: str, step: int) -> None:
    """Keep only the log lines of steps <= ``step`` (what the resumed checkpoint has seen)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if json.loads(ln)["step"] <= step:
                keep.append(ln)
        except (json.JSONDecodeError, KeyError):  # a line cut by a crash
            continue
    ckpt.atomic_write_text(path, "".join(keep))


def train(run: RunConfig, state: TrainState, step_fn: Callable[[StepContext, Any], dict],
          get_batch: Callable[[int, int, int], Any], resume: bool = True) -> dict:
    """Run ``step_fn`` from ``state.step`` (or the latest checkpoint in ``run.out_dir``) to ``run.steps``.

    step_fn(ctx, batch) -> dict of float scalars: performs one optimization step of any models/optimizers
    through ``ctx.backward_step`` and returns what to log. get_batch(step, rank, world_size) -> this rank's
    batch of ``step``. Models must already be on ``init_distributed()``'s device. Returns the last logged
    dict (averaged over ranks). Logs one JSON line per step to ``OUT/log.jsonl`` (rank 0).
    """
    rank, world, device = init_distributed()
    if run.parallel not in PARALLEL:
        raise UserError(f"parallel must be one of {PARALLEL}, got {run.parallel!r}")
    amp = bool(run.amp) and device.type == "cuda"
    os.makedirs(run.out_dir, exist_ok=True)
    log_path = os.path.join(run.out_dir, "log.jsonl")
    if rank == 0:
        ckpt.sweep_stale_temps(run.out_dir)
    if _distributed():  # every rank starts from rank 0's weights (a resume then loads the same file everywhere)
        with torch.no_grad():
            for m in list(state.models.values()) + list(state.emas.values()):
                for t in list(m.parameters()) + list(m.buffers()):
                    if not _is_sharded(t):
                        dist.broadcast(t.data, 0)
        if run.parallel == "fsdp" and not any(_is_fsdp(m) for m in state.models.values()):
            state.shard(device)
    latest = ckpt.latest_checkpoint(run.out_dir) if resume else None
    if latest is not None:
        tensors, meta = ckpt.read_checkpoint(latest)
        check_resume_config(run, meta.get("run", {}).get("config", {}), latest)
        state.load(tensors, meta, latest)
        _set_rng(tensors, meta.get("rng", []), rank)
        if rank == 0:
            _trim_log(log_path, state.step)
            print(f"resumed from {latest} (step {state.step})", file=sys.stderr)
    else:
        torch.manual_seed(run.seed + rank)
        random.seed(run.seed + rank)
        np.random.seed((run.seed + rank) % 2 ** 32)
        if rank == 0:
            ckpt.atomic_write_text(os.path.join(run.out_dir, "config.json"), json.dumps(
                {"run": _run_json(run), "model_configs": state.model_configs}, indent=2))
            if os.path.exists(log_path) and state.step == 0:
                _trim_log(log_path, 0)
    logs: dict = {}
    t_start = time.time()
    start = state.step
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    for step in range(state.step, run.steps):
        for m in state.models.values():
            m.train()
        batch = get_batch(step, rank, world)
        ctx = StepContext(run, state, step, rank, world, device, amp)
        with autocast():
            out = step_fn(ctx, batch)
        state.step = step + 1
        state.update_emas()
        keys = sorted(out)
        vals = torch.tensor([float(out[k]) for k in keys], dtype=torch.float64)
        if _distributed():
            dist.all_reduce(vals)
            vals /= world
        logs = {"step": state.step, **{k: float(v) for k, v in zip(keys, vals.tolist())},
                "time": round(time.time() - t_start, 3)}
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(logs) + "\n")
            if run.print_every and (state.step % run.print_every == 0 or state.step == run.steps):
                rate = (state.step - start) / max(time.time() - t_start, 1e-9)
                msg = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if k not in ("step", "time"))
                print(f"step {state.step}/{run.steps} {msg} ({rate:.2f} it/s)", flush=True)
        if state.step % run.ckpt_every == 0 or state.step == run.steps:
            save_checkpoint(run, state, rank)
    return logs
