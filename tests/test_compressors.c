/*
 * Every compressor x every feedback scheme, hand-computed (SPEC.md sections 1-4).
 *
 * All suites here run on a single-rank comm (MPI_COMM_SELF): the reduced output of a call is
 * then this rank's own sent vector (SUM), and for ef21 H = h.  Inputs are small integers or
 * short binary fractions, so every float32 operation below is exact and the expected arrays
 * are literal.  The selected sets of randk and impk_random come from Philox words; the test
 * "philox sets" derives them here, from sparccl_philox4x32_10 and the selection rule of
 * SPEC 1/3, and checks they are the literal sets the hand-computed tables use.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "sparccl_math.h"

#define SEED 0x0123456789abcdefULL
#define P2(e) ldexpf(1.0f, (e)) /* 2^e, exact */

/* A comm with the importance solver at c = eta * gamma = 1 on the cube [0, 2]. */
static sparcclComm_t make_comm(int compressor, int feedback, double density, size_t minSparse,
                               int wireType) {
  sparcclConfig_t c = test_config(compressor, feedback, density, minSparse);
  c.seed = SEED;
  c.wireType = wireType;
  c.importanceEta = 1.0;
  c.importanceGamma = 1.0;
  c.importanceLow = 0.0;
  c.importanceHigh = 2.0;
  c.restartEvery = 0;
  c.restartRatio = 0.0;
  c.restartOnLoss = 0;
  return test_comm_self(&c);
}

/* One float32 SUM call with the key (buf, d): g is copied into buf first (same key every
 * step).  inPlace: the output is written over buf and copied to out. */
static void step_op(sparcclComm_t comm, float* buf, const float* g, size_t d, float* out,
                    int op, int inPlace) {
  sparcclResult_t r;
  memcpy(buf, g, d * sizeof(float));
  r = sparcclAllReduce(buf, inPlace ? buf : out, d, sparcclFloat32, (sparcclRedOp_t)op, comm,
                       NULL);
  ck_assert_msg(r == sparcclSuccess, "sparcclAllReduce: %s", sparcclGetErrorString(r));
  if (inPlace) memcpy(out, buf, d * sizeof(float));
}
static void step(sparcclComm_t comm, float* buf, const float* g, size_t d, float* out) {
  step_op(comm, buf, g, d, out, sparcclSum, 0);
}

/* One cube step on the key (buf, d): buf <- p (the g of eq. 13), then w <- clamp(w + q p). */
static void importance_step(sparcclComm_t comm, float* buf, const float* p, const float* q,
                            size_t d) {
  memcpy(buf, p, d * sizeof(float));
  ck_assert_int_eq(sparcclImportanceUpdate(q, buf, d, sparcclFloat32, comm, NULL), sparcclSuccess);
}

static unsigned long long skipped(sparcclComm_t comm) {
  sparcclStats_t s;
  ck_assert_int_eq(sparcclCommGetStats(comm, &s), sparcclSuccess);
  return s.skippedSteps;
}

static void assert_all_nan(const float* x, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) ck_assert_msg(isnan(x[i]), "element %zu is %a, not NaN", i, (double)x[i]);
}

/* ------------------------------------------------------------------ Philox sets */

/* The Philox word of element i (SPEC 3): counter {i/4, layer, step, rank}, key {seed lo, hi}. */
static uint32_t philox_word(uint32_t layer, uint32_t stepNo, size_t i) {
  sparccl_philox_block_t b = sparccl_philox4x32_10((uint32_t)(i / 4), layer, stepNo, 0u,
                                                   (uint32_t)SEED, (uint32_t)(SEED >> 32));
  return b.v[i % 4];
}

/* The k largest keys, ties to the lower index (SPEC 1): i is in S iff fewer than k
 * elements beat it.  sel[i] = 1 for i in S. */
static void select_by_double_keys(const double* key, size_t d, size_t k, int* sel) {
  size_t i, j;
  for (i = 0; i < d; i++) {
    size_t beaten = 0;
    for (j = 0; j < d; j++)
      if (key[j] > key[i] || (key[j] == key[i] && j < i)) beaten++;
    sel[i] = beaten < k;
  }
}

static void randk_set(uint32_t layer, uint32_t stepNo, size_t d, size_t k, int* sel) {
  double key[16];
  size_t i;
  for (i = 0; i < d; i++) key[i] = (double)philox_word(layer, stepNo, i);
  select_by_double_keys(key, d, k, sel);
}

/* impk_random: key log(u_i) / w_i in double, u = (x + 1) 2^-32, -Inf where w <= 0. */
static void impk_random_set(uint32_t layer, uint32_t stepNo, const float* w, size_t d, size_t k,
                            int* sel) {
  double key[16];
  size_t i;
  for (i = 0; i < d; i++)
    key[i] = w[i] > 0.0f ? sparccl_log(((double)philox_word(layer, stepNo, i) + 1.0) *
                                       2.3283064365386962890625e-10) / (double)w[i]
                         : -HUGE_VAL;
  select_by_double_keys(key, d, k, sel);
}

static void assert_set(const int* sel, size_t d, const int* want, size_t k, const char* what) {
  int w[16] = {0};
  size_t i;
  for (i = 0; i < k; i++) w[want[i]] = 1;
  for (i = 0; i < d; i++) ck_assert_msg(sel[i] == w[i], "%s: element %zu %s", what, i,
                                        sel[i] ? "selected, not expected" : "expected, not selected");
}

START_TEST(test_philox_known_answers) {
  /* SPEC 3 (Random123 known answers). */
  sparccl_philox_block_t a = sparccl_philox4x32_10(0, 0, 0, 0, 0, 0);
  sparccl_philox_block_t b = sparccl_philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu,
                                                   0x03707344u, 0xa4093822u, 0x299f31d0u);
  ck_assert_uint_eq(a.v[0], 0x6627e8d5u); ck_assert_uint_eq(a.v[1], 0xe169c58du);
  ck_assert_uint_eq(a.v[2], 0xbc57ac4cu); ck_assert_uint_eq(a.v[3], 0x9b00dbd8u);
  ck_assert_uint_eq(b.v[0], 0xd16cfe09u); ck_assert_uint_eq(b.v[1], 0x94fdccebu);
  ck_assert_uint_eq(b.v[2], 0x5001e420u); ck_assert_uint_eq(b.v[3], 0x24126ea1u);
}
END_TEST

/* The literal sets the tables below use, derived from Philox (seed SEED, rank 0, d = 8). */
static const int RK_L0[3][2] = {{0, 1}, {0, 4}, {2, 4}}; /* randk layer 0, steps 0..2, k 2 */
static const int RK_L1[3][2] = {{0, 2}, {3, 5}, {0, 4}}; /* layer 1 */
static const int RK_L2[2][2] = {{6, 7}, {3, 7}};         /* layer 2 */
static const float W_R[8] = {0, 2, 1, 1, 0, 1, 1, 1};    /* impk_random's weights (below) */
static const float ONES8[8] = {1, 1, 1, 1, 1, 1, 1, 1};
static const int IR_SETS[3][2] = {{0, 1}, {1, 6}, {2, 7}}; /* impk_random: w=1 at step 0, W_R at 1, 2 */

START_TEST(test_philox_sets) {
  int sel[8];
  int s;
  for (s = 0; s < 3; s++) {
    randk_set(0, (uint32_t)s, 8, 2, sel); assert_set(sel, 8, RK_L0[s], 2, "randk layer 0");
    randk_set(1, (uint32_t)s, 8, 2, sel); assert_set(sel, 8, RK_L1[s], 2, "randk layer 1");
  }
  for (s = 0; s < 2; s++) { randk_set(2, (uint32_t)s, 8, 2, sel); assert_set(sel, 8, RK_L2[s], 2, "randk layer 2"); }
  impk_random_set(0, 0, ONES8, 8, 2, sel); assert_set(sel, 8, IR_SETS[0], 2, "impk_random w=1");
  impk_random_set(0, 1, W_R, 8, 2, sel); assert_set(sel, 8, IR_SETS[1], 2, "impk_random step 1");
  impk_random_set(0, 2, W_R, 8, 2, sel); assert_set(sel, 8, IR_SETS[2], 2, "impk_random step 2");
  /* w = 1 makes log(u) / w monotone in the word: impk_random's set is randk's */
  randk_set(0, 1, 8, 2, sel);
  {
    int sel2[8], i;
    impk_random_set(0, 1, ONES8, 8, 2, sel2);
    for (i = 0; i < 8; i++) ck_assert_int_eq(sel[i], sel2[i]);
  }
}
END_TEST

/* ------------------------------------------------------------------ the hand table */
/*
 * d = 8, density 0.25 -> k = ceil(2) = 2, minSparseCount 1 (sparse), SUM on one rank.
 * Inputs: */
static const float G1[8] = {3, -1, 4, -1, 5, -9, 2, 6};
static const float G2[8] = {2, 7, -1, 8, -2, 8, 1, -3};
static const float G3[8] = {1, 1, 1, 1, 1, 1, 1, 1};
static const float G4[8] = {1, 9, 2, 3, 4, 1, 1, 9};
static const float R1[8] = {1, 2, 3, 4, 5, 6, 7, 8};
static const float R2[8] = {-1, 1, -2, 2, -3, 3, -4, 4};
/* Importance steps (c = 1, cube [0, 2]): w <- clamp(1 + q * p, 0, 2).
 * A: q*p = {1,-1,0,0.5,-0.5,1,2,-2} -> w_A = {2, 0, 1, 1.5, 0.5, 2, 2 (3 clamped), 0 (-1 clamped)} */
static const float PA[8] = {2, 1, 1, 1, 1, 1, 1, 2};
static const float QA[8] = {0.5f, -1, 0, 0.5f, -0.5f, 1, 2, -1};
/* R: q*p = {-1,3,0,0,-4,0,0,0} -> w_R = {0, 2 (4 clamped), 1, 1, 0 (-3 clamped), 1, 1, 1} */
static const float PR[8] = {2, 1, 1, 1, 1, 1, 1, 1};
static const float QR[8] = {-0.5f, 3, 0, 0, -4, 0, 0, 0};

typedef struct {
  const char* name;
  int compressor, feedback;
  const float* p; /* importance step after step 0 (NULL: none) */
  const float* q;
  int nsteps;
  const float* in[4];
  float want[4][8];
} HandCase;

static const HandCase CASES[] = {
    /* ---- topk: key |x|, value x.  Steps G1, G2, G3, G1. */
    {"topk/none", sparcclTopK, sparcclFeedbackNone, NULL, NULL, 4, {G1, G2, G3, G1},
     {/* |G1|: 9 (5), 6 (7) */ {0, 0, 0, 0, 0, -9, 0, 6},
      /* |G2|: 8 (3), 8 (5) beat 7 (1) */ {0, 0, 0, 8, 0, 8, 0, 0},
      /* all 1: ties -> lowest indices 0, 1 */ {1, 1, 0, 0, 0, 0, 0, 0},
      {0, 0, 0, 0, 0, -9, 0, 6}}},
    {"topk/ef", sparcclTopK, sparcclFeedbackEF, NULL, NULL, 4, {G1, G2, G3, G1},
     {/* a = G1 -> {5,7}; e = {3,-1,4,-1,5,0,2,0} */ {0, 0, 0, 0, 0, -9, 0, 6},
      /* a = e+G2 = {5,6,3,7,3,8,3,-3} -> 8 (5), 7 (3); e = {5,6,3,0,3,0,3,-3} */
      {0, 0, 0, 7, 0, 8, 0, 0},
      /* a = e+1 = {6,7,4,1,4,1,4,-2} -> 7 (1), 6 (0); e = {0,0,4,1,4,1,4,-2} */
      {6, 7, 0, 0, 0, 0, 0, 0},
      /* a = e+G1 = {3,-1,8,0,9,-8,6,4} -> 9 (4); |8| at 2 and 5 tie -> 2 */
      {0, 0, 8, 0, 9, 0, 0, 0}}},
    {"topk/ef21", sparcclTopK, sparcclFeedbackEF21, NULL, NULL, 4, {G1, G2, G3, G1},
     {/* x = G1 -> {5,7}; h = H = {0,0,0,0,0,-9,0,6}; output H */ {0, 0, 0, 0, 0, -9, 0, 6},
      /* x = G2-h = {2,7,-1,8,-2,17,1,-9} -> 17 (5), -9 (7); h = {..,8 (5),..,-3 (7)} */
      {0, 0, 0, 0, 0, 8, 0, -3},
      /* x = 1-h = {1,1,1,1,1,-7,1,4} -> -7 (5), 4 (7); h = {..,1 (5),..,1 (7)} */
      {0, 0, 0, 0, 0, 1, 0, 1},
      /* x = G1-h = {3,-1,4,-1,5,-10,2,5} -> -10 (5); 5 at 4 and 7 tie -> 4 */
      {0, 0, 0, 0, 5, -9, 0, 1}}},
    {"topk/scam", sparcclTopK, sparcclFeedbackSCAM, NULL, NULL, 4, {G1, G2, G3, G1},
     {/* a = G1 -> {5,7}, send g; e = a - sent = {3,-1,4,-1,5,0,2,0} */ {0, 0, 0, 0, 0, -9, 0, 6},
      /* a = {5,6,3,7,3,8,3,-3} -> {3,5}, send G2 = 8, 8; e = {5,6,3,-1,3,0,3,-3} */
      {0, 0, 0, 8, 0, 8, 0, 0},
      /* a = e+1 = {6,7,4,0,4,1,4,-2} -> {0,1}, send 1, 1; e = {5,6,4,0,4,1,4,-2} */
      {1, 1, 0, 0, 0, 0, 0, 0},
      /* a = e+G1 = {8,5,8,-1,9,-8,6,-2} -> 9 (4), then 8 at 0, 2, 5 tie -> 0; send G1 */
      {3, 0, 0, 0, 5, 0, 0, 0}}},

    /* ---- randk: key = Philox word, value (8/2) x = 4x.  Sets RK_L0: {0,1}, {0,4}, {2,4}. */
    {"randk/none", sparcclRandK, sparcclFeedbackNone, NULL, NULL, 3, {R1, R2, G3},
     {{4, 8, 0, 0, 0, 0, 0, 0}, {-4, 0, 0, 0, -12, 0, 0, 0}, {0, 0, 4, 0, 4, 0, 0, 0}}},
    {"randk/ef", sparcclRandK, sparcclFeedbackEF, NULL, NULL, 3, {R1, R2, G3},
     {/* sent 4a; e = a - 4a at S: e = {-3,-6,3,4,5,6,7,8} */ {4, 8, 0, 0, 0, 0, 0, 0},
      /* a = e+R2 = {-4,-5,1,6,2,9,3,12}; S {0,4}: -16, 8; e = {12,-5,1,6,-6,9,3,12} */
      {-16, 0, 0, 0, 8, 0, 0, 0},
      /* a = e+1 = {13,-4,2,7,-5,10,4,13}; S {2,4}: 8, -20 */
      {0, 0, 8, 0, -20, 0, 0, 0}}},
    {"randk/ef21", sparcclRandK, sparcclFeedbackEF21, NULL, NULL, 3, {R1, R2, G3},
     {/* h = {4,8,0,...} */ {4, 8, 0, 0, 0, 0, 0, 0},
      /* x = R2-h = {-5,-7,-2,2,-3,3,-4,4}; S {0,4}: -20, -12; h = {-16,8,0,0,-12,0,0,0} */
      {-16, 8, 0, 0, -12, 0, 0, 0},
      /* x = 1-h = {17,-7,1,1,13,1,1,1}; S {2,4}: 4, 52; h = {-16,8,4,0,40,0,0,0} */
      {-16, 8, 4, 0, 40, 0, 0, 0}}},
    {"randk/scam", sparcclRandK, sparcclFeedbackSCAM, NULL, NULL, 3, {R1, R2, G3},
     {/* value 4g on the random set: as none (the set does not depend on a) */
      {4, 8, 0, 0, 0, 0, 0, 0}, {-4, 0, 0, 0, -12, 0, 0, 0}, {0, 0, 4, 0, 4, 0, 0, 0}}},

    /* ---- impk: key |w x|, value w x.  Step 0 with w = 1 (TopK), then w_A, then G4, G3. */
    {"impk/none", sparcclImpK, sparcclFeedbackNone, PA, QA, 3, {G1, G4, G3},
     {{0, 0, 0, 0, 0, -9, 0, 6},
      /* w x = {2,0,2,4.5,2,2,2,0} -> 4.5 (3), 2 ties -> 0 */ {2, 0, 0, 4.5f, 0, 0, 0, 0},
      /* w x = w -> 2 at 0, 5, 6 -> {0,5} */ {2, 0, 0, 0, 0, 2, 0, 0}}},
    {"impk/ef", sparcclImpK, sparcclFeedbackEF, PA, QA, 3, {G1, G4, G3},
     {/* e = {3,-1,4,-1,5,0,2,0} */ {0, 0, 0, 0, 0, -9, 0, 6},
      /* a = {4,8,6,2,9,1,3,9}; w a = {8,0,6,3,4.5,2,6,0} -> 8 (0), 6 at 2, 6 tie -> 2;
         sent w a; e = a - w a = {-4,8,0,2,9,1,3,9} */
      {8, 0, 6, 0, 0, 0, 0, 0},
      /* a = e+1 = {-3,9,1,3,10,2,4,10}; w a = {-6,0,1,4.5,5,4,8,0} -> 8 (6), -6 (0) */
      {-6, 0, 0, 0, 0, 0, 8, 0}}},
    {"impk/ef21", sparcclImpK, sparcclFeedbackEF21, PA, QA, 3, {G1, G4, G3},
     {/* h = {0,0,0,0,0,-9,0,6} */ {0, 0, 0, 0, 0, -9, 0, 6},
      /* x = G4-h = {1,9,2,3,4,10,1,3}; w x = {2,0,2,4.5,2,20,2,0} -> 20 (5), 4.5 (3) */
      {0, 0, 0, 4.5f, 0, 11, 0, 6},
      /* x = 1-h = {1,1,1,-3.5,1,-10,1,-5}; w x = {2,0,1,-5.25,0.5,-20,2,0} -> (5), (3) */
      {0, 0, 0, -0.75f, 0, -9, 0, 6}}},
    {"impk/scam", sparcclImpK, sparcclFeedbackSCAM, PA, QA, 3, {G1, G4, G3},
     {/* e = {3,-1,4,-1,5,0,2,0} */ {0, 0, 0, 0, 0, -9, 0, 6},
      /* a = {4,8,6,2,9,1,3,9} -> {0,2} as impk/ef; sent w g = 2*1, 1*2; e = {2,8,4,2,9,1,3,9} */
      {2, 0, 2, 0, 0, 0, 0, 0},
      /* a = e+1 = {3,9,5,3,10,2,4,10}; w a = {6,0,5,4.5,5,4,8,0} -> (6), (0); w g = 2, 2 */
      {2, 0, 0, 0, 0, 0, 2, 0}}},

    /* ---- impk_select: key w, value x.  w = 1: all tie -> {0,1}; w_A: 2 at 0, 5, 6 -> {0,5}. */
    {"impk_select/none", sparcclImpKSelect, sparcclFeedbackNone, PA, QA, 3, {G1, G4, G1},
     {{3, -1, 0, 0, 0, 0, 0, 0}, {1, 0, 0, 0, 0, 1, 0, 0}, {3, 0, 0, 0, 0, -9, 0, 0}}},
    {"impk_select/ef", sparcclImpKSelect, sparcclFeedbackEF, PA, QA, 3, {G1, G4, G1},
     {/* e = {0,0,4,-1,5,-9,2,6} */ {3, -1, 0, 0, 0, 0, 0, 0},
      /* a = e+G4 = {1,9,6,2,9,-8,3,15}; e = {0,9,6,2,9,0,3,15} */ {1, 0, 0, 0, 0, -8, 0, 0},
      /* a = e+G1 = {3,8,10,1,14,-9,5,21} */ {3, 0, 0, 0, 0, -9, 0, 0}}},
    {"impk_select/ef21", sparcclImpKSelect, sparcclFeedbackEF21, PA, QA, 3, {G1, G4, G1},
     {/* h = {3,-1,0,...} */ {3, -1, 0, 0, 0, 0, 0, 0},
      /* x = G4-h = {-2,10,2,3,4,1,1,9}: sent -2, 1 */ {1, -1, 0, 0, 0, 1, 0, 0},
      /* x = G1-h = {2,0,4,-1,5,-10,2,6}: sent 2, -10 */ {3, -1, 0, 0, 0, -9, 0, 0}}},
    {"impk_select/scam", sparcclImpKSelect, sparcclFeedbackSCAM, PA, QA, 3, {G1, G4, G1},
     {{3, -1, 0, 0, 0, 0, 0, 0}, {1, 0, 0, 0, 0, 1, 0, 0}, {3, 0, 0, 0, 0, -9, 0, 0}}},

    /* ---- impk_random: key log(u)/w, value x.  Sets IR_SETS: {0,1} (w = 1), then with w_R
     * {1,6} and {2,7} (derived in test_philox_sets). */
    {"impk_random/none", sparcclImpKRandom, sparcclFeedbackNone, PR, QR, 3, {G1, G4, G1},
     {{3, -1, 0, 0, 0, 0, 0, 0}, {0, 9, 0, 0, 0, 0, 1, 0}, {0, 0, 4, 0, 0, 0, 0, 6}}},
    {"impk_random/ef", sparcclImpKRandom, sparcclFeedbackEF, PR, QR, 3, {G1, G4, G1},
     {/* e = {0,0,4,-1,5,-9,2,6} */ {3, -1, 0, 0, 0, 0, 0, 0},
      /* a = {1,9,6,2,9,-8,3,15}; S {1,6}; e = {1,0,6,2,9,-8,0,15} */ {0, 9, 0, 0, 0, 0, 3, 0},
      /* a = e+G1 = {4,-1,10,1,14,-17,2,21}; S {2,7} */ {0, 0, 10, 0, 0, 0, 0, 21}}},
    {"impk_random/ef21", sparcclImpKRandom, sparcclFeedbackEF21, PR, QR, 3, {G1, G4, G1},
     {/* h = {3,-1,0,...} */ {3, -1, 0, 0, 0, 0, 0, 0},
      /* x = {-2,10,2,3,4,1,1,9}; S {1,6}: 10, 1 */ {3, 9, 0, 0, 0, 0, 1, 0},
      /* x = G1-h = {0,-10,4,-1,5,-9,1,6}; S {2,7}: 4, 6 */ {3, 9, 4, 0, 0, 0, 1, 6}}},
    {"impk_random/scam", sparcclImpKRandom, sparcclFeedbackSCAM, PR, QR, 3, {G1, G4, G1},
     {{3, -1, 0, 0, 0, 0, 0, 0}, {0, 9, 0, 0, 0, 0, 1, 0}, {0, 0, 4, 0, 0, 0, 0, 6}}},
};
#define NCASES ((int)(sizeof(CASES) / sizeof(CASES[0])))

/* Loop index: case = i % NCASES; i / NCASES: 0 out of place SUM, 1 in place SUM, 2 out of
 * place AVG (one rank: s / 1 = s, and H for ef21). */
START_TEST(test_hand_table) {
  const HandCase* c = &CASES[_i % NCASES];
  int mode = _i / NCASES;
  sparcclComm_t comm = make_comm(c->compressor, c->feedback, 0.25, 1, sparcclFloat32);
  float buf[8], out[8];
  int s;
  for (s = 0; s < c->nsteps; s++) {
    long at;
    if (s == 1 && c->p != NULL) importance_step(comm, buf, c->p, c->q, 8);
    step_op(comm, buf, c->in[s], 8, out, mode == 2 ? sparcclAvg : sparcclSum, mode == 1);
    at = test_first_difference(out, c->want[s], 8);
    ck_assert_msg(at < 0, "%s (mode %d) step %d: element %ld is %g, want %g", c->name, mode, s,
                  at, at < 0 ? 0.0 : (double)out[at], at < 0 ? 0.0 : (double)c->want[s][at]);
  }
  ck_assert_int_eq(skipped(comm), 0);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* The importance solver does not exist for topk and randk. */
START_TEST(test_importance_needs_impk) {
  sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 0.25, 1, sparcclFloat32);
  float buf[8];
  memcpy(buf, PA, sizeof(buf));
  ck_assert_int_eq(sparcclImportanceUpdate(QA, buf, 8, sparcclFloat32, comm, NULL),
                   sparcclInvalidUsage);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* ------------------------------------------------------------------ k, d and ties */

START_TEST(test_ties_and_signed_zero) {
  sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackNone, 0.5, 1, sparcclFloat32);
  float buf[6], out[6];
  /* k = 3; |x| all 2 -> the three lowest indices, signs kept */
  const float g1[6] = {-2, 2, -2, 2, 2, -2};
  const float w1[6] = {-2, 2, -2, 0, 0, 0};
  /* keys: 1 (2), then -0, -0, +0, -0, +0 all equal (|-0| = |+0|) -> indices 0, 1.  Sent -0
   * at 0 and 1, but s starts at +0.0f and +0 + -0 = +0: every output is +0 but 1 at 2. */
  const float g2[6] = {-0.0f, -0.0f, 1, 0.0f, -0.0f, 0.0f};
  const float w2[6] = {0.0f, 0.0f, 1, 0.0f, 0.0f, 0.0f};
  step(comm, buf, g1, 6, out);
  ck_assert_bitwise_eq(out, w1, 6);
  step(comm, buf, g2, 6, out);
  ck_assert_bitwise_eq(out, w2, 6);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

START_TEST(test_density_one_is_dense_with_feedback) {
  /* k = d: everything is sent.  ef: a = e + g, sent = a, e = 0 (fp32 wire). */
  sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 1.0, 1, sparcclFloat32);
  sparcclComm_t rk = make_comm(sparcclRandK, sparcclFeedbackEF21, 1.0, 1, sparcclFloat32);
  float buf[5], buf2[5], out[5];
  const float g1[5] = {1, -2, 0.5f, 0, 7};
  const float g2[5] = {-3, 4, 0.25f, 1, -7};
  const float w3[5] = {0, 0, 0, 0, 0};
  step(comm, buf, g1, 5, out);
  ck_assert_bitwise_eq(out, g1, 5);
  step(comm, buf, g2, 5, out);
  ck_assert_bitwise_eq(out, g2, 5);
  step(comm, buf, w3, 5, out);
  ck_assert_bitwise_eq(out, w3, 5); /* e stayed 0 */
  /* randk with k = d: scale d/k = 1; ef21 h += g - h = g, so H = g */
  step(rk, buf2, g1, 5, out);
  ck_assert_bitwise_eq(out, g1, 5);
  step(rk, buf2, g2, 5, out);
  ck_assert_bitwise_eq(out, g2, 5);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  ck_assert_int_eq(sparcclCommDestroy(rk), sparcclSuccess);
}
END_TEST

START_TEST(test_single_element_layer) {
  /* d = 1: k = min(1, max(1, ceil(0.01))) = 1; randk scale 1/1 */
  int comp;
  for (comp = sparcclTopK; comp <= sparcclImpKRandom; comp++) {
    sparcclComm_t comm = make_comm(comp, sparcclFeedbackEF, 0.01, 1, sparcclFloat32);
    float buf[1], out[1];
    const float g1[1] = {-3.5f}, g2[1] = {2};
    step(comm, buf, g1, 1, out);
    ck_assert_msg(out[0] == -3.5f, "compressor %d: %g", comp, (double)out[0]);
    step(comm, buf, g2, 1, out);
    ck_assert_msg(out[0] == 2.0f, "compressor %d: %g", comp, (double)out[0]); /* e = 0 */
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
}
END_TEST

START_TEST(test_tiny_density_and_double_product) {
  float buf[100], out[100], g[100], want[100];
  size_t i;
  /* density 1e-9: ceil(1e-8) = 1 -> only the largest |g| */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackNone, 1e-9, 1, sparcclFloat32);
    const float g1[10] = {1, -2, 3, -4, 5, -6, 7, -10, 9, 8};
    const float w1[10] = {0, 0, 0, 0, 0, 0, 0, -10, 0, 0};
    step(comm, buf, g1, 10, out);
    ck_assert_bitwise_eq(out, w1, 10);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
  /* density 0.07, d = 100: the double product 0.07 * 100 is 7.000000000000001, so
   * k = ceil(...) = 8 (SPEC 1: density and product in double); g_i = i + 1 -> 92..99 */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackNone, 0.07, 1, sparcclFloat32);
    for (i = 0; i < 100; i++) {
      g[i] = (float)(i + 1);
      want[i] = i >= 92 ? g[i] : 0.0f;
    }
    step(comm, buf, g, 100, out);
    ck_assert_bitwise_eq(out, want, 100);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
}
END_TEST

/* ------------------------------------------------------------------ layouts, layer ids */

START_TEST(test_layout_dense_and_sparse) {
  /* minSparse 4, density 0.25: layers {3 dense, 8 sparse (k 2), 2 dense, 6 sparse (k 2)}.
   * topk ef.  Dense layers: output = g exactly, no state.  Run for SUM and AVG (n = 1). */
  const size_t counts[4] = {3, 8, 2, 6};
  const float in1[19] = {1.5f, -2, 3, /* L1 = G1 */ 3, -1, 4, -1, 5, -9, 2, 6,
                         7, -0.25f, /* L3 */ 1, -4, 2, 3, -1, 0};
  const float want1[19] = {1.5f, -2, 3, 0, 0, 0, 0, 0, -9, 0, 6, 7, -0.25f,
                           /* |L3|: 4 (1), 3 (3); e3 = {1,0,2,0,-1,0} */ 0, -4, 0, 3, 0, 0};
  const float in2[19] = {0, 0, 1, /* G2 */ 2, 7, -1, 8, -2, 8, 1, -3, -1, 2, 1, 1, 1, 1, 1, 1};
  const float want2[19] = {/* dense: no memory of step 1 */ 0, 0, 1,
                           /* a = {5,6,3,7,3,8,3,-3} */ 0, 0, 0, 7, 0, 8, 0, 0, -1, 2,
                           /* a = e3+1 = {2,1,3,1,0,1} -> 3 (2), 2 (0) */ 2, 0, 3, 0, 0, 0};
  int op;
  for (op = 0; op < 2; op++) {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 0.25, 4, sparcclFloat32);
    float buf[19], out[19];
    sparcclStats_t st;
    ck_assert_int_eq(sparcclRegisterLayout(comm, buf, 4, counts), sparcclSuccess);
    step_op(comm, buf, in1, 19, out, op ? sparcclAvg : sparcclSum, 0);
    ck_assert_bitwise_eq(out, want1, 19);
    step_op(comm, buf, in2, 19, out, op ? sparcclAvg : sparcclSum, 0);
    ck_assert_bitwise_eq(out, want2, 19);
    ck_assert_int_eq(sparcclCommGetStats(comm, &st), sparcclSuccess);
    ck_assert_uint_eq(st.layersSparse, 2);
    ck_assert_uint_eq(st.layersDense, 2);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
}
END_TEST

START_TEST(test_layer_ids_and_steps) {
  /* randk none, all-ones input, value 4 on the set.  Key X (first call: layer 0), then the
   * layout of key Y registered (layers 1, 2), in that creation order.  Each layer's step
   * counts its own calls: X, Y, X, Y -> X steps 0, 1; Y's layers steps 0, 1. */
  sparcclComm_t comm = make_comm(sparcclRandK, sparcclFeedbackNone, 0.25, 1, sparcclFloat32);
  const size_t counts[2] = {8, 8};
  float x[8], y[16], out[16], want[16];
  float ones[16];
  int s, i, sel[8];
  for (i = 0; i < 16; i++) ones[i] = 1;
  for (s = 0; s < 2; s++) {
    step(comm, x, ones, 8, out);
    memset(want, 0, sizeof(want));
    for (i = 0; i < 2; i++) want[RK_L0[s][i]] = 4;
    randk_set(0, (uint32_t)s, 8, 2, sel); /* and the same from Philox directly */
    assert_set(sel, 8, RK_L0[s], 2, "layer 0");
    ck_assert_bitwise_eq(out, want, 8);
    if (s == 0) ck_assert_int_eq(sparcclRegisterLayout(comm, y, 2, counts), sparcclSuccess);
    step(comm, y, ones, 16, out);
    memset(want, 0, sizeof(want));
    for (i = 0; i < 2; i++) {
      want[RK_L1[s][i]] = 4;
      want[8 + RK_L2[s][i]] = 4;
    }
    ck_assert_bitwise_eq(out, want, 16);
  }
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* ------------------------------------------------------------------ dtypes */

static uint16_t h16(float f) { return sparccl_float_to_half(f, 0); }
static uint16_t b16(float f) { return sparccl_float_to_bfloat16(f, 0); }

static void step16(sparcclComm_t comm, uint16_t* buf, const uint16_t* g, size_t d,
                   uint16_t* out, int dtype) {
  memcpy(buf, g, d * 2);
  ck_assert_int_eq(sparcclAllReduce(buf, out, d, (sparcclDataType_t)dtype, sparcclSum, comm, NULL),
                   sparcclSuccess);
}

#define ASSERT_U16(out, want, n)                                                        \
  do {                                                                                  \
    size_t j_;                                                                          \
    for (j_ = 0; j_ < (n); j_++)                                                        \
      ck_assert_msg((out)[j_] == (want)[j_], "element %zu: 0x%04x, want 0x%04x", j_,    \
                    (unsigned)(out)[j_], (unsigned)(want)[j_]);                         \
  } while (0)

START_TEST(test_float16_gradients) {
  /* topk ef, d = 4, k = 1.  fp16: 1 = 0x3c00, 8 = 0x4800, 2^-11 = 0x1000, 2^-12 = 0x0c00,
   * 2^-24 = 0x0001 (subnormal), 1 + 2^-10 = 0x3c01. */
  sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 0.25, 1, sparcclFloat32);
  uint16_t buf[4], out[4];
  const uint16_t g0[4] = {0x3c00, 0, 0, 0x4800}, w0[4] = {0, 0, 0, 0x4800}; /* e = {1,0,0,0} */
  const uint16_t g1[4] = {0x1000, 0x0001, 0, 0x4800}; /* a = {1+2^-11, 2^-24, 0, 8} -> 3 */
  const uint16_t g2[4] = {0x0c00, 0, 0, 0};
  /* a0 = 1 + 2^-11 + 2^-12 (exact in float32), sent, then rounded once: 1 + 0.75 ulp ->
   * 1 + 2^-10 = 0x3c01.  (Rounding e to fp16 between steps would give 1 = 0x3c00.) */
  const uint16_t w2[4] = {0x3c01, 0, 0, 0};
  const uint16_t z[4] = {0, 0, 0, 0};
  const uint16_t w3[4] = {0, 0x0001, 0, 0}; /* e1 = 2^-24 survived exactly */
  step16(comm, buf, g0, 4, out, sparcclFloat16); ASSERT_U16(out, w0, 4);
  step16(comm, buf, g1, 4, out, sparcclFloat16); ASSERT_U16(out, w0, 4);
  step16(comm, buf, g2, 4, out, sparcclFloat16); ASSERT_U16(out, w2, 4);
  step16(comm, buf, z, 4, out, sparcclFloat16); ASSERT_U16(out, w3, 4);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  /* Overflow of the output: 60000 (0x7b53) kept in e twice -> 120000 -> Inf (0x7c00), as
   * NCCL (the output is not saturated). */
  comm = make_comm(sparcclTopK, sparcclFeedbackEF, 0.5, 1, sparcclFloat32);
  {
    uint16_t b2[2], o2[2];
    const uint16_t a0[2] = {0x7b53, 0x7bff}, v0[2] = {0, 0x7bff};
    const uint16_t a1[2] = {0x7b53, 0}, v1[2] = {0x7c00, 0};
    ck_assert_uint_eq(h16(60000.0f), 0x7b53);
    step16(comm, b2, a0, 2, o2, sparcclFloat16); ASSERT_U16(o2, v0, 2);
    step16(comm, b2, a1, 2, o2, sparcclFloat16); ASSERT_U16(o2, v1, 2);
  }
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

START_TEST(test_bfloat16_gradients) {
  /* topk ef, d = 4, k = 1.  bf16: 1 = 0x3f80, 8 = 0x4100, 2^-8 = 0x3b80, 2^-9 = 0x3b00,
   * 1 + 2^-7 = 0x3f81. */
  sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 0.25, 1, sparcclFloat32);
  uint16_t buf[4], out[4];
  const uint16_t g0[4] = {0x3f80, 0, 0, 0x4100}, w0[4] = {0, 0, 0, 0x4100};
  const uint16_t g1[4] = {0x3b80, 0, 0, 0x4100}; /* e0 = 1 + 2^-8 (a tie in bf16) */
  const uint16_t g2[4] = {0x3b00, 0, 0, 0};
  /* a0 = 1 + 2^-8 + 2^-9 = 1 + 0.75 ulp -> 0x3f81 once; double rounding would give 0x3f80 */
  const uint16_t w2[4] = {0x3f81, 0, 0, 0};
  const uint16_t nan3[4] = {0x7fc0, 0x3f80, 0, 0};
  ck_assert_uint_eq(b16(P2(-9)), 0x3b00);
  step16(comm, buf, g0, 4, out, sparcclBfloat16); ASSERT_U16(out, w0, 4);
  step16(comm, buf, g1, 4, out, sparcclBfloat16); ASSERT_U16(out, w0, 4);
  step16(comm, buf, g2, 4, out, sparcclBfloat16); ASSERT_U16(out, w2, 4);
  /* a bf16 NaN input: the layer's output is all NaN */
  step16(comm, buf, nan3, 4, out, sparcclBfloat16);
  {
    int j;
    for (j = 0; j < 4; j++)
      ck_assert_msg((out[j] & 0x7f80u) == 0x7f80u && (out[j] & 0x7fu) != 0, "0x%04x not NaN", out[j]);
  }
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  /* Output overflow: max (0x7f7f = 2^128 - 2^120) + 2^119 (0x7b00) = 2^128 - 2^119, finite in
   * float32, a tie in bf16 that rounds to even: 0x7f80 = Inf. */
  comm = make_comm(sparcclTopK, sparcclFeedbackEF, 0.5, 1, sparcclFloat32);
  {
    uint16_t b2[2], o2[2];
    const uint16_t a0[2] = {0x7b00, 0x7f7f}, v0[2] = {0, 0x7f7f};
    const uint16_t a1[2] = {0x7f7f, 0}, v1[2] = {0x7f80, 0};
    step16(comm, b2, a0, 2, o2, sparcclBfloat16); ASSERT_U16(o2, v0, 2);
    step16(comm, b2, a1, 2, o2, sparcclBfloat16); ASSERT_U16(o2, v1, 2);
  }
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* ------------------------------------------------------------------ wire types */

START_TEST(test_wire_bf16_error_keeps_remainder) {
  /* topk ef, d = 4, k = 1, bf16 wire (8 significant bits). */
  sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 0.25, 1, sparcclBfloat16);
  float buf[4], out[4];
  const float z[4] = {0, 0, 0, 0};
  const float g0[4] = {1 + P2(-10), 0.5f, 0, 0};
  const float w0[4] = {1, 0, 0, 0};       /* bf16(1 + 2^-10) = 1; e = {2^-10, 0.5, 0, 0} */
  const float w1[4] = {0, 0.5f, 0, 0};    /* |e| largest at 1 */
  const float w2[4] = {P2(-10), 0, 0, 0}; /* the remainder, exact in bf16 */
  float g3[4] = {0, 0, 0, 0};
  float w3[4] = {0, 0, 0, 0};
  const float w4[4] = {P2(120), 0, 0, 0};
  const float w5[4] = {-P2(104), 0, 0, 0};
  step(comm, buf, g0, 4, out); ck_assert_bitwise_eq(out, w0, 4);
  step(comm, buf, z, 4, out); ck_assert_bitwise_eq(out, w1, 4);
  step(comm, buf, z, 4, out); ck_assert_bitwise_eq(out, w2, 4);
  /* Saturation: FLT_MAX = 2^128 - 2^104 rounds to Inf in bf16; the wire saturates to
   * 0x7f7f = 2^128 - 2^120 and e = 2^120 - 2^104. */
  g3[0] = sparccl_bits_float(0x7f7fffffu);
  w3[0] = sparccl_bits_float(0x7f7f0000u);
  step(comm, buf, g3, 4, out); ck_assert_bitwise_eq(out, w3, 4);
  /* e = 2^120 - 2^104 = 2^119 (2 - 2^-15) rounds to 2^120; e = -2^104 */
  step(comm, buf, z, 4, out); ck_assert_bitwise_eq(out, w4, 4);
  step(comm, buf, z, 4, out); ck_assert_bitwise_eq(out, w5, 4);
  ck_assert_int_eq(skipped(comm), 0);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

START_TEST(test_wire_fp16_error_keeps_remainder) {
  sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 0.25, 1, sparcclFloat16);
  float buf[4], out[4];
  const float z[4] = {0, 0, 0, 0};
  const float g0[4] = {70000, 0, 0, 0}, w0[4] = {65504, 0, 0, 0}; /* saturated; e = 4496 */
  const float g1[4] = {0, 1 + P2(-12), 0, 0}, w1[4] = {4496, 0, 0, 0}; /* 4496 = 4 * 1124 */
  const float w2[4] = {0, 1, 0, 0};       /* fp16(1 + 2^-12) = 1; e = 2^-12 */
  const float w3[4] = {0, P2(-12), 0, 0};
  step(comm, buf, g0, 4, out); ck_assert_bitwise_eq(out, w0, 4);
  step(comm, buf, g1, 4, out); ck_assert_bitwise_eq(out, w1, 4);
  step(comm, buf, z, 4, out); ck_assert_bitwise_eq(out, w2, 4);
  step(comm, buf, z, 4, out); ck_assert_bitwise_eq(out, w3, 4);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

START_TEST(test_wire_bf16_ef21_scam_dense_k) {
  float buf[4], out[4];
  /* ef21: h accumulates the rounded values: h = 1, then x = 2^-10 -> h = 1 + 2^-10 */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF21, 0.25, 1, sparcclBfloat16);
    const float g[4] = {1 + P2(-10), 0, 0, 0};
    const float w0[4] = {1, 0, 0, 0}, w1[4] = {1 + P2(-10), 0, 0, 0};
    step(comm, buf, g, 4, out); ck_assert_bitwise_eq(out, w0, 4);
    step(comm, buf, g, 4, out); ck_assert_bitwise_eq(out, w1, 4);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
  /* scam, d = 2, k = 1: sent bf16(g) = 1, e = 2^-10; then g = {2^-12, 2^-11}: a = {2^-10 +
   * 2^-12, 2^-11} selects 0 only because e kept the remainder; value g = 2^-12 */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackSCAM, 0.5, 1, sparcclBfloat16);
    const float g0[2] = {1 + P2(-10), 0}, w0[2] = {1, 0};
    const float g1[2] = {P2(-12), P2(-11)}, w1[2] = {P2(-12), 0};
    step(comm, buf, g0, 2, out); ck_assert_bitwise_eq(out, w0, 2);
    step(comm, buf, g1, 2, out); ck_assert_bitwise_eq(out, w1, 2);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
  /* k = d with a bf16 wire: everything sent rounded, e keeps every remainder */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 1.0, 1, sparcclBfloat16);
    const float g0[3] = {1 + P2(-10), 3, -1 - P2(-9)}, w0[3] = {1, 3, -1};
    const float z[3] = {0, 0, 0}, w1[3] = {P2(-10), 0, -P2(-9)};
    step(comm, buf, g0, 3, out); ck_assert_bitwise_eq(out, w0, 3);
    step(comm, buf, z, 3, out); ck_assert_bitwise_eq(out, w1, 3);
    step(comm, buf, z, 3, out); ck_assert_bitwise_eq(out, z, 3);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
}
END_TEST

/* ------------------------------------------------------------------ non-finite (SPEC 2) */

/* Loop over the 20 (compressor, feedback) pairs: comm A sees G1, BAD, G4, G1, G2; comm B
 * sees G1, G4, G1, G2.  BAD's output is all NaN, the call succeeds, and A's later outputs
 * equal B's bitwise (the state, the step counter included, was left as it was). */
START_TEST(test_nonfinite_step_is_as_if_never) {
  int comp = _i / 4, fb = _i % 4;
  sparcclComm_t a = make_comm(comp, fb, 0.25, 1, sparcclFloat32);
  sparcclComm_t b = make_comm(comp, fb, 0.25, 1, sparcclFloat32);
  float bufA[8], bufB[8], outA[8], outB[8], bad[8];
  const float* seq[4] = {G1, G4, G1, G2};
  int s;
  memcpy(bad, G2, sizeof(bad));
  bad[3] = (_i & 1) ? INFINITY : NAN;
  if (_i % 3 == 0) bad[3] = -INFINITY;
  for (s = 0; s < 4; s++) {
    step(a, bufA, seq[s], 8, outA);
    step(b, bufB, seq[s], 8, outB);
    ck_assert_msg(test_first_difference(outA, outB, 8) < 0,
                  "compressor %d feedback %d: step %d differs from the comm without the bad step",
                  comp, fb, s);
    if (s == 0) {
      step(a, bufA, bad, 8, outA);
      assert_all_nan(outA, 8);
      ck_assert_int_eq(skipped(a), 1);
    }
  }
  ck_assert_int_eq(skipped(a), 1);
  ck_assert_int_eq(skipped(b), 0);
  ck_assert_int_eq(sparcclCommDestroy(a), sparcclSuccess);
  ck_assert_int_eq(sparcclCommDestroy(b), sparcclSuccess);
}
END_TEST

START_TEST(test_nonfinite_by_overflow) {
  float buf[4], out[4];
  const float big = P2(127);
  /* ef: e = 2^127 kept; then a = 2^127 + 2^127 = Inf: skipped; then a = 2^127 + 1 = 2^127 */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 0.25, 1, sparcclFloat32);
    const float g0[4] = {big, 0, 0, 1.5f * big}, w0[4] = {0, 0, 0, 1.5f * big};
    const float g1[4] = {big, 0, 0, 0};
    const float g2[4] = {1, 0, 0, 0}, w2[4] = {big, 0, 0, 0};
    step(comm, buf, g0, 4, out); ck_assert_bitwise_eq(out, w0, 4);
    step(comm, buf, g1, 4, out); assert_all_nan(out, 4);
    ck_assert_int_eq(skipped(comm), 1);
    step(comm, buf, g2, 4, out); ck_assert_bitwise_eq(out, w2, 4);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
  /* scam: the same overflow of a; then a = {2^127, 0, 0, 2} selects 0 (e intact), value g = 1 */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackSCAM, 0.25, 1, sparcclFloat32);
    const float g0[4] = {big, 0, 0, 1.5f * big}, w0[4] = {0, 0, 0, 1.5f * big};
    const float g1[4] = {big, 0, 0, 0};
    const float g2[4] = {1, 0, 0, 2}, w2[4] = {1, 0, 0, 0};
    step(comm, buf, g0, 4, out); ck_assert_bitwise_eq(out, w0, 4);
    step(comm, buf, g1, 4, out); assert_all_nan(out, 4);
    step(comm, buf, g2, 4, out); ck_assert_bitwise_eq(out, w2, 4);
    ck_assert_int_eq(skipped(comm), 1);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
  /* ef21: h = 2^127; g = -2^127: g - h = -2^128 = -Inf: skipped; then g = {1,0,0,2^126}:
   * x = {1,0,0,-2^126} -> sent -2^126, H = h = 2^126 */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF21, 0.25, 1, sparcclFloat32);
    const float g0[4] = {0, 0, 0, big}, w0[4] = {0, 0, 0, big};
    const float g1[4] = {0, 0, 0, -big};
    const float g2[4] = {1, 0, 0, P2(126)}, w2[4] = {0, 0, 0, P2(126)};
    step(comm, buf, g0, 4, out); ck_assert_bitwise_eq(out, w0, 4);
    step(comm, buf, g1, 4, out); assert_all_nan(out, 4);
    step(comm, buf, g2, 4, out); ck_assert_bitwise_eq(out, w2, 4);
    ck_assert_int_eq(skipped(comm), 1);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
  /* k = d (no selection): a NaN still skips the layer and keeps e */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 1.0, 1, sparcclBfloat16);
    const float g0[2] = {1 + P2(-10), 0}, w0[2] = {1, 0};
    const float g1[2] = {NAN, 5};
    const float z[2] = {0, 0}, w2[2] = {P2(-10), 0};
    step(comm, buf, g0, 2, out); ck_assert_bitwise_eq(out, w0, 2);
    step(comm, buf, g1, 2, out); assert_all_nan(out, 2);
    step(comm, buf, z, 2, out); ck_assert_bitwise_eq(out, w2, 2);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
  /* k = d, bf16 wire, ef: FLT_MAX is sent saturated (2^128 - 2^120), e = 2^120 - 2^104;
   * then g = FLT_MAX again: g is finite but a = e + g overflows -> skipped; e intact: a zero
   * step sends bf16(2^120 - 2^104) = 2^120 */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF, 1.0, 1, sparcclBfloat16);
    float g0[2] = {0, 0}, w0[2] = {0, 0}, g1[2] = {0, 1};
    const float z[2] = {0, 0}, w2[2] = {P2(120), 0};
    g0[0] = g1[0] = sparccl_bits_float(0x7f7fffffu);
    w0[0] = sparccl_bits_float(0x7f7f0000u);
    step(comm, buf, g0, 2, out); ck_assert_bitwise_eq(out, w0, 2);
    step(comm, buf, g1, 2, out); assert_all_nan(out, 2);
    step(comm, buf, z, 2, out); ck_assert_bitwise_eq(out, w2, 2);
    ck_assert_int_eq(skipped(comm), 1);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
  /* k = d, ef21: h = FLT_MAX; g = -FLT_MAX: g - h = -Inf -> skipped; g = 0: x = -FLT_MAX,
   * h = 0, output H = 0 */
  {
    sparcclComm_t comm = make_comm(sparcclTopK, sparcclFeedbackEF21, 1.0, 1, sparcclFloat32);
    float g0[2] = {0, 2}, g1[2] = {0, 2};
    const float z[2] = {0, 0};
    g0[0] = sparccl_bits_float(0x7f7fffffu);
    g1[0] = -g0[0];
    step(comm, buf, g0, 2, out); ck_assert_bitwise_eq(out, g0, 2);
    step(comm, buf, g1, 2, out); assert_all_nan(out, 2);
    step(comm, buf, z, 2, out); ck_assert_bitwise_eq(out, z, 2);
    ck_assert_int_eq(skipped(comm), 1);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
}
END_TEST

START_TEST(test_nonfinite_layers_are_independent) {
  /* randk ef, layout {8, 8, 3} with minSparse 4: layer ids 0, 1 sparse, 2 dense.  Call 1
   * has a NaN in layer 0 and an Inf in the dense layer.  Layer 0 skips (its step stays 0
   * -> its next call uses step 1's set as if call 1 never happened); layer 1 goes on (steps
   * 0, 1, 2: sets RK_L1); the dense layer passes Inf and NaN through, uncounted. */
  sparcclComm_t comm = make_comm(sparcclRandK, sparcclFeedbackEF, 0.25, 4, sparcclFloat32);
  const size_t counts[3] = {8, 8, 3};
  float buf[19], out[19];
  const float in0[19] = {1, 2, 3, 4, 5, 6, 7, 8, /* L1 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3};
  const float want0[19] = {/* S {0,1}: 4g; e0 = {-3,-6,3,4,5,6,7,8} */ 4, 8, 0, 0, 0, 0, 0, 0,
                           /* S {0,2}; e1 = {-3,1,-3,1,1,1,1,1} */ 4, 0, 4, 0, 0, 0, 0, 0,
                           1, 2, 3};
  float in1[19] = {-1, 1, -2, 2, -3, 3, -4, 4, /* L1 = R1 */ 1, 2, 3, 4, 5, 6, 7, 8,
                   0, 5, -6};
  const float want1L1[8] = {/* a = {-2,3,0,5,6,7,8,9}, S {3,5}: 20, 28;
                               e1 = {-2,3,0,-15,6,-21,8,9} */ 0, 0, 0, 20, 0, 28, 0, 0};
  float in2[19] = {-1, 1, -2, 2, -3, 3, -4, 4, /* L1 = R2 */ -1, 1, -2, 2, -3, 3, -4, 4,
                   0, 0.5f, 7};
  const float want2[19] = {/* layer 0 at its step 1: a = {-4,-5,1,6,2,9,3,12}, S {0,4} */
                           -16, 0, 0, 0, 8, 0, 0, 0,
                           /* a = {-3,4,-2,-13,3,-18,4,13}, S {0,4} (step 2): -12, 12 */
                           -12, 0, 0, 0, 12, 0, 0, 0, 0, 0.5f, 7};
  in1[4] = NAN;
  in1[16] = INFINITY;
  in2[16] = NAN;
  ck_assert_int_eq(sparcclRegisterLayout(comm, buf, 3, counts), sparcclSuccess);
  step(comm, buf, in0, 19, out);
  ck_assert_bitwise_eq(out, want0, 19);
  step(comm, buf, in1, 19, out);
  assert_all_nan(out, 8);
  ck_assert_bitwise_eq(out + 8, want1L1, 8);
  ck_assert(isinf(out[16]) && out[16] > 0);
  ck_assert(out[17] == 5 && out[18] == -6);
  ck_assert_int_eq(skipped(comm), 1);
  step(comm, buf, in2, 19, out);
  ck_assert_bitwise_eq(out, want2, 16);
  ck_assert(isnan(out[16]) && out[17] == 0.5f && out[18] == 7);
  ck_assert_int_eq(skipped(comm), 1); /* dense non-finite values are not skipped steps */
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

/* ------------------------------------------------------------------ in place */

/* Loop: pair = _i % 20, dtype = _i / 20 (float32, bfloat16, float16).  Layout {8, 3, 8}
 * (the 3 dense), small-integer inputs (exact in every dtype), SUM and AVG alternating, an
 * importance step after call 2 for the impk family.  In place == out of place, bitwise. */
START_TEST(test_in_place_matches_out_of_place) {
  static const int dtypes[3] = {sparcclFloat32, sparcclBfloat16, sparcclFloat16};
  int comp = (_i % 20) / 4, fb = _i % 4, dtype = dtypes[_i / 20];
  size_t es = dtype == sparcclFloat32 ? 4 : 2;
  const size_t counts[3] = {8, 3, 8};
  sparcclComm_t a = make_comm(comp, fb, 0.25, 4, sparcclFloat32);
  sparcclComm_t b = make_comm(comp, fb, 0.25, 4, sparcclFloat32);
  unsigned char ip[19 * 4], send[19 * 4], out[19 * 4], g[19 * 4];
  uint64_t rng = 1234 + (uint64_t)_i;
  int s, i;
  ck_assert_int_eq(sparcclRegisterLayout(a, ip, 3, counts), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(b, send, 3, counts), sparcclSuccess);
  for (s = 0; s < 6; s++) {
    sparcclRedOp_t op = (s & 1) ? sparcclAvg : sparcclSum;
    for (i = 0; i < 19; i++) {
      float v = (float)((int)(test_random_u64(&rng) % 17) - 8);
      if (dtype == sparcclFloat32) memcpy(g + 4 * i, &v, 4);
      else {
        uint16_t h = dtype == sparcclFloat16 ? h16(v) : b16(v);
        memcpy(g + 2 * i, &h, 2);
      }
    }
    if (s == 2 && comp >= sparcclImpK) {
      unsigned char q[19 * 4];
      for (i = 0; i < 19; i++) { /* q = -1, 0 or 1 in the dtype; p = g */
        float v = (float)((int)(test_random_u64(&rng) % 3) - 1);
        if (dtype == sparcclFloat32) memcpy(q + 4 * i, &v, 4);
        else { uint16_t h = dtype == sparcclFloat16 ? h16(v) : b16(v); memcpy(q + 2 * i, &h, 2); }
      }
      memcpy(ip, g, 19 * es);
      memcpy(send, g, 19 * es);
      ck_assert_int_eq(sparcclImportanceUpdate(q, ip, 19, (sparcclDataType_t)dtype, a, NULL), sparcclSuccess);
      ck_assert_int_eq(sparcclImportanceUpdate(q, send, 19, (sparcclDataType_t)dtype, b, NULL), sparcclSuccess);
    }
    memcpy(ip, g, 19 * es);
    memcpy(send, g, 19 * es);
    ck_assert_int_eq(sparcclAllReduce(ip, ip, 19, (sparcclDataType_t)dtype, op, a, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(send, out, 19, (sparcclDataType_t)dtype, op, b, NULL), sparcclSuccess);
    ck_assert_msg(memcmp(ip, out, 19 * es) == 0, "pair %d/%d dtype %d step %d: in place differs",
                  comp, fb, dtype, s);
    ck_assert_msg(memcmp(send, g, 19 * es) == 0, "out of place changed its send buffer");
  }
  ck_assert_int_eq(sparcclCommDestroy(a), sparcclSuccess);
  ck_assert_int_eq(sparcclCommDestroy(b), sparcclSuccess);
}
END_TEST

/* ------------------------------------------------------------------ conservation */

/* Does the file at path hold these bytes somewhere? */
static int file_contains(const char* path, const void* bytes, size_t n) {
  FILE* f = fopen(path, "rb");
  unsigned char* data;
  long size;
  size_t i;
  int found = 0;
  ck_assert_msg(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fseek(f, 0, SEEK_SET);
  data = (unsigned char*)malloc((size_t)size);
  ck_assert(data != NULL);
  ck_assert_uint_eq(fread(data, 1, (size_t)size, f), (size_t)size);
  fclose(f);
  for (i = 0; !found && i + n <= (size_t)size; i++) found = memcmp(data + i, bytes, n) == 0;
  free(data);
  return found;
}

/*
 * SPEC 1 conservation: e_T = sum_t g_t - sum_t sent_t.  Loop over (topk, impk) x (ef, scam).
 * d = 10, k = 2, 100 steps of integers in [-8, 8]; impk first gets weights in {0, 1, 2} (so
 * w a stays an integer), hence every value, e and both running sums are integers far below
 * 2^24 and every float32 operation is exact: the identity must hold bitwise.
 * On one rank the SUM output is this rank's sent vector, so S = sum of outputs.  e_T is
 * read two ways:
 *  - the saved state (sparcclSaveState) stores e as raw float32; the expected e_T = G - S
 *    (10 distinctive integers, checked to include values beyond the weights' 0/1/2) must
 *    appear in the file byte for byte;
 *  - for topk + ef, by draining: with g = 0, a = e and each step sends the two largest |e|
 *    exactly and zeroes them; after ceil(10/2) = 5 zero steps e = 0, so the drained
 *    outputs sum to e_T, and one more zero step must output all zeros.
 * (scam cannot be drained: it sends g = 0 and keeps e.)
 */
START_TEST(test_conservation) {
  int comp = (_i / 2) ? sparcclImpK : sparcclTopK;
  int fb = (_i % 2) ? sparcclFeedbackSCAM : sparcclFeedbackEF;
  sparcclComm_t comm = make_comm(comp, fb, 0.2, 1, sparcclFloat32);
  float buf[10], out[10], g[10], G[10] = {0}, S[10] = {0}, e[10];
  uint64_t rng = 99 + (uint64_t)_i;
  char path[256];
  int t, i, distinctive = 0;
  if (comp == sparcclImpK) {
    const float p[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    const float q[10] = {1, 0, -1, 0, 1, 0, 0, -1, 0, 1}; /* w = {2,1,0,1,2,1,1,0,1,2} */
    importance_step(comm, buf, p, q, 10);
  }
  for (t = 0; t < 100; t++) {
    for (i = 0; i < 10; i++) g[i] = (float)((int)(test_random_u64(&rng) % 17) - 8);
    step(comm, buf, g, 10, out);
    for (i = 0; i < 10; i++) {
      G[i] += g[i];
      S[i] += out[i];
    }
  }
  for (i = 0; i < 10; i++) {
    e[i] = G[i] - S[i];
    ck_assert(e[i] == floorf(e[i]) && fabsf(e[i]) < 65536.0f); /* integer: all was exact */
    if (fabsf(e[i]) > 2.0f) distinctive++;
  }
  ck_assert_msg(distinctive >= 2, "e_T too plain to be searched for");
  snprintf(path, sizeof(path), "/tmp/sparccl_test_conservation_%ld_%d.state", (long)getpid(),
           (int)_i);
  ck_assert_int_eq(sparcclSaveState(comm, path), sparcclSuccess);
  ck_assert_msg(file_contains(path, e, sizeof(e)), "saved e is not sum g - sum sent");
  remove(path);
  if (comp == sparcclTopK && fb == sparcclFeedbackEF) {
    const float z[10] = {0};
    float D[10] = {0};
    for (t = 0; t < 5; t++) {
      step(comm, buf, z, 10, out);
      for (i = 0; i < 10; i++) D[i] += out[i];
    }
    ck_assert_bitwise_eq(D, e, 10);
    step(comm, buf, z, 10, out);
    ck_assert_bitwise_eq(out, z, 10);
  }
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

Suite* make_compressors_suite(void) {
  Suite* s = suite_create("compressors");
  TCase* tc = tcase_create("hand-computed");
  tcase_add_test(tc, test_philox_known_answers);
  tcase_add_test(tc, test_philox_sets);
  tcase_add_loop_test(tc, test_hand_table, 0, 3 * NCASES);
  tcase_add_test(tc, test_importance_needs_impk);
  tcase_add_test(tc, test_ties_and_signed_zero);
  tcase_add_test(tc, test_density_one_is_dense_with_feedback);
  tcase_add_test(tc, test_single_element_layer);
  tcase_add_test(tc, test_tiny_density_and_double_product);
  tcase_add_test(tc, test_layout_dense_and_sparse);
  tcase_add_test(tc, test_layer_ids_and_steps);
  tcase_add_test(tc, test_float16_gradients);
  tcase_add_test(tc, test_bfloat16_gradients);
  tcase_add_test(tc, test_wire_bf16_error_keeps_remainder);
  tcase_add_test(tc, test_wire_fp16_error_keeps_remainder);
  tcase_add_test(tc, test_wire_bf16_ef21_scam_dense_k);
  tcase_add_loop_test(tc, test_nonfinite_step_is_as_if_never, 0, 20);
  tcase_add_test(tc, test_nonfinite_by_overflow);
  tcase_add_test(tc, test_nonfinite_layers_are_independent);
  tcase_add_loop_test(tc, test_in_place_matches_out_of_place, 0, 60);
  tcase_add_loop_test(tc, test_conservation, 0, 4);
  suite_add_tcase(s, tc);
  return s;
}
