#!/usr/bin/env bash
# FVGen distillation of the v2 tiny teacher (issue 19), in the order the issue asks for:
#   1. the disc probe on the teacher (can its frozen encoder tell real clips from undistilled 4-step samples?),
#   2. the GAN stage with FVGen's encoder-only discriminator (the pixel branch only with PIXELS=1, i.e. when the
#      probe shows the encoder blind: best linear-probe AUC < 0.6),
#   3. the KL-stage ablations (GAN + plain DMD, GAN + softened KL, softened KL without GAN init),
#   4. one evaluation (teacher 50-step DDIM vs undistilled and every student at 1/2/4 steps, same clips).
# Usage: bash bench/distill_tiny_v2.sh TEACHER [GAN_STEPS] [KL_STEPS]
#   TEACHER: runs/teacher_tiny_v2 or bench/checkpoints/teacher_tiny_v2_latest.safetensors
# Data: runs/cache/train_v2 and runs/cache/test_extrap_t8_s32_n100.safetensors (bench/make_teacher_data.py).
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER=${1:-runs/teacher_tiny_v2}
GAN_STEPS=${2:-300}
KL_STEPS=${3:-100}
DATA=runs/cache/train_v2
TEST=runs/cache/test_extrap_t8_s32_n100.safetensors
OUT=runs/distill_tiny_v2
LOG=bench/logs
export OMP_NUM_THREADS=1
DISTILL="python -m fastvdm train distill"
if [ "${PIXELS:-0}" = 1 ]; then DISTILL="python -m experiments.distill_disc --multiscale --pixels --"; fi
python -m experiments.disc_probe --teacher $TEACHER --data $TEST --clips 32 --json $LOG/disc_probe_v2.json \
    > $LOG/disc_probe_v2.log 2>&1
COMMON="--teacher $TEACHER --data $DATA --batch 2 --threads 1 --ckpt-every 25 --seed 0 --t-max-disc 100"
$DISTILL $COMMON --stage gan --steps $GAN_STEPS --out $OUT/gan --lr-g 1e-5 --lr-d 1e-4 \
    > $LOG/distill_tiny_v2_gan.log 2>&1
KL="--stage kl --steps $KL_STEPS --lr-g 3e-6 --lr-fake 1e-5 --fake-steps 2"
$DISTILL $COMMON $KL --init $OUT/gan --weighting plain --out $OUT/gan_dmd \
    > $LOG/distill_tiny_v2_gan_dmd.log 2>&1 &
$DISTILL $COMMON $KL --init $OUT/gan --weighting softened --out $OUT/gan_skl \
    > $LOG/distill_tiny_v2_gan_skl.log 2>&1
wait
$DISTILL $COMMON $KL --disc $OUT/gan --weighting softened --out $OUT/skl_noinit \
    > $LOG/distill_tiny_v2_skl_noinit.log 2>&1
python bench/distill_eval.py --teacher $TEACHER --data $TEST --clips 40 --batch 10 --threads 1 \
    --student undistilled=$TEACHER --student gan=$OUT/gan --student gan_dmd=$OUT/gan_dmd --student gan_skl=$OUT/gan_skl \
    --student skl_noinit=$OUT/skl_noinit --json $LOG/distill_tiny_v2_eval.json 2>&1 | tee $LOG/distill_tiny_v2_eval.log
