/* The float32 wire saturates like the narrow ones (SPEC 4: a finite gradient never becomes
 * Inf on the wire); the error buffer keeps what did not fit. */
#include <float.h>
#include <string.h>
#include "common.h"

START_TEST(test_float32_wire_saturates) {
  sparcclConfig_t config = test_config(sparcclImpK, sparcclFeedbackEF, 1.0, 1);
  sparcclComm_t comm;
  float g[2] = {1.0f, 1.0f}, q[2] = {1.0f, 1.0f}, out[2];
  volatile float big = 0.75f * FLT_MAX;
  float e0;
  config.importance = sparcclImportanceCube;
  config.importanceEta = 100.0; /* c = eta * gamma = 1 */
  config.importanceGamma = 0.01;
  comm = test_comm_self(&config);
  /* w <- min(max(1 + 1 * (1 * 1), 0), 2) = 2 on both elements */
  ck_assert_int_eq(sparcclImportanceUpdate(q, g, 2, sparcclFloat32, comm, NULL), sparcclSuccess);
  g[0] = big;
  g[1] = 1.0f;
  ck_assert_int_eq(sparcclAllReduce(g, out, 2, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
  /* w * a = 1.5 FLT_MAX overflows: sent as FLT_MAX, not Inf */
  ck_assert_float_eq(out[0], FLT_MAX);
  ck_assert_float_eq(out[1], 2.0f);
  /* e = a - sent keeps the remainder; the next step (g = 0) sends w * e */
  e0 = big - FLT_MAX;
  g[0] = 0.0f;
  g[1] = 0.0f;
  ck_assert_int_eq(sparcclAllReduce(g, out, 2, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
  ck_assert_float_eq(out[0], 2.0f * e0);
  ck_assert_float_eq(out[1], 2.0f * (1.0f - 2.0f));
  {
    sparcclStats_t stats;
    sparcclCommGetStats(comm, &stats);
    ck_assert_uint_eq(stats.skippedSteps, 0);
  }
  sparcclCommDestroy(comm);
}
END_TEST

Suite* make_wire_suite(void) {
  Suite* s = suite_create("wire");
  TCase* tc = tcase_create("float32 saturation");
  tcase_add_test(tc, test_float32_wire_saturates);
  suite_add_tcase(s, tc);
  return s;
}
