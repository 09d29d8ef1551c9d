/*
 * config_layout: the C side of the ctypes layout check (check_ctypes_layout.py).  Prints,
 * one line each, every field of sparcclConfig_t and sparcclStats_t with its offset, its
 * size and its value in SPARCCL_CONFIG_INITIALIZER (the sentinels), then the sizes:
 *
 *   field config density 16 8 -1.7976931348623157e+308
 *   sizeof config 120
 *
 * Host-only: includes sparccl.h alone.
 */
#include <stddef.h>
#include <stdio.h>
#include "sparccl.h"

static const sparcclConfig_t init = SPARCCL_CONFIG_INITIALIZER;
static const sparcclStats_t zero;

#define INTEGER(s, obj, type, f) \
  printf("field %s %s %zu %zu %lld\n", s, #f, offsetof(type, f), sizeof(obj.f), (long long)obj.f)
#define UNSIGNED(s, obj, type, f)                                                     \
  printf("field %s %s %zu %zu %llu\n", s, #f, offsetof(type, f), sizeof(obj.f), \
         (unsigned long long)obj.f)
#define REAL(s, obj, type, f) \
  printf("field %s %s %zu %zu %.17g\n", s, #f, offsetof(type, f), sizeof(obj.f), (double)obj.f)

int main(void) {
  UNSIGNED("config", init, sparcclConfig_t, size);
  UNSIGNED("config", init, sparcclConfig_t, magic);
  UNSIGNED("config", init, sparcclConfig_t, version);
  REAL("config", init, sparcclConfig_t, density);
  INTEGER("config", init, sparcclConfig_t, compressor);
  INTEGER("config", init, sparcclConfig_t, feedback);
  INTEGER("config", init, sparcclConfig_t, wireType);
  UNSIGNED("config", init, sparcclConfig_t, minSparseCount);
  UNSIGNED("config", init, sparcclConfig_t, seed);
  INTEGER("config", init, sparcclConfig_t, sharedRandomness);
  INTEGER("config", init, sparcclConfig_t, importance);
  REAL("config", init, sparcclConfig_t, importanceGamma);
  REAL("config", init, sparcclConfig_t, importanceEta);
  REAL("config", init, sparcclConfig_t, importanceLow);
  REAL("config", init, sparcclConfig_t, importanceHigh);
  INTEGER("config", init, sparcclConfig_t, restartEvery);
  REAL("config", init, sparcclConfig_t, restartRatio);
  INTEGER("config", init, sparcclConfig_t, restartLag);
  INTEGER("config", init, sparcclConfig_t, restartOnLoss);
  UNSIGNED("config", init, sparcclConfig_t, warmupSteps);
  REAL("config", init, sparcclConfig_t, momentum);
  INTEGER("config", init, sparcclConfig_t, deviceKernels);
  INTEGER("config", init, sparcclConfig_t, checkSizes);
  INTEGER("config", init, sparcclConfig_t, errorBuffers);
  UNSIGNED("config", init, sparcclConfig_t, pipelineBytes);
  INTEGER("config", init, sparcclConfig_t, exchange);
  INTEGER("config", init, sparcclConfig_t, ranksPerNode);
  REAL("config", init, sparcclConfig_t, splitSlack);
  printf("sizeof config %zu\n", sizeof(sparcclConfig_t));

  UNSIGNED("stats", zero, sparcclStats_t, calls);
  UNSIGNED("stats", zero, sparcclStats_t, layerSets);
  UNSIGNED("stats", zero, sparcclStats_t, layersSparse);
  UNSIGNED("stats", zero, sparcclStats_t, layersDense);
  UNSIGNED("stats", zero, sparcclStats_t, bytesSent);
  UNSIGNED("stats", zero, sparcclStats_t, bytesDense);
  UNSIGNED("stats", zero, sparcclStats_t, skippedSteps);
  UNSIGNED("stats", zero, sparcclStats_t, restarts);
  UNSIGNED("stats", zero, sparcclStats_t, stateBytes);
  REAL("stats", zero, sparcclStats_t, compressSeconds);
  REAL("stats", zero, sparcclStats_t, exchangeSeconds);
  REAL("stats", zero, sparcclStats_t, decompressSeconds);
  UNSIGNED("stats", zero, sparcclStats_t, refusedCalls);
  UNSIGNED("stats", zero, sparcclStats_t, pairsReceived);
  printf("sizeof stats %zu\n", sizeof(sparcclStats_t));

  printf("const version %d\n", SPARCCL_VERSION_CODE);
  printf("const magic %u\n", SPARCCL_CONFIG_MAGIC);
  printf("const float16 %d\nconst float32 %d\nconst bfloat16 %d\n", (int)sparcclFloat16,
         (int)sparcclFloat32, (int)sparcclBfloat16);
  printf("const sum %d\nconst avg %d\n", (int)sparcclSum, (int)sparcclAvg);
  printf("const impk_random %d\nconst scam %d\nconst online %d\n", (int)sparcclImpKRandom,
         (int)sparcclFeedbackSCAM, (int)sparcclImportanceOnline);
  printf("const not_supported %d\n", (int)sparcclNotSupported);
  return 0;
}
