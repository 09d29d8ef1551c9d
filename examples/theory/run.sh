#!/bin/sh
# The theory check: compressed gradient descent through sparccl on a strongly convex
# quadratic (examples/theory/theory_quadratic.c) against the thesis' linear-rate bounds.
#
#   examples/theory/run.sh [--out DIR] [--np "1 2 4"] [--methods "dense topk impk_c scam-topk"]
#       [--gammas "0.5 1"] [--steps N] [--d N] [--replot] [-- extra theory_quadratic options]
#
# Every method, for every step gamma = X/L in --gammas (0.5: Theorem 2's corollary, 1:
# Theorem 4's) and every rank count in --np; then the same for topk and scam-topk on one
# rank with the program's own double-precision compressor (--reference), as a cross-check
# of the library.  Writes DIR/summary.csv (one row per run), DIR/trace.csv (f - f* every 5
# steps), DIR/rates.png (gnuplot: (f - f*)/(f0 - f*) against t, with the bounds) and prints
# the table.  --replot: no runs; table and plot again from DIR.
# Environment: MPIRUN, BUILD.
set -eu

BUILD=${BUILD:-build}
MPIRUN=${MPIRUN:-mpirun --allow-run-as-root --oversubscribe}
BIN=$BUILD/bin/theory_quadratic
OUT=""
NPS="1 2 4"
METHODS="dense topk impk_c scam-topk"
GAMMAS="0.5 1"
STEPS=4000
D=2048
REPLOT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift ;;
    --np) NPS=$2; shift ;;
    --methods) METHODS=$2; shift ;;
    --gammas) GAMMAS=$2; shift ;;
    --steps) STEPS=$2; shift ;;
    --d) D=$2; shift ;;
    --replot) REPLOT=1 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$OUT" ] || OUT=$BUILD/theory
if [ $REPLOT = 0 ]; then
  [ -x "$BIN" ] || { echo "run.sh: $BIN not built (make theory-bin)" >&2; exit 1; }
  mkdir -p "$OUT"
  rm -f "$OUT/summary.csv" "$OUT/trace.csv" "$OUT/runs.txt" "$OUT"/*.dat "$OUT"/*.png
  echo "== theory check: d = $D, steps <= $STEPS, ranks [$NPS], gamma*L [$GAMMAS], methods [$METHODS]"
  for g in $GAMMAS; do
    for n in $NPS; do
      for m in $METHODS; do
        # shellcheck disable=SC2086
        $MPIRUN -np "$n" "$BIN" --method "$m" --gamma-l "$g" --d "$D" --steps "$STEPS" \
          --csv "$OUT/summary.csv" --trace "$OUT/trace.csv" --trace-every 5 --quiet "$@" \
          >> "$OUT/runs.txt"
      done
    done
    for m in topk scam-topk; do
      case " $METHODS " in *" $m "*) ;; *) continue ;; esac
      # shellcheck disable=SC2086
      $MPIRUN -np 1 "$BIN" --method "$m" --reference --gamma-l "$g" --d "$D" --steps "$STEPS" \
        --csv "$OUT/summary.csv" --quiet "$@" >> "$OUT/runs.txt"
    done
  done
else
  [ -f "$OUT/summary.csv" ] || { echo "run.sh: no $OUT/summary.csv to replot" >&2; exit 1; }
  rm -f "$OUT"/*.dat "$OUT"/*.png
fi

# The table (markdown): measured rates beside the bounds.
echo
echo "| method | ranks | gamma*L | steps | (f-f*)/(f0-f*) at end | rate (LS fit) | rate (mean) | worst step | delta min | delta mean | bound (20) | bound (24), delta min | bound (24), delta=k/d | applies | steps over per-step bound |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
awk -F, 'NR > 1 { printf "| %s | %s | %s | %s | %.2e | %.6f | %.6f | %.6f | %.3g | %.4f | %.6f | %.6f | %.6f | %s | %s |\n",
  $1, $2, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19 }' "$OUT/summary.csv"

# The plot: one panel per (gamma, ranks); curves from the trace, bound lines rho^t from the
# summary: (20) with k/d, (24) with the SCAM run's delta min and with delta = k/d, and plain
# gradient descent's 1 - mu gamma (2 - L gamma).
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "run.sh: gnuplot not found (make deps); no plot"; exit 0
fi
NG=$(echo $GAMMAS | wc -w)
NN=$(echo $NPS | wc -w)
GP=$OUT/rates.gp
{
  echo "set terminal pngcairo size $((NN * 520)),$((NG * 420)) font ',9'"
  echo "set output '$OUT/rates.png'"
  echo "set multiplot layout $NG,$NN"
  echo "set logscale y; set format y '10^{%L}'; set yrange [1e-11:2]; set grid"
  echo "set xlabel 't'; set ylabel '(f - f*) / (f_0 - f*)'; set key bottom right font ',8'"
} > "$GP"
for g in $GAMMAS; do
  for n in $NPS; do
    for m in $METHODS; do
      awk -F, -v m="$m" -v n="$n" -v g="$g" 'NR > 1 && $1 == m && $2 == n && $3 + 0 == g + 0 { print $4, $5 }' \
        "$OUT/trace.csv" > "$OUT/curve_${m}_np${n}_g${g}.dat"
    done
    B=$(awk -F, -v n="$n" -v g="$g" 'NR > 1 && $2 == n && $7 + 0 == g + 0 {
          if ($1 == "topk") b20 = $15; if ($1 == "scam-topk") { b24 = $16; b24kd = $17 }
          if ($1 == "dense") bgd = $16 }
        END { printf "%s %s %s %s", b20 ? b20 : 1, b24 ? b24 : 1, b24kd ? b24kd : 1, bgd ? bgd : 1 }' "$OUT/summary.csv")
    set -- $B
    TMAX=$(awk -F, -v n="$n" -v g="$g" 'NR > 1 && $2 == n && $7 + 0 == g + 0 && $8 > t { t = $8 } END { print t }' "$OUT/summary.csv")
    {
      echo "set title 'gamma = $g/L, $n rank(s)'; set xrange [0:$TMAX]"
      printf "plot "
      c=1
      for m in $METHODS; do
        printf "'%s' using 1:2 with lines lw 2 lc %d title '%s' noenhanced, " "$OUT/curve_${m}_np${n}_g${g}.dat" $c "$m"
        c=$((c + 1))
      done
      echo "$1**x with lines dt 2 lw 1.5 lc rgb 'black' title 'bound (20), k/d', \\"
      echo "  $2**x with lines dt 3 lw 1.5 lc rgb 'red' title 'bound (24), delta min (scam)', \\"
      echo "  $3**x with lines dt 4 lw 1.5 lc rgb 'blue' title 'bound (24), delta = k/d', \\"
      echo "  $4**x with lines dt 5 lw 1 lc rgb 'gray40' title 'GD bound 1-mu g(2-Lg)'"
    } >> "$GP"
  done
done
echo "unset multiplot" >> "$GP"
gnuplot "$GP"
echo
echo "wrote $OUT/summary.csv $OUT/trace.csv $OUT/rates.png"
