/*
 * The library on one rank against the naive reference model (tests/reference.c), bitwise,
 * over several steps: every compressor x feedback x gradient dtype x wire type, layer
 * sizes from 1 to ~1.5 million, multi-layer layouts with dense and sparse layers, SUM and
 * AVG, in place and not, and adversarial inputs (zeros, all equal, ties, huge values,
 * NaN/Inf).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "reference.h"
#include "sparccl_math.h"
#include "select_stream.h" /* sparcclStreamMinCount */

enum { IN_NORMAL, IN_ZEROS, IN_EQUAL, IN_TIES, IN_BIG, IN_SMALLINT, IN_ASCENDING, IN_DESCENDING,
       IN_OUTLIER };

static const int kCompressors[5] = {sparcclTopK, sparcclRandK, sparcclImpK, sparcclImpKSelect,
                                    sparcclImpKRandom};
static const int kFeedbacks[4] = {sparcclFeedbackNone, sparcclFeedbackEF, sparcclFeedbackEF21,
                                  sparcclFeedbackSCAM};
static const int kTypes[3] = {sparcclFloat32, sparcclFloat16, sparcclBfloat16};

/* A gradient of n elements of dtype. */
static void fill_input(void* buf, size_t n, int dtype, int kind, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 12345u;
  size_t i;
  for (i = 0; i < n; i++) {
    float v;
    switch (kind) {
      case IN_ZEROS: v = (test_random_u64(&s) & 1) ? 0.0f : -0.0f; break;
      case IN_EQUAL: v = 0.75f; break;
      case IN_TIES: v = 0.5f * (float)((int)(test_random_u64(&s) % 5) - 2); break;
      case IN_SMALLINT: v = (float)((int)(test_random_u64(&s) % 9) - 4); break;
      case IN_ASCENDING: v = (float)i * 0.001f - 1.0f; break; /* magnitudes fall, then rise */
      case IN_DESCENDING: v = (float)(n - i) * 0.25f; break;
      case IN_OUTLIER: /* one huge value among small ones: a sample misses it */
        v = i == n / 3 ? 1.0e30f : 0.001f * test_random_normal(&s);
        if (dtype != sparcclFloat32 && i == n / 3) v = 1.0e4f;
        break;
      case IN_BIG: /* over the float16 range: the fp16 wire saturates */
        v = test_random_normal(&s) * (dtype == sparcclFloat32 ? 1.0e5f : 1.0e4f);
        break;
      default: { /* normal, magnitudes spread over a few octaves */
        int octave = (int)(test_random_u64(&s) % 9) - 4;
        v = ldexpf(test_random_normal(&s), octave);
        break;
      }
    }
    test_store_value(buf, i, dtype, v);
  }
}

static double as_double(const void* p, size_t i, int dtype) {
  return (double)sparccl_load(p, i, dtype == sparcclFloat32 ? SPARCCL_DT_FLOAT32
                                    : dtype == sparcclFloat16 ? SPARCCL_DT_FLOAT16
                                                              : SPARCCL_DT_BFLOAT16);
}

typedef struct {
  int compressor, feedback, dtype, wire, op, inplace, kind, shared;
  double density;
  size_t minSparse;
  size_t nlayers;        /* 0: no layout, one layer of count */
  const size_t* counts;
  size_t count;
  int steps;
  uint64_t seed;
  int tagged;            /* 1: sparcclAllReduceTagged with a fresh buffer every step */
  size_t warmup;         /* SPEC 9: dense calls first */
  double momentum;       /* dgc's; 0 in a memset case means the default 0.9 */
} case_t;

static const char* case_name(const case_t* c, char* buf, size_t n) {
  snprintf(buf, n, "compressor %d feedback %d dtype %d wire %d op %d inplace %d kind %d "
           "density %g minSparse %zu count %zu nlayers %zu warmup %zu momentum %g", c->compressor,
           c->feedback, c->dtype, c->wire, c->op, c->inplace, c->kind, c->density, c->minSparse,
           c->count, c->nlayers, c->warmup, c->momentum);
  return buf;
}

/* Run the library and the reference side by side; fail at the first differing output. */
static void run_case(const case_t* c) {
  sparcclConfig_t config = test_config(c->compressor, c->feedback, c->density, c->minSparse);
  ref_config_t rc;
  sparcclComm_t comm;
  ref_model_t* ref;
  size_t bytes = c->count * test_dtype_size(c->dtype);
  unsigned char *send, *recv, *grad, *want;
  char name[256];
  int step;

  config.wireType = c->wire;
  config.seed = 0x1234abcd5678ull + c->seed;
  config.sharedRandomness = c->shared;
  config.warmupSteps = c->warmup;
  config.momentum = c->momentum != 0.0 ? c->momentum : 0.9;
  comm = test_comm_self(&config);

  memset(&rc, 0, sizeof(rc));
  rc.compressor = c->compressor;
  rc.feedback = c->feedback;
  rc.density = c->density;
  rc.minSparseCount = c->minSparse;
  rc.wireType = c->wire;
  rc.seed = config.seed;
  rc.sharedRandomness = c->shared;
  rc.momentum = config.momentum;
  rc.warmupSteps = c->warmup;
  rc.op = c->op;
  rc.dtype = c->dtype;
  ref = ref_create(&rc, 1, c->count, c->nlayers, c->counts, 0);

  send = (unsigned char*)malloc(bytes);
  recv = (unsigned char*)malloc(bytes);
  grad = (unsigned char*)malloc(bytes);
  want = (unsigned char*)malloc(bytes);
  ck_assert(send && recv && grad && want);
  case_name(c, name, sizeof(name));
  if (c->nlayers > 0) {
    if (c->tagged)
      ck_assert_int_eq(sparcclRegisterLayoutTagged(comm, 77, c->nlayers, c->counts), sparcclSuccess);
    else
      ck_assert_int_eq(sparcclRegisterLayout(comm, send, c->nlayers, c->counts), sparcclSuccess);
  }
  for (step = 0; step < c->steps; step++) {
    const void* grads[1];
    void* out = c->inplace ? (void*)send : (void*)recv;
    long at;
    sparcclResult_t r;
    unsigned char* sb = send;
    fill_input(grad, c->count, c->dtype, c->kind, c->seed * 1000 + (uint64_t)step);
    if (c->tagged) { /* a buffer that moves: a fresh allocation every step */
      sb = (unsigned char*)malloc(bytes);
      ck_assert(sb != NULL);
      if (c->inplace) out = sb;
    }
    memcpy(sb, grad, bytes);
    if (!c->inplace) memset(recv, 0x5a, bytes);
    r = c->tagged ? sparcclAllReduceTagged(sb, out, c->count, (sparcclDataType_t)c->dtype,
                                           (sparcclRedOp_t)c->op, 77, comm, NULL)
                  : sparcclAllReduce(sb, out, c->count, (sparcclDataType_t)c->dtype,
                                     (sparcclRedOp_t)c->op, comm, NULL);
    ck_assert_msg(r == sparcclSuccess, "step %d: %s (%s)", step, sparcclGetErrorString(r), name);
    if (!c->inplace)
      ck_assert_msg(memcmp(sb, grad, bytes) == 0, "step %d: the send buffer changed (%s)", step, name);
    grads[0] = grad;
    ref_step(ref, grads, want);
    at = test_mismatch(out, want, c->count, c->dtype);
    ck_assert_msg(at < 0, "step %d element %ld: library %a, reference %a (%s)", step, at,
                  at < 0 ? 0.0 : as_double(out, (size_t)at, c->dtype),
                  at < 0 ? 0.0 : as_double(want, (size_t)at, c->dtype), name);
    if (c->tagged) free(sb);
  }
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  ref_destroy(ref);
  free(send); free(recv); free(grad); free(want);
}

/* ---------------------------------------------------------------- the full matrix */

/* 180 iterations: compressor x feedback x dtype x wire, on a layout of every small size
 * (1 and 2 dense, the rest sparse); density, op, in-place and seed vary with the index. */
static const size_t kMixedLayout[8] = {10007, 1, 97, 2, 4096, 3, 31, 7};

START_TEST(test_matrix_mixed_layout) {
  static const double densities[4] = {0.01, 0.05, 0.3, 0.5};
  case_t c;
  int idx = _i;
  memset(&c, 0, sizeof(c));
  c.compressor = kCompressors[idx / 36];
  c.feedback = kFeedbacks[(idx / 9) % 4];
  c.dtype = kTypes[(idx / 3) % 3];
  c.wire = kTypes[idx % 3];
  c.op = (idx % 2) ? sparcclAvg : sparcclSum;
  c.inplace = (idx / 2) % 2;
  c.density = densities[(idx / 5) % 4];
  c.minSparse = 3;
  c.nlayers = 8;
  c.counts = kMixedLayout;
  c.count = 10007 + 1 + 97 + 2 + 4096 + 3 + 31 + 7;
  c.steps = 3;
  c.kind = IN_NORMAL;
  c.seed = (uint64_t)idx + 1;
  run_case(&c);
}
END_TEST

/* SPEC 9: dgc under every compressor x dtype x wire (45 iterations), then warm-up under every
 * feedback (the next 25: 0 to 4 dense calls before compression, past the 3-4 steps run, and
 * dgc's momentum 0, 0.5 and 0.9); a mixed layout with dense and sparse layers. */
START_TEST(test_matrix_dgc_warmup) {
  static const double momenta[3] = {0.9, 0.5, 1e-30 /* ~0: u keeps only g */};
  static const int feedbacks[5] = {sparcclFeedbackNone, sparcclFeedbackEF, sparcclFeedbackEF21,
                                   sparcclFeedbackSCAM, sparcclFeedbackDGC};
  case_t c;
  int idx = _i;
  memset(&c, 0, sizeof(c));
  if (idx < 45) {
    c.compressor = kCompressors[idx / 9];
    c.feedback = sparcclFeedbackDGC;
    c.dtype = kTypes[(idx / 3) % 3];
    c.wire = kTypes[idx % 3];
    c.warmup = (size_t)(idx % 4 == 3);
  } else {
    int j = idx - 45;
    c.compressor = kCompressors[j % 5];
    c.feedback = feedbacks[j / 5];
    c.dtype = kTypes[j % 3];
    c.wire = kTypes[(j / 3) % 3];
    c.warmup = (size_t)(j % 5);
  }
  c.momentum = momenta[idx % 3];
  c.op = (idx % 2) ? sparcclAvg : sparcclSum;
  c.inplace = (idx / 2) % 2;
  c.density = idx % 4 == 0 ? 0.3 : 0.05;
  c.minSparse = 40;
  c.nlayers = 8;
  c.counts = kMixedLayout;
  c.count = 10007 + 1 + 97 + 2 + 4096 + 3 + 31 + 7;
  c.steps = 4;
  c.kind = idx % 5 == 4 ? IN_SMALLINT : IN_NORMAL;
  c.seed = 7000 + (uint64_t)idx;
  run_case(&c);
}
END_TEST

/* Every size alone (no layout, minSparse 1): 20 iterations, compressor x feedback. */
START_TEST(test_sizes_single_layer) {
  static const size_t sizes[8] = {1, 2, 3, 7, 31, 97, 4096, 10007};
  static const double densities[5] = {0.01, 0.1, 0.25, 0.5, 1.0};
  int s;
  for (s = 0; s < 8; s++) {
    case_t c;
    int j = _i * 8 + s;
    memset(&c, 0, sizeof(c));
    c.compressor = kCompressors[_i / 4];
    c.feedback = kFeedbacks[_i % 4];
    c.dtype = kTypes[j % 3];
    c.wire = kTypes[(j / 3) % 3];
    c.op = (j % 2) ? sparcclSum : sparcclAvg;
    c.inplace = (j / 2) % 2;
    c.density = densities[j % 5];
    c.minSparse = 1;
    c.count = sizes[s];
    c.steps = 4;
    c.kind = IN_NORMAL;
    c.seed = 1000 + (uint64_t)j;
    run_case(&c);
  }
}
END_TEST

/* Adversarial inputs: zeros (signed), all equal, many ties, small integers, huge values;
 * 20 iterations, compressor x feedback, each over every kind and a few shapes. */
START_TEST(test_adversarial) {
  static const int kinds[5] = {IN_ZEROS, IN_EQUAL, IN_TIES, IN_SMALLINT, IN_BIG};
  static const size_t layout[4] = {97, 4096, 5, 2048};
  int k;
  for (k = 0; k < 5; k++) {
    case_t c;
    int j = _i * 5 + k;
    memset(&c, 0, sizeof(c));
    c.compressor = kCompressors[_i / 4];
    c.feedback = kFeedbacks[_i % 4];
    c.dtype = kTypes[j % 3];
    c.wire = kinds[k] == IN_BIG ? (j % 2 ? sparcclFloat16 : sparcclBfloat16) : kTypes[(j / 3) % 3];
    c.op = (j % 2) ? sparcclSum : sparcclAvg;
    c.inplace = (j / 2) % 2;
    c.density = (j % 3 == 0) ? 0.1 : 0.37;
    c.minSparse = 16;
    c.nlayers = 4;
    c.counts = layout;
    c.count = 97 + 4096 + 5 + 2048;
    c.steps = 4;
    c.kind = kinds[k];
    c.seed = 5000 + (uint64_t)j;
    run_case(&c);
  }
}
END_TEST

/* One size of ~1.5 million elements for a few methods (the radix select's deep digits). */
START_TEST(test_large_layer) {
  static const int methods[3][4] = {
      /* compressor, feedback, dtype, wire */
      {sparcclTopK, sparcclFeedbackEF, sparcclFloat32, sparcclFloat32},
      {sparcclImpKRandom, sparcclFeedbackSCAM, sparcclBfloat16, sparcclFloat16},
      {sparcclRandK, sparcclFeedbackEF21, sparcclFloat16, sparcclBfloat16}};
  case_t c;
  memset(&c, 0, sizeof(c));
  c.compressor = methods[_i][0];
  c.feedback = methods[_i][1];
  c.dtype = methods[_i][2];
  c.wire = methods[_i][3];
  c.op = _i == 1 ? sparcclAvg : sparcclSum;
  c.inplace = _i != 0;
  c.density = 0.01;
  c.minSparse = 4096;
  c.count = 1500007;
  c.steps = 2;
  c.kind = IN_NORMAL;
  c.seed = 9000 + (uint64_t)_i;
  run_case(&c);
}
END_TEST

/* Tagged calls on buffers that move every step; shared randomness on one rank. */
START_TEST(test_tagged_and_shared) {
  static const size_t layout[3] = {300, 9, 1000};
  case_t c;
  memset(&c, 0, sizeof(c));
  c.compressor = kCompressors[_i % 5];
  c.feedback = kFeedbacks[(_i / 5) % 4];
  c.dtype = kTypes[_i % 3];
  c.wire = kTypes[(_i + 1) % 3];
  c.op = _i % 2 ? sparcclAvg : sparcclSum;
  c.inplace = (_i / 2) % 2;
  c.density = 0.05;
  c.minSparse = 10;
  c.nlayers = 3;
  c.counts = layout;
  c.count = 1309;
  c.steps = 3;
  c.kind = IN_NORMAL;
  c.shared = _i % 2;
  c.tagged = 1;
  c.seed = 7000 + (uint64_t)_i;
  run_case(&c);
}
END_TEST

/* ---------------------------------------------------------------- layer ids */

/* Two keys on one comm: the second key's layer ids continue after the first's (dense
 * layers counted), which the RandK / ImpK-random draws must show. */
START_TEST(test_layer_ids_across_keys) {
  int compressor = _i == 0 ? sparcclRandK : sparcclImpKRandom;
  sparcclConfig_t config = test_config(compressor, sparcclFeedbackEF, 0.1, 8);
  static const size_t layoutA[3] = {200, 4, 100};
  static const size_t layoutB[2] = {150, 250};
  ref_config_t rc;
  ref_model_t *refA, *refB;
  sparcclComm_t comm;
  float a[304], b[400], outA[304], outB[400], wantA[304], wantB[400];
  int step;
  config.seed = 99;
  comm = test_comm_self(&config);
  memset(&rc, 0, sizeof(rc));
  rc.compressor = compressor;
  rc.feedback = sparcclFeedbackEF;
  rc.density = 0.1;
  rc.minSparseCount = 8;
  rc.wireType = sparcclFloat32;
  rc.seed = 99;
  rc.op = sparcclSum;
  rc.dtype = sparcclFloat32;
  refA = ref_create(&rc, 1, 304, 3, layoutA, 0);
  refB = ref_create(&rc, 1, 400, 2, layoutB, 3);
  ck_assert_int_eq(sparcclRegisterLayout(comm, a, 3, layoutA), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(comm, b, 2, layoutB), sparcclSuccess);
  for (step = 0; step < 3; step++) {
    const void* ga[1];
    const void* gb[1];
    float ca[304], cb[400];
    test_fill_normal(a, 304, 10 + (uint64_t)step);
    test_fill_normal(b, 400, 20 + (uint64_t)step);
    memcpy(ca, a, sizeof(a));
    memcpy(cb, b, sizeof(b));
    /* B first on purpose: ids come from creation order, not call order */
    ck_assert_int_eq(sparcclAllReduce(b, outB, 400, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(a, outA, 304, sparcclFloat32, sparcclSum, comm, NULL), sparcclSuccess);
    ga[0] = ca;
    gb[0] = cb;
    ref_step(refA, ga, wantA);
    ref_step(refB, gb, wantB);
    ck_assert_bitwise_eq(outA, wantA, 304);
    ck_assert_bitwise_eq(outB, wantB, 400);
  }
  ref_destroy(refA);
  ref_destroy(refB);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* ---------------------------------------------------------------- non-finite steps */

/* NaN, Inf and an e + g overflow in sparse layers skip the layer (NaN output, state and
 * step counter unchanged); in a dense layer they propagate.  Later steps still match. */
static void nonfinite_case(int _i);
START_TEST(test_nonfinite_steps) { nonfinite_case(_i); }
END_TEST

/* The same with the layers streamed (src/select_stream.c): the NaN skip is unchanged. */
START_TEST(test_nonfinite_steps_stream) {
  size_t saved = sparcclStreamMinCount;
  sparcclStreamMinCount = 1;
  nonfinite_case(_i);
  sparcclStreamMinCount = saved;
}
END_TEST

static void nonfinite_case(int _i) {
  static const size_t layout[3] = {500, 6, 300};
  int compressor = kCompressors[_i / 4];
  int feedback = kFeedbacks[_i % 4];
  int dtype = _i % 3 == 0 ? sparcclFloat32 : (_i % 3 == 1 ? sparcclBfloat16 : sparcclFloat16);
  sparcclConfig_t config = test_config(compressor, feedback, 0.05, 10);
  ref_config_t rc;
  ref_model_t* ref;
  sparcclComm_t comm;
  sparcclStats_t stats;
  size_t sz = test_dtype_size(dtype), count = 806, i;
  unsigned char send[806 * 4], out[806 * 4], grad[806 * 4], want[806 * 4];
  int step, skipped = 0;
  config.seed = 5;
  config.wireType = sparcclFloat32;
  comm = test_comm_self(&config);
  memset(&rc, 0, sizeof(rc));
  rc.compressor = compressor;
  rc.feedback = feedback;
  rc.density = 0.05;
  rc.minSparseCount = 10;
  rc.wireType = sparcclFloat32;
  rc.seed = 5;
  rc.op = sparcclSum;
  rc.dtype = dtype;
  ref = ref_create(&rc, 1, count, 3, layout, 0);
  ck_assert_int_eq(sparcclRegisterLayout(comm, send, 3, layout), sparcclSuccess);
  for (step = 0; step < 7; step++) {
    const void* grads[1];
    long at;
    fill_input(grad, count, dtype, IN_NORMAL, 300 + (uint64_t)step);
    if (step == 1) test_store_value(grad, 17, dtype, NAN);             /* sparse layer 0 */
    if (step == 2) test_store_value(grad, 503, dtype, INFINITY);       /* dense layer 1 */
    if (step == 3) test_store_value(grad, 806 - 5, dtype, -INFINITY);  /* sparse layer 2 */
    if (step == 4 || step == 5) /* ef, scam: e + g overflows at 5 (not randk: d/k * g would) */
      for (i = 0; i < 100; i++)
        test_store_value(grad, 520 + i, dtype,
                    dtype == sparcclFloat16 ? 60000.0f
                                            : (compressor == sparcclRandK ? 1.0e37f : 3.0e38f));
    memcpy(send, grad, count * sz);
    ck_assert_int_eq(sparcclAllReduce(send, out, count, (sparcclDataType_t)dtype, sparcclSum, comm, NULL),
                     sparcclSuccess);
    grads[0] = grad;
    ref_step(ref, grads, want);
    at = test_mismatch(out, want, count, dtype);
    ck_assert_msg(at < 0, "step %d element %ld: library %a, reference %a", step, at,
                  at < 0 ? 0.0 : as_double(out, (size_t)at, dtype),
                  at < 0 ? 0.0 : as_double(want, (size_t)at, dtype));
    /* A skipped layer is NaN throughout, whatever the reference says. */
    if (step == 1) for (i = 0; i < 500; i++) ck_assert(test_is_nan(out, i, dtype));
    if (step == 1) ck_assert(ref_layer_skipped(ref, 0) && !ref_layer_skipped(ref, 2));
    if (step == 2) ck_assert(!test_is_nan(out, 503, dtype) && !test_is_nan(out, 0, dtype));
    if (step == 3) for (i = 506; i < 806; i++) ck_assert(test_is_nan(out, i, dtype));
    skipped += ref_layer_skipped(ref, 0) + ref_layer_skipped(ref, 2);
  }
  ck_assert_uint_eq(ref_layer_step(ref, 0), 7 - 1);
  ck_assert_int_eq(sparcclCommGetStats(comm, &stats), sparcclSuccess);
  ck_assert_uint_eq(stats.skippedSteps, (unsigned)skipped);
  ref_destroy(ref);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
/* nonfinite_case */

/* ---------------------------------------------------------------- the streaming path */

/* The streaming selection (src/select_stream.c) for every layer big enough to sample, not
 * only those of 16384 elements and more: sizes from 1 to 65537, every compressor x feedback
 * (dgc too; 25 iterations) x dtype x wire, densities down to 0.1% and k = d, and the inputs
 * that defeat a sampled bound (all equal, zeros, heavy ties, sorted either way, one huge
 * outlier).  Whether a layer streams or falls back, the output must be the reference's. */
static const int kAllFeedbacks[5] = {sparcclFeedbackNone, sparcclFeedbackEF, sparcclFeedbackEF21,
                                     sparcclFeedbackSCAM, sparcclFeedbackDGC};

START_TEST(test_stream_matrix) {
  static const size_t sizes[8] = {1, 2, 13, 97, 257, 1031, 4099, 65537};
  static const double densities[6] = {0.001, 0.01, 0.05, 0.2, 0.3, 1.0};
  static const int kinds[9] = {IN_NORMAL, IN_ZEROS, IN_EQUAL, IN_TIES, IN_SMALLINT,
                               IN_ASCENDING, IN_DESCENDING, IN_OUTLIER, IN_BIG};
  size_t saved = sparcclStreamMinCount;
  int s, k;
  sparcclStreamMinCount = 1;
  for (s = 0; s < 8; s++)
    for (k = 0; k < 9; k++) {
      case_t c;
      int j = _i * 72 + s * 9 + k;
      if (sizes[s] > 4099 && k % 3 != _i % 3) continue; /* the largest size: a third of the kinds */
      memset(&c, 0, sizeof(c));
      c.compressor = kCompressors[_i / 5];
      c.feedback = kAllFeedbacks[_i % 5];
      c.dtype = kTypes[j % 3];
      c.wire = kinds[k] == IN_BIG ? (j % 2 ? sparcclFloat16 : sparcclBfloat16) : kTypes[(j / 3) % 3];
      c.op = (j % 2) ? sparcclSum : sparcclAvg;
      c.inplace = (j / 2) % 2;
      c.density = densities[(j / 7) % 6];
      c.momentum = 0.9;
      c.minSparse = 1;
      c.count = sizes[s];
      c.steps = 3;
      c.kind = kinds[k];
      c.seed = 11000 + (uint64_t)j;
      run_case(&c);
    }
  sparcclStreamMinCount = saved;
}
END_TEST

/* A million elements at 1% and 0.1%, streamed at the default threshold: the vectorised
 * pass (topk, impk: every feedback; float32, and half or bfloat16 in the last five) and the
 * typed portable pass (the other compressors; then every case again with the vectorised
 * pass off). */
START_TEST(test_stream_large) {
  case_t c;
  memset(&c, 0, sizeof(c));
  c.compressor = _i < 5 ? sparcclTopK : (_i < 10 ? sparcclImpK : kCompressors[_i % 5]);
  c.feedback = kAllFeedbacks[_i % 5];
  c.dtype = _i < 10 ? sparcclFloat32 : kTypes[_i % 3];
  c.wire = kTypes[(_i / 3) % 3];
  c.op = _i % 2 ? sparcclAvg : sparcclSum;
  c.inplace = _i % 3 == 0;
  c.density = _i % 4 == 3 ? 0.001 : 0.01;
  c.momentum = 0.9;
  c.minSparse = 4096;
  c.count = 1000003;
  c.steps = 2;
  c.kind = _i % 7 == 6 ? IN_TIES : IN_NORMAL;
  c.seed = 12000 + (uint64_t)_i;
  run_case(&c);
  { /* again through the portable pass */
    sparcclStreamVector = 0;
    run_case(&c);
    sparcclStreamVector = 1;
  }
}
END_TEST

/* ---------------------------------------------------------------- the reference itself */

/* The model against hand-computed answers, so that it cannot agree with the library by
 * sharing a mistake: topk + ef as in test_smoke, and a tie broken to the lower index. */
START_TEST(test_reference_known_answers) {
  ref_config_t rc;
  ref_model_t* ref;
  float g1[8] = {1, -5, 2, 0.5f, 3, -3, 0, 4}, g2[8] = {1, 1, 1, 1, 1, 1, 1, 1}, out[8];
  float want1[8] = {0, -5, 0, 0, 0, 0, 0, 4}, want2[8] = {0, 0, 3, 0, 4, 0, 0, 0};
  float ties[6] = {1, -2, 2, 0, -2, 1}, wantTies[6] = {0, -2, 2, 0, 0, 0};
  const void* g[1];
  memset(&rc, 0, sizeof(rc));
  rc.compressor = sparcclTopK;
  rc.feedback = sparcclFeedbackEF;
  rc.density = 0.25;
  rc.minSparseCount = 1;
  rc.wireType = sparcclFloat32;
  rc.op = sparcclSum;
  rc.dtype = sparcclFloat32;
  ref = ref_create(&rc, 1, 8, 0, NULL, 0);
  ck_assert_uint_eq(ref_layer_k(ref, 0), 2);
  g[0] = g1; ref_step(ref, g, out); ck_assert_bitwise_eq(out, want1, 8);
  g[0] = g2; ref_step(ref, g, out); ck_assert_bitwise_eq(out, want2, 8);
  ck_assert_float_eq(ref_error(ref, 0, 0)[4], 0.0f);
  ck_assert_float_eq(ref_error(ref, 0, 0)[1], 1.0f);
  ref_destroy(ref);
  /* |-2| = |2| = |-2|: k = 2 takes indices 1 and 2 */
  rc.feedback = sparcclFeedbackNone;
  rc.density = 0.3;
  ref = ref_create(&rc, 1, 6, 0, NULL, 0);
  g[0] = ties; ref_step(ref, g, out); ck_assert_bitwise_eq(out, wantTies, 6);
  ref_destroy(ref);
  /* two ranks, ef21, AVG: H = mean h */
  {
    float r0[4] = {4, 0, 0, 1}, r1[4] = {0, 0, 2, 1}, o[4], want[4] = {2, 0, 1, 0};
    const void* gg[2];
    rc.feedback = sparcclFeedbackEF21;
    rc.density = 0.25;
    rc.op = sparcclAvg;
    ref = ref_create(&rc, 2, 4, 0, NULL, 0);
    gg[0] = r0; gg[1] = r1;
    ref_step(ref, gg, o);
    ck_assert_bitwise_eq(o, want, 4);
    ck_assert_float_eq(ref_h(ref, 1, 0)[2], 2.0f);
    ck_assert_float_eq(ref_H(ref, 0, 0)[0], 2.0f);
    ref_destroy(ref);
  }
}
END_TEST

Suite* make_reference_suite(void) {
  Suite* s = suite_create("reference");
  TCase* tc = tcase_create("library vs naive model");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_reference_known_answers);
  tcase_add_loop_test(tc, test_matrix_mixed_layout, 0, 180);
  tcase_add_loop_test(tc, test_matrix_dgc_warmup, 0, 70);
  tcase_add_loop_test(tc, test_sizes_single_layer, 0, 20);
  tcase_add_loop_test(tc, test_adversarial, 0, 20);
  tcase_add_loop_test(tc, test_large_layer, 0, 3);
  tcase_add_loop_test(tc, test_tagged_and_shared, 0, 10);
  tcase_add_loop_test(tc, test_layer_ids_across_keys, 0, 2);
  tcase_add_loop_test(tc, test_nonfinite_steps, 0, 20);
  tcase_add_loop_test(tc, test_nonfinite_steps_stream, 0, 20);
  tcase_add_loop_test(tc, test_stream_matrix, 0, 25);
  tcase_add_loop_test(tc, test_stream_large, 0, 15);
  suite_add_tcase(s, tc);
  return s;
}
