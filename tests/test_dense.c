/*
 * SPEC 9 by hand: warm-up's dense calls (src/dense.c) and the dgc feedback row, over several
 * steps with values small enough to follow on paper; restarts, save/load and scale in the
 * middle of warm-up and of dgc.  The matrices against the reference model are in
 * test_reference.c, test_phase.c, test_callback.c and tests/mpi.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"

/* One float32 SUM call in place of `count` elements on a one-rank comm; returns the output. */
static void step(sparcclComm_t comm, const float* g, float* out, size_t count) {
  memcpy(out, g, count * sizeof(float));
  ck_assert_int_eq(sparcclAllReduceTagged(out, out, count, sparcclFloat32, sparcclSum, 1, comm, NULL),
                   sparcclSuccess);
}

static void expect(const float* got, const float* want, size_t n, int at) {
  size_t i;
  for (i = 0; i < n; i++)
    ck_assert_msg(memcmp(&got[i], &want[i], sizeof(float)) == 0, "call %d element %zu: %g, want %g",
                  at, i, (double)got[i], (double)want[i]);
}

static sparcclComm_t comm_with(int compressor, int feedback, double density, size_t minSparse,
                               size_t warmup, double momentum) {
  sparcclConfig_t c = test_config(compressor, feedback, density, minSparse);
  c.warmupSteps = warmup;
  c.momentum = momentum;
  return test_comm_self(&c);
}

/* ef-topk, k = 2 of 8, two dense calls: they send g exactly and leave e at 0, so the third
 * call selects on g alone; the fourth sees the third's error. */
START_TEST(test_warmup_by_hand) {
  sparcclComm_t comm = comm_with(sparcclTopK, sparcclFeedbackEF, 0.25, 1, 2, 0.9);
  const float g[4][8] = {{1, -2, 3, 0.5f, 7, 0, 0, -9}, {0.25f, 0, 0, 0, 0, 0, 4, 0},
                         {1, 2, 3, 4, 0, 0, 0, 0}, {1, 0, 0, 0, 0, 0, 0, 0}};
  const float want[4][8] = {{1, -2, 3, 0.5f, 7, 0, 0, -9}, {0.25f, 0, 0, 0, 0, 0, 4, 0},
                            {0, 0, 3, 4, 0, 0, 0, 0}, /* e = (1, 2, 0, ...) */
                            {2, 2, 0, 0, 0, 0, 0, 0}}; /* a = (2, 2, 0, ...): ties, lower index */
  float out[8];
  sparcclStats_t stats;
  int s;
  for (s = 0; s < 4; s++) {
    step(comm, g[s], out, 8);
    expect(out, want[s], 8, s);
  }
  ck_assert_int_eq(sparcclCommGetStats(comm, &stats), sparcclSuccess);
  ck_assert_uint_eq(stats.calls, 4);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* ef21, k = 1 of 4, one dense call: h <- g and H <- s / n, so the next call compresses only
 * what changed, and its output H * n is the gradient exactly. */
START_TEST(test_warmup_ef21_by_hand) {
  sparcclComm_t comm = comm_with(sparcclTopK, sparcclFeedbackEF21, 0.25, 1, 1, 0.9);
  const float g1[4] = {1, 2, 3, 4}, g2[4] = {1, 2, 3, 5}, g3[4] = {0, 2, 3, 5};
  float out[4];
  step(comm, g1, out, 4);
  expect(out, g1, 4, 0);
  step(comm, g2, out, 4); /* g - h = (0, 0, 0, 1) */
  expect(out, g2, 4, 1);
  step(comm, g3, out, 4); /* g - h = (-1, 0, 0, 0) */
  expect(out, g3, 4, 2);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* A NaN in a dense call: the layer's output all NaN, its state and step untouched, but the
 * call counts toward the warm-up (it returned sparcclSuccess); then a NaN after warm-up. */
START_TEST(test_warmup_nan_by_hand) {
  sparcclComm_t comm = comm_with(sparcclTopK, sparcclFeedbackEF, 0.25, 1, 2, 0.9);
  const float g1[4] = {1, NAN, 0, 0}, g2[4] = {0, 0, 2, 1}, g3[4] = {0, 1, 0, 0},
              g4[4] = {0, 0, 0, INFINITY}, g5[4] = {0, 0, 0, 0};
  const float want3[4] = {0, 1, 0, 0}, want5[4] = {0, 0, 0, 0};
  float out[4];
  sparcclStats_t stats;
  int i;
  step(comm, g1, out, 4);
  for (i = 0; i < 4; i++) ck_assert(isnan(out[i]));
  step(comm, g2, out, 4); /* the second and last dense call */
  expect(out, g2, 4, 1);
  step(comm, g3, out, 4); /* compressed: e was never touched, k = 1 */
  expect(out, want3, 4, 2);
  step(comm, g4, out, 4); /* skipped: e stays 0 */
  for (i = 0; i < 4; i++) ck_assert(isnan(out[i]));
  step(comm, g5, out, 4);
  expect(out, want5, 4, 4);
  ck_assert_int_eq(sparcclCommGetStats(comm, &stats), sparcclSuccess);
  ck_assert_uint_eq(stats.skippedSteps, 2);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* dgc-topk, momentum 0.5, k = 1 of 4: u <- 0.5 u + g, a = e + u, e <- a - sent, u masked. */
START_TEST(test_dgc_by_hand) {
  sparcclComm_t comm = comm_with(sparcclTopK, sparcclFeedbackDGC, 0.25, 1, 0, 0.5);
  const float g[5][4] = {{1, 2, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 0}, {0, 0, 0, 3}, {0, 0, 0, 0}};
  const float want[5][4] = {
      {0, 2, 0, 0},    /* u = (1, 2, 0, 0), a = u; e = (1, 0, 0, 0), u = (1, 0, 0, 0) */
      {1.5f, 0, 0, 0}, /* u = (0.5, 0, 1, 0), a = (1.5, 0, 1, 0); e = (0, 0, 1, 0), u = (0, 0, 1, 0) */
      {0, 0, 1.5f, 0}, /* u = (0, 0, 0.5, 0), a = (0, 0, 1.5, 0); e = u = 0 */
      {0, 0, 0, 3},    /* u = (0, 0, 0, 3) = a; e = 0, u = 0 */
      {0, 0, 0, 0}};
  float out[4];
  int s;
  for (s = 0; s < 5; s++) {
    step(comm, g[s], out, 4);
    expect(out, want[s], 4, s);
  }
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* Under dgc a layer below minSparseCount keeps u too (no masking: it sends u whole) and
 * follows the skip rule; the sparse layer beside it is dgc-topk. */
START_TEST(test_dgc_small_layer_by_hand) {
  sparcclComm_t comm = comm_with(sparcclTopK, sparcclFeedbackDGC, 0.25, 4, 0, 0.5);
  const size_t layout[2] = {3, 4}; /* dense, sparse */
  const float g[4][7] = {{1, 1, 1, 0, 4, 0, 0}, {0, 0, 0, 0, 0, 0, 0},
                         {NAN, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0}};
  const float want0[7] = {1, 1, 1, 0, 4, 0, 0}, want1[7] = {0.5f, 0.5f, 0.5f, 0, 0, 0, 0},
              want3[7] = {0.25f, 0.25f, 0.25f, 0, 0, 0, 0};
  float out[7];
  int i;
  ck_assert_int_eq(sparcclRegisterLayoutTagged(comm, 1, 2, layout), sparcclSuccess);
  step(comm, g[0], out, 7);
  expect(out, want0, 7, 0);
  step(comm, g[1], out, 7);
  expect(out, want1, 7, 1);
  step(comm, g[2], out, 7); /* the small layer skipped, u kept; the sparse one completes */
  for (i = 0; i < 3; i++) ck_assert(isnan(out[i]));
  for (i = 3; i < 7; i++) ck_assert(out[i] == 0.0f);
  step(comm, g[3], out, 7);
  expect(out, want3, 7, 3);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* A restart in the middle of warm-up does not restart it (the key's call count is state);
 * under dgc it resets u, so a zero gradient then sends zeros. */
START_TEST(test_restart_mid_warmup_and_dgc) {
  sparcclComm_t comm = comm_with(sparcclTopK, sparcclFeedbackDGC, 0.25, 1, 2, 0.5);
  const float g1[4] = {1, 2, 3, 4}, zero[4] = {0, 0, 0, 0}, g3[4] = {8, 0, 0, 0};
  const float want2[4] = {0.5f, 1, 1.5f, 2}, want3[4] = {8, 0, 0, 0};
  float out[4];
  step(comm, g1, out, 4); /* dense: u = g1 */
  expect(out, g1, 4, 0);
  step(comm, zero, out, 4); /* dense: u = 0.5 g1 */
  expect(out, want2, 4, 1);
  ck_assert_int_eq(sparcclRestart(comm), sparcclSuccess);
  step(comm, g3, out, 4); /* sparse now (2 calls made), u and e from 0: a = g3 */
  expect(out, want3, 4, 2);
  ck_assert_int_eq(sparcclRestart(comm), sparcclSuccess);
  step(comm, zero, out, 4);
  expect(out, zero, 4, 3);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* Save in the middle of warm-up (_i 0) or of dgc (_i 1), go on; a fresh comm that loads the
 * file and makes the same calls gives the same bits. */
START_TEST(test_save_load_mid_warmup_and_dgc) {
  enum { D = 5000, AFTER = 4 };
  const int feedback = _i ? sparcclFeedbackDGC : sparcclFeedbackEF21;
  char path[64];
  static float g[AFTER + 2][D], a[AFTER][D], b[D];
  sparcclComm_t first = comm_with(sparcclTopK, feedback, 0.01, 100, _i ? 1 : 4, 0.9), second;
  int s;
  snprintf(path, sizeof(path), "/tmp/sparccl_test_dense_%d_%d", (int)getpid(), _i);
  for (s = 0; s < AFTER + 2; s++) test_fill_normal(g[s], D, 900u + (uint64_t)s);
  step(first, g[0], b, D);
  step(first, g[1], b, D);
  ck_assert_int_eq(sparcclSaveState(first, path), sparcclSuccess);
  for (s = 0; s < AFTER; s++) step(first, g[2 + s], a[s], D); /* warm-up ends at call 4 */
  second = comm_with(sparcclTopK, feedback, 0.01, 100, _i ? 1 : 4, 0.9);
  ck_assert_int_eq(sparcclRegisterLayoutTagged(second, 1, 1, (const size_t[]){D}), sparcclSuccess);
  ck_assert_int_eq(sparcclLoadState(second, path), sparcclSuccess);
  for (s = 0; s < AFTER; s++) {
    step(second, g[2 + s], b, D);
    ck_assert_msg(memcmp(a[s], b, sizeof(b)) == 0, "call %d after the load differs", 2 + s);
  }
  unlink(path);
  ck_assert_int_eq(sparcclCommDestroy(first), sparcclSuccess);
  ck_assert_int_eq(sparcclCommDestroy(second), sparcclSuccess);
}
END_TEST

/* Scale multiplies u like e: scaling by 2 after a call, then feeding 2 g, is the same as
 * having fed 2 g throughout (powers of two are exact). */
START_TEST(test_scale_covers_momentum) {
  enum { D = 3000 };
  static float g1[D], g2[D], g1x2[D], g2x2[D], a[D], b[D];
  sparcclComm_t scaled = comm_with(sparcclTopK, sparcclFeedbackDGC, 0.01, 100, 0, 0.9);
  sparcclComm_t doubled = comm_with(sparcclTopK, sparcclFeedbackDGC, 0.01, 100, 0, 0.9);
  size_t i;
  test_fill_normal(g1, D, 31);
  test_fill_normal(g2, D, 32);
  for (i = 0; i < D; i++) { g1x2[i] = 2.0f * g1[i]; g2x2[i] = 2.0f * g2[i]; }
  step(scaled, g1, a, D);
  ck_assert_int_eq(sparcclScaleState(scaled, 2.0f), sparcclSuccess);
  step(scaled, g2x2, a, D);
  step(doubled, g1x2, b, D);
  step(doubled, g2x2, b, D);
  ck_assert(memcmp(a, b, sizeof(a)) == 0);
  ck_assert_int_eq(sparcclCommDestroy(scaled), sparcclSuccess);
  ck_assert_int_eq(sparcclCommDestroy(doubled), sparcclSuccess);
}
END_TEST

Suite* make_dense_suite(void) {
  Suite* s = suite_create("warm-up and dgc (SPEC 9)");
  TCase* tc = tcase_create("by hand");
  tcase_add_test(tc, test_warmup_by_hand);
  tcase_add_test(tc, test_warmup_ef21_by_hand);
  tcase_add_test(tc, test_warmup_nan_by_hand);
  tcase_add_test(tc, test_dgc_by_hand);
  tcase_add_test(tc, test_dgc_small_layer_by_hand);
  tcase_add_test(tc, test_restart_mid_warmup_and_dgc);
  tcase_add_loop_test(tc, test_save_load_mid_warmup_and_dgc, 0, 2);
  tcase_add_test(tc, test_scale_covers_momentum);
  suite_add_tcase(s, tc);
  return s;
}
