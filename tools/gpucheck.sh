#!/usr/bin/env bash
# `make gpucheck`: on a machine with a GPU, run the GPU suite, the multi-process check on
# one GPU, the GPU benchmark and the torch.topk baseline; print one summary table and
# leave it in $BUILD/gpucheck.md (copy it into docs/PERFORMANCE.md).
set -u
BUILD=${1:-build}
LAYOUTS=${LAYOUTS:-../shared/layouts}
MPIRUN="mpirun --allow-run-as-root --oversubscribe"
out=$BUILD/gpucheck.md
mkdir -p "$BUILD"
{
  echo "# gpucheck $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/device: /'
} > "$out"

$MPIRUN -np 1 "$BUILD/bin/sparccl_gpu_tests" 2>&1 | tee "$BUILD/gpu_tests.log"
suite=$(grep -E "^[0-9]+%: Checks" "$BUILD/gpu_tests.log" || grep "not run" "$BUILD/gpu_tests.log" || echo "crashed")
$MPIRUN -np 2 "$BUILD/bin/sparccl_gpu_multirank" 2>&1 | tee "$BUILD/gpu_multirank.log"
multi=$(grep "multi-process" "$BUILD/gpu_multirank.log" || echo "failed: see $BUILD/gpu_multirank.log")
$MPIRUN -np 1 "$BUILD/bin/sparccl_gpu_perf" "$LAYOUTS/resnet18_cifar10.txt" "$LAYOUTS/gpt2_small.txt" 2>&1 | tee "$BUILD/gpu_perf.log"
python3 tools/torch_topk_baseline.py "$LAYOUTS/resnet18_cifar10.txt" "$LAYOUTS/gpt2_small.txt" 2>&1 | tee "$BUILD/torch_baseline.log"

{
  echo
  echo "| check | result |"
  echo "|---|---|"
  echo "| GPU suite (device vs CPU reference, bitwise) | $suite |"
  echo "| multi-process, one GPU | $multi |"
  echo
  echo '```'
  cat "$BUILD/gpu_perf.log"
  cat "$BUILD/torch_baseline.log"
  echo '```'
} >> "$out"
echo
cat "$out"
grep -q "Failures: 0, Errors: 0" "$BUILD/gpu_tests.log"
