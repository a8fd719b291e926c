#!/usr/bin/env bash
# Short A/B of the teacher loss weightings (issue 19): three fine-tunes of the same start (INIT, default the v2
# run's step-675 checkpoint) for STEPS steps, identical data/seed/lr, differing only in --weighting; then, per run,
# the per-t loss vs the Gaussian prior (bench/teacher_per_t.py) and 50-step DDIM on 10 extrap held-out clips.
# Usage: bash bench/weighting_ab.sh [INIT] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
INIT=${1:-runs/snap/v2_step_00000675.safetensors}; STEPS=${2:-80}
export OMP_NUM_THREADS=1
for w in output edm v; do
  nice -n 10 python -m fastvdm train teacher --data runs/cache/train_v2 --preset tiny --weighting $w --init "$INIT" \
      --batch 4 --lr 3e-4 --warmup 10 --ema 0.9 --p-uncond 0.05 --steps $STEPS --ckpt-every $STEPS --keep 1 \
      --threads 1 --seed 0 --out runs/wab_$w > runs/wab_$w.log 2>&1 &
done
wait
nice -n 10 python bench/teacher_per_t.py "$INIT" runs/wab_output runs/wab_edm runs/wab_v \
    --json bench/logs/weighting_ab_per_t.json | tee bench/logs/weighting_ab.log
for w in output edm v; do
  nice -n 10 python -m fastvdm eval --ckpt runs/wab_$w --steps 50 --no-baselines --clips 10 --batch 10 \
      --data runs/cache/test_extrap_t8_s32_n100.safetensors --threads 1 --no-progress \
      --json bench/logs/weighting_ab_$w.json 2>&1 | tee -a bench/logs/weighting_ab.log
done
