/*
 * The pipelined host call (SPEC 4, pipelineBytes): outputs, state and counters bitwise those
 * of the one-block call over several steps, for every compressor x feedback, warm-up, both
 * exchanges (MPI_Iallgather, the blocking fallback), tiny/mid/huge groups, a NaN in a middle
 * group; calls that disagree and a bad index in a later group are refused with nothing written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "core.h"

static int p_rank, p_size;

static int agreeAll(int ok, const char* what, int line) {
  int all = 0;
  if (!ok) fprintf(stderr, "[rank %d] test_pipeline.c:%d: check failed: %s\n", p_rank, line, what);
  MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all;
}
#define PCHECK(cond) ck_assert_msg(agreeAll((cond) ? 1 : 0, #cond, __LINE__), "failed on some rank: %s", #cond)

/* Dense layers (under minSparseCount 4096) between sparse ones, and one large layer. */
enum { NLAYERS = 8 };
static const size_t kCounts[NLAYERS] = {300, 5000, 70, 9000, 4100, 20000, 64, 6000};
static size_t total(void) {
  size_t i, n = 0;
  for (i = 0; i < NLAYERS; i++) n += kCounts[i];
  return n;
}

/* Pipeline bytes: 1 (one layer per group), mid (groups of a few layers; the large layer
 * alone and over the limit), huge (one group: the one-block call). */
static const size_t kPipeline[3] = {1, 6000, (size_t)1 << 40};

static sparcclConfig_t caseConfig(int compressor, int feedback, int wire, int warmup) {
  sparcclConfig_t c = test_config(compressor, feedback, 0.05, 4096);
  c.wireType = wire;
  c.warmupSteps = (size_t)warmup;
  c.restartRatio = 1e6; /* the restart norm is summed too: over every group, in layer order */
  if (compressor == sparcclImpK || compressor == sparcclImpKSelect) c.importance = sparcclImportanceOnline;
  return c;
}

/* The set of tag 1, the key every test calls. */
static sparcclLayerSet_t* onlySet(sparcclComm_t comm) { return sparcclFindSet(comm, 1, 1, total()); }

/* Everything a step leaves behind: state arrays, counters, the restart history. */
static int sameState(sparcclComm_t a, sparcclComm_t b) {
  const sparcclLayerSet_t *x = onlySet(a), *y = onlySet(b);
  size_t i;
  int same = x->stateFloats == y->stateFloats && x->steps == y->steps && x->calls == y->calls &&
             (x->stateFloats == 0 || memcmp(x->stateMemory, y->stateMemory, x->stateFloats * sizeof(float)) == 0) &&
             memcmp(x->normHistory, y->normHistory, ((size_t)a->config.restartLag + 1) * sizeof(double)) == 0 &&
             a->stats.skippedSteps == b->stats.skippedSteps && a->stats.calls == b->stats.calls &&
             a->stats.restarts == b->stats.restarts;
  for (i = 0; i < x->nlayers; i++)
    same &= x->layers[i].step == y->layers[i].step &&
            x->layers[i].havePrevGrad == y->layers[i].havePrevGrad;
  return same;
}

static void fillStep(float* g, size_t n, int step, int nanLayer) {
  size_t i;
  test_fill_normal(g, n, 1000u * (uint64_t)step + 7u * (uint64_t)p_rank + 1u);
  if (nanLayer >= 0 && p_rank == p_size - 1) {
    size_t at = 0;
    for (i = 0; i < (size_t)nanLayer; i++) at += kCounts[i];
    g[at + kCounts[nanLayer] / 2] = 0.0f / 0.0f;
  }
}

/* Two comms, one pipelined: `steps` steps of the same gradients, compared after each. */
typedef struct {
  sparcclComm_t plain, piped;
  float *g, *send, *outPlain, *outPiped;
  size_t n;
} twins_t;

static void twinsInit(twins_t* t, sparcclConfig_t c, size_t pipelineBytes, int blocking) {
  t->n = total();
  c.pipelineBytes = 0;
  PCHECK(sparcclCommInitMpi(&t->plain, MPI_COMM_WORLD, &c) == sparcclSuccess);
  c.pipelineBytes = pipelineBytes;
  PCHECK(sparcclCommInitMpi(&t->piped, MPI_COMM_WORLD, &c) == sparcclSuccess);
  if (blocking) t->piped->transport->iallgather = NULL; /* the fallback: allgather per group */
  t->g = (float*)malloc(t->n * sizeof(float));
  t->send = (float*)malloc(t->n * sizeof(float));
  t->outPlain = (float*)malloc(t->n * sizeof(float));
  t->outPiped = (float*)malloc(t->n * sizeof(float));
  PCHECK(t->g && t->send && t->outPlain && t->outPiped);
  PCHECK(sparcclRegisterLayoutTagged(t->plain, 1, NLAYERS, kCounts) == sparcclSuccess);
  PCHECK(sparcclRegisterLayoutTagged(t->piped, 1, NLAYERS, kCounts) == sparcclSuccess);
}

static void twinsFree(twins_t* t) {
  PCHECK(sparcclCommDestroy(t->plain) == sparcclSuccess);
  PCHECK(sparcclCommDestroy(t->piped) == sparcclSuccess);
  free(t->g); free(t->send); free(t->outPlain); free(t->outPiped);
}

/* One step on both comms (in place: through send); op and dtype float32 or bfloat16. */
static void twinsStep(twins_t* t, int op, int inplace) {
  float* outs[2];
  sparcclComm_t comms[2];
  int k;
  outs[0] = t->outPlain; outs[1] = t->outPiped;
  comms[0] = t->plain; comms[1] = t->piped;
  for (k = 0; k < 2; k++) {
    float* out = inplace ? t->send : outs[k];
    memcpy(t->send, t->g, t->n * sizeof(float));
    PCHECK(sparcclAllReduceTagged(t->send, out, t->n, sparcclFloat32, (sparcclRedOp_t)op, 1,
                                  comms[k], NULL) == sparcclSuccess);
    if (inplace) memcpy(outs[k], t->send, t->n * sizeof(float));
  }
  PCHECK(memcmp(t->outPlain, t->outPiped, t->n * sizeof(float)) == 0);
  PCHECK(sameState(t->plain, t->piped));
}

static const int kComp[5] = {sparcclTopK, sparcclRandK, sparcclImpK, sparcclImpKSelect, sparcclImpKRandom};
static const int kFeed[5] = {sparcclFeedbackNone, sparcclFeedbackEF, sparcclFeedbackEF21,
                             sparcclFeedbackSCAM, sparcclFeedbackDGC};
static const int kWire[3] = {sparcclFloat32, sparcclBfloat16, sparcclFloat16};

/* _i: compressor x feedback (25), then each with warm-up (25), then randk with shared
 * randomness (no indices on the wire) x feedback (5); every pipelineBytes and both
 * exchanges in each; wire type, op and in place vary with _i. */
START_TEST(test_pipelined_equals_one_block) {
  int compressor = _i < 50 ? kComp[_i % 25 / 5] : sparcclRandK, feedback = kFeed[_i % 5];
  int warmup = _i >= 25 && _i < 50 ? 2 : 0;
  sparcclConfig_t c = caseConfig(compressor, feedback, kWire[_i % 3], warmup);
  int p, blocking, step;
  for (p = 0; p < 3; p++)
    for (blocking = 0; blocking < 2; blocking++) {
      twins_t t;
      size_t ngroups;
      c.sharedRandomness = _i >= 50;
      twinsInit(&t, c, kPipeline[p], blocking);
      ngroups = onlySet(t.piped)->ngroups;
      PCHECK(p == 2 ? ngroups == 1 : ngroups > 1);
      PCHECK(p != 0 || ngroups == NLAYERS);
      for (step = 0; step < 5; step++) {
        fillStep(t.g, t.n, step, -1);
        twinsStep(&t, (_i + step) % 2 ? sparcclAvg : sparcclSum, (_i + step + p) % 2);
      }
      /* bytesSent: every group's block, every sparse call */
      PCHECK(ngroups == 1 || t.piped->stats.bytesSent - t.plain->stats.bytesSent ==
                                 (unsigned long long)(5 - warmup) *
                                     (onlySet(t.piped)->pipelineBytes - onlySet(t.plain)->wire.blockBytes));
      twinsFree(&t);
    }
}
END_TEST

/* The mid groups: several layers in some, the large layer alone over the limit. */
START_TEST(test_mid_groups) {
  sparcclConfig_t c = caseConfig(sparcclTopK, sparcclFeedbackSCAM, sparcclFloat32, 0);
  twins_t t;
  const sparcclLayerSet_t* set;
  size_t j;
  int several = 0, over = 0;
  twinsInit(&t, c, kPipeline[1], 0);
  set = onlySet(t.piped);
  for (j = 0; j < set->ngroups; j++) {
    several |= set->groups[j].nlayers > 1;
    over |= set->groups[j].nlayers == 1 && set->groups[j].wire.blockBytes > kPipeline[1];
  }
  PCHECK(several && over && set->ngroups < NLAYERS);
  twinsFree(&t);
}
END_TEST

/* A NaN on one rank in a middle group's layer: that layer skipped (all NaN, state kept),
 * the rest as the one-block call, bitwise. */
START_TEST(test_nan_in_middle_group) {
  sparcclConfig_t c = caseConfig(_i % 2 ? sparcclImpK : sparcclTopK,
                                 _i % 2 ? sparcclFeedbackDGC : sparcclFeedbackEF21, sparcclFloat32, 0);
  twins_t t;
  int step;
  twinsInit(&t, c, kPipeline[0], 0);
  for (step = 0; step < 4; step++) {
    fillStep(t.g, t.n, step, step == 1 ? 3 : (step == 2 ? 2 : -1));
    twinsStep(&t, sparcclSum, step % 2);
  }
  /* step 2's NaN is in a dense layer: flagged (skipped) only under dgc, which keeps its u */
  PCHECK(t.piped->stats.skippedSteps == (c.feedback == sparcclFeedbackDGC ? 2u : 1u));
  twinsFree(&t);
}
END_TEST

/* A pipelined comm's save loads into a one-block comm (pipelineBytes is not in the config
 * fingerprint): the following steps bitwise the pipelined comm's. */
START_TEST(test_save_loads_across_pipelines) {
  sparcclConfig_t c = caseConfig(sparcclImpK, sparcclFeedbackEF21, sparcclFloat32, 0);
  sparcclComm_t fresh;
  twins_t t;
  char path[96];
  float* out;
  int step;
  twinsInit(&t, c, kPipeline[0], 0);
  for (step = 0; step < 3; step++) {
    fillStep(t.g, t.n, step, -1);
    twinsStep(&t, sparcclSum, 0);
  }
  snprintf(path, sizeof(path), "/tmp/sparccl_pipeline_%d_%d.state", (int)getpid(), p_rank);
  PCHECK(sparcclSaveState(t.piped, path) == sparcclSuccess);
  c.pipelineBytes = 0;
  PCHECK(sparcclCommInitMpi(&fresh, MPI_COMM_WORLD, &c) == sparcclSuccess);
  PCHECK(sparcclRegisterLayoutTagged(fresh, 1, NLAYERS, kCounts) == sparcclSuccess);
  PCHECK(sparcclLoadState(fresh, path) == sparcclSuccess);
  out = (float*)malloc(t.n * sizeof(float));
  for (step = 3; step < 5; step++) {
    fillStep(t.g, t.n, step, -1);
    twinsStep(&t, sparcclSum, 0);
    memcpy(t.send, t.g, t.n * sizeof(float));
    PCHECK(sparcclAllReduceTagged(t.send, out, t.n, sparcclFloat32, sparcclSum, 1, fresh, NULL) ==
           sparcclSuccess);
    PCHECK(memcmp(out, t.outPiped, t.n * sizeof(float)) == 0);
  }
  free(out);
  remove(path);
  PCHECK(sparcclCommDestroy(fresh) == sparcclSuccess);
  twinsFree(&t);
}
END_TEST

/* ------------------------------------------------------------ refusals (two ranks or more) */

/* A bad call on the pipelined comm only: refused on every rank with the output and state
 * untouched, and the next good call bitwise the control's (which never saw the bad one). */
static void refusedThenGood(twins_t* t, sparcclResult_t got, int step) {
  size_t i;
  int untouched = 1;
  PCHECK(got == sparcclInvalidUsage);
  for (i = 0; i < t->n; i++) untouched &= ((uint32_t*)t->outPiped)[i] == 0x7f7f7f7fu;
  PCHECK(untouched);
  PCHECK(sameState(t->plain, t->piped));
  fillStep(t->g, t->n, step, -1);
  twinsStep(t, sparcclSum, 0);
}

static const size_t kOther[2] = {5000, 5000};

/* _i: the pipeline bytes (tiny, mid) x the disagreement: op, another key of the same layout
 * (its groups agree, group 0's checks do not), a key of another layout (groups differ). */
START_TEST(test_disagreeing_calls_refused) {
  sparcclConfig_t c = caseConfig(sparcclTopK, sparcclFeedbackEF21, sparcclFloat32, 0);
  twins_t t;
  int kind = _i % 3, op = sparcclSum;
  uint64_t tag = 1;
  size_t count;
  twinsInit(&t, c, kPipeline[_i / 3], 0);
  PCHECK(sparcclRegisterLayoutTagged(t.piped, 3, NLAYERS, kCounts) == sparcclSuccess);
  PCHECK(sparcclRegisterLayoutTagged(t.piped, 2, 2, kOther) == sparcclSuccess);
  fillStep(t.g, t.n, 0, -1);
  twinsStep(&t, sparcclSum, 0);
  fillStep(t.g, t.n, 1, -1);
  memcpy(t.send, t.g, t.n * sizeof(float));
  memset(t.outPiped, 0x7f, t.n * sizeof(float));
  if (p_rank == 0 && kind == 0) op = sparcclAvg;
  if (p_rank == 0 && kind > 0) tag = kind == 1 ? 3 : 2;
  count = tag == 2 ? 10000 : t.n;
  refusedThenGood(&t, sparcclAllReduceTagged(t.send, t.outPiped, count, sparcclFloat32,
                                             (sparcclRedOp_t)op, tag, t.piped, NULL), 2);
  twinsFree(&t);
}
END_TEST

/* A test hook on the MPI transport: after the last group's wait, rank 0's block of that
 * group on every rank carries a repeated index (the second equal to the first). */
static sparcclResult_t (*g_wait)(sparcclTransport_t*, sparcclRequest_t*);
static sparcclComm_t g_hooked;
static size_t g_waits, g_corruptAt;

static sparcclResult_t corruptingWait(sparcclTransport_t* self, sparcclRequest_t* request) {
  sparcclResult_t res = g_wait(self, request);
  const sparcclLayerSet_t* set = onlySet(g_hooked);
  if (res == sparcclSuccess && ++g_waits == g_corruptAt) {
    uint32_t* indices = (uint32_t*)(g_hooked->recvBlocks + (size_t)p_size * set->groups[g_corruptAt - 1].sendOffset);
    indices[1] = indices[0];
  }
  return res;
}

START_TEST(test_bad_index_in_last_group_refused) {
  sparcclConfig_t c = caseConfig(sparcclTopK, sparcclFeedbackSCAM, sparcclFloat32, 0);
  twins_t t;
  sparcclResult_t res;
  twinsInit(&t, c, kPipeline[_i], 0);
  fillStep(t.g, t.n, 0, -1);
  twinsStep(&t, sparcclSum, 0);
  g_hooked = t.piped;
  g_wait = t.piped->transport->wait;
  g_waits = 0;
  g_corruptAt = onlySet(t.piped)->ngroups;
  PCHECK(onlySet(t.piped)->groups[g_corruptAt - 1].nsparse > 0);
  t.piped->transport->wait = corruptingWait;
  fillStep(t.g, t.n, 1, -1);
  memcpy(t.send, t.g, t.n * sizeof(float));
  memset(t.outPiped, 0x7f, t.n * sizeof(float));
  res = sparcclAllReduceTagged(t.send, t.outPiped, t.n, sparcclFloat32, sparcclSum, 1, t.piped, NULL);
  t.piped->transport->wait = g_wait;
  PCHECK(g_waits == g_corruptAt);
  refusedThenGood(&t, res, 2);
  twinsFree(&t);
}
END_TEST

Suite* make_pipeline_suite(int rank, int size) {
  Suite* s = suite_create("pipeline");
  TCase* tc = tcase_create("pipelined call");
  p_rank = rank;
  p_size = size;
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, test_pipelined_equals_one_block, 0, 55);
  tcase_add_test(tc, test_save_loads_across_pipelines);
  tcase_add_test(tc, test_mid_groups);
  tcase_add_loop_test(tc, test_nan_in_middle_group, 0, 2);
  /* with one rank no call can disagree with another's: registered from two ranks up */
  if (size > 1) {
    tcase_add_loop_test(tc, test_disagreeing_calls_refused, 0, 6);
    tcase_add_loop_test(tc, test_bad_index_in_last_group_refused, 0, 2);
  }
  suite_add_tcase(s, tc);
  return s;
}
