#!/usr/bin/env bash
# An SRGAN-MSE figure in the manner of the paper's Figures 2 and 6:
# bicubic | SRResNet | SRGAN-MSE | HR crops of three images with fine texture, stacked.
#
#   scripts/srgan_figure.sh DATA_DIR OUT.png [SRGAN_CHECKPOINT]
#
# SRGAN_CHECKPOINT: a training workdir or step folder (default: srgan_mse_x4, the shipped generator, made by
# scripts/train_srgan_mse_cpu.sh).
# DATA_DIR holds Set14/ and BSD100/ (../shared/data in this checkout). LR is made from each HR image
# by MATLAB bicubic / 4 (`srgan-jax compare`); captions are Y-PSNR / SSIM of the whole image.
set -euo pipefail
data=${1:?usage: scripts/srgan_figure.sh DATA_DIR OUT.png}
out=${2:?usage: scripts/srgan_figure.sh DATA_DIR OUT.png}
srgan=${3:-srgan_mse_x4}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
panels=()
for spec in "Set14/baboon.png 40,300,96,96" "BSD100/108005.png 200,130,96,96" "BSD100/175043.png 280,40,96,96"; do
  read -r image crop <<< "$spec"
  name=$(basename "$image" .png)
  srgan-jax compare "$data/$image" --checkpoint srresnet_x4 --label "SRResNet (shipped)" \
    --checkpoint "$srgan" --label "SRGAN-MSE x4 (shipped)" --crop "$crop" -o "$tmp/$name.png" > /dev/null
  panels+=("$tmp/$name.png")
done
python - "$out" "${panels[@]}" <<'EOF'
import sys
from PIL import Image
out, *paths = sys.argv[1:]
rows = [Image.open(p).convert("RGB") for p in paths]
figure = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
top = 0
for row in rows:
    figure.paste(row, (0, top))
    top += row.height
figure.save(out)
print(out)
EOF
