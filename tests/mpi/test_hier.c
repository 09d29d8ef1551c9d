/* The hierarchical exchange (docs/EXCHANGES.md 11.2, 11.4) at 1-4 ranks, nodes emulated
 * with ranksPerNode: one rank per node is the allgather exchange bitwise (every compressor
 * x feedback); with several, every rank's output is bitwise identical and equal to a
 * recomputation written here from MPI_Allgather of every rank's gradient (topk, every
 * feedback, warm-up, a NaN, a restart, empty shards); per-shard conservation read from a
 * state file; save/load and another topology; unequal nodes and other comms refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "sparccl_math.h" /* Philox (SPEC 3), for randk's words */

static int h_rank, h_size;

#define HCHECK(cond)                                                                     \
  ck_assert_msg(test_agree_all((cond) ? 1 : 0, #cond, "test_hier.c", __LINE__),          \
                "failed on some rank: %s", #cond)

static sparcclResult_t hierComm(sparcclConfig_t config, int exchange, int ranksPerNode,
                                sparcclComm_t* comm) {
  config.exchange = exchange;
  config.ranksPerNode = ranksPerNode;
  *comm = NULL;
  return sparcclCommInitMpi(comm, MPI_COMM_WORLD, &config);
}

static void fillGrad(float* g, size_t n, uint64_t seed, int smallInts) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 99u;
  size_t i;
  for (i = 0; i < n; i++)
    g[i] = smallInts ? (float)((int)(test_random_u64(&s) % 9) - 4)
                     : ldexpf(test_random_normal(&s), (int)(test_random_u64(&s) % 7) - 3);
}

/* The ranks per node the recomputation runs at: 2 at 2 and 4 ranks, 3 at 3, 1 alone. */
static int nodeSize(void) { return h_size == 3 ? 3 : (h_size % 2 == 0 ? 2 : 1); }

/* ---------------------------------------------------------------- L = 1 is the allgather */

static const int kCompressors[5] = {sparcclTopK, sparcclRandK, sparcclImpK, sparcclImpKSelect,
                                    sparcclImpKRandom};
static const int kFeedbacks[5] = {sparcclFeedbackNone, sparcclFeedbackEF, sparcclFeedbackEF21,
                                  sparcclFeedbackSCAM, sparcclFeedbackDGC};

/* 25 iterations: compressor x feedback; float32 or bfloat16 gradients and wire; warm-up,
 * in place, online importance, restarts by the output norm, a NaN, shared randomness. */
START_TEST(test_hier_one_rank_per_node_is_allgather) {
  static const size_t layout[5] = {5, 300, 7, 1200, 2};
  const size_t count = 1514;
  sparcclConfig_t config = test_config(kCompressors[_i / 5], kFeedbacks[_i % 5], _i % 3 ? 0.05 : 0.3, 6);
  sparcclComm_t flat, hier;
  int dtype = _i % 2 ? sparcclBfloat16 : sparcclFloat32, op = _i % 4 < 2 ? sparcclSum : sparcclAvg;
  size_t bytes = count * test_dtype_size(dtype), i;
  unsigned char *a = malloc(bytes), *b = malloc(bytes), *oa = malloc(bytes), *ob = malloc(bytes);
  float* g = malloc(count * sizeof(float));
  int step, same = 1;
  config.wireType = _i % 3 == 1 ? sparcclBfloat16 : sparcclFloat32;
  config.warmupSteps = (size_t)(_i % 3 == 2);
  config.sharedRandomness = _i % 7 == 1;
  config.seed = 0x41e0ull + (unsigned long long)_i;
  if (_i % 5 == 2 && _i / 5 == 2) config.importance = sparcclImportanceOnline;
  if (_i % 4 == 3) config.restartRatio = 1.01; /* the output norm decides restarts */
  HCHECK(hierComm(config, sparcclExchangeAllgather, 0, &flat) == sparcclSuccess);
  HCHECK(hierComm(config, sparcclExchangeHierarchical, 1, &hier) == sparcclSuccess);
  HCHECK(sparcclRegisterLayout(flat, a, 5, layout) == sparcclSuccess);
  HCHECK(sparcclRegisterLayout(hier, b, 5, layout) == sparcclSuccess);
  for (step = 0; step < 5; step++) {
    fillGrad(g, count, (uint64_t)(_i * 50 + step * 5 + h_rank), 0);
    if (step == 3 && h_rank == h_size - 1) g[400] = NAN;
    for (i = 0; i < count; i++) { test_store_value(a, i, dtype, g[i]); test_store_value(b, i, dtype, g[i]); }
    HCHECK(sparcclAllReduce(a, _i % 2 ? a : oa, count, dtype, op, flat, NULL) == sparcclSuccess);
    HCHECK(sparcclAllReduce(b, _i % 2 ? b : ob, count, dtype, op, hier, NULL) == sparcclSuccess);
    same &= memcmp(_i % 2 ? a : oa, _i % 2 ? b : ob, bytes) == 0;
  }
  HCHECK(same);
  HCHECK(sparcclCommDestroy(flat) == sparcclSuccess && sparcclCommDestroy(hier) == sparcclSuccess);
  free(a); free(b); free(oa); free(ob); free(g);
}
END_TEST

/* ---------------------------------------------------------------- the recomputation */

/* Every node's state over whole layers (rank (v, j) holds shard j of it), H per element. */
typedef struct {
  int compressor, feedback, op, L, N;
  unsigned long long seed;
  uint64_t steps[8]; /* each layer's completed steps: randk's Philox counter */
  size_t nlayers, count, minSparse, warmup, calls;
  const size_t* layout;
  double density;
  float momentum;
  float *e, *u, *h, *H; /* e, u, h: N * count; H: count */
} Recompute;

static void recomputeInit(Recompute* R, const sparcclConfig_t* c, int op, size_t nlayers,
                          const size_t* layout, size_t count) {
  memset(R, 0, sizeof(*R));
  R->compressor = c->compressor; R->seed = c->seed; R->feedback = c->feedback; R->op = op; R->L = nodeSize(); R->N = h_size / R->L;
  R->nlayers = nlayers; R->layout = layout; R->count = count; R->minSparse = c->minSparseCount;
  R->warmup = c->warmupSteps; R->density = c->density; R->momentum = (float)c->momentum;
  R->e = calloc((size_t)R->N * count, sizeof(float));
  R->u = calloc((size_t)R->N * count, sizeof(float));
  R->h = calloc((size_t)R->N * count, sizeof(float));
  R->H = calloc(count, sizeof(float));
}

static void recomputeFree(Recompute* R) { free(R->e); free(R->u); free(R->h); free(R->H); }

/* Restart (factor 0) or sparcclScaleState: e, u, h and H times factor. */
static void recomputeScale(Recompute* R, float factor) {
  size_t x, n = (size_t)R->N * R->count;
  for (x = 0; x < n; x++) {
    R->e[x] = factor == 0.0f ? 0.0f : R->e[x] * factor;
    R->u[x] = factor == 0.0f ? 0.0f : R->u[x] * factor;
    R->h[x] = factor == 0.0f ? 0.0f : R->h[x] * factor;
  }
  for (x = 0; x < R->count; x++) R->H[x] = factor == 0.0f ? 0.0f : R->H[x] * factor;
}

static size_t kOf(size_t d, double density) {
  size_t k = (size_t)ceil(density * (double)d);
  if (k < 1) k = 1;
  return d == 0 ? 0 : (k > d ? d : k);
}

/* qsort's keys: |a| (topk) or the Philox word (randk) descending, then the lower index */
static const float* g_keys;
static const uint32_t* g_words;
static int byKey(const void* x, const void* y) {
  size_t i = *(const size_t*)x, j = *(const size_t*)y;
  if (g_words != NULL) {
    if (g_words[i] != g_words[j]) return g_words[i] > g_words[j] ? -1 : 1;
  } else if (fabsf(g_keys[i]) != fabsf(g_keys[j])) {
    return fabsf(g_keys[i]) > fabsf(g_keys[j]) ? -1 : 1;
  }
  return i < j ? -1 : 1;
}

/* a (the key input) and the value sent of node v at element x, from G. */
static float keyInput(const Recompute* R, size_t at, float G, float* grad) {
  float u = R->momentum * R->u[at] + G;
  *grad = R->feedback == sparcclFeedbackDGC ? u : G;
  if (R->feedback == sparcclFeedbackEF || R->feedback == sparcclFeedbackSCAM) return R->e[at] + G;
  if (R->feedback == sparcclFeedbackDGC) return R->e[at] + u;
  if (R->feedback == sparcclFeedbackEF21) return G - R->h[at];
  return G;
}

/* One shard [lo, hi) of layer `id` (first element off) on node v: the top k by key; the
 * values sent into S; the state. */
static void sparseShard(Recompute* R, int v, size_t id, size_t off, size_t lo, size_t hi,
                        const float* G, float* S, float* a, uint32_t* words, size_t* order) {
  size_t n = hi - lo, k = kOf(n, R->density), t, x, base = (size_t)v * R->count;
  float grad[1], scale = R->compressor == sparcclRandK ? (float)n / (float)k : 1.0f;
  for (x = lo; x < hi; x++) {
    a[x] = keyInput(R, base + x, G[x], grad);
    order[x - lo] = x;
    words[x] = sparccl_random_word(R->seed, x - off, (uint32_t)id, R->steps[id], (uint32_t)v);
  }
  g_keys = a;
  g_words = R->compressor == sparcclRandK ? words : NULL;
  qsort(order, n, sizeof(size_t), byKey);
  for (x = lo; x < hi; x++) {
    float gx;
    (void)keyInput(R, base + x, G[x], &gx);
    if (R->feedback == sparcclFeedbackDGC) R->u[base + x] = gx;
    if (R->feedback != sparcclFeedbackNone && R->feedback != sparcclFeedbackEF21) R->e[base + x] = a[x];
  }
  for (t = 0; t < k; t++) {
    size_t at = order[t];
    float sent = scale * (R->feedback == sparcclFeedbackSCAM ? G[at] : a[at]);
    S[at] += sent;
    if (R->feedback != sparcclFeedbackNone && R->feedback != sparcclFeedbackEF21)
      R->e[base + at] = R->e[base + at] - sent;
    if (R->feedback == sparcclFeedbackDGC) R->u[base + at] = 0.0f;
    if (R->feedback == sparcclFeedbackEF21) R->h[base + at] += sent;
  }
}

/* Whether node v's a or x holds a NaN or Inf anywhere in layer [off, off + d). */
static int layerNonFinite(const Recompute* R, int dense, size_t off, size_t d, float* const* G) {
  size_t x;
  int v;
  for (v = 0; v < R->N; v++)
    for (x = off; x < off + d; x++) {
      float grad, a = keyInput(R, (size_t)v * R->count + x, G[v][x], &grad);
      if (!isfinite(dense ? grad : a)) return 1;
    }
  return 0;
}

/* A dense layer, or any layer in a dense call: x in float32, summed in node order; SPEC 9's
 * state in a dense call (h <- G, u <- x, H <- S / n), dgc's u in a sparse one. */
static void denseLayer(Recompute* R, int denseCall, size_t off, size_t d, float* const* G, float* S) {
  size_t x;
  int v;
  for (v = 0; v < R->N; v++)
    for (x = off; x < off + d; x++) {
      size_t at = (size_t)v * R->count + x;
      float grad;
      (void)keyInput(R, at, G[v][x], &grad);
      S[x] += grad;
      if (R->feedback == sparcclFeedbackDGC) R->u[at] = grad;
      if (denseCall && R->feedback == sparcclFeedbackEF21 && d >= R->minSparse) R->h[at] = G[v][x];
    }
}

/* The outputs of one call from every rank's gradient (all: h_size * count floats). */
static void recomputeStep(Recompute* R, const float* all, float* out, float** G, float* a,
                          uint32_t* words, size_t* order) {
  const float n = (float)h_size;
  size_t i, x, off = 0;
  int v, j, denseCall = R->calls++ < R->warmup;
  for (v = 0; v < R->N; v++)
    for (x = 0; x < R->count; x++) {
      G[v][x] = +0.0f;
      for (j = 0; j < R->L; j++) G[v][x] = G[v][x] + all[(size_t)(v * R->L + j) * R->count + x];
    }
  for (i = 0; i < R->nlayers; off += R->layout[i++]) {
    size_t d = R->layout[i];
    int sparse = d >= R->minSparse, flagged = sparse || R->feedback == sparcclFeedbackDGC;
    for (x = off; x < off + d; x++) out[x] = +0.0f;
    if (flagged && layerNonFinite(R, denseCall || !sparse, off, d, G)) {
      for (x = off; x < off + d; x++) out[x] = NAN;
      continue;
    }
    if (denseCall || !sparse) denseLayer(R, denseCall, off, d, G, out);
    else
      for (v = 0; v < R->N; v++)
        for (j = 0; j < R->L; j++)
          sparseShard(R, v, i, off, off + (size_t)j * d / (size_t)R->L,
                      off + (size_t)(j + 1) * d / (size_t)R->L, G[v], out, a, words, order);
    if (flagged) R->steps[i]++;
    for (x = off; x < off + d; x++) {
      int ef21 = R->feedback == sparcclFeedbackEF21 && sparse;
      if (ef21 && denseCall) R->H[x] = out[x] / n;
      if (ef21 && !denseCall) { R->H[x] = R->H[x] + out[x] / n; out[x] = R->op == sparcclSum ? R->H[x] * n : R->H[x]; }
      else out[x] = R->op == sparcclSum ? out[x] : out[x] / n;
    }
  }
}

/* NaNs compare by class: the library writes the canonical NaN, the recomputation any. */
static int sameBits(const float* a, const float* b, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (!(isnan(a[i]) && isnan(b[i])) && memcmp(&a[i], &b[i], sizeof(float)) != 0) return 0;
  return 1;
}

/* 20 iterations: topk and randk under each feedback, SUM and AVG, warm-up on some; a NaN on
 * the last rank at step 2, a restart at step 4, the state halved at step 6; layers of 1 and
 * 2 elements give empty shards. */
START_TEST(test_hier_matches_recomputation) {
  static const size_t layout[6] = {1, 300, 7, 1200, 2, 3};
  const size_t count = 1513;
  sparcclConfig_t config = test_config(_i < 10 ? sparcclTopK : sparcclRandK, kFeedbacks[_i % 5],
                                       _i % 10 < 5 ? 0.05 : 0.4, 2);
  int op = _i % 2 ? sparcclAvg : sparcclSum, step, r, identical = 1, equal = 1;
  float *g = malloc(count * 4), *out = malloc(count * 4), *want = malloc(count * 4);
  float *all = malloc((size_t)h_size * count * 4), *allOut = malloc((size_t)h_size * count * 4);
  float *a = malloc(count * 4), *G[4];
  size_t* order = malloc(count * sizeof(size_t));
  uint32_t* words = malloc(count * sizeof(uint32_t));
  sparcclComm_t comm;
  Recompute R;
  config.warmupSteps = (size_t)(_i % 3);
  config.momentum = 0.5;
  config.seed = 0x5eed00ull + (unsigned long long)_i;
  HCHECK(hierComm(config, sparcclExchangeHierarchical, nodeSize(), &comm) == sparcclSuccess);
  HCHECK(sparcclRegisterLayout(comm, g, 6, layout) == sparcclSuccess);
  recomputeInit(&R, &config, op, 6, layout, count);
  for (r = 0; r < 4; r++) G[r] = malloc(count * 4);
  for (step = 0; step < 8; step++) {
    fillGrad(g, count, (uint64_t)(_i * 64 + step * 8 + h_rank), 0);
    if (step == 2 && h_rank == h_size - 1) g[700] = NAN;
    if (step == 4) { HCHECK(sparcclRestart(comm) == sparcclSuccess); recomputeScale(&R, 0.0f); }
    if (step == 6) { HCHECK(sparcclScaleState(comm, 0.5f) == sparcclSuccess); recomputeScale(&R, 0.5f); }
    MPI_Allgather(g, (int)count, MPI_FLOAT, all, (int)count, MPI_FLOAT, MPI_COMM_WORLD);
    HCHECK(sparcclAllReduce(g, out, count, sparcclFloat32, op, comm, NULL) == sparcclSuccess);
    MPI_Allgather(out, (int)count, MPI_FLOAT, allOut, (int)count, MPI_FLOAT, MPI_COMM_WORLD);
    for (r = 0; r < h_size; r++) identical &= memcmp(allOut + (size_t)r * count, out, count * 4) == 0;
    recomputeStep(&R, all, want, G, a, words, order);
    equal &= sameBits(out, want, count);
    if (!sameBits(out, want, count))
      fprintf(stderr, "[rank %d] step %d: first difference at %ld\n", h_rank, step,
              test_first_difference(out, want, count));
    if (step == 2) equal &= isnan(out[308]) && isnan(out[1507]) && !isnan(out[200]);
  }
  HCHECK(identical);
  HCHECK(equal);
  HCHECK(sparcclCommDestroy(comm) == sparcclSuccess);
  recomputeFree(&R);
  for (r = 0; r < 4; r++) free(G[r]);
  free(g); free(out); free(want); free(all); free(allOut); free(a); free(order); free(words);
}
END_TEST

/* ---------------------------------------------------------------- state */

static void uniquePath(char* path, size_t n, const char* what) {
  int pid = (int)getpid();
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  snprintf(path, n, "/tmp/sparccl_hier_%s_%d_%d.state", what, pid, h_rank);
}

static unsigned char* slurp(const char* path, long* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* data = NULL;
  *size = -1;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (*size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
    data = malloc((size_t)*size);
    if (data != NULL && fread(data, 1, (size_t)*size, f) != (size_t)*size) { free(data); data = NULL; }
  }
  fclose(f);
  return data;
}

/* ef and scam, small integers: the column's e (the last floats before the state file's
 * checksum: one layer, e its only array, over this rank's shard) is what the column's
 * node sums put in minus what came out, exactly: sum_v e_(v,j) = sum_t (sum_r g_r - out). */
START_TEST(test_hier_shard_conservation) {
  const size_t d = 5000;
  const int L = nodeSize(), j = h_rank % L;
  const size_t lo = (size_t)j * d / (size_t)L, hi = (size_t)(j + 1) * d / (size_t)L;
  sparcclConfig_t config = test_config(sparcclTopK, _i ? sparcclFeedbackSCAM : sparcclFeedbackEF, 0.01, 100);
  const size_t d2 = 3001, lo2 = (size_t)j * d2 / (size_t)L, hi2 = (size_t)(j + 1) * d2 / (size_t)L;
  float *g = malloc(d * 4), *out = malloc(d * 4), *left = calloc(d, 4);
  float* column = malloc(d * 4);
  double* balance = calloc(d, sizeof(double));
  sparcclStats_t before, after;
  sparcclComm_t comm;
  char path[256];
  long size;
  unsigned char* data;
  size_t x;
  int step, ok = 1;
  MPI_Comm col;
  HCHECK(hierComm(config, sparcclExchangeHierarchical, L, &comm) == sparcclSuccess);
  HCHECK(sparcclRegisterLayout(comm, g, 1, &d) == sparcclSuccess);
  /* a smaller second key grows no scratch: the state it adds is e over its shard only, and
   * its restart history (restartLag + 1 doubles) */
  HCHECK(sparcclCommGetStats(comm, &before) == sparcclSuccess);
  HCHECK(sparcclRegisterLayout(comm, out, 1, &d2) == sparcclSuccess);
  HCHECK(sparcclCommGetStats(comm, &after) == sparcclSuccess);
  HCHECK(after.stateBytes - before.stateBytes == (hi2 - lo2) * 4 + 2 * sizeof(double));
  HCHECK(sparcclRelease(comm, out, d2) == sparcclSuccess);
  for (step = 0; step < 6; step++) {
    fillGrad(g, d, (uint64_t)(900 + step * 3 + h_rank), 1);
    for (x = 0; x < d; x++) balance[x] += g[x];
    HCHECK(sparcclAllReduce(g, out, d, sparcclFloat32, sparcclSum, comm, NULL) == sparcclSuccess);
    for (x = 0; x < d && h_rank == 0; x++) balance[x] -= (double)out[x]; /* out: the same everywhere */
  }
  uniquePath(path, sizeof(path), "conserve");
  HCHECK(sparcclSaveState(comm, path) == sparcclSuccess);
  data = slurp(path, &size);
  HCHECK(data != NULL && size > (long)((hi - lo) * 4 + 8));
  memcpy(left, data + size - 8 - (long)((hi - lo) * 4), (hi - lo) * 4);
  /* per column: sum of e over its nodes == sum over its shard's ranks of the balance */
  MPI_Comm_split(MPI_COMM_WORLD, j, h_rank, &col);
  MPI_Allreduce(MPI_IN_PLACE, balance, (int)d, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(left, column, (int)(hi - lo), MPI_FLOAT, MPI_SUM, col);
  for (x = lo; x < hi; x++) ok &= (double)column[x - lo] == balance[x];
  HCHECK(ok);
  MPI_Comm_free(&col);
  remove(path);
  HCHECK(sparcclCommDestroy(comm) == sparcclSuccess);
  free(g); free(out); free(left); free(column); free(balance); free(data);
}
END_TEST

/* Save, load into a twin comm, one more step on both: bitwise the same.  The file is
 * refused on every rank by a comm with another ranksPerNode, and by the allgather. */
START_TEST(test_hier_save_load_and_topology) {
  static const size_t layout[2] = {900, 40};
  const size_t count = 940;
  sparcclConfig_t config = test_config(sparcclTopK, kFeedbacks[1 + _i], 0.05, 50);
  float *g = malloc(count * 4), *twin = malloc(count * 4), *o1 = malloc(count * 4), *o2 = malloc(count * 4);
  sparcclComm_t comm, copy, other, flat;
  char path[256];
  int step, L = nodeSize();
  HCHECK(hierComm(config, sparcclExchangeHierarchical, L, &comm) == sparcclSuccess);
  HCHECK(hierComm(config, sparcclExchangeHierarchical, L, &copy) == sparcclSuccess);
  HCHECK(sparcclRegisterLayout(comm, g, 2, layout) == sparcclSuccess);
  HCHECK(sparcclRegisterLayout(copy, twin, 2, layout) == sparcclSuccess);
  for (step = 0; step < 3; step++) {
    fillGrad(g, count, (uint64_t)(77 + step + 10 * h_rank), 0);
    HCHECK(sparcclAllReduce(g, o1, count, sparcclFloat32, sparcclSum, comm, NULL) == sparcclSuccess);
  }
  uniquePath(path, sizeof(path), "saveload");
  HCHECK(sparcclSaveState(comm, path) == sparcclSuccess);
  HCHECK(sparcclLoadState(copy, path) == sparcclSuccess);
  fillGrad(g, count, (uint64_t)(5 + h_rank), 0);
  memcpy(twin, g, count * 4);
  HCHECK(sparcclAllReduce(g, o1, count, sparcclFloat32, sparcclSum, comm, NULL) == sparcclSuccess);
  HCHECK(sparcclAllReduce(twin, o2, count, sparcclFloat32, sparcclSum, copy, NULL) == sparcclSuccess);
  HCHECK(memcmp(o1, o2, count * 4) == 0);
  if (h_size > 1) { /* another topology of the same ranks */
    HCHECK(hierComm(config, sparcclExchangeHierarchical, L == 1 ? h_size : 1, &other) == sparcclSuccess);
    HCHECK(sparcclRegisterLayout(other, twin, 2, layout) == sparcclSuccess);
    HCHECK(sparcclLoadState(other, path) == sparcclInvalidUsage);
    HCHECK(sparcclCommDestroy(other) == sparcclSuccess);
  }
  HCHECK(hierComm(config, sparcclExchangeAllgather, 0, &flat) == sparcclSuccess);
  HCHECK(sparcclRegisterLayout(flat, twin, 2, layout) == sparcclSuccess);
  HCHECK(sparcclLoadState(flat, path) == sparcclInvalidUsage);
  remove(path);
  HCHECK(sparcclCommDestroy(flat) == sparcclSuccess && sparcclCommDestroy(comm) == sparcclSuccess);
  HCHECK(sparcclCommDestroy(copy) == sparcclSuccess);
  free(g); free(twin); free(o1); free(o2);
}
END_TEST

/* Nodes of different sizes (r / ranksPerNode: 3 ranks as 2 + 1, 4 as 3 + 1) are refused on
 * every rank; at 1 and 2 ranks no ranksPerNode makes them unequal. */
START_TEST(test_hier_unequal_nodes_refused) {
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.05, 50);
  sparcclComm_t comm;
  if (h_size < 3) return;
  HCHECK(hierComm(config, sparcclExchangeHierarchical, h_size - 1, &comm) == sparcclInvalidUsage);
  HCHECK(comm == NULL);
}
END_TEST

static int gatherByMpi(const void* send, void* recv, size_t bytes, void* user) {
  (void)user;
  return MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
}

/* Comms without a node topology (a callback comm) are refused; the ImpK family with several
 * ranks per node too, and a pipelined hierarchical comm; the phase API on one. */
START_TEST(test_hier_refusals) {
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.05, 50);
  sparcclComm_t comm = NULL;
  size_t bytes, d = 100;
  config.exchange = sparcclExchangeHierarchical;
  HCHECK(sparcclCommInitCallback(&comm, h_size, h_rank, gatherByMpi, NULL, &config) == sparcclNotSupported);
  if (nodeSize() > 1) {
    config.compressor = sparcclImpK;
    HCHECK(hierComm(config, sparcclExchangeHierarchical, nodeSize(), &comm) == sparcclNotSupported);
    config.compressor = sparcclTopK;
  }
  config.pipelineBytes = 4096;
  HCHECK(hierComm(config, sparcclExchangeHierarchical, nodeSize(), &comm) == sparcclNotSupported);
  config.pipelineBytes = SPARCCL_CONFIG_UNDEF_SIZE;
  HCHECK(hierComm(config, sparcclExchangeHierarchical, nodeSize(), &comm) == sparcclSuccess);
  HCHECK(sparcclRegisterLayoutTagged(comm, 7, 1, &d) == sparcclSuccess);
  HCHECK(sparcclBlockBytesTagged(comm, 7, &bytes) == sparcclNotSupported);
  HCHECK(sparcclCommDestroy(comm) == sparcclSuccess);
}
END_TEST

/* ranksPerNode 0: the nodes from MPI_COMM_TYPE_SHARED (here one host: one node of every
 * rank), bitwise the comm that says so with ranksPerNode = n. */
START_TEST(test_hier_nodes_from_the_communicator) {
  const size_t count = 3000;
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.02, 100);
  float *g = malloc(count * 4), *o1 = malloc(count * 4), *o2 = malloc(count * 4);
  sparcclComm_t shared, explicit;
  int step, same = 1;
  HCHECK(hierComm(config, sparcclExchangeHierarchical, 0, &shared) == sparcclSuccess);
  HCHECK(hierComm(config, sparcclExchangeHierarchical, h_size, &explicit) == sparcclSuccess);
  for (step = 0; step < 3; step++) {
    fillGrad(g, count, (uint64_t)(300 + step + 7 * h_rank), 0);
    HCHECK(sparcclAllReduce(g, o1, count, sparcclFloat32, sparcclSum, shared, NULL) == sparcclSuccess);
    HCHECK(sparcclAllReduce(g, o2, count, sparcclFloat32, sparcclSum, explicit, NULL) == sparcclSuccess);
    same &= memcmp(o1, o2, count * 4) == 0;
  }
  HCHECK(same);
  HCHECK(sparcclCommDestroy(shared) == sparcclSuccess && sparcclCommDestroy(explicit) == sparcclSuccess);
  free(g); free(o1); free(o2);
}
END_TEST

/* One rank's call disagrees (AVG against SUM, or another key of the same size): refused on
 * every rank, nothing written, the state as it was (the next call equals a twin's that never
 * saw the bad one).  Needs two ranks. */
START_TEST(test_hier_disagreeing_call_refused_everywhere) {
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.02, 100);
  config.exchange = sparcclExchangeHierarchical;
  config.ranksPerNode = nodeSize();
  if (h_size >= 2) HCHECK(test_disagreeing_call(&config, _i, "test_hier.c"));
}
END_TEST

Suite* make_hier_suite(int rank, int size) {
  Suite* s = suite_create("hierarchical");
  TCase* tc = tcase_create("hierarchical exchange");
  h_rank = rank;
  h_size = size;
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, test_hier_one_rank_per_node_is_allgather, 0, 25);
  tcase_add_loop_test(tc, test_hier_matches_recomputation, 0, 20);
  tcase_add_loop_test(tc, test_hier_shard_conservation, 0, 2);
  tcase_add_loop_test(tc, test_hier_save_load_and_topology, 0, 2);
  tcase_add_test(tc, test_hier_unequal_nodes_refused);
  tcase_add_test(tc, test_hier_refusals);
  tcase_add_test(tc, test_hier_nodes_from_the_communicator);
  tcase_add_loop_test(tc, test_hier_disagreeing_call_refused_everywhere, 0, 2);
  suite_add_tcase(s, tc);
  return s;
}
