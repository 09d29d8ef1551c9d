#!/usr/bin/env python3
"""The exchange cost model to 4,096 ranks (docs/PERFORMANCE.md, "Exchange cost model to
4,096 ranks"): time per call of the allgather exchange (SPEC 4), the hierarchical and the
split exchange (docs/EXCHANGES.md 11.2, 11.3) and the dense ring and hierarchical dense
allreduces, from the layout, the topology and per-rank compute terms.  A model, not a
measurement; `check` sets it against tools/bandwidth_bench.sh's CSVs.

    tools/exchange_model.py point --layout L [--ranks 64 --per-node 8 --gbit 100 ...]
    tools/exchange_model.py table [--compute host|none]     crossovers, markdown
    tools/exchange_model.py plot [--out docs]                docs/exchange_model_*.png
    tools/exchange_model.py check [--cores 2] CSV... [--probe CSV...]   model / measured

Topology: n = N nodes x L ranks; inside a node every rank has a port of intra_bw (a
switch, NVLink) or, with shared_bus, all share one link (the shared loopback); each node
has one full-duplex NIC of inter_bw on a non-blocking switch.  A round of messages costs
overhead + the largest of (latency + bytes / bandwidth) over the links it uses, with the
bytes of concurrent messages through one NIC (or the bus) added up.
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layout import read_layout  # noqa: E402

MIN_SPARSE = 4096      # the default minSparseCount: smaller layers are sent dense
CHECK = 16             # the call check ending every block (SPEC 4)
DEMAND_BINS = 16       # split: demand counts per layer in the final block (11.3 step 6)
WIRE_BYTES = {"fp32": 4, "bf16": 2}


def align16(b):
    return (b + 15) // 16 * 16


def layer_k(d, rho):
    """SPEC 1: k = min(d, max(1, ceil(density * d))), the product in double."""
    return min(d, max(1, math.ceil(rho * d))) if d > 0 else 0


def is_sparse(d, min_sparse=MIN_SPARSE):
    return d >= min_sparse


# ------------------------------------------------------------------ volumes (bytes)

def allgather_block(counts, rho, wsize, min_sparse=MIN_SPARSE):
    """One rank's SPEC 4 block: indices, values, dense floats, flags, each 16-aligned, check."""
    k = sum(layer_k(d, rho) for d in counts if is_sparse(d, min_sparse))
    dense = sum(d for d in counts if not is_sparse(d, min_sparse))
    flags = sum(1 for d in counts if is_sparse(d, min_sparse))
    return align16(4 * k) + align16(wsize * k) + align16(4 * dense) + align16(4 * flags) + CHECK


def shard(d, parts, j):
    """Shard j of a layer of d elements cut into `parts` (11.2): [floor(j d/L), floor((j+1) d/L))."""
    return (j + 1) * d // parts - j * d // parts


def column_block(counts, rho, wsize, L, j, min_sparse=MIN_SPARSE):
    """Column j's block (11.2 step 3): the k_j pairs of every sparse layer's shard j, the
    floats of every dense layer's shard j, one flag per sparse layer, the check."""
    k = sum(layer_k(shard(d, L, j), rho) for d in counts if is_sparse(d, min_sparse))
    dense = sum(shard(d, L, j) for d in counts if not is_sparse(d, min_sparse))
    flags = sum(1 for d in counts if is_sparse(d, min_sparse))
    return align16(4 * k) + align16(wsize * k) + align16(4 * dense) + align16(4 * flags) + CHECK


def node_chunk(counts, L, j, min_sparse=MIN_SPARSE):
    """11.2 steps 1 and 4: shard j of every layer in float32, the flags, the check."""
    floats = sum(shard(d, L, j) for d in counts)
    flags = sum(1 for d in counts if is_sparse(d, min_sparse))
    return align16(4 * floats) + align16(4 * flags) + CHECK


def split_sizes(counts, rho, n, slack, min_sparse=MIN_SPARSE):
    """11.3: capacities C = ceil(slack k / n) per layer and owner, survivors K = ceil(k / n),
    summed over the sparse layers; the largest region of the dense layers (their
    reduce-scatter by region); the number of sparse layers."""
    sparse = [d for d in counts if is_sparse(d, min_sparse)]
    cap = sum(math.ceil(slack * layer_k(d, rho) / n) for d in sparse)
    surv = sum(math.ceil(layer_k(d, rho) / n) for d in sparse)
    dense = sum(math.ceil(d / n) for d in counts if not is_sparse(d, min_sparse))
    return cap, surv, dense, len(sparse)


def split_chunk(counts, rho, wsize, n, slack, min_sparse=MIN_SPARSE):
    """Step 2's chunk to one owner: C pairs per layer, their counts, the dense layers'
    region, the flags, the check."""
    cap, _, dense, ns = split_sizes(counts, rho, n, slack, min_sparse)
    return (align16(4 * cap) + align16(wsize * cap) + align16(4 * ns) + align16(4 * dense)
            + align16(4 * ns) + CHECK)


def split_block(counts, rho, wsize, n, slack, min_sparse=MIN_SPARSE):
    """Step 6's block: K survivors per layer, 16 demand counts per layer, the dense region,
    the flags, the check."""
    _, surv, dense, ns = split_sizes(counts, rho, n, slack, min_sparse)
    return (align16(4 * surv) + align16(wsize * surv) + align16(4 * DEMAND_BINS * ns)
            + align16(4 * dense) + align16(4 * ns) + CHECK)


def split_payload_words(counts, rho, n, slack, min_sparse=MIN_SPARSE):
    """4-byte words of (index, fp32 value) pairs one rank receives from the others: (n - 1)
    chunks of C pairs and (n - 1) blocks of K survivors (Ok-Topk's bound: 6k(n-1)/n)."""
    cap, surv, _, _ = split_sizes(counts, rho, n, slack, min_sparse)
    return 2 * (n - 1) * (cap + surv)


# ------------------------------------------------------------------ topology and rounds

class Topology:
    """n ranks in nodes of L; bandwidths in bytes/s, latencies and overhead in seconds."""

    def __init__(self, n, per_node=1, intra_bw=300e9, intra_lat=2e-6, inter_bw=100e9 / 8,
                 inter_lat=10e-6, overhead=1e-6, shared_bus=False):
        if n < 1 or per_node < 1 or n % per_node:
            raise ValueError(f"{n} ranks are not whole nodes of {per_node}")
        self.n, self.L, self.N = n, per_node, n // per_node
        self.intra_bw, self.intra_lat = intra_bw, intra_lat
        self.inter_bw, self.inter_lat = inter_bw, inter_lat
        self.overhead, self.shared_bus = overhead, shared_bus


def round_time(t, nic_bytes, port_bytes, intra_msgs):
    """One round of concurrent messages: nic_bytes through each node's NIC (each way), one
    port_bytes message per busy intra-node port (intra_msgs of them share a bus)."""
    cost = 0.0
    if nic_bytes > 0:
        cost = t.inter_lat + nic_bytes / t.inter_bw
    if intra_msgs > 0 and port_bytes > 0:
        bus = intra_msgs if t.shared_bus else 1
        cost = max(cost, t.intra_lat + bus * port_bytes / t.intra_bw)
    return t.overhead + cost if cost > 0 else 0.0


def local_partners(n, L, shift):
    """Ranks of node 0 whose partner at distance `shift` is on node 0 too."""
    return sum(1 for j in range(L) if (j + shift) % n < L)


def flat_round(t, msg, shift):
    """Every rank sends msg bytes to rank r + shift (mod n)."""
    inside = local_partners(t.n, t.L, shift)
    return round_time(t, (t.L - inside) * msg, msg, inside)


def bruck_rounds(n):
    """(distance, blocks sent) of each Bruck allgather round over n members."""
    out, dist = [], 1
    while dist < n:
        out.append((dist, min(dist, n - dist)))
        dist *= 2
    return out


def flat_allgather(t, block):
    """Equal blocks over all n ranks: the better of the ring and Bruck (MPI's choice)."""
    if t.n == 1:
        return 0.0
    ring = (t.n - 1) * flat_round(t, block, 1)
    bruck = sum(flat_round(t, m * block, dist) for dist, m in bruck_rounds(t.n))
    return min(ring, bruck)


def column_allgather(t, blocks):
    """The L columns (one rank per node) allgather at once; column j's blocks are blocks[j]."""
    if t.N == 1:
        return 0.0
    total = sum(blocks)
    ring = (t.N - 1) * round_time(t, total, 0, 0)
    bruck = sum(round_time(t, m * total, 0, 0) for _, m in bruck_rounds(t.N))
    return min(ring, bruck)


def node_ring(t, chunk, rounds):
    """`rounds` ring rounds inside every node, chunk bytes a message, no NIC."""
    return rounds * round_time(t, 0, chunk, t.L) if t.L > 1 else 0.0


def flat_alltoall(t, chunk):
    """Equal chunks from every rank to every rank: pairwise (n - 1 rounds) or Bruck (log n
    rounds of about n/2 chunks), the better of the two."""
    if t.n == 1:
        return 0.0
    pairwise = sum(flat_round(t, chunk, i) for i in range(1, t.n))
    bruck, dist = 0.0, 1
    while dist < t.n:
        carried = sum(1 for x in range(t.n) if x & dist)
        bruck += flat_round(t, carried * chunk, dist)
        dist *= 2
    return min(pairwise, bruck)


# ------------------------------------------------------------------ compute

class Compute:
    """Per-rank compute: compress and decompress (its per-element part) throughput in bytes
    of float32 gradient per second, seconds per received pair summed, dense float32 sum
    throughput (bytes of gradient per second).  zero() is the wire-only limit."""

    def __init__(self, compress_bps, decompress_bps, pair_s, add_bps, name="host"):
        self.compress_bps, self.decompress_bps = compress_bps, decompress_bps
        self.pair_s, self.add_bps, self.name = pair_s, add_bps, name

    @staticmethod
    def zero():
        return Compute(math.inf, math.inf, 0.0, math.inf, "none")

    def compress(self, elements):
        return 4 * elements / self.compress_bps

    def decompress(self, elements, pairs):
        return 4 * elements / self.decompress_bps + pairs * self.pair_s

    def add(self, elements):
        return 4 * elements / self.add_bps


# ------------------------------------------------------------------ the exchanges

class Layer:
    """A layout and a setting: element counts, density, wire value bytes."""

    def __init__(self, counts, rho, wsize, slack=2.0, min_sparse=MIN_SPARSE):
        self.counts, self.rho, self.wsize = counts, rho, wsize
        self.slack, self.min_sparse = slack, min_sparse
        self.d = sum(counts)
        self.k = sum(layer_k(c, rho) for c in counts if is_sparse(c, min_sparse))
        self.dense = sum(c for c in counts if not is_sparse(c, min_sparse))


def allgather_exchange(x, t, c):
    """SPEC 4: compress, one equal-size allgather of the blocks, the rank-ordered sum; before
    it, the MPI transport's 8-byte allgather agreeing the size (README)."""
    block = allgather_block(x.counts, x.rho, x.wsize, x.min_sparse)
    return {"compress": c.compress(x.d), "size agreement": flat_allgather(t, 8),
            "network": flat_allgather(t, block),
            "decompress": c.decompress(x.d, t.n * x.k) + c.add(t.n * x.dense)}


def hierarchical_exchange(x, t, c):
    """11.2: node reduce-scatter, shard compress, column allgather, node allgather (each
    sparse exchange here is given the allgather's 8-byte size agreement, on its column)."""
    L = t.L
    chunk = max(node_chunk(x.counts, L, j, x.min_sparse) for j in range(L))
    blocks = [column_block(x.counts, x.rho, x.wsize, L, j, x.min_sparse) for j in range(L)]
    elems = max(sum(shard(d, L, j) for d in x.counts) for j in range(L))
    k = max(sum(layer_k(shard(d, L, j), x.rho) for d in x.counts if is_sparse(d, x.min_sparse))
            for j in range(L))
    dense = max(sum(shard(d, L, j) for d in x.counts if not is_sparse(d, x.min_sparse))
                for j in range(L))
    return {"node reduce-scatter": node_ring(t, chunk, L - 1) + (L - 1) * c.add(elems),
            "compress": c.compress(elems), "size agreement": column_allgather(t, [8] * L),
            "network": column_allgather(t, blocks),
            "decompress": c.decompress(elems, t.N * k) + c.add(t.N * dense),
            "node allgather": node_ring(t, chunk, L - 1)}


def split_exchange(x, t, c):
    """11.3: local selection, alltoall of capped chunks, reduce and reselect at the owner,
    allgather of the survivors."""
    n = t.n
    cap, surv, _, _ = split_sizes(x.counts, x.rho, n, x.slack, x.min_sparse)
    region = math.ceil(x.d / n)
    chunk = split_chunk(x.counts, x.rho, x.wsize, n, x.slack, x.min_sparse)
    block = split_block(x.counts, x.rho, x.wsize, n, x.slack, x.min_sparse)
    return {"compress": c.compress(x.d), "size agreement": flat_allgather(t, 8),
            "alltoall": flat_alltoall(t, chunk),
            "owner reduce, reselect": c.decompress(region, n * cap) + c.compress(region),
            "network": flat_allgather(t, block), "decompress": c.decompress(x.d, n * surv)}


def dense_ring(x, t, c):
    """Ring allreduce of S = 4d bytes over the n ranks: 2(n-1) rounds of S/n."""
    n = t.n
    if n == 1:
        return {"network": 0.0}
    return {"network": 2 * (n - 1) * flat_round(t, 4 * x.d / n, 1),
            "sums": (n - 1) * c.add(x.d / n)}


def dense_hierarchical(x, t, c):
    """Node reduce-scatter (S/L chunks), a ring allreduce over the N nodes per local rank
    (the L rings share the NIC), node allgather."""
    L, N, S = t.L, t.N, 4 * x.d
    ring = 2 * (N - 1) * round_time(t, S / N, 0, 0) if N > 1 else 0.0
    return {"node reduce-scatter": node_ring(t, S / L, L - 1) + (L - 1) * c.add(x.d / L),
            "node ring": ring + (N - 1) * c.add(x.d / (L * N)),
            "node allgather": node_ring(t, S / L, L - 1)}


EXCHANGES = [("allgather", allgather_exchange), ("hierarchical", hierarchical_exchange),
             ("split", split_exchange), ("dense ring", dense_ring),
             ("hierarchical dense", dense_hierarchical)]
SPARSE = ("allgather", "hierarchical", "split")
DENSE = ("dense ring", "hierarchical dense")


def times(x, t, c):
    """Every exchange's time per call (seconds)."""
    return {name: sum(f(x, t, c).values()) for name, f in EXCHANGES}


# ------------------------------------------------------------------ measured compute terms

# One rank alone, scam-topk, float32 gradient (docs/PERFORMANCE.md, "Exchange cost model to
# 4,096 ranks", where the commands and dates are): compress and decompress seconds per call.
HOST_ALONE = {
    ("resnet18_cifar10", 0.01): (0.01596, 0.01566),    # medians of 6 bandwidth_bench runs
    ("resnet18_cifar10", 0.001): (0.006956, 0.009025),
    ("gpt2_small", 0.01): (0.2564, 0.2254),             # sparccl_perf, 3 calls
    ("gpt2_small", 0.001): (0.1925, 0.1986),
}
HOST_PAIR_S = 9.9e-9    # seconds per received pair summed (slope of decompress against k)
HOST_ADD_BPS = 3.57e9   # dense float32 sums: the 16 B/param floor pass's rate x 16/12
MODEL_OF = {"gpt_1p3b": "gpt2_small"}  # layouts without a measurement: per element as this


def host_compute(name, counts, rho):
    """The host profile for a layout: its measured alone terms, per element for layouts
    measured only through MODEL_OF."""
    base = MODEL_OF.get(name, name)
    comp, decomp = HOST_ALONE[(base, rho)]
    if base != name:
        base_d = BASE_PARAMS[base]
        comp, decomp = comp * sum(counts) / base_d, decomp * sum(counts) / base_d
    x = Layer(counts, rho, 4)
    per_elem = max(decomp - x.k * HOST_PAIR_S, 1e-9)
    return Compute(4 * x.d / comp, 4 * x.d / per_elem, HOST_PAIR_S, HOST_ADD_BPS)


BASE_PARAMS = {"resnet18_cifar10": 11181642, "gpt2_small": 124439808}


# ------------------------------------------------------------------ layouts

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUT_DIRS = [os.path.join(HERE, "..", "shared", "layouts"), os.path.join(HERE, "docs", "layouts")]
LAYOUTS = ["resnet18_cifar10", "gpt2_small", "gpt_1p3b"]


def layout_counts(name):
    """A layout by name (../shared/layouts, then docs/layouts) or by path."""
    if os.path.exists(name):
        return read_layout(name)
    for d in LAYOUT_DIRS:
        path = os.path.join(d, name + ".txt")
        if os.path.exists(path):
            return read_layout(path)
    raise FileNotFoundError(f"layout {name} not in {LAYOUT_DIRS}")


# ------------------------------------------------------------------ check against measurements

def read_csv_rows(paths):
    import csv
    rows = []
    for p in paths:
        with open(p) as f:
            rows += list(csv.DictReader(f))
    return rows


def median(v):
    v = sorted(v)
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def group(rows, keys, field):
    out = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(float(r[field]))
    return {k: median(v) for k, v in out.items()}


CONFIG = ("layout", "method", "density", "wire")
POINT = ("topology", "rate_gbit", "ranks") + CONFIG


def bench_topology(row, alpha):
    """The measured setups: per-rank links are single-rank nodes behind one switch; the
    shared loopback is one node whose ranks share one link."""
    n, rate = int(row[2]), float(row[1]) * 1e9 / 8
    if row[0] == "shared":
        return Topology(n, n, intra_bw=rate, intra_lat=alpha, overhead=0.0, shared_bus=True)
    return Topology(n, 1, inter_bw=rate, inter_lat=alpha, overhead=0.0)


def stretched(alone, x, stretch):
    """The alone terms (compress, decompress) on n ranks sharing the cores: times stretch."""
    comp, decomp = alone
    if comp == 0 and decomp == 0:
        return Compute.zero()
    per_elem = max(decomp - x.k * HOST_PAIR_S, 1e-9)
    return Compute(4 * x.d / (stretch * comp), 4 * x.d / (stretch * per_elem),
                   stretch * HOST_PAIR_S, HOST_ADD_BPS / stretch)


def model_point(key, alone, cores, alpha):
    """Modelled seconds (total, compute, network) of one measured configuration."""
    layout, method, density, wire = key[3:]
    n = int(key[2])
    counts = layout_counts(layout)
    x = Layer(counts, float(density), WIRE_BYTES[wire])
    stretch = max(1.0, n / cores)
    if method.startswith("dense"):
        x = Layer(counts, 1.0, 4)
        sums = Compute(math.inf, math.inf, 0.0, HOST_ADD_BPS / stretch)
        parts = dense_ring(x, bench_topology(key, alpha), sums)
        return sum(parts.values()), parts.get("sums", 0.0), parts["network"]
    c = stretched(alone[(layout, method, density, wire)], x, stretch)
    parts = allgather_exchange(x, bench_topology(key, alpha), c)
    return (sum(parts.values()), parts["compress"] + parts["decompress"],
            parts["network"] + parts["size agreement"])


def probe_latency(rows, cores):
    """Seconds a round left over in the small-message probe runs (docs/layouts/probe_64k), per
    (topology, ranks, dense or sparse): the measured time less the model's with no latency,
    over the model's number of latency-bound rounds (its slope in the latency); 0 if negative."""
    alone = alone_terms(rows)
    med = group([r for r in rows if r["topology"] != "alone"], POINT, "time_med_s")
    out = {}
    for key, t in med.items():
        base = model_point(key, alone, cores, 0.0)[0]
        rounds = (model_point(key, alone, cores, 1e-3)[0] - base) / 1e-3
        kind = "dense" if key[4].startswith("dense") else "sparse"
        out[(key[0], int(key[2]), kind)] = max(0.0, (t - base) / rounds)
    return out


def alone_terms(rows):
    """Median compress and decompress seconds of the alone rows, per configuration."""
    alone_rows = [r for r in rows if r["topology"] == "alone"]
    decomp = group(alone_rows, CONFIG, "decompress_s")
    return {k: (v, decomp[k]) for k, v in group(alone_rows, CONFIG, "compress_s").items()}


def check_rows(rows, lat, cores):
    """One campaign's points, model against measured medians (milliseconds), markdown rows;
    its compute terms from its own alone rows (same runs, same load)."""
    alone = alone_terms(rows)
    meas = [r for r in rows if r["topology"] != "alone"]
    med = group(meas, POINT, "time_med_s")
    runs = {}
    for r in meas:
        runs[tuple(r[k] for k in POINT)] = runs.get(tuple(r[k] for k in POINT), 0) + 1
    decomp = group(meas, POINT, "decompress_s")
    comp = {k: v + decomp[k] for k, v in group(meas, POINT, "compress_s").items()}
    exch = group(meas, POINT, "exchange_s")
    out = []
    for key in sorted(med, key=lambda k: (k[0], int(k[2]), k[4], -float(k[5]), k[6])):
        t = med[key]
        plain = model_point(key, alone, cores, 0.0)
        kind = "dense" if key[4].startswith("dense") else "sparse"
        a = lat.get((key[0], int(key[2]), kind))
        probe = model_point(key, alone, cores, a) if a is not None else None
        cfg = key[4] if kind == "dense" else f"{key[4]} {float(key[5]) * 100:g}% {key[6]}"
        pr = f"{probe[0] * 1e3:.1f} | {probe[0] / t:.2f}" if probe else "- | -"
        cm = f"{comp[key] * 1e3:.1f} / {plain[1] * 1e3:.1f}" if kind == "sparse" else "-"
        em = f"{exch[key] * 1e3:.1f} / {(probe or plain)[2] * 1e3:.1f}" if kind == "sparse" else "-"
        out.append(f"| {key[0]} {key[1]} Gbit/s | {key[2]} | {cfg} | {runs[key]} | {t * 1e3:.1f} | "
                   f"{plain[0] * 1e3:.1f} | {plain[0] / t:.2f} | {pr} | {cm} | {em} |")
    return out


def check(paths, probe_paths, cores):
    """Model against measured, one campaign a CSV (with its probe CSV, same order)."""
    lines = []
    for i, path in enumerate(paths):
        rows = read_csv_rows([path])
        lat = probe_latency(read_csv_rows([probe_paths[i]]), cores) if i < len(probe_paths) else {}
        for (topo, n, kind), a in sorted(lat.items()):
            print(f"# {os.path.basename(path)}: probe {topo} {n} ranks, {kind}: {a * 1e3:.2f} ms a round")
        for k, (c, d) in sorted(alone_terms(rows).items()):
            print(f"# {os.path.basename(path)}: alone {' '.join(k)}: {c * 1e3:.1f} + {d * 1e3:.1f} ms")
        lines += check_rows(rows, lat, cores)
    print("| link | n | config | runs | measured | model (no probe) | ratio | model (probe latency) | ratio | compute meas / model | exchange meas / model |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(sorted(lines, key=lambda l: (l.split("|")[1], int(l.split("|")[2])))))


# ------------------------------------------------------------------ sweeps: table and plots

LINKS_GBIT = (25, 100, 400)
MARKS = (8, 64, 512, 4096)
SHORT = {"allgather": "AG", "hierarchical": "H", "split": "S", "dense ring": "ring",
         "hierarchical dense": "Hdense"}


def rank_grid(L, top=4096):
    """n = L x N for N on a grid of four points an octave, from max(2, L) to top."""
    nodes = sorted({max(1, round(2 ** (i / 4))) for i in range(0, 4 * 13)})
    return [L * N for N in nodes if 2 <= L * N <= top]


def topology(n, L, gbit, args):
    return Topology(n, L, intra_bw=args.intra_gbyte * 1e9, intra_lat=args.intra_us * 1e-6,
                    inter_bw=gbit * 1e9 / 8, inter_lat=args.inter_us * 1e-6,
                    overhead=args.overhead_us * 1e-6)


def sweep(x, c, L, gbit, args):
    return [(n, times(x, topology(n, L, gbit, args), c)) for n in rank_grid(L)]


def win_ranges(points, sparse, dense):
    """Where `sparse` beats `dense`: the runs of consecutive grid points, "a-b" (b is where it
    stops beating: the last winning n before a loss), "a-" when it still wins at the last
    point, "none" when it never does."""
    runs, start, prev = [], None, None
    for n, t in points:
        if t[sparse] < t[dense]:
            start = n if start is None else start
        elif start is not None:
            runs.append(f"{start}-{prev}")
            start = None
        prev = n
    if start is not None:
        runs.append(f"{start}-")
    return ", ".join(runs) or "none"


def fastest(points, n):
    t = dict(points).get(n)
    return SHORT[min(t, key=t.get)] if t else "-"


def compute_for(name, counts, rho, kind):
    return Compute.zero() if kind == "none" else host_compute(name, counts, rho)


TABLE_HEAD = ("| layout | density | wire | link | GPUs/node | AG/ring | H/ring | S/ring | "
              "AG/Hdense | H/Hdense | S/Hdense | fastest at 8 | 64 | 512 | 4096 |")


def table_row(name, rho, wire, gbit, L, args):
    """One row of the crossovers table."""
    counts = layout_counts(name)
    x = Layer(counts, rho, WIRE_BYTES[wire], args.slack)
    pts = sweep(x, compute_for(name, counts, rho, args.compute), L, gbit, args)
    cells = [win_ranges(pts, s, d) for d in DENSE for s in SPARSE]
    marks = [fastest(pts, n) for n in MARKS]
    return (f"| {name} | {rho * 100:g}% | {wire} | {gbit:g} Gbit/s | {L} | "
            + " | ".join(cells + marks) + " |")


def table(args):
    """The crossovers table, markdown: one row per layout, density, wire, link, L."""
    print(TABLE_HEAD)
    print("|---" * 15 + "|")
    for name in LAYOUTS:
        for rho in (0.01, 0.001):
            for wire in ("fp32", "bf16"):
                for gbit in LINKS_GBIT:
                    for L in (8, 1):
                        print(table_row(name, rho, wire, gbit, L, args))


STYLE = {"allgather": "tab:red", "hierarchical": "tab:blue", "split": "tab:green",
         "dense ring": "black", "hierarchical dense": "tab:gray"}


def plot(args):
    """docs/exchange_model_<layout>_<density>.png: time per call against ranks, one panel per
    GPUs per node, solid lines with the host compute, dashed with none (wire only)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for name in LAYOUTS:
        counts = layout_counts(name)
        for rho in (0.01, 0.001):
            fig, axes = plt.subplots(1, 2, figsize=(13, 5))
            x = Layer(counts, rho, WIRE_BYTES[args.wire], args.slack)
            for ax, L in zip(axes, (8, 1)):
                for kind, dash in (("host", "-"), ("none", "--")):
                    pts = sweep(x, compute_for(name, counts, rho, kind), L, args.gbit, args)
                    for ex, _ in EXCHANGES:
                        if L == 1 and ex in ("hierarchical", "hierarchical dense"):
                            continue  # the same as allgather and the ring at L = 1
                        ax.plot([n for n, _ in pts], [t[ex] for _, t in pts], dash,
                                color=STYLE[ex], label=f"{ex} ({kind} compute)")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.grid(True, which="both", alpha=0.3)
                ax.set_xlabel("ranks n")
                ax.set_ylabel("seconds per call")
                ax.set_title(f"{name}, {rho * 100:g}%, {args.wire} wire, {L} GPU(s) a node, "
                             f"{args.gbit} Gbit/s between nodes", fontsize=9)
                ax.legend(fontsize=7)
            fig.tight_layout()
            path = os.path.join(args.out, f"exchange_model_{name}_{rho * 100:g}pct.png")
            fig.savefig(path, dpi=90)
            plt.close(fig)
            print("plot:", path)


def point(args):
    """Every exchange's terms at one point (milliseconds)."""
    counts = layout_counts(args.layout)
    name = os.path.basename(args.layout).rsplit(".", 1)[0]
    x = Layer(counts, args.density, WIRE_BYTES[args.wire], args.slack)
    c = compute_for(name, counts, args.density, args.compute)
    t = topology(args.ranks, args.per_node, args.gbit, args)
    for ex, f in EXCHANGES:
        parts = f(x, t, c)
        terms = ", ".join(f"{k} {v * 1e3:.3f}" for k, v in parts.items())
        print(f"{ex:>20}: {sum(parts.values()) * 1e3:10.3f} ms  ({terms})")


def parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("point", "table", "plot", "check"))
    ap.add_argument("csv", nargs="*", help="check: tools/bandwidth_bench.sh CSVs")
    ap.add_argument("--probe", nargs="*", default=[], help="check: the probe runs' CSVs")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--layout", default="resnet18_cifar10")
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--wire", choices=tuple(WIRE_BYTES), default="fp32")
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--per-node", type=int, default=8)
    ap.add_argument("--gbit", type=float, default=100, help="inter-node link, Gbit/s")
    ap.add_argument("--intra-gbyte", type=float, default=300, help="intra-node per GPU, GB/s")
    ap.add_argument("--intra-us", type=float, default=2.0)
    ap.add_argument("--inter-us", type=float, default=10.0)
    ap.add_argument("--overhead-us", type=float, default=1.0, help="per message")
    ap.add_argument("--slack", type=float, default=2.0, help="splitSlack")
    ap.add_argument("--compute", choices=("host", "none"), default="host")
    ap.add_argument("--out", default=os.path.join(HERE, "docs"))
    return ap


def main():
    args = parser().parse_args()
    if args.what == "check":
        check(args.csv, args.probe, args.cores)
    else:
        {"point": point, "table": table, "plot": plot}[args.what](args)


if __name__ == "__main__":
    main()
