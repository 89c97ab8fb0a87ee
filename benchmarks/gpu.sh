#!/usr/bin/env bash
# Throughput matrix on a GPU (issue #7), one JSON file per run in OUTDIR, plus a log per run.
#
#   benchmarks/gpu.sh OUTDIR        (from the repository root)
#
# Runs, each independent (a failure is logged to OUTDIR/failures.txt and the others go on):
#   jax_<dtype>_<parallel>_b<batch>.json   srgan-jax benchmark --what all
#   jax_<dtype>_vs_torch_b<batch>.json     the same (mesh) with --compare-torch; JAX's memory is not
#                                          preallocated there so the PyTorch subprocess has room
#   torch_<mode>_<eager|amp_cl_compile>_b<batch>.json   the PyTorch reference alone, eager float32
#                                          and with --amp --channels-last --compile
# `--what all` skips `input` with a note where TensorFlow or the image folder (IMAGE_DIR) is
# missing; where it runs, the folder's tfds copy is prepared in OUTDIR/tfds.
#
# Environment overrides [defaults]; the paper-size model is the default:
#   DTYPES ["float32 bfloat16"]  PARALLELS ["mesh pmap"]  BATCHES ["16 64"]  BLOCKS [16]  FEATURES [64]
#   HR_SIZE [96]  INFER_LR_SIZE [24] (PyTorch's infer LR is HR_SIZE/4)  STEPS [20]  WARMUP [3]
#   IMAGE_DIR [../shared/data/T91]  TORCH_SCRIPT [benchmarks/torch_reference.py]  TORCH_DEVICE [cuda]  TORCH_MODES ["g gan vgg_gan infer"]
#   SRGAN_JAX [srgan-jax] (e.g. "python -m srgan_jax.cli")  PYTHON [python]
# A quick try on a CPU:
#   DTYPES=float32 PARALLELS=mesh BATCHES=2 BLOCKS=1 FEATURES=8 HR_SIZE=32 INFER_LR_SIZE=8 STEPS=2 WARMUP=1 \
#     TORCH_DEVICE=cpu benchmarks/gpu.sh /tmp/gpu-try
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
OUT=$1
DTYPES=${DTYPES:-float32 bfloat16}
PARALLELS=${PARALLELS:-mesh pmap}
BATCHES=${BATCHES:-16 64}
BLOCKS=${BLOCKS:-16}
FEATURES=${FEATURES:-64}
HR_SIZE=${HR_SIZE:-96}
INFER_LR_SIZE=${INFER_LR_SIZE:-24}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-3}
TORCH_SCRIPT=${TORCH_SCRIPT:-benchmarks/torch_reference.py}
IMAGE_DIR=${IMAGE_DIR:-../shared/data/T91}
TORCH_DEVICE=${TORCH_DEVICE:-cuda}
TORCH_MODES=${TORCH_MODES:-g gan vgg_gan infer}
SRGAN_JAX=${SRGAN_JAX:-srgan-jax}
PYTHON=${PYTHON:-python}
read -r -a jax_cli <<< "$SRGAN_JAX"
read -r -a python <<< "$PYTHON"
mkdir -p "$OUT"
: > "$OUT/failures.txt"

# run NAME COMMAND...: stdout+stderr to OUT/NAME.log; a failure is recorded, never fatal.
run() {
  local name=$1
  shift
  echo "== $name: $*"
  local status=0
  "$@" > "$OUT/$name.log" 2>&1 || status=$?
  if [[ $status -ne 0 ]]; then
    echo "$name: exit $status (see $OUT/$name.log)" | tee -a "$OUT/failures.txt"
  fi
}

common=(--blocks "$BLOCKS" --features "$FEATURES" --hr-size "$HR_SIZE" --infer-lr-size "$INFER_LR_SIZE"
        --steps "$STEPS" --warmup "$WARMUP" --image-dir "$IMAGE_DIR" --tfds-data-dir "$OUT/tfds")
for batch in $BATCHES; do
  for dtype in $DTYPES; do
    for parallel in $PARALLELS; do
      name="jax_${dtype}_${parallel}_b${batch}"
      run "$name" "${jax_cli[@]}" benchmark --what all --dtype "$dtype" --parallel "$parallel" --batch "$batch" \
        "${common[@]}" --json "$OUT/$name.json"
    done
    name="jax_${dtype}_vs_torch_b${batch}"
    run "$name" env XLA_PYTHON_CLIENT_PREALLOCATE=false "${jax_cli[@]}" benchmark --what all --dtype "$dtype" \
      --parallel mesh --batch "$batch" "${common[@]}" --compare-torch --torch-script "$TORCH_SCRIPT" \
      --json "$OUT/$name.json"
  done
  for mode in $TORCH_MODES; do
    hr=$HR_SIZE
    [[ $mode == infer ]] && hr=$((4 * INFER_LR_SIZE))
    torch_common=(--mode "$mode" --batch "$batch" --hr-size "$hr" --blocks "$BLOCKS" --features "$FEATURES" --steps "$STEPS"
                  --warmup "$WARMUP" --device "$TORCH_DEVICE")
    run "torch_${mode}_eager_b${batch}" "${python[@]}" "$TORCH_SCRIPT" "${torch_common[@]}" \
      --json "$OUT/torch_${mode}_eager_b${batch}.json"
    run "torch_${mode}_amp_cl_compile_b${batch}" "${python[@]}" "$TORCH_SCRIPT" "${torch_common[@]}" \
      --amp --channels-last --compile --json "$OUT/torch_${mode}_amp_cl_compile_b${batch}.json"
  done
done

if [[ -s "$OUT/failures.txt" ]]; then
  echo "$(wc -l < "$OUT/failures.txt") run(s) failed:" >&2
  cat "$OUT/failures.txt" >&2
  exit 1
fi
echo "all runs done: $OUT"
