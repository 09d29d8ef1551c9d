#!/usr/bin/env python3
"""tools/exchange_model.py (docs/PERFORMANCE.md, "Exchange cost model to 4,096 ranks"): its
volumes against closed forms and against what tools/bandwidth_bench.sh measured (the stored
CSVs in docs/exchange_model/).  `make modeltest`; plain unittest, no matplotlib."""
import math
import os
import sys
import unittest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "tools"))
import exchange_model as m  # noqa: E402

STORED = [os.path.join(HERE, "docs", "exchange_model", f)
          for f in ("resnet18_1gbit.csv", "resnet18_1gbit_b.csv")]
PERFORMANCE = os.path.join(HERE, "docs", "PERFORMANCE.md")


def wire_only(n, L, shared_bus=False):
    """Links of 1 byte/s (so times are bytes), no latency, no overhead; a fast inside."""
    return m.Topology(n, L, intra_bw=1e30 if not shared_bus else 1.0, intra_lat=0.0,
                      inter_bw=1.0, inter_lat=0.0, overhead=0.0, shared_bus=shared_bus)


class Volumes(unittest.TestCase):
    def test_block_is_spec4(self):
        # 4096 and 10000 elements sparse (k 41 and 100), 100 dense; 16-byte sections, check
        counts = [4096, 10000, 100]
        self.assertEqual(m.allgather_block(counts, 0.01, 4), 576 + 576 + 400 + 16 + 16)
        self.assertEqual(m.allgather_block(counts, 0.01, 2), 576 + 288 + 400 + 16 + 16)
        self.assertEqual(m.layer_k(10, 0.01), 1)       # max(1, ...)
        self.assertEqual(m.layer_k(4097, 0.01), 41)    # ceil

    def test_allgather_is_n_minus_1_blocks(self):
        counts = m.layout_counts("resnet18_cifar10")
        s = m.allgather_block(counts, 0.01, 4)
        for n in (2, 3, 8, 100, 4096):
            self.assertAlmostEqual(m.flat_allgather(wire_only(n, 1), s), (n - 1) * s, delta=1e-6 * n * s)
        # one shared link: every rank's n - 1 blocks cross it (n (n - 1) s)
        self.assertAlmostEqual(m.flat_allgather(wire_only(4, 4, True), s), 12 * s, delta=1e-3)

    def test_bruck_rounds(self):
        # ceil(log2 n) rounds carrying n - 1 blocks in all; with latency only, that many rounds
        for n in (2, 3, 5, 8, 100, 4095, 4096):
            rounds = m.bruck_rounds(n)
            self.assertEqual(len(rounds), math.ceil(math.log2(n)))
            self.assertEqual(sum(b for _, b in rounds), n - 1)
            t = m.Topology(n, 1, inter_bw=1e30, inter_lat=1.0, overhead=0.0)
            self.assertAlmostEqual(m.flat_allgather(t, 1000), len(rounds))

    def test_shards(self):
        # 11.2: shard j = [floor(j d / L), floor((j + 1) d / L))
        self.assertEqual([m.shard(10, 4, j) for j in range(4)], [2, 3, 2, 3])
        self.assertEqual([m.shard(3, 8, j) for j in range(8)], [0, 0, 1, 0, 0, 1, 0, 1])
        for d in (4095, 4096, 10 ** 6 + 7):
            self.assertEqual(sum(m.shard(d, 8, j) for j in range(8)), d)

    def test_dense_ring_is_2_n_minus_1_over_n(self):
        x = m.Layer(m.layout_counts("gpt2_small"), 1.0, 4)
        S = 4 * x.d
        for n in (2, 7, 64, 4096):
            t = m.dense_ring(x, wire_only(n, 1), m.Compute.zero())["network"]
            self.assertAlmostEqual(t, 2 * (n - 1) / n * S, delta=1e-9 * S)

    def test_hierarchical_inter_node_is_1_over_L(self):
        # one layer, shards of 51200 elements with k_j = 512: payloads divide exactly
        counts, L, N = [8 * 51200], 8, 64
        n = L * N
        x = m.Layer(counts, 0.01, 4)
        col = m.column_block(counts, 0.01, 4, L, 0)
        self.assertEqual(col, 2048 + 2048 + 16 + 16)
        hier = m.hierarchical_exchange(x, wire_only(n, L), m.Compute.zero())["network"]
        flat = m.allgather_exchange(x, wire_only(n, L), m.Compute.zero())["network"]
        self.assertAlmostEqual(hier, (N - 1) * L * col, delta=1e-6)
        self.assertAlmostEqual(flat, (n - 1) * m.allgather_block(counts, 0.01, 4), delta=1e-6)
        payload_hier, payload_flat = (N - 1) * L * 4096, (n - 1) * 32768
        self.assertAlmostEqual(payload_hier / payload_flat, (N - 1) / (n - 1))
        self.assertLess(abs(hier / flat * L - 1), 0.03)

    def test_hierarchical_with_one_rank_a_node_is_the_allgather(self):
        x = m.Layer(m.layout_counts("resnet18_cifar10"), 0.01, 4)
        c = m.host_compute("resnet18_cifar10", x.counts, 0.01)
        for n in (2, 16, 1000):
            t = m.Topology(n, 1)
            a = sum(m.allgather_exchange(x, t, c).values())
            h = sum(m.hierarchical_exchange(x, t, c).values())
            self.assertAlmostEqual(a, h, delta=1e-12)

    def test_hierarchical_dense_with_one_rank_a_node_is_the_ring(self):
        x = m.Layer(m.layout_counts("resnet18_cifar10"), 1.0, 4)
        c = m.host_compute("resnet18_cifar10", x.counts, 0.01)
        for n in (2, 16, 1000):
            t = m.Topology(n, 1)
            ring = sum(m.dense_ring(x, t, c).values())
            self.assertAlmostEqual(sum(m.dense_hierarchical(x, t, c).values()), ring, delta=1e-12)
        # with 8 a node, over 100 Gbit/s: the node ring's 2(N - 1) rounds carry S/N each
        t = m.Topology(64, 8, intra_bw=1e30, intra_lat=0.0, inter_bw=1.0, inter_lat=0.0, overhead=0.0)
        net = m.dense_hierarchical(x, t, m.Compute.zero())["node ring"]
        self.assertAlmostEqual(net, 2 * 7 * 4 * x.d / 8, delta=1e-3)

    def test_split_within_ok_topk_bound(self):
        # k a multiple of n: C = 2k/n, K = k/n exactly, received words 6k(n-1)/n
        for n in (2, 4, 64):
            counts = [n * 100000]
            k = m.layer_k(counts[0], 0.01)
            self.assertEqual(k % n, 0)
            self.assertEqual(m.split_payload_words(counts, 0.01, n, 2.0), 6 * k * (n - 1) // n)
        # in general the ceilings add at most 6 words a layer and peer
        counts = m.layout_counts("gpt2_small")
        x = m.Layer(counts, 0.01, 4)
        layers = sum(1 for d in counts if d >= m.MIN_SPARSE)
        for n in (3, 100, 4096):
            bound = 6 * x.k * (n - 1) / n + 6 * layers * (n - 1)
            self.assertLessEqual(m.split_payload_words(counts, 0.01, n, 2.0), bound)

    def test_split_network_is_its_chunks_and_blocks(self):
        counts = m.layout_counts("resnet18_cifar10")
        x = m.Layer(counts, 0.01, 4)
        for n in (4, 32):
            parts = m.split_exchange(x, wire_only(n, 1), m.Compute.zero())
            chunk = m.split_chunk(counts, 0.01, 4, n, 2.0)
            block = m.split_block(counts, 0.01, 4, n, 2.0)
            self.assertAlmostEqual(parts["alltoall"], (n - 1) * chunk, delta=1e-6)
            self.assertAlmostEqual(parts["network"], (n - 1) * block, delta=1e-6)

    def test_allgather_stops_paying_at_2S_over_s(self):
        # bandwidth alone (docs/PERFORMANCE.md's cost model): wins while n < 2S/s = 95.9
        x = m.Layer(m.layout_counts("resnet18_cifar10"), 0.01, 4)
        z = m.Compute.zero()
        win = lambda n: (m.allgather_exchange(x, wire_only(n, 1), z)["network"]
                         < m.dense_ring(x, wire_only(n, 1), z)["network"])
        self.assertTrue(win(95))
        self.assertFalse(win(96))

    def test_1p3b_layout(self):
        counts = m.layout_counts("gpt_1p3b")
        self.assertEqual(len(counts), 292)
        self.assertEqual(sum(counts), 1315723264)


class Measured(unittest.TestCase):
    """Every stored bandwidth_bench row's wire bytes, from the model's volumes."""

    def test_stored_csv_volumes(self):
        rows = m.read_csv_rows(STORED)
        self.assertGreater(len(rows), 20)
        for r in rows:
            counts = m.layout_counts(r["layout"])
            n, measured = int(r["ranks"]), float(r["wire_bytes_per_rank"])
            if r["method"].startswith("dense"):
                x = m.Layer(counts, 1.0, 4)
                model = m.dense_ring(x, wire_only(n, 1), m.Compute.zero())["network"]
                self.assertLess(abs(model - measured), 1.0, r)
            else:
                model = m.allgather_block(counts, float(r["density"]), m.WIRE_BYTES[r["wire"]])
                self.assertEqual(model, measured, r)

    def test_shared_link_dense_ring_time(self):
        # the one point where the link alone sets the time: within 5% of every run
        rows = [r for r in m.read_csv_rows(STORED)
                if r["topology"] == "shared" and r["method"] == "dense-ring"]
        self.assertTrue(rows)
        for r in rows:
            key = tuple(r[k] for k in m.POINT)
            model = m.model_point(key, {}, 2, 0.0)[0]
            self.assertLess(abs(model / float(r["time_med_s"]) - 1), 0.05, r)


class Documented(unittest.TestCase):
    """docs/PERFORMANCE.md's crossovers tables are this model's (a sample of rows)."""

    def doc_rows(self, heading):
        text = open(PERFORMANCE).read()
        start = text.index(heading, text.index("## Exchange cost model to 4,096 ranks"))
        table = text[start:].split("\n\n")[1]
        return {tuple(c.strip() for c in line.split("|")[1:6]): line for line in table.splitlines()}

    def test_tables_match(self):
        for heading, compute in (("#### Wire only", "none"), ("#### Host compute", "host")):
            rows = self.doc_rows(heading)
            self.assertEqual(len(rows), 2 + 72, heading)
            args = m.parser().parse_args(["table", "--compute", compute])
            for name, rho, wire, gbit, L in (("resnet18_cifar10", 0.01, "fp32", 25, 8),
                                             ("gpt2_small", 0.001, "bf16", 100, 1),
                                             ("gpt_1p3b", 0.01, "fp32", 400, 8)):
                row = m.table_row(name, rho, wire, gbit, L, args)
                key = tuple(c.strip() for c in row.split("|")[1:6])
                self.assertEqual(rows.get(key), row, (heading, key))


if __name__ == "__main__":
    unittest.main(verbosity=1)
