#!/bin/bash
# `make demo`: dense against sparccl's recommended setting and two of the thesis' methods on
# Fashion-MNIST (all 60,000 training and 10,000 test images, 2 ranks, 1 seed, 3 epochs,
# SGD lr 0.05 with momentum 0.9: inside sparccl for dgc): 2 min 38 s on the 2-core VM (2026-12-03, otherwise idle).
# Prints test accuracy per epoch side by side and the bytes each setting sent; the full
# study, several seeds and 10 epochs, is docs/RESULTS.md section 0.
set -euo pipefail
BUILD=${BUILD:-build}
OUT=${OUT:-$BUILD/demo}
EPOCHS=${EPOCHS:-3}
SGD="--optimizer sgd"
SETTINGS=("dense=--method dense $SGD" "recommended=--recommended"
          "scam-impk_c=--method scam-impk_c $SGD" "ef-topk=--method ef-topk $SGD")
rm -rf "$OUT"
echo "== Fashion-MNIST MLP 784-1024-1024-10, 2 ranks, density 1%, $EPOCHS epochs, seed 1"
echo "   recommended: $("$BUILD/bin/fmnist_train" --help | sed -n 's/.*--recommended *sparccl.s recommended setting ([^)]*): //p')"
BUILD=$BUILD "$(dirname "$0")/converge.sh" "$OUT" "$EPOCHS" 1 2 "${SETTINGS[@]}" > /dev/null
echo
printf "%-6s" "epoch"
for s in "${SETTINGS[@]}"; do printf " %14s" "${s%%=*}"; done
echo "   (test accuracy)"
for e in $(seq 1 "$EPOCHS"); do
  printf "%-6s" "$e"
  for s in "${SETTINGS[@]}"; do
    awk -F, -v e="$e" 'NR > 1 && $4 == e { printf " %14.4f", $7 }' "$OUT/${s%%=*}.csv"
  done
  echo
done
echo
echo "setting, final accuracy, gap to dense, MB sent per rank in the whole run, share of dense:"
awk -F, 'NR > 1 { printf "  %-14s %s  %7s  %9s MB  %s\n", $1, $4, $8, $9, $10 }' "$OUT/summary.csv"
echo
echo "plot: $OUT/accuracy.png   tables: $OUT/summary.csv, $OUT/<setting>.csv"
