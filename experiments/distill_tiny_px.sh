#!/usr/bin/env bash
# Issue 8, session 3: the GAN stage with a discriminator that can see the sample (multiscale heads on the frozen
# teacher encoder + a pixel-branch head on x_t, hole-weighted pooling, t <= 20), then the KL-stage ablations from
# it, then one evaluation run and the separability probe. Not the shipped student (see bench/RESULTS.md).
# Logs: bench/logs/distill_tiny_{gan_px,gan_px3,gan_px_skl,gan_px_dmd,px_skl_noinit,eval_px}.log,
# bench/logs/disc_probe*.json. Each training command used one core while another job ran on the second.
# Usage: bash experiments/distill_tiny_px.sh TEACHER_CKPT (moved from bench/; the heads are experiments/disc_heads.py)
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER=${1:-runs/teacher_tiny}
DATA=runs/cache/train_t8_s32_n1500.safetensors
TEST=runs/cache/test_t8_s32_n100.safetensors
OUT=runs/distill_tiny
LOG=bench/logs
COMMON="--teacher $TEACHER --data $DATA --batch 2 --threads 1 --seed 0 --t-max-disc 20"
DISC="--lr-d 1e-3 --head-width 32"
PX="python -m experiments.distill_disc --multiscale --holes --pixels --"
EXP="python -m experiments.distill_disc --"  # KL stages from those runs: the head kind must be registered
$PX $COMMON --ckpt-every 50 --stage gan --steps 300 --out $OUT/gan_px --lr-g 1e-5 $DISC \
    > $LOG/distill_tiny_gan_px.log 2>&1
$PX $COMMON --ckpt-every 50 --stage gan --steps 300 --out $OUT/gan_px3 --lr-g 3e-5 $DISC \
    > $LOG/distill_tiny_gan_px3.log 2>&1
KL="--ckpt-every 20 --stage kl --steps 60 --lr-g 3e-6 --lr-fake 1e-5 --fake-steps 2"
$EXP $COMMON $KL --init $OUT/gan_px --weighting softened --out $OUT/gan_px_skl \
    > $LOG/distill_tiny_gan_px_skl.log 2>&1
$EXP $COMMON $KL --init $OUT/gan_px --weighting plain --out $OUT/gan_px_dmd \
    > $LOG/distill_tiny_gan_px_dmd.log 2>&1
$EXP $COMMON $KL --disc $OUT/gan_px --weighting softened --out $OUT/px_skl_noinit \
    > $LOG/distill_tiny_px_skl_noinit.log 2>&1
python bench/distill_eval.py --teacher $TEACHER --data $TEST --clips 20 --batch 10 --threads 1 \
    --student undistilled=$TEACHER --student gan_px=$OUT/gan_px --student gan_px3=$OUT/gan_px3 \
    --student gan_px_dmd=$OUT/gan_px_dmd --student gan_px_skl=$OUT/gan_px_skl --student px_skl_noinit=$OUT/px_skl_noinit \
    --json $LOG/distill_tiny_eval_px.json 2>&1 | tee $LOG/distill_tiny_eval_px.log
python -m experiments.disc_probe --teacher $TEACHER --data $TEST --clips 64 --json $LOG/disc_probe.json
for run in gan_px gan_px3 gan_px_skl; do
    python -m experiments.disc_probe --teacher $TEACHER --data $TEST --clips 64 --t 0 --student $OUT/$run \
        --json $LOG/disc_probe_$run.json
done
