/*
 * The device half of a comm (cuda/), reached only through this table, so that the host
 * library never links CUDA: a host-only build has no table and refuses device comms
 * (sparcclNotSupported).
 */
#ifndef SPARCCL_DEVICE_H_
#define SPARCCL_DEVICE_H_

#include "core.h"

typedef struct sparcclDeviceOps {
  /* Allocate a new layer set's device state (zeroed; w = 1).  May synchronise. */
  sparcclResult_t (*createSet)(sparcclComm_t comm, sparcclLayerSet_t* set);
  /* After quiesce, or before any call on the set. */
  void (*freeSet)(sparcclComm_t comm, sparcclLayerSet_t* set);
  /* Before a release or the comm's destruction: refused (nothing done) during a CUDA graph
   * capture; otherwise every call's work is done when it returns.  Waits for nothing on an
   * abort. */
  sparcclResult_t (*quiesce)(sparcclComm_t comm, const char* caller);
  /* A host pointer, or another device's memory, on a device comm is refused. */
  sparcclResult_t (*checkPointers)(sparcclComm_t comm, const void* a, const void* b,
                                   const char* caller);
  /* Before a new key's collectives: refused during a capture or with a CUDA error pending. */
  sparcclResult_t (*checkNewKey)(sparcclComm_t comm, void* stream, const char* caller);
  sparcclResult_t (*allReduce)(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                               void* recv, int dtype, int op, void* stream);
  sparcclResult_t (*probe)(sparcclComm_t comm, sparcclLayerSet_t* set, const void* params,
                           const void* grad, void* out, int dtype, void* stream);
  sparcclResult_t (*update)(sparcclComm_t comm, sparcclLayerSet_t* set, const void* q,
                            const void* g, int dtype, void* stream);
  sparcclResult_t (*resetImportance)(sparcclComm_t comm, sparcclLayerSet_t* set);
  /* Reset e, h, H, w, ordered after the work already enqueued on the set. */
  sparcclResult_t (*restartSet)(sparcclComm_t comm, sparcclLayerSet_t* set);
  sparcclResult_t (*scale)(sparcclComm_t comm, sparcclLayerSet_t* set, float factor);
  /* Device state <-> the host mirror (set->stateMemory, counters) for save/load. */
  sparcclResult_t (*pullState)(sparcclComm_t comm, sparcclLayerSet_t* set);
  sparcclResult_t (*pushState)(sparcclComm_t comm, sparcclLayerSet_t* set);
  /* Add the counters kept on the device (skipped steps, restarts) to *stats. */
  sparcclResult_t (*stats)(sparcclComm_t comm, sparcclStats_t* stats);
  void (*destroy)(sparcclComm_t comm);
  /* The phase API's halves (src/phase.c): the compress writes this rank's block into the
   * caller's (device memory), the decompress takes the gathered blocks (device memory). */
  sparcclResult_t (*phaseCompress)(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                                   int dtype, void* block, uint64_t fingerprint, void* stream);
  sparcclResult_t (*phaseDecompress)(sparcclComm_t comm, sparcclLayerSet_t* set, const void* blocks,
                                     void* recv, int dtype, int op, uint64_t fingerprint,
                                     void* stream);
} sparcclDeviceOps_t;

#endif /* SPARCCL_DEVICE_H_ */
