#!/usr/bin/env python3
"""What each kernel of cuda/ costs an SM, from the compiler alone (no GPU needed).

Compiles cuda/*.cu for one architecture with ptxas's resource report (-Xptxas -v) and prints,
per kernel: registers a thread, static shared memory a block, stack and spills, and how many
of its 256-thread blocks fit on one SM (the occupancy the hardware would give it), for an
H100 (sm_90: 65536 registers, 228 KiB of shared memory, 2048 threads, 32 blocks an SM).
Exits 1 when a kernel spills registers (the build fails on that too: -warn-spills in
mk/cuda.mk).

    python3 tools/kernel_resources.py [--arch sm_90] [--filter NAME]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

# sm_90 (H100) limits; sm_80 (A100) differs only in shared memory (164 KiB an SM).
SM = {"sm_90": {"smem": 228 * 1024, "regs": 65536, "threads": 2048, "blocks": 32},
      "sm_80": {"smem": 164 * 1024, "regs": 65536, "threads": 2048, "blocks": 32}}
THREADS = 256            # SPARCCL_THREADS: every kernel's block
RESERVED_SMEM = 1024     # shared memory the driver reserves a block (CUDA 11+)


def blocks_per_sm(regs, smem, limits):
    regs_warp = ((max(regs, 1) + 7) // 8) * 8 * 32  # a warp's, allocated 256 at a time
    by_regs = limits["regs"] // (regs_warp * (THREADS // 32))
    by_smem = limits["smem"] // (smem + RESERVED_SMEM)
    by_threads = limits["threads"] // THREADS
    return min(by_regs, by_smem, by_threads, limits["blocks"])


def demangle(name):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return name
    return subprocess.run([cxxfilt, name], capture_output=True, text=True).stdout.strip()


def compile_report(src, arch, obj):
    cmd = ["nvcc", "-O3", "-std=c++14", "-fmad=false", "-Iinclude", "-Isrc", "-Icuda",
           "-gencode", "arch=compute_%s,code=%s" % (arch[3:], arch), "-Xptxas", "-v",
           "-c", src, "-o", obj]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("nvcc failed on %s:\n%s" % (src, out.stderr))
    kernels, name = [], None
    for line in out.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
            kernels.append({"name": name, "regs": 0, "smem": 0, "stack": 0, "spill": 0})
            continue
        if not kernels or name is None:
            continue
        k = kernels[-1]
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            k["stack"], k["spill"] = int(m.group(1)), int(m.group(2)) + int(m.group(3))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            k["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            k["smem"] = int(s.group(1)) if s else 0
    return kernels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="sm_90", choices=sorted(SM))
    ap.add_argument("--filter", default="", help="only kernels whose name contains this")
    args = ap.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if not shutil.which("nvcc"):
        sys.exit("nvcc not found (CUDA's bin directory on PATH)")
    limits = SM[args.arch]
    spilled = 0
    with tempfile.TemporaryDirectory() as tmp:
        print("# %s, %d threads a block; blocks/SM from registers and shared memory" % (args.arch, THREADS))
        print("%-58s %5s %7s %6s %6s %9s" % ("kernel", "regs", "smem", "stack", "spill", "blocks/SM"))
        for src in sorted(glob.glob("cuda/*.cu")):
            obj = os.path.join(tmp, os.path.basename(src) + ".o")
            for k in compile_report(src, args.arch, obj):
                pretty = demangle(k["name"]).replace("KernelArgs", "").replace("(, ", "(")
                pretty = re.sub(r"\(.*\)$", "", pretty)
                if args.filter and args.filter not in pretty:
                    continue
                spilled += k["spill"] > 0
                print("%-58s %5d %7d %6d %6d %9d" % (pretty[:58], k["regs"], k["smem"], k["stack"],
                                                   k["spill"],
                                                   blocks_per_sm(k["regs"], k["smem"], limits)))
    if spilled:
        print("# %d kernel(s) spill registers" % spilled)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
