/* The call check and the received-index checks of SPEC 4 (src/callcheck.c), through a
 * transport that plays rank 0 of two: rank 1's block is rank 0's own, tampered with as
 * a disagreeing or hostile peer would.  A refused call returns sparcclInvalidUsage, writes
 * no output and changes no state: the next good call gives the bits of a comm that never
 * saw the bad one. */
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "core.h"

typedef enum {
  TAMPER_NONE, TAMPER_INDEX_OUTSIDE, TAMPER_INDEX_ORDER, TAMPER_SEQUENCE, TAMPER_FINGERPRINT,
  TAMPER_SHORT, TAMPER_COUNT, TAMPER_RANDOM = TAMPER_COUNT
} tamper_t;

typedef struct {
  tamper_t tamper;          /* applied to the next exchange of a whole block */
  size_t blockBytes;        /* the key's block size, once known */
  uint64_t random;          /* TAMPER_RANDOM's generator */
} fake_t;

static sparcclResult_t fakeAllgather(sparcclTransport_t* self, const void* send, void* recv,
                                     size_t bytes) {
  fake_t* f = (fake_t*)self->impl;
  uint8_t* slot1 = (uint8_t*)recv + bytes;
  memcpy(recv, send, bytes);
  if (bytes != f->blockBytes || f->tamper == TAMPER_NONE) {
    memcpy(slot1, send, bytes);
    return sparcclSuccess;
  }
  if (f->tamper == TAMPER_SHORT) {
    memcpy(slot1, send, 8); /* a peer in another, smaller exchange: the rest is stale */
  } else {
    sparcclCallCheck_t* check = (sparcclCallCheck_t*)(slot1 + bytes - SPARCCL_CALL_CHECK_BYTES);
    uint32_t* indices = (uint32_t*)slot1;
    memcpy(slot1, send, bytes);
    if (f->tamper == TAMPER_INDEX_OUTSIDE) indices[1] = 1000000u;
    if (f->tamper == TAMPER_INDEX_ORDER) { uint32_t t = indices[0]; indices[0] = indices[1]; indices[1] = t; }
    if (f->tamper == TAMPER_SEQUENCE) check->sequence++;
    if (f->tamper == TAMPER_FINGERPRINT) check->fingerprint ^= 2u;
    if (f->tamper == TAMPER_RANDOM) { /* 1 to 4 bytes anywhere in the block, any values */
      int n = 1 + (int)(test_random_u64(&f->random) % 4);
      while (n-- > 0) slot1[test_random_u64(&f->random) % bytes] = (uint8_t)test_random_u64(&f->random);
    }
  }
  f->tamper = TAMPER_NONE;
  return sparcclSuccess;
}

static void fakeDestroy(sparcclTransport_t* self) {
  free(self->impl);
  free(self);
}

static sparcclComm_t fakeComm(const sparcclConfig_t* config, fake_t** fake) {
  sparcclTransport_t* t = (sparcclTransport_t*)calloc(1, sizeof(*t));
  sparcclConfig_t resolved;
  sparcclComm_t comm = NULL;
  *fake = (fake_t*)calloc(1, sizeof(fake_t));
  ck_assert(t != NULL && *fake != NULL);
  t->rank = 0;
  t->nranks = 2;
  t->name = "tampering test transport";
  t->allgather = fakeAllgather;
  t->destroy = fakeDestroy;
  t->impl = *fake;
  ck_assert_int_eq(sparcclConfigResolve(config, &resolved), sparcclSuccess);
  ck_assert_int_eq(sparcclCommCreate(&comm, t, &resolved), sparcclSuccess);
  return comm;
}

enum { D = 5000 };

static void gradient(float* g, int step) { test_fill_normal(g, D, 4100u + (uint64_t)step); }

START_TEST(test_tampered_block_refused) {
  /* every kind of tamper, under ef (e must stay as it was) and ef21 (h, H too) */
  const tamper_t tamper = (tamper_t)(1 + _i % (TAMPER_COUNT - 1));
  const int feedback = _i < TAMPER_COUNT - 1 ? sparcclFeedbackEF : sparcclFeedbackEF21;
  sparcclConfig_t config = test_config(sparcclTopK, feedback, 0.01, 100);
  fake_t *fake, *controlFake;
  sparcclComm_t comm = fakeComm(&config, &fake), control = fakeComm(&config, &controlFake);
  static float g[D], out[D], want[D], before[D];
  sparcclStats_t stats;
  int step;
  for (step = 0; step < 2; step++) {
    gradient(g, step);
    ck_assert_int_eq(sparcclAllReduce(g, out, D, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(g, want, D, sparcclFloat32, sparcclSum, control, NULL), sparcclSuccess);
  }
  fake->blockBytes = comm->sets[0]->wire.blockBytes;
  /* the refused call: no output, no state change, not counted */
  gradient(g, 2);
  memcpy(before, out, sizeof(out));
  fake->tamper = tamper;
  ck_assert_int_eq(sparcclAllReduce(g, out, D, sparcclFloat32, sparcclSum, comm, NULL),
                   sparcclInvalidUsage);
  ck_assert_msg(memcmp(before, out, sizeof(out)) == 0, "a refused call wrote its output");
  ck_assert_int_eq(sparcclCommGetStats(comm, &stats), sparcclSuccess);
  ck_assert_uint_eq(stats.calls, 2);
  ck_assert_uint_eq(stats.refusedCalls, 1);
  /* the same call again, untampered, and one more: the bits of the comm that never saw it */
  for (step = 2; step < 4; step++) {
    gradient(g, step);
    ck_assert_int_eq(sparcclAllReduce(g, out, D, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(g, want, D, sparcclFloat32, sparcclSum, control, NULL), sparcclSuccess);
    ck_assert_msg(memcmp(out, want, sizeof(out)) == 0, "step %d after a refused call differs", step);
  }
  sparcclCommDestroy(comm);
  sparcclCommDestroy(control);
}
END_TEST

/* A probe of the same kind as the issue's: random bytes of a peer's block changed, 400
 * times.  Each call either succeeds (the change hit values, dense values or flags, which
 * are data) or is refused with nothing written; it never writes outside a buffer (the
 * sanitize run) and never leaves the state apart from a twin's: a refused call is made
 * again untampered, and then the next call is bitwise the twin's. */
START_TEST(test_random_corruptions) {
  sparcclConfig_t config = test_config(sparcclTopK, _i ? sparcclFeedbackSCAM : sparcclFeedbackEF, 0.01, 100);
  fake_t *fake, *twinFake;
  sparcclComm_t comm = fakeComm(&config, &fake), twin = fakeComm(&config, &twinFake);
  static float g[D], out[D], want[D], before[D];
  /* one sparse layer (a skip then leaves the whole state as it was) and a dense one */
  size_t layout[2] = {D - 50, 50};
  int t, refused = 0;
  unsigned long long skipped;
  sparcclStats_t stats;
  sparcclResult_t r;
  ck_assert_int_eq(sparcclRegisterLayout(comm, g, 2, layout), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(twin, g, 2, layout), sparcclSuccess);
  fake->blockBytes = comm->sets[0]->wire.blockBytes;
  fake->random = 7u + (uint64_t)_i;
  for (t = 0; t < 400; t++) {
    gradient(g, t);
    ck_assert_int_eq(sparcclAllReduce(g, want, D, sparcclFloat32, sparcclSum, twin, NULL), sparcclSuccess);
    memcpy(before, out, sizeof(out));
    fake->tamper = TAMPER_RANDOM;
    ck_assert_int_eq(sparcclCommGetStats(comm, &stats), sparcclSuccess);
    skipped = stats.skippedSteps;
    r = sparcclAllReduce(g, out, D, sparcclFloat32, sparcclSum, comm, NULL);
    ck_assert_msg(r == sparcclSuccess || r == sparcclInvalidUsage, "corruption %d: %d", t, r);
    ck_assert_int_eq(sparcclCommGetStats(comm, &stats), sparcclSuccess);
    if (r == sparcclInvalidUsage) {
      refused++;
      ck_assert_msg(memcmp(before, out, sizeof(out)) == 0, "corruption %d: a refused call wrote", t);
    }
    /* refused, or a layer skipped (a changed flag says non-finite): the state is as it was
     * before the call, so the call made again untampered is the twin's */
    if (r == sparcclInvalidUsage || stats.skippedSteps != skipped) {
      ck_assert_int_eq(sparcclAllReduce(g, out, D, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
      ck_assert_msg(memcmp(out, want, sizeof(out)) == 0, "corruption %d: the call made again differs", t);
    }
  }
  /* the probe reached both outcomes: the indices and the check are a share of the block */
  ck_assert_msg(refused > 10 && refused < 390, "%d of 400 refused", refused);
  gradient(g, 1000);
  ck_assert_int_eq(sparcclAllReduce(g, out, D, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
  ck_assert_int_eq(sparcclAllReduce(g, want, D, sparcclFloat32, sparcclSum, twin, NULL), sparcclSuccess);
  ck_assert(memcmp(out, want, sizeof(out)) == 0);
  sparcclCommDestroy(comm);
  sparcclCommDestroy(twin);
}
END_TEST

/* A check differs with the op, the dtype and the key, and a zeroed one never passes. */
START_TEST(test_check_fingerprint_fields) {
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.01, 100);
  fake_t* fake;
  sparcclComm_t comm = fakeComm(&config, &fake);
  static float g[D], out[D];
  sparcclLayerSet_t *a, *b;
  sparcclCallCheck_t base;
  gradient(g, 0);
  ck_assert_int_eq(sparcclAllReduceTagged(g, out, D, sparcclFloat32, sparcclSum, 7, comm, NULL), sparcclSuccess);
  ck_assert_int_eq(sparcclAllReduceTagged(g, out, D, sparcclFloat32, sparcclSum, 8, comm, NULL), sparcclSuccess);
  a = comm->sets[0];
  b = comm->sets[1];
  base = sparcclCallCheck(comm, a, sparcclFloat32, sparcclSum, SPARCCL_CALL_SPARSE);
  ck_assert(base.fingerprint & 1u);
  ck_assert_uint_eq(base.sequence, 2);
  ck_assert(base.fingerprint != sparcclCallCheck(comm, a, sparcclFloat32, sparcclAvg, SPARCCL_CALL_SPARSE).fingerprint);
  ck_assert(base.fingerprint != sparcclCallCheck(comm, a, sparcclBfloat16, sparcclSum, SPARCCL_CALL_SPARSE).fingerprint);
  ck_assert(base.fingerprint != sparcclCallCheck(comm, a, sparcclFloat32, sparcclSum, SPARCCL_CALL_DENSE).fingerprint);
  ck_assert(base.fingerprint != sparcclCallCheck(comm, b, sparcclFloat32, sparcclSum, SPARCCL_CALL_SPARSE).fingerprint);
  sparcclCommDestroy(comm);
}
END_TEST

Suite* make_callcheck_suite(void) {
  Suite* s = suite_create("callcheck");
  TCase* tc = tcase_create("tampered blocks");
  tcase_add_loop_test(tc, test_tampered_block_refused, 0, 2 * (TAMPER_COUNT - 1));
  tcase_add_test(tc, test_check_fingerprint_fields);
  tcase_add_loop_test(tc, test_random_corruptions, 0, 2);
  suite_add_tcase(s, tc);
  return s;
}
