#!/usr/bin/env bash
# Train the shipped SRResNet x4 (pretrained/srresnet_x4) on a GPU machine without TensorFlow.
#
#   scripts/train_pretrained.sh TRAIN_DIR OUT_DIR [TIME_LIMIT_S] [--config.x=y ...]
#
# TRAIN_DIR: folder of HR training images (T91 + BSD200 for the shipped model), read by the
# in-memory source (decode once, aligned 96/24 crops per step, LR = MATLAB bicubic).
# Paper-size SRResNet-MSE (B = 16), bfloat16 compute with float32 parameters, batch 64 at
# Adam 2e-4 (sqrt batch scaling of the paper's 16 at 1e-4), stopped by time. Every
# minute the newest checkpoint's generator is packed into OUT_DIR/srresnet_x4.tar, so a run
# cut off from outside still returns weights. OUT_DIR also gets train.log, metrics.jsonl.
set -euo pipefail
train_dir=$1
out=$2
limit=${3:-540}
shift $(( $# < 3 ? $# : 3 ))
workdir=$(mktemp -d)/srresnet_x4
mkdir -p "$out" "$workdir"

pack_latest() {
  local latest
  latest=$(ls "$workdir/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1 || true)
  [ -n "$latest" ] || return 0
  tar -cf "$out/srresnet_x4.tar.tmp" -C "$workdir/checkpoints/$latest" generator meta \
    && mv "$out/srresnet_x4.tar.tmp" "$out/srresnet_x4.tar"
  cp "$workdir/metrics.jsonl" "$out/metrics.jsonl" 2>/dev/null || true
}

( while sleep 60; do pack_latest; done ) &
packer=$!
trap 'kill $packer 2>/dev/null || true' EXIT

status=0
PYTHONUNBUFFERED=1 python3 train.py --config=configs/srresnet.py --workdir="$workdir" \
  --config.data.image_dir="$train_dir" --config.data.in_memory=True \
  --config.dtype=bfloat16 --config.train.batch_size=64 --config.train.learning_rate=2e-4 \
  --config.train.num_steps=1000000 --config.train.time_limit_s="$limit" \
  --config.train.checkpoint_every=2000 --config.train.log_every=500 "$@" \
  2>&1 | tr '\r' '\n' | grep -v -E '^\s*[0-9]+%\|' | tee "$out/train.log" || status=$?
pack_latest
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; \
  python3 -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())'; } \
  > "$out/device.txt" 2>&1 || true
exit $status
