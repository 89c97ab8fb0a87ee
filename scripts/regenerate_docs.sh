#!/usr/bin/env bash
# Regenerates, in place, the committed artefacts the README shows (tracked files change; the
# README's own example commands write to /tmp instead):
#   docs   docs/evaluate_shipped_x4.json (both shipped generators) and docs/perception_distortion.png
#          (srgan-jax evaluate, about 4 min on 2 CPU cores), docs/compare_butterfly.png (srgan-jax compare; trains the
#          quickstart into workdirs/quickstart first when it is not there, 3-8 min)
#   bench  benchmarks/results/cpu/{g_step,gan_step,infer}_run$RUN.json (srgan-jax benchmark beside
#          the PyTorch reference, needs torch; RUN defaults to 1) and xla_cpu_convs.json
# Usage: scripts/regenerate_docs.sh [docs|bench|all]   (default: all)
# Data: $SRGAN_DATA_DIR, default ../shared/data. Numbers quoted in README.md are not updated:
# compare them with the new files by hand (what reproduces to which digit: README "Perceptual quality").
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SRGAN_DATA_DIR:-../shared/data}
what=${1:-all}
case $what in docs|bench|all) ;; *) echo "usage: $0 [docs|bench|all]" >&2; exit 2 ;; esac

if [[ $what != bench ]]; then
  srgan-jax evaluate --data-dir "$data" --sets Set5,Set14,BSD100 --metrics psnr,ssim,niqe \
      --checkpoint srresnet_x4 --checkpoint srgan_mse_x4 \
      --plot docs/perception_distortion.png --json docs/evaluate_shipped_x4.json
  if [[ ! -d workdirs/quickstart/checkpoints ]]; then
    python train.py --config=configs/quickstart.py --workdir=workdirs/quickstart
  fi
  srgan-jax compare "$data/Set5/butterfly.png" --checkpoint workdirs/quickstart --label "quickstart (CPU)" \
      --checkpoint pretrained/srresnet_x4 --label "SRResNet x4 (shipped)" --crop 64,64,128,128 \
      -o docs/compare_butterfly.png
fi

if [[ $what != docs ]]; then
  out=benchmarks/results/cpu
  run=${RUN:-1}
  srgan-jax benchmark --what g_step --batch 16 --steps 10 --warmup 2 --compare-torch --json "$out/g_step_run$run.json"
  srgan-jax benchmark --what gan_step --batch 16 --steps 10 --warmup 2 --compare-torch --json "$out/gan_step_run$run.json"
  srgan-jax benchmark --what infer --infer-lr-size 24 --batch 16 --steps 10 --warmup 2 --compare-torch \
      --json "$out/infer_run$run.json"
  python benchmarks/xla_cpu_convs.py --json "$out/xla_cpu_convs.json"
fi
