#!/usr/bin/env bash
# Train the tiny teacher on this CPU (one thread, so the shared machine stays usable).
# Clips: ClipDataset train split, seed 0, 1500 clips of 8 frames at 32x32, cached once to runs/cache/.
# Log: bench/logs/teacher_tiny.log (terminal) and runs/teacher_tiny/log.jsonl (loss per step).
# Re-running resumes from the latest checkpoint in runs/teacher_tiny/checkpoints/.
#
# Two phases (what was run): steps 0-350 at lr 2e-4; the loss fell slowly, so the run was stopped after the
# step-350 checkpoint and resumed at lr 1e-3 (the LR is taken from the command line on resume; weights,
# AdamW moments, EMA, RNG and step come from the checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/logs runs/cache
common=(--synthetic --frames 8 --size 32 --clips 1500 --seed 0 --cache runs/cache/train_t8_s32_n1500.safetensors
        --preset tiny --batch 4 --warmup 100 --ema 0.995 --p-uncond 0.1 --ckpt-every 50 --keep 3 --threads 1
        --out runs/teacher_tiny)
python -m fastvdm train teacher "${common[@]}" --lr 2e-4 --steps 350
python -m fastvdm train teacher "${common[@]}" --lr 1e-3 --steps 2000
