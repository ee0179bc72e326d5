#!/usr/bin/env bash
# Train the shipped RecViT checkpoint on photos32 in paper 000's Alg. 2 order:
#   1. width stage  — width pruning towards rho_t (L_rho, adaptive lambda, Eq. 34-39), no halting;
#   2. depth stage  — from the width checkpoint: width parameters frozen, stop-score controller + backbone
#                     fine-tuned with the ponder loss, channel term beta removed (Alg. 2 step 3);
#   3. evaluation   — inference form per SNR (PSNR, SSIM, executed layers, width, FLOPs) -> eval.json/.png;
#   4. shipping     — fp16 weights without optimizer state (< 20 MB) -> $SHIP.
# Re-running continues where it stopped: finished stages are skipped, interrupted ones resume exactly from
# their last.pt (written every CKPT_EVERY steps). Every knob is an environment variable:
#   WIDTH_STEPS DEPTH_STEPS BATCH SNR CHANNEL SEED DEVICE NPROC LR DEPTH_LR CKPT_EVERY OUT SHIP
# e.g.  WIDTH_STEPS=3000 DEPTH_STEPS=1500 bash scripts/train_recvit.sh
#       NPROC=2 bash scripts/train_recvit.sh            # DDP over 2 processes (torchrun, gloo on CPU)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
EDGESC=${EDGESC:-.venv/bin/edgesc}
OUT=${OUT:-runs/recvit}
WIDTH_STEPS=${WIDTH_STEPS:-2000}
DEPTH_STEPS=${DEPTH_STEPS:-1000}
BATCH=${BATCH:-32}
SNR=${SNR:-0:20}
CHANNEL=${CHANNEL:-awgn}
SEED=${SEED:-0}
DEVICE=${DEVICE:-auto}
NPROC=${NPROC:-1}
LR=${LR:-5e-4}
DEPTH_LR=${DEPTH_LR:-2.5e-4}
CKPT_EVERY=${CKPT_EVERY:-100}
SHIP=${SHIP:-$OUT/recvit-fp16.pt}

if [ "$NPROC" -gt 1 ]; then
  LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" "$EDGESC")
else
  LAUNCH=("$EDGESC")
fi

stage() {  # stage NAME ARGS...: train OUT/NAME unless finished; resume if interrupted
  local name=$1; shift
  local dir="$OUT/$name"
  if [ -f "$dir/final.pt" ]; then
    echo "[$name] done: $dir/final.pt"
    return
  fi
  local resume=()
  if [ -f "$dir/last.pt" ]; then resume=(--resume); fi
  echo "[$name] training -> $dir ${resume[*]}"
  "${LAUNCH[@]}" train --model recvit --data photos32 --out "$dir" --batch-size "$BATCH" --snr-db "$SNR" \
    --channel "$CHANNEL" --seed "$SEED" --device "$DEVICE" --ckpt-every "$CKPT_EVERY" --log-every 10 \
    "${resume[@]}" "$@"
}

stage width --stage width --steps "$WIDTH_STEPS" --lr "$LR"
stage depth --stage depth --steps "$DEPTH_STEPS" --lr "$DEPTH_LR" --init "$OUT/width/final.pt"

"$EDGESC" eval "$OUT/depth/final.pt" --snr-db 1,4,7,10,13 --channel "$CHANNEL" \
  --json "$OUT/eval.json" --plot "$OUT/eval.png"
"$PY" - "$OUT/depth/final.pt" "$SHIP" <<'EOF'
import sys
from edgesc.train.checkpoint import export_weights
p = export_weights(sys.argv[1], sys.argv[2])
print(f"shipped {p} ({p.stat().st_size / 2**20:.1f} MB, fp16, no optimizer state)")
EOF
