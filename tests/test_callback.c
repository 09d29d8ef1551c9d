/* The callback comm (SPEC 10, src/callback.c): n ranks as n threads of this process, their
 * allgather a shared buffer between barriers.  Every rank's output is bitwise the others'
 * and the naive reference model's (tests/reference.c); a failing allgather fails the call
 * on every rank with sparcclRemoteError and leaves the state as it was. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "reference.h"

enum { MAX_RANKS = 4, COUNT = 9000, STEPS = 5, FAIL_NONE = -1 };

typedef struct {
  int nranks;
  pthread_barrier_t barrier;
  unsigned char* slots;   /* nranks x cap */
  size_t cap, bytes[MAX_RANKS];
  int bigExchanges;       /* exchanges of more than 64 bytes so far (the calls' blocks) */
  int mismatches;         /* exchanges the ranks entered with different sizes (never, SPEC 4) */
  int failAt;             /* this big exchange fails on every rank (FAIL_NONE: none) */
} fabric_t;

typedef struct {
  fabric_t* fabric;
  int rank;
  sparcclConfig_t config;
  float grads[STEPS][COUNT];
  float out[STEPS][COUNT];
  sparcclResult_t results[STEPS];
  sparcclResult_t init;
  int disagreeAt;         /* at this step the odd ranks call a new key (tag 6), the rest tag 5 */
} rank_t;

static int fabricAllgather(const void* send, void* recv, size_t bytes, void* user) {
  rank_t* me = (rank_t*)user;
  fabric_t* f = me->fabric;
  int r, same = 1, fail;
  if (bytes > f->cap) return 1; /* never happens below: every rank says so at the check */
  memcpy(f->slots + (size_t)me->rank * f->cap, send, bytes);
  f->bytes[me->rank] = bytes;
  pthread_barrier_wait(&f->barrier);
  for (r = 0; r < f->nranks; r++) same &= f->bytes[r] == bytes;
  if (!same && me->rank == 0) f->mismatches++;
  for (r = 0; same && r < f->nranks; r++)
    memcpy((unsigned char*)recv + (size_t)r * bytes, f->slots + (size_t)r * f->cap, bytes);
  fail = bytes > 64 && f->bigExchanges == f->failAt;
  pthread_barrier_wait(&f->barrier);
  if (me->rank == 0 && bytes > 64) f->bigExchanges++;
  pthread_barrier_wait(&f->barrier);
  return !same || fail;
}

static void* runRank(void* arg) {
  rank_t* me = (rank_t*)arg;
  sparcclComm_t comm = NULL;
  int s;
  me->init = sparcclCommInitCallback(&comm, me->fabric->nranks, me->rank, fabricAllgather, me,
                                     &me->config);
  if (me->init != sparcclSuccess) return NULL;
  for (s = 0; s < STEPS; s++) {
    memset(me->out[s], 0, sizeof(me->out[s]));
    const unsigned long long tag = s == me->disagreeAt && me->rank % 2 ? 6 : 5;
    me->results[s] = sparcclAllReduceTagged(me->grads[s], me->out[s], COUNT, sparcclFloat32,
                                            sparcclSum, tag, comm, NULL);
  }
  sparcclCommDestroy(comm);
  return NULL;
}

/* compressor, feedback, warm-up calls (SPEC 9: dense calls as allgathers of whole vectors) */
static const int kMethods[][3] = {{sparcclTopK, sparcclFeedbackEF, 0}, {sparcclRandK, sparcclFeedbackSCAM, 0},
                                  {sparcclImpK, sparcclFeedbackEF21, 0}, {sparcclTopK, sparcclFeedbackNone, 0},
                                  {sparcclTopK, sparcclFeedbackDGC, 2}, {sparcclImpK, sparcclFeedbackEF21, 3}};
enum { NMETHODS = sizeof(kMethods) / sizeof(kMethods[0]) };

/* _i: method (_i % NMETHODS), ranks (1 + _i / NMETHODS % 4), a failing exchange at call 2
 * (4 * NMETHODS <= _i < 8 * NMETHODS), or at call 2 the odd ranks on a new key while the
 * others call the live one (_i >= 8 * NMETHODS, 2 to 4 ranks): refused on every rank by
 * the size agreement, the callback never entered with different sizes. */
START_TEST(test_callback_ranks) {
  const int method = _i % NMETHODS, disagree = _i >= 8 * NMETHODS;
  const int nranks = disagree ? 2 + (_i / NMETHODS) % 3 : 1 + (_i / NMETHODS) % 4;
  const int failAt = _i >= 4 * NMETHODS ? 2 : FAIL_NONE;
  static rank_t ranks[MAX_RANKS];
  pthread_t threads[MAX_RANKS];
  fabric_t fabric;
  ref_config_t rc;
  ref_model_t* ref;
  static float want[COUNT];
  int r, s;
  memset(&fabric, 0, sizeof(fabric));
  fabric.nranks = nranks;
  fabric.cap = 16 * COUNT;
  fabric.failAt = disagree ? FAIL_NONE : failAt;
  fabric.slots = (unsigned char*)calloc((size_t)nranks, fabric.cap);
  ck_assert(fabric.slots != NULL);
  pthread_barrier_init(&fabric.barrier, NULL, (unsigned)nranks);
  for (r = 0; r < nranks; r++) {
    ranks[r].fabric = &fabric;
    ranks[r].rank = r;
    ranks[r].config = test_config(kMethods[method][0], kMethods[method][1], 0.01, 100);
    ranks[r].config.seed = 99;
    ranks[r].config.sharedRandomness = 0;
    ranks[r].config.importance = sparcclImportanceNone;
    ranks[r].config.wireType = sparcclFloat32;
    ranks[r].config.warmupSteps = (size_t)kMethods[method][2];
    ranks[r].disagreeAt = disagree ? failAt : FAIL_NONE;
    for (s = 0; s < STEPS; s++) test_fill_normal(ranks[r].grads[s], COUNT, 3000u + 17u * (uint64_t)s + (uint64_t)r);
  }
  for (r = 0; r < nranks; r++) ck_assert_int_eq(pthread_create(&threads[r], NULL, runRank, &ranks[r]), 0);
  for (r = 0; r < nranks; r++) pthread_join(threads[r], NULL);
  pthread_barrier_destroy(&fabric.barrier);
  free(fabric.slots);
  ck_assert_int_eq(fabric.mismatches, 0);

  memset(&rc, 0, sizeof(rc));
  rc.compressor = kMethods[method][0];
  rc.feedback = kMethods[method][1];
  rc.warmupSteps = (size_t)kMethods[method][2];
  rc.momentum = 0.9;
  rc.density = 0.01;
  rc.minSparseCount = 100;
  rc.wireType = sparcclFloat32;
  rc.seed = 99;
  rc.op = sparcclSum;
  rc.dtype = sparcclFloat32;
  ref = ref_create(&rc, nranks, COUNT, 0, NULL, 0);
  for (s = 0; s < STEPS; s++) {
    const void* grads[MAX_RANKS];
    const int failed = s == failAt;
    for (r = 0; r < nranks; r++) {
      ck_assert_int_eq(ranks[r].init, sparcclSuccess);
      const sparcclResult_t expect = !failed ? sparcclSuccess
                                     : disagree ? sparcclInvalidUsage : sparcclRemoteError;
      ck_assert_msg(ranks[r].results[s] == expect,
                    "rank %d step %d: %d", r, s, ranks[r].results[s]);
      grads[r] = ranks[r].grads[s];
    }
    if (failed) { /* nothing written, and the reference never sees the call */
      static const float zero[COUNT];
      for (r = 0; r < nranks; r++) ck_assert(memcmp(ranks[r].out[s], zero, sizeof(zero)) == 0);
      continue;
    }
    ref_step(ref, grads, want);
    for (r = 0; r < nranks; r++) {
      ck_assert_msg(test_mismatch(ranks[r].out[s], want, COUNT, sparcclFloat32) < 0,
                    "rank %d step %d differs from the reference", r, s);
      ck_assert(memcmp(ranks[r].out[s], ranks[0].out[s], sizeof(want)) == 0);
    }
  }
  ref_destroy(ref);
}
END_TEST

static int failingAllgather(const void* send, void* recv, size_t bytes, void* user) {
  (void)send; (void)recv; (void)bytes; (void)user;
  return 3;
}

START_TEST(test_callback_arguments) {
  sparcclComm_t comm = (sparcclComm_t)(uintptr_t)0x1234;
  sparcclConfig_t c = test_config(sparcclTopK, sparcclFeedbackEF, 0.01, 100);
  ck_assert_int_eq(sparcclCommInitCallback(NULL, 1, 0, failingAllgather, NULL, &c), sparcclInvalidArgument);
  ck_assert_int_eq(sparcclCommInitCallback(&comm, 1, 0, NULL, NULL, &c), sparcclInvalidArgument);
  ck_assert_int_eq(sparcclCommInitCallback(&comm, 0, 0, failingAllgather, NULL, &c), sparcclInvalidArgument);
  ck_assert_int_eq(sparcclCommInitCallback(&comm, 2, 2, failingAllgather, NULL, &c), sparcclInvalidArgument);
  ck_assert_int_eq(sparcclCommInitCallback(&comm, 2, -1, failingAllgather, NULL, &c), sparcclInvalidArgument);
  /* the creation's own exchange fails */
  ck_assert_int_eq(sparcclCommInitCallback(&comm, 2, 0, failingAllgather, NULL, &c), sparcclRemoteError);
  ck_assert(comm == (sparcclComm_t)(uintptr_t)0x1234);
}
END_TEST

Suite* make_callback_suite(void) {
  Suite* s = suite_create("callback");
  TCase* tc = tcase_create("threads as ranks");
  tcase_add_loop_test(tc, test_callback_ranks, 0, 11 * NMETHODS);
  tcase_add_test(tc, test_callback_arguments);
  suite_add_tcase(s, tc);
  return s;
}
