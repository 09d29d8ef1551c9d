/* The config struct: user fields, then SPARCCL_* environment, then defaults (SPEC 6, 8).
 * Every field is one row of the parameter table below (NCCL's NCCL_PARAM habit): the
 * resolve function walks it, and README.md's configuration table is checked against it
 * (tests/test_config.c). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "exchanges.h"

/* Defaults (README.md "Configuration" explains each).  gamma is the probe's step, i.e.
 * the trainer's learning rate: 0.01 is a typical SGD rate.  eta makes the solver's few
 * steps large (thesis 4.1): with c = eta * gamma = 10, a coordinate whose gradient is 0.03
 * moves its weight by about 0.01 per step. */
#define DEFAULT_IMP_GAMMA 0.01
#define DEFAULT_IMP_ETA 1000.0

/* The names the config accepts, from the method tables (methods.h). */
#define METHOD_NAME(code, value, name, props) name,
static const char* const compressorNames[] = {SPARCCL_COMPRESSOR_TABLE(METHOD_NAME)};
static const char* const feedbackNames[] = {SPARCCL_FEEDBACK_TABLE(METHOD_NAME)};
#undef METHOD_NAME
#define EXCHANGE_NAME(code, value, name, props) name,
static const char* const exchangeNames[] = {SPARCCL_EXCHANGE_TABLE(EXCHANGE_NAME)};
#undef EXCHANGE_NAME
static const char* const importanceNames[] = {"none", "cube", "simplex", "online"};
static const char* const wireNames[] = {"fp32", "bf16", "fp16"};
static const char* const kernelNames[] = {"optimised", "plain"};
static const int wireCodes[] = {sparcclFloat32, sparcclBfloat16, sparcclFloat16};

/* The public enums are the tables' codes. */
typedef char compressorCodesMatch[((int)sparcclImpKRandom == (int)SPARCCL_IMPK_RANDOM &&
                                   SPARCCL_NUM_COMPRESSORS == 5) ? 1 : -1];
typedef char feedbackCodesMatch[((int)sparcclFeedbackDGC == (int)SPARCCL_FB_DGC &&
                                 (int)sparcclFeedbackSCAM == (int)SPARCCL_FB_SCAM &&
                                 SPARCCL_NUM_FEEDBACKS == 5) ? 1 : -1];
typedef char exchangeCodesMatch[((int)sparcclExchangeHierarchical == (int)SPARCCL_EXCHANGE_HIERARCHICAL &&
                                 (int)sparcclExchangeSplit == (int)SPARCCL_EXCHANGE_SPLIT &&
                                 SPARCCL_NUM_EXCHANGES == 3) ? 1 : -1];

#define NAMES(table) table, (int)(sizeof(table) / sizeof(table[0]))
#define FIELD(f) #f, offsetof(sparcclConfig_t, f)
#define ONLY 0, 0, 0
#define R 4611686018427387904.0 /* 2^62 */

/*  kind        field                  env                          default            low  high  openLow openHigh  names */
static const sparcclParam_t params[] = {
  {PARAM_REAL,  FIELD(density),        "SPARCCL_DENSITY",           0.01,              0,   1,    1, 0, NULL, 0, NULL},
  {PARAM_ENUM,  FIELD(compressor),     "SPARCCL_COMPRESSOR",        sparcclImpK,       ONLY, 0,   NAMES(compressorNames), NULL},
  {PARAM_ENUM,  FIELD(feedback),       "SPARCCL_FEEDBACK",          sparcclFeedbackSCAM, ONLY, 0, NAMES(feedbackNames), NULL},
  {PARAM_ENUM,  FIELD(wireType),       "SPARCCL_WIRE",              0 /* fp32 */,      ONLY, 0,   NAMES(wireNames), wireCodes},
  {PARAM_SIZE,  FIELD(minSparseCount), "SPARCCL_MIN_SPARSE",        4096,              0,   R,    0, 0, NULL, 0, NULL},
  {PARAM_SEED,  FIELD(seed),           "SPARCCL_SEED",              0,                 ONLY, 0,   NULL, 0, NULL},
  {PARAM_INT,   FIELD(sharedRandomness), "SPARCCL_SHARED_RANDOMNESS", 0,               0,   1,    0, 0, NULL, 0, NULL},
  {PARAM_ENUM,  FIELD(importance),     "SPARCCL_IMPORTANCE",        sparcclImportanceNone, ONLY, 0, NAMES(importanceNames), NULL},
  {PARAM_REAL,  FIELD(importanceGamma), "SPARCCL_IMP_GAMMA",        DEFAULT_IMP_GAMMA, 0,   HUGE_VAL, 1, 1, NULL, 0, NULL},
  {PARAM_REAL,  FIELD(importanceEta),  "SPARCCL_IMP_ETA",           DEFAULT_IMP_ETA,   0,   HUGE_VAL, 1, 1, NULL, 0, NULL},
  {PARAM_REAL,  FIELD(importanceLow),  "SPARCCL_IMP_LOW",           0.0,               -HUGE_VAL, HUGE_VAL, 1, 1, NULL, 0, NULL},
  {PARAM_REAL,  FIELD(importanceHigh), "SPARCCL_IMP_HIGH",          2.0,               -HUGE_VAL, HUGE_VAL, 1, 1, NULL, 0, NULL},
  {PARAM_LONG,  FIELD(restartEvery),   "SPARCCL_RESTART_EVERY",     0,                 0,   R,    0, 0, NULL, 0, NULL},
  {PARAM_REAL,  FIELD(restartRatio),   "SPARCCL_RESTART_RATIO",     0.0,               0,   HUGE_VAL, 0, 1, NULL, 0, NULL},
  {PARAM_INT,   FIELD(restartLag),     "SPARCCL_RESTART_LAG",       1,                 1,   1 << 20, 0, 0, NULL, 0, NULL},
  {PARAM_INT,   FIELD(restartOnLoss),  "SPARCCL_RESTART_ON_LOSS",   0,                 0,   1,    0, 0, NULL, 0, NULL},
  {PARAM_SIZE,  FIELD(warmupSteps),    "SPARCCL_WARMUP_STEPS",      0,                 0,   R,    0, 0, NULL, 0, NULL},
  {PARAM_REAL,  FIELD(momentum),       "SPARCCL_MOMENTUM",          0.9,               0,   1,    0, 1, NULL, 0, NULL},
  {PARAM_ENUM,  FIELD(deviceKernels),  "SPARCCL_DEVICE_KERNELS",    sparcclDeviceKernelsOptimised, ONLY, 0, NAMES(kernelNames), NULL},
  {PARAM_INT,   FIELD(checkSizes),     "SPARCCL_CHECK_SIZES",       0,                 0,   1,    0, 0, NULL, 0, NULL},
  {PARAM_INT,   FIELD(errorBuffers),   "SPARCCL_ERROR_BUFFERS",     2,                 1,   2,    0, 0, NULL, 0, NULL},
  {PARAM_SIZE,  FIELD(pipelineBytes),  "SPARCCL_PIPELINE_BYTES",    0,                 0,   R,    0, 0, NULL, 0, NULL},
  {PARAM_ENUM,  FIELD(exchange),       "SPARCCL_EXCHANGE",          sparcclExchangeAllgather, ONLY, 0, NAMES(exchangeNames), NULL},
  {PARAM_INT,   FIELD(ranksPerNode),   "SPARCCL_RANKS_PER_NODE",    0,                 0,   1 << 20, 0, 0, NULL, 0, NULL},
  {PARAM_REAL,  FIELD(splitSlack),     "SPARCCL_SPLIT_SLACK",       2.0,               1,   HUGE_VAL, 0, 1, NULL, 0, NULL},
};
#undef R
#undef ONLY
#undef FIELD
#undef NAMES

const sparcclParam_t* sparcclParams(size_t* count) {
  *count = sizeof(params) / sizeof(params[0]);
  return params;
}

const char* sparcclCompressorName(int c) {
  return c >= 0 && c < SPARCCL_NUM_COMPRESSORS ? compressorNames[c] : "unknown";
}
const char* sparcclFeedbackName(int f) {
  return f >= 0 && f < SPARCCL_NUM_FEEDBACKS ? feedbackNames[f] : "unknown";
}

/* ------------------------------------------------------------ reading one field */

static int isUndefined(const sparcclParam_t* p, const void* at) {
  switch (p->kind) {
    case PARAM_REAL: return *(const double*)at == SPARCCL_CONFIG_UNDEF_DOUBLE;
    case PARAM_ENUM:
    case PARAM_INT: return *(const int*)at == SPARCCL_CONFIG_UNDEF_INT;
    case PARAM_LONG: return *(const long long*)at == SPARCCL_CONFIG_UNDEF_LONG;
    case PARAM_SIZE: return *(const size_t*)at == SPARCCL_CONFIG_UNDEF_SIZE;
    default: return *(const unsigned long long*)at == SPARCCL_CONFIG_UNDEF_SEED;
  }
}

/* An integer field's value (sizes above 2^63 show as negative, which every range refuses). */
static long long integerOf(const sparcclParam_t* p, const void* at) {
  switch (p->kind) {
    case PARAM_ENUM:
    case PARAM_INT: return *(const int*)at;
    case PARAM_LONG: return *(const long long*)at;
    case PARAM_SIZE: return (long long)*(const size_t*)at;
    default: return (long long)*(const unsigned long long*)at;
  }
}

static int inRange(const sparcclParam_t* p, const void* at) {
  if (p->kind == PARAM_REAL) {
    double v = *(const double*)at;
    return isfinite(v) && (p->openLow ? v > p->low : v >= p->low) &&
           (p->openHigh ? v < p->high : v <= p->high);
  }
  /* Integer bounds are whole numbers up to 2^62: exact as doubles and as long long. */
  return integerOf(p, at) >= (long long)p->low && integerOf(p, at) <= (long long)p->high;
}

static void store(const sparcclParam_t* p, void* at, double real, long long integer,
                  unsigned long long seed) {
  switch (p->kind) {
    case PARAM_REAL: *(double*)at = real; break;
    case PARAM_ENUM:
    case PARAM_INT: *(int*)at = (int)integer; break;
    case PARAM_LONG: *(long long*)at = integer; break;
    case PARAM_SIZE: *(size_t*)at = (size_t)integer; break;
    default: *(unsigned long long*)at = seed; break;
  }
}

static int enumCode(const sparcclParam_t* p, int i) { return p->codes ? p->codes[i] : i; }

/* Parse one environment value into the field; logged and refused, naming the variable. */
static sparcclResult_t parseEnv(const sparcclParam_t* p, const char* v, void* at) {
  char* end;
  int i;
  errno = 0;
  switch (p->kind) {
    case PARAM_REAL: {
      double real = strtod(v, &end);
      if (errno != 0 || *end != '\0' || end == v || !isfinite(real)) break;
      store(p, at, real, 0, 0);
      return sparcclSuccess;
    }
    case PARAM_ENUM:
      for (i = 0; i < p->nnames; i++)
        if (strcmp(v, p->names[i]) == 0) {
          store(p, at, 0, enumCode(p, i), 0);
          return sparcclSuccess;
        }
      WARN("%s=\"%s\" is not one of the accepted names (e.g. %s); unset it for the default",
           p->env, v, p->names[0]);
      return sparcclInvalidArgument;
    case PARAM_SEED: {
      unsigned long long seed = strtoull(v, &end, 0);
      if (errno != 0 || *end != '\0' || end == v || v[0] == '-' || seed == SPARCCL_CONFIG_UNDEF_SEED) {
        WARN("%s=%s is not an unsigned 64-bit integer below 2^64-1", p->env, v);
        return sparcclInvalidArgument;
      }
      store(p, at, 0, 0, seed);
      return sparcclSuccess;
    }
    default: {
      long long integer = strtoll(v, &end, 0);
      if (errno != 0 || *end != '\0' || end == v || integer < (long long)p->low ||
          integer > (long long)p->high) {
        WARN("%s=%s is not an integer in [%.0f, %.0f]", p->env, v, p->low, p->high);
        return sparcclInvalidArgument;
      }
      store(p, at, 0, integer, 0);
      return sparcclSuccess;
    }
  }
  WARN("%s=%s is not a number", p->env, v);
  return sparcclInvalidArgument;
}

static sparcclResult_t checkRange(const sparcclParam_t* p, const void* at, const char* from) {
  if (p->kind == PARAM_SEED) return sparcclSuccess;
  if (p->kind == PARAM_ENUM) {
    int i, v = *(const int*)at;
    for (i = 0; i < p->nnames; i++)
      if (enumCode(p, i) == v) return sparcclSuccess;
    WARN("config: %s %d (from %s) is not one of its codes (names: %s, ...)", p->field, v, from,
         p->names[0]);
    return sparcclInvalidArgument;
  }
  if (inRange(p, at)) return sparcclSuccess;
  if (p->kind == PARAM_REAL)
    WARN("config: %s %g (from %s) is outside %c%g, %g%c", p->field, *(const double*)at, from,
         p->openLow ? '(' : '[', p->low, p->high, p->openHigh ? ')' : ']');
  else
    WARN("config: %s %lld (from %s) is outside [%.0f, %.0f]", p->field, integerOf(p, at), from,
         p->low, p->high);
  return sparcclInvalidArgument;
}

/* One field: the user's value, else the environment's, else the default; then its range. */
static sparcclResult_t resolveParam(const sparcclParam_t* p, sparcclConfig_t* c,
                                    const char** from) {
  void* at = (char*)c + p->offset;
  *from = "config";
  if (isUndefined(p, at)) {
    const char* v = getenv(p->env);
    if (v != NULL) {
      SPARCCLCHECK(parseEnv(p, v, at));
      *from = p->env;
    } else {
      store(p, at, p->byDefault, p->kind == PARAM_ENUM ? enumCode(p, (int)p->byDefault)
                                                       : (long long)p->byDefault, 0);
      *from = "the default";
    }
  }
  return checkRange(p, at, *from);
}

sparcclResult_t sparcclConfigResolve(const sparcclConfig_t* user, sparcclConfig_t* c) {
  sparcclConfig_t init = SPARCCL_CONFIG_INITIALIZER;
  size_t i;
  if (user == NULL) user = &init;
  if (user->size != sizeof(sparcclConfig_t) || user->magic != SPARCCL_CONFIG_MAGIC) {
    WARN("config: not initialised with SPARCCL_CONFIG_INITIALIZER (size %zu, magic 0x%x)",
         user->size, user->magic);
    return sparcclInvalidArgument;
  }
  *c = *user;
  c->version = SPARCCL_VERSION_CODE;
  const char *from, *lowFrom = "", *highFrom = "";
  for (i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
    SPARCCLCHECK(resolveParam(&params[i], c, &from));
    if (params[i].offset == offsetof(sparcclConfig_t, importanceLow)) lowFrom = from;
    if (params[i].offset == offsetof(sparcclConfig_t, importanceHigh)) highFrom = from;
  }
  /* The one rule across fields: the cube bounds are an interval. */
  if (!(c->importanceLow <= c->importanceHigh)) {
    WARN("config: importance bounds [%g, %g] (from %s, %s) are not an interval", c->importanceLow,
         c->importanceHigh, lowFrom, highFrom);
    return sparcclInvalidArgument;
  }
  return sparcclSuccess;
}

uint64_t sparcclHash64(uint64_t h, const void* data, size_t bytes) {
  const unsigned char* p = (const unsigned char*)data;
  size_t i;
  for (i = 0; i < bytes; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull; /* FNV-1a */
  }
  return h;
}

/* Every field, by the table, plus the version: ranks whose configs differ are refused.
 * deviceKernels, errorBuffers and pipelineBytes are left out: the same bits either way, so
 * they load each other's saves (ranks whose groups differ are refused by the call's
 * agreement, pipeline.c).  The exchange and checkSizes count only when not the default
 * (whose fingerprints stay as before); ranksPerNode never: the topology it gives is in the
 * layer sets' fingerprints (comm.c); splitSlack
 * only under the split exchange. */
uint64_t sparcclConfigFingerprint(const sparcclConfig_t* c) {
  uint64_t h = sparcclHash64(SPARCCL_HASH_SEED, &c->version, sizeof(c->version));
  size_t i;
  for (i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
    const sparcclParam_t* p = &params[i];
    const void* at = (const char*)c + p->offset;
    if (p->offset == offsetof(sparcclConfig_t, deviceKernels) ||
        p->offset == offsetof(sparcclConfig_t, errorBuffers) ||
        p->offset == offsetof(sparcclConfig_t, pipelineBytes) ||
        p->offset == offsetof(sparcclConfig_t, ranksPerNode))
      continue;
    if (p->offset == offsetof(sparcclConfig_t, exchange) && c->exchange == sparcclExchangeAllgather)
      continue;
    if (p->offset == offsetof(sparcclConfig_t, checkSizes) && c->checkSizes == 0) continue;
    if (p->offset == offsetof(sparcclConfig_t, splitSlack) && c->exchange != sparcclExchangeSplit)
      continue;
    long long integer = p->kind == PARAM_REAL ? 0 : integerOf(p, at);
    if (p->kind == PARAM_REAL) h = sparcclHash64(h, at, sizeof(double));
    else h = sparcclHash64(h, &integer, sizeof(integer));
  }
  return h;
}
