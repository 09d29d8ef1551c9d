/* A comm's backend (docs/ARCHITECTURE.md, "The backend table"): where its buffers and state
 * live and how each step of a call runs there.  The entry points check arguments and
 * dispatch through it: host (src/host.c) or device (cuda/nccl_comm.cu), so that the host
 * library never links CUDA (a host-only build refuses device comms: sparcclNotSupported). */
#ifndef SPARCCL_BACKEND_H_
#define SPARCCL_BACKEND_H_

#include "core.h"

typedef struct sparcclBackend {
  const char* name;
  /* Allocate a new layer set's device state (zeroed; w = 1).  May synchronise. */
  sparcclResult_t (*createSet)(sparcclComm_t comm, sparcclLayerSet_t* set);
  /* After quiesce, or before any call on the set. */
  void (*freeSet)(sparcclComm_t comm, sparcclLayerSet_t* set);
  /* Before a release or the comm's destruction: refused (nothing done) during a CUDA graph
   * capture; otherwise every call's work is done when it returns.  Waits for nothing on an
   * abort. */
  sparcclResult_t (*quiesce)(sparcclComm_t comm, const char* caller);
  /* Buffers of another memory space (a host pointer on a device comm, a device pointer on
   * a host comm, another device's memory) are refused; so is a stream on a host comm. */
  sparcclResult_t (*checkPointers)(sparcclComm_t comm, const void* a, const void* b,
                                   const char* caller);
  sparcclResult_t (*checkStream)(sparcclComm_t comm, void* stream, const char* caller);
  /* Before a new key's collectives: refused during a capture or with a CUDA error pending. */
  sparcclResult_t (*checkNewKey)(sparcclComm_t comm, void* stream, const char* caller);
  /* One call on a live key that is not between its phase halves (allreduce.c checked). */
  sparcclResult_t (*allReduce)(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                               void* recv, int dtype, int op, void* stream, const char* caller);
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
  /* The phase API's halves (src/phase.c, which has set->pending ready): the compress writes
   * this rank's block into the caller's, the decompress takes the gathered blocks (in the
   * backend's memory); a decompress that succeeds finishes the half. */
  sparcclResult_t (*phaseCompress)(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                                   int dtype, void* block, uint64_t fingerprint, void* stream);
  sparcclResult_t (*phaseDecompress)(sparcclComm_t comm, sparcclLayerSet_t* set, const void* blocks,
                                     void* recv, int dtype, int op, uint64_t fingerprint,
                                     void* stream);
} sparcclBackend_t;

extern const sparcclBackend_t sparcclHostBackend; /* src/host.c */

/* src/host_importance.c: the host backend's importance steps. */
sparcclResult_t sparcclHostProbe(sparcclComm_t comm, sparcclLayerSet_t* set, const void* params,
                                 const void* grad, void* out, int datatype, void* stream);
sparcclResult_t sparcclHostUpdate(sparcclComm_t comm, sparcclLayerSet_t* set, const void* q,
                                  const void* g, int datatype, void* stream);
sparcclResult_t sparcclHostResetImportance(sparcclComm_t comm, sparcclLayerSet_t* set);

#endif /* SPARCCL_BACKEND_H_ */
