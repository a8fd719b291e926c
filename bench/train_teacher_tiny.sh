#!/usr/bin/env bash
# Train the tiny teacher on this CPU (one thread, so the shared machine stays usable).
# Clips: ClipDataset train split, seed 0, 1500 clips of 8 frames at 32x32, cached once to runs/cache/.
# Log: bench/logs/teacher_tiny.log (terminal) and runs/teacher_tiny/log.jsonl (loss per step, copied to
# bench/logs/teacher_tiny.log.jsonl). Re-running resumes from the latest checkpoint in runs/teacher_tiny/.
# Earlier runs: v1 (no render skip; lr 2e-4 then 1e-3) and v2 (render skip without hole filling), logged in
# bench/logs/teacher_tiny_v1.* and teacher_tiny_v2.*; both stopped when their held-out error stalled above OpenCV.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/logs runs/cache
python -m fastvdm train teacher --synthetic --frames 8 --size 32 --clips 1500 --seed 0 \
    --cache runs/cache/train_t8_s32_n1500.safetensors \
    --preset tiny --batch 4 --lr 1e-3 --warmup 100 --ema 0.995 --p-uncond 0.1 \
    --steps 3000 --ckpt-every 50 --keep 3 --threads 1 --out runs/teacher_tiny
