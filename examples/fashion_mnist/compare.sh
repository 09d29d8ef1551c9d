#!/bin/sh
# Compare gradient-compression methods on Fashion-MNIST with the same seeds and budget.
#
#   examples/fashion_mnist/compare.sh [--short] [--epochs N] [--seeds "1 2 3"]
#       [--methods "dense topk ..."] [--train-limit N] [--test-limit N] [--np N]
#       [--lrs "method=lr ..."] [--out DIR] [--replot] [-- extra fmnist_train options]
#
# Writes DIR/epochs.csv (one row per method, seed and epoch), DIR/summary.csv (per method:
# test accuracy mean and spread over the seeds, final train loss, bytes/step against dense,
# training wall time) and DIR/loss.png, DIR/accuracy.png (gnuplot, means over the seeds).
# --lrs sets a learning rate per method (the thesis tunes it per compressor); the others
# use the trainer's default (or a --lr given after --).
# --replot: no training; summary, table and plots again from DIR/epochs.csv.
# --short: all methods, 1 seed, 2 epochs on 8192 training images and 2000 test images,
# the per-method learning rates of docs/RESULTS.md (about 1-4 minutes on 2 cores, 2 ranks).  Environment: MPIRUN, BUILD, OPENBLAS_NUM_THREADS.
set -eu

BUILD=${BUILD:-build}
MPIRUN=${MPIRUN:-mpirun --allow-run-as-root --oversubscribe}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
TRAIN=$BUILD/bin/fmnist_train
METHODS="dense topk ef-topk ef21-topk scam-topk impk_c scam-impk_c scam-impk_s randk"
SEEDS="1 2 3"
EPOCHS=10
TRAIN_LIMIT=0
TEST_LIMIT=0
NP=2
OUT=""
SHORT=0
LRS=""
REPLOT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --short) SHORT=1; SEEDS="1"; EPOCHS=2; TRAIN_LIMIT=8192; TEST_LIMIT=2000 ;;
    --epochs) EPOCHS=$2; shift ;;
    --seeds) SEEDS=$2; shift ;;
    --methods) METHODS=$2; shift ;;
    --train-limit) TRAIN_LIMIT=$2; shift ;;
    --test-limit) TEST_LIMIT=$2; shift ;;
    --np) NP=$2; shift ;;
    --out) OUT=$2; shift ;;
    --lrs) LRS=$2; shift ;;
    --replot) REPLOT=1 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
# The learning rates tuned per method (docs/RESULTS.md, section 1): --short uses them.
TUNED_LRS="dense=1e-3 topk=3e-3 ef-topk=3e-3 ef21-topk=1e-3 scam-topk=3e-4 impk_c=3e-3 scam-impk_c=3e-4 scam-impk_s=3e-4 randk=3e-3"
[ $SHORT = 1 ] && [ -z "$LRS" ] && LRS=$TUNED_LRS
[ -n "$OUT" ] || { if [ $SHORT = 1 ]; then OUT=$BUILD/fmnist_compare_short; else OUT=$BUILD/fmnist_compare; fi; }
if [ $REPLOT = 1 ]; then
  [ -f "$OUT/epochs.csv" ] || { echo "compare.sh: no $OUT/epochs.csv to replot" >&2; exit 1; }
  EPOCHS=$(awk -F, 'NR > 1 && $4 > e { e = $4 } END { print e }' "$OUT/epochs.csv")
  SEEDS=$(awk -F, 'NR > 1 && !($3 in s) { s[$3]; printf "%s%s", n++ ? " " : "", $3 }' "$OUT/epochs.csv")
  rm -f "$OUT/summary.csv" "$OUT"/curve_*.dat "$OUT"/*.png
else
[ -x "$TRAIN" ] || { echo "compare.sh: $TRAIN not built (make fmnist)" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT/epochs.csv" "$OUT/summary.csv" "$OUT"/curve_*.dat "$OUT"/*.png
LIMITS=""
[ "$TRAIN_LIMIT" -gt 0 ] && LIMITS="$LIMITS --train-limit $TRAIN_LIMIT"
[ "$TEST_LIMIT" -gt 0 ] && LIMITS="$LIMITS --test-limit $TEST_LIMIT"

echo "== Fashion-MNIST comparison: $NP ranks, $EPOCHS epochs, seeds [$SEEDS], methods [$METHODS]"
echo "   trainer options:$LIMITS --epochs $EPOCHS $*"
START=$(date +%s)
[ -n "$LRS" ] && echo "   per-method learning rates: $LRS"
for m in $METHODS; do
  LR=""
  for kv in $LRS; do [ "${kv%%=*}" = "$m" ] && LR="--lr ${kv#*=}"; done
  for s in $SEEDS; do
    # shellcheck disable=SC2086
    $MPIRUN -np "$NP" "$TRAIN" --method "$m" --seed "$s" --epochs "$EPOCHS" $LIMITS $LR \
      --csv "$OUT/epochs.csv" --quiet "$@"
  done
done
END=$(date +%s)
fi

# ---- summary: last epoch of every (method, seed), then mean and sample std over the seeds.
# epochs.csv: method,optimizer,seed,epoch,train_loss,test_loss,test_acc,bytes_per_step,
#             dense_bytes_per_step,bytes_ratio,train_seconds,restarts,skipped_steps,lr
awk -F, -v E="$EPOCHS" -v ORDER="$METHODS" '
  NR > 1 && $4 == E { n[$1]++; a[$1] += $7; a2[$1] += $7 * $7; l[$1] += $5; b[$1] = $8;
                      r[$1] = $10; t[$1] += $11; lr[$1] = $14 }
  END {
    print "method,seeds,test_acc_mean,test_acc_std,final_train_loss,bytes_per_step,bytes_vs_dense,train_seconds,lr"
    k = split(ORDER, ms, " ")
    for (i = 1; i <= k; i++) { m = ms[i]; if (!(m in n)) continue
      mean = a[m] / n[m]; var = n[m] > 1 ? (a2[m] - n[m] * mean * mean) / (n[m] - 1) : 0
      if (var < 0) var = 0
      printf "%s,%d,%.4f,%.4f,%.4f,%.0f,%.4f,%.1f,%s\n", m, n[m], mean, sqrt(var), l[m] / n[m], b[m], r[m], t[m] / n[m], lr[m] }
  }' "$OUT/epochs.csv" > "$OUT/summary.csv"

echo
echo "== results after $EPOCHS epochs (mean over seeds [$SEEDS]; spread = sample std)"
awk -F, 'NR == 1 { printf "%-13s %5s %9s %8s %11s %12s %9s %9s %8s\n", "method", "seeds", "test acc", "spread",
                   "train loss", "bytes/step", "vs dense", "train s", "lr"; next }
         { printf "%-13s %5d %9.4f %8.4f %11.4f %12.0f %9.4f %9.1f %8s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' \
  "$OUT/summary.csv"

# ---- per-epoch curves (mean over seeds) and plots
for m in $METHODS; do
  awk -F, -v M="$m" 'NR > 1 && $1 == M { n[$4]++; l[$4] += $5; a[$4] += $7; if ($4 > mx) mx = $4 }
    END { for (e = 1; e <= mx; e++) if (n[e]) printf "%d %.6f %.6f\n", e, l[e] / n[e], a[e] / n[e] }' \
    "$OUT/epochs.csv" > "$OUT/curve_$m.dat"
done
if command -v gnuplot >/dev/null 2>&1; then
  for what in loss accuracy; do
    if [ $what = loss ]; then col=2; ylab="train loss (mean over seeds)"; else col=3; ylab="test accuracy (mean over seeds)"; fi
    plot=""
    i=0
    for m in $METHODS; do
      i=$((i + 1))
      dt=1; [ $i -gt 8 ] && dt=2   # gnuplot has 8 colours: dash the 9th line onwards
      plot="$plot${plot:+, }'$OUT/curve_$m.dat' using 1:$col with linespoints lt $i dt $dt lw 2 title '$m'"
    done
    gnuplot <<GP
set terminal pngcairo size 900,600 noenhanced
set output '$OUT/$what.png'
set title 'Fashion-MNIST MLP 784-1024-1024-10, $NP ranks, density 1%, seeds [$SEEDS]'
set xlabel 'epoch'
set ylabel '$ylab'
set key outside right
set grid
set xtics 1
plot $plot
GP
  done
  echo
  echo "plots: $OUT/loss.png $OUT/accuracy.png"
else
  echo "gnuplot not found (make deps installs gnuplot-nox): no plots"
fi
if [ $REPLOT = 1 ]; then echo "tables: $OUT/summary.csv $OUT/epochs.csv"
else echo "tables: $OUT/summary.csv $OUT/epochs.csv   (total $((END - START)) s)"; fi
