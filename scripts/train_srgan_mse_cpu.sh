#!/usr/bin/env bash
# Train the shipped SRGAN-MSE x4 (pretrained/srgan_mse_x4) on a CPU machine, from the shipped SRResNet.
#
#   scripts/train_srgan_mse_cpu.sh DATA_DIR [TIME_LIMIT_S] [--config.x=y ...]
#
# DATA_DIR holds T91/ and BSD200/ (../shared/data in this repository's checkout). Their files
# are linked into the git-ignored .devdata/t91_bsd200/ (no copies) and read by the in-memory
# source (decode once, aligned 96/24 crops per step, LR = MATLAB bicubic). The recipe is the
# paper's SRGAN-MSE (SPEC "Losses", "Training recipe"): pixel MSE + 1e-3 adversarial, batch 16,
# Adam 1e-4 (0.9, 0.999), G from SRResNet-MSE, one D and one G update per step; the number of
# steps is cut, by TIME_LIMIT_S (default 7200). Two departures, both measured
# (pretrained/README.md, "Shipped SRGAN-MSE x4"): D's BatchNorm runs over [HR; SR] together
# (train.d_joint_batch), and G's output stage (pixel-shuffle stages and 9x9 output conv) keeps
# SRResNet's weights (train.g_upsample_lr_scale = train.g_tail_lr_scale = 0); trained, it grew
# a pixel-shuffle grid within 200 steps. Pass --config.train.g_upsample_lr_scale=1
# --config.train.g_tail_lr_scale=1 to train it as the paper does. The workdir, workdirs/srgan_mse_x4
# ($SRGAN_WORKDIR if set), is git-ignored and resumed when the script is run again (the time
# limit counts per run).
# A checkpoint every 100 steps (about 5 minutes on a 2-core AVX-512 CPU); all are kept so the
# health of the run can be read back from every one of them (scripts/gan_health.py).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: scripts/train_srgan_mse_cpu.sh DATA_DIR [TIME_LIMIT_S] [--config.x=y ...]}
limit=${2:-7200}
shift $(( $# < 2 ? $# : 2 ))

images=.devdata/t91_bsd200
for set in T91 BSD200; do
  [ -d "$data/$set" ] || { echo "$data/$set is not a folder: pass the folder that holds T91/ and BSD200/" >&2; exit 2; }
  mkdir -p "$images/$set"
  for f in "$data/$set"/*.png; do ln -sf "$(realpath "$f")" "$images/$set/$(basename "$f")"; done
done

PYTHONUNBUFFERED=1 exec python train.py --config=configs/srgan_mse.py --workdir="${SRGAN_WORKDIR:-workdirs/srgan_mse_x4}" \
  --config.init_from=pretrained/srresnet_x4 \
  --config.data.image_dir="$images" --config.data.in_memory=True \
  --config.train.batch_size=16 --config.train.learning_rate=1e-4 \
  --config.train.time_limit_s="$limit" --config.train.checkpoint_every=100 \
  --config.train.keep_checkpoints=1000 --config.train.log_every=25 --config.train.d_joint_batch=True \
  --config.train.g_upsample_lr_scale=0 --config.train.g_tail_lr_scale=0 "$@"
