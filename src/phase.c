/* The phase API (SPEC 10): a call in two halves around an exchange the caller makes.  The
 * compress writes this rank's block and keeps g, the block and the shared selected sets
 * beside the key, changing no state; the decompress verifies the gathered blocks and
 * finishes the call with sparcclAllReduceTagged's bits (docs/ARCHITECTURE.md). */
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "backend.h"

void sparcclFreePending(sparcclLayerSet_t* set) {
  if (set->pending == NULL) return;
  free(set->pending->grad);
  free(set->pending->block);
  free(set->pending->shared);
  free(set->pending);
  set->pending = NULL;
}

int sparcclPendingCompress(const sparcclLayerSet_t* set) {
  return set->pending != NULL && set->pending->pending;
}

/* The key's pending area, made on its first compress; the backend keeps what it needs. */
static sparcclResult_t pendingFor(sparcclLayerSet_t* set, const char* caller) {
  if (set->pending == NULL) set->pending = (sparcclPending_t*)calloc(1, sizeof(sparcclPending_t));
  if (set->pending != NULL) return sparcclSuccess;
  WARN("%s: out of memory for a half-done call of %zu elements", caller, set->count);
  return sparcclSystemError;
}

static sparcclResult_t taggedSet(sparcclComm_t comm, unsigned long long tag, const char* caller,
                                 sparcclLayerSet_t** set) {
  SPARCCLCHECK(sparcclCheckComm(comm, caller));
  if (comm->config.exchange != SPARCCL_EXCHANGE_ALLGATHER) { /* three exchanges, not one block */
    WARN("%s: the phase API moves one allgather block; this comm's exchange is %s", caller,
         comm->config.exchange == SPARCCL_EXCHANGE_SPLIT ? "split" : "hierarchical");
    return sparcclNotSupported;
  }
  *set = sparcclFindSet(comm, 1, tag, 0);
  if (*set == NULL) {
    WARN("%s: no state for tag 0x%llx (register its layout, or make its first call, first)",
         caller, tag);
    return sparcclInvalidUsage;
  }
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclBlockBytesTagged(sparcclComm_t comm, unsigned long long tag,
                                                    size_t* bytes) {
  static const char caller[] = "sparcclBlockBytesTagged";
  sparcclLayerSet_t* set;
  SPARCCLCHECK(sparcclCheckComm(comm, caller));
  if (bytes == NULL) {
    WARN("%s: bytes is NULL", caller);
    return sparcclInvalidArgument;
  }
  SPARCCLCHECK(taggedSet(comm, tag, caller, &set));
  /* the key's next call: a warm-up call's block holds whole vectors (SPEC 10) */
  *bytes = sparcclNextCallDense(comm, set) ? sparcclDenseBlockBytes(set) : set->wire.blockBytes;
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclCompressTagged(const void* sendbuff, size_t count,
                                                  sparcclDataType_t datatype,
                                                  unsigned long long tag, sparcclComm_t comm,
                                                  void* block, void* stream) {
  static const char caller[] = "sparcclCompressTagged";
  sparcclLayerSet_t* set;
  sparcclPending_t* p;
  SPARCCLCHECK(sparcclCheckBuffers(comm, sendbuff, sendbuff, count, (int)datatype, sparcclSum,
                                   stream, caller));
  if (count == 0 || block == NULL) {
    WARN("%s: count %zu or block %p: a compress needs elements and a block", caller, count, block);
    return sparcclInvalidArgument;
  }
  SPARCCLCHECK(sparcclCheckMemory(comm, block, NULL, caller));
  SPARCCLCHECK(sparcclFindOrCreateKey(comm, 1, tag, count, stream, caller, &set));
  if (sparcclPendingCompress(set)) {
    WARN("%s: tag 0x%llx is already between its two halves: decompress or abandon it first",
         caller, tag);
    return sparcclInvalidUsage;
  }
  SPARCCLCHECK(pendingFor(set, caller));
  p = set->pending;
  p->dense = sparcclNextCallDense(comm, set);
  p->dtype = (int)datatype;
  p->check = sparcclCallCheck(comm, set, (int)datatype, 0,
                              p->dense ? SPARCCL_CALL_PHASE_DENSE : SPARCCL_CALL_PHASE);
  SPARCCLCHECK(comm->backend->phaseCompress(comm, set, sendbuff, (int)datatype, block,
                                            p->check.fingerprint, stream));
  p->pending = 1;
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclDecompressTagged(const void* blocks, void* recvbuff,
                                                    size_t count, sparcclDataType_t datatype,
                                                    sparcclRedOp_t op, unsigned long long tag,
                                                    sparcclComm_t comm, void* stream) {
  static const char caller[] = "sparcclDecompressTagged";
  sparcclLayerSet_t* set;
  sparcclPending_t* p;
  SPARCCLCHECK(sparcclCheckBuffers(comm, recvbuff, recvbuff, count, (int)datatype, (int)op,
                                   stream, caller));
  SPARCCLCHECK(taggedSet(comm, tag, caller, &set));
  p = set->pending;
  if (p == NULL || !p->pending) {
    WARN("%s: tag 0x%llx has no compressed half (sparcclCompressTagged first)", caller, tag);
    return sparcclInvalidUsage;
  }
  if (blocks == NULL || count != set->count || (int)datatype != p->dtype) {
    WARN("%s: blocks %p, count %zu, datatype %d: the compress of tag 0x%llx had %zu elements "
         "of datatype %d", caller, blocks, count, (int)datatype, tag, set->count, p->dtype);
    return sparcclInvalidArgument;
  }
  SPARCCLCHECK(sparcclCheckMemory(comm, blocks, NULL, caller));
  /* a host backend refuses blocks that fail the check (the half stays pending); a device
   * backend cannot wait to know, so its refusal counts in the stats */
  SPARCCLCHECK(comm->backend->phaseDecompress(comm, set, blocks, recvbuff, p->dtype, (int)op,
                                              p->check.fingerprint, stream));
  p->pending = 0;
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclAbandonTagged(sparcclComm_t comm, unsigned long long tag) {
  static const char caller[] = "sparcclAbandonTagged";
  sparcclLayerSet_t* set;
  SPARCCLCHECK(taggedSet(comm, tag, caller, &set));
  if (set->pending == NULL || !set->pending->pending) {
    WARN("%s: tag 0x%llx has no compressed half to abandon", caller, tag);
    return sparcclInvalidUsage;
  }
  set->pending->pending = 0;
  return sparcclSuccess;
}
