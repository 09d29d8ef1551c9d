/* The split exchange (docs/EXCHANGES.md 11.3, 11.4) at 1-4 ranks: every rank's output
 * bitwise identical and equal to a recomputation written here from MPI_Allgather of every
 * rank's gradient (topk; ef, scam, dgc, none; capacity overflow, moving regions, warm-up, a
 * NaN); whole-job conservation and the received volume; n = 1 is the allgather bitwise;
 * restarts reset the regions; save/load and another exchange; refusals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"

static int s_rank, s_size;

#define SCHECK(cond)                                                                     \
  ck_assert_msg(test_agree_all((cond) ? 1 : 0, #cond, "test_split.c", __LINE__),         \
                "failed on some rank: %s", #cond)

static sparcclResult_t splitComm(sparcclConfig_t config, int exchange, MPI_Comm over,
                                 sparcclComm_t* comm) {
  config.exchange = exchange;
  *comm = NULL;
  return sparcclCommInitMpi(comm, over, &config);
}

/* Normal values at mixed scales, or small integers; `crowd` makes [0, d / 8) of every
 * layer 1000 times larger (every rank's top-k in the first region: capacity overflow). */
static void fillGrad(float* g, size_t n, uint64_t seed, int smallInts, int crowd) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 7u;
  size_t i;
  for (i = 0; i < n; i++) {
    g[i] = smallInts ? (float)((int)(test_random_u64(&s) % 9) - 4)
                     : ldexpf(test_random_normal(&s), (int)(test_random_u64(&s) % 7) - 3);
    if (crowd && i % 3000 < 375) g[i] *= 1000.0f;
  }
}

/* ---------------------------------------------------------------- the recomputation */

#define MAXR 8
typedef struct {
  int feedback, op, n;
  size_t nlayers, count, minSparse, warmup, calls;
  const size_t* layout;
  double density, slack;
  float momentum;
  float *e, *u;            /* n * count */
  uint32_t bounds[4][MAXR + 1];
} Recompute;

static void recomputeInit(Recompute* R, const sparcclConfig_t* c, int op, size_t nlayers,
                          const size_t* layout, size_t count) {
  memset(R, 0, sizeof(*R));
  R->feedback = c->feedback; R->op = op; R->n = s_size; R->nlayers = nlayers; R->layout = layout;
  R->count = count; R->minSparse = c->minSparseCount; R->warmup = c->warmupSteps;
  R->density = c->density; R->slack = c->splitSlack; R->momentum = (float)c->momentum;
  R->e = calloc((size_t)s_size * count, sizeof(float));
  R->u = calloc((size_t)s_size * count, sizeof(float));
}

static void recomputeFree(Recompute* R) { free(R->e); free(R->u); }

static void resetBounds(Recompute* R) {
  size_t l, j;
  for (l = 0; l < R->nlayers; l++)
    for (j = 0; j <= (size_t)R->n; j++) R->bounds[l][j] = (uint32_t)(j * R->layout[l] / (size_t)R->n);
}

static size_t kOf(size_t d, double density) {
  size_t k = (size_t)ceil(density * (double)d);
  return k < 1 ? 1 : (k > d ? d : k);
}

/* qsort: |key| descending, then the lower index */
static const float* g_keys;
static int byKey(const void* x, const void* y) {
  size_t i = *(const size_t*)x, j = *(const size_t*)y;
  if (fabsf(g_keys[i]) != fabsf(g_keys[j])) return fabsf(g_keys[i]) > fabsf(g_keys[j]) ? -1 : 1;
  return i < j ? -1 : 1;
}
static int ascending(const void* x, const void* y) {
  size_t i = *(const size_t*)x, j = *(const size_t*)y;
  return i < j ? -1 : (i > j);
}

/* The c largest |keys[at[t]]| of the m positions at (ties low), ascending again. */
static size_t largest(const float* keys, size_t* at, size_t m, size_t c) {
  g_keys = keys;
  qsort(at, m, sizeof(size_t), byKey);
  if (m > c) m = c;
  qsort(at, m, sizeof(size_t), ascending);
  return m;
}

/* One rank's key input a (x of SPEC 1) and value at element i of the buffer; *u1 its u. */
static float keyInput(const Recompute* R, const float* G, size_t r, size_t i, float* u1) {
  float g = G[r * R->count + i], e = R->e[r * R->count + i];
  *u1 = R->feedback == sparcclFeedbackDGC ? R->momentum * R->u[r * R->count + i] + g : g;
  return R->feedback == sparcclFeedbackNone ? g : e + *u1;
}

/* The pairs rank r sends owner j (11.3 steps 1-2): marks sent[] with their values. */
static void splitOf(const Recompute* R, const float* G, size_t r, size_t li, size_t off, size_t d,
                    float* x, size_t* at, float* sent, unsigned char* isSent) {
  size_t k = kOf(d, R->density), n = (size_t)R->n, C = (size_t)ceil(R->slack * (double)k / (double)n);
  size_t i, m, t, j, p0 = 0;
  float u1;
  for (i = 0; i < d; i++) { x[i] = keyInput(R, G, r, off + i, &u1); at[i] = i; }
  m = largest(x, at, d, k);
  for (j = 0; j < n; j++) {
    size_t p1 = p0, c;
    while (p1 < m && at[p1] < R->bounds[li][j + 1]) p1++;
    c = largest(x, at + p0, p1 - p0, C);
    for (t = p0; t < p0 + c; t++) {
      float v = R->feedback == sparcclFeedbackSCAM ? G[r * R->count + off + at[t]] : x[at[t]];
      isSent[r * d + at[t]] = 1;
      sent[r * d + at[t]] = v;
    }
    qsort(at + p0, p1 - p0, sizeof(size_t), ascending); /* the rest, back in index order */
    p0 = p1;
  }
}

/* Every rank's new e and u after sending (e <- a - sent, dgc's masking). */
static void updateSenders(Recompute* R, const float* G, size_t off, size_t d, const float* sent,
                          const unsigned char* isSent) {
  size_t r, i;
  for (r = 0; r < (size_t)R->n; r++)
    for (i = 0; i < d; i++) {
      float u1, a = keyInput(R, G, r, off + i, &u1);
      size_t at = r * R->count + off + i;
      if (R->feedback != sparcclFeedbackNone) R->e[at] = isSent[r * d + i] ? a - sent[r * d + i] : a;
      if (R->feedback == sparcclFeedbackDGC) R->u[at] = isSent[r * d + i] ? 0.0f : u1;
    }
}

/* The regions of the next call from the n x 16 demand counts. */
static void nextBounds(Recompute* R, size_t li, const unsigned long long* demand) {
  unsigned long long total = 0, run = 0;
  size_t n = (size_t)R->n, o, m, j = 1;
  uint32_t nb[MAXR + 1];
  for (o = 0; o < n * 16; o++) total += demand[o];
  if (total == 0) return;
  for (o = 0; o < n; o++)
    for (m = 0; m < 16; m++) {
      uint32_t b = R->bounds[li][o], b1 = R->bounds[li][o + 1];
      run += demand[o * 16 + m];
      for (; j < n && run >= (j * total + n - 1) / n; j++) nb[j] = b + (uint32_t)(m * (b1 - b) / 16);
    }
  for (j = 1; j < n; j++) R->bounds[li][j] = nb[j];
}

/* One sparse layer of a sparse call: out, and every rank's state. */
static void recomputeSparse(Recompute* R, const float* G, size_t li, size_t off, size_t d, float* out) {
  size_t n = (size_t)R->n, k = kOf(d, R->density), K = (k + n - 1) / n, r, i, j, m;
  float *x = malloc(d * 4), *sent = calloc(n * d, 4), *Rv = calloc(d, 4);
  size_t* at = malloc(d * sizeof(size_t));
  unsigned char* isSent = calloc(n * d, 1);
  unsigned long long demand[MAXR * 16];
  int finite = 1;
  float u1;
  for (r = 0; r < n; r++)
    for (i = 0; i < d; i++) finite &= isfinite(keyInput(R, G, r, off + i, &u1)) != 0;
  for (i = 0; finite && i < d; i++) out[i] = +0.0f;
  for (r = 0; finite && r < n; r++) splitOf(R, G, r, li, off, d, x, at, sent, isSent);
  for (r = 0; finite && r < n; r++) /* R = +0.0f; R = R + sent_r in rank order */
    for (i = 0; i < d; i++) if (isSent[r * d + i]) Rv[i] += sent[r * d + i];
  for (i = 0; finite && i < d; i++) finite &= isfinite(Rv[i]) != 0;
  if (!finite) {
    for (i = 0; i < d; i++) out[i] = NAN;
    free(x); free(sent); free(Rv); free(at); free(isSent);
    return;
  }
  updateSenders(R, G, off, d, sent, isSent);
  memset(demand, 0, sizeof(demand));
  for (j = 0; j < n; j++) {
    uint32_t b = R->bounds[li][j], b1 = R->bounds[li][j + 1];
    size_t c;
    for (i = b; i < b1; i++) at[i - b] = i;
    c = largest(Rv, at, b1 - b, K);
    for (i = b, m = 0; i < b1; i++) {
      int survives = m < c && at[m] == i;
      if (R->feedback != sparcclFeedbackNone) R->e[j * R->count + off + i] += survives ? Rv[i] - Rv[i] : Rv[i];
      if (survives) { out[i] = R->op == sparcclAvg ? Rv[i] / (float)n : Rv[i]; m++; }
      for (r = 0; r < n; r++) /* the bin of i in region j */
        if (isSent[r * d + i]) {
          size_t bin = 15;
          while (b + (uint32_t)(bin * (b1 - b) / 16) > i) bin--;
          demand[j * 16 + bin]++;
        }
    }
  }
  nextBounds(R, li, demand);
  free(x); free(sent); free(Rv); free(at); free(isSent);
}

/* A layer sent whole (a dense layer, or any layer of a warm-up call): the rank-ordered sum
 * of x (dgc: u <- x); a dgc layer with a NaN or Inf anywhere is skipped. */
static void recomputeDense(Recompute* R, const float* G, size_t off, size_t d, float* out) {
  size_t r, i;
  int finite = 1, dgc = R->feedback == sparcclFeedbackDGC;
  for (r = 0; dgc && r < (size_t)R->n; r++)
    for (i = 0; i < d; i++) finite &= isfinite(R->momentum * R->u[r * R->count + off + i] + G[r * R->count + off + i]) != 0;
  for (i = 0; i < d; i++) {
    float s = +0.0f;
    for (r = 0; r < (size_t)R->n; r++) {
      float x = dgc ? R->momentum * R->u[r * R->count + off + i] + G[r * R->count + off + i] : G[r * R->count + off + i];
      if (dgc && finite) R->u[r * R->count + off + i] = x;
      s += x;
    }
    out[off + i] = !finite ? NAN : (R->op == sparcclAvg ? s / (float)R->n : s);
  }
}

static void recomputeCall(Recompute* R, const float* G, float* out) {
  size_t l, off = 0;
  int dense = R->calls < R->warmup;
  for (l = 0; l < R->nlayers; l++) {
    size_t d = R->layout[l];
    if (dense || d < R->minSparse) recomputeDense(R, G, off, d, out);
    else recomputeSparse(R, G, l, off, d, out + off);
    off += d;
  }
  R->calls++;
}

/* ---------------------------------------------------------------- state files */

static void uniquePath(char* path, size_t n, const char* what) {
  int pid = (int)getpid();
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  snprintf(path, n, "/tmp/sparccl_split_%s_%d_%d.state", what, pid, s_rank);
}

/* The last `floats` floats before the state file's 8-byte checksum: the set's stateMemory
 * ends with e (one sparse layer, ef or scam) and then every sparse layer's n + 1 bounds. */
static int stateTail(sparcclComm_t comm, const char* what, void* dst, size_t floats) {
  char path[256];
  FILE* f;
  long size;
  int ok = 0;
  uniquePath(path, sizeof(path), what);
  if (sparcclSaveState(comm, path) != sparcclSuccess || (f = fopen(path, "rb")) == NULL) return 0;
  if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > (long)(floats * 4 + 8) &&
      fseek(f, size - 8 - (long)(floats * 4), SEEK_SET) == 0)
    ok = fread(dst, 4, floats, f) == floats;
  fclose(f);
  remove(path);
  return ok;
}

/* ---------------------------------------------------------------- the tests */

static const int kFeedbacks[4] = {sparcclFeedbackEF, sparcclFeedbackSCAM, sparcclFeedbackDGC,
                                  sparcclFeedbackNone};

/* 12 iterations: feedback x op; crowded gradients (capacity overflow, moving regions) from
 * 4 on, splitSlack 1 from 8 on; a warm-up call every third; in place on odd ones; a NaN
 * on the last rank at step 4.  Every step: the output equals rank 0's bitwise and the recomputation's; at the end
 * the regions equal the recomputation's (read from a state file). */
START_TEST(test_split_matches_recomputation) {
  static const size_t layout[3] = {3000, 60, 1500};
  const size_t count = 4560, n = (size_t)s_size;
  sparcclConfig_t config = test_config(sparcclTopK, kFeedbacks[_i % 4], 0.02, 100);
  int op = (_i / 4) % 2 ? sparcclAvg : sparcclSum, crowd = _i >= 4, step, same = 1, equal = 1;
  float *g = malloc(count * 4), *out = malloc(count * 4), *first = malloc(count * 4);
  float *G = malloc(n * count * 4), *want = malloc(count * 4);
  uint32_t bounds[2 * (MAXR + 1)];
  Recompute R;
  sparcclComm_t comm;
  size_t j;
  config.splitSlack = _i >= 8 ? 1.0 : 2.0;
  config.warmupSteps = _i % 3 == 0;
  recomputeInit(&R, &config, op, 3, layout, count);
  resetBounds(&R);
  SCHECK(splitComm(config, sparcclExchangeSplit, MPI_COMM_WORLD, &comm) == sparcclSuccess);
  SCHECK(sparcclRegisterLayout(comm, g, 3, layout) == sparcclSuccess);
  for (step = 0; step < 7; step++) {
    fillGrad(g, count, (uint64_t)(_i * 100 + step * 10 + s_rank), 0, crowd);
    if (step == 4 && s_rank == s_size - 1) g[10] = NAN;
    MPI_Allgather(g, (int)count, MPI_FLOAT, G, (int)count, MPI_FLOAT, MPI_COMM_WORLD);
    SCHECK(sparcclAllReduce(g, _i % 2 ? g : out, count, sparcclFloat32, op, comm, NULL) == sparcclSuccess);
    if (_i % 2) memcpy(out, g, count * 4); /* in place on odd iterations */
    memcpy(first, out, count * 4);
    MPI_Bcast(first, (int)count, MPI_FLOAT, 0, MPI_COMM_WORLD);
    same &= memcmp(first, out, count * 4) == 0;
    recomputeCall(&R, G, want);
    equal &= test_mismatch(out, want, count, sparcclFloat32) < 0;
  }
  SCHECK(same);
  SCHECK(equal);
  SCHECK(stateTail(comm, "bounds", bounds, 2 * (n + 1)));
  for (j = 0; j <= n; j++) equal &= bounds[j] == R.bounds[0][j] && bounds[n + 1 + j] == R.bounds[2][j];
  SCHECK(equal);
  if (crowd && s_size > 1) SCHECK(bounds[1] < 3000 / n); /* region 0 shrank toward the demand */
  SCHECK(sparcclCommDestroy(comm) == sparcclSuccess);
  recomputeFree(&R);
  free(g); free(out); free(first); free(G); free(want);
}
END_TEST

/* ef and scam, small integers: the sum over ranks of e equals the sum over calls and ranks
 * of g minus the outputs, exactly; every call's received pairs are at most 6k(n - 1)/n
 * words (k = 120 divisible by n, so C = 2k / n and K = k / n exactly). */
START_TEST(test_split_conservation_and_volume) {
  const size_t d = 6000, n = (size_t)s_size, k = 120;
  sparcclConfig_t config = test_config(sparcclTopK, _i ? sparcclFeedbackSCAM : sparcclFeedbackEF, 0.02, 100);
  float *g = malloc(d * 4), *out = malloc(d * 4), *e = malloc((d + n + 1) * 4), *sum = malloc(d * 4);
  double* balance = calloc(d, sizeof(double));
  unsigned long long received = 0;
  sparcclStats_t before, after;
  sparcclComm_t comm;
  int step, ok = 1, bounded = 1;
  size_t x;
  SCHECK(splitComm(config, sparcclExchangeSplit, MPI_COMM_WORLD, &comm) == sparcclSuccess);
  for (step = 0; step < 8; step++) {
    fillGrad(g, d, (uint64_t)(500 + step * 7 + s_rank), 1, step % 2);
    for (x = 0; x < d; x++) balance[x] += g[x];
    SCHECK(sparcclCommGetStats(comm, &before) == sparcclSuccess);
    SCHECK(sparcclAllReduce(g, out, d, sparcclFloat32, sparcclSum, comm, NULL) == sparcclSuccess);
    SCHECK(sparcclCommGetStats(comm, &after) == sparcclSuccess);
    bounded &= 2 * (after.pairsReceived - before.pairsReceived) * n <= 6 * k * (n - 1);
    received += after.pairsReceived - before.pairsReceived;
    for (x = 0; x < d && s_rank == 0; x++) balance[x] -= (double)out[x];
  }
  SCHECK(bounded);
  SCHECK(s_size == 1 ? received == 0 : received > 0);
  SCHECK(stateTail(comm, "conserve", e, d + n + 1));
  MPI_Allreduce(MPI_IN_PLACE, balance, (int)d, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(e, sum, (int)d, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  for (x = 0; x < d; x++) ok &= (double)sum[x] == balance[x];
  SCHECK(ok);
  SCHECK(sparcclCommDestroy(comm) == sparcclSuccess);
  free(g); free(out); free(e); free(sum); free(balance);
}
END_TEST

/* One rank (MPI_COMM_SELF on every rank): one region, the allgather exchange bit for bit;
 * feedbacks x float32/bfloat16 wire x warm-up, bfloat16 buffers on 6 and 7, a NaN at step
 * 3, AVG on odd iterations. */
START_TEST(test_split_one_rank_is_allgather) {
  static const size_t layout[3] = {2000, 30, 900};
  const size_t count = 2930;
  sparcclConfig_t config = test_config(sparcclTopK, kFeedbacks[_i % 4], 0.03, 50);
  float *a = malloc(count * 4), *b = malloc(count * 4), *oa = malloc(count * 4), *ob = malloc(count * 4);
  int op = _i % 2 ? sparcclAvg : sparcclSum, step, same = 1, dtype = _i >= 6 ? sparcclBfloat16 : sparcclFloat32;
  size_t i;
  sparcclComm_t flat, split;
  config.wireType = _i >= 4 ? sparcclBfloat16 : sparcclFloat32;
  config.warmupSteps = (size_t)(_i % 3 == 1);
  SCHECK(splitComm(config, sparcclExchangeAllgather, MPI_COMM_SELF, &flat) == sparcclSuccess);
  SCHECK(splitComm(config, sparcclExchangeSplit, MPI_COMM_SELF, &split) == sparcclSuccess);
  SCHECK(sparcclRegisterLayout(flat, a, 3, layout) == sparcclSuccess);
  SCHECK(sparcclRegisterLayout(split, b, 3, layout) == sparcclSuccess);
  for (step = 0; step < 6; step++) {
    fillGrad(oa, count, (uint64_t)(_i * 40 + step * 3 + s_rank), 0, step % 2);
    if (step == 3) oa[100] = NAN;
    for (i = 0; i < count; i++) test_store_value(a, i, dtype, oa[i]);
    memcpy(b, a, count * 4);
    SCHECK(sparcclAllReduce(a, oa, count, dtype, op, flat, NULL) == sparcclSuccess);
    SCHECK(sparcclAllReduce(b, ob, count, dtype, op, split, NULL) == sparcclSuccess);
    same &= memcmp(oa, ob, count * test_dtype_size(dtype)) == 0;
  }
  SCHECK(same);
  SCHECK(sparcclCommDestroy(flat) == sparcclSuccess && sparcclCommDestroy(split) == sparcclSuccess);
  free(a); free(b); free(oa); free(ob);
}
END_TEST

/* Crowded gradients move the regions (identical on every rank); sparcclRestart puts them
 * back at floor(j d / n). */
START_TEST(test_split_restart_resets_regions) {
  const size_t d = 3000, n = (size_t)s_size;
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.02, 100);
  float *g = malloc(d * 4), *out = malloc(d * 4);
  uint32_t bounds[MAXR + 1], first[MAXR + 1];
  sparcclComm_t comm;
  int step, moved = 0, reset = 1;
  size_t j;
  SCHECK(splitComm(config, sparcclExchangeSplit, MPI_COMM_WORLD, &comm) == sparcclSuccess);
  for (step = 0; step < 3; step++) {
    fillGrad(g, d, (uint64_t)(300 + step + 10 * s_rank), 0, 1);
    SCHECK(sparcclAllReduce(g, out, d, sparcclFloat32, sparcclSum, comm, NULL) == sparcclSuccess);
  }
  SCHECK(stateTail(comm, "moved", bounds, n + 1));
  memcpy(first, bounds, sizeof(bounds));
  MPI_Bcast(first, (int)(n + 1), MPI_UINT32_T, 0, MPI_COMM_WORLD);
  SCHECK(memcmp(first, bounds, (n + 1) * 4) == 0);
  for (j = 1; j < n; j++) moved |= bounds[j] != (uint32_t)(j * d / n);
  SCHECK(s_size == 1 || moved);
  SCHECK(sparcclRestart(comm) == sparcclSuccess);
  SCHECK(stateTail(comm, "reset", bounds, n + 1));
  for (j = 0; j <= n; j++) reset &= bounds[j] == (uint32_t)(j * d / n);
  SCHECK(reset);
  SCHECK(sparcclCommDestroy(comm) == sparcclSuccess);
  free(g); free(out);
}
END_TEST

/* Save, load into a twin, two more steps on both: bitwise the same (the regions travel in
 * the file).  The allgather and the hierarchical exchange refuse the file on every rank. */
START_TEST(test_split_save_load_and_other_exchange) {
  static const size_t layout[2] = {2400, 40};
  const size_t count = 2440;
  sparcclConfig_t config = test_config(sparcclTopK, _i ? sparcclFeedbackDGC : sparcclFeedbackEF, 0.03, 50);
  float *g = malloc(count * 4), *twin = malloc(count * 4), *o1 = malloc(count * 4), *o2 = malloc(count * 4);
  sparcclComm_t comm, copy, flat, hier;
  char path[256];
  int step, same = 1;
  SCHECK(splitComm(config, sparcclExchangeSplit, MPI_COMM_WORLD, &comm) == sparcclSuccess);
  SCHECK(splitComm(config, sparcclExchangeSplit, MPI_COMM_WORLD, &copy) == sparcclSuccess);
  SCHECK(sparcclRegisterLayout(comm, g, 2, layout) == sparcclSuccess);
  SCHECK(sparcclRegisterLayout(copy, twin, 2, layout) == sparcclSuccess);
  for (step = 0; step < 3; step++) {
    fillGrad(g, count, (uint64_t)(77 + step + 10 * s_rank), 0, 1);
    SCHECK(sparcclAllReduce(g, o1, count, sparcclFloat32, sparcclSum, comm, NULL) == sparcclSuccess);
  }
  uniquePath(path, sizeof(path), "saveload");
  SCHECK(sparcclSaveState(comm, path) == sparcclSuccess);
  SCHECK(sparcclLoadState(copy, path) == sparcclSuccess);
  for (step = 0; step < 2; step++) {
    fillGrad(g, count, (uint64_t)(5 + step + 10 * s_rank), 0, 1);
    memcpy(twin, g, count * 4);
    SCHECK(sparcclAllReduce(g, o1, count, sparcclFloat32, sparcclSum, comm, NULL) == sparcclSuccess);
    SCHECK(sparcclAllReduce(twin, o2, count, sparcclFloat32, sparcclSum, copy, NULL) == sparcclSuccess);
    same &= memcmp(o1, o2, count * 4) == 0;
  }
  SCHECK(same);
  SCHECK(splitComm(config, sparcclExchangeAllgather, MPI_COMM_WORLD, &flat) == sparcclSuccess);
  SCHECK(sparcclRegisterLayout(flat, twin, 2, layout) == sparcclSuccess);
  SCHECK(sparcclLoadState(flat, path) == sparcclInvalidUsage);
  config.ranksPerNode = 1;
  SCHECK(splitComm(config, sparcclExchangeHierarchical, MPI_COMM_WORLD, &hier) == sparcclSuccess);
  SCHECK(sparcclRegisterLayout(hier, twin, 2, layout) == sparcclSuccess);
  SCHECK(sparcclLoadState(hier, path) == sparcclInvalidUsage);
  remove(path);
  SCHECK(sparcclCommDestroy(flat) == sparcclSuccess && sparcclCommDestroy(comm) == sparcclSuccess);
  SCHECK(sparcclCommDestroy(copy) == sparcclSuccess && sparcclCommDestroy(hier) == sparcclSuccess);
  free(g); free(twin); free(o1); free(o2);
}
END_TEST

static int gatherByMpi(const void* send, void* recv, size_t bytes, void* user) {
  (void)user;
  return MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
}

/* ef21: sparcclInvalidArgument; a compressor other than topk, a callback comm, pipelineBytes
 * and the phase API on a split comm: sparcclNotSupported.  No comm is returned. */
START_TEST(test_split_refusals) {
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF21, 0.05, 50);
  sparcclComm_t comm = NULL;
  size_t bytes = 0, d = 100;
  SCHECK(splitComm(config, sparcclExchangeSplit, MPI_COMM_WORLD, &comm) == sparcclInvalidArgument && comm == NULL);
  config = test_config(sparcclRandK, sparcclFeedbackEF, 0.05, 50);
  SCHECK(splitComm(config, sparcclExchangeSplit, MPI_COMM_WORLD, &comm) == sparcclNotSupported && comm == NULL);
  config = test_config(sparcclTopK, sparcclFeedbackEF, 0.05, 50);
  config.exchange = sparcclExchangeSplit;
  SCHECK(sparcclCommInitCallback(&comm, s_size, s_rank, gatherByMpi, NULL, &config) == sparcclNotSupported &&
         comm == NULL);
  config.pipelineBytes = 4096;
  SCHECK(splitComm(config, sparcclExchangeSplit, MPI_COMM_WORLD, &comm) == sparcclNotSupported && comm == NULL);
  config.pipelineBytes = SPARCCL_CONFIG_UNDEF_SIZE;
  SCHECK(splitComm(config, sparcclExchangeSplit, MPI_COMM_WORLD, &comm) == sparcclSuccess);
  SCHECK(sparcclRegisterLayoutTagged(comm, 7, 1, &d) == sparcclSuccess);
  SCHECK(sparcclBlockBytesTagged(comm, 7, &bytes) == sparcclNotSupported);
  SCHECK(sparcclCommDestroy(comm) == sparcclSuccess);
}
END_TEST

/* A call that disagrees on one rank (AVG against SUM, or another key of the same size) is
 * refused on every rank, the output untouched; the next agreeing call equals a twin's. */
START_TEST(test_split_disagreeing_call_refused_everywhere) {
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.02, 100);
  config.exchange = sparcclExchangeSplit;
  if (s_size >= 2) SCHECK(test_disagreeing_call(&config, _i, "test_split.c"));
}
END_TEST

Suite* make_split_suite(int rank, int size) {
  Suite* s = suite_create("split");
  TCase* tc = tcase_create("split exchange");
  s_rank = rank;
  s_size = size;
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, test_split_matches_recomputation, 0, 12);
  tcase_add_loop_test(tc, test_split_conservation_and_volume, 0, 2);
  tcase_add_loop_test(tc, test_split_one_rank_is_allgather, 0, 8);
  tcase_add_test(tc, test_split_restart_resets_regions);
  tcase_add_loop_test(tc, test_split_save_load_and_other_exchange, 0, 2);
  tcase_add_test(tc, test_split_refusals);
  tcase_add_loop_test(tc, test_split_disagreeing_call_refused_everywhere, 0, 2);
  suite_add_tcase(s, tc);
  return s;
}
