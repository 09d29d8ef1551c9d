#!/bin/bash
# bandwidth_bench.sh: dense MPI_Allreduce against sparcclAllReduce over rate-limited links,
# in one run (docs/PERFORMANCE.md, "Bandwidth-limited links").  Needs root (ip netns, tc).
#
# Two topologies, both built from network namespaces this script creates and deletes:
#
#   per-rank  N rank namespaces <P>-r0 .. <P>-r{N-1}, each with one veth "eth0"
#             (10.233.0.<r+1>/24) whose peer "v<r>" sits on a bridge "br0" in a hub
#             namespace <P>-hub (10.233.0.254).  Each link is rate-limited both ways
#             (tbf on eth0 = uplink, on v<r> = downlink; optional netem delay on the
#             uplink): a switch with one full-duplex port per rank.  mpirun runs in the hub
#             namespace with a hostfile listing the rank addresses, and starts one orted
#             per rank namespace through a launch agent (--mca plm_rsh_agent) that runs
#             `ip netns exec <ns>` instead of ssh.
#             --per-node P: N / P namespaces ("nodes") of P ranks each, the link per node and
#             unlimited inside it (the node's ranks meet on its own address); each sparccl
#             run once per --exchanges entry (SPARCCL_EXCHANGE, SPARCCL_RANKS_PER_NODE=P).
#   shared    one namespace <P>-lo whose loopback is rate-limited (tbf): every rank runs in
#             it and all traffic shares one link.
#
# Open MPI is told to use TCP only, on those interfaces only (--mca pml ob1 --mca btl
# tcp,self, btl_tcp_if_include / oob_tcp_if_include = the namespace subnet or 127.0.0.0/8).
# No interface outside the created namespaces is touched; traffic goes only to 10.233.0.0/24
# inside them or to their loopback.  Everything is removed on exit, also on Ctrl-C.
#
# Output (in --out DIR, default $BUILD/bandwidth): bandwidth.csv, bandwidth.txt (table),
# bandwidth.png (gnuplot), logs/.
set -u -o pipefail

BUILD=${BUILD:-build}
HERE=$(cd "$(dirname "$0")/.." && pwd)
LAYOUT_DIR=${LAYOUT_DIR:-$HERE/../shared/layouts}
RANKS="4"
RATES="1 10 25"
SHARED_RATE=1
LATENCY=0
TOPOLOGIES="shared per-rank"
LAYOUTS="resnet18_cifar10 gpt2_small"
METHODS="scam-topk ef21-topk randk"
DENSITIES="0.01 0.001"
WIRES="fp32 bf16"
PIPELINES="0"        # config.pipelineBytes of the sparccl rows (0 = one block)
ITERS=5
ITERS_BIG=2          # for layouts over 100M elements (GPT-2 small)
ALONE=1              # also time compress + decompress with one rank, no network
TIMEOUT=900          # seconds per mpirun
OUT=""
DENSE_ALGO=""
PER_NODE=1           # ranks per namespace in the per-rank topology
EXCHANGES=allgather  # SPARCCL_EXCHANGE values, each its own run
SUBNET=10.233.0

usage() {
  cat <<EOF
usage: tools/bandwidth_bench.sh [options]     (as root)
  --ranks "2 4 8"        rank counts (2..8; default "$RANKS")
  --rates "1 10 25"      per-rank link rates in Gbit/s (default "$RATES")
  --shared-rate R        rate of the shared loopback in Gbit/s (default $SHARED_RATE)
  --latency MS           one-way delay added on every uplink, per-rank topology (default 0)
  --topologies "shared per-rank"   which to run (default both)
  --layouts "resnet18_cifar10 gpt2_small"   names under $LAYOUT_DIR, or paths
  --methods "scam-topk ef21-topk randk"     sparccl methods (feedback-compressor)
  --densities "0.01 0.001"  --wires "fp32 bf16"
  --pipelines "0 65536"  sparccl's pipelineBytes, each a row (default "$PIPELINES": one block)
  -n N                   timed calls per configuration (default $ITERS; $ITERS_BIG on layouts
                         over 100M elements: --iters-big N)
  --alone 0|1            time compression alone, 1 rank, no network (default $ALONE)
  --timeout S            limit per mpirun (default $TIMEOUT)
  --dense-algo A         Open MPI allreduce algorithm for every collective (coll_tuned:
                         4 ring, 5 segmented ring, 6 Rabenseifner; default: Open MPI decides)
  --per-node P           per-rank topology: P ranks per namespace (a node), links per node
  --exchanges "allgather hierarchical"   sparccl exchanges, one run each (default allgather)
  --out DIR              results directory (default \$BUILD/bandwidth)
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) RANKS=$2; shift ;;
    --rates) RATES=$2; shift ;;
    --shared-rate) SHARED_RATE=$2; shift ;;
    --latency) LATENCY=$2; shift ;;
    --topologies) TOPOLOGIES=$2; shift ;;
    --layouts) LAYOUTS=$2; shift ;;
    --methods) METHODS=$2; shift ;;
    --densities) DENSITIES=$2; shift ;;
    --wires) WIRES=$2; shift ;;
    --pipelines) PIPELINES=$2; shift ;;
    -n) ITERS=$2; shift ;;
    --iters-big) ITERS_BIG=$2; shift ;;
    --alone) ALONE=$2; shift ;;
    --timeout) TIMEOUT=$2; shift ;;
    --out) OUT=$2; shift ;;
    --dense-algo) DENSE_ALGO=$2; shift ;;
    --per-node) PER_NODE=$2; shift ;;
    --exchanges) EXCHANGES=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bandwidth_bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

die() { echo "bandwidth_bench.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces and tc)"
for t in ip tc mpirun timeout; do command -v $t >/dev/null || die "$t not found (apt-get install iproute2 openmpi-bin)"; done
BIN=$HERE/$BUILD/bin/bandwidth_bench
[ -x "$BIN" ] || die "$BIN not built: make BUILD=$BUILD bwbench"
for n in $RANKS; do [ "$n" -ge 2 ] && [ "$n" -le 8 ] || die "--ranks: 2 to 8"; done
OUT=${OUT:-$HERE/$BUILD/bandwidth}
mkdir -p "$OUT/logs" || die "cannot create $OUT"

P=sbw$$                         # prefix of every namespace this run creates
WORK=$(mktemp -d /tmp/sparccl_bw.XXXXXX)
CREATED=""                      # namespaces to delete

cleanup() {
  local ns pids
  trap - EXIT INT TERM HUP
  for ns in $CREATED; do
    # Only processes inside our own namespaces (mpirun, orted, ranks): by pid.
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
  done
  sleep 0.5
  for ns in $CREATED; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null   # takes its veths, bridge and qdiscs with it
  done
  CREATED=""
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "bandwidth_bench.sh: interrupted, cleaning up" >&2; exit 130' INT TERM HUP

mkns() { ip netns add "$1" || die "ip netns add $1"; CREATED="$CREATED $1"; ip -n "$1" link set lo up; }
delns() {
  local ns=$1 pids rest=""
  pids=$(ip netns pids "$ns" 2>/dev/null); [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  for x in $CREATED; do [ "$x" = "$ns" ] || rest="$rest $x"; done
  CREATED=$rest
}

# tbf parameters for a rate in Gbit/s: burst of 2 ms of traffic (at least 256 KB, more than
# one 64 KB GSO segment), queue of 50 ms.
shape() { # ns dev rate_gbit [delay_ms]
  local ns=$1 dev=$2 rate=$3 delay=${4:-0} burst
  burst=$(awk -v r="$rate" 'BEGIN{b=r*1e9/8*0.002; if (b<262144) b=262144; printf "%d", b}')
  tc -n "$ns" qdisc replace dev "$dev" root handle 1: tbf rate "${rate}gbit" burst "$burst" latency 50ms \
    || die "tc on $ns/$dev"
  if [ "$(awk -v d="$delay" 'BEGIN{print (d>0)}')" = 1 ]; then
    tc -n "$ns" qdisc replace dev "$dev" parent 1:1 handle 10: netem delay "${delay}ms" limit 100000 \
      || die "netem on $ns/$dev"
  fi
}

layout_path() { case "$1" in */*) echo "$1" ;; *) echo "$LAYOUT_DIR/$1.txt" ;; esac; }
layout_iters() { # big layouts get fewer calls
  local total
  total=$(awk '!/^#/ && NF {s += $NF} END {print s+0}' "$(layout_path "$1")")
  if [ "$total" -gt 100000000 ]; then echo "$ITERS_BIG"; else echo "$ITERS"; fi
}
helper_args() {
  local a="" x
  for x in $METHODS; do a="$a --method $x"; done
  for x in $DENSITIES; do a="$a --density $x"; done
  for x in $WIRES; do a="$a --wire $x"; done
  for x in $PIPELINES; do a="$a --pipeline $x"; done
  echo "$a"
}

MPI_COMMON="--allow-run-as-root --oversubscribe --bind-to none --mca pml ob1 --mca btl tcp,self"
# --dense-algo A: force Open MPI's tuned allreduce algorithm (4 = ring, 5 = segmented ring,
# 3 = recursive doubling, 6 = Rabenseifner); default: Open MPI's own decision.
[ -n "$DENSE_ALGO" ] && MPI_COMMON="$MPI_COMMON --mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm $DENSE_ALGO"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
CSV=$OUT/bandwidth.csv
echo "topology,rate_gbit,latency_ms,ranks,layout,method,density,wire,dense_bytes,wire_bytes_per_rank,time_med_s,time_min_s,dense_time_med_s,speedup,effbw_GBps,compress_s,exchange_s,decompress_s,ring_time_med_s,speedup_vs_ring,pipeline_bytes" > "$CSV"

run_mpi() { # log tag ns mpirun-args...  (the helper's CSV rows go to $CSV)
  local log=$1 tag=$2 ns=$3 x; shift 3
  echo "  $(date +%T) $tag $(basename "$log" .log)"
  # In the background and waited for, so that a signal runs the trap at once.
  ip netns exec "$ns" timeout --kill-after=10 "$TIMEOUT" mpirun "$@" > "$log" 2>&1 &
  wait $!
  local rc=$?
  for x in $CREATED; do   # the shapers' counters (sent, dropped, overlimits), cumulative
    echo "# tc -s qdisc, namespace $x:"; tc -n "$x" -s qdisc show 2>/dev/null | sed 's/^/#   /'
  done >> "$log"
  grep "^$tag," "$log" >> "$CSV"
  grep '^# netns' "$log" | sed 's/^/    /'
  [ $rc = 0 ] || { echo "  mpirun failed (rc $rc), see $log:"; tail -5 "$log" | sed 's/^/    /'; }
  return 0
}

echo "bandwidth_bench: $(date -u '+%F %T UTC') on $(hostname), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  results in $OUT"

# --latency needs sch_netem; some kernels are built without it (CONFIG_NET_SCH_NETEM).
if [ "$(awk -v d="$LATENCY" 'BEGIN{print (d>0)}')" = 1 ]; then
  mkns "$P-probe"
  tc -n "$P-probe" qdisc add dev lo root netem delay 1ms 2>/dev/null \
    || die "--latency: this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM); run without --latency"
  delns "$P-probe"
fi

# ------------------------------------------------------------------ compute alone
if [ "$ALONE" = 1 ]; then
  NS=$P-alone; mkns "$NS"
  for L in $LAYOUTS; do
    run_mpi "$OUT/logs/alone_$L.log" "alone,0,0" "$NS" $MPI_COMMON -np 1 \
      "$BIN" --layout "$(layout_path "$L")" $(helper_args) -n "$(layout_iters "$L")" --dense 0 --tag "alone,0,0"
  done
  delns "$NS"
fi

# ------------------------------------------------------------------ shared loopback
for topo in $TOPOLOGIES; do
  [ "$topo" = shared ] || continue
  NS=$P-lo; mkns "$NS"
  shape "$NS" lo "$SHARED_RATE"
  for n in $RANKS; do
    for L in $LAYOUTS; do
      tag="shared,$SHARED_RATE,0"
      run_mpi "$OUT/logs/shared_${SHARED_RATE}g_${n}r_$L.log" "$tag" "$NS" $MPI_COMMON -np "$n" \
        --mca btl_tcp_if_include 127.0.0.0/8 --mca oob_tcp_if_include lo \
        "$BIN" --layout "$(layout_path "$L")" $(helper_args) -n "$(layout_iters "$L")" --tag "$tag"
    done
  done
  delns "$NS"
done

# ------------------------------------------------------------------ per-rank links
for topo in $TOPOLOGIES; do
  [ "$topo" = per-rank ] || continue
  for n in $RANKS; do
    HUB=$P-hub; mkns "$HUB"
    ip -n "$HUB" link add br0 type bridge || die "bridge"
    ip -n "$HUB" addr add $SUBNET.254/24 dev br0
    ip -n "$HUB" link set br0 up
    : > "$WORK/hosts"
    [ $((n % PER_NODE)) = 0 ] || die "--per-node $PER_NODE does not divide $n ranks"
    for ((r = 0; r < n / PER_NODE; r++)); do
      mkns "$P-r$r"
      ip -n "$HUB" link add "v$r" type veth peer name eth0 netns "$P-r$r" || die "veth $r"
      ip -n "$HUB" link set "v$r" master br0 up
      ip -n "$P-r$r" addr add $SUBNET.$((r + 1))/24 dev eth0
      ip -n "$P-r$r" link set eth0 up
      echo "$SUBNET.$((r + 1)) slots=$PER_NODE" >> "$WORK/hosts"
    done
    # The launch agent: Open MPI calls it as it would call ssh (agent [opts] host command);
    # it runs the command in the rank namespace that owns that address.
    cat > "$WORK/agent.sh" <<EOF
#!/bin/bash
while [ \$# -gt 0 ] && [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
case "\$host" in $SUBNET.*) r=\$(( \${host##*.} - 1 )) ;; *) echo "agent: unknown host \$host" >&2; exit 1 ;; esac
exec ip netns exec $P-r\$r /bin/sh -c "\$*"
EOF
    chmod +x "$WORK/agent.sh"
    for rate in $RATES; do
      for ((r = 0; r < n / PER_NODE; r++)); do
        shape "$P-r$r" eth0 "$rate" "$LATENCY"
        shape "$HUB" "v$r" "$rate"
      done
      for L in $LAYOUTS; do
        for x in $EXCHANGES; do
          name=per-rank
          [ "$PER_NODE" = 1 ] || name=nodes-of-$PER_NODE
          [ "$x" = allgather ] || name=$name-$x
          tag="$name,$rate,$LATENCY"
          log=$name; [ "$name" = per-rank ] && log=perrank   # the old runs' log names
          run_mpi "$OUT/logs/${log}_${rate}g_${n}r_$L.log" "$tag" "$HUB" $MPI_COMMON -np "$n" \
            --hostfile "$WORK/hosts" --mca plm_rsh_agent "$WORK/agent.sh" --mca plm_rsh_no_tree_spawn 1 \
            --mca btl_tcp_if_include $SUBNET.0/24 --mca oob_tcp_if_include $SUBNET.0/24 \
            -x PATH -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM \
            -x SPARCCL_EXCHANGE=$x -x SPARCCL_RANKS_PER_NODE=$PER_NODE \
            "$BIN" --layout "$(layout_path "$L")" $(helper_args) -n "$(layout_iters "$L")" --tag "$tag"
        done
      done
    done
    for ((r = 0; r < n / PER_NODE; r++)); do delns "$P-r$r"; done
    delns "$HUB"
  done
done

# ------------------------------------------------------------------ table and plot
awk -F, 'NR == 1 {next}
  {printf "%-8s %5s %4s %3s %-17s %-10s %6s %4s %9s %10.1f %9.1f %8.2fx %8.2fx %8.3f %12.0f %9.1f %9.1f %9.1f\n",
     $1, $2, $3, $4, $5, $6, $7, $8, $21, $11 * 1e3, $12 * 1e3, $14, $20, $15, $10, $16 * 1e3, $17 * 1e3, $18 * 1e3}' "$CSV" \
  | { printf "%-8s %5s %4s %3s %-17s %-10s %6s %4s %9s %10s %9s %9s %9s %8s %12s %9s %9s %9s\n" \
        topology Gb/s lat n layout method density wire pipeline "time ms" "min ms" "vs MPI" "vs ring" "effGB/s" \
        "wire B/rank" "compr ms" "exch ms" "decomp ms"; cat; } > "$OUT/bandwidth.txt"
cat "$OUT/bandwidth.txt"

if command -v gnuplot >/dev/null; then
  # Time per call against the link rate: dense and every sparccl configuration, per layout
  # (per-rank topology), with the shared-loopback points as separate markers.
  for L in $LAYOUTS; do
    Ln=$(basename "$L" .txt)
    for n in $RANKS; do
      awk -F, -v L="$Ln" -v n="$n" '$5 == L && $4 == n && $1 == "per-rank" {
          key = $6 " d=" $7 " " $8 ($21 > 0 ? " pipeline " $21 : ""); if ($6 == "dense") key = "dense MPI_Allreduce"; if ($6 == "dense-ring") key = "dense ring (hand-written)";
          print key "," $2 "," $11 }' "$CSV" | sort -t, -k1,1 -k2,2g > "$OUT/logs/p_${Ln}_$n.dat"
    done
  done
  {
    echo "set terminal pngcairo size 1200,$((480 * $(echo $LAYOUTS | wc -w))) font ',9'"
    echo "set output '$OUT/bandwidth.png'"
    echo "set datafile separator ','"
    echo "set termoption noenhanced"
    echo "set multiplot layout $(echo $LAYOUTS | wc -w),1"
    echo "set logscale xy; set grid; set key outside right; set xrange [0.8:32]; set xlabel 'per-rank link rate (Gbit/s)'; set ylabel 'time per allreduce (s)'"
    for L in $LAYOUTS; do
      Ln=$(basename "$L" .txt)
      plots=""
      for n in $RANKS; do
        f=$OUT/logs/p_${Ln}_$n.dat
        [ -s "$f" ] || continue
        while IFS= read -r key; do
          plots="$plots${plots:+, }'$f' using (strcol(1) eq '$key' ? \$2 : NaN):3 with linespoints title '$n ranks: $key'"
        done < <(cut -d, -f1 "$f" | sort -u)
      done
      echo "set title 'Layout $Ln: dense MPI_Allreduce vs sparcclAllReduce (per-rank rate-limited links)'"
      [ -n "$plots" ] && echo "plot $plots" || echo "plot NaN notitle"
    done
    echo "unset multiplot"
  } > "$WORK/plot.gp"
  cp "$WORK/plot.gp" "$OUT/bandwidth.gp"
  gnuplot "$WORK/plot.gp" 2> "$OUT/logs/gnuplot.log" && echo "plot: $OUT/bandwidth.png" \
    || echo "gnuplot failed: $OUT/logs/gnuplot.log"
else
  echo "gnuplot not found (apt-get install gnuplot-nox): no plot"
fi
echo "csv: $CSV"
