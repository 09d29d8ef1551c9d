#!/usr/bin/env python3
"""The per-layer torch.topk + error-feedback baseline of the GPU benchmark (issue 3, item 7).

For every layer of a layout: a = e + g; the k = ceil(density d) largest |a| by torch.topk;
sent = a at those indices; e = a - sent; the dense output gets the sent values.  This is
what a trainer writes by hand without sparccl (one rank, no exchange).  Prints one line per
layout: the mean time per call in microseconds.
"""
import math
import sys

import torch

from layout import read_layout


def main():
    density, iters, warmup = 0.01, 20, 5
    paths = [a for a in sys.argv[1:]]
    dev = torch.device("cuda")
    for path in paths:
        counts = read_layout(path)
        grads = [torch.randn(c, device=dev) for c in counts]
        errors = [torch.zeros(c, device=dev) for c in counts]
        outs = [torch.zeros(c, device=dev) for c in counts]
        ks = [min(c, max(1, math.ceil(density * c))) for c in counts]

        def step():
            for g, e, o, k in zip(grads, errors, outs, ks):
                a = e + g
                _, idx = torch.topk(a.abs(), k, sorted=False)
                sent = a[idx]
                e.copy_(a)
                e[idx] -= sent
                o.zero_()
                o[idx] = sent

        for _ in range(warmup):
            step()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        torch.cuda.synchronize()
        print(f"torch.topk+EF {path.rsplit('/', 1)[-1]} {sum(counts)} params: "
              f"{start.elapsed_time(end) * 1e3 / iters:.1f} us/call")


if __name__ == "__main__":
    main()
