#!/usr/bin/env bash
# `make gpucheck`: on a machine with a GPU, run the GPU suite (device vs CPU reference,
# bitwise), the GPU benchmark, the torch.topk baseline, the multi-process check on one GPU
# and compute-sanitizer (memcheck, racecheck) over the suite at small sizes; print one
# summary table and leave it in $LOGDIR/gpucheck.md (copy it into docs/PERFORMANCE.md).
#
#   tools/gpucheck.sh BUILD        (make gpucheck)
#   GPUCHECK_STEPS="suite perf"    only these steps (default: suite perf torch multirank
#                                  perf2 memcheck racecheck)
#   LOGDIR=dir                     where the logs and the table go, as they are written
#                                  (default BUILD; tools/gpu_session.sh points it at $OUT)
# Every step has a time limit, so the whole stays inside one 10-minute device call.
# Exits non-zero if the suite, the multi-process check or a sanitizer failed.
set -u
BUILD=${1:-build}
LAYOUTS=${LAYOUTS:-../shared/layouts}
LOGDIR=${LOGDIR:-$BUILD}
STEPS=" ${GPUCHECK_STEPS:-suite perf torch multirank perf2 memcheck racecheck} "
MPIRUN="mpirun --allow-run-as-root --oversubscribe"
# The multi-process steps: NCCL sees each process as its own host (NCCL_HOSTID, set by the
# programs) and connects them with its socket transport; on one machine, over loopback.
# NCCL_DEBUG=WARN puts NCCL's reason for a failure into the log.
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-lo} NCCL_DEBUG=${NCCL_DEBUG:-WARN}
MPIRUN_NCCL="$MPIRUN -x NCCL_SOCKET_IFNAME -x NCCL_DEBUG"
out=$LOGDIR/gpucheck.md
mkdir -p "$LOGDIR"
status=0

want() { case "$STEPS" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# step NAME LIMIT COMMAND...: run with a time limit, output to $LOGDIR/NAME.log and here.
step() {
  local name=$1 limit=$2 rc
  shift 2
  echo "== $name (limit ${limit}s): $*"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$LOGDIR/$name.log" 2>&1
  rc=$?
  cat "$LOGDIR/$name.log"
  [ $rc -eq 124 ] && echo "TIMED OUT after ${limit}s" >> "$LOGDIR/$name.log"
  return $rc
}
result() {  # result NAME RC PASS-PATTERN: one table cell
  local name=$1 rc=$2 pattern=$3 line
  line=$(grep -E "$pattern" "$LOGDIR/$name.log" | grep -v '^-*$' | tail -1)
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; then  # a failure: its first error line
    line=$(grep -m1 -E 'rror|FAIL|[Ff]ail|\.cu?:[0-9]+|Assert' "$LOGDIR/$name.log" || echo "$line")
  fi
  line=$(echo "$line" | tr '|' '/')  # a table cell
  if [ "$rc" -eq 124 ]; then echo "timed out; $line"
  elif [ "$rc" -ne 0 ]; then echo "FAILED (exit $rc); ${line:-see $name.log}"
  else echo "${line:-passed}"; fi
}

{
  echo "# gpucheck $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/device: /'
  echo
  echo "| check | result |"
  echo "|---|---|"
} > "$out"
row() { echo "| $1 | $2 |" >> "$out"; }

if want suite; then
  step gpu_tests 300 $MPIRUN -np 1 "$BUILD/bin/sparccl_gpu_tests"; rc=$?
  grep -q "Failures: 0, Errors: 0" "$LOGDIR/gpu_tests.log" || status=1
  row "GPU suite, full sizes (device vs CPU reference, bitwise)" "$(result gpu_tests $rc '^[0-9]+%: Checks|not run')"
fi
if want perf; then
  step gpu_perf 150 $MPIRUN -np 1 "$BUILD/bin/sparccl_gpu_perf" "$LAYOUTS/resnet18_cifar10.txt" "$LAYOUTS/gpt2_small.txt"; rc=$?
  row "GPU benchmark, 1 rank (gpu_perf.log)" "$(result gpu_perf $rc '.')"
fi
# the plain kernels (docs/DEVICE.md), the baseline the optimised ones must beat
if want perf; then
  step gpu_perf_plain 120 $MPIRUN -np 1 "$BUILD/bin/sparccl_gpu_perf" --kernels plain "$LAYOUTS/resnet18_cifar10.txt" "$LAYOUTS/gpt2_small.txt"; rc=$?
  row "GPU benchmark, plain kernels, 1 rank (gpu_perf_plain.log)" "$(result gpu_perf_plain $rc '.')"
fi
# 2 ranks on the one GPU (each its own NCCL_HOSTID: sockets, not NVLink): what each extra
# rank costs the decompress; the exchange time here is not a multi-GPU figure.
if want perf2; then
  step gpu_perf_2ranks 150 $MPIRUN_NCCL -np 2 "$BUILD/bin/sparccl_gpu_perf" -n 10 "$LAYOUTS/resnet18_cifar10.txt" "$LAYOUTS/gpt2_small.txt"; rc=$?
  row "GPU benchmark, 2 ranks on one GPU (gpu_perf_2ranks.log)" "$(result gpu_perf_2ranks $rc '.')"
fi
if want torch; then
  step torch_baseline 120 python3 tools/torch_topk_baseline.py "$LAYOUTS/resnet18_cifar10.txt" "$LAYOUTS/gpt2_small.txt"; rc=$?
  row "torch.topk + EF baseline (torch_baseline.log)" "$(result torch_baseline $rc '.')"
fi
if want multirank; then
  step gpu_multirank 120 $MPIRUN_NCCL -np 2 "$BUILD/bin/sparccl_gpu_multirank"; rc=$?
  [ $rc -eq 0 ] || status=1
  row "2 processes, one GPU (NCCL_HOSTID per process)" "$(result gpu_multirank $rc 'multi-process')"
fi
# compute-sanitizer over the small-size suite (the full sizes would take far too long).
for tool in memcheck racecheck; do
  want $tool || continue
  if [ -z "${COMPUTE_SANITIZER:-}" ]; then
    row "compute-sanitizer $tool" "not run: no compute-sanitizer on PATH or in CUDA's bin"
    continue
  fi
  step $tool 270 $MPIRUN -np 1 "$COMPUTE_SANITIZER" --tool $tool --error-exitcode 99 \
    "$BUILD/bin/sparccl_gpu_tests_small"; rc=$?
  [ $rc -eq 0 ] || status=1
  row "compute-sanitizer $tool, small sizes" "$(result $tool $rc 'ERROR SUMMARY|RACECHECK SUMMARY|HAZARD|Checks')"
done

{
  echo
  for f in gpu_perf gpu_perf_plain gpu_perf_2ranks torch_baseline; do
    [ -f "$LOGDIR/$f.log" ] || continue
    echo '```'
    cat "$LOGDIR/$f.log"
    echo '```'
  done
} >> "$out"
echo
cat "$out"
exit $status
