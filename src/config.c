/* The config struct: user fields, then SPARCCL_* environment, then defaults (SPEC 6, 8). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"

/* Defaults (README.md "Configuration" explains each). */
#define DEFAULT_DENSITY 0.01
#define DEFAULT_MIN_SPARSE 4096
/* gamma is the probe's step, i.e. the trainer's learning rate: 0.01 is a typical SGD rate.
 * eta makes the solver's few steps large (thesis 4.1): with c = eta * gamma = 10, a
 * coordinate whose gradient is 0.03 moves its weight by about 0.01 per step. */
#define DEFAULT_IMP_GAMMA 0.01
#define DEFAULT_IMP_ETA 1000.0

static const char* compressorNames[] = {"topk", "randk", "impk", "impk_select", "impk_random"};
static const char* feedbackNames[] = {"none", "ef", "ef21", "scam"};
static const char* importanceNames[] = {"none", "cube", "simplex", "online"};

const char* sparcclCompressorName(int c) {
  return c >= 0 && c < 5 ? compressorNames[c] : "unknown";
}
const char* sparcclFeedbackName(int f) { return f >= 0 && f < 4 ? feedbackNames[f] : "unknown"; }

static int lookupName(const char* value, const char* const* names, int n) {
  int i;
  for (i = 0; i < n; i++)
    if (strcmp(value, names[i]) == 0) return i;
  return -1;
}

static sparcclResult_t envDouble(const char* name, double* out, int* found) {
  const char* v = getenv(name);
  char* end;
  *found = 0;
  if (v == NULL) return sparcclSuccess;
  errno = 0;
  *out = strtod(v, &end);
  if (errno != 0 || *end != '\0' || end == v || !isfinite(*out)) {
    WARN("%s=%s is not a number", name, v);
    return sparcclInvalidArgument;
  }
  *found = 1;
  return sparcclSuccess;
}

sparcclResult_t sparcclEnvInteger(const char* name, long long low, long long high,
                                  long long* out, int* found) {
  const char* v = getenv(name);
  char* end;
  *found = 0;
  if (v == NULL) return sparcclSuccess;
  errno = 0;
  *out = strtoll(v, &end, 0);
  if (errno != 0 || *end != '\0' || end == v || *out < low || *out > high) {
    WARN("%s=%s is not an integer in [%lld, %lld]", name, v, low, high);
    return sparcclInvalidArgument;
  }
  *found = 1;
  return sparcclSuccess;
}

static sparcclResult_t envEnum(const char* name, const char* const* names, int n, int* out,
                               int* found) {
  const char* v = getenv(name);
  int i;
  *found = 0;
  if (v == NULL) return sparcclSuccess;
  i = lookupName(v, names, n);
  if (i < 0) {
    WARN("%s=\"%s\" is not one of the accepted names (e.g. %s); unset it for the default",
         name, v, names[0]);
    return sparcclInvalidArgument;
  }
  *out = i;
  *found = 1;
  return sparcclSuccess;
}

sparcclResult_t sparcclConfigResolve(const sparcclConfig_t* user, sparcclConfig_t* c) {
  sparcclConfig_t init = SPARCCL_CONFIG_INITIALIZER;
  int found;
  long long integer;
  double real;
  if (user == NULL) user = &init;
  if (user->size != sizeof(sparcclConfig_t) || user->magic != SPARCCL_CONFIG_MAGIC) {
    WARN("config: not initialised with SPARCCL_CONFIG_INITIALIZER (size %zu, magic 0x%x)",
         user->size, user->magic);
    return sparcclInvalidArgument;
  }
  *c = *user;
  c->version = SPARCCL_VERSION_CODE;

  /* Where each range-checked real came from, for the message that refuses it. */
  const char *densityFrom = "config.density", *importanceGammaFrom = "config.importanceGamma",
             *importanceEtaFrom = "config.importanceEta", *importanceLowFrom = "config.importanceLow",
             *importanceHighFrom = "config.importanceHigh", *restartRatioFrom = "config.restartRatio";
#define RESOLVE_DOUBLE(field, env, def)                  \
  if (c->field == SPARCCL_CONFIG_UNDEF_DOUBLE) {         \
    SPARCCLCHECK(envDouble(env, &real, &found));         \
    c->field = found ? real : (def);                     \
    field##From = found ? env : "the default";           \
  }
  RESOLVE_DOUBLE(density, "SPARCCL_DENSITY", DEFAULT_DENSITY)
  if (c->compressor == SPARCCL_CONFIG_UNDEF_INT) {
    SPARCCLCHECK(envEnum("SPARCCL_COMPRESSOR", compressorNames, 5, &c->compressor, &found));
    if (!found) c->compressor = sparcclImpK;
  }
  if (c->feedback == SPARCCL_CONFIG_UNDEF_INT) {
    SPARCCLCHECK(envEnum("SPARCCL_FEEDBACK", feedbackNames, 4, &c->feedback, &found));
    if (!found) c->feedback = sparcclFeedbackSCAM;
  }
  if (c->wireType == SPARCCL_CONFIG_UNDEF_INT) {
    static const char* wireNames[] = {"fp32", "bf16", "fp16"};
    static const int wireTypes[] = {sparcclFloat32, sparcclBfloat16, sparcclFloat16};
    int w;
    SPARCCLCHECK(envEnum("SPARCCL_WIRE", wireNames, 3, &w, &found));
    c->wireType = found ? wireTypes[w] : sparcclFloat32;
  }
  if (c->minSparseCount == SPARCCL_CONFIG_UNDEF_SIZE) {
    SPARCCLCHECK(sparcclEnvInteger("SPARCCL_MIN_SPARSE", 0, (long long)1 << 62, &integer, &found));
    c->minSparseCount = found ? (size_t)integer : DEFAULT_MIN_SPARSE;
  }
  if (c->seed == SPARCCL_CONFIG_UNDEF_SEED) {
    const char* v = getenv("SPARCCL_SEED");
    c->seed = 0;
    if (v != NULL) {
      char* end;
      errno = 0;
      c->seed = strtoull(v, &end, 0);
      if (errno != 0 || *end != '\0' || end == v || v[0] == '-' || c->seed == SPARCCL_CONFIG_UNDEF_SEED) {
        WARN("SPARCCL_SEED=%s is not an unsigned 64-bit integer below 2^64-1", v);
        return sparcclInvalidArgument;
      }
    }
  }
  if (c->sharedRandomness == SPARCCL_CONFIG_UNDEF_INT) {
    SPARCCLCHECK(sparcclEnvInteger("SPARCCL_SHARED_RANDOMNESS", 0, 1, &integer, &found));
    c->sharedRandomness = found ? (int)integer : 0;
  }
  if (c->importance == SPARCCL_CONFIG_UNDEF_INT) {
    SPARCCLCHECK(envEnum("SPARCCL_IMPORTANCE", importanceNames, 4, &c->importance, &found));
    if (!found) c->importance = sparcclImportanceNone;
  }
  RESOLVE_DOUBLE(importanceGamma, "SPARCCL_IMP_GAMMA", DEFAULT_IMP_GAMMA)
  RESOLVE_DOUBLE(importanceEta, "SPARCCL_IMP_ETA", DEFAULT_IMP_ETA)
  RESOLVE_DOUBLE(importanceLow, "SPARCCL_IMP_LOW", 0.0)
  RESOLVE_DOUBLE(importanceHigh, "SPARCCL_IMP_HIGH", 2.0)
  RESOLVE_DOUBLE(restartRatio, "SPARCCL_RESTART_RATIO", 0.0)
#undef RESOLVE_DOUBLE
  if (c->restartEvery == SPARCCL_CONFIG_UNDEF_LONG) {
    SPARCCLCHECK(sparcclEnvInteger("SPARCCL_RESTART_EVERY", 0, (long long)1 << 62, &integer, &found));
    c->restartEvery = found ? integer : 0;
  }
  if (c->restartLag == SPARCCL_CONFIG_UNDEF_INT) {
    SPARCCLCHECK(sparcclEnvInteger("SPARCCL_RESTART_LAG", 1, 1 << 20, &integer, &found));
    c->restartLag = found ? (int)integer : 1;
  }
  if (c->restartOnLoss == SPARCCL_CONFIG_UNDEF_INT) {
    SPARCCLCHECK(sparcclEnvInteger("SPARCCL_RESTART_ON_LOSS", 0, 1, &integer, &found));
    c->restartOnLoss = found ? (int)integer : 0;
  }

  /* Validate the resolved values, whichever way they came. */
  if (!(c->density > 0.0 && c->density <= 1.0)) {
    WARN("config: density %g (from %s) is outside (0, 1]", c->density, densityFrom);
    return sparcclInvalidArgument;
  }
  if (c->compressor < 0 || c->compressor > sparcclImpKRandom) {
    WARN("config: compressor %d is not a sparcclCompressor_t", c->compressor);
    return sparcclInvalidArgument;
  }
  if (c->feedback < 0 || c->feedback > sparcclFeedbackSCAM) {
    WARN("config: feedback %d is not a sparcclFeedback_t", c->feedback);
    return sparcclInvalidArgument;
  }
  if (c->wireType != sparcclFloat32 && c->wireType != sparcclFloat16 &&
      c->wireType != sparcclBfloat16) {
    WARN("config: wireType %d is not float32, float16 or bfloat16", c->wireType);
    return sparcclInvalidArgument;
  }
  if (c->sharedRandomness != 0 && c->sharedRandomness != 1) {
    WARN("config: sharedRandomness %d is not 0 or 1", c->sharedRandomness);
    return sparcclInvalidArgument;
  }
  if (c->importance < 0 || c->importance > sparcclImportanceOnline) {
    WARN("config: importance %d is not a sparcclImportance_t", c->importance);
    return sparcclInvalidArgument;
  }
  if (!(c->importanceGamma > 0.0) || !isfinite(c->importanceGamma) ||
      !(c->importanceEta > 0.0) || !isfinite(c->importanceEta)) {
    WARN("config: importance gamma %g (from %s) and eta %g (from %s) must be positive and finite",
         c->importanceGamma, importanceGammaFrom, c->importanceEta, importanceEtaFrom);
    return sparcclInvalidArgument;
  }
  if (!(c->importanceLow <= c->importanceHigh) || !isfinite(c->importanceLow) ||
      !isfinite(c->importanceHigh)) {
    WARN("config: importance bounds [%g, %g] (from %s, %s) are not an interval", c->importanceLow,
         c->importanceHigh, importanceLowFrom, importanceHighFrom);
    return sparcclInvalidArgument;
  }
  if (c->restartEvery < 0 || !(c->restartRatio >= 0.0) || !isfinite(c->restartRatio) ||
      c->restartLag < 1 || (c->restartOnLoss != 0 && c->restartOnLoss != 1)) {
    WARN("config: restart every %lld, ratio %g (from %s), lag %d, on-loss %d are not valid",
         c->restartEvery, c->restartRatio, restartRatioFrom, c->restartLag, c->restartOnLoss);
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

uint64_t sparcclConfigFingerprint(const sparcclConfig_t* c) {
  uint64_t h = SPARCCL_HASH_SEED;
  int64_t ints[] = {c->compressor, c->feedback, c->wireType, (int64_t)c->minSparseCount,
                    (int64_t)c->seed, c->sharedRandomness, c->importance, c->restartEvery,
                    c->restartLag, c->restartOnLoss, c->version};
  double reals[] = {c->density, c->importanceGamma, c->importanceEta, c->importanceLow,
                    c->importanceHigh, c->restartRatio};
  h = sparcclHash64(h, ints, sizeof(ints));
  return sparcclHash64(h, reals, sizeof(reals));
}
