#!/bin/bash
# Converging like dense (SPEC 9, docs/RESULTS.md): named settings of fmnist_train, several
# seeds, all 60,000 training and 10,000 test images; resumable (a finished run is kept).
#
#   examples/fashion_mnist/converge.sh OUT_DIR EPOCHS "SEEDS" NP "label=options" ...
#   e.g. converge.sh docs/fmnist/converge 10 "1 2 3" 2 "dense=--method dense --optimizer sgd" \
#          "dgc-topk=--method dgc-topk --optimizer sgd"
#
# Writes OUT_DIR/<label>.csv (fmnist_train's rows: one per seed and epoch) and, through
# tools/converge_plot.py, OUT_DIR/summary.csv and OUT_DIR/accuracy.png.  Environment: MPIRUN,
# BUILD, OPENBLAS_NUM_THREADS, TRAIN_IMAGES (when the options limit them: the bytes' count).
set -euo pipefail
BUILD=${BUILD:-build}
MPIRUN=${MPIRUN:-mpirun --allow-run-as-root --oversubscribe}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
[ $# -ge 5 ] || { sed -n 2,11p "$0"; exit 2; }
OUT=$1 EPOCHS=$2 SEEDS=$3 NP=$4
shift 4
mkdir -p "$OUT"
for seed in $SEEDS; do
  for setting in "$@"; do
    label=${setting%%=*}
    options=${setting#*=}
    csv=$OUT/$label.csv
    # a run is done when its last epoch is in the file
    if [ -f "$csv" ] && awk -F, -v s="$seed" -v e="$EPOCHS" '$3 == s && $4 == e { f = 1 } END { exit !f }' "$csv"; then
      continue
    fi
    if [ -f "$csv" ]; then # drop a run that was cut off
      awk -F, -v s="$seed" 'NR == 1 || $3 != s' "$csv" > "$csv.tmp" && mv "$csv.tmp" "$csv"
    fi
    echo "== $label seed $seed: fmnist_train $options" >&2
    # shellcheck disable=SC2086
    $MPIRUN -np "$NP" "$BUILD/bin/fmnist_train" $options --epochs "$EPOCHS" --seed "$seed" \
      --csv "$csv" --quiet
  done
done
order=""
for setting in "$@"; do order="$order${order:+,}${setting%%=*}"; done
# a python with matplotlib for the plot: the first python3 on PATH, else Debian's
PY=python3
python3 -c 'import matplotlib' 2>/dev/null || { [ -x /usr/bin/python3 ] && PY=/usr/bin/python3; }
$PY "$(dirname "$0")/../../tools/converge_plot.py" "$OUT" "$NP" ${TRAIN_IMAGES:-60000} 64 --order "$order"
