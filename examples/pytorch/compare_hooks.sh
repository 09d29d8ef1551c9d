#!/bin/bash
# compare_hooks.sh [--seeds "0 1 2"] [--methods "..."] [--rate GBIT] [--out DIR]   (as root)
#
# sparccl beside PyTorch's own DDP hooks (compare_hooks.py): every method x seed, 2 ranks on
# gloo, in a network namespace of its own whose loopback is rate-limited by tbf (1 Gbit/s by
# default; both ranks' traffic shares that one link, as `make bandwidth`'s "shared"
# topology), then the summary table and the plot (compare_hooks_summary.py).  Also one
# dense run without the rate limit, to show that the link bounds the dense run.
# Output: DIR/runs.csv, DIR/summary.md, DIR/accuracy.png (default build/compare_hooks).
set -u -o pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SEEDS="0 1 2"
METHODS="dense fp16 powersgd1 powersgd4 sparccl-dgc-1 sparccl-dgc-01 sparccl-scam-1 sparccl-scam-01 sparccl-impkc-1 sparccl-impkc-01"
RATE=1
OUT=build/compare_hooks
PYTHON=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift ;;
    --methods) METHODS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: $0 [--seeds S] [--methods M] [--rate GBIT] [--out DIR]"; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "compare_hooks.sh: needs root (ip netns, tc)"; exit 1; }
mkdir -p "$OUT"
NS=sparccl-hooks-$$
cleanup() { ip netns del "$NS" 2>/dev/null; }
trap cleanup EXIT INT TERM
# burst: 2 ms of traffic, at least 256 KB; queue 50 ms (tools/bandwidth_bench.sh's shape)
BURST=$(awk -v r="$RATE" 'BEGIN{b=r*1e9/8*0.002; if (b<262144) b=262144; printf "%d", b}')
# the run's last CSV row, and impkc's time in the importance solve
last_lines() { awk '/^importance/ {if ($1 == "importance_step:") solve = $0; next}
                    {last = $0} END {print last; if (solve != "") print solve}'; }
run() { # ns-or-empty method seed csv
  local ns=$1 m=$2 s=$3 csv=$4
  echo "== $m, seed $s${ns:+, ${RATE} Gbit/s shared link}, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ -n "$ns" ]; then
    ip netns add "$ns" && ip -n "$ns" link set lo up &&
      tc -n "$ns" qdisc add dev lo root tbf rate "${RATE}gbit" burst "$BURST" latency 50ms || exit 1
    OMP_NUM_THREADS=1 ip netns exec "$ns" timeout 1200 "$PYTHON" -W ignore "$HERE/compare_hooks.py" \
      --method "$m" --seed "$s" --csv "$csv" | last_lines
    ip netns del "$ns"
  else
    OMP_NUM_THREADS=1 timeout 1200 "$PYTHON" -W ignore "$HERE/compare_hooks.py" \
      --method "$m" --seed "$s" --csv "$csv" | last_lines
  fi
}
rm -f "$OUT/runs.csv" "$OUT/unlimited.csv"
for s in $SEEDS; do
  for m in $METHODS; do run "$NS" "$m" "$s" "$OUT/runs.csv" || exit 1; done
done
run "" dense 0 "$OUT/unlimited.csv"
# the summary and the plot need matplotlib: the first python3 that has it
for p in "$PYTHON" /usr/bin/python3; do
  if "$p" -c 'import matplotlib' 2>/dev/null; then PLOT=$p; break; fi
done
"${PLOT:-$PYTHON}" "$HERE/compare_hooks_summary.py" "$OUT" --rate "$RATE"
