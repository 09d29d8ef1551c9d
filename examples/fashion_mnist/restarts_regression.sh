#!/bin/sh
# The restart slides' regression experiment: each method with and without restarts every
# N steps, over several seeds; prints mean train MSE, test MSE (against the noiseless
# function) and roughness, and plots the seed-1 fits.
#   examples/fashion_mnist/restarts_regression.sh [--steps N] [--every N] [--seeds "1 2 3"] [--out DIR]
set -eu
BUILD=${BUILD:-build}
MPIRUN=${MPIRUN:-mpirun --allow-run-as-root --oversubscribe}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
STEPS=3000; EVERY=500; SEEDS="1 2 3"; OUT=$BUILD/restarts_regression
METHODS="dense ef-topk scam-topk"
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS=$2; shift ;;
    --every) EVERY=$2; shift ;;
    --seeds) SEEDS=$2; shift ;;
    --methods) METHODS=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "restarts_regression.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
: > "$OUT/runs.txt"
for m in $METHODS; do
  for r in 0 "$EVERY"; do
    for s in $SEEDS; do
      $MPIRUN -np 2 "$BUILD/bin/restarts_regression" --method "$m" --restart-every "$r" \
        --steps "$STEPS" --seed "$s" --csv "$OUT/fit_${m}_r${r}_s$s.dat" | tee -a "$OUT/runs.txt"
    done
  done
done
echo
echo "== mean over seeds [$SEEDS], $STEPS full-batch AdamW steps, 2 ranks, density 1% (sparse methods)"
awk '{ k = $1 " " $3; n[k]++; tr[k] += $8; te[k] += $11; ro[k] += $13; if (!(k in o)) { o[k] = ++c; key[c] = k } }
  END { printf "%-10s %13s %10s %10s %11s\n", "method", "restart-every", "train mse", "test mse", "roughness"
        for (i = 1; i <= c; i++) { k = key[i]; split(k, a, " ")
          printf "%-10s %13s %10.5f %10.5f %11.3e\n", a[1], a[2], tr[k] / n[k], te[k] / n[k], ro[k] / n[k] } }' \
  "$OUT/runs.txt" | tee "$OUT/summary.txt"
if command -v gnuplot >/dev/null 2>&1; then
  s1=$(echo "$SEEDS" | awk '{print $1}')
  plot="'$OUT/fit_dense_r0_s$s1.dat' index 1 using 1:2 with points pt 7 ps 0.6 lc rgb 'black' title 'data (seed $s1)', '$OUT/fit_dense_r0_s$s1.dat' index 0 using 1:3 with lines lw 2 lc rgb 'gray' title 'target'"
  for m in $METHODS; do for r in 0 "$EVERY"; do
    plot="$plot, '$OUT/fit_${m}_r${r}_s$s1.dat' index 0 using 1:2 with lines lw 2 title '$m restart-every $r'"
  done; done
  gnuplot <<GP
set terminal pngcairo size 900,600 noenhanced
set output '$OUT/fits.png'
set title 'MLP 1-256-256-1, 64 noisy points, $STEPS AdamW steps'
set key outside right
set grid
plot $plot
GP
  echo "plot: $OUT/fits.png"
fi
