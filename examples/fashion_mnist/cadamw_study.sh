#!/bin/bash
# The thesis' claim under CAdamW (issue 16 item 5, docs/RESULTS.md section 1): tune the
# learning rate per method on a separate seed, then several seeds at the tuned rates.
#
#   examples/fashion_mnist/cadamw_study.sh OUT_DIR [IMAGES] [EPOCHS] ["SEEDS"]
#
# Stage 1 (OUT_DIR/tune): seed 9, EPOCHS/2 epochs, every method at every rate of LRS; the
# rate with the best final test accuracy wins (OUT_DIR/tuned_lr.txt).  Stage 2
# (OUT_DIR/final): EPOCHS epochs, SEEDS, each method at its rate.  IMAGES training images
# (default 15000), all 10,000 test images, 2 ranks, density 1%.  Resumable, as converge.sh.
# Environment: METHODS, LRS, BUILD, MPIRUN.
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,11p "$0"; exit 2; }
OUT=$1 IMAGES=${2:-15000} EPOCHS=${3:-20} SEEDS=${4:-"1 2 3 4 5"}
METHODS=${METHODS:-"dense topk ef-topk scam-topk scam-impk_c scam-impk_s"}
LRS=${LRS:-"1e-4 2e-4 5e-4 1e-3 2e-3 4e-3"}
C="$(dirname "$0")/converge.sh"
export TRAIN_IMAGES=$IMAGES
common="--optimizer adamw --train-limit $IMAGES"
settings=()
for m in $METHODS; do
  for lr in $LRS; do settings+=("$m@$lr=--method $m --lr $lr $common"); done
done
"$C" "$OUT/tune" $((EPOCHS / 2)) 9 2 "${settings[@]}"
# the best rate per method: highest final test accuracy of the tuning seed
awk -F, 'NR > 1 && $2 == 1 { split($1, p, "@"); if (!(p[1] in best) || $4 > best[p[1]]) {
           best[p[1]] = $4; lr[p[1]] = p[2] } }
         END { for (m in lr) print m, lr[m], best[m] }' "$OUT/tune/summary.csv" |
  sort > "$OUT/tuned_lr.txt"
PY=python3
python3 -c 'import matplotlib' 2>/dev/null || { [ -x /usr/bin/python3 ] && PY=/usr/bin/python3; }
$PY "$(dirname "$0")/../../tools/lr_sweep_plot.py" "$OUT/tune/summary.csv" "$OUT/tune/lr_sweep.png" \
  "CAdamW tuning: seed 9, $((EPOCHS / 2)) epochs, $IMAGES images, 2 ranks, 1%"
settings=()
for m in $METHODS; do
  lr=$(awk -v m="$m" '$1 == m { print $2 }' "$OUT/tuned_lr.txt")
  settings+=("$m=--method $m --lr $lr $common")
done
"$C" "$OUT/final" "$EPOCHS" "$SEEDS" 2 "${settings[@]}"
