/*
 * sparccl_perf: nccl-tests' all_reduce_perf for sparccl on host buffers (MPI).
 *
 *   mpirun -np N sparccl_perf [-b 8 -e 128M -f 2 | --layout FILE] [-n 20 -w 1 -c 1]
 *                             [-d float|half|bfloat16] [-o sum|avg]
 *                             [--method scam-topk --method ef-topk ...] [--density 0.01]
 *                             [--wire fp32|bf16|fp16] [--min-sparse N] [--pool 3]
 *                             [--baseline 0|1] [--floor 0|1] [--seed S]
 *
 * Flags and columns follow nccl-tests (STYLE.md): algbw is computed on the dense bytes
 * (count * sizeof(type)), so the two tools' numbers compare directly, and
 * busbw = algbw * 2(n-1)/n.  sparccl's own columns: the library's time split
 * (sparcclCommGetStats: compress, exchange, decompress, with the GB/s of the float32
 * gradient), and the wire bytes per rank with the ratio dense / wire.
 *
 * Gradients are random normal, a new draw each iteration: --pool buffers are drawn once
 * and copied in turn into the one registered send buffer (untimed), so the key (sendbuff,
 * count) and the state stay the same.  The output goes to a separate buffer.
 *
 * -c 1 checks that every rank's last output is bitwise identical to rank 0's (#wrong
 * counts the differing elements over all ranks).  With scam-topk, float32 data and an
 * fp32 wire, the plain baseline (tools/baseline_select.cc) runs on the same gradients in
 * the same iterations; -c 1 also checks that the rank-ordered sum of what the baseline
 * sent is bitwise sparccl's output, and a last table compares the two compress times.
 *
 * --floor 1 (the default) also times, per buffer and in the same run, the memory floor of
 * a call (one pass reading g and e and writing e and the output: 16 bytes a parameter) and
 * the plain full call (the baseline's compress, its e update and this rank's dense output),
 * and a last table gives every method's call as a multiple of the floor and the plain
 * call's time over sparccl's (issue 14's targets: within 3x of the floor, 4x faster).
 *
 * Method names: FEEDBACK-COMPRESSOR (scam-topk, ef-topk, ef21-topk, scam-impk,
 * none-impk_random) or COMPRESSOR alone (feedback none: topk, randk, impk_random).
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mpi.h>

#include "sparccl.h"
#include "sparccl_mpi.h"
#include "sparccl_math.h" /* sparccl_dtype_size, sparccl_float_bits */
#include "baseline_select.h"
#include "tool_util.h"

#define MAX_METHODS 32

static int rank = 0, nranks = 1;
static long long totalWrong = 0;            /* over every check */
static double busbwSum = 0.0;               /* for nccl-tests' "Avg bus bandwidth" */
static int nrows = 0;

#define DIE(...)                                   \
  do {                                             \
    if (rank == 0) fprintf(stderr, __VA_ARGS__);   \
    MPI_Abort(MPI_COMM_WORLD, 1);                  \
    exit(1);                                       \
  } while (0)

#define SPARCCLCHECK(call)                                                                 \
  do {                                                                                     \
    sparcclResult_t r_ = (call);                                                           \
    if (r_ != sparcclSuccess) {                                                            \
      fprintf(stderr, "rank %d: %s:%d %s: %s\n", rank, __FILE__, __LINE__, #call,          \
              sparcclGetErrorString(r_));                                                  \
      MPI_Abort(MPI_COMM_WORLD, 1);                                                        \
    }                                                                                      \
  } while (0)

typedef struct {
  char name[48];
  int compressor, feedback;
} Method;

typedef struct {
  size_t minBytes, maxBytes;
  double stepFactor;
  int iters, warmup, check;
  int dtype, op;
  const char* layoutPath;
  Method methods[MAX_METHODS];
  int nmethods;
  double density;
  int wireType;
  long long minSparse; /* -1: the library's (environment or default) */
  long long pipelineBytes; /* config.pipelineBytes; -1: the library's */
  int pool;
  int baseline;
  int floor;
  unsigned long long seed;
} Options;

/* ------------------------------------------------------------------ names */

/* A method name (tool_parseMethod's grammar) and its canonical form. */
static int parseMethod(const char* s, Method* m) {
  if (tool_parseMethod(s, &m->compressor, &m->feedback) != 0) return -1;
  tool_methodName(m->compressor, m->feedback, m->name, sizeof(m->name));
  return 0;
}

static const char* typeName(int dtype) {
  return dtype == sparcclFloat32 ? "float" : dtype == sparcclFloat16 ? "half" : "bfloat16";
}
static const char* wireName(int wire) {
  return wire == sparcclFloat32 ? "fp32" : wire == sparcclFloat16 ? "fp16" : "bf16";
}

/* nccl-tests' size parser: a number with an optional K, M or G suffix (powers of 2). */
static size_t parseSize(const char* s) {
  char* end;
  double v = strtod(s, &end);
  switch (*end) {
    case 'G': case 'g': v *= 1024.0; /* fall through */
    case 'M': case 'm': v *= 1024.0; /* fall through */
    case 'K': case 'k': v *= 1024.0; break;
    default: break;
  }
  if (v < 0) v = 0;
  return (size_t)v;
}

/* ------------------------------------------------------------------ buffers */

static void* xmalloc(size_t bytes, const char* what) {
  void* p = malloc(bytes ? bytes : 1);
  if (p == NULL) {
    fprintf(stderr, "rank %d: out of memory for %s (%zu bytes)\n", rank, what, bytes);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return p;
}

/* ------------------------------------------------------------------ checks */

#define CHECK_CHUNK ((size_t)1 << 20)

/* Elements (over all ranks) whose output bits differ from rank 0's. */
static long long checkRanksAgree(const void* out, size_t count, int dtype) {
  size_t esize = sparccl_dtype_size(dtype), off;
  unsigned char* ref = (unsigned char*)xmalloc(CHECK_CHUNK * esize, "check");
  long long wrong = 0, total = 0;
  for (off = 0; off < count; off += CHECK_CHUNK) {
    size_t n = count - off < CHECK_CHUNK ? count - off : CHECK_CHUNK, i;
    const unsigned char* mine = (const unsigned char*)out + off * esize;
    if (rank == 0) memcpy(ref, mine, n * esize);
    MPI_Bcast(ref, (int)(n * esize), MPI_BYTE, 0, MPI_COMM_WORLD);
    for (i = 0; i < n; i++)
      if (memcmp(ref + i * esize, mine + i * esize, esize) != 0) wrong++;
  }
  free(ref);
  MPI_Allreduce(&wrong, &total, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
  return total;
}

/* Elements where the rank-ordered float32 sum of every rank's baseline `sent` (s = +0;
 * s = s + sent_j; / n for avg) differs from sparccl's float32 output on rank 0. */
static long long checkBaseline(const float* sent, const float* out, size_t count, int op) {
  float* all = rank == 0 ? (float*)xmalloc(CHECK_CHUNK * (size_t)nranks * sizeof(float), "check")
                         : NULL;
  long long wrong = 0;
  size_t off;
  for (off = 0; off < count; off += CHECK_CHUNK) {
    size_t n = count - off < CHECK_CHUNK ? count - off : CHECK_CHUNK, i;
    int r;
    MPI_Gather(sent + off, (int)n, MPI_FLOAT, all, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    if (rank != 0) continue;
    for (i = 0; i < n; i++) {
      float s = 0.0f;
      for (r = 0; r < nranks; r++) s = s + all[(size_t)r * n + i];
      if (op == sparcclAvg) s = s / (float)nranks;
      if (sparccl_float_bits(s) != sparccl_float_bits(out[off + i])) wrong++;
    }
  }
  free(all);
  MPI_Bcast(&wrong, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  return wrong;
}

/* ------------------------------------------------------------------ one row */

typedef struct {
  char label[64];       /* the layout's name or the size */
  char method[48];
  double sparcclMedian, sparcclMin, sparcclMean; /* per-call compress, seconds */
  double plainMedian, plainMin, plainMean;       /* per-call select + pack, seconds */
  double plainUpdateMean;                        /* its e update, seconds */
  long long wrong;                               /* -1: not checked */
} BaselineRow;

static BaselineRow baselineRows[256];
static int nbaselineRows = 0;

/* The whole call against the memory floor and the plain full call (issue 14 item 3). */
typedef struct {
  char label[64];
  char method[48];
  double callMedian;   /* sparccl's sparcclAllReduce, seconds */
  double floorMedian;  /* the 16 B/param pass */
  double plainMedian;  /* the plain call: compress + e update + this rank's output; 0: none */
} FloorRow;

static FloorRow floorRows[256];
static int nfloorRows = 0;

/* The buffer's floor and plain call, measured once per buffer on the pool's gradients. */
static double bufferFloorMedian = 0.0, bufferPlainMedian = 0.0;

static void runMethod(const Options* o, const Method* m, const char* label, size_t count,
                      size_t nlayers, const size_t* counts, void* send, void* recv,
                      void* const* pool) {
  sparcclConfig_t config = SPARCCL_CONFIG_INITIALIZER, effective;
  sparcclComm_t comm;
  sparcclStats_t before, after, prev, now;
  size_t esize = sparccl_dtype_size(o->dtype), bytes = count * esize;
  int withBaseline = o->baseline && m->compressor == 0 && m->feedback == 3 &&
                     o->dtype == sparcclFloat32 && o->wireType == sparcclFloat32;
  plainScamTopk* plain = NULL;
  double* perCall = (double*)xmalloc(sizeof(double) * (size_t)(o->iters > 0 ? o->iters : 1), "times");
  double* plainPerCall = (double*)xmalloc(sizeof(double) * (size_t)(o->iters > 0 ? o->iters : 1), "times");
  double* callTimes = (double*)xmalloc(sizeof(double) * (size_t)(o->iters > 0 ? o->iters : 1), "times");
  double timeSum = 0.0, plainUpdateSum = 0.0, t, time, algbw, busbw, compress, exchange,
         decompress, wire, ratio;
  long long wrong = -1;
  int it, calls;

  config.density = o->density;
  config.compressor = m->compressor;
  config.feedback = m->feedback;
  config.wireType = o->wireType;
  if (o->minSparse >= 0) config.minSparseCount = (size_t)o->minSparse;
  if (o->pipelineBytes >= 0) config.pipelineBytes = (size_t)o->pipelineBytes;
  SPARCCLCHECK(sparcclCommInitMpi(&comm, MPI_COMM_WORLD, &config));
  SPARCCLCHECK(sparcclCommGetConfig(comm, &effective));
  if (nlayers > 0) SPARCCLCHECK(sparcclRegisterLayout(comm, send, nlayers, counts));
  if (withBaseline) {
    size_t one = count;
    plain = nlayers > 0 ? plainScamTopkCreate(nlayers, counts, o->density, effective.minSparseCount)
                        : plainScamTopkCreate(1, &one, o->density, effective.minSparseCount);
    if (plain == NULL) DIE("out of memory for the baseline\n");
  }

  for (it = -o->warmup; it < o->iters; it++) {
    int slot = (it + o->warmup) % o->pool;
    double c0 = 0.0, c1 = 0.0;
    memcpy(send, pool[slot], bytes);
    if (it == 0) SPARCCLCHECK(sparcclCommGetStats(comm, &before));
    SPARCCLCHECK(sparcclCommGetStats(comm, &prev));
    MPI_Barrier(MPI_COMM_WORLD);
    t = MPI_Wtime();
    SPARCCLCHECK(sparcclAllReduce(send, recv, count, (sparcclDataType_t)o->dtype,
                                  (sparcclRedOp_t)o->op, comm, NULL));
    t = MPI_Wtime() - t;
    SPARCCLCHECK(sparcclCommGetStats(comm, &now));
    /* The baseline on the same gradient, with its own state (also from zero). */
    if (plain) plainScamTopkCall(plain, (const float*)send, &c0, &c1);
    if (it < 0) continue;
    timeSum += t;
    callTimes[it] = t;
    perCall[it] = now.compressSeconds - prev.compressSeconds;
    plainPerCall[it] = c0;
    plainUpdateSum += c1;
  }
  if (o->iters == 0) SPARCCLCHECK(sparcclCommGetStats(comm, &before));
  SPARCCLCHECK(sparcclCommGetStats(comm, &after));
  calls = (int)(after.calls - before.calls);
  if (calls < 1) calls = 1;

  if (o->check && o->iters > 0) {
    wrong = checkRanksAgree(recv, count, o->dtype);
    totalWrong += wrong;
  }

  /* time: the slowest rank's mean per call (as nccl-tests); the split: mean over ranks. */
  t = o->iters > 0 ? timeSum / o->iters : 0.0;
  MPI_Allreduce(&t, &time, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  compress = tool_rankMean((after.compressSeconds - before.compressSeconds) / calls);
  exchange = tool_rankMean((after.exchangeSeconds - before.exchangeSeconds) / calls);
  decompress = tool_rankMean((after.decompressSeconds - before.decompressSeconds) / calls);
  wire = (double)(after.bytesSent - before.bytesSent) / calls;
  ratio = after.bytesSent > before.bytesSent
              ? (double)(after.bytesDense - before.bytesDense) / (double)(after.bytesSent - before.bytesSent)
              : 0.0;
  algbw = time > 0 ? (double)bytes / time / 1e9 : 0.0;
  busbw = algbw * 2.0 * (nranks - 1) / nranks;
  busbwSum += busbw;
  nrows++;
  if (rank == 0) {
    char wrongText[24];
    if (wrong < 0) snprintf(wrongText, sizeof(wrongText), "N/A");
    else snprintf(wrongText, sizeof(wrongText), "%lld", wrong);
    printf("%12zu  %12zu  %8s  %5s  %-18s %7.4f  %10.1f  %7.3f  %7.3f  %6s  %10.1f  %10.1f  %10.1f"
           "  %7.3f  %7.3f  %12.0f  %7.1f\n",
           bytes, count, typeName(o->dtype), o->op == sparcclSum ? "sum" : "avg", m->name,
           o->density, time * 1e6, algbw, busbw, wrongText, compress * 1e6, exchange * 1e6,
           decompress * 1e6, compress > 0 ? count * 4.0 / compress / 1e9 : 0.0,
           decompress > 0 ? count * 4.0 / decompress / 1e9 : 0.0, wire, ratio);
    fflush(stdout);
  }

  if (plain) {
    BaselineRow* b = &baselineRows[nbaselineRows < 255 ? nbaselineRows++ : 255];
    snprintf(b->label, sizeof(b->label), "%s", label);
    snprintf(b->method, sizeof(b->method), "%s", m->name);
    b->wrong = -1;
    if (o->check && o->iters > 0) {
      float* sent = (float*)xmalloc(count * sizeof(float), "check");
      plainScamTopkSent(plain, (const float*)send, sent);
      b->wrong = checkBaseline(sent, (const float*)recv, count, o->op);
      totalWrong += b->wrong;
      free(sent);
    }
    b->sparcclMean = tool_rankMean(o->iters > 0 ? (after.compressSeconds - before.compressSeconds) / calls : 0);
    b->sparcclMedian = tool_rankMean(o->iters > 0 ? tool_median(perCall, o->iters) : 0);
    b->sparcclMin = tool_rankMean(o->iters > 0 ? tool_minimum(perCall, o->iters) : 0);
    {
      double s = 0.0;
      for (it = 0; it < o->iters; it++) s += plainPerCall[it];
      b->plainMean = tool_rankMean(o->iters > 0 ? s / o->iters : 0);
    }
    b->plainMedian = tool_rankMean(o->iters > 0 ? tool_median(plainPerCall, o->iters) : 0);
    b->plainMin = tool_rankMean(o->iters > 0 ? tool_minimum(plainPerCall, o->iters) : 0);
    b->plainUpdateMean = tool_rankMean(o->iters > 0 ? plainUpdateSum / o->iters : 0);
    plainScamTopkDestroy(plain);
  }
  if (o->iters > 0) {
    FloorRow* f = &floorRows[nfloorRows < 255 ? nfloorRows++ : 255];
    double median = tool_median(callTimes, o->iters), slowest;
    MPI_Allreduce(&median, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    snprintf(f->label, sizeof(f->label), "%s", label);
    snprintf(f->method, sizeof(f->method), "%s", m->name);
    f->callMedian = slowest;
    f->floorMedian = bufferFloorMedian;
    f->plainMedian = bufferPlainMedian;
  }
  free(perCall);
  free(plainPerCall);
  free(callTimes);
  SPARCCLCHECK(sparcclCommDestroy(comm));
}

/* The memory floor of a call and the plain full call, on the pool's gradients, the same
 * number of iterations; medians of the slowest rank into bufferFloorMedian and
 * bufferPlainMedian (0 where the plain call does not apply: not float32).
 *
 * Floor: one pass over the buffer that reads g and e and writes e and the output (16 bytes
 * a parameter, float32), a = e + g; e = a * 0.5; out = a -- what any call with error
 * feedback must at least move.  Plain: tools/baseline_select.cc's SCAM-TopK (a = e + g,
 * nth_element, sort the k by index, gather) with its e update and this rank's dense output
 * (zero and scatter: the whole decompression on one rank). */
static void measureFloorAndPlain(const Options* o, size_t count, size_t nlayers,
                                 const size_t* counts, void* const* pool, void* recv) {
  int n = o->iters > 0 ? o->iters : 1, it;
  double* floorTimes = (double*)xmalloc(sizeof(double) * (size_t)n, "times");
  double* plainTimes = (double*)xmalloc(sizeof(double) * (size_t)n, "times");
  float* e = (float*)xmalloc(count * sizeof(float), "the floor's e");
  float* g = (float*)xmalloc(count * sizeof(float), "the floor's g");
  float* out = (float*)recv;
  plainScamTopk* plain = NULL;
  double median;
  size_t i;
  if (o->dtype == sparcclFloat32) {
    sparcclConfig_t config = SPARCCL_CONFIG_INITIALIZER, effective;
    sparcclComm_t comm;
    size_t one = count;
    if (o->minSparse >= 0) config.minSparseCount = (size_t)o->minSparse;
    config.density = o->density;
    SPARCCLCHECK(sparcclCommInitMpi(&comm, MPI_COMM_WORLD, &config));
    SPARCCLCHECK(sparcclCommGetConfig(comm, &effective));
    SPARCCLCHECK(sparcclCommDestroy(comm));
    plain = nlayers > 0 ? plainScamTopkCreate(nlayers, counts, o->density, effective.minSparseCount)
                        : plainScamTopkCreate(1, &one, o->density, effective.minSparseCount);
    if (plain == NULL) DIE("out of memory for the baseline\n");
  }
  memset(e, 0, count * sizeof(float));
  for (it = -o->warmup; it < o->iters; it++) {
    int slot = (it + o->warmup) % o->pool;
    double t;
    /* the gradient as float32 (the floor's input; untimed) */
    if (o->dtype == sparcclFloat32) memcpy(g, pool[slot], count * sizeof(float));
    else
      for (i = 0; i < count; i++)
        g[i] = sparccl_load(pool[slot], i, o->dtype == sparcclFloat16 ? SPARCCL_DT_FLOAT16
                                                                      : SPARCCL_DT_BFLOAT16);
    MPI_Barrier(MPI_COMM_WORLD);
    t = MPI_Wtime();
    for (i = 0; i < count; i++) {
      float a = e[i] + g[i];
      e[i] = a * 0.5f;
      out[i] = a;
    }
    t = MPI_Wtime() - t;
    if (it >= 0) floorTimes[it] = t;
    if (plain) {
      double c0 = 0.0, c1 = 0.0;
      MPI_Barrier(MPI_COMM_WORLD);
      t = MPI_Wtime();
      plainScamTopkCall(plain, g, &c0, &c1);
      plainScamTopkSent(plain, g, out);
      t = MPI_Wtime() - t;
      if (it >= 0) plainTimes[it] = t;
    }
  }
  bufferFloorMedian = bufferPlainMedian = 0.0;
  if (o->iters > 0) {
    median = tool_median(floorTimes, o->iters);
    MPI_Allreduce(&median, &bufferFloorMedian, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (plain) {
      median = tool_median(plainTimes, o->iters);
      MPI_Allreduce(&median, &bufferPlainMedian, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
  }
  if (plain) plainScamTopkDestroy(plain);
  free(floorTimes); free(plainTimes); free(e); free(g);
}

/* Every method on one buffer (a layout, or one size of the sweep). */
static void runBuffer(const Options* o, const char* label, size_t count, size_t nlayers,
                      const size_t* counts) {
  size_t bytes = count * sparccl_dtype_size(o->dtype);
  void* send = xmalloc(bytes, "the send buffer");
  /* float32-sized: the floor pass writes its float32 output here too */
  void* recv = xmalloc(count * sizeof(float), "the receive buffer");
  void** pool = (void**)xmalloc(sizeof(void*) * (size_t)o->pool, "pool");
  int p, i;
  for (p = 0; p < o->pool; p++) {
    pool[p] = xmalloc(bytes, "the gradient pool");
    tool_fillNormal(pool[p], count, o->dtype,
               o->seed * 1000003ull + (unsigned long long)rank * 7919ull + (unsigned long long)p);
  }
  if (o->floor) measureFloorAndPlain(o, count, nlayers, counts, pool, recv);
  memset(recv, 0, bytes);
  for (i = 0; i < o->nmethods; i++)
    runMethod(o, &o->methods[i], label, count, nlayers, counts, send, recv, pool);
  for (p = 0; p < o->pool; p++) free(pool[p]);
  free(pool);
  free(send);
  free(recv);
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
  if (rank != 0) return;
  printf(
      "usage: sparccl_perf [options]\n"
      "  -b, --minbytes N        smallest size of the sweep (K/M/G suffixes; default 32M)\n"
      "  -e, --maxbytes N        largest size of the sweep (default 32M)\n"
      "  -f, --stepfactor F      size multiplier (default 2)\n"
      "  -n, --iters N           timed iterations (default 20)\n"
      "  -w, --warmup_iters N    untimed iterations first (default 1)\n"
      "  -c, --check 0|1         check all ranks' outputs are bitwise identical (default 1)\n"
      "  -d, --datatype T        float|half|bfloat16 (default float)\n"
      "  -o, --op OP             sum|avg (default sum)\n"
      "      --layout FILE       one buffer made of the layers of FILE (lines `name count`)\n"
      "      --method NAME       feedback-compressor, repeatable (default scam-topk)\n"
      "      --density D         fraction sent per layer (default 0.01)\n"
      "      --wire W            fp32|bf16|fp16 (default fp32)\n"
      "      --min-sparse N      layers below N elements are sent dense (default: library's)\n"
      "      --pipeline-bytes N  pipeline the exchange over groups of N wire bytes (0 = one\n"
      "                          block; default: the library's, SPARCCL_PIPELINE_BYTES)\n"
      "      --pool N            pre-drawn gradients, rotated (default 3)\n"
      "      --baseline 0|1      time the plain std::nth_element SCAM-TopK too (default 1)\n"
      "      --floor 0|1         time the 16 B/param floor pass and the plain full call, and\n"
      "                          report every call against them (default 1)\n"
      "      --seed S            seed of the gradients (default 1)\n");
}

static void parseOptions(int argc, char** argv, Options* o) {
  static const struct option longOptions[] = {
      {"minbytes", required_argument, 0, 'b'},   {"maxbytes", required_argument, 0, 'e'},
      {"stepfactor", required_argument, 0, 'f'}, {"iters", required_argument, 0, 'n'},
      {"warmup_iters", required_argument, 0, 'w'}, {"check", required_argument, 0, 'c'},
      {"datatype", required_argument, 0, 'd'},   {"op", required_argument, 0, 'o'},
      {"layout", required_argument, 0, 'L'},     {"method", required_argument, 0, 'M'},
      {"density", required_argument, 0, 'D'},    {"wire", required_argument, 0, 'W'},
      {"min-sparse", required_argument, 0, 'S'}, {"pool", required_argument, 0, 'P'},
      {"baseline", required_argument, 0, 'B'},   {"seed", required_argument, 0, 'R'},
      {"floor", required_argument, 0, 'F'},      {"pipeline-bytes", required_argument, 0, 'Q'},
      {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
  int c;
  memset(o, 0, sizeof(*o));
  o->minBytes = o->maxBytes = (size_t)32 << 20;
  o->stepFactor = 2.0;
  o->iters = 20;
  o->warmup = 1;
  o->check = 1;
  o->dtype = sparcclFloat32;
  o->op = sparcclSum;
  o->density = 0.01;
  o->wireType = sparcclFloat32;
  o->minSparse = -1;
  o->pipelineBytes = -1;
  o->pool = 3;
  o->baseline = 1;
  o->floor = 1;
  o->seed = 1;
  while ((c = getopt_long(argc, argv, "b:e:f:n:w:c:d:o:h", longOptions, NULL)) != -1) {
    switch (c) {
      case 'b': o->minBytes = parseSize(optarg); break;
      case 'e': o->maxBytes = parseSize(optarg); break;
      case 'f': o->stepFactor = strtod(optarg, NULL); break;
      case 'n': o->iters = atoi(optarg); break;
      case 'w': o->warmup = atoi(optarg); break;
      case 'c': o->check = atoi(optarg); break;
      case 'd':
        if (!strcmp(optarg, "float") || !strcmp(optarg, "float32")) o->dtype = sparcclFloat32;
        else if (!strcmp(optarg, "half") || !strcmp(optarg, "float16")) o->dtype = sparcclFloat16;
        else if (!strcmp(optarg, "bfloat16")) o->dtype = sparcclBfloat16;
        else DIE("unknown datatype %s (float|half|bfloat16)\n", optarg);
        break;
      case 'o':
        if (!strcmp(optarg, "sum")) o->op = sparcclSum;
        else if (!strcmp(optarg, "avg")) o->op = sparcclAvg;
        else DIE("unknown op %s (sum|avg)\n", optarg);
        break;
      case 'L': o->layoutPath = optarg; break;
      case 'M':
        if (o->nmethods == MAX_METHODS) DIE("at most %d methods\n", MAX_METHODS);
        if (parseMethod(optarg, &o->methods[o->nmethods]) != 0)
          DIE("unknown method %s: feedback (none|ef|ef21|scam) - compressor "
              "(topk|randk|impk|impk_select|impk_random)\n", optarg);
        o->nmethods++;
        break;
      case 'D': o->density = strtod(optarg, NULL); break;
      case 'W':
        if (!strcmp(optarg, "fp32")) o->wireType = sparcclFloat32;
        else if (!strcmp(optarg, "bf16")) o->wireType = sparcclBfloat16;
        else if (!strcmp(optarg, "fp16")) o->wireType = sparcclFloat16;
        else DIE("unknown wire type %s (fp32|bf16|fp16)\n", optarg);
        break;
      case 'S': o->minSparse = atoll(optarg); break;
      case 'Q': o->pipelineBytes = (long long)parseSize(optarg); break;
      case 'P': o->pool = atoi(optarg); break;
      case 'B': o->baseline = atoi(optarg); break;
      case 'F': o->floor = atoi(optarg); break;
      case 'R': o->seed = strtoull(optarg, NULL, 0); break;
      case 'h': usage(); MPI_Finalize(); exit(0);
      default: usage(); MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
  if (optind < argc) DIE("unexpected argument %s\n", argv[optind]);
  if (o->nmethods == 0) parseMethod("scam-topk", &o->methods[o->nmethods++]);
  if (o->iters < 0 || o->warmup < 0 || o->pool < 1) DIE("iters, warmup >= 0 and pool >= 1\n");
  if (o->stepFactor <= 1.0) o->stepFactor = 2.0;
}

static void printHeader(const Options* o, size_t nlayers, const size_t* counts, size_t total) {
  char host[256];
  int r;
  size_t minSparse, pipelineBytes;
  {
    /* The effective minimum sparse layer (environment or default), from a scratch comm. */
    sparcclConfig_t config = SPARCCL_CONFIG_INITIALIZER, effective;
    sparcclComm_t comm;
    if (o->minSparse >= 0) config.minSparseCount = (size_t)o->minSparse;
    if (o->pipelineBytes >= 0) config.pipelineBytes = (size_t)o->pipelineBytes;
    SPARCCLCHECK(sparcclCommInitMpi(&comm, MPI_COMM_WORLD, &config));
    SPARCCLCHECK(sparcclCommGetConfig(comm, &effective));
    SPARCCLCHECK(sparcclCommDestroy(comm));
    minSparse = effective.minSparseCount;
    pipelineBytes = effective.pipelineBytes;
  }
  gethostname(host, sizeof(host));
  host[sizeof(host) - 1] = '\0';
  if (rank == 0) {
    int version = 0;
    sparcclGetVersion(&version);
    printf("# sparccl_perf: sparccl %d (host buffers, MPI), out of place\n", version);
    if (o->layoutPath)
      printf("# nRanks %d layout %s warmup iters: %d iters: %d validation: %d pool: %d\n", nranks,
             o->layoutPath, o->warmup, o->iters, o->check, o->pool);
    else
      printf("# nRanks %d minBytes %zu maxBytes %zu step: %g(factor) warmup iters: %d iters: %d "
             "validation: %d pool: %d\n",
             nranks, o->minBytes, o->maxBytes, o->stepFactor, o->warmup, o->iters, o->check,
             o->pool);
    printf("# density %g wire %s min-sparse %zu%s pipeline-bytes %zu\n", o->density,
           wireName(o->wireType), minSparse, o->minSparse < 0 ? " (library's)" : "", pipelineBytes);
    if (nlayers > 0) {
      size_t i, largest = 0;
      for (i = 0; i < nlayers; i++) largest = counts[i] > largest ? counts[i] : largest;
      printf("# layout: %zu layers, %zu elements, largest layer %zu\n", nlayers, total, largest);
    }
  }
  {
    /* Rank lines gathered to rank 0, so they print in order after the header. */
    char line[320];
    char* all = rank == 0 ? (char*)xmalloc(sizeof(line) * (size_t)nranks, "header") : NULL;
    snprintf(line, sizeof(line), "#  Rank %2d Pid %6d on %10s (host buffers)", rank,
             (int)getpid(), host);
    MPI_Gather(line, (int)sizeof(line), MPI_CHAR, all, (int)sizeof(line), MPI_CHAR, 0,
               MPI_COMM_WORLD);
    for (r = 0; rank == 0 && r < nranks; r++) printf("%s\n", all + (size_t)r * sizeof(line));
    free(all);
  }
  if (rank == 0) {
    printf("#\n");
    printf("#  time: the slowest rank's mean per call; compress / exchange / decompress: the\n"
           "#  library's split (sparcclCommGetStats), mean over ranks; GB/s of those: float32\n"
           "#  gradient bytes (count * 4) / time; wire: bytes each rank sends; ratio: dense / wire\n");
    printf("#%11s  %12s  %8s  %5s  %-18s %7s  %10s  %7s  %7s  %6s  %10s  %10s  %10s  %7s  %7s  %12s  %7s\n",
           "size", "count", "type", "redop", "method", "density", "time", "algbw", "busbw",
           "#wrong", "compress", "exchange", "decompress", "compr", "decomp", "wire", "ratio");
    printf("#%11s  %12s  %8s  %5s  %-18s %7s  %10s  %7s  %7s  %6s  %10s  %10s  %10s  %7s  %7s  %12s  %7s\n",
           "(B)", "(elements)", "", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(us)",
           "(us)", "(GB/s)", "(GB/s)", "(B/rank)", "");
    fflush(stdout);
  }
}

static void printBaseline(void) {
  int i;
  if (rank != 0 || nbaselineRows == 0) return;
  printf("#\n# Baseline: sparccl scam-topk compress against the plain SCAM-TopK of\n"
         "# tools/baseline_select.cc (a = e + g, (|a|, i) pairs, std::nth_element, std::sort of\n"
         "# the k by index, gather g), same gradients, same iterations, one core per rank.\n"
         "# Per call, mean over ranks; plain compress excludes its e update (sparccl does that\n"
         "# after the exchange), shown apart.  #wrong: elements where the rank-ordered sum of\n"
         "# the baseline's sent vectors differs from sparccl's output (-c 1).\n");
  printf("#%-23s  %-10s  %12s  %12s  %12s  %12s  %12s  %12s  %8s  %8s  %12s  %6s\n", "buffer",
         "method", "sparccl med", "sparccl min", "sparccl mean", "plain med", "plain min",
         "plain mean", "speedup", "(min)", "plain e-upd", "#wrong");
  printf("#%-23s  %-10s  %12s  %12s  %12s  %12s  %12s  %12s  %8s  %8s  %12s  %6s\n", "", "",
         "(us)", "(us)", "(us)", "(us)", "(us)", "(us)", "(med)", "", "(us)", "");
  for (i = 0; i < nbaselineRows; i++) {
    const BaselineRow* b = &baselineRows[i];
    char wrongText[24];
    if (b->wrong < 0) snprintf(wrongText, sizeof(wrongText), "N/A");
    else snprintf(wrongText, sizeof(wrongText), "%lld", b->wrong);
    printf(" %-23s  %-10s  %12.1f  %12.1f  %12.1f  %12.1f  %12.1f  %12.1f  %7.2fx  %7.2fx  %12.1f  %6s\n",
           b->label, b->method, b->sparcclMedian * 1e6, b->sparcclMin * 1e6,
           b->sparcclMean * 1e6, b->plainMedian * 1e6, b->plainMin * 1e6, b->plainMean * 1e6,
           b->sparcclMedian > 0 ? b->plainMedian / b->sparcclMedian : 0.0,
           b->sparcclMin > 0 ? b->plainMin / b->sparcclMin : 0.0, b->plainUpdateMean * 1e6,
           wrongText);
  }
}

static void printFloor(void) {
  int i;
  if (rank != 0 || nfloorRows == 0) return;
  printf("#\n# The whole call against the memory floor and the plain full call (issue 14), same\n"
         "# gradients, same run; medians per call of the slowest rank.  floor: one pass reading g\n"
         "# and e and writing e and the output (16 B/param); plain: tools/baseline_select.cc's\n"
         "# SCAM-TopK with its e update and this rank's dense output (float32 only).\n"
         "# x floor = call / floor (1.00x is the floor); plain / call = how much faster sparccl is.\n");
  printf("#%-23s  %-18s  %12s  %12s  %12s  %9s  %12s\n", "buffer", "method", "call med",
         "floor med", "plain med", "x floor", "plain / call");
  printf("#%-23s  %-18s  %12s  %12s  %12s  %9s  %12s\n", "", "", "(us)", "(us)", "(us)", "", "");
  for (i = 0; i < nfloorRows; i++) {
    const FloorRow* f = &floorRows[i];
    char plainText[16], speedText[16];
    if (f->plainMedian > 0) {
      snprintf(plainText, sizeof(plainText), "%12.1f", f->plainMedian * 1e6);
      snprintf(speedText, sizeof(speedText), "%11.2fx",
               f->callMedian > 0 ? f->plainMedian / f->callMedian : 0.0);
    } else {
      snprintf(plainText, sizeof(plainText), "%12s", "N/A");
      snprintf(speedText, sizeof(speedText), "%12s", "N/A");
    }
    printf(" %-23s  %-18s  %12.1f  %12.1f  %s  %8.2fx  %s\n", f->label, f->method,
           f->callMedian * 1e6, f->floorMedian * 1e6, plainText,
           f->floorMedian > 0 ? f->callMedian / f->floorMedian : 0.0, speedText);
  }
}

int main(int argc, char** argv) {
  Options o;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  parseOptions(argc, argv, &o);

  if (o.layoutPath) {
    tool_Layout layout;
    char label[64], msg[4200];
    int status = tool_readLayout(o.layoutPath, &layout);
    if (status != TOOL_LAYOUT_OK) {
      tool_layoutError(status, o.layoutPath, &layout, msg, sizeof(msg));
      DIE("%s\n", msg);
    }
    tool_layoutLabel(o.layoutPath, label, sizeof(label));
    printHeader(&o, layout.nlayers, layout.counts, layout.total);
    runBuffer(&o, label, layout.total, layout.nlayers, layout.counts);
    free(layout.counts);
  } else {
    size_t esize = sparccl_dtype_size(o.dtype), bytes;
    printHeader(&o, 0, NULL, 0);
    for (bytes = o.minBytes; bytes <= o.maxBytes;) {
      size_t count = bytes / esize, next;
      char label[64];
      if (count > 0) {
        snprintf(label, sizeof(label), "%zu B", count * esize);
        runBuffer(&o, label, count, 0, NULL);
      }
      next = (size_t)((double)bytes * o.stepFactor);
      if (next <= bytes) next = bytes + 1;
      bytes = next;
    }
  }
  printBaseline();
  printFloor();
  if (rank == 0) {
    printf("# Out of bounds values : %lld %s\n", totalWrong, totalWrong ? "FAILED" : "OK");
    printf("# Avg bus bandwidth    : %g\n", nrows ? busbwSum / nrows : 0.0);
    printf("#\n");
  }
  MPI_Finalize();
  return totalWrong ? 1 : 0;
}
