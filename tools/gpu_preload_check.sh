#!/usr/bin/env bash
# tools/gpu_preload_check.sh [BUILD]: on a machine with a GPU, run the NCCL preload and the
# PyTorch hook for real (docs/PRELOAD.md).  Not run in CI (no GPU there).
#
#  1. nccl-tests' all_reduce_perf, one GPU, -b equal to -e (so that the buffers, hence the
#     sparccl keys, stay put; nccl-tests shifts them otherwise), -c 0 (the sparse result is
#     not the dense sum, so nccl-tests' own check does not apply): plain, then under
#     LD_PRELOAD with SPARCCL_DEBUG=INFO -- the log must show "-> sparccl" -- for float32
#     sum, bfloat16 avg, and float32 sum inside a CUDA graph (-G: the keys are made by the
#     warm-up, so the captured calls are sparse).  The times go side by side in the table.
#  2. examples/pytorch/ddp_smoke.py: a few DDP steps with the sparccl hook, world size 1,
#     backend nccl (skipped when torch with CUDA is not installed).
#
# The GPU machine has no internet: fetch https://github.com/NVIDIA/nccl-tests beforehand
# (e.g. into ../shared/nccl-tests) and point NCCL_TESTS_SRC at it.  Environment:
#   NCCL_TESTS_SRC  nccl-tests checkout (default ../shared/nccl-tests); skipped if absent
#   BYTES           message size, -b = -e (default 256M, 64M floats)
#   ITERS           timed iterations (default 50)
#   GENCODE         nvcc -gencode for nccl-tests (default sm_90)
#   SPARCCL_*       passed on (SPARCCL_DENSITY defaults to 0.01)
# Leaves $BUILD/gpu_preload_check.md (a table) and the logs beside it.
set -u
BUILD=${1:-build}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NCCL_HOME=${NCCL_HOME:-$CUDA_HOME}
NCCL_TESTS_SRC=${NCCL_TESTS_SRC:-../shared/nccl-tests}
BYTES=${BYTES:-256M}
ITERS=${ITERS:-50}
GENCODE=${GENCODE:--gencode=arch=compute_90,code=sm_90}
export SPARCCL_DENSITY=${SPARCCL_DENSITY:-0.01}

make --no-print-directory BUILD="$BUILD" ncclpreload "$BUILD/lib/libsparccl_cuda.so" || exit 1
ABS=$(cd "$BUILD" && pwd)
PRELOAD=$ABS/lib/libsparccl_nccl_preload.so
out=$ABS/gpu_preload_check.md
{
  echo "# gpu_preload_check $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/device: /'
  echo
  echo "| run | decision (SPARCCL_DEBUG=INFO) | out-of-place time (us) | in-place time (us) |"
  echo "|---|---|---|---|"
} > "$out"
status=0

# time_of LOG FIELD: nccl-tests' result line (the one starting with the byte count).
time_of() { awk '$1 ~ /^[0-9]+$/ && NF >= 10 { print $'"$2"'; exit }' "$1"; }
# decision_of ERR: the preload's distinct decisions (out-of-place and in-place buffers).
decision_of() {
  grep -o 'nccl preload: ncclAllReduce .* -> .*' "$1" | sed 's/.* -> //' | sort -u | paste -sd ';' -
}

# ------------------------------------------------------------------ 1. nccl-tests
if [ -d "$NCCL_TESTS_SRC" ]; then
  echo "== building nccl-tests from $NCCL_TESTS_SRC"
  if ! make -C "$NCCL_TESTS_SRC" -j8 MPI=0 CUDA_HOME="$CUDA_HOME" NCCL_HOME="$NCCL_HOME" \
        NVCC_GENCODE="$GENCODE" BUILDDIR="$ABS/nccl-tests" > "$ABS/nccl-tests-build.log" 2>&1; then
    tail -20 "$ABS/nccl-tests-build.log"
    echo "| nccl-tests | build failed: see nccl-tests-build.log | | |" >> "$out"
    status=1
  fi
  PERF=$ABS/nccl-tests/all_reduce_perf
  if [ -x "$PERF" ]; then
    if ldd "$PERF" | grep -q libnccl; then :; else
      echo "WARN: all_reduce_perf does not link libnccl dynamically: the preload cannot interpose it"
    fi
    common=(-b "$BYTES" -e "$BYTES" -g 1 -c 0 -n "$ITERS" -w 5)
    # run NAME PRELOAD? ARGS...
    run() {
      local name=$1 pre=$2; shift 2
      local log=$ABS/preload_$name.log err=$ABS/preload_$name.err
      echo "== all_reduce_perf $name: $*"
      if [ "$pre" = 1 ]; then
        SPARCCL_DEBUG=INFO LD_PRELOAD="$PRELOAD" "$PERF" "$@" > "$log" 2> "$err"
      else
        "$PERF" "$@" > "$log" 2> "$err"
      fi
      local rc=$?
      cat "$log"
      grep 'nccl preload' "$err" | head -8
      local dec="NCCL (no preload)"
      [ "$pre" = 1 ] && dec=$(decision_of "$err")
      [ $rc -ne 0 ] && { dec="exit $rc: $dec"; status=1; }
      [ "$pre" = 1 ] && [ "$dec" != "sparccl (1 layer)" ] && status=1
      echo "| $name | ${dec:-no decision logged} | $(time_of "$log" 6) | $(time_of "$log" 10) |" >> "$out"
    }
    run "float32 sum, plain NCCL" 0 "${common[@]}" -d float -o sum
    run "float32 sum, preload" 1 "${common[@]}" -d float -o sum
    run "bfloat16 avg, plain NCCL" 0 "${common[@]}" -d bfloat16 -o avg
    run "bfloat16 avg, preload" 1 "${common[@]}" -d bfloat16 -o avg
    run "float32 sum, CUDA graph, preload" 1 "${common[@]}" -d float -o sum -G 10
  fi
else
  echo "nccl-tests not found at $NCCL_TESTS_SRC: fetch https://github.com/NVIDIA/nccl-tests" \
       "beforehand (this machine has no internet) and set NCCL_TESTS_SRC"
  echo "| nccl-tests | not run: no source at $NCCL_TESTS_SRC | | |" >> "$out"
fi

# ------------------------------------------------------------------ 2. PyTorch DDP + hook
echo >> "$out"
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "== PyTorch DDP, world size 1, backend nccl, sparccl hook"
  SPARCCL_LIB="$ABS/lib/libsparccl_cuda.so" SPARCCL_DEBUG=INFO \
    python3 examples/pytorch/ddp_smoke.py > "$ABS/ddp_smoke.log" 2>&1
  rc=$?
  cat "$ABS/ddp_smoke.log"
  [ $rc -ne 0 ] && status=1
  echo "PyTorch DDP step with the hook: $(tail -1 "$ABS/ddp_smoke.log") (exit $rc)" >> "$out"
  grep -E 'sparccl stats|changed its layout' "$ABS/ddp_smoke.log" | sed 's/^/    /' >> "$out"
else
  echo "torch with CUDA not installed: DDP check skipped"
  echo "PyTorch DDP step with the hook: not run (no torch with CUDA)" >> "$out"
fi

echo
cat "$out"
exit $status
