/* Importance weights (SPEC 7; thesis eqs. (11)-(13)): probe, solver step, reset. */
#include <string.h>
#include "core.h"
#include "device.h"

static int hasImportance(const sparcclComm_t comm) {
  return sparccl_has_weights(comm->config.compressor);
}

/* The layer set of (grad, count) or the tag, created on first use like sparcclAllReduce. */
static sparcclResult_t importanceSet(sparcclComm_t comm, const void* grad, size_t count,
                                     int datatype, void* stream, int tagged, uint64_t tag,
                                     const char* caller, sparcclLayerSet_t** set) {
  SPARCCLCHECK(sparcclCheckBuffers(comm, grad, grad, count, datatype, sparcclSum, stream, caller));
  if (count == 0) {
    WARN("%s: count is 0", caller);
    return sparcclInvalidArgument;
  }
  if (!tagged && sparcclFindSet(comm, 0, (uint64_t)(uintptr_t)grad, count) == NULL &&
      count > UINT32_MAX) {
    WARN("%s: %zu elements in one layer; register a layout", caller, count);
    return sparcclInvalidArgument;
  }
  return sparcclGetSet(comm, tagged, tagged ? tag : (uint64_t)(uintptr_t)grad, count, 0, NULL,
                       caller, set);
}

static sparcclResult_t probe(const void* params, const void* grad, void* out, size_t count,
                             int datatype, int tagged, uint64_t tag, sparcclComm_t comm,
                             void* stream, const char* caller) {
  sparcclLayerSet_t* set;
  size_t i, j;
  float gamma;
  SPARCCLCHECK(sparcclCheckComm(comm, caller));
  if (params == NULL || out == NULL) {
    WARN("%s: params %p or probe %p is NULL", caller, params, out);
    return sparcclInvalidArgument;
  }
  /* every argument is checked before the key's state may be created */
  SPARCCLCHECK(sparcclCheckMemory(comm, params, out, caller));
  SPARCCLCHECK(importanceSet(comm, grad, count, datatype, stream, tagged, tag, caller, &set));
  if (comm->device) return comm->device->probe(comm, set, params, grad, out, datatype, stream);
  gamma = (float)comm->config.importanceGamma;
  for (i = 0; i < set->nlayers; i++) {
    const sparcclLayer_t* l = &set->layers[i];
    size_t base = l->offset;
    for (j = 0; j < l->count; j++) {
      float w = l->importance ? l->importance[j] : 1.0f;
      float p = sparccl_probe(sparccl_load(params, base + j, datatype), w,
                              sparccl_load(grad, base + j, datatype), gamma);
      sparccl_store(out, base + j, datatype, p);
    }
  }
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclImportanceProbe(const void* params, const void* grad,
                                                   void* probeOut, size_t count,
                                                   sparcclDataType_t datatype,
                                                   sparcclComm_t comm, void* stream) {
  return probe(params, grad, probeOut, count, (int)datatype, 0, 0, comm, stream,
               "sparcclImportanceProbe");
}

SPARCCL_API sparcclResult_t sparcclImportanceProbeTagged(const void* params, const void* grad,
                                                         void* probeOut, size_t count,
                                                         sparcclDataType_t datatype,
                                                         unsigned long long tag,
                                                         sparcclComm_t comm, void* stream) {
  return probe(params, grad, probeOut, count, (int)datatype, 1, tag, comm, stream,
               "sparcclImportanceProbeTagged");
}

/* One solver step on one layer; a layer whose q * g is not finite keeps its weights. */
static int updateLayer(const sparcclConfig_t* c, sparcclLayer_t* l, const void* q,
                       const void* g, int datatype) {
  float rate = sparccl_importance_rate(c->importanceEta, c->importanceGamma);
  size_t i, base = l->offset;
  for (i = 0; i < l->count; i++)
    if (!sparccl_is_finite(sparccl_simplex_exponent(sparccl_load(q, base + i, datatype),
                                                    sparccl_load(g, base + i, datatype), rate)))
      return 0;
  if (c->importance == sparcclImportanceSimplex) {
    /* eq. (12): w <- d * w exp(z - max z) / sum(w exp(z - max z)) */
    float zmax = -sparccl_bits_float(0x7f800000u);
    sparccl_blocked_sum_t total;
    double sum;
    for (i = 0; i < l->count; i++) {
      float z = sparccl_simplex_exponent(sparccl_load(q, base + i, datatype),
                                         sparccl_load(g, base + i, datatype), rate);
      if (z > zmax) zmax = z;
    }
    sparccl_blocked_sum_init(&total);
    for (i = 0; i < l->count; i++) {
      float z = sparccl_simplex_exponent(sparccl_load(q, base + i, datatype),
                                         sparccl_load(g, base + i, datatype), rate);
      sparccl_blocked_sum_add(&total, sparccl_simplex_term(l->importance[i], z, zmax));
    }
    sum = sparccl_blocked_sum_result(&total);
    if (!(sum > 0.0)) return 0; /* all weights zero: nothing to normalise */
    for (i = 0; i < l->count; i++) {
      float z = sparccl_simplex_exponent(sparccl_load(q, base + i, datatype),
                                         sparccl_load(g, base + i, datatype), rate);
      l->importance[i] = sparccl_simplex_weight((double)l->count,
                                                sparccl_simplex_term(l->importance[i], z, zmax), sum);
    }
  } else {
    /* eq. (13), also for importance none (the trainer runs the solver) and online */
    float low = (float)c->importanceLow, high = (float)c->importanceHigh;
    for (i = 0; i < l->count; i++)
      l->importance[i] = sparccl_cube_step(l->importance[i], sparccl_load(q, base + i, datatype),
                                           sparccl_load(g, base + i, datatype), rate, low, high);
  }
  return 1;
}

static sparcclResult_t update(const void* q, const void* g, size_t count, int datatype,
                              int tagged, uint64_t tag, sparcclComm_t comm, void* stream,
                              const char* caller) {
  sparcclLayerSet_t* set;
  size_t i;
  SPARCCLCHECK(sparcclCheckComm(comm, caller));
  if (!hasImportance(comm)) {
    WARN("%s: compressor %s has no importance weights", caller,
         sparcclCompressorName(comm->config.compressor));
    return sparcclInvalidUsage;
  }
  if (q == NULL) {
    WARN("%s: gradAtProbe is NULL", caller);
    return sparcclInvalidArgument;
  }
  SPARCCLCHECK(sparcclCheckMemory(comm, q, NULL, caller));
  SPARCCLCHECK(importanceSet(comm, g, count, datatype, stream, tagged, tag, caller, &set));
  if (comm->device) return comm->device->update(comm, set, q, g, datatype, stream);
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    if (l->importance != NULL && !updateLayer(&comm->config, l, q, g, datatype))
      INFO("%s: layer %u: the importance step has a NaN or Inf; weights kept", caller, l->id);
  }
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclImportanceUpdate(const void* gradAtProbe, const void* grad,
                                                    size_t count, sparcclDataType_t datatype,
                                                    sparcclComm_t comm, void* stream) {
  return update(gradAtProbe, grad, count, (int)datatype, 0, 0, comm, stream,
                "sparcclImportanceUpdate");
}

SPARCCL_API sparcclResult_t sparcclImportanceUpdateTagged(const void* gradAtProbe,
                                                          const void* grad, size_t count,
                                                          sparcclDataType_t datatype,
                                                          unsigned long long tag,
                                                          sparcclComm_t comm, void* stream) {
  return update(gradAtProbe, grad, count, (int)datatype, 1, tag, comm, stream,
                "sparcclImportanceUpdateTagged");
}

static sparcclResult_t reset(sparcclComm_t comm, int tagged, uint64_t key, size_t count,
                             const char* caller) {
  sparcclLayerSet_t* set;
  size_t i, j;
  SPARCCLCHECK(sparcclCheckComm(comm, caller));
  set = sparcclFindSet(comm, tagged, key, count);
  if (set == NULL) {
    WARN("%s: no state for %s 0x%llx", caller, tagged ? "tag" : "buffer", (unsigned long long)key);
    return sparcclInvalidUsage;
  }
  if (comm->device) return comm->device->resetImportance(comm, set);
  for (i = 0; i < set->nlayers; i++)
    for (j = 0; set->layers[i].importance && j < set->layers[i].count; j++)
      set->layers[i].importance[j] = 1.0f;
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclImportanceReset(sparcclComm_t comm, const void* grad,
                                                   size_t count) {
  return reset(comm, 0, (uint64_t)(uintptr_t)grad, count, "sparcclImportanceReset");
}

SPARCCL_API sparcclResult_t sparcclImportanceResetTagged(sparcclComm_t comm,
                                                         unsigned long long tag) {
  return reset(comm, 1, tag, 0, "sparcclImportanceResetTagged");
}
