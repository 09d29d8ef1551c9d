/* The host backend (src/backend.h): buffers and state in host memory, every step a loop
 * over the shared math and steps (compress.c, decompress.c, dense.c, host_importance.c),
 * the exchange by the comm's transport (MPI, or the caller's callback).  The CPU reference
 * of the device backend, and a product of its own for CPU clusters. */
#include <stdlib.h>
#include <string.h>
#include "backend.h"

/* The hierarchical or split exchange's blocks (exchange_hierarchical.c, exchange_split.c). */
static sparcclResult_t growHierarchical(sparcclComm_t comm, const sparcclLayerSet_t* set) {
  size_t bytes = comm->config.exchange == SPARCCL_EXCHANGE_SPLIT ? sparcclSplitScratch(comm, set)
                                                                 : sparcclHierarchicalScratch(comm, set);
  uint8_t* grown;
  if (bytes <= comm->hierCap) return sparcclSuccess;
  grown = (uint8_t*)malloc(bytes);
  if (grown == NULL) return sparcclSystemError;
  free(comm->hierScratch);
  comm->hierScratch = grown;
  comm->hierCap = bytes;
  return sparcclSuccess;
}

/* Grow the comm's scratch to fit a set; nothing is freed if an allocation fails. */
static sparcclResult_t hostCreateSet(sparcclComm_t comm, sparcclLayerSet_t* set) {
  size_t keyBytes = comm->config.compressor == sparcclImpKRandom ? 8 : 4;
  size_t elements = set->maxLayer > comm->scratchCap ? set->maxLayer : comm->scratchCap;
  int sharded = sparccl_exchange_sharded(comm->config.exchange); /* its own blocks */
  size_t block = set->wire.blockBytes > comm->blockCap && !sharded ? set->wire.blockBytes : comm->blockCap;
  size_t ring = comm->config.warmupSteps && !sharded ? sparcclDenseRingBytes(comm, set) : 0;
  if (set->pipelineBytes > block) block = set->pipelineBytes; /* every group's block (pipeline.c) */
  /* Warm-up's dense calls: an allgather of whole vectors where the transport has no
   * alltoall (dense.c), the ring's scratch where it has. */
  if (comm->config.warmupSteps && comm->transport->alltoall == NULL &&
      sparcclDenseBlockBytes(set) > block)
    block = sparcclDenseBlockBytes(set);
  if (sharded || comm->config.exchange == SPARCCL_EXCHANGE_SPLIT) SPARCCLCHECK(growHierarchical(comm, set));
  if (ring > comm->ringCap) {
    uint8_t* grown = (uint8_t*)malloc(ring);
    if (grown == NULL) return sparcclSystemError;
    free(comm->ringScratch);
    comm->ringScratch = grown;
    comm->ringCap = ring;
  }
  if (elements > comm->scratchCap) {
    void* keys = malloc(elements * keyBytes);
    uint32_t* candidates = (uint32_t*)malloc(elements * sizeof(uint32_t));
    float* accumulator = (float*)malloc(elements * sizeof(float));
    if (keys == NULL || candidates == NULL || accumulator == NULL) {
      free(keys); free(candidates); free(accumulator);
      return sparcclSystemError;
    }
    free(comm->keys); free(comm->candidates); free(comm->accumulator);
    comm->keys = keys; comm->candidates = candidates; comm->accumulator = accumulator;
    comm->scratchCap = elements;
  }
  if (set->valueCount > comm->sharedCap) {
    uint32_t* shared = (uint32_t*)malloc(set->valueCount * sizeof(uint32_t));
    if (shared == NULL) return sparcclSystemError;
    free(comm->sharedIndices);
    comm->sharedIndices = shared;
    comm->sharedCap = set->valueCount;
  }
  if (block > comm->blockCap) {
    uint8_t* send = (uint8_t*)malloc(block);
    uint8_t* recv = (uint8_t*)malloc(block * (size_t)comm->nranks);
    if (send == NULL || recv == NULL) { free(send); free(recv); return sparcclSystemError; }
    free(comm->sendBlock); free(comm->recvBlocks);
    comm->sendBlock = send; comm->recvBlocks = recv;
    comm->blockCap = block;
  }
  return sparcclSuccess;
}

static void hostFreeSet(sparcclComm_t comm, sparcclLayerSet_t* set) { (void)comm; (void)set; }

static sparcclResult_t hostQuiesce(sparcclComm_t comm, const char* caller) {
  (void)comm; (void)caller;
  return sparcclSuccess; /* every host call is done when it returns */
}

static sparcclResult_t hostCheckPointers(sparcclComm_t comm, const void* a, const void* b,
                                         const char* caller) {
  (void)comm;
  if (sparcclIsDevicePointer != NULL && (sparcclIsDevicePointer(a) || sparcclIsDevicePointer(b))) {
    WARN("%s: a device buffer on a host comm (%p, %p); use a device comm (sparccl_nccl.h)",
         caller, a, b);
    return sparcclInvalidUsage;
  }
  return sparcclSuccess;
}

static sparcclResult_t hostCheckStream(sparcclComm_t comm, void* stream, const char* caller) {
  (void)comm;
  if (stream == NULL) return sparcclSuccess;
  WARN("%s: a host comm takes no stream (got %p); pass NULL", caller, stream);
  return sparcclInvalidUsage;
}

static sparcclResult_t hostCheckNewKey(sparcclComm_t comm, void* stream, const char* caller) {
  (void)comm; (void)stream; (void)caller;
  return sparcclSuccess;
}

/* Compress every layer into this rank's block, then one allgather, then the state update and
 * the sums; a failure leaves every state as it was (nothing is written before the check). */
static sparcclResult_t allgatherAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set,
                                          const void* send, void* recv, int dtype, int op,
                                          const char* caller) {
  double t0, t1, t2;
  sparcclCallCheck_t check;
  sparcclResult_t res;
  if (sparcclNextCallDense(comm, set)) return sparcclDenseAllReduce(comm, set, send, recv, dtype, op, caller);
  if (set->ngroups > 1) return sparcclPipelinedAllReduce(comm, set, send, recv, dtype, op, caller);
  t0 = sparcclSeconds();
  check = sparcclCallCheck(comm, set, dtype, op, SPARCCL_CALL_SPARSE);
  sparcclCompressBlock(comm, &set->whole, send, dtype, check, comm->sendBlock);
  t1 = sparcclSeconds();
  sparcclClearChecks(comm, &set->whole, comm->recvBlocks);
  res = comm->transport->allgather(comm->transport, comm->sendBlock, comm->recvBlocks,
                                   set->wire.blockBytes);
  if (res == sparcclInvalidUsage) comm->stats.refusedCalls++; /* sizes that differ (mpi.c) */
  t2 = sparcclSeconds();
  if (res == sparcclSuccess)
    res = sparcclFinishCall(comm, set, send, recv, dtype, op, comm->sendBlock, comm->recvBlocks,
                            check, caller);
  if (res != sparcclSuccess) {
    WARN("%s: the exchange of %zu bytes failed or was refused; state unchanged, nothing written",
         caller, set->wire.blockBytes);
    return res;
  }
  comm->callSequence++;
  comm->stats.compressSeconds += t1 - t0;
  comm->stats.exchangeSeconds += t2 - t1;
  comm->stats.decompressSeconds += sparcclSeconds() - t2;
  return sparcclSuccess;
}

/* The host's call of each exchange, in the order of the exchange table (exchanges.h). */
typedef sparcclResult_t (*HostExchange)(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                                        void* recv, int dtype, int op, const char* caller);
static const HostExchange hostExchanges[] = {allgatherAllReduce, sparcclHierarchicalAllReduce,
                                             sparcclSplitAllReduce};
typedef char hostExchangesListed[sizeof(hostExchanges) / sizeof(hostExchanges[0]) ==
                                 SPARCCL_NUM_EXCHANGES ? 1 : -1];

static sparcclResult_t hostAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                                     void* recv, int dtype, int op, void* stream,
                                     const char* caller) {
  (void)stream;
  return hostExchanges[comm->config.exchange](comm, set, send, recv, dtype, op, caller);
}

static sparcclResult_t hostRestartSet(sparcclComm_t comm, sparcclLayerSet_t* set) {
  sparcclSetResetState(comm, set);
  comm->stats.restarts++;
  return sparcclSuccess;
}

/* A NaN in the state (from Inf * 0, or loaded) comes out as the canonical NaN, as on the
 * device: x86, aarch64 and GPUs each return their own NaN from a product. */
static sparcclResult_t hostScale(sparcclComm_t comm, sparcclLayerSet_t* set, float factor) {
  size_t j, n;
  (void)comm;
  for (j = 0; j < set->nlayers; j++) {
    const sparcclStateArrays_t s = sparcclLayerState(&set->layers[j]);
    for (n = 0; n < set->layers[j].shardCount; n++) sparccl_state_scale(&s, n, factor);
  }
  return sparcclSuccess;
}

/* The host state is its own mirror: nothing to move for save/load, no counters elsewhere. */
static sparcclResult_t hostState(sparcclComm_t comm, sparcclLayerSet_t* set) {
  (void)comm; (void)set;
  return sparcclSuccess;
}
static sparcclResult_t hostStats(sparcclComm_t comm, sparcclStats_t* stats) {
  (void)comm; (void)stats;
  return sparcclSuccess;
}
static void hostDestroy(sparcclComm_t comm) { (void)comm; }

/* The phase halves keep g, this rank's block and the shared sets beside the key, grown only
 * on a key's first compress (or for a wider dtype). */
static sparcclResult_t keepForDecompress(sparcclLayerSet_t* set, int dtype) {
  sparcclPending_t* p = set->pending;
  size_t bytes = set->count * sparccl_dtype_size(dtype);
  if (p->block == NULL) p->block = (uint8_t*)malloc(set->wire.blockBytes); /* a dense call keeps none */
  if (p->shared == NULL)
    p->shared = (uint32_t*)malloc((set->valueCount ? set->valueCount : 1) * sizeof(uint32_t));
  if (p->gradBytes < bytes) {
    free(p->grad);
    p->grad = malloc(bytes);
    p->gradBytes = p->grad != NULL ? bytes : 0;
  }
  if (p->block != NULL && p->shared != NULL && p->grad != NULL) return sparcclSuccess;
  WARN("sparcclCompressTagged: out of memory for a half-done call of %zu elements", set->count);
  return sparcclSystemError;
}

static sparcclResult_t hostPhaseCompress(sparcclComm_t comm, sparcclLayerSet_t* set,
                                         const void* send, int dtype, void* block,
                                         uint64_t fingerprint, void* stream) {
  sparcclPending_t* p = set->pending;
  (void)fingerprint; (void)stream; /* p->check holds it */
  SPARCCLCHECK(keepForDecompress(set, dtype));
  memcpy(p->grad, send, set->count * sparccl_dtype_size(dtype));
  if (p->dense) { /* the second half recomputes its state from g: no block kept */
    sparcclPackDenseBlock(comm, set, send, dtype, p->check, (uint8_t*)block);
    return sparcclSuccess;
  }
  sparcclCompressBlock(comm, &set->whole, send, dtype, p->check, p->block);
  memcpy(block, p->block, set->wire.blockBytes);
  if (set->valueCount) memcpy(p->shared, comm->sharedIndices, set->valueCount * sizeof(uint32_t));
  return sparcclSuccess;
}

static sparcclResult_t hostPhaseDecompress(sparcclComm_t comm, sparcclLayerSet_t* set,
                                           const void* blocks, void* recv, int dtype, int op,
                                           uint64_t fingerprint, void* stream) {
  static const char caller[] = "sparcclDecompressTagged";
  sparcclPending_t* p = set->pending;
  (void)fingerprint; (void)stream;
  if (p->dense) {
    SPARCCLCHECK(sparcclFinishDenseCall(comm, set, p->grad, recv, dtype, op,
                                        (const uint8_t*)blocks, p->check, caller));
  } else {
    if (set->valueCount) memcpy(comm->sharedIndices, p->shared, set->valueCount * sizeof(uint32_t));
    SPARCCLCHECK(sparcclFinishCall(comm, set, p->grad, recv, dtype, op, p->block,
                                   (const uint8_t*)blocks, p->check, caller));
  }
  set->phaseCalls++; /* a refused decompress returned above: still pending */
  return sparcclSuccess;
}

const sparcclBackend_t sparcclHostBackend = {
    "host", hostCreateSet, hostFreeSet, hostQuiesce, hostCheckPointers, hostCheckStream,
    hostCheckNewKey, hostAllReduce, sparcclHostProbe, sparcclHostUpdate,
    sparcclHostResetImportance, hostRestartSet, hostScale, hostState, hostState, hostStats,
    hostDestroy, hostPhaseCompress, hostPhaseDecompress};
