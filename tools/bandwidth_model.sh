#!/bin/bash
# bandwidth_model.sh: the latency-bandwidth cost model of docs/PERFORMANCE.md ("Cost model")
# checked against tools/bandwidth_bench.sh measurements, and its plot.
#
#   tools/bandwidth_model.sh [--cores 2] [--cap GBIT] [--png docs/bandwidth_model.png] CSV...
#
# Model (n ranks, S dense bytes, s = one rank's allgather block, B link rate in bytes/s):
#   per-rank links  dense ring allreduce  2(n-1)/n * S / B        sparse allgather  (n-1) * s / B
#   shared link     dense ring allreduce  2(n-1) * S / B          sparse allgather  n(n-1) * s / B
#   plus 2(n-1) alpha and (n-1) alpha (ring) latency terms, and, for sparccl, the compute
#   C(n) = C1 * max(1, n / cores): C1 = compress + decompress of one rank alone (the CSV's
#   "alone" rows, median), stretched when n ranks share `cores` cores.
# --cap G: the link rate is min(rate, G), G = what TCP over veth reaches on the machine
# (measured: the dense ring at the highest rates).
# Prints, for every measured row, the measured and predicted times; draws measured points
# and predicted curves (time against link rate; speedup against ranks) in one PNG.
set -u -o pipefail
CORES=2
PNG=docs/bandwidth_model.png
ALPHA=0   # seconds per message; the measured sizes do not resolve it (see docs)
CAP=0     # Gbit/s: the most one rank's TCP over veth moves on this machine (0: no cap)
while [ $# -gt 0 ]; do
  case "$1" in
    --cores) CORES=$2; shift 2 ;;
    --png) PNG=$2; shift 2 ;;
    --alpha) ALPHA=$2; shift 2 ;;
    --cap) CAP=$2; shift 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--cores N] [--png FILE] CSV..." >&2; exit 2; }
WORK=$(mktemp -d /tmp/sparccl_model.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# All rows of all CSVs (headers dropped).
awk -F, 'FNR > 1' "$@" > "$WORK/all.csv"

# Medians per configuration: key = topology,rate,latency,ranks,layout,method,density,wire.
awk -F, -v cores="$CORES" -v alpha="$ALPHA" -v cap="$CAP" '
function med(list,   a, n, i, j, t) {
  n = split(list, a, " ");
  for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
  key = $1 "," $2 "," $3 "," $4 "," $5 "," $6 "," $7 "," $8
  t[key] = t[key] " " $11; S[$5] = $9; s[$5 "," $6 "," $7 "," $8] = $10
  if ($1 == "alone") c1[$5 "," $6 "," $7 "," $8] = c1[$5 "," $6 "," $7 "," $8] " " ($16 + $18)
  cnt[key]++
}
END {
  printf "%-8s %5s %3s %-17s %-10s %6s %4s %4s %11s %11s %7s\n", "topology", "Gb/s", "n", "layout", "method", "density", "wire", "runs", "meas ms", "model ms", "model/meas"
  for (key in t) {
    split(key, k, ",")
    if (k[1] == "alone") continue
    n = k[4]; g = (cap > 0 && k[2] + 0 > cap + 0) ? cap : k[2]; B = g * 1e9 / 8; L = k[5]; m = med(t[key])
    if (k[6] == "dense" || k[6] == "dense-ring") {
      p = (k[1] == "shared" ? 2 * (n - 1) * S[L] : 2 * (n - 1) / n * S[L]) / B + 2 * (n - 1) * alpha
    } else {
      ck = L "," k[6] "," k[7] "," k[8]
      if (!(ck in c1)) continue
      C = med(c1[ck]) * (n / cores > 1 ? n / cores : 1)
      p = C + (k[1] == "shared" ? n * (n - 1) * s[ck] : (n - 1) * s[ck]) / B + (n - 1) * alpha
    }
    printf "%-8s %5s %3s %-17s %-10s %6s %4s %4d %11.1f %11.1f %7.2f\n", k[1], k[2], n, L, k[6], k[7], k[8], cnt[key], m * 1e3, p * 1e3, p / m
  }
  for (ck in c1) printf "# C1 %s %.1f ms (alone, median of %d)\n", ck, med(c1[ck]) * 1e3, split(c1[ck], z, " ") > "/dev/stderr"
}' "$WORK/all.csv" 2> "$WORK/c1.txt" | { IFS= read -r h; echo "$h"; sort; } | tee "$WORK/model.txt"
cat "$WORK/c1.txt"

# Plot data: ResNet-18, scam-topk, density 1%, fp32 wire (the target configuration).
L=resnet18_cifar10; CK="$L,scam-topk,0.01,fp32"
S=$(awk -F, -v L=$L '$5 == L {print $9; exit}' "$WORK/all.csv")
s1=$(awk -F, -v L=$L '$5 == L && $6 == "scam-topk" && $7 == 0.01 && $8 == "fp32" {print $10; exit}' "$WORK/all.csv")
s01=$(awk -F, -v L=$L '$5 == L && $6 == "scam-topk" && $7 == 0.001 && $8 == "fp32" {print $10; exit}' "$WORK/all.csv")
C1=$(awk -v ck="$CK" '$2 == "C1" && $3 == ck {print $4 / 1e3}' "$WORK/c1.txt")
C1b=$(awk -v ck="$L,scam-topk,0.001,fp32" '$2 == "C1" && $3 == ck {print $4 / 1e3}' "$WORK/c1.txt")
[ -n "$S" ] && [ -n "$s1" ] && [ -n "$C1" ] || { echo "no ResNet-18 scam-topk 1% fp32 rows with an alone row: no plot"; exit 0; }
s01=${s01:-0}; C1b=${C1b:-$C1}
# measured medians: per-rank, 4 ranks, against rate; speedups against ranks at 1 Gbit/s
awk '$1 == "per-rank" && $3 == 4 && $4 == "'$L'" && ($5 == "dense" || $5 == "dense-ring" || ($5 == "scam-topk" && $6 == "0.01" && $7 == "fp32")) {print $5, $2, $9 / 1e3}' "$WORK/model.txt" > "$WORK/rate.dat"
awk '$2 == 1 && $4 == "'$L'" {key = $1 " " $3; if ($5 == "dense-ring") d[key] = $9; if ($5 == "scam-topk" && $7 == "fp32") { if ($6 == "0.01") a[key] = $9; if ($6 == "0.001") b[key] = $9 } }
     END {for (k in d) {split(k, x, " "); if (k in a) print x[1], x[2], d[k] / a[k], "0.01"; if (k in b) print x[1], x[2], d[k] / b[k], "0.001"}}' "$WORK/model.txt" | sort -k1,1 -k2,2n > "$WORK/ranks.dat"

cat > "$WORK/model.gp" <<EOF
set terminal pngcairo size 1300,520 font ',9'
set output '$PNG'
set multiplot layout 1,2
S = $S; s1 = $s1; s01 = $s01; C1 = $C1; C1b = $C1b; P = $CORES; CAP = $CAP
Bc(g) = (CAP > 0 && g > CAP ? CAP : g) * 1e9 / 8
C(n, c) = c * (n > P ? n / P : 1)
B(g) = g * 1e9 / 8
set logscale xy; set grid; set key top right font ',8'
set title 'ResNet-18, 4 ranks, per-rank links: time per allreduce'
set xlabel 'per-rank link rate (Gbit/s)'; set ylabel 'seconds'
set xrange [0.5:100]
plot 2*3/4.*S/B(x) with lines lw 2 lc rgb 'black' title 'model: dense ring 2(n-1)/n S/B', \
     C(4, C1) + 3*s1/B(x) with lines lw 2 lc rgb 'red' title 'model: sparccl 1% = C(n) + (n-1)s/B', \
     3*s1/B(x) with lines dt 2 lc rgb 'red' title 'model: its wire time alone', \
     (CAP > 0 ? 2*3/4.*S/Bc(x) : NaN) with lines dt 4 lw 2 lc rgb 'gray40' title sprintf('model: dense ring, rate capped at the measured %.1f Gbit/s', CAP), \
     (CAP > 0 ? C(4, C1) + 3*s1/Bc(x) : NaN) with lines dt 4 lw 2 lc rgb 'orange' title 'model: sparccl 1%, capped rate', \
     '$WORK/rate.dat' using (strcol(1) eq 'dense' ? \$2 : NaN):3 with points pt 7 ps 1.5 lc rgb 'gray40' title 'measured: MPI\_Allreduce (Open MPI default)', \
     '$WORK/rate.dat' using (strcol(1) eq 'dense-ring' ? \$2 : NaN):3 with points pt 5 ps 1.3 lc rgb 'black' title 'measured: dense ring', \
     '$WORK/rate.dat' using (strcol(1) eq 'scam-topk' ? \$2 : NaN):3 with points pt 9 ps 1.6 lc rgb 'red' title 'measured: sparccl scam-topk 1% fp32'
set title 'ResNet-18 at 1 Gbit/s: speedup of sparccl (scam-topk, fp32) over the dense ring'
set xlabel 'ranks n'; set ylabel 'speedup (dense time / sparccl time)'
set xrange [2:1024]; set yrange [0.1:100]
Sp(n, s, c) = (2*(n-1)/n*S/B(1)) / (C(n, c) + (n-1)*s/B(1))
Ss(n, s, c) = (2*(n-1)*S/B(1)) / (C(n, c) + n*(n-1)*s/B(1))
set samples 400
M(x, v) = x <= 8 ? v : NaN
plot 2*S/(x*s1) with lines dt 2 lw 2 lc rgb 'red' title 'model, wire only, 1%: 2S/(n s), both topologies', \
     2*S/(x*s01) with lines dt 2 lw 2 lc rgb 'blue' title 'model, wire only, 0.1%', \
     Sp(x, s1, C1/(x > P ? x / P : 1)) with lines lc rgb 'red' title 'model per-rank 1%, one core per rank (C = C1)', \
     Ss(x, s1, C1/(x > P ? x / P : 1)) with lines lw 2 lc rgb 'orange' title 'model shared 1%, one core per rank', \
     Sp(x, s01, C1b/(x > P ? x / P : 1)) with lines lc rgb 'blue' title 'model per-rank 0.1%, one core per rank', \
     Ss(x, s01, C1b/(x > P ? x / P : 1)) with lines lw 2 lc rgb 'cyan' title 'model shared 0.1%, one core per rank', \
     M(x, Sp(x, s1, C1)) with lines dt 3 lw 2 lc rgb 'red' title 'model per-rank 1%, n ranks on $CORES cores', \
     M(x, Ss(x, s1, C1)) with lines dt 3 lw 2 lc rgb 'orange' title 'model shared 1%, n ranks on $CORES cores', \
     M(x, Sp(x, s01, C1b)) with lines dt 3 lw 2 lc rgb 'blue' notitle, \
     M(x, Ss(x, s01, C1b)) with lines dt 3 lw 2 lc rgb 'cyan' notitle, \
     1 with lines lc rgb 'black' notitle, \
     '$WORK/ranks.dat' using (strcol(1) eq 'per-rank' && \$4 == 0.01 ? \$2 : NaN):3 with points pt 9 ps 1.6 lc rgb 'red' title 'measured per-rank 1%', \
     '$WORK/ranks.dat' using (strcol(1) eq 'shared' && \$4 == 0.01 ? \$2 : NaN):3 with points pt 7 ps 1.6 lc rgb 'orange' title 'measured shared 1%', \
     '$WORK/ranks.dat' using (strcol(1) eq 'per-rank' && \$4 == 0.001 ? \$2 : NaN):3 with points pt 9 ps 1.6 lc rgb 'blue' title 'measured per-rank 0.1%', \
     '$WORK/ranks.dat' using (strcol(1) eq 'shared' && \$4 == 0.001 ? \$2 : NaN):3 with points pt 7 ps 1.6 lc rgb 'cyan' title 'measured shared 0.1%'
unset multiplot
EOF
gnuplot "$WORK/model.gp" && echo "plot: $PNG"
