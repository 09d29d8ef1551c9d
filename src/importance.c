/* Importance weights (SPEC 7; thesis eqs. (11)-(13)): the entry points of the probe, the
 * solver step and the reset; the backends run them (host: host_importance.c). */
#include <string.h>
#include "core.h"
#include "backend.h"

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
  SPARCCLCHECK(sparcclCheckComm(comm, caller));
  if (params == NULL || out == NULL) {
    WARN("%s: params %p or probe %p is NULL", caller, params, out);
    return sparcclInvalidArgument;
  }
  /* every argument is checked before the key's state may be created */
  SPARCCLCHECK(sparcclCheckMemory(comm, params, out, caller));
  SPARCCLCHECK(importanceSet(comm, grad, count, datatype, stream, tagged, tag, caller, &set));
  return comm->backend->probe(comm, set, params, grad, out, datatype, stream);
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

static sparcclResult_t update(const void* q, const void* g, size_t count, int datatype,
                              int tagged, uint64_t tag, sparcclComm_t comm, void* stream,
                              const char* caller) {
  sparcclLayerSet_t* set;
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
  return comm->backend->update(comm, set, q, g, datatype, stream);
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
  SPARCCLCHECK(sparcclCheckComm(comm, caller));
  set = sparcclFindSet(comm, tagged, key, count);
  if (set == NULL) {
    WARN("%s: no state for %s 0x%llx", caller, tagged ? "tag" : "buffer", (unsigned long long)key);
    return sparcclInvalidUsage;
  }
  return comm->backend->resetImportance(comm, set);
}

SPARCCL_API sparcclResult_t sparcclImportanceReset(sparcclComm_t comm, const void* grad,
                                                   size_t count) {
  return reset(comm, 0, (uint64_t)(uintptr_t)grad, count, "sparcclImportanceReset");
}

SPARCCL_API sparcclResult_t sparcclImportanceResetTagged(sparcclComm_t comm,
                                                         unsigned long long tag) {
  return reset(comm, 1, tag, 0, "sparcclImportanceResetTagged");
}
