/* The phase API (SPEC 10, src/phase.c) on one rank: compress, the caller's exchange (a copy
 * of the block), decompress give bitwise the outputs and the state of
 * sparcclAllReduceTagged, for every compressor x feedback x dtype; keys interleaved; a
 * second compress refused; an abandoned half leaves the state untouched; blocks that fail
 * the call check are refused with nothing written.  Several ranks: tests/mpi/test_trust.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"

enum { N = 7000 };

static void gradient(void* g, int dtype, int step, unsigned long long tag) {
  float tmp[N];
  size_t i;
  test_fill_normal(tmp, N, 6100u + 31u * (uint64_t)step + (uint64_t)tag);
  for (i = 0; i < N; i++) test_store_value(g, i, dtype, tmp[i]);
}

static unsigned char* stateOf(sparcclComm_t comm, long* size) {
  char path[] = "/tmp/sparccl_phase_XXXXXX";
  int fd = mkstemp(path);
  FILE* f;
  unsigned char* data;
  ck_assert_int_ge(fd, 0);
  close(fd);
  ck_assert_int_eq(sparcclSaveState(comm, path), sparcclSuccess);
  f = fopen(path, "rb");
  fseek(f, 0, SEEK_END);
  *size = ftell(f);
  fseek(f, 0, SEEK_SET);
  data = (unsigned char*)malloc((size_t)*size);
  ck_assert(fread(data, 1, (size_t)*size, f) == (size_t)*size);
  fclose(f);
  unlink(path);
  memset(data + 64, 0, 8); /* the save id, each save's own (src/checkpoint.c) */
  return data;
}

/* Every byte of the two comms' state files but the save id and the checksum over it. */
static void assertSameState(sparcclComm_t a, sparcclComm_t b) {
  long na, nb;
  unsigned char *da = stateOf(a, &na), *db = stateOf(b, &nb);
  ck_assert(na == nb && memcmp(da, db, (size_t)na - 8) == 0);
  free(da);
  free(db);
}

/* One call through the two halves; the exchange of one rank is a copy. */
static sparcclResult_t phaseCall(sparcclComm_t comm, const void* g, void* out, int dtype, int op,
                                 unsigned long long tag) {
  size_t bytes = 0;
  void* block;
  sparcclResult_t r;
  ck_assert_int_eq(sparcclBlockBytesTagged(comm, tag, &bytes), sparcclSuccess);
  block = malloc(bytes);
  r = sparcclCompressTagged(g, N, (sparcclDataType_t)dtype, tag, comm, block, NULL);
  if (r == sparcclSuccess)
    r = sparcclDecompressTagged(block, out, N, (sparcclDataType_t)dtype, (sparcclRedOp_t)op, tag, comm, NULL);
  free(block);
  return r;
}

static const int kDtypes[3] = {sparcclFloat32, sparcclFloat16, sparcclBfloat16};

/* 0..59: every compressor x feedback x dtype; 60..99 (SPEC 9): dgc under every compressor,
 * and warm-up (its dense calls: whole vectors in the phase blocks, the ring in the one
 * call) under every feedback, 0 to 2 dense calls before compression. */
START_TEST(test_phase_matches_one_call) {
  const int j = _i < 60 ? _i : _i - 60;
  const int compressor = j % 5, dtype = kDtypes[_i < 60 ? _i / 20 : j % 3];
  const int feedback = _i < 60 ? (j / 5) % 4 : j < 20 ? sparcclFeedbackDGC : (j / 5) % 4;
  const int op = _i % 2 ? sparcclAvg : sparcclSum;
  sparcclConfig_t c = test_config(compressor, feedback, 0.02, 100);
  sparcclComm_t phase, one;
  size_t layout[3] = {N - 1050, 1000, 50}; /* the last one dense */
  static unsigned char g[N * 4], a[N * 4], b[N * 4];
  int s;
  c.wireType = _i % 3 == 0 ? sparcclBfloat16 : sparcclFloat32;
  c.importance = compressor >= sparcclImpK && _i % 2 ? sparcclImportanceOnline : sparcclImportanceNone;
  c.warmupSteps = _i < 60 ? 0 : (size_t)(j % 3);
  c.momentum = j % 2 ? 0.9 : 0.25;
  phase = test_comm_self(&c);
  one = test_comm_self(&c);
  ck_assert_int_eq(sparcclRegisterLayoutTagged(phase, 9, 3, layout), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayoutTagged(one, 9, 3, layout), sparcclSuccess);
  for (s = 0; s < 4; s++) {
    size_t bytes = 0;
    ck_assert_int_eq(sparcclBlockBytesTagged(phase, 9, &bytes), sparcclSuccess);
    ck_assert(((size_t)s < c.warmupSteps) == (bytes > N * sizeof(float))); /* dense: whole x */
    gradient(g, dtype, s, 9);
    if (s == 2) test_store_value(g, 5, dtype, 1.0f / 0.0f); /* a skipped step in between */
    ck_assert_int_eq(phaseCall(phase, g, a, dtype, op, 9), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduceTagged(g, b, N, (sparcclDataType_t)dtype, (sparcclRedOp_t)op, 9, one, NULL),
                     sparcclSuccess);
    ck_assert_msg(memcmp(a, b, N * test_dtype_size(dtype)) == 0, "step %d differs", s);
  }
  assertSameState(phase, one);
  sparcclCommDestroy(phase);
  sparcclCommDestroy(one);
}
END_TEST

/* Two keys between their halves at once, finished in the other order; a second compress of
 * a pending key refused; an abandoned half; a decompress of blocks that fail the check. */
START_TEST(test_phase_keys_in_flight) {
  sparcclConfig_t c = test_config(sparcclTopK, _i ? sparcclFeedbackEF21 : sparcclFeedbackSCAM, 0.01, 100);
  sparcclComm_t phase = test_comm_self(&c), one = test_comm_self(&c);
  static float ga[N], gb[N], oa[N], ob[N], wa[N], wb[N], before[N];
  size_t bytes;
  unsigned char *blockA, *blockB;
  int s;
  size_t one_layer[1] = {N};
  gradient(ga, sparcclFloat32, 0, 1);
  /* the keys exist on both comms, created in the same order */
  ck_assert_int_eq(sparcclRegisterLayoutTagged(phase, 1, 1, one_layer), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayoutTagged(phase, 2, 1, one_layer), sparcclSuccess);
  ck_assert_int_eq(sparcclAllReduceTagged(ga, wa, N, sparcclFloat32, sparcclSum, 1, one, NULL), sparcclSuccess);
  ck_assert_int_eq(sparcclAllReduceTagged(ga, wb, N, sparcclFloat32, sparcclSum, 2, one, NULL), sparcclSuccess);
  ck_assert_int_eq(phaseCall(phase, ga, oa, sparcclFloat32, sparcclSum, 1), sparcclSuccess);
  ck_assert_int_eq(phaseCall(phase, ga, ob, sparcclFloat32, sparcclSum, 2), sparcclSuccess);
  ck_assert_int_eq(sparcclBlockBytesTagged(phase, 1, &bytes), sparcclSuccess);
  ck_assert_int_eq(sparcclBlockBytesTagged(phase, 3, &bytes), sparcclInvalidUsage); /* no such key */
  blockA = (unsigned char*)malloc(bytes);
  blockB = (unsigned char*)malloc(bytes);
  for (s = 1; s < 4; s++) {
    gradient(ga, sparcclFloat32, s, 1);
    gradient(gb, sparcclFloat32, s, 2);
    ck_assert_int_eq(sparcclCompressTagged(ga, N, sparcclFloat32, 1, phase, blockA, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclCompressTagged(gb, N, sparcclFloat32, 2, phase, blockB, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclCompressTagged(ga, N, sparcclFloat32, 1, phase, blockA, NULL), sparcclInvalidUsage);
    if (s == 2) { /* an exchange that failed: both halves abandoned, made again */
      ck_assert_int_eq(sparcclAbandonTagged(phase, 1), sparcclSuccess);
      ck_assert_int_eq(sparcclAbandonTagged(phase, 1), sparcclInvalidUsage);
      ck_assert_int_eq(sparcclAbandonTagged(phase, 2), sparcclSuccess);
      ck_assert_int_eq(sparcclDecompressTagged(blockA, oa, N, sparcclFloat32, sparcclSum, 1, phase, NULL),
                       sparcclInvalidUsage); /* nothing pending */
      ck_assert_int_eq(sparcclCompressTagged(ga, N, sparcclFloat32, 1, phase, blockA, NULL), sparcclSuccess);
      ck_assert_int_eq(sparcclCompressTagged(gb, N, sparcclFloat32, 2, phase, blockB, NULL), sparcclSuccess);
    }
    if (s == 3) { /* B's blocks given for A: refused, nothing written, A still pending */
      memcpy(before, oa, sizeof(oa));
      ck_assert_int_eq(sparcclDecompressTagged(blockB, oa, N, sparcclFloat32, sparcclSum, 1, phase, NULL),
                       sparcclInvalidUsage);
      ck_assert(memcmp(before, oa, sizeof(oa)) == 0);
    }
    ck_assert_int_eq(sparcclDecompressTagged(blockB, ob, N, sparcclFloat32, sparcclSum, 2, phase, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclDecompressTagged(blockA, oa, N, sparcclFloat32, sparcclSum, 1, phase, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduceTagged(ga, wa, N, sparcclFloat32, sparcclSum, 1, one, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduceTagged(gb, wb, N, sparcclFloat32, sparcclSum, 2, one, NULL), sparcclSuccess);
    ck_assert_msg(memcmp(oa, wa, sizeof(oa)) == 0 && memcmp(ob, wb, sizeof(ob)) == 0, "step %d differs", s);
  }
  assertSameState(phase, one);
  /* argument errors */
  ck_assert_int_eq(sparcclCompressTagged(ga, N, sparcclFloat32, 1, phase, NULL, NULL), sparcclInvalidArgument);
  ck_assert_int_eq(sparcclCompressTagged(ga, N, sparcclFloat32, 1, phase, blockA, NULL), sparcclSuccess);
  ck_assert_int_eq(sparcclDecompressTagged(blockA, oa, N - 1, sparcclFloat32, sparcclSum, 1, phase, NULL),
                   sparcclInvalidArgument);
  ck_assert_int_eq(sparcclDecompressTagged(blockA, oa, N, sparcclBfloat16, sparcclSum, 1, phase, NULL),
                   sparcclInvalidArgument);
  ck_assert_int_eq(sparcclDecompressTagged(NULL, oa, N, sparcclFloat32, sparcclSum, 1, phase, NULL),
                   sparcclInvalidArgument);
  ck_assert_int_eq(sparcclBlockBytesTagged(phase, 1, NULL), sparcclInvalidArgument);
  free(blockA);
  free(blockB);
  sparcclCommDestroy(phase); /* with a half still pending: freed */
  sparcclCommDestroy(one);
}
END_TEST

Suite* make_phase_suite(void) {
  Suite* s = suite_create("phase");
  TCase* tc = tcase_create("two halves");
  tcase_add_loop_test(tc, test_phase_matches_one_call, 0, 100);
  tcase_add_loop_test(tc, test_phase_keys_in_flight, 0, 2);
  suite_add_tcase(s, tc);
  return s;
}
