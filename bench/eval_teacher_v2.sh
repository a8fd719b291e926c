#!/usr/bin/env bash
# Issue 19 evaluation rows: a teacher checkpoint (DDIM 1 and 50 steps + baselines; the undistilled few-step
# sampler at 1/2/4 steps) and optionally a student (few-step 1/2/4), on a held-out split cache.
#   bash bench/eval_teacher_v2.sh TEACHER TAG [STUDENT] [DATA] [CLIPS]
# DATA default runs/cache/test_extrap_t8_s32_n100.safetensors (bench/make_teacher_data.py --only test), CLIPS 40.
# Writes bench/logs/eval_<TAG>_{teacher,undistilled,student}.json (tables in bench/logs/eval_<TAG>.log).
set -euo pipefail
cd "$(dirname "$0")/.."
T=$1; TAG=$2; S=${3:-}; DATA=${4:-runs/cache/test_extrap_t8_s32_n100.safetensors}; N=${5:-40}
export OMP_NUM_THREADS=1
E="nice -n 10 python -m fastvdm eval --clips $N --batch 10 --data $DATA --threads 1 --no-progress"
{
  echo "## $(date -u +%FT%TZ) teacher $T on $DATA ($N clips)"
  $E --ckpt "$T" --steps 1 50 --json bench/logs/eval_${TAG}_teacher.json
  $E --ckpt "$T" --sampler few-step --steps 1 2 4 --no-baselines --json bench/logs/eval_${TAG}_undistilled.json
  if [ -n "$S" ]; then
    $E --ckpt "$S" --sampler few-step --steps 1 2 4 --no-baselines --json bench/logs/eval_${TAG}_student.json
  fi
} 2>&1 | tee -a bench/logs/eval_${TAG}.log
