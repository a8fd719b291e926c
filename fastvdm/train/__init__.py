"""The one lean training loop used by teacher training and by both distillation stages.

Contract (how a stage plugs in)::

    from fastvdm.train import RunConfig, TrainState, DatasetBatches, init_distributed, train

    rank, world, device = init_distributed()            # torchrun: gloo on CPU, nccl on GPU; else (0, 1, dev)
    state = TrainState()
    gen = state.add_model("gen", preset_denoiser("tiny").to(device), ema_decay=0.999)  # checkpointed (+ EMA)
    state.add_model("teacher", teacher)                  # frozen models may be registered too (or not)
    state.add_optimizer("gen", torch.optim.AdamW(gen.parameters(), lr=1e-4))
    state.add_optimizer("disc", torch.optim.AdamW(disc.parameters(), lr=1e-4))

    def step_fn(ctx, batch):                             # one optimization step of anything
        g = ctx.generator(int(batch["sample_id"][0]))    # per-sample CPU generators: (seed, step, sample_id)
        loss_d = ...; ctx.backward_step("disc", loss_d)  # backward + grad all-reduce + clip + warmup + step
        loss_g = ...; ctx.backward_step("gen", loss_g)   #   + zero_grad; returns the grad norm
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}   # logged (mean over ranks)

    run = RunConfig(out_dir="runs/x", steps=1000, seed=0, ckpt_every=100, config={...})
    train(run, state, step_fn, DatasetBatches(dataset, batch_size=8, seed=0))

What the loop owns: ``torch.distributed`` setup (``init_distributed``) and gradient averaging over ranks
(``ctx.model(name)``/``ctx.wrap(module)``: DistributedDataParallel; ``ctx.backward_step``: one all-reduce for
the rest), or, with ``RunConfig(parallel="fsdp")``, FSDP2 sharding of the trained models, their EMAs and
optimizer states (full-state checkpoints in the same format); bf16 autocast on
CUDA around ``step_fn`` (``run.amp``); gradient clipping; linear LR warmup; EMA updates after every step;
``OUT/log.jsonl`` (one JSON line per step: the step_fn's scalars, averaged over ranks, and wall time);
checkpoints ``OUT/checkpoints/step_XXXXXXXX.safetensors`` every ``ckpt_every`` steps and at the end (all
registered models, EMAs, optimizers, step, every rank's RNG states, configs; atomic: temp file + os.replace);
resume from the latest checkpoint (exact: the same losses as an uninterrupted run, the log trimmed to the
checkpoint's step; the learning rate is the optimizer's constructed LR times the warmup factor, so a resumed
run may be given a new LR, everything else comes from the file). ``get_batch(step, rank, world_size)`` must be
a pure function of the step (as
``DatasetBatches`` is), so resuming needs no data-loader state.

Load a trained model: ``fastvdm.train.load_model(run_dir_or_file, name="unet", ema=True)``.
"""

from fastvdm.train.checkpoint import (CheckpointError, export_model, latest_checkpoint, list_checkpoints,
                                      load_model, read_checkpoint, resolve_checkpoint, save_model)
from fastvdm.train.loop import (DatasetBatches, RunConfig, StepContext, TrainState, init_distributed,
                                save_checkpoint, train)

__all__ = ["RunConfig", "TrainState", "StepContext", "DatasetBatches", "init_distributed", "train",
           "save_checkpoint", "load_model", "export_model", "save_model", "read_checkpoint", "resolve_checkpoint", "latest_checkpoint",
           "list_checkpoints", "CheckpointError"]
