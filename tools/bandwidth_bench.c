/*
 * bandwidth_bench: dense MPI_Allreduce against sparcclAllReduce on one layout, in one run,
 * for every (method, density, wire) given; one CSV row per configuration on rank 0's
 * stdout.  tools/bandwidth_bench.sh runs it in network namespaces with rate-limited links
 * (docs/PERFORMANCE.md, "Bandwidth-limited links").
 *
 *   mpirun -np N bandwidth_bench --layout FILE [--method scam-topk ...] [--density 0.01 ...]
 *                                [--wire fp32 --wire bf16] [-n 5] [-w 1] [--dense 1]
 *                                [--pipeline 0 --pipeline 65536 ...] [--tag TEXT] [--header 1]
 *
 * Per call: MPI_Barrier, then the timed collective; the call's time is the slowest rank's
 * (MPI_Allreduce MAX after the call, untimed).  The row gives the median and minimum over
 * the timed calls.  Gradients: float32 normal draws, two pre-drawn buffers copied in turn
 * into the registered send buffer (untimed).  The dense baseline is MPI_Allreduce(float32,
 * MPI_SUM) out of place, on the same buffer (Open MPI picks the algorithm), and a hand-written
 * ring allreduce ("dense-ring", the cost model's algorithm).  compress/exchange/decompress come from
 * sparcclCommGetStats (mean over ranks, per call); wire bytes are one rank's allgather
 * block (bytesSent per call; every group's with --pipeline B, config.pipelineBytes, 0 = off).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mpi.h>

#include "sparccl.h"
#include "sparccl_mpi.h"
#include "tool_util.h"

#define MAXN 16
static int rank = 0, nranks = 1;

#define DIE(...)                                                  \
  do {                                                            \
    if (rank == 0) fprintf(stderr, "bandwidth_bench: " __VA_ARGS__); \
    MPI_Abort(MPI_COMM_WORLD, 2);                                 \
    exit(2);                                                      \
  } while (0)
#define CHECK(call)                                                                        \
  do {                                                                                     \
    sparcclResult_t r_ = (call);                                                           \
    if (r_ != sparcclSuccess) DIE("%s: %s\n", #call, sparcclGetErrorString(r_));           \
  } while (0)

/* The slowest rank's time of one call. */
static double slowest(double t) {
  double m = 0;
  MPI_Allreduce(&t, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return m;
}

/* The textbook ring allreduce (reduce-scatter then allgather, n-1 steps each, MPI_Sendrecv
 * with the neighbours): the algorithm of the cost model, 2(n-1)/n * S bytes sent per rank.
 * Its sums are not rank-ordered; it is timed only. */
static int ringAllreduce(const float* send, float* recv, float* tmp, size_t count) {
  int left = (rank + nranks - 1) % nranks, right = (rank + 1) % nranks, s;
  size_t chunk = (count + (size_t)nranks - 1) / (size_t)nranks, i;
#define LO(c) ((size_t)(c) * chunk < count ? (size_t)(c) * chunk : count)
#define HI(c) ((size_t)(c + 1) * chunk < count ? (size_t)(c + 1) * chunk : count)
  memcpy(recv, send, count * sizeof(float));
  for (s = 0; s < nranks - 1; s++) {
    int sc = (rank - s + nranks) % nranks, rc = (rank - s - 1 + 2 * nranks) % nranks;
    if (MPI_Sendrecv(recv + LO(sc), (int)(HI(sc) - LO(sc)), MPI_FLOAT, right, 7, tmp,
                     (int)(HI(rc) - LO(rc)), MPI_FLOAT, left, 7, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE) != MPI_SUCCESS)
      return -1;
    for (i = 0; i < HI(rc) - LO(rc); i++) recv[LO(rc) + i] += tmp[i];
  }
  for (s = 0; s < nranks - 1; s++) {
    int sc = (rank + 1 - s + nranks) % nranks, rc = (rank - s + nranks) % nranks;
    if (MPI_Sendrecv(recv + LO(sc), (int)(HI(sc) - LO(sc)), MPI_FLOAT, right, 8, recv + LO(rc),
                     (int)(HI(rc) - LO(rc)), MPI_FLOAT, left, 8, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE) != MPI_SUCCESS)
      return -1;
  }
#undef LO
#undef HI
  return 0;
}

typedef struct {
  const char* layout;
  const char* label;
  const char* tag;
  int iters, warmup, dense, header;
  char methods[MAXN][48]; /* canonical names (tool_methodName) */
  int nmethods;
  double densities[MAXN];
  int ndensities;
  int wires[4];
  int nwires;
  size_t pipelines[MAXN]; /* config.pipelineBytes of each sparccl row */
  int npipelines;
} Options;

static const char* wireName(int wire) {
  return wire == sparcclFloat32 ? "fp32" : wire == sparcclBfloat16 ? "bf16" : "fp16";
}

static void row(const Options* o, const char* method, double density, const char* wire,
                size_t bytes, double wireBytes, double med, double mn, double denseMed,
                double compress, double exchange, double decompress, double ringMed,
                size_t pipeline) {
  if (rank != 0) return;
  printf("%s,%d,%s,%s,%.4g,%s,%zu,%.0f,%.6f,%.6f,%.6f,%.3f,%.4f,%.6f,%.6f,%.6f,%.6f,%.3f,%zu\n",
         o->tag, nranks, o->label, method, density, wire, bytes, wireBytes, med, mn, denseMed,
         med > 0 ? denseMed / med : 0.0, med > 0 ? (double)bytes / med / 1e9 : 0.0, compress,
         exchange, decompress, ringMed, med > 0 ? ringMed / med : 0.0, pipeline);
  fflush(stdout);
}

int main(int argc, char** argv) {
  Options o;
  size_t* counts;
  tool_Layout layout;
  size_t nlayers, count, bytes;
  float *send, *recv, *pool[2];
  double *times, denseMed = 0, denseMin = 0, ringMed = 0, ringMin = 0;
  int i, it, mi, di, wi;
  char labelBuf[128];

  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  memset(&o, 0, sizeof(o));
  o.iters = 5;
  o.warmup = 1;
  o.dense = 1;
  o.tag = "";
  for (i = 1; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v == NULL) DIE("%s needs a value\n", a);
    if (!strcmp(a, "--layout")) o.layout = v;
    else if (!strcmp(a, "--method")) {
      int c, f;
      if (o.nmethods == MAXN || tool_parseMethod(v, &c, &f)) DIE("bad method %s\n", v);
      tool_methodName(c, f, o.methods[o.nmethods++], sizeof(o.methods[0]));
    } else if (!strcmp(a, "--density")) {
      if (o.ndensities == MAXN) DIE("too many densities\n");
      o.densities[o.ndensities++] = strtod(v, NULL);
    } else if (!strcmp(a, "--wire")) {
      if (o.nwires == 4) DIE("too many wires\n");
      if (!strcmp(v, "fp32")) o.wires[o.nwires++] = sparcclFloat32;
      else if (!strcmp(v, "bf16")) o.wires[o.nwires++] = sparcclBfloat16;
      else if (!strcmp(v, "fp16")) o.wires[o.nwires++] = sparcclFloat16;
      else DIE("bad wire %s\n", v);
    } else if (!strcmp(a, "--pipeline")) {
      if (o.npipelines == MAXN) DIE("too many pipeline sizes\n");
      o.pipelines[o.npipelines++] = (size_t)strtoull(v, NULL, 0);
    } else if (!strcmp(a, "-n")) o.iters = atoi(v);
    else if (!strcmp(a, "-w")) o.warmup = atoi(v);
    else if (!strcmp(a, "--dense")) o.dense = atoi(v);
    else if (!strcmp(a, "--tag")) o.tag = v;
    else if (!strcmp(a, "--header")) o.header = atoi(v);
    else DIE("unknown option %s\n", a);
    i++;
  }
  if (o.layout == NULL) DIE("--layout FILE is required\n");
  if (o.iters < 1) o.iters = 1;
  if (o.nmethods == 0) snprintf(o.methods[o.nmethods++], sizeof(o.methods[0]), "scam-topk");
  if (o.ndensities == 0) o.densities[o.ndensities++] = 0.01;
  if (o.nwires == 0) o.wires[o.nwires++] = sparcclFloat32;
  if (o.npipelines == 0) o.pipelines[o.npipelines++] = 0;
  tool_layoutLabel(o.layout, labelBuf, sizeof(labelBuf));
  o.label = labelBuf;

  {
    /* Which network namespace each rank runs in (a '#' line: not part of the CSV). */
    char mine[64] = "?", *all = rank == 0 ? (char*)malloc(64 * (size_t)nranks) : NULL;
    ssize_t len = readlink("/proc/self/ns/net", mine, sizeof(mine) - 1);
    int r;
    mine[len > 0 ? len : 1] = '\0';
    MPI_Gather(mine, 64, MPI_CHAR, all, 64, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      printf("# netns:");
      for (r = 0; r < nranks; r++) printf(" rank%d=%s", r, all + 64 * r);
      printf("\n");
      free(all);
    }
  }

  switch (tool_readLayout(o.layout, &layout)) {
    case TOOL_LAYOUT_OK: break;
    case TOOL_LAYOUT_OPEN: DIE("cannot open layout %s\n", o.layout);
    case TOOL_LAYOUT_BAD_COUNT: DIE("layout %s: bad count %s\n", o.layout, layout.bad);
    case TOOL_LAYOUT_EMPTY: DIE("layout %s has no layers\n", o.layout);
    default: DIE("out of memory\n");
  }
  nlayers = layout.nlayers;
  counts = layout.counts;
  count = layout.total;
  bytes = count * sizeof(float);
  if (count > (size_t)INT32_MAX) DIE("layout too large for one MPI_Allreduce\n");
  send = (float*)malloc(bytes);
  recv = (float*)malloc(bytes);
  pool[0] = (float*)malloc(bytes);
  pool[1] = (float*)malloc(bytes);
  times = (double*)malloc(sizeof(double) * (size_t)o.iters);
  if (!send || !recv || !pool[0] || !pool[1] || !times) DIE("out of memory (%zu bytes x 4)\n", bytes);
  tool_fillNormal(pool[0], count, sparcclFloat32, 1000003ull + (uint64_t)rank * 7919ull);
  tool_fillNormal(pool[1], count, sparcclFloat32, 2000003ull + (uint64_t)rank * 7919ull);
  memset(recv, 0, bytes);

  if (o.header && rank == 0)
    printf("tag,ranks,layout,method,density,wire,dense_bytes,wire_bytes_per_rank,time_med_s,"
           "time_min_s,dense_time_med_s,speedup,effbw_GBps,compress_s,exchange_s,decompress_s,"
           "ring_time_med_s,speedup_vs_ring,pipeline_bytes\n");

  if (o.dense) {
    for (it = -o.warmup; it < o.iters; it++) {
      double t;
      memcpy(send, pool[(it + o.warmup) & 1], bytes);
      MPI_Barrier(MPI_COMM_WORLD);
      t = MPI_Wtime();
      if (MPI_Allreduce(send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
        DIE("MPI_Allreduce failed\n");
      t = slowest(MPI_Wtime() - t);
      if (it >= 0) times[it] = t;
    }
    denseMin = tool_minimum(times, o.iters);
    denseMed = tool_median(times, o.iters);
    /* The same with the hand-written ring (pool[1 - slot] is free as scratch: the next
     * call's memcpy refills the send buffer). */
    for (it = -o.warmup; it < o.iters; it++) {
      double t;
      float* tmp = (float*)malloc(((count + (size_t)nranks - 1) / (size_t)nranks) * sizeof(float));
      if (tmp == NULL) DIE("out of memory\n");
      memcpy(send, pool[(it + o.warmup) & 1], bytes);
      MPI_Barrier(MPI_COMM_WORLD);
      t = MPI_Wtime();
      if (ringAllreduce(send, recv, tmp, count) != 0) DIE("ring allreduce failed\n");
      t = slowest(MPI_Wtime() - t);
      free(tmp);
      if (it >= 0) times[it] = t;
    }
    ringMin = tool_minimum(times, o.iters);
    ringMed = tool_median(times, o.iters);
    /* The dense rows: their wire bytes are what one rank sends in a ring allreduce. */
    row(&o, "dense", 1.0, "fp32", bytes, 2.0 * (nranks - 1) / nranks * (double)bytes, denseMed,
        denseMin, denseMed, 0, 0, 0, ringMed, 0);
    row(&o, "dense-ring", 1.0, "fp32", bytes, 2.0 * (nranks - 1) / nranks * (double)bytes,
        ringMed, ringMin, denseMed, 0, 0, 0, ringMed, 0);
  }

  for (mi = 0; mi < o.nmethods; mi++)
    for (di = 0; di < o.ndensities; di++)
      for (wi = 0; wi < o.nwires * o.npipelines; wi++) {
        sparcclConfig_t config = SPARCCL_CONFIG_INITIALIZER;
        sparcclComm_t comm;
        sparcclStats_t before, after;
        double mn;
        int c, f, calls;
        tool_parseMethod(o.methods[mi], &c, &f);
        config.density = o.densities[di];
        config.compressor = c;
        config.feedback = f;
        config.wireType = o.wires[wi % o.nwires];
        config.pipelineBytes = o.pipelines[wi / o.nwires];
        CHECK(sparcclCommInitMpi(&comm, MPI_COMM_WORLD, &config));
        CHECK(sparcclRegisterLayout(comm, send, nlayers, counts));
        memset(&before, 0, sizeof(before));
        for (it = -o.warmup; it < o.iters; it++) {
          double t;
          memcpy(send, pool[(it + o.warmup) & 1], bytes);
          if (it == 0) CHECK(sparcclCommGetStats(comm, &before));
          MPI_Barrier(MPI_COMM_WORLD);
          t = MPI_Wtime();
          CHECK(sparcclAllReduce(send, recv, count, sparcclFloat32, sparcclSum, comm, NULL));
          t = slowest(MPI_Wtime() - t);
          if (it >= 0) times[it] = t;
        }
        CHECK(sparcclCommGetStats(comm, &after));
        calls = (int)(after.calls - before.calls);
        if (calls < 1) calls = 1;
        mn = tool_minimum(times, o.iters);
        {
          double med = tool_median(times, o.iters);
          double cs = tool_rankMean((after.compressSeconds - before.compressSeconds) / calls);
          double ex = tool_rankMean((after.exchangeSeconds - before.exchangeSeconds) / calls);
          double ds = tool_rankMean((after.decompressSeconds - before.decompressSeconds) / calls);
          row(&o, o.methods[mi], o.densities[di],
              wireName(config.wireType), bytes, (double)(after.bytesSent - before.bytesSent) / calls,
              med, mn, o.dense ? denseMed : 0.0, cs, ex, ds, ringMed, config.pipelineBytes);
        }
        CHECK(sparcclCommDestroy(comm));
      }

  free(send);
  free(recv);
  free(pool[0]);
  free(pool[1]);
  free(times);
  free(counts);
  MPI_Finalize();
  return 0;
}
