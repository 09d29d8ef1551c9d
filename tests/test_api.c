/*
 * The public API on one rank (SPEC 2, 6, 8): every error code that one rank can produce,
 * with proof that a failed call wrote nothing and changed no state; configuration from
 * the struct, the SPARCCL_* environment and the defaults; result strings and version.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"

#define SENTINEL_BITS 0x7fa5a5a5u /* a signalling-NaN pattern no output produces */

static float sentinel(void) {
  float f;
  uint32_t u = SENTINEL_BITS;
  memcpy(&f, &u, sizeof(f));
  return f;
}

static void fill_sentinel(float* x, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) x[i] = sentinel();
}

static int all_sentinel(const float* x, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], sizeof(u));
    if (u != SENTINEL_BITS) return 0;
  }
  return 1;
}

/* Every SPARCCL_* variable of SPEC 8. */
static const char* const envNames[] = {
    "SPARCCL_DENSITY", "SPARCCL_COMPRESSOR", "SPARCCL_FEEDBACK", "SPARCCL_WIRE",
    "SPARCCL_MIN_SPARSE", "SPARCCL_SEED", "SPARCCL_SHARED_RANDOMNESS", "SPARCCL_IMPORTANCE",
    "SPARCCL_IMP_GAMMA", "SPARCCL_IMP_ETA", "SPARCCL_IMP_LOW", "SPARCCL_IMP_HIGH",
    "SPARCCL_RESTART_EVERY", "SPARCCL_RESTART_RATIO", "SPARCCL_RESTART_LAG",
    "SPARCCL_RESTART_ON_LOSS", "SPARCCL_WARMUP_STEPS", "SPARCCL_MOMENTUM"};
#define NENV (sizeof(envNames) / sizeof(envNames[0]))

static void clear_env(void) {
  size_t i;
  for (i = 0; i < NENV; i++) unsetenv(envNames[i]);
}

/* ================================================================ strings, version */

START_TEST(test_error_strings) {
  int i, j;
  for (i = 0; i < (int)sparcclNumResults; i++) {
    const char* s = sparcclGetErrorString((sparcclResult_t)i);
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(strlen(s) > 0, "empty string for code %d", i);
    for (j = 0; j < i; j++)
      ck_assert_msg(strcmp(s, sparcclGetErrorString((sparcclResult_t)j)) != 0,
                    "codes %d and %d share the message '%s'", i, j, s);
  }
  /* The messages of the diagnosable failures point to SPARCCL_DEBUG (SPEC 6). */
  ck_assert_ptr_nonnull(strstr(sparcclGetErrorString(sparcclInvalidArgument), "SPARCCL_DEBUG"));
  ck_assert_ptr_nonnull(strstr(sparcclGetErrorString(sparcclInvalidUsage), "SPARCCL_DEBUG"));
  ck_assert_ptr_nonnull(strstr(sparcclGetErrorString(sparcclSystemError), "SPARCCL_DEBUG"));
  /* Out of range: still a string, never NULL, and not "no error". */
  ck_assert_ptr_nonnull(sparcclGetErrorString(sparcclNumResults));
  ck_assert_ptr_nonnull(sparcclGetErrorString((sparcclResult_t)-1));
  ck_assert_str_ne(sparcclGetErrorString(sparcclNumResults), sparcclGetErrorString(sparcclSuccess));
}
END_TEST

START_TEST(test_version_count_rank) {
  int v = -1, n = -1, r = -1;
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.5, 1);
  sparcclComm_t comm;
  ck_assert_int_eq(sparcclGetVersion(&v), sparcclSuccess);
  ck_assert_int_eq(v, SPARCCL_VERSION_CODE);
  ck_assert_int_eq(SPARCCL_VERSION_CODE, SPARCCL_MAJOR * 10000 + SPARCCL_MINOR * 100 + SPARCCL_PATCH);
  ck_assert_int_eq(sparcclGetVersion(NULL), sparcclInvalidArgument);
  comm = test_comm_self(&config);
  ck_assert_int_eq(sparcclCommCount(comm, &n), sparcclSuccess);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(sparcclCommUserRank(comm, &r), sparcclSuccess);
  ck_assert_int_eq(r, 0);
  ck_assert_int_eq(sparcclCommCount(comm, NULL), sparcclInvalidArgument);
  ck_assert_int_eq(sparcclCommUserRank(comm, NULL), sparcclInvalidArgument);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  n = r = -7;
  ck_assert_int_eq(sparcclCommCount(comm, &n), sparcclInvalidUsage);
  ck_assert_int_eq(sparcclCommUserRank(comm, &r), sparcclInvalidUsage);
  ck_assert_int_eq(n, -7);
  ck_assert_int_eq(r, -7);
}
END_TEST

/* ================================================================ configuration */

static void check_defaults(const sparcclConfig_t* c) {
  ck_assert(c->density == 0.01);
  ck_assert_int_eq(c->compressor, sparcclImpK);
  ck_assert_int_eq(c->feedback, sparcclFeedbackSCAM);
  ck_assert_int_eq(c->wireType, sparcclFloat32);
  ck_assert_uint_eq(c->minSparseCount, 4096);
  ck_assert(c->seed == 0);
  ck_assert_int_eq(c->sharedRandomness, 0);
  ck_assert_int_eq(c->importance, sparcclImportanceNone);
  ck_assert(c->importanceLow == 0.0);
  ck_assert(c->importanceHigh == 2.0);
  ck_assert(c->importanceGamma > 0.0 && isfinite(c->importanceGamma));
  ck_assert(c->importanceEta > 0.0 && isfinite(c->importanceEta));
  ck_assert(c->restartEvery == 0);
  ck_assert(c->restartRatio == 0.0);
  ck_assert_int_eq(c->restartLag, 1);
  ck_assert_int_eq(c->restartOnLoss, 0);
  ck_assert_uint_eq(c->warmupSteps, 0);
  ck_assert(c->momentum == 0.9);
  ck_assert_uint_eq(c->size, sizeof(sparcclConfig_t));
  ck_assert_uint_eq(c->magic, SPARCCL_CONFIG_MAGIC);
  ck_assert_uint_eq(c->version, SPARCCL_VERSION_CODE);
}

START_TEST(test_defaults) {
  sparcclConfig_t init = SPARCCL_CONFIG_INITIALIZER, got;
  sparcclComm_t comm = NULL;
  clear_env();
  /* From the initializer. */
  ck_assert_int_eq(sparcclCommInitMpi(&comm, MPI_COMM_SELF, &init), sparcclSuccess);
  memset(&got, 0, sizeof(got));
  ck_assert_int_eq(sparcclCommGetConfig(comm, &got), sparcclSuccess);
  check_defaults(&got);
  ck_assert_int_eq(sparcclCommGetConfig(comm, NULL), sparcclInvalidArgument);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  /* From a NULL config. */
  comm = NULL;
  ck_assert_int_eq(sparcclCommInitMpi(&comm, MPI_COMM_SELF, NULL), sparcclSuccess);
  memset(&got, 0, sizeof(got));
  ck_assert_int_eq(sparcclCommGetConfig(comm, &got), sparcclSuccess);
  check_defaults(&got);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  /* The destroyed comm is refused, and the output is untouched. */
  memset(&got, 0x5a, sizeof(got));
  ck_assert_int_eq(sparcclCommGetConfig(comm, &got), sparcclInvalidUsage);
  ck_assert_uint_eq(got.magic, 0x5a5a5a5au);
}
END_TEST

/* One valid value of each variable, and the field it must land in. */
typedef struct {
  const char* name;
  const char* value;
  int (*check)(const sparcclConfig_t* c);
} EnvCase;

static int chk_density(const sparcclConfig_t* c) { return c->density == 0.125; }
static int chk_compressor(const sparcclConfig_t* c) { return c->compressor == sparcclImpKRandom; }
static int chk_compressor2(const sparcclConfig_t* c) { return c->compressor == sparcclRandK; }
static int chk_feedback(const sparcclConfig_t* c) { return c->feedback == sparcclFeedbackEF21; }
static int chk_feedback2(const sparcclConfig_t* c) { return c->feedback == sparcclFeedbackNone; }
static int chk_wire(const sparcclConfig_t* c) { return c->wireType == sparcclBfloat16; }
static int chk_wire2(const sparcclConfig_t* c) { return c->wireType == sparcclFloat16; }
static int chk_min(const sparcclConfig_t* c) { return c->minSparseCount == 12345; }
static int chk_seed(const sparcclConfig_t* c) { return c->seed == 18446744073709551614ull; }
static int chk_shared(const sparcclConfig_t* c) { return c->sharedRandomness == 1; }
static int chk_importance(const sparcclConfig_t* c) { return c->importance == sparcclImportanceOnline; }
static int chk_importance2(const sparcclConfig_t* c) { return c->importance == sparcclImportanceSimplex; }
static int chk_gamma(const sparcclConfig_t* c) { return c->importanceGamma == 0.375; }
static int chk_eta(const sparcclConfig_t* c) { return c->importanceEta == 42.5; }
static int chk_low(const sparcclConfig_t* c) { return c->importanceLow == 0.25; }
static int chk_high(const sparcclConfig_t* c) { return c->importanceHigh == 3.5; }
static int chk_every(const sparcclConfig_t* c) { return c->restartEvery == 15; }
static int chk_ratio(const sparcclConfig_t* c) { return c->restartRatio == 2.5; }
static int chk_lag(const sparcclConfig_t* c) { return c->restartLag == 3; }
static int chk_onloss(const sparcclConfig_t* c) { return c->restartOnLoss == 1; }
static int chk_warmup(const sparcclConfig_t* c) { return c->warmupSteps == 300; }
static int chk_momentum(const sparcclConfig_t* c) { return c->momentum == 0.5; }
static int chk_dgc(const sparcclConfig_t* c) { return c->feedback == sparcclFeedbackDGC; }

static const EnvCase goodEnv[] = {
    {"SPARCCL_DENSITY", "0.125", chk_density},
    {"SPARCCL_COMPRESSOR", "impk_random", chk_compressor},
    {"SPARCCL_COMPRESSOR", "randk", chk_compressor2},
    {"SPARCCL_FEEDBACK", "ef21", chk_feedback},
    {"SPARCCL_FEEDBACK", "none", chk_feedback2},
    {"SPARCCL_FEEDBACK", "dgc", chk_dgc},
    {"SPARCCL_WIRE", "bf16", chk_wire},
    {"SPARCCL_WIRE", "fp16", chk_wire2},
    {"SPARCCL_MIN_SPARSE", "12345", chk_min},
    {"SPARCCL_SEED", "18446744073709551614", chk_seed},
    {"SPARCCL_SHARED_RANDOMNESS", "1", chk_shared},
    {"SPARCCL_IMPORTANCE", "online", chk_importance},
    {"SPARCCL_IMPORTANCE", "simplex", chk_importance2},
    {"SPARCCL_IMP_GAMMA", "0.375", chk_gamma},
    {"SPARCCL_IMP_ETA", "42.5", chk_eta},
    {"SPARCCL_IMP_LOW", "0.25", chk_low},
    {"SPARCCL_IMP_HIGH", "3.5", chk_high},
    {"SPARCCL_RESTART_EVERY", "15", chk_every},
    {"SPARCCL_RESTART_RATIO", "2.5", chk_ratio},
    {"SPARCCL_RESTART_LAG", "3", chk_lag},
    {"SPARCCL_RESTART_ON_LOSS", "1", chk_onloss},
    {"SPARCCL_WARMUP_STEPS", "300", chk_warmup},
    {"SPARCCL_MOMENTUM", "0.5", chk_momentum},
};

START_TEST(test_env_picked_up) {
  size_t i;
  clear_env();
  for (i = 0; i < sizeof(goodEnv) / sizeof(goodEnv[0]); i++) {
    sparcclConfig_t init = SPARCCL_CONFIG_INITIALIZER, got;
    sparcclComm_t comm = NULL;
    sparcclResult_t r;
    setenv(goodEnv[i].name, goodEnv[i].value, 1);
    r = sparcclCommInitMpi(&comm, MPI_COMM_SELF, &init);
    unsetenv(goodEnv[i].name);
    ck_assert_msg(r == sparcclSuccess, "%s=%s refused: %d", goodEnv[i].name, goodEnv[i].value, r);
    ck_assert_int_eq(sparcclCommGetConfig(comm, &got), sparcclSuccess);
    ck_assert_msg(goodEnv[i].check(&got), "%s=%s not picked up", goodEnv[i].name, goodEnv[i].value);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
  /* Every variable is covered at least once. */
  for (i = 0; i < NENV; i++) {
    size_t j;
    int seen = 0;
    for (j = 0; j < sizeof(goodEnv) / sizeof(goodEnv[0]); j++) seen |= !strcmp(goodEnv[j].name, envNames[i]);
    ck_assert_msg(seen, "%s not covered", envNames[i]);
  }
}
END_TEST

START_TEST(test_env_all_at_once_and_caller_wins) {
  size_t i;
  sparcclConfig_t init = SPARCCL_CONFIG_INITIALIZER, got;
  sparcclComm_t comm = NULL;
  clear_env();
  /* All variables at once (one value each; the second value per name wins by order). */
  for (i = 0; i < sizeof(goodEnv) / sizeof(goodEnv[0]); i++)
    if (i == 0 || strcmp(goodEnv[i].name, goodEnv[i - 1].name) != 0)
      setenv(goodEnv[i].name, goodEnv[i].value, 1);
  ck_assert_int_eq(sparcclCommInitMpi(&comm, MPI_COMM_SELF, &init), sparcclSuccess);
  ck_assert_int_eq(sparcclCommGetConfig(comm, &got), sparcclSuccess);
  for (i = 0; i < sizeof(goodEnv) / sizeof(goodEnv[0]); i++)
    if (i == 0 || strcmp(goodEnv[i].name, goodEnv[i - 1].name) != 0)
      ck_assert_msg(goodEnv[i].check(&got), "%s lost", goodEnv[i].name);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);

  /* Every field the caller sets wins over the environment (still set). */
  init.density = 0.5;
  init.compressor = sparcclTopK;
  init.feedback = sparcclFeedbackEF;
  init.wireType = sparcclFloat32;
  init.minSparseCount = 7;
  init.seed = 99;
  init.sharedRandomness = 0;
  init.importance = sparcclImportanceCube;
  init.importanceGamma = 0.5;
  init.importanceEta = 2.0;
  init.importanceLow = 0.5;
  init.importanceHigh = 1.5;
  init.restartEvery = 4;
  init.restartRatio = 1.5;
  init.restartLag = 2;
  init.restartOnLoss = 0;
  init.warmupSteps = 5;
  init.momentum = 0.25;
  ck_assert_int_eq(sparcclCommInitMpi(&comm, MPI_COMM_SELF, &init), sparcclSuccess);
  ck_assert_int_eq(sparcclCommGetConfig(comm, &got), sparcclSuccess);
  clear_env();
  ck_assert_uint_eq(got.warmupSteps, 5);
  ck_assert(got.momentum == 0.25);
  ck_assert(got.density == 0.5);
  ck_assert_int_eq(got.compressor, sparcclTopK);
  ck_assert_int_eq(got.feedback, sparcclFeedbackEF);
  ck_assert_int_eq(got.wireType, sparcclFloat32);
  ck_assert_uint_eq(got.minSparseCount, 7);
  ck_assert(got.seed == 99);
  ck_assert_int_eq(got.sharedRandomness, 0);
  ck_assert_int_eq(got.importance, sparcclImportanceCube);
  ck_assert(got.importanceGamma == 0.5);
  ck_assert(got.importanceEta == 2.0);
  ck_assert(got.importanceLow == 0.5);
  ck_assert(got.importanceHigh == 1.5);
  ck_assert(got.restartEvery == 4);
  ck_assert(got.restartRatio == 1.5);
  ck_assert_int_eq(got.restartLag, 2);
  ck_assert_int_eq(got.restartOnLoss, 0);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

static const char* const badEnv[][2] = {
    {"SPARCCL_DENSITY", "abc"},        {"SPARCCL_DENSITY", "0"},
    {"SPARCCL_DENSITY", "1.5"},        {"SPARCCL_DENSITY", "-0.1"},
    {"SPARCCL_DENSITY", "0.1x"},       {"SPARCCL_DENSITY", "nan"},
    {"SPARCCL_COMPRESSOR", "top"},     {"SPARCCL_COMPRESSOR", "TOPKK"},
    {"SPARCCL_FEEDBACK", "efx"},       {"SPARCCL_FEEDBACK", "3"},
    {"SPARCCL_WIRE", "fp64"},          {"SPARCCL_WIRE", "float"},
    {"SPARCCL_MIN_SPARSE", "-1"},      {"SPARCCL_MIN_SPARSE", "12x"},
    {"SPARCCL_SEED", "-3"},            {"SPARCCL_SEED", "seed"},
    {"SPARCCL_SEED", "99999999999999999999999"},
    {"SPARCCL_SHARED_RANDOMNESS", "2"}, {"SPARCCL_SHARED_RANDOMNESS", "yes"},
    {"SPARCCL_IMPORTANCE", "both"},    {"SPARCCL_IMP_GAMMA", "x"},
    {"SPARCCL_IMP_GAMMA", "-1"},       {"SPARCCL_IMP_GAMMA", "inf"},
    {"SPARCCL_IMP_ETA", "0"},          {"SPARCCL_IMP_ETA", "1e"},
    {"SPARCCL_IMP_LOW", "3"},          {"SPARCCL_IMP_LOW", "low"},
    {"SPARCCL_IMP_HIGH", "-1"},        {"SPARCCL_IMP_HIGH", "2..0"},
    {"SPARCCL_RESTART_EVERY", "-1"},   {"SPARCCL_RESTART_EVERY", "1.5"},
    {"SPARCCL_RESTART_RATIO", "-0.5"}, {"SPARCCL_RESTART_RATIO", "nan"},
    {"SPARCCL_RESTART_LAG", "0"},      {"SPARCCL_RESTART_LAG", "two"},
    {"SPARCCL_RESTART_ON_LOSS", "2"},  {"SPARCCL_RESTART_ON_LOSS", "true"},
    {"SPARCCL_WARMUP_STEPS", "-1"},    {"SPARCCL_WARMUP_STEPS", "ten"},
    {"SPARCCL_MOMENTUM", "1"},         {"SPARCCL_MOMENTUM", "-0.1"},
    {"SPARCCL_MOMENTUM", "0.9x"},      {"SPARCCL_FEEDBACK", "DGC"},
};

START_TEST(test_env_malformed) {
  size_t i, j;
  clear_env();
  for (i = 0; i < sizeof(badEnv) / sizeof(badEnv[0]); i++) {
    sparcclConfig_t init = SPARCCL_CONFIG_INITIALIZER;
    sparcclComm_t comm = (sparcclComm_t)(uintptr_t)0x1234;
    sparcclResult_t r;
    setenv(badEnv[i][0], badEnv[i][1], 1);
    r = sparcclCommInitMpi(&comm, MPI_COMM_SELF, &init);
    unsetenv(badEnv[i][0]);
    ck_assert_msg(r == sparcclInvalidArgument, "%s=%s gave %d", badEnv[i][0], badEnv[i][1], r);
    ck_assert_msg(comm == (sparcclComm_t)(uintptr_t)0x1234, "%s=%s wrote the comm", badEnv[i][0],
                  badEnv[i][1]);
  }
  /* set to the empty string: refused, not read as unset */
  for (i = 0; i < NENV; i++) {
    sparcclConfig_t init = SPARCCL_CONFIG_INITIALIZER;
    sparcclComm_t comm = NULL;
    sparcclResult_t r;
    setenv(envNames[i], "", 1);
    r = sparcclCommInitMpi(&comm, MPI_COMM_SELF, &init);
    unsetenv(envNames[i]);
    ck_assert_msg(r == sparcclInvalidArgument, "%s= (empty) gave %d", envNames[i], r);
    if (r == sparcclSuccess) sparcclCommDestroy(comm);
  }
  for (i = 0; i < NENV; i++) {
    int seen = 0;
    for (j = 0; j < sizeof(badEnv) / sizeof(badEnv[0]); j++) seen |= !strcmp(badEnv[j][0], envNames[i]);
    ck_assert_msg(seen, "%s not covered", envNames[i]);
  }
  /* A clean environment works again afterwards. */
  {
    sparcclComm_t comm = NULL;
    ck_assert_int_eq(sparcclCommInitMpi(&comm, MPI_COMM_SELF, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  }
}
END_TEST

typedef void (*ConfigBreaker)(sparcclConfig_t* c);
static void bad_density0(sparcclConfig_t* c) { c->density = 0.0; }
static void bad_density_neg(sparcclConfig_t* c) { c->density = -0.25; }
static void bad_density_big(sparcclConfig_t* c) { c->density = 1.0000001; }
static void bad_density_nan(sparcclConfig_t* c) { c->density = NAN; }
static void bad_density_inf(sparcclConfig_t* c) { c->density = INFINITY; }
static void bad_compressor(sparcclConfig_t* c) { c->compressor = 5; }
static void bad_compressor_neg(sparcclConfig_t* c) { c->compressor = -1; }
static void bad_feedback(sparcclConfig_t* c) { c->feedback = 5; }
static void bad_momentum(sparcclConfig_t* c) { c->momentum = 1.0; }
static void bad_momentum_neg(sparcclConfig_t* c) { c->momentum = -0.1; }
static void bad_momentum_nan(sparcclConfig_t* c) { c->momentum = NAN; }
static void bad_warmup(sparcclConfig_t* c) { c->warmupSteps = (size_t)1 << 63; }
static void bad_wire(sparcclConfig_t* c) { c->wireType = 8; }
static void bad_wire0(sparcclConfig_t* c) { c->wireType = 0; }
static void bad_shared(sparcclConfig_t* c) { c->sharedRandomness = 2; }
static void bad_importance(sparcclConfig_t* c) { c->importance = 4; }
static void bad_gamma(sparcclConfig_t* c) { c->importanceGamma = 0.0; }
static void bad_gamma_nan(sparcclConfig_t* c) { c->importanceGamma = NAN; }
static void bad_eta(sparcclConfig_t* c) { c->importanceEta = -1.0; }
static void bad_bounds(sparcclConfig_t* c) { c->importanceLow = 2.0; c->importanceHigh = 1.0; }
static void bad_every(sparcclConfig_t* c) { c->restartEvery = -3; }
static void bad_ratio(sparcclConfig_t* c) { c->restartRatio = -1.0; }
static void bad_ratio_inf(sparcclConfig_t* c) { c->restartRatio = INFINITY; }
static void bad_lag(sparcclConfig_t* c) { c->restartLag = 0; }
static void bad_onloss(sparcclConfig_t* c) { c->restartOnLoss = 2; }
static void bad_size(sparcclConfig_t* c) { c->size = sizeof(*c) - 8; }
static void bad_magic(sparcclConfig_t* c) { c->magic = 0; }

START_TEST(test_config_invalid) {
  static const ConfigBreaker breakers[] = {
      bad_density0, bad_density_neg, bad_density_big, bad_density_nan, bad_density_inf,
      bad_compressor, bad_compressor_neg, bad_feedback, bad_wire, bad_wire0, bad_shared,
      bad_importance, bad_gamma, bad_gamma_nan, bad_eta, bad_bounds, bad_every, bad_ratio,
      bad_ratio_inf, bad_lag, bad_onloss, bad_size, bad_magic, bad_momentum, bad_momentum_neg,
      bad_momentum_nan, bad_warmup};
  size_t i;
  sparcclComm_t comm;
  sparcclConfig_t c;
  clear_env();
  for (i = 0; i < sizeof(breakers) / sizeof(breakers[0]); i++) {
    sparcclResult_t r;
    c = test_config(sparcclImpK, sparcclFeedbackSCAM, 0.1, 16);
    breakers[i](&c);
    comm = (sparcclComm_t)(uintptr_t)0x4321;
    r = sparcclCommInitMpi(&comm, MPI_COMM_SELF, &c);
    ck_assert_msg(r == sparcclInvalidArgument, "breaker %zu gave %d", i, r);
    ck_assert_msg(comm == (sparcclComm_t)(uintptr_t)0x4321, "breaker %zu wrote the comm", i);
  }
  /* The boundaries that are valid. */
  c = test_config(sparcclImpK, sparcclFeedbackSCAM, 1.0, 0);
  c.importanceLow = c.importanceHigh = 1.0;
  c.restartEvery = 0;
  c.restartRatio = 0.0;
  ck_assert_int_eq(sparcclCommInitMpi(&comm, MPI_COMM_SELF, &c), sparcclSuccess);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
  /* Null pointers. */
  c = test_config(sparcclImpK, sparcclFeedbackSCAM, 0.1, 16);
  ck_assert_int_eq(sparcclCommInitMpi(NULL, MPI_COMM_SELF, &c), sparcclInvalidArgument);
  comm = (sparcclComm_t)(uintptr_t)0x4321;
  ck_assert_int_eq(sparcclCommInitMpi(&comm, MPI_COMM_NULL, &c), sparcclInvalidArgument);
  ck_assert(comm == (sparcclComm_t)(uintptr_t)0x4321);
}
END_TEST

/* ================================================================ failures change nothing */

#define NK 64       /* elements of the main key (layout below) */
#define MARGIN 16   /* sentinel margin around the gradient buffer */
#define NAUX 48     /* a second key, created after the failure */

static const size_t layoutCounts[] = {40, 5, 19}; /* 5 is dense with minSparse 8 */

typedef struct {
  sparcclComm_t comm;
  float* grad;      /* the key buffer (inside region) */
  float* region;    /* MARGIN + NK + MARGIN */
  float* out;       /* NK, filled with the sentinel before the failing call */
  float* aux;       /* NAUX */
  unsigned long long tag;
} Ctx;

typedef struct {
  const char* name;
  sparcclResult_t expect;
  sparcclResult_t (*call)(Ctx* ctx);
} FailCase;

static sparcclConfig_t harness_config(int which) {
  sparcclConfig_t c;
  if (which == 0) {
    c = test_config(sparcclImpK, sparcclFeedbackSCAM, 0.1, 8);
    c.importance = sparcclImportanceOnline;
    c.restartRatio = 1.5;
    c.restartOnLoss = 1;
  } else if (which == 1) {
    c = test_config(sparcclImpKRandom, sparcclFeedbackEF21, 0.2, 8);
    c.seed = 12345;
    c.restartEvery = 3;
  } else {
    c = test_config(sparcclImpK, sparcclFeedbackEF, 0.15, 8);
    c.importance = sparcclImportanceCube;
    c.restartLag = 2;
    c.restartOnLoss = 1;
  }
  return c;
}

static void grad_for_step(float* g, size_t n, int step) { test_fill_normal(g, n, 1000u + (uint64_t)step); }

static void good_step(Ctx* c, int step, float* outTagged, float* outMain, float* outAux) {
  float tmp[NK];
  grad_for_step(c->grad, NK, step);
  ck_assert_int_eq(sparcclAllReduce(c->grad, outMain, NK, sparcclFloat32, sparcclSum, c->comm, NULL),
                   sparcclSuccess);
  grad_for_step(tmp, NK, step + 100);
  ck_assert_int_eq(sparcclAllReduceTagged(tmp, outTagged, NK, sparcclFloat32, sparcclAvg, c->tag,
                                          c->comm, NULL), sparcclSuccess);
  if (outAux != NULL) {
    grad_for_step(c->aux, NAUX, step + 200);
    ck_assert_int_eq(sparcclAllReduce(c->aux, outAux, NAUX, sparcclFloat32, sparcclSum, c->comm, NULL),
                     sparcclSuccess);
  }
  ck_assert_int_eq(sparcclReportLoss(c->comm, 10.0 - step + (step % 3 == 0 ? 4.0 : 0.0)), sparcclSuccess);
}

/* Importance weights of the main key, changed by a probe/update pair (cube or default). */
static void importance_step(Ctx* c, int step) {
  float x[NK], q[NK], p[NK];
  grad_for_step(x, NK, step + 300);
  grad_for_step(q, NK, step + 400);
  ck_assert_int_eq(sparcclImportanceProbe(x, c->grad, p, NK, sparcclFloat32, c->comm, NULL), sparcclSuccess);
  ck_assert_int_eq(sparcclImportanceUpdate(q, c->grad, NK, sparcclFloat32, c->comm, NULL), sparcclSuccess);
}

static void ctx_init(Ctx* c, int which, float* region, float* out, float* aux) {
  sparcclConfig_t config = harness_config(which);
  size_t i;
  c->comm = test_comm_self(&config);
  c->region = region;
  c->grad = region + MARGIN;
  c->out = out;
  c->aux = aux;
  c->tag = 0xfeedull;
  for (i = 0; i < MARGIN + NK + MARGIN; i++) region[i] = 0.0f;
  ck_assert_int_eq(sparcclRegisterLayout(c->comm, c->grad, 3, layoutCounts), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayoutTagged(c->comm, c->tag, 3, layoutCounts), sparcclSuccess);
}

static void compare_stats(sparcclComm_t a, sparcclComm_t b) {
  sparcclStats_t sa, sb;
  ck_assert_int_eq(sparcclCommGetStats(a, &sa), sparcclSuccess);
  ck_assert_int_eq(sparcclCommGetStats(b, &sb), sparcclSuccess);
  ck_assert(sa.calls == sb.calls);
  ck_assert(sa.layerSets == sb.layerSets);
  ck_assert(sa.layersSparse == sb.layersSparse);
  ck_assert(sa.layersDense == sb.layersDense);
  ck_assert(sa.bytesSent == sb.bytesSent);
  ck_assert(sa.bytesDense == sb.bytesDense);
  ck_assert(sa.skippedSteps == sb.skippedSteps);
  ck_assert(sa.restarts == sb.restarts);
  ck_assert(sa.stateBytes == sb.stateBytes);
}

/* Runs good steps on two comms, the failing call on the first only, and compares. */
static void run_fail_case(const FailCase* fc, int which) {
  static float regionA[MARGIN + NK + MARGIN], regionB[MARGIN + NK + MARGIN];
  static float outA[NK], auxA[NAUX], auxB[NAUX];
  float oA[NK], oB[NK], tA[NK], tB[NK], xA[NAUX], xB[NAUX];
  float regionCopy[MARGIN + NK + MARGIN];
  Ctx a, b;
  int step;
  sparcclResult_t r;
  ctx_init(&a, which, regionA, outA, auxA);
  ctx_init(&b, which, regionB, NULL, auxB);
  for (step = 0; step < 3; step++) {
    good_step(&a, step, tA, oA, NULL);
    good_step(&b, step, tB, oB, NULL);
    if (which == 2) { importance_step(&a, step); importance_step(&b, step); }
  }
  /* The failing call: margins and output hold sentinels, the gradient a known value. */
  fill_sentinel(a.region, MARGIN);
  fill_sentinel(a.region + MARGIN + NK, MARGIN);
  grad_for_step(a.grad, NK, 77);
  fill_sentinel(a.out, NK);
  memcpy(regionCopy, a.region, sizeof(regionCopy));
  r = fc->call(&a);
  ck_assert_msg(r == fc->expect, "%s (config %d): got %d (%s), want %d", fc->name, which, r,
                sparcclGetErrorString(r), fc->expect);
  ck_assert_msg(all_sentinel(a.out, NK), "%s (config %d) wrote the output", fc->name, which);
  ck_assert_msg(memcmp(regionCopy, a.region, sizeof(regionCopy)) == 0,
                "%s (config %d) wrote the input or around it", fc->name, which);
  /* Same good calls afterwards: outputs must agree to the bit, a new key included. */
  for (step = 3; step < 8; step++) {
    good_step(&a, step, tA, oA, xA);
    good_step(&b, step, tB, oB, xB);
    ck_assert_msg(test_first_difference(oA, oB, NK) < 0, "%s (config %d): main key diverged at step %d", fc->name, which, step);
    ck_assert_msg(test_first_difference(tA, tB, NK) < 0, "%s (config %d): tagged key diverged at step %d", fc->name, which, step);
    ck_assert_msg(test_first_difference(xA, xB, NAUX) < 0, "%s (config %d): new key diverged at step %d", fc->name, which, step);
    if (which == 2) { importance_step(&a, step); importance_step(&b, step); }
  }
  compare_stats(a.comm, b.comm);
  ck_assert_int_eq(sparcclCommDestroy(a.comm), sparcclSuccess);
  ck_assert_int_eq(sparcclCommDestroy(b.comm), sparcclSuccess);
}

/* A comm destroyed just now: nothing is allocated between its destruction and its use,
 * so its address cannot have been handed to a live comm again. */
static sparcclComm_t deadComm(void) {
  sparcclConfig_t c = harness_config(0);
  sparcclComm_t dead = test_comm_self(&c);
  ck_assert_int_eq(sparcclCommDestroy(dead), sparcclSuccess);
  return dead;
}
static sparcclComm_t bogusComm(void) {
  static char junk[256];
  return (sparcclComm_t)(void*)junk;
}

#define F32 sparcclFloat32
/* sparcclAllReduce */
static sparcclResult_t f_send_null(Ctx* c) { return sparcclAllReduce(NULL, c->out, NK, F32, sparcclSum, c->comm, NULL); }
static sparcclResult_t f_recv_null(Ctx* c) { return sparcclAllReduce(c->grad, NULL, NK, F32, sparcclSum, c->comm, NULL); }
static sparcclResult_t f_dtype(Ctx* c) { return sparcclAllReduce(c->grad, c->out, NK, (sparcclDataType_t)8, sparcclSum, c->comm, NULL); }
static sparcclResult_t f_dtype_int(Ctx* c) { return sparcclAllReduce(c->grad, c->out, NK, (sparcclDataType_t)2, sparcclSum, c->comm, NULL); }
static sparcclResult_t f_dtype_f64(Ctx* c) { return sparcclAllReduce(c->grad, c->out, NK, (sparcclDataType_t)8, sparcclSum, c->comm, NULL); }
static sparcclResult_t f_op_prod(Ctx* c) { return sparcclAllReduce(c->grad, c->out, NK, F32, (sparcclRedOp_t)1, c->comm, NULL); }
static sparcclResult_t f_op_max(Ctx* c) { return sparcclAllReduce(c->grad, c->out, NK, F32, (sparcclRedOp_t)2, c->comm, NULL); }
static sparcclResult_t f_op_big(Ctx* c) { return sparcclAllReduce(c->grad, c->out, NK, F32, (sparcclRedOp_t)5, c->comm, NULL); }
static sparcclResult_t f_stream(Ctx* c) { return sparcclAllReduce(c->grad, c->out, NK, F32, sparcclSum, c->comm, (void*)c); }
static sparcclResult_t f_overlap_fwd(Ctx* c) { return sparcclAllReduce(c->grad, c->grad + 7, NK, F32, sparcclSum, c->comm, NULL); }
static sparcclResult_t f_overlap_back(Ctx* c) { return sparcclAllReduce(c->grad, c->grad - 7, NK, F32, sparcclSum, c->comm, NULL); }
static sparcclResult_t f_overlap_one(Ctx* c) { return sparcclAllReduce(c->grad, c->grad + NK - 1, NK, F32, sparcclSum, c->comm, NULL); }
static sparcclResult_t f_overlap_half(Ctx* c) { return sparcclAllReduce(c->grad, (uint16_t*)c->grad + 1, NK, sparcclBfloat16, sparcclSum, c->comm, NULL); }
static sparcclResult_t f_dead(Ctx* c) { return sparcclAllReduce(c->grad, c->out, NK, F32, sparcclSum, deadComm(), NULL); }
static sparcclResult_t f_bogus(Ctx* c) { return sparcclAllReduce(c->grad, c->out, NK, F32, sparcclSum, bogusComm(), NULL); }
static sparcclResult_t f_huge(Ctx* c) { return sparcclAllReduce(c->grad, c->out, (size_t)UINT32_MAX + 1, F32, sparcclSum, c->comm, NULL); }
static sparcclResult_t f_count0(Ctx* c) { return sparcclAllReduce(c->grad, c->out, 0, F32, sparcclSum, c->comm, NULL); }
/* sparcclAllReduceTagged */
static sparcclResult_t f_t_send_null(Ctx* c) { return sparcclAllReduceTagged(NULL, c->out, NK, F32, sparcclSum, c->tag, c->comm, NULL); }
static sparcclResult_t f_t_recv_null(Ctx* c) { return sparcclAllReduceTagged(c->grad, NULL, NK, F32, sparcclSum, c->tag, c->comm, NULL); }
static sparcclResult_t f_t_dtype(Ctx* c) { return sparcclAllReduceTagged(c->grad, c->out, NK, (sparcclDataType_t)7 + 1, sparcclSum, c->tag, c->comm, NULL); }
static sparcclResult_t f_t_op(Ctx* c) { return sparcclAllReduceTagged(c->grad, c->out, NK, F32, (sparcclRedOp_t)3, c->tag, c->comm, NULL); }
static sparcclResult_t f_t_stream(Ctx* c) { return sparcclAllReduceTagged(c->grad, c->out, NK, F32, sparcclSum, c->tag, c->comm, (void*)c); }
static sparcclResult_t f_t_overlap(Ctx* c) { return sparcclAllReduceTagged(c->grad, c->grad + 3, NK, F32, sparcclSum, c->tag, c->comm, NULL); }
static sparcclResult_t f_t_count(Ctx* c) { return sparcclAllReduceTagged(c->grad, c->out, NK - 1, F32, sparcclSum, c->tag, c->comm, NULL); }
static sparcclResult_t f_t_dead(Ctx* c) { return sparcclAllReduceTagged(c->grad, c->out, NK, F32, sparcclSum, c->tag, deadComm(), NULL); }
static sparcclResult_t f_t_bogus(Ctx* c) { return sparcclAllReduceTagged(c->grad, c->out, NK, F32, sparcclSum, c->tag, bogusComm(), NULL); }
/* layouts */
static sparcclResult_t f_l_other(Ctx* c) { size_t n[2] = {32, 32}; return sparcclRegisterLayout(c->comm, c->grad, 2, n); }
static sparcclResult_t f_l_other_same_total(Ctx* c) { size_t n[3] = {40, 19, 5}; return sparcclRegisterLayout(c->comm, c->grad, 3, n); }
static sparcclResult_t f_lt_other(Ctx* c) { size_t n[1] = {NK}; return sparcclRegisterLayoutTagged(c->comm, c->tag, 1, n); }
static sparcclResult_t f_lt_other_total(Ctx* c) { size_t n[1] = {10}; return sparcclRegisterLayoutTagged(c->comm, c->tag, 1, n); }
static sparcclResult_t f_l_null_buff(Ctx* c) { return sparcclRegisterLayout(c->comm, NULL, 3, layoutCounts); }
static sparcclResult_t f_l_null_counts(Ctx* c) { return sparcclRegisterLayout(c->comm, c->aux, 3, NULL); }
static sparcclResult_t f_l_zero_layers(Ctx* c) { return sparcclRegisterLayout(c->comm, c->aux, 0, layoutCounts); }
static sparcclResult_t f_l_zero_layer(Ctx* c) { size_t n[3] = {20, 0, 28}; return sparcclRegisterLayout(c->comm, c->aux, 3, n); }
static sparcclResult_t f_l_huge_layer(Ctx* c) { size_t n[2] = {8, (size_t)UINT32_MAX + 1}; return sparcclRegisterLayout(c->comm, c->aux, 2, n); }
static sparcclResult_t f_lt_zero_layer(Ctx* c) { size_t n[2] = {0, 48}; return sparcclRegisterLayoutTagged(c->comm, 77, 2, n); }
static sparcclResult_t f_lt_null_counts(Ctx* c) { return sparcclRegisterLayoutTagged(c->comm, 77, 2, NULL); }
static sparcclResult_t f_l_dead(Ctx* c) { return sparcclRegisterLayout(deadComm(), c->aux, 3, layoutCounts); }
static sparcclResult_t f_l_bogus(Ctx* c) { return sparcclRegisterLayoutTagged(bogusComm(), 5, 3, layoutCounts); }
/* release */
static sparcclResult_t f_rel_unknown(Ctx* c) { return sparcclRelease(c->comm, c->aux, NAUX); }
static sparcclResult_t f_rel_count(Ctx* c) { return sparcclRelease(c->comm, c->grad, NK + 1); }
static sparcclResult_t f_relt_unknown(Ctx* c) { return sparcclReleaseTagged(c->comm, c->tag + 1); }
static sparcclResult_t f_rel_dead(Ctx* c) { return sparcclRelease(deadComm(), c->grad, NK); }
static sparcclResult_t f_relt_bogus(Ctx* c) { return sparcclReleaseTagged(bogusComm(), c->tag); }
/* importance */
static sparcclResult_t f_p_params_null(Ctx* c) { return sparcclImportanceProbe(NULL, c->grad, c->out, NK, F32, c->comm, NULL); }
static sparcclResult_t f_p_grad_null(Ctx* c) { return sparcclImportanceProbe(c->grad, NULL, c->out, NK, F32, c->comm, NULL); }
static sparcclResult_t f_p_out_null(Ctx* c) { return sparcclImportanceProbe(c->grad, c->grad, NULL, NK, F32, c->comm, NULL); }
static sparcclResult_t f_p_dtype(Ctx* c) { return sparcclImportanceProbe(c->region, c->grad, c->out, NK, (sparcclDataType_t)8, c->comm, NULL); }
static sparcclResult_t f_p_stream(Ctx* c) { return sparcclImportanceProbe(c->region, c->grad, c->out, NK, F32, c->comm, (void*)c); }
static sparcclResult_t f_p_count0(Ctx* c) { return sparcclImportanceProbe(c->region, c->grad, c->out, 0, F32, c->comm, NULL); }
static sparcclResult_t f_p_dead(Ctx* c) { return sparcclImportanceProbe(c->region, c->grad, c->out, NK, F32, deadComm(), NULL); }
static sparcclResult_t f_pt_bogus(Ctx* c) { return sparcclImportanceProbeTagged(c->region, c->grad, c->out, NK, F32, c->tag, bogusComm(), NULL); }
static sparcclResult_t f_pt_stream(Ctx* c) { return sparcclImportanceProbeTagged(c->region, c->grad, c->out, NK, F32, c->tag, c->comm, (void*)c); }
static sparcclResult_t f_pt_count(Ctx* c) { return sparcclImportanceProbeTagged(c->region, c->grad, c->out, NK + 1, F32, c->tag, c->comm, NULL); }
static sparcclResult_t f_u_q_null(Ctx* c) { return sparcclImportanceUpdate(NULL, c->grad, NK, F32, c->comm, NULL); }
static sparcclResult_t f_u_g_null(Ctx* c) { return sparcclImportanceUpdate(c->region, NULL, NK, F32, c->comm, NULL); }
static sparcclResult_t f_u_dtype(Ctx* c) { return sparcclImportanceUpdate(c->region, c->grad, NK, (sparcclDataType_t)3, c->comm, NULL); }
static sparcclResult_t f_u_stream(Ctx* c) { return sparcclImportanceUpdate(c->region, c->grad, NK, F32, c->comm, (void*)c); }
static sparcclResult_t f_u_count0(Ctx* c) { return sparcclImportanceUpdate(c->region, c->grad, 0, F32, c->comm, NULL); }
static sparcclResult_t f_ut_q_null(Ctx* c) { return sparcclImportanceUpdateTagged(NULL, c->grad, NK, F32, c->tag, c->comm, NULL); }
static sparcclResult_t f_ut_count(Ctx* c) { return sparcclImportanceUpdateTagged(c->region, c->grad, NK + 3, F32, c->tag, c->comm, NULL); }
static sparcclResult_t f_ut_dead(Ctx* c) { return sparcclImportanceUpdateTagged(c->region, c->grad, NK, F32, c->tag, deadComm(), NULL); }
static sparcclResult_t f_r_unknown(Ctx* c) { return sparcclImportanceReset(c->comm, c->aux, NAUX); }
static sparcclResult_t f_rt_unknown(Ctx* c) { return sparcclImportanceResetTagged(c->comm, c->tag + 9); }
static sparcclResult_t f_r_dead(Ctx* c) { return sparcclImportanceReset(deadComm(), c->grad, NK); }
static sparcclResult_t f_rt_bogus(Ctx* c) { return sparcclImportanceResetTagged(bogusComm(), c->tag); }
/* whole-comm calls */
static sparcclResult_t f_scale_nan(Ctx* c) { return sparcclScaleState(c->comm, NAN); }
static sparcclResult_t f_scale_inf(Ctx* c) { return sparcclScaleState(c->comm, -INFINITY); }
static sparcclResult_t f_scale_dead(Ctx* c) { return sparcclScaleState(deadComm(), 2.0f); }
static sparcclResult_t f_restart_dead(Ctx* c) { return sparcclRestart(deadComm()); }
static sparcclResult_t f_restart_bogus(Ctx* c) { return sparcclRestart(bogusComm()); }
static sparcclResult_t f_loss_dead(Ctx* c) { return sparcclReportLoss(deadComm(), 100.0); }
static sparcclResult_t f_loss_bogus(Ctx* c) { return sparcclReportLoss(bogusComm(), 100.0); }
static sparcclResult_t f_stats_null(Ctx* c) { return sparcclCommGetStats(c->comm, NULL); }
static sparcclResult_t f_stats_dead(Ctx* c) { sparcclStats_t s; return sparcclCommGetStats(deadComm(), &s); }
static sparcclResult_t f_config_null(Ctx* c) { return sparcclCommGetConfig(c->comm, NULL); }
static sparcclResult_t f_save_null(Ctx* c) { return sparcclSaveState(c->comm, NULL); }
static sparcclResult_t f_save_dead(Ctx* c) { return sparcclSaveState(deadComm(), "/tmp/sparccl_never_written"); }
static sparcclResult_t f_save_bogus(Ctx* c) { return sparcclSaveState(bogusComm(), "/tmp/sparccl_never_written"); }
static sparcclResult_t f_save_unwritable(Ctx* c) { return sparcclSaveState(c->comm, "/nonexistent-dir-sparccl/x/state.bin"); }
static sparcclResult_t f_load_null(Ctx* c) { return sparcclLoadState(c->comm, NULL); }
static sparcclResult_t f_load_missing(Ctx* c) { return sparcclLoadState(c->comm, "/nonexistent-dir-sparccl/none.bin"); }
static sparcclResult_t f_load_dead(Ctx* c) { return sparcclLoadState(deadComm(), "/nonexistent-dir-sparccl/none.bin"); }
static sparcclResult_t f_destroy_dead(Ctx* c) { return sparcclCommDestroy(deadComm()); }
static sparcclResult_t f_destroy_bogus(Ctx* c) { return sparcclCommDestroy(bogusComm()); }
static sparcclResult_t f_count_dead(Ctx* c) { int n; return sparcclCommCount(deadComm(), &n); }
static sparcclResult_t f_rank_bogus(Ctx* c) { int n; return sparcclCommUserRank(bogusComm(), &n); }
#undef F32

#define IA sparcclInvalidArgument
#define IU sparcclInvalidUsage
static const FailCase failCases[] = {
    {"allreduce send NULL", IA, f_send_null},
    {"allreduce recv NULL", IA, f_recv_null},
    {"allreduce dtype 8", IA, f_dtype},
    {"allreduce dtype int32", IA, f_dtype_int},
    {"allreduce dtype float64", IA, f_dtype_f64},
    {"allreduce op prod", IA, f_op_prod},
    {"allreduce op max", IA, f_op_max},
    {"allreduce op 5", IA, f_op_big},
    {"allreduce stream on host comm", IU, f_stream},
    {"allreduce overlap forward", IA, f_overlap_fwd},
    {"allreduce overlap backward", IA, f_overlap_back},
    {"allreduce overlap one element", IA, f_overlap_one},
    {"allreduce overlap half element", IA, f_overlap_half},
    {"allreduce destroyed comm", IU, f_dead},
    {"allreduce bogus comm", IU, f_bogus},
    {"allreduce layer over 2^32-1", IA, f_huge},
    {"allreduce count 0 (success, no effect)", sparcclSuccess, f_count0},
    {"tagged send NULL", IA, f_t_send_null},
    {"tagged recv NULL", IA, f_t_recv_null},
    {"tagged dtype", IA, f_t_dtype},
    {"tagged op", IA, f_t_op},
    {"tagged stream", IU, f_t_stream},
    {"tagged overlap", IA, f_t_overlap},
    {"tagged count not the layout's sum", IA, f_t_count},
    {"tagged destroyed comm", IU, f_t_dead},
    {"tagged bogus comm", IU, f_t_bogus},
    {"layout re-register another", IU, f_l_other},
    {"layout re-register another, same total", IU, f_l_other_same_total},
    {"tagged layout re-register another", IU, f_lt_other},
    {"tagged layout re-register another total", IU, f_lt_other_total},
    {"layout NULL buffer", IA, f_l_null_buff},
    {"layout NULL counts", IA, f_l_null_counts},
    {"layout 0 layers", IA, f_l_zero_layers},
    {"layout zero-sized layer", IA, f_l_zero_layer},
    {"layout layer over 2^32-1", IA, f_l_huge_layer},
    {"tagged layout zero-sized layer", IA, f_lt_zero_layer},
    {"tagged layout NULL counts", IA, f_lt_null_counts},
    {"layout destroyed comm", IU, f_l_dead},
    {"layout bogus comm", IU, f_l_bogus},
    {"release unknown key", IU, f_rel_unknown},
    {"release wrong count", IU, f_rel_count},
    {"release unknown tag", IU, f_relt_unknown},
    {"release destroyed comm", IU, f_rel_dead},
    {"release bogus comm", IU, f_relt_bogus},
    {"probe params NULL", IA, f_p_params_null},
    {"probe grad NULL", IA, f_p_grad_null},
    {"probe output NULL", IA, f_p_out_null},
    {"probe dtype", IA, f_p_dtype},
    {"probe stream", IU, f_p_stream},
    {"probe count 0", IA, f_p_count0},
    {"probe destroyed comm", IU, f_p_dead},
    {"probe tagged bogus comm", IU, f_pt_bogus},
    {"probe tagged stream", IU, f_pt_stream},
    {"probe tagged count not the layout's sum", IA, f_pt_count},
    {"update q NULL", IA, f_u_q_null},
    {"update grad NULL", IA, f_u_g_null},
    {"update dtype", IA, f_u_dtype},
    {"update stream", IU, f_u_stream},
    {"update count 0", IA, f_u_count0},
    {"update tagged q NULL", IA, f_ut_q_null},
    {"update tagged count not the layout's sum", IA, f_ut_count},
    {"update tagged destroyed comm", IU, f_ut_dead},
    {"importance reset unknown key", IU, f_r_unknown},
    {"importance reset unknown tag", IU, f_rt_unknown},
    {"importance reset destroyed comm", IU, f_r_dead},
    {"importance reset bogus comm", IU, f_rt_bogus},
    {"scale NaN", IA, f_scale_nan},
    {"scale -Inf", IA, f_scale_inf},
    {"scale destroyed comm", IU, f_scale_dead},
    {"restart destroyed comm", IU, f_restart_dead},
    {"restart bogus comm", IU, f_restart_bogus},
    {"report loss destroyed comm", IU, f_loss_dead},
    {"report loss bogus comm", IU, f_loss_bogus},
    {"stats NULL", IA, f_stats_null},
    {"stats destroyed comm", IU, f_stats_dead},
    {"config NULL", IA, f_config_null},
    {"save NULL path", IA, f_save_null},
    {"save destroyed comm", IU, f_save_dead},
    {"save bogus comm", IU, f_save_bogus},
    {"save unwritable path", sparcclSystemError, f_save_unwritable},
    {"load NULL path", IA, f_load_null},
    {"load missing file", sparcclSystemError, f_load_missing},
    {"load destroyed comm", IU, f_load_dead},
    {"destroy destroyed comm", IU, f_destroy_dead},
    {"destroy bogus comm", IU, f_destroy_bogus},
    {"count destroyed comm", IU, f_count_dead},
    {"rank bogus comm", IU, f_rank_bogus},
};
#undef IA
#undef IU
#define NFAIL (sizeof(failCases) / sizeof(failCases[0]))

START_TEST(test_failures_change_nothing) {
  /* _i: one loop iteration per failure case; each runs under three configs. */
  int which;
  clear_env();
  for (which = 0; which < 3; which++) run_fail_case(&failCases[_i], which);
}
END_TEST

/* The harness itself can fail: a successful state-changing call in the failure slot is
 * caught by the twin comparison (so the checks above are not vacuous). */
static sparcclResult_t f_control_restart(Ctx* c) { return sparcclRestart(c->comm); }
static sparcclResult_t f_control_scale(Ctx* c) { return sparcclScaleState(c->comm, 0.5f); }
static sparcclResult_t f_control_step(Ctx* c) {
  return sparcclAllReduce(c->grad, c->grad, NK, sparcclFloat32, sparcclSum, c->comm, NULL);
}
static sparcclResult_t f_control_register(Ctx* c) {
  size_t n[1] = {NAUX - 8};
  return sparcclRegisterLayout(c->comm, c->aux + 8, 1, n);
}

static int twins_diverge(sparcclResult_t (*call)(Ctx*), int which) {
  static float regionA[MARGIN + NK + MARGIN], regionB[MARGIN + NK + MARGIN];
  static float outA[NK], auxA[NAUX], auxB[NAUX];
  float oA[NK], oB[NK], tA[NK], tB[NK], xA[NAUX], xB[NAUX];
  Ctx a, b;
  int step, diverged = 0;
  ctx_init(&a, which, regionA, outA, auxA);
  ctx_init(&b, which, regionB, NULL, auxB);
  for (step = 0; step < 3; step++) {
    good_step(&a, step, tA, oA, NULL);
    good_step(&b, step, tB, oB, NULL);
  }
  grad_for_step(a.grad, NK, 77);
  ck_assert_int_eq(call(&a), sparcclSuccess);
  for (step = 3; step < 8; step++) {
    good_step(&a, step, tA, oA, xA);
    good_step(&b, step, tB, oB, xB);
    diverged |= test_first_difference(oA, oB, NK) >= 0 || test_first_difference(tA, tB, NK) >= 0 ||
                test_first_difference(xA, xB, NAUX) >= 0;
  }
  sparcclCommDestroy(a.comm);
  sparcclCommDestroy(b.comm);
  return diverged;
}

START_TEST(test_harness_detects_changes) {
  ck_assert(twins_diverge(f_control_restart, 0));
  ck_assert(twins_diverge(f_control_scale, 0));
  ck_assert(twins_diverge(f_control_step, 0));
  ck_assert(twins_diverge(f_control_step, 1));
  /* a stray layer set shifts the layer ids: seen by impk_random's Philox counters */
  ck_assert(twins_diverge(f_control_register, 1));
}
END_TEST

/* Importance update on a comm without importance weights; destroyed-comm double destroy. */
START_TEST(test_update_on_topk_comm) {
  sparcclConfig_t config = test_config(sparcclTopK, sparcclFeedbackEF, 0.25, 1);
  sparcclComm_t a = test_comm_self(&config), b = test_comm_self(&config);
  float g[16], q[16], oa[16], ob[16];
  int step;
  for (step = 0; step < 4; step++) {
    test_fill_normal(g, 16, 50u + (uint64_t)step);
    ck_assert_int_eq(sparcclAllReduce(g, oa, 16, sparcclFloat32, sparcclSum, a, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(g, ob, 16, sparcclFloat32, sparcclSum, b, NULL), sparcclSuccess);
    ck_assert_bitwise_eq(oa, ob, 16);
    test_fill_normal(q, 16, 90u + (uint64_t)step);
    ck_assert_int_eq(sparcclImportanceUpdate(q, g, 16, sparcclFloat32, a, NULL), sparcclInvalidUsage);
    ck_assert_int_eq(sparcclImportanceUpdateTagged(q, g, 16, sparcclFloat32, 3, a, NULL), sparcclInvalidUsage);
  }
  ck_assert_int_eq(sparcclCommDestroy(a), sparcclSuccess);
  ck_assert_int_eq(sparcclCommDestroy(a), sparcclInvalidUsage);
  ck_assert_int_eq(sparcclCommDestroy(b), sparcclSuccess);
  ck_assert_int_eq(sparcclCommDestroy(NULL) == sparcclSuccess, 0);
}
END_TEST

/* A NULL comm is a null pointer or an unknown comm: either code, never success. */
START_TEST(test_null_comm) {
  float g[4] = {1, 2, 3, 4}, o[4];
  sparcclResult_t r;
  fill_sentinel(o, 4);
  r = sparcclAllReduce(g, o, 4, sparcclFloat32, sparcclSum, NULL, NULL);
  ck_assert(r == sparcclInvalidArgument || r == sparcclInvalidUsage);
  ck_assert(all_sentinel(o, 4));
  r = sparcclRestart(NULL);
  ck_assert(r == sparcclInvalidArgument || r == sparcclInvalidUsage);
  r = sparcclSaveState(NULL, "/tmp/x");
  ck_assert(r == sparcclInvalidArgument || r == sparcclInvalidUsage);
}
END_TEST

/* Failed calls explain themselves through the logger, never on stdout (SPEC 2). */
START_TEST(test_failures_silent_on_stdout) {
  char path[] = "/tmp/sparccl_stdout_XXXXXX";
  int fd = mkstemp(path), saved;
  float g[8] = {0}, o[8];
  sparcclConfig_t c = test_config(sparcclTopK, sparcclFeedbackEF, 0.5, 1);
  sparcclComm_t comm;
  sparcclComm_t tmp = NULL;
  off_t size;
  ck_assert_int_ge(fd, 0);
  comm = test_comm_self(&c);
  fflush(stdout);
  saved = dup(1);
  ck_assert_int_ge(saved, 0);
  ck_assert_int_ge(dup2(fd, 1), 0);
  sparcclAllReduce(NULL, o, 8, sparcclFloat32, sparcclSum, comm, NULL);
  sparcclAllReduce(g, o, 8, (sparcclDataType_t)1, sparcclSum, comm, NULL);
  sparcclAllReduce(g, o, 8, sparcclFloat32, sparcclSum, deadComm(), NULL);
  sparcclLoadState(comm, "/nonexistent-dir-sparccl/none.bin");
  setenv("SPARCCL_DENSITY", "bogus", 1);
  sparcclCommInitMpi(&tmp, MPI_COMM_SELF, NULL);
  unsetenv("SPARCCL_DENSITY");
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  size = lseek(fd, 0, SEEK_END);
  close(fd);
  unlink(path);
  ck_assert_msg(size == 0, "failed calls wrote %ld bytes to stdout", (long)size);
  ck_assert_int_eq(sparcclCommDestroy(comm), sparcclSuccess);
}
END_TEST

Suite* make_api_suite(void) {
  Suite* s = suite_create("api");
  TCase* tc = tcase_create("strings and config");
  TCase* tf = tcase_create("failures");
  tcase_set_timeout(tc, 30);
  tcase_set_timeout(tf, 60);
  tcase_add_test(tc, test_error_strings);
  tcase_add_test(tc, test_version_count_rank);
  tcase_add_test(tc, test_defaults);
  tcase_add_test(tc, test_env_picked_up);
  tcase_add_test(tc, test_env_all_at_once_and_caller_wins);
  tcase_add_test(tc, test_env_malformed);
  tcase_add_test(tc, test_config_invalid);
  tcase_add_loop_test(tf, test_failures_change_nothing, 0, (int)NFAIL);
  tcase_add_test(tf, test_harness_detects_changes);
  tcase_add_test(tf, test_update_on_topk_comm);
  tcase_add_test(tf, test_null_comm);
  tcase_add_test(tf, test_failures_silent_on_stdout);
  suite_add_tcase(s, tc);
  suite_add_tcase(s, tf);
  return s;
}
