/*
 * State and its lifetime on one rank (SPEC 5, 7): tagged keys, release, layouts,
 * save/load and its refusals, restart policies, importance weights, scaling, stats.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"
#include "sparccl_math.h"

/* ---------------------------------------------------------------- helpers */

static void ar(sparcclComm_t c, const float* g, float* o, size_t n) {
  sparcclResult_t r = sparcclAllReduce(g, o, n, sparcclFloat32, sparcclSum, c, NULL);
  ck_assert_msg(r == sparcclSuccess, "sparcclAllReduce: %s", sparcclGetErrorString(r));
}
static void art(sparcclComm_t c, unsigned long long tag, const float* g, float* o, size_t n) {
  sparcclResult_t r = sparcclAllReduceTagged(g, o, n, sparcclFloat32, sparcclSum, tag, c, NULL);
  ck_assert_msg(r == sparcclSuccess, "sparcclAllReduceTagged: %s", sparcclGetErrorString(r));
}

static sparcclStats_t stats(sparcclComm_t c) {
  sparcclStats_t s;
  ck_assert_int_eq(sparcclCommGetStats(c, &s), sparcclSuccess);
  return s;
}

static int differ(const float* a, const float* b, size_t n) { return test_first_difference(a, b, n) >= 0; }

/* The k largest of non-negative keys, ties to the lower index (SPEC 1). */
static void hand_select(const float* key, size_t d, size_t k, int* sel) {
  size_t r, i;
  for (i = 0; i < d; i++) sel[i] = 0;
  for (r = 0; r < k; r++) {
    long best = -1;
    for (i = 0; i < d; i++)
      if (!sel[i] && (best < 0 || key[i] > key[best])) best = (long)i;
    sel[best] = 1;
  }
}

/* One ef + topk step on one rank, by hand: e updated, out = +0 + sent. */
static void hand_ef_topk(float* e, const float* g, float* out, size_t d, size_t k) {
  float a[256] = {0}, key[256] = {0};
  int sel[256];
  size_t i;
  ck_assert_uint_le(d, 256);
  for (i = 0; i < d; i++) { a[i] = e[i] + g[i]; key[i] = fabsf(a[i]); }
  hand_select(key, d, k, sel);
  for (i = 0; i < d; i++) {
    float sent = sel[i] ? a[i] : 0.0f;
    e[i] = sel[i] ? a[i] - sent : a[i];
    out[i] = sel[i] ? 0.0f + sent : 0.0f;
  }
}

static void make_temp(char* path) {
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  close(fd);
}

static unsigned char* read_all(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* data;
  long n;
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  data = (unsigned char*)malloc((size_t)n + 1);
  ck_assert_uint_eq(fread(data, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *size = (size_t)n;
  return data;
}

static void write_all(const char* path, const unsigned char* data, size_t size) {
  FILE* f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(data, 1, size, f), size);
  fclose(f);
}

/* ================================================================ tagged keys */

START_TEST(test_tagged_follows_tag) {
  /* Tag on moving buffers == pointer key on a fixed buffer; impk_random makes the
   * step counter and layer id part of the result. */
  int cfg;
  for (cfg = 0; cfg < 2; cfg++) {
    sparcclConfig_t config = cfg == 0 ? test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1)
                                      : test_config(sparcclImpKRandom, sparcclFeedbackEF21, 0.2, 1);
    sparcclComm_t a, b;
    float moving[2][40], fixed[40], oa[40], ob[40];
    int step;
    config.seed = 77;
    a = test_comm_self(&config);
    b = test_comm_self(&config);
    for (step = 0; step < 6; step++) {
      test_fill_normal(moving[step % 2], 40, 10u + (uint64_t)step);
      memcpy(fixed, moving[step % 2], sizeof(fixed));
      art(a, 0x1234567890abcdefull, moving[step % 2], oa, 40);
      ar(b, fixed, ob, 40);
      ck_assert_bitwise_eq(oa, ob, 40);
    }
    ck_assert(stats(a).layerSets == 1);
    ck_assert_int_eq(sparcclCommDestroy(a), sparcclSuccess);
    ck_assert_int_eq(sparcclCommDestroy(b), sparcclSuccess);
  }
}
END_TEST

START_TEST(test_tags_independent) {
  /* Two tags interleaved on the same buffer, vs one comm per tag (topk: no layer ids). */
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  sparcclComm_t a = test_comm_self(&config), b1 = test_comm_self(&config), b2 = test_comm_self(&config);
  sparcclComm_t fresh;
  float buf[32], o[32], o1[32], o2[32];
  int step;
  for (step = 0; step < 5; step++) {
    test_fill_normal(buf, 32, 100u + (uint64_t)step);
    art(a, 1, buf, o, 32);
    art(b1, 1, buf, o1, 32);
    ck_assert_bitwise_eq(o, o1, 32);
    test_fill_normal(buf, 32, 200u + (uint64_t)step);
    art(a, 2, buf, o, 32);
    art(b2, 2, buf, o2, 32);
    ck_assert_bitwise_eq(o, o2, 32);
  }
  /* The pointer key of the same buffer is a third key, with fresh state. */
  fresh = test_comm_self(&config);
  test_fill_normal(buf, 32, 300u);
  ar(a, buf, o, 32);
  ar(fresh, buf, o1, 32);
  ck_assert_bitwise_eq(o, o1, 32);
  ck_assert(stats(a).layerSets == 3);
  sparcclCommDestroy(a);
  sparcclCommDestroy(b1);
  sparcclCommDestroy(b2);
  sparcclCommDestroy(fresh);
}
END_TEST

/* ================================================================ release */

START_TEST(test_release_fresh_state) {
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  sparcclComm_t a = test_comm_self(&config), fresh = test_comm_self(&config), keep = test_comm_self(&config);
  float buf[32], o[32], of[32], ok[32];
  int step;
  for (step = 0; step < 3; step++) {
    test_fill_normal(buf, 32, 400u + (uint64_t)step);
    ar(a, buf, o, 32);
    ar(keep, buf, ok, 32);
    art(a, 5, buf, o, 32);
    art(keep, 5, buf, ok, 32);
  }
  ck_assert(stats(a).layerSets == 2);
  ck_assert_int_eq(sparcclRelease(a, buf, 32), sparcclSuccess);
  ck_assert(stats(a).layerSets == 1);
  ck_assert_int_eq(sparcclRelease(a, buf, 32), sparcclInvalidUsage);
  ck_assert_int_eq(sparcclReleaseTagged(a, 5), sparcclSuccess);
  ck_assert(stats(a).layerSets == 0);
  ck_assert_int_eq(sparcclReleaseTagged(a, 5), sparcclInvalidUsage);
  /* A new buffer at the same address starts from zero state; without release it would not. */
  test_fill_normal(buf, 32, 450u);
  ar(a, buf, o, 32);
  ar(fresh, buf, of, 32);
  ar(keep, buf, ok, 32);
  ck_assert_bitwise_eq(o, of, 32);
  ck_assert(differ(ok, of, 32));
  art(a, 5, buf, o, 32);
  art(fresh, 5, buf, of, 32);
  art(keep, 5, buf, ok, 32);
  ck_assert_bitwise_eq(o, of, 32);
  ck_assert(differ(ok, of, 32));
  sparcclCommDestroy(a);
  sparcclCommDestroy(fresh);
  sparcclCommDestroy(keep);
}
END_TEST

/* ================================================================ layouts */

START_TEST(test_layout_registration) {
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  sparcclComm_t a = test_comm_self(&config), b = test_comm_self(&config);
  size_t L1[3] = {32, 16, 16}, L2[2] = {48, 16};
  float buf[64], o[64], ob[64], want[64], e[64];
  int step;
  ck_assert_int_eq(sparcclRegisterLayout(a, buf, 3, L1), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(a, buf, 3, L1), sparcclSuccess); /* no-op */
  ck_assert(stats(a).layerSets == 1);
  ck_assert(stats(a).layersSparse == 3);
  ck_assert_int_eq(sparcclRegisterLayout(b, buf, 3, L1), sparcclSuccess);
  /* Step 1 by hand: every layer on its own, k = 8, 4, 4. */
  memset(e, 0, sizeof(e));
  test_fill_normal(buf, 64, 500u);
  hand_ef_topk(e, buf, want, 32, 8);
  hand_ef_topk(e + 32, buf + 32, want + 32, 16, 4);
  hand_ef_topk(e + 48, buf + 48, want + 48, 16, 4);
  ar(a, buf, o, 64);
  ar(b, buf, ob, 64);
  ck_assert_bitwise_eq(o, want, 64);
  for (step = 1; step < 4; step++) {
    /* Registering the same layout again mid-run changes nothing. */
    ck_assert_int_eq(sparcclRegisterLayout(a, buf, 3, L1), sparcclSuccess);
    test_fill_normal(buf, 64, 500u + (uint64_t)step);
    hand_ef_topk(e, buf, want, 32, 8);
    hand_ef_topk(e + 32, buf + 32, want + 32, 16, 4);
    hand_ef_topk(e + 48, buf + 48, want + 48, 16, 4);
    ar(a, buf, o, 64);
    ar(b, buf, ob, 64);
    ck_assert_bitwise_eq(o, ob, 64);
    ck_assert_bitwise_eq(o, want, 64);
  }
  /* Another layout while live: refused; after release: allowed and used. */
  ck_assert_int_eq(sparcclRegisterLayout(a, buf, 2, L2), sparcclInvalidUsage);
  ck_assert_int_eq(sparcclRelease(a, buf, 64), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(a, buf, 2, L2), sparcclSuccess);
  ck_assert(stats(a).layersSparse == 2);
  memset(e, 0, sizeof(e));
  test_fill_normal(buf, 64, 600u);
  hand_ef_topk(e, buf, want, 48, 12);
  hand_ef_topk(e + 48, buf + 48, want + 48, 16, 4);
  ar(a, buf, o, 64);
  ck_assert_bitwise_eq(o, want, 64);
  /* Tagged: the same rules. */
  ck_assert_int_eq(sparcclRegisterLayoutTagged(a, 9, 3, L1), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayoutTagged(a, 9, 3, L1), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayoutTagged(a, 9, 2, L2), sparcclInvalidUsage);
  ck_assert_int_eq(sparcclReleaseTagged(a, 9), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayoutTagged(a, 9, 2, L2), sparcclSuccess);
  memset(e, 0, sizeof(e));
  hand_ef_topk(e, buf, want, 48, 12);
  hand_ef_topk(e + 48, buf + 48, want + 48, 16, 4);
  art(a, 9, buf, o, 64);
  ck_assert_bitwise_eq(o, want, 64);
  sparcclCommDestroy(a);
  sparcclCommDestroy(b);
}
END_TEST

/* ================================================================ save / load */

#define SL_N1 420
#define SL_N2 64
static const size_t slLayout1[3] = {300, 20, 100};
static const size_t slLayout2[1] = {SL_N2};

typedef struct {
  float buf1[SL_N1];
  float buf2[SL_N2];
} SlBuffers;

static int uses_weights(const sparcclConfig_t* c) {
  return (c->compressor == sparcclImpK || c->compressor == sparcclImpKSelect ||
          c->compressor == sparcclImpKRandom) && c->importance != sparcclImportanceOnline;
}

static void sl_register(sparcclComm_t c, SlBuffers* b) {
  ck_assert_int_eq(sparcclRegisterLayout(c, b->buf1, 3, slLayout1), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayoutTagged(c, 0xabcull, 1, slLayout2), sparcclSuccess);
}

static void sl_step(sparcclComm_t c, const sparcclConfig_t* config, SlBuffers* b, int t,
                    float* o1, float* o2) {
  static const double losses[] = {1.0, 2.0, 3.0, 4.0, 3.5, 2.0, 3.8, 1.0, 1.5, 0.5};
  float moving[SL_N2];
  test_fill_normal(b->buf1, SL_N1, 7000u + (uint64_t)t);
  if (t % 4 == 0) b->buf1[5] *= 40.0f; /* norm jumps at steps 0, 4, 8: the one at 4 is
                                        * compared with step 2, saved before the load */
  ar(c, b->buf1, o1, SL_N1);
  test_fill_normal(moving, SL_N2, 8000u + (uint64_t)t);
  ck_assert_int_eq(sparcclAllReduceTagged(moving, o2, SL_N2, sparcclFloat32, sparcclAvg, 0xabcull, c, NULL),
                   sparcclSuccess);
  if (uses_weights(config)) {
    float q[SL_N1], x[SL_N1], p[SL_N1];
    test_fill_normal(q, SL_N1, 9000u + (uint64_t)t);
    test_fill_normal(x, SL_N1, 9500u + (uint64_t)t);
    ck_assert_int_eq(sparcclImportanceProbe(x, b->buf1, p, SL_N1, sparcclFloat32, c, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclImportanceUpdate(q, b->buf1, SL_N1, sparcclFloat32, c, NULL), sparcclSuccess);
  }
  ck_assert_int_eq(sparcclReportLoss(c, losses[t % 10]), sparcclSuccess);
}

static void saveload_roundtrip(sparcclConfig_t config, const char* what) {
  enum { N = 4, M = 5 };
  static SlBuffers ba, bb, bc;
  char path[] = "/tmp/sparccl_state_XXXXXX";
  float a1[M][SL_N1], a2[M][SL_N2], o1[SL_N1], o2[SL_N2];
  sparcclComm_t a, b, c;
  unsigned long long ra, rb;
  int t, controlDiffers = 0;
  make_temp(path);
  a = test_comm_self(&config);
  sl_register(a, &ba);
  for (t = 0; t < N; t++) sl_step(a, &config, &ba, t, o1, o2);
  ck_assert_int_eq(sparcclSaveState(a, path), sparcclSuccess);
  ra = stats(a).restarts;
  for (t = 0; t < M; t++) sl_step(a, &config, &ba, N + t, a1[t], a2[t]);
  ra = stats(a).restarts - ra;

  b = test_comm_self(&config);
  sl_register(b, &bb);
  ck_assert_int_eq(sparcclLoadState(b, path), sparcclSuccess);
  rb = stats(b).restarts;
  for (t = 0; t < M; t++) {
    sl_step(b, &config, &bb, N + t, o1, o2);
    ck_assert_msg(!differ(o1, a1[t], SL_N1), "%s: buffer key differs after load, step %d at %ld",
                  what, t, test_first_difference(o1, a1[t], SL_N1));
    ck_assert_msg(!differ(o2, a2[t], SL_N2), "%s: tagged key differs after load, step %d", what, t);
  }
  rb = stats(b).restarts - rb;
  ck_assert_msg(ra == rb, "%s: %llu restarts after the save, %llu after the load", what, ra, rb);

  /* Control: the same without the load differs (the state matters). */
  c = test_comm_self(&config);
  sl_register(c, &bc);
  for (t = 0; t < M; t++) {
    sl_step(c, &config, &bc, N + t, o1, o2);
    controlDiffers |= differ(o1, a1[t], SL_N1) || differ(o2, a2[t], SL_N2);
  }
  ck_assert_msg(controlDiffers, "%s: the control without load matched: the test is vacuous", what);
  sparcclCommDestroy(a);
  sparcclCommDestroy(b);
  sparcclCommDestroy(c);
  unlink(path);
}

START_TEST(test_saveload_roundtrip) {
  static const int comps[] = {sparcclTopK, sparcclImpKRandom, sparcclImpK, sparcclRandK};
  static const int fbs[] = {sparcclFeedbackEF, sparcclFeedbackEF21, sparcclFeedbackSCAM};
  size_t i, j;
  char what[128];
  for (i = 0; i < sizeof(comps) / sizeof(comps[0]); i++)
    for (j = 0; j < sizeof(fbs) / sizeof(fbs[0]); j++) {
      sparcclConfig_t c = test_config(comps[i], fbs[j], 0.05, 50);
      c.seed = 31337;
      if (comps[i] == sparcclImpK) c.importance = sparcclImportanceCube;
      snprintf(what, sizeof(what), "compressor %d feedback %d", comps[i], fbs[j]);
      saveload_roundtrip(c, what);
    }
}
END_TEST

START_TEST(test_saveload_online_and_restarts) {
  sparcclConfig_t c;
  /* Online importance: w and the previous gradient are state. */
  c = test_config(sparcclImpK, sparcclFeedbackSCAM, 0.05, 50);
  c.importance = sparcclImportanceOnline;
  c.importanceGamma = 0.1;
  c.importanceEta = 5.0;
  saveload_roundtrip(c, "impk online scam");
  c.compressor = sparcclImpKRandom;
  c.feedback = sparcclFeedbackEF;
  saveload_roundtrip(c, "impk_random online ef");
  /* Restart history: step counts, norm ring, loss ring. */
  c = test_config(sparcclTopK, sparcclFeedbackEF, 0.05, 50);
  c.restartEvery = 5;
  c.restartRatio = 1.3;
  c.restartLag = 2;
  c.restartOnLoss = 1;
  saveload_roundtrip(c, "topk ef with every/ratio/loss restarts");
  c.restartEvery = 0;
  c.restartOnLoss = 0;
  saveload_roundtrip(c, "topk ef with ratio restarts");
  c.restartEvery = 5;
  c.restartOnLoss = 1;
  c.compressor = sparcclImpK;
  c.feedback = sparcclFeedbackSCAM;
  c.importance = sparcclImportanceOnline;
  c.wireType = sparcclBfloat16;
  saveload_roundtrip(c, "impk online scam bf16 with restarts");
}
END_TEST

/* Loss history alone decides a restart after the load. */
START_TEST(test_saveload_loss_history) {
  sparcclConfig_t c = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  char path[] = "/tmp/sparccl_loss_XXXXXX";
  sparcclComm_t a, b;
  float buf[16], o[16];
  c.restartOnLoss = 1;
  c.restartLag = 2;
  make_temp(path);
  a = test_comm_self(&c);
  test_fill_normal(buf, 16, 1u);
  ar(a, buf, o, 16);
  ck_assert_int_eq(sparcclReportLoss(a, 3.0), sparcclSuccess);
  ck_assert_int_eq(sparcclReportLoss(a, 1.0), sparcclSuccess);
  ck_assert(stats(a).restarts == 0);
  ck_assert_int_eq(sparcclSaveState(a, path), sparcclSuccess);
  b = test_comm_self(&c);
  ar(b, buf, o, 16);
  ck_assert_int_eq(sparcclLoadState(b, path), sparcclSuccess);
  /* 2.0 > L_{t-2} = 3.0? no.  Then 1.5 > L_{t-2} = 1.0: yes, only with the history. */
  ck_assert_int_eq(sparcclReportLoss(b, 2.0), sparcclSuccess);
  ck_assert(stats(b).restarts == 0);
  ck_assert_int_eq(sparcclReportLoss(b, 1.5), sparcclSuccess);
  ck_assert(stats(b).restarts == 1);
  sparcclCommDestroy(a);
  sparcclCommDestroy(b);
  unlink(path);
}
END_TEST

/* ---------------------------------------------------------------- refusals */

static sparcclComm_t rf_comm(double density, size_t nlayers, const size_t* counts, float* buf,
                             uint64_t seed, int steps) {
  sparcclConfig_t c = test_config(sparcclImpKRandom, sparcclFeedbackEF, density, 1);
  sparcclComm_t comm;
  float o[16];
  int t;
  c.seed = 3;
  comm = test_comm_self(&c);
  if (counts != NULL) ck_assert_int_eq(sparcclRegisterLayout(comm, buf, nlayers, counts), sparcclSuccess);
  for (t = 0; t < steps; t++) {
    test_fill_normal(buf, 16, seed + (uint64_t)t);
    ar(comm, buf, o, 16);
  }
  ck_assert_int_eq(sparcclReportLoss(comm, (double)seed), sparcclSuccess);
  return comm;
}

START_TEST(test_load_refusals) {
  static float bs[16], bo[16], bt[16];
  char good[] = "/tmp/sparccl_good_XXXXXX", bad[] = "/tmp/sparccl_bad_XXXXXX";
  char other[] = "/tmp/sparccl_other_XXXXXX";
  size_t one[1] = {16}, two[2] = {10, 6}, size, i;
  unsigned char* data;
  sparcclComm_t src, target, twin, o;
  float ot[16], ow[16];
  int t, refused = 0;
  sparcclResult_t r;
  make_temp(good);
  make_temp(bad);
  make_temp(other);
  /* The file comes from a comm whose state differs from the target's. */
  src = rf_comm(0.25, 1, one, bs, 100, 5);
  ck_assert_int_eq(sparcclSaveState(src, good), sparcclSuccess);
  target = rf_comm(0.25, 1, one, bo, 200, 3);
  twin = rf_comm(0.25, 1, one, bt, 200, 3);
  data = read_all(good, &size);
  ck_assert_uint_gt(size, 64);
  ck_assert_uint_lt(size, 4096);

  for (i = 0; i < size; i++) { /* every truncation */
    write_all(bad, data, i);
    r = sparcclLoadState(target, bad);
    ck_assert_msg(r != sparcclSuccess, "a file truncated to %zu of %zu bytes was loaded", i, size);
    refused++;
  }
  for (i = 0; i < size; i++) { /* every corrupted byte */
    data[i] ^= 0xff;
    write_all(bad, data, size);
    data[i] ^= 0xff;
    r = sparcclLoadState(target, bad);
    ck_assert_msg(r != sparcclSuccess, "a file with byte %zu of %zu flipped was loaded", i, size);
    data[i] ^= 0x01; /* a single bit too */
    write_all(bad, data, size);
    data[i] ^= 0x01;
    ck_assert_msg(sparcclLoadState(target, bad) != sparcclSuccess, "bit 0 of byte %zu flipped was loaded", i);
  }
  { /* a trailing extra byte */
    unsigned char* longer = (unsigned char*)malloc(size + 1);
    memcpy(longer, data, size);
    longer[size] = 0;
    write_all(bad, longer, size + 1);
    free(longer);
    ck_assert(sparcclLoadState(target, bad) != sparcclSuccess);
  }
  /* Another layout (same total), another config, more layer sets, a missing file. */
  o = rf_comm(0.25, 2, two, bs, 100, 5);
  ck_assert_int_eq(sparcclSaveState(o, other), sparcclSuccess);
  ck_assert_int_eq(sparcclLoadState(target, other), sparcclInvalidUsage);
  sparcclCommDestroy(o);
  o = rf_comm(0.5, 1, one, bs, 100, 5);
  ck_assert_int_eq(sparcclSaveState(o, other), sparcclSuccess);
  ck_assert_int_eq(sparcclLoadState(target, other), sparcclInvalidUsage);
  sparcclCommDestroy(o);
  o = rf_comm(0.25, 1, one, bs, 100, 5);
  {
    float extra[8], oe[8];
    test_fill_normal(extra, 8, 5u);
    ar(o, extra, oe, 8);
  }
  ck_assert_int_eq(sparcclSaveState(o, other), sparcclSuccess);
  ck_assert_int_eq(sparcclLoadState(target, other), sparcclInvalidUsage);
  sparcclCommDestroy(o);
  o = rf_comm(0.25, 0, NULL, bs, 100, 0); /* no layer set at all */
  ck_assert_int_eq(sparcclSaveState(o, other), sparcclSuccess);
  ck_assert_int_eq(sparcclLoadState(target, other), sparcclInvalidUsage);
  sparcclCommDestroy(o);
  unlink(other);
  r = sparcclLoadState(target, other);
  ck_assert(r != sparcclSuccess);

  /* The target is exactly its untouched twin. */
  for (t = 0; t < 4; t++) {
    test_fill_normal(bo, 16, 900u + (uint64_t)t);
    memcpy(bt, bo, sizeof(bt));
    ar(target, bo, ot, 16);
    ar(twin, bt, ow, 16);
    ck_assert_bitwise_eq(ot, ow, 16);
  }
  ck_assert(stats(target).restarts == stats(twin).restarts);
  ck_assert_int_eq(sparcclReportLoss(target, 1e9), sparcclSuccess);
  ck_assert_int_eq(sparcclReportLoss(twin, 1e9), sparcclSuccess);
  ck_assert(stats(target).restarts == stats(twin).restarts);

  /* A FIFO (or any file that is not a regular one) is refused at once, never read. */
  {
    char fifo[] = "/tmp/sparccl_fifo_XXXXXX";
    make_temp(fifo);
    unlink(fifo);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(sparcclLoadState(target, fifo), sparcclInvalidUsage);
    ck_assert_int_eq(sparcclLoadState(target, "/tmp"), sparcclInvalidUsage);
    unlink(fifo);
  }

  /* Control: the valid file loads, and then the target follows the source. */
  ck_assert_int_eq(sparcclLoadState(target, good), sparcclSuccess);
  test_fill_normal(bo, 16, 950u);
  memcpy(bs, bo, sizeof(bs));
  memcpy(bt, bo, sizeof(bt));
  ar(target, bo, ot, 16);
  ar(src, bs, ow, 16);
  ck_assert_bitwise_eq(ot, ow, 16);
  ar(twin, bt, ow, 16);
  ck_assert(differ(ot, ow, 16));
  free(data);
  sparcclCommDestroy(src);
  sparcclCommDestroy(target);
  sparcclCommDestroy(twin);
  unlink(good);
  unlink(bad);
  (void)refused;
}
END_TEST

/* ================================================================ restart policies */

START_TEST(test_restart_every) {
  sparcclConfig_t c = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  sparcclComm_t a, fresh;
  float buf[16], o[16], of[16], buf2[8], o2[8];
  /* Call 4 is skipped (NaN): restarts at completed steps 3, 6, 9 = calls 3, 7, 10. */
  static const unsigned long long want[10] = {0, 0, 1, 1, 1, 1, 2, 2, 2, 3};
  int call;
  c.restartEvery = 3;
  a = test_comm_self(&c);
  for (call = 1; call <= 10; call++) {
    test_fill_normal(buf, 16, 1100u + (uint64_t)call);
    if (call == 4) buf[3] = NAN;
    ar(a, buf, o, 16);
    ck_assert_msg(stats(a).restarts == want[call - 1], "call %d: %llu restarts", call, stats(a).restarts);
    if (call == 5 || call == 6 || call == 8) {
      /* zero state after the restarts of calls 3 (the skip of call 4 kept it) and 7;
       * not zero at call 6 */
      fresh = test_comm_self(&c);
      ar(fresh, buf, of, 16);
      if (call != 6) ck_assert_bitwise_eq(o, of, 16);
      else ck_assert(differ(o, of, 16));
      sparcclCommDestroy(fresh);
    }
  }
  ck_assert(stats(a).skippedSteps == 1);
  /* Per key: a second key restarts on its own third step. */
  test_fill_normal(buf2, 8, 1u);
  ar(a, buf2, o2, 8);
  ar(a, buf2, o2, 8);
  ck_assert(stats(a).restarts == 3);
  ar(a, buf2, o2, 8);
  ck_assert(stats(a).restarts == 4);
  sparcclCommDestroy(a);
}
END_TEST

static void ratio_sequence(int lag, const float* scales, const unsigned long long* want, int n) {
  sparcclConfig_t c = test_config(sparcclTopK, sparcclFeedbackNone, 1.0, 1);
  sparcclComm_t a;
  float buf[8], o[8];
  int t, i;
  c.restartRatio = 2.0;
  c.restartLag = lag;
  a = test_comm_self(&c);
  for (t = 0; t < n; t++) {
    for (i = 0; i < 8; i++) buf[i] = 0.0f;
    buf[0] = 3.0f * scales[t];
    buf[5] = 4.0f * scales[t]; /* ||out|| = 5 * scale: density 1, no feedback: out = g */
    ar(a, buf, o, 8);
    ck_assert_msg(stats(a).restarts == want[t], "lag %d step %d: %llu restarts, want %llu", lag, t,
                  stats(a).restarts, want[t]);
  }
  sparcclCommDestroy(a);
}

START_TEST(test_restart_ratio) {
  /* lag 1: ratio 2 exactly does not fire; a zero norm before never fires; the NaN step
   * does not enter the history (2.5 is compared with 1, not with the skipped step). */
  static const float s1[] = {1, 2, 4.5f, 0, 5, 1, NAN, 2.5f, 2.5f, 5.0001f};
  static const unsigned long long w1[] = {0, 0, 1, 1, 1, 1, 1, 2, 2, 3};
  static const float s2[] = {1, 1, 2.5f, 1, 5.5f, 2.2f, 11.0f, 4.4f, 0, 0, 100};
  static const unsigned long long w2[] = {0, 0, 1, 1, 2, 3, 3, 3, 3, 3, 3};
  ratio_sequence(1, s1, w1, 10);
  ratio_sequence(2, s2, w2, 11);
}
END_TEST

START_TEST(test_restart_loss) {
  sparcclConfig_t c = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  sparcclComm_t a, b, off, fresh;
  float buf[16], buf2[16], o[16], of[16];
  static const double l1[] = {3, 2, 2, 2.5, 1, NAN, 1.0000001, 0.5, INFINITY, 0.75};
  static const unsigned long long w1[] = {0, 0, 0, 2, 2, 2, 4, 4, 4, 6};
  static const double l2[] = {3, 2, 2.5, 2.6, 2.55, 1, 2.55};
  static const unsigned long long w2[] = {0, 0, 0, 1, 2, 2, 2};
  int t;
  c.restartOnLoss = 1;
  a = test_comm_self(&c);
  test_fill_normal(buf, 16, 1200u);
  test_fill_normal(buf2, 16, 1201u);
  ar(a, buf, o, 16);
  ar(a, buf2, o, 16); /* two keys: every restart resets both */
  for (t = 0; t < 10; t++) {
    ck_assert_int_eq(sparcclReportLoss(a, l1[t]), sparcclSuccess);
    ck_assert_msg(stats(a).restarts == w1[t], "report %d: %llu restarts", t, stats(a).restarts);
  }
  /* The restart took effect: the next output is a fresh comm's. */
  fresh = test_comm_self(&c);
  test_fill_normal(buf, 16, 1202u);
  ar(a, buf, o, 16);
  ar(fresh, buf, of, 16);
  ck_assert_bitwise_eq(o, of, 16);
  sparcclCommDestroy(fresh);

  c.restartLag = 2;
  b = test_comm_self(&c);
  ar(b, buf, o, 16);
  for (t = 0; t < 7; t++) {
    ck_assert_int_eq(sparcclReportLoss(b, l2[t]), sparcclSuccess);
    ck_assert_msg(stats(b).restarts == w2[t], "lag 2 report %d: %llu restarts", t, stats(b).restarts);
  }
  c.restartOnLoss = 0;
  off = test_comm_self(&c);
  ar(off, buf, o, 16);
  for (t = 0; t < 7; t++) ck_assert_int_eq(sparcclReportLoss(off, (double)t), sparcclSuccess);
  ck_assert(stats(off).restarts == 0);
  sparcclCommDestroy(a);
  sparcclCommDestroy(b);
  sparcclCommDestroy(off);
}
END_TEST

static void explicit_restart(sparcclConfig_t c, int withUpdate) {
  sparcclComm_t a = test_comm_self(&c), fresh = test_comm_self(&c), keep = test_comm_self(&c);
  float buf[32], q[32], o[32], of[32], ok[32];
  int t;
  for (t = 0; t < 3; t++) {
    test_fill_normal(buf, 32, 1300u + (uint64_t)t);
    ar(a, buf, o, 32);
    art(a, 3, buf, o, 32);
    ar(keep, buf, ok, 32);
    art(keep, 3, buf, ok, 32);
    if (withUpdate) {
      test_fill_normal(q, 32, 1350u + (uint64_t)t);
      ck_assert_int_eq(sparcclImportanceUpdate(q, buf, 32, sparcclFloat32, a, NULL), sparcclSuccess);
      ck_assert_int_eq(sparcclImportanceUpdate(q, buf, 32, sparcclFloat32, keep, NULL), sparcclSuccess);
    }
  }
  ck_assert(stats(a).restarts == 0);
  ck_assert_int_eq(sparcclRestart(a), sparcclSuccess);
  ck_assert(stats(a).restarts == 2); /* one per layer set */
  test_fill_normal(buf, 32, 1400u);
  ar(a, buf, o, 32);
  ar(fresh, buf, of, 32);
  ar(keep, buf, ok, 32);
  ck_assert_bitwise_eq(o, of, 32);
  ck_assert(differ(ok, of, 32));
  art(a, 3, buf, o, 32);
  art(fresh, 3, buf, of, 32);
  art(keep, 3, buf, ok, 32);
  ck_assert_bitwise_eq(o, of, 32);
  if (c.feedback != sparcclFeedbackNone) /* the tag's only state is e, h, H (w stays 1) */
    ck_assert(differ(ok, of, 32));
  sparcclCommDestroy(a);
  sparcclCommDestroy(fresh);
  sparcclCommDestroy(keep);
}

START_TEST(test_restart_explicit) {
  sparcclConfig_t c = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  explicit_restart(c, 0);
  c.feedback = sparcclFeedbackEF21;
  explicit_restart(c, 0);
  c.feedback = sparcclFeedbackSCAM;
  explicit_restart(c, 0);
  /* w <- 1: impk with weights moved by the solver, and no error feedback. */
  c = test_config(sparcclImpK, sparcclFeedbackNone, 0.25, 1);
  c.importance = sparcclImportanceCube;
  c.importanceGamma = 0.5;
  c.importanceEta = 2.0;
  explicit_restart(c, 1);
  c.feedback = sparcclFeedbackEF;
  explicit_restart(c, 1);
}
END_TEST

/* ================================================================ importance */

static float hand_cube(float w, float q, float g, float rate, float low, float high) {
  float v = w + rate * (q * g);
  v = v > low ? v : low;
  return v < high ? v : high;
}

START_TEST(test_importance_probe_and_cube) {
  enum { D = 40 };
  sparcclConfig_t c = test_config(sparcclImpK, sparcclFeedbackNone, 0.25, 1);
  sparcclComm_t a;
  float x[D], g[D], q[D], p[D], want[D], w[D], o[D], key[D];
  int sel[D], round, atLow = 0, atHigh = 0;
  float gamma, rate;
  size_t i;
  c.importance = sparcclImportanceCube;
  c.importanceGamma = 0.37;
  c.importanceEta = 3.1;
  c.importanceLow = 0.25;
  c.importanceHigh = 1.75;
  gamma = (float)c.importanceGamma;
  rate = (float)((double)c.importanceEta * (double)c.importanceGamma);
  a = test_comm_self(&c);
  test_fill_normal(x, D, 1500u);
  test_fill_normal(g, D, 1501u);
  for (i = 0; i < D; i++) w[i] = 1.0f;
  for (round = 0; round < 3; round++) {
    ck_assert_int_eq(sparcclImportanceProbe(x, g, p, D, sparcclFloat32, a, NULL), sparcclSuccess);
    for (i = 0; i < D; i++) {
      float t = gamma * (w[i] * g[i]);
      want[i] = x[i] - t;
    }
    ck_assert_bitwise_eq(p, want, D);
    test_fill_normal(q, D, 1600u + (uint64_t)round);
    ck_assert_int_eq(sparcclImportanceUpdate(q, g, D, sparcclFloat32, a, NULL), sparcclSuccess);
    for (i = 0; i < D; i++) {
      w[i] = hand_cube(w[i], q[i], g[i], rate, 0.25f, 1.75f);
      atLow += w[i] == 0.25f;
      atHigh += w[i] == 1.75f;
    }
  }
  ck_assert(atLow > 0 && atHigh > 0); /* the clamps were exercised */
  ck_assert_int_eq(sparcclImportanceProbe(x, g, p, D, sparcclFloat32, a, NULL), sparcclSuccess);
  for (i = 0; i < D; i++) want[i] = x[i] - gamma * (w[i] * g[i]);
  ck_assert_bitwise_eq(p, want, D);
  /* The weights drive the selection: keys |w g|, values w g. */
  ar(a, g, o, D);
  for (i = 0; i < D; i++) key[i] = fabsf(w[i] * g[i]);
  hand_select(key, D, 10, sel);
  for (i = 0; i < D; i++) want[i] = sel[i] ? 0.0f + w[i] * g[i] : 0.0f;
  ck_assert_bitwise_eq(o, want, D);
  /* Reset: w = 1 again. */
  ck_assert_int_eq(sparcclImportanceReset(a, g, D), sparcclSuccess);
  ck_assert_int_eq(sparcclImportanceProbe(x, g, p, D, sparcclFloat32, a, NULL), sparcclSuccess);
  for (i = 0; i < D; i++) want[i] = x[i] - gamma * (1.0f * g[i]);
  ck_assert_bitwise_eq(p, want, D);
  ck_assert_int_eq(sparcclImportanceReset(a, g, D + 1), sparcclInvalidUsage);
  sparcclCommDestroy(a);
}
END_TEST

START_TEST(test_importance_tagged) {
  enum { D = 24 };
  sparcclConfig_t c = test_config(sparcclImpK, sparcclFeedbackNone, 0.25, 1);
  sparcclComm_t a;
  float x[D], g[D], g2[D], q[D], p[D], want[D], w[D];
  float gamma, rate;
  size_t i;
  c.importance = sparcclImportanceCube;
  c.importanceGamma = 0.5;
  c.importanceEta = 1.5;
  gamma = 0.5f;
  rate = (float)(1.5 * 0.5);
  a = test_comm_self(&c);
  test_fill_normal(x, D, 1700u);
  test_fill_normal(g, D, 1701u);
  test_fill_normal(q, D, 1702u);
  ck_assert_int_eq(sparcclImportanceUpdateTagged(q, g, D, sparcclFloat32, 44, a, NULL), sparcclSuccess);
  for (i = 0; i < D; i++) w[i] = hand_cube(1.0f, q[i], g[i], rate, 0.0f, 2.0f);
  /* The tag carries w to another buffer. */
  memcpy(g2, g, sizeof(g2));
  ck_assert_int_eq(sparcclImportanceProbeTagged(x, g2, p, D, sparcclFloat32, 44, a, NULL), sparcclSuccess);
  for (i = 0; i < D; i++) want[i] = x[i] - gamma * (w[i] * g[i]);
  ck_assert_bitwise_eq(p, want, D);
  /* The pointer key of the same buffer is another key, with w = 1. */
  ck_assert_int_eq(sparcclImportanceProbe(x, g, p, D, sparcclFloat32, a, NULL), sparcclSuccess);
  for (i = 0; i < D; i++) want[i] = x[i] - gamma * (1.0f * g[i]);
  ck_assert_bitwise_eq(p, want, D);
  ck_assert_int_eq(sparcclImportanceResetTagged(a, 44), sparcclSuccess);
  ck_assert_int_eq(sparcclImportanceProbeTagged(x, g2, p, D, sparcclFloat32, 44, a, NULL), sparcclSuccess);
  ck_assert_bitwise_eq(p, want, D);
  ck_assert_int_eq(sparcclImportanceResetTagged(a, 45), sparcclInvalidUsage);
  sparcclCommDestroy(a);
}
END_TEST

START_TEST(test_importance_simplex) {
  enum { D = 5000 }; /* two blocks of the blocked sum */
  sparcclConfig_t c = test_config(sparcclImpK, sparcclFeedbackNone, 0.01, 1);
  sparcclComm_t a;
  static float x[D], g[D], q[D], p[D], want[D], w[D], z[D];
  static double v[D];
  float gamma, rate, m;
  double total, block;
  size_t i;
  int round;
  c.importance = sparcclImportanceSimplex;
  c.importanceGamma = 0.25;
  c.importanceEta = 3.0;
  gamma = (float)c.importanceGamma;
  rate = (float)((double)c.importanceEta * (double)c.importanceGamma);
  a = test_comm_self(&c);
  for (i = 0; i < D; i++) { x[i] = 0.0f; w[i] = 1.0f; }
  test_fill_normal(g, D, 1800u);
  for (round = 0; round < 2; round++) {
    test_fill_normal(q, D, 1900u + (uint64_t)round);
    ck_assert_int_eq(sparcclImportanceUpdate(q, g, D, sparcclFloat32, a, NULL), sparcclSuccess);
    m = -INFINITY;
    for (i = 0; i < D; i++) {
      z[i] = rate * (q[i] * g[i]);
      if (z[i] > m) m = z[i];
    }
    total = 0.0;
    block = 0.0;
    for (i = 0; i < D; i++) {
      v[i] = (double)w[i] * sparccl_exp((double)z[i] - (double)m);
      block += v[i];
      if ((i + 1) % 4096 == 0) { total += block; block = 0.0; }
    }
    total += block;
    for (i = 0; i < D; i++) w[i] = (float)((double)D * v[i] / total);
    /* Observe w through the probe. */
    ck_assert_int_eq(sparcclImportanceProbe(x, g, p, D, sparcclFloat32, a, NULL), sparcclSuccess);
    for (i = 0; i < D; i++) want[i] = x[i] - gamma * (w[i] * g[i]);
    ck_assert_bitwise_eq(p, want, D);
  }
  /* sum of w stays about d (a sanity check that the test computes the right thing). */
  total = 0.0;
  for (i = 0; i < D; i++) total += w[i];
  ck_assert(fabs(total - D) < 1e-2 * D);
  sparcclCommDestroy(a);
}
END_TEST

START_TEST(test_importance_on_topk) {
  sparcclConfig_t c = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  sparcclComm_t a = test_comm_self(&c);
  float g[8] = {1, 2, 3, 4, 5, 6, 7, 8}, q[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  ck_assert_int_eq(sparcclImportanceUpdate(q, g, 8, sparcclFloat32, a, NULL), sparcclInvalidUsage);
  ck_assert_int_eq(sparcclImportanceUpdateTagged(q, g, 8, sparcclFloat32, 1, a, NULL), sparcclInvalidUsage);
  sparcclCommDestroy(a);
}
END_TEST

START_TEST(test_importance_online) {
  enum { D = 16, K = 4 };
  sparcclConfig_t c = test_config(sparcclImpK, sparcclFeedbackNone, 0.25, 1);
  sparcclComm_t a;
  float buf[D], prev[D], w[D], key[D], want[D], o[D], plain[D];
  int sel[D], selPlain[D], call, differs = 0;
  float rate;
  size_t i;
  c.importance = sparcclImportanceOnline;
  c.importanceGamma = 0.1;
  c.importanceEta = 10.0;
  rate = (float)((double)c.importanceEta * (double)c.importanceGamma);
  a = test_comm_self(&c);
  for (i = 0; i < D; i++) w[i] = 1.0f;
  for (call = 0; call < 4; call++) {
    test_fill_normal(buf, D, 2000u + (uint64_t)call);
    if (call > 0)
      for (i = 0; i < D; i++) w[i] = hand_cube(w[i], buf[i], prev[i], rate, 0.0f, 2.0f);
    for (i = 0; i < D; i++) { key[i] = fabsf(w[i] * buf[i]); plain[i] = fabsf(buf[i]); }
    hand_select(key, D, K, sel);
    hand_select(plain, D, K, selPlain);
    for (i = 0; i < D; i++) {
      want[i] = sel[i] ? 0.0f + w[i] * buf[i] : 0.0f;
      if (call > 0) differs |= sel[i] != selPlain[i];
      else ck_assert_int_eq(sel[i], selPlain[i]); /* first call: no step, TopK */
    }
    memcpy(prev, buf, sizeof(prev));
    ar(a, buf, o, D);
    ck_assert_msg(!differ(o, want, D), "online call %d differs at %ld", call, test_first_difference(o, want, D));
  }
  ck_assert(differs); /* the weights changed a selection */
  sparcclCommDestroy(a);
}
END_TEST

/* ================================================================ scaling, stats */

START_TEST(test_scale_state) {
  enum { D = 16, K = 4 };
  sparcclConfig_t c = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  sparcclComm_t a, b;
  float g1[D], g2[D], e[D], want[D], o[D], ob[D], x[D], key[D], h[D], H[D], sent[D];
  int sel[D];
  size_t i;
  a = test_comm_self(&c);
  b = test_comm_self(&c);
  test_fill_normal(g1, D, 2100u);
  test_fill_normal(g2, D, 2101u);
  memset(e, 0, sizeof(e));
  hand_ef_topk(e, g1, want, D, K);
  ar(a, g1, o, D);
  ar(b, g1, ob, D);
  ck_assert_bitwise_eq(o, want, D);
  ck_assert_int_eq(sparcclScaleState(a, 3.0f), sparcclSuccess);
  for (i = 0; i < D; i++) e[i] *= 3.0f;
  memcpy(x, g2, sizeof(x));
  hand_ef_topk(e, g2, want, D, K);
  memcpy(g1, x, sizeof(g1)); /* same key (g1's address), new gradient */
  ar(a, g1, o, D);
  ar(b, g1, ob, D);
  ck_assert_bitwise_eq(o, want, D);
  ck_assert(differ(o, ob, D));
  sparcclCommDestroy(a);
  sparcclCommDestroy(b);

  /* ef21: h and H scale too. */
  c.feedback = sparcclFeedbackEF21;
  a = test_comm_self(&c);
  test_fill_normal(g1, D, 2200u);
  for (i = 0; i < D; i++) key[i] = fabsf(g1[i]);
  hand_select(key, D, K, sel);
  for (i = 0; i < D; i++) {
    sent[i] = sel[i] ? g1[i] : 0.0f;
    h[i] = 0.0f + sent[i];
    H[i] = 0.0f + (0.0f + sent[i]) / 1.0f;
  }
  ar(a, g1, o, D);
  for (i = 0; i < D; i++) want[i] = H[i] * 1.0f;
  ck_assert_bitwise_eq(o, want, D);
  ck_assert_int_eq(sparcclScaleState(a, 2.0f), sparcclSuccess);
  for (i = 0; i < D; i++) { h[i] *= 2.0f; H[i] *= 2.0f; }
  test_fill_normal(g1, D, 2201u);
  for (i = 0; i < D; i++) { x[i] = g1[i] - h[i]; key[i] = fabsf(x[i]); }
  hand_select(key, D, K, sel);
  for (i = 0; i < D; i++) {
    float s = sel[i] ? 0.0f + x[i] : 0.0f;
    H[i] = H[i] + s / 1.0f;
    want[i] = H[i] * 1.0f;
  }
  ar(a, g1, o, D);
  ck_assert_bitwise_eq(o, want, D);
  sparcclCommDestroy(a);
}
END_TEST

START_TEST(test_stats) {
  sparcclConfig_t c = test_config(sparcclTopK, sparcclFeedbackEF, 0.1, 50);
  sparcclComm_t a = test_comm_self(&c);
  size_t layout[2] = {100, 10};
  float buf[110], o[110], big[1000], ob[1000];
  sparcclStats_t s;
  int t;
  s = stats(a);
  ck_assert(s.calls == 0 && s.layerSets == 0 && s.bytesSent == 0 && s.skippedSteps == 0 && s.restarts == 0);
  ck_assert_int_eq(sparcclRegisterLayout(a, buf, 2, layout), sparcclSuccess);
  s = stats(a);
  ck_assert(s.layerSets == 1 && s.layersSparse == 1 && s.layersDense == 1);
  ck_assert(s.stateBytes >= 100 * sizeof(float)); /* e of the sparse layer at least */
  for (t = 0; t < 3; t++) {
    test_fill_normal(buf, 110, 2300u + (uint64_t)t);
    ar(a, buf, o, 110);
  }
  s = stats(a);
  ck_assert(s.calls == 3);
  /* SPEC 4: 10 indices (48 B), 10 values (48 B), 10 dense floats (48 B), 1 flag (16 B),
   * the call check (16 B). */
  ck_assert_msg(s.bytesSent == 3 * 176, "bytesSent %llu", s.bytesSent);
  ck_assert(s.bytesDense == 3 * 110 * 4);
  ck_assert(s.skippedSteps == 0);
  /* Non-finite in the sparse layer: a skipped step.  In the dense layer: a plain sum. */
  buf[7] = INFINITY;
  ar(a, buf, o, 110);
  ck_assert(stats(a).skippedSteps == 1);
  ck_assert(isnan(o[0]) && isnan(o[99]));
  buf[7] = 1.0f;
  buf[105] = NAN;
  ar(a, buf, o, 110);
  ck_assert(stats(a).skippedSteps == 1);
  ck_assert(isnan(o[105]) && !isnan(o[0]));
  ck_assert(stats(a).calls == 5);
  /* A large sparse layer sends much less than dense. */
  test_fill_normal(big, 1000, 2400u);
  ar(a, big, ob, 1000);
  s = stats(a);
  ck_assert(s.layerSets == 2 && s.layersSparse == 2 && s.layersDense == 1);
  ck_assert(s.bytesSent == 5 * 176 + 832); /* k = 100: 400 + 400 + 16 + 16 */
  ck_assert(s.bytesDense == 5 * 440 + 4000);
  ck_assert(s.calls == 6);
  ck_assert_int_eq(sparcclRelease(a, big, 1000), sparcclSuccess);
  s = stats(a);
  ck_assert(s.layerSets == 1 && s.layersSparse == 1 && s.layersDense == 1);
  ck_assert(s.stateBytes > 0);
  ck_assert_int_eq(sparcclRestart(a), sparcclSuccess);
  ck_assert(stats(a).restarts == 1);
  sparcclCommDestroy(a);
}
END_TEST

Suite* make_state_suite(void) {
  Suite* s = suite_create("state");
  TCase* keys = tcase_create("keys and layouts");
  TCase* sl = tcase_create("save and load");
  TCase* rs = tcase_create("restarts");
  TCase* imp = tcase_create("importance");
  TCase* misc = tcase_create("scale and stats");
  tcase_set_timeout(sl, 60);
  tcase_add_test(keys, test_tagged_follows_tag);
  tcase_add_test(keys, test_tags_independent);
  tcase_add_test(keys, test_release_fresh_state);
  tcase_add_test(keys, test_layout_registration);
  tcase_add_test(sl, test_saveload_roundtrip);
  tcase_add_test(sl, test_saveload_online_and_restarts);
  tcase_add_test(sl, test_saveload_loss_history);
  tcase_add_test(sl, test_load_refusals);
  tcase_add_test(rs, test_restart_every);
  tcase_add_test(rs, test_restart_ratio);
  tcase_add_test(rs, test_restart_loss);
  tcase_add_test(rs, test_restart_explicit);
  tcase_add_test(imp, test_importance_probe_and_cube);
  tcase_add_test(imp, test_importance_tagged);
  tcase_add_test(imp, test_importance_simplex);
  tcase_add_test(imp, test_importance_on_topk);
  tcase_add_test(imp, test_importance_online);
  tcase_add_test(misc, test_scale_state);
  tcase_add_test(misc, test_stats);
  suite_add_tcase(s, keys);
  suite_add_tcase(s, sl);
  suite_add_tcase(s, rs);
  suite_add_tcase(s, imp);
  suite_add_tcase(s, misc);
  return s;
}
