#!/usr/bin/env bash
# Train the tiny teacher on this CPU (one thread, so the shared machine stays usable).
# Clips: ClipDataset train split, seed 0, 1500 clips of 8 frames at 32x32, cached once to runs/cache/.
# Log: bench/logs/teacher_tiny.log (terminal) and runs/teacher_tiny/log.jsonl (loss per step, copied to
# bench/logs/teacher_tiny.log.jsonl). Re-running resumes from the latest checkpoint in runs/teacher_tiny/.
# Earlier runs: v1 (no render skip; lr 2e-4 then 1e-3) and v2 (render skip without hole filling), logged in
# bench/logs/teacher_tiny_v1.* and teacher_tiny_v2.*; both stopped when their held-out error stalled above OpenCV.
# v3 (pull-push hole fill, lr 1e-3, EMA 0.995, p_uncond 0.1; bench/logs/teacher_tiny_v3.log*) reached 22.02 dB masked
# PSNR at step 1650, below its own starting point (the pull-push fill alone: 23.19 dB): stopped.
# v4: multigrid harmonic fill (fill_smooth_iters=5: the fill alone scores 24.10 dB vs Telea 23.70) with the
# render skip, lr 5e-4 / 2e-4: after 100 steps the 1-step fill had already dropped to 23.44 / 23.74 dB: stopped.
# v5: the same fill inside an EDM-style posterior preconditioning of the output only: 1-step fill went 24.10 ->
# 23.84 dB (EMA) in 200 steps (lr 5e-4; 23.79 raw at lr 2e-4): the noise input leaked into the t = 999 output.
# v6: posterior preconditioning of input and output (VideoUNetConfig.posterior_skip: the network sees E[x0 | x_t],
# which is the filled render at t = 999): 1-step fill still fell to 23.75 / 23.87 dB (raw, lr 5e-4 / 2e-4) in
# 100 steps: with the plain v loss, F's error at t = 999 weighs s^2 = 1/25 of its weight at t = 0.
# v7 (this script): v6 + the loss weighted by VideoUNet.loss_weight (uniform weight on F at every t, EDM's
# 1 / c_out^2), lr 5e-4, EMA 0.998, p_uncond 0.05, constant LR until step 300 (1-step fill 23.79 dB at step 200,
# raw weights; the same at lr 2e-4), then resumed with cosine decay to 0 at step 2400, and at step 800 (1-step
# EMA 23.91 dB at step 700, still under the fill alone) resumed with the decay ending at step 1500 instead, to
# leave time for the distillation in the same session (this command).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/logs runs/cache
python -m fastvdm train teacher --synthetic --frames 8 --size 32 --clips 1500 --seed 0 \
    --cache runs/cache/train_t8_s32_n1500.safetensors \
    --preset tiny --batch 4 --lr 5e-4 --warmup 100 --ema 0.998 --p-uncond 0.05 \
    --lr-schedule cosine --steps ${STEPS:-1500} --ckpt-every 100 --keep 0 --threads 1 --out runs/teacher_tiny 2>&1 | tee -a bench/logs/teacher_tiny.log
