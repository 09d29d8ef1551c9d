#!/usr/bin/env python3
"""The device path's static memory-traffic model (docs/PERFORMANCE.md, "Device path:
memory-traffic model"): a prediction read off cuda/, not a measurement.

    python3 tools/traffic_model.py [--ranks N] [--density D] [--bandwidth B] LAYOUT...

For scam-topk and scam-impk (the library's default method; importance none, so w stays 1
and the keys are those of topk; the later passes make |w a| again from a and w, SPARCCL_KEYS_FROM_AW), float32
gradient, wire and output, SUM, two error buffers (the defaults of the device path): the
bytes each stage moves per parameter, on a prediction hit (the layer's
first-digit boundary bin is within one bin of its previous call's) and on a miss; the
floor gpu_perf counts; and per layout the predicted compress + decompress time against the
floor for launch costs of 1 to 5 us.  Assumptions, each printed: the key input a = e + g is
Gaussian; every read and write goes to DRAM (no reuse between kernels); a scattered access
costs the 32-byte sectors it touches, 1 - (1 - share)^8 of a chunk's sectors of floats.
"""
import argparse
import math

from layout import read_layout

CHUNK = 4096
MIN_SPARSE = 4096  # layers smaller than this are sent dense (the default minSparseCount)
LAUNCHES = 7       # compress (key, 2 digit passes, count, emit) + decompress (ranges, reduce)


def gaussian_above(z):
    """P(|a| > z sigma) for a standard normal a."""
    return math.erfc(z / math.sqrt(2.0))


def quantile_above(p):
    """z with P(|a| > z) = p (bisection)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if gaussian_above(mid) > p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def first_digit_bin(v):
    """[low, high) of the first radix digit's bin holding magnitude v: 11 bits of a float's
    magnitude key are the sign bit (0), the 8 exponent bits and 2 mantissa bits."""
    e = math.floor(math.log2(v))
    m = math.floor((v / 2.0 ** e - 1.0) * 4)
    return 2.0 ** e * (1 + m / 4), 2.0 ** e * (1 + (m + 1) / 4)


def bin_below(low):
    """The lower edge of the bin just below the bin starting at `low` (a bin is a quarter of
    its octave [2^e, 2^(e + 1)))."""
    e = math.floor(math.log2(low))
    return low - (2.0 ** (e - 1) if low == 2.0 ** e else 2.0 ** e) / 4


def bin_above(high):
    """The upper edge of the bin starting at `high`."""
    return high + 2.0 ** math.floor(math.log2(high)) / 4


def scattered(share):
    """Bytes per parameter to read (or write) the floats of a `share` of elements scattered
    over a chunk: the sectors touched."""
    return 4.0 * (1.0 - (1.0 - share) ** 8)


def block_bytes(counts, density):
    """tools/gpu_perf.cu's floor counts this rank's block and every rank's (src/comm.c)."""
    align = lambda b: (b + 15) // 16 * 16
    sparse = [c for c in counts if c >= MIN_SPARSE]
    k = sum(min(c, math.ceil(density * c)) for c in sparse)
    dense = sum(c for c in counts if c < MIN_SPARSE)
    return align(4 * k) + align(4 * k) + align(4 * dense) + align(4 * len(sparse)) + 16  # + call check


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--bandwidth", type=float, default=3.0e12, help="copy bandwidth, B/s")
    ap.add_argument("--method", choices=("scam-topk", "scam-impk"), default="scam-topk")
    ap.add_argument("layouts", nargs="+")
    args = ap.parse_args()
    n, d = args.ranks, args.density

    t = quantile_above(d)
    b_low, b_high = first_digit_bin(t)
    w_low, w_high = bin_below(b_low), bin_above(b_high)  # the window: SPARCCL_PREDICTION_SPREAD 1
    share_bin = gaussian_above(b_low) - gaussian_above(b_high)
    share_window = gaussian_above(w_low) - gaussian_above(w_high)
    print(f"# threshold t = {t:.4f} sigma (P(|a| > t) = {d}); its first-digit bin "
          f"[{b_low:.3f}, {b_high:.3f}) holds {100 * share_bin:.2f}% of a layer; the window "
          f"[{w_low:.3f}, {w_high:.3f}) {100 * share_window:.2f}% "
          f"({share_window * CHUNK:.0f} of a chunk)")

    selected = scattered(d)  # one float array at the selected elements
    pairs = 8 * d            # this rank's (index, value) pairs
    impk = args.method == "scam-impk"
    # impk: w is read wherever a is read to make a key (the key pass, a miss's full pass),
    # and at the selected elements for the value; the emit's candidates' keys come from the
    # run, for either method
    key_reads = 2 if impk else 1  # float arrays read to make a key again: a (and w)
    keys = "a, w" if impk else "a"
    stages = [  # name, hit, miss
        ("key pass: read g, e%s; write a; class mask; window candidates" % (", w" if impk else ""),
         4 * (2 + key_reads) + 0.25 + 4 * share_window, 4 * (2 + key_reads) + 0.25 + 4 * share_window),
        ("digit pass 2: candidates (hit) or every %s, mask, bin candidates (miss)" % keys,
         4 * share_window, 4 * key_reads + 0.25 + 4 * share_bin),
        ("digit pass 3: candidates", 4 * share_window, 4 * share_bin),
        ("count: candidates", 4 * share_window, 4 * share_bin),
        # the candidates' keys from the chunk's run (contiguous), not from their elements
        ("emit: mask, the run's keys; g, e%s at the selected; pairs, a - sent"
         % (", w" if impk else ""),
         0.25 + 4 * share_window + (4 if impk else 3) * selected + pairs,
         0.25 + 4 * share_bin + (4 if impk else 3) * selected + pairs),
        (f"decompress: write out; every rank's pairs and indices ({n} ranks)",
         4 + 0.12 * n, 4 + 0.12 * n),
    ]
    print(f"# {args.method}: {'stage':<61} {'hit':>6} {'miss':>6}   (bytes per parameter)")
    for name, hit, miss in stages:
        print(f"  {name:<72} {hit:6.2f} {miss:6.2f}")
    total_hit = sum(s[1] for s in stages)
    total_miss = sum(s[2] for s in stages)
    print(f"  {'total':<72} {total_hit:6.2f} {total_miss:6.2f}")

    print(f"# per layout: floor and compress + decompress at {args.bandwidth / 1e12:.1f} TB/s, "
          f"{LAUNCHES} launches at 1-2 us (back to back) or 3-5 us (host-paced) each")
    for path in args.layouts:
        counts = read_layout(path)
        params = sum(counts)
        floor_bytes = (20 if impk else 16) * params + (1 + n) * block_bytes(counts, d)
        floor_us = floor_bytes / args.bandwidth * 1e6
        name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        print(f"  {name}: {len(counts)} tensors, {params} parameters, floor "
              f"{floor_bytes / params:.2f} B/p = {floor_us:.1f} us; torch.topk baseline about "
              f"{10 * len(counts)} eager ops a call")
        for label, per in (("hit", total_hit), ("miss", total_miss)):
            base = per * params / args.bandwidth * 1e6
            times = [base + LAUNCHES * c for c in (1, 2, 3, 5)]
            print(f"    {label:>4}: {per:.2f} B/p = {base:.1f} us; with launches "
                  f"{times[0]:.0f}-{times[1]:.0f} us ({times[0] / floor_us:.2f}-"
                  f"{times[1] / floor_us:.2f}x the floor) or {times[2]:.0f}-{times[3]:.0f} us "
                  f"({times[2] / floor_us:.2f}-{times[3] / floor_us:.2f}x)")


if __name__ == "__main__":
    main()
