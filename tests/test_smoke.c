/* The shortest end-to-end path: one rank, topk + ef, two steps, hand-computed. */
#include <string.h>
#include "common.h"

START_TEST(test_topk_ef_two_steps) {
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  sparcclComm_t comm = test_comm_self(&config);
  float g1[8] = {1, -5, 2, 0.5f, 3, -3, 0, 4};
  float g2[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  float out[8];
  /* k = ceil(0.25 * 8) = 2; step 1: |a| = |g1|, largest -5 (1), 4 (7) */
  float want1[8] = {0, -5, 0, 0, 0, 0, 0, 4};
  /* e = {1,0,2,0.5,3,-3,0,0}; a = e + 1 = {2,1,3,1.5,4,-2,1,1}: largest 4 (4), 3 (2) */
  float want2[8] = {0, 0, 3, 0, 4, 0, 0, 0};
  ck_assert_int_eq(sparcclAllReduce(g1, out, 8, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
  ck_assert_bitwise_eq(out, want1, 8);
  ck_assert_int_eq(sparcclAllReduce(g2, out, 8, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
  /* g2 at another address than g1: a new key, fresh state -- so reuse g1's buffer */
  memcpy(g1, g2, sizeof(g2));
  ck_assert_int_eq(sparcclAllReduce(g1, out, 8, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
  ck_assert_bitwise_eq(out, want2, 8);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

Suite* make_smoke_suite(void) {
  Suite* s = suite_create("smoke");
  TCase* tc = tcase_create("end to end");
  tcase_add_test(tc, test_topk_ef_two_steps);
  suite_add_tcase(s, tc);
  return s;
}
