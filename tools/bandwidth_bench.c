/*
 * bandwidth_bench: dense MPI_Allreduce against sparcclAllReduce on one layout, in one run,
 * for every (method, density, wire) given; one CSV row per configuration on rank 0's
 * stdout.  tools/bandwidth_bench.sh runs it in network namespaces with rate-limited links
 * (docs/PERFORMANCE.md, "Bandwidth-limited links").
 *
 *   mpirun -np N bandwidth_bench --layout FILE [--method scam-topk ...] [--density 0.01 ...]
 *                                [--wire fp32 --wire bf16] [-n 5] [-w 1] [--dense 1]
 *                                [--tag TEXT] [--header 1]
 *
 * Per call: MPI_Barrier, then the timed collective; the call's time is the slowest rank's
 * (MPI_Allreduce MAX after the call, untimed).  The row gives the median and minimum over
 * the timed calls.  Gradients: float32 normal draws, two pre-drawn buffers copied in turn
 * into the registered send buffer (untimed).  The dense baseline is MPI_Allreduce(float32,
 * MPI_SUM) out of place, on the same buffer (Open MPI picks the algorithm), and a hand-written
 * ring allreduce ("dense-ring", the cost model's algorithm).  compress/exchange/decompress come from
 * sparcclCommGetStats (mean over ranks, per call); wire bytes are one rank's allgather
 * block (bytesSent per call).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mpi.h>

#include "sparccl.h"
#include "sparccl_mpi.h"

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

static const char* compressorNames[] = {"topk", "randk", "impk", "impk_select", "impk_random"};
static const char* feedbackNames[] = {"none", "ef", "ef21", "scam"};

static int lookup(const char* s, size_t len, const char* const* names, int n) {
  int i;
  for (i = 0; i < n; i++)
    if (strlen(names[i]) == len && strncmp(s, names[i], len) == 0) return i;
  return -1;
}
/* FEEDBACK-COMPRESSOR or COMPRESSOR (feedback none), as tools/sparccl_perf. */
static int parseMethod(const char* s, int* c, int* f) {
  const char* dash = strchr(s, '-');
  if (dash == NULL) {
    *c = lookup(s, strlen(s), compressorNames, 5);
    *f = 0;
  } else {
    *f = lookup(s, (size_t)(dash - s), feedbackNames, 4);
    *c = lookup(dash + 1, strlen(dash + 1), compressorNames, 5);
  }
  return *c < 0 || *f < 0 ? -1 : 0;
}

static size_t readLayout(const char* path, size_t** counts) {
  FILE* fp = fopen(path, "r");
  char line[4096];
  size_t n = 0, cap = 0;
  *counts = NULL;
  if (fp == NULL) DIE("cannot open layout %s\n", path);
  while (fgets(line, sizeof(line), fp)) {
    char *hash = strchr(line, '#'), *tok, *last = NULL, *save = NULL;
    if (hash) *hash = '\0';
    for (tok = strtok_r(line, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save))
      last = tok;
    if (last == NULL) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 64;
      *counts = (size_t*)realloc(*counts, cap * sizeof(size_t));
      if (*counts == NULL) DIE("out of memory\n");
    }
    (*counts)[n] = (size_t)strtoull(last, NULL, 10);
    if ((*counts)[n] == 0) DIE("layout %s: bad count %s\n", path, last);
    n++;
  }
  fclose(fp);
  if (n == 0) DIE("layout %s has no layers\n", path);
  return n;
}

static uint64_t splitmix64(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static void fillNormal(float* buf, size_t count, uint64_t seed) {
  uint64_t s = seed;
  size_t i;
  for (i = 0; i < count; i += 2) {
    double u1 = ((double)(splitmix64(&s) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(splitmix64(&s) >> 11) * (1.0 / 9007199254740992.0);
    double rad = sqrt(-2.0 * log(u1));
    buf[i] = (float)(rad * cos(6.283185307179586 * u2));
    if (i + 1 < count) buf[i + 1] = (float)(rad * sin(6.283185307179586 * u2));
  }
}

static int cmpd(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}
static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmpd);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
static double rankMean(double v) {
  double s = 0;
  MPI_Allreduce(&v, &s, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return s / nranks;
}
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
  const char* methods[MAXN];
  int nmethods;
  double densities[MAXN];
  int ndensities;
  int wires[4];
  int nwires;
} Options;

static void row(const Options* o, const char* method, double density, const char* wire,
                size_t bytes, double wireBytes, double med, double mn, double denseMed,
                double compress, double exchange, double decompress, double ringMed) {
  if (rank != 0) return;
  printf("%s,%d,%s,%s,%.4g,%s,%zu,%.0f,%.6f,%.6f,%.6f,%.3f,%.4f,%.6f,%.6f,%.6f,%.6f,%.3f\n",
         o->tag, nranks, o->label, method, density, wire, bytes, wireBytes, med, mn, denseMed,
         med > 0 ? denseMed / med : 0.0, med > 0 ? (double)bytes / med / 1e9 : 0.0, compress,
         exchange, decompress, ringMed, med > 0 ? ringMed / med : 0.0);
  fflush(stdout);
}

int main(int argc, char** argv) {
  Options o;
  size_t* counts;
  size_t nlayers, count = 0, l, bytes;
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
      if (o.nmethods == MAXN || parseMethod(v, &c, &f)) DIE("bad method %s\n", v);
      o.methods[o.nmethods++] = v;
    } else if (!strcmp(a, "--density")) {
      if (o.ndensities == MAXN) DIE("too many densities\n");
      o.densities[o.ndensities++] = strtod(v, NULL);
    } else if (!strcmp(a, "--wire")) {
      if (o.nwires == 4) DIE("too many wires\n");
      if (!strcmp(v, "fp32")) o.wires[o.nwires++] = sparcclFloat32;
      else if (!strcmp(v, "bf16")) o.wires[o.nwires++] = sparcclBfloat16;
      else if (!strcmp(v, "fp16")) o.wires[o.nwires++] = sparcclFloat16;
      else DIE("bad wire %s\n", v);
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
  if (o.nmethods == 0) o.methods[o.nmethods++] = "scam-topk";
  if (o.ndensities == 0) o.densities[o.ndensities++] = 0.01;
  if (o.nwires == 0) o.wires[o.nwires++] = sparcclFloat32;
  {
    const char* base = strrchr(o.layout, '/');
    snprintf(labelBuf, sizeof(labelBuf), "%s", base ? base + 1 : o.layout);
    if (strlen(labelBuf) > 4 && !strcmp(labelBuf + strlen(labelBuf) - 4, ".txt"))
      labelBuf[strlen(labelBuf) - 4] = '\0';
    o.label = labelBuf;
  }

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

  nlayers = readLayout(o.layout, &counts);
  for (l = 0; l < nlayers; l++) count += counts[l];
  bytes = count * sizeof(float);
  if (count > (size_t)INT32_MAX) DIE("layout too large for one MPI_Allreduce\n");
  send = (float*)malloc(bytes);
  recv = (float*)malloc(bytes);
  pool[0] = (float*)malloc(bytes);
  pool[1] = (float*)malloc(bytes);
  times = (double*)malloc(sizeof(double) * (size_t)o.iters);
  if (!send || !recv || !pool[0] || !pool[1] || !times) DIE("out of memory (%zu bytes x 4)\n", bytes);
  fillNormal(pool[0], count, 1000003ull + (uint64_t)rank * 7919ull);
  fillNormal(pool[1], count, 2000003ull + (uint64_t)rank * 7919ull);
  memset(recv, 0, bytes);

  if (o.header && rank == 0)
    printf("tag,ranks,layout,method,density,wire,dense_bytes,wire_bytes_per_rank,time_med_s,"
           "time_min_s,dense_time_med_s,speedup,effbw_GBps,compress_s,exchange_s,decompress_s,"
           "ring_time_med_s,speedup_vs_ring\n");

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
    denseMin = times[0];
    for (it = 1; it < o.iters; it++) denseMin = times[it] < denseMin ? times[it] : denseMin;
    denseMed = median(times, o.iters);
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
    ringMin = times[0];
    for (it = 1; it < o.iters; it++) ringMin = times[it] < ringMin ? times[it] : ringMin;
    ringMed = median(times, o.iters);
    /* The dense rows: their wire bytes are what one rank sends in a ring allreduce. */
    row(&o, "dense", 1.0, "fp32", bytes, 2.0 * (nranks - 1) / nranks * (double)bytes, denseMed,
        denseMin, denseMed, 0, 0, 0, ringMed);
    row(&o, "dense-ring", 1.0, "fp32", bytes, 2.0 * (nranks - 1) / nranks * (double)bytes,
        ringMed, ringMin, denseMed, 0, 0, 0, ringMed);
  }

  for (mi = 0; mi < o.nmethods; mi++)
    for (di = 0; di < o.ndensities; di++)
      for (wi = 0; wi < o.nwires; wi++) {
        sparcclConfig_t config = SPARCCL_CONFIG_INITIALIZER;
        sparcclComm_t comm;
        sparcclStats_t before, after;
        double mn;
        int c, f, calls;
        parseMethod(o.methods[mi], &c, &f);
        config.density = o.densities[di];
        config.compressor = c;
        config.feedback = f;
        config.wireType = o.wires[wi];
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
        mn = times[0];
        for (it = 1; it < o.iters; it++) mn = times[it] < mn ? times[it] : mn;
        {
          double med = median(times, o.iters);
          double cs = rankMean((after.compressSeconds - before.compressSeconds) / calls);
          double ex = rankMean((after.exchangeSeconds - before.exchangeSeconds) / calls);
          double ds = rankMean((after.decompressSeconds - before.decompressSeconds) / calls);
          row(&o, o.methods[mi], o.densities[di],
              o.wires[wi] == sparcclFloat32 ? "fp32" : o.wires[wi] == sparcclBfloat16 ? "bf16" : "fp16",
              bytes, (double)(after.bytesSent - before.bytesSent) / calls, med, mn,
              o.dense ? denseMed : 0.0, cs, ex, ds, ringMed);
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
