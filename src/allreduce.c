/*
 * sparcclAllReduce: argument checks -> layer set by key -> compress every layer into this
 * rank's block -> one allgather -> state update and rank-ordered sum per layer -> output,
 * stats and the restart policies (ARCHITECTURE.md).
 */
#include <string.h>
#include "core.h"
#include "backend.h"

static int validDatatype(int t) {
  return t == sparcclFloat32 || t == sparcclFloat16 || t == sparcclBfloat16;
}

sparcclResult_t sparcclCheckBuffers(sparcclComm_t comm, const void* send, const void* recv,
                                    size_t count, int datatype, int op, void* stream,
                                    const char* caller) {
  SPARCCLCHECK(sparcclCheckComm(comm, caller));
  SPARCCLCHECK(comm->backend->checkStream(comm, stream, caller));
  if (!validDatatype(datatype)) {
    WARN("%s: datatype %d is not float16 (6), float32 (7) or bfloat16 (9)", caller, datatype);
    return sparcclInvalidArgument;
  }
  if (op != sparcclSum && op != sparcclAvg) {
    WARN("%s: op %d is not sparcclSum (0) or sparcclAvg (4)", caller, op);
    return sparcclInvalidArgument;
  }
  if (count == 0) return sparcclSuccess;
  if (send == NULL || recv == NULL) {
    WARN("%s: sendbuff %p or recvbuff %p is NULL", caller, send, recv);
    return sparcclInvalidArgument;
  }
  if (send != recv) {
    size_t bytes = count * sparccl_dtype_size(datatype);
    const char* s = (const char*)send;
    const char* r = (const char*)recv;
    if ((s < r && s + bytes > r) || (r < s && r + bytes > s)) {
      WARN("%s: sendbuff %p and recvbuff %p overlap without being equal", caller, send, recv);
      return sparcclInvalidArgument;
    }
  }
  return sparcclCheckMemory(comm, send, recv, caller);
}

sparcclResult_t sparcclCheckMemory(sparcclComm_t comm, const void* a, const void* b,
                                   const char* caller) {
  return comm->backend->checkPointers(comm, a, b, caller);
}

/* Output of one layer from its float32 sum (SPEC 1): s or s / n; for ef21, H <- H + s / n
 * and H * n or H (in a dense call, SPEC 9: H <- s / n, and s or s / n).  Converted once; the
 * norm of the float32 output feeds the restart policy. */
void sparcclWriteOutput(sparcclComm_t comm, sparcclLayer_t* l, float* sum, void* out, int dtype,
                        int op, int denseCall, sparccl_blocked_sum_t* norm) {
  const float n = (float)comm->nranks;
  size_t i;
  int ef21 = l->H != NULL && !denseCall;
  int wantNorm = comm->config.restartRatio > 0.0;
  /* float32 sum of a sparse layer, summed in place into out, no norm wanted: v = sum[i]
   * would be stored back to where it is (same bits: a sum of finite wire values is never
   * NaN), so the pass over the layer is skipped.  A dense layer's sum can be a NaN, which
   * the store makes canonical. */
  if (l->sparse && !ef21 && !wantNorm && op == sparcclSum && dtype == sparcclFloat32 &&
      (void*)sum == out)
    return;
  for (i = 0; i < l->count; i++) {
    float v = sparccl_layer_output(op, n, sum[i], l->H != NULL ? &l->H[i] : NULL, denseCall);
    if (wantNorm) sparccl_blocked_sum_add(norm, (double)v * (double)v);
    sparccl_store(out, i, dtype, v);
  }
}

static void writeNonFinite(sparcclComm_t comm, const sparcclLayer_t* l, void* out, int dtype,
                           sparccl_blocked_sum_t* norm) {
  size_t i;
  float nan = sparccl_skipped_output();
  for (i = 0; i < l->count; i++) sparccl_store(out, i, dtype, nan);
  if (comm->config.restartRatio > 0.0) sparccl_blocked_sum_add(norm, (double)nan);
}

/* A flagged layer whose x held a NaN or Inf on some rank: all NaN, state unchanged. */
void sparcclSkipLayer(sparcclComm_t comm, const sparcclLayer_t* l, void* out, int dtype,
                      sparccl_blocked_sum_t* norm, const char* caller) {
  writeNonFinite(comm, l, out, dtype, norm);
  comm->stats.skippedSteps++;
  INFO("%s: layer %u (%zu elements) has a NaN or Inf on some rank; step skipped", caller, l->id,
       l->count);
}

sparcclResult_t sparcclFindOrCreateKey(sparcclComm_t comm, int tagged, uint64_t key,
                                      size_t count, void* stream, const char* caller,
                                      sparcclLayerSet_t** set) {
  *set = sparcclFindSet(comm, tagged, key, count);
  if (*set == NULL && count > UINT32_MAX) {
    WARN("%s: %zu elements in one layer; a layer holds at most 2^32-1 (register a layout)",
         caller, count);
    return sparcclInvalidArgument;
  }
  if (*set == NULL) SPARCCLCHECK(comm->backend->checkNewKey(comm, stream, caller));
  return sparcclGetSet(comm, tagged, key, count, 0, NULL, caller, set);
}

void sparcclCompressBlock(sparcclComm_t comm, const sparcclGroup_t* group, const void* send,
                          int dtype, sparcclCallCheck_t check, uint8_t* block) {
  size_t i;
  sparcclBeginBlock(group, check, block);
  for (i = 0; i < group->nlayers; i++) sparcclCompressGroupLayer(comm, group, i, send, dtype, block);
}

void sparcclBeginBlock(const sparcclGroup_t* group, sparcclCallCheck_t check, uint8_t* block) {
  memset(block, 0, group->wire.blockBytes); /* padding too: the block is sent whole */
  *sparccl_wire_check(&group->wire, block) = check;
}

void sparcclCompressGroupLayer(sparcclComm_t comm, const sparcclGroup_t* group, size_t i,
                               const void* send, int dtype, uint8_t* block) {
  const sparcclLayer_t* l = &group->layers[i];
  uint32_t nonfinite = l->sparse ? (uint32_t)sparcclCompressLayer(comm, group, l, send, dtype, block)
                                 : (uint32_t)sparcclPackDense(comm, group, l, send, dtype, block);
  if (l->flagged) sparccl_wire_flags(&group->wire, block)[sparcclLayerFlag(group, l)] = nonfinite;
}

/* One layer of a verified call: the skip rule, else the state update, the rank-ordered sum
 * and the output (in place: g is read before it is overwritten).  Returns 0 if skipped. */
static int applyLayer(sparcclComm_t comm, const sparcclGroup_t* g, sparcclLayer_t* l,
                      const void* send, void* recv, int dtype, int op, const uint8_t* ownBlock,
                      const uint8_t* blocks, sparccl_blocked_sum_t* norm, const char* caller) {
  void* out = (uint8_t*)recv + l->offset * sparccl_dtype_size(dtype);
  float* sum = (dtype == sparcclFloat32 && l->H == NULL) ? (float*)out : comm->accumulator;
  int zeroed = 0;
  if (l->flagged) {
    if (sparccl_wire_any_flag(&g->wire, blocks, (uint32_t)comm->nranks, sparcclLayerFlag(g, l))) {
      sparcclSkipLayer(comm, l, out, dtype, norm, caller);
      return 0;
    }
    zeroed = sparcclUpdateState(comm, g, l, send, dtype, ownBlock, sum);
  }
  sparcclReduceLayer(comm, g, l, blocks, sum, zeroed);
  sparcclWriteOutput(comm, l, sum, out, dtype, op, 0, norm);
  return 1;
}

void sparcclApplyCall(sparcclComm_t comm, sparcclLayerSet_t* set, const sparcclGroup_t* groups,
                      size_t ngroups, const void* send, void* recv, int dtype, int op,
                      const uint8_t* ownBlocks, const uint8_t* blocks, size_t bytesSent,
                      const char* caller) {
  size_t j, i, n = (size_t)comm->nranks;
  int completed = 1;
  sparccl_blocked_sum_t norm;
  sparccl_blocked_sum_init(&norm);
  for (j = 0; j < ngroups; j++) {
    const sparcclGroup_t* g = &groups[j];
    for (i = 0; i < g->nlayers; i++)
      completed &= applyLayer(comm, g, &g->layers[i], send, recv, dtype, op,
                              ownBlocks + g->sendOffset, blocks + n * g->sendOffset, &norm, caller);
  }
  sparcclEndCall(comm, set, dtype, completed, sparccl_blocked_sum_result(&norm), bytesSent);
}

sparcclResult_t sparcclFinishCall(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                                  void* recv, int dtype, int op, const uint8_t* ownBlock,
                                  const uint8_t* blocks, sparcclCallCheck_t check,
                                  const char* caller) {
  sparcclResult_t res = sparcclVerifyBlocks(comm, &set->whole, blocks, check, caller);
  if (res != sparcclSuccess) {
    comm->stats.refusedCalls++;
    return res;
  }
  sparcclApplyCall(comm, set, &set->whole, 1, send, recv, dtype, op, ownBlock, blocks,
                   set->wire.blockBytes, caller);
  return sparcclSuccess;
}

void sparcclEndCall(sparcclComm_t comm, sparcclLayerSet_t* set, int dtype, int completed,
                    double normSquared, size_t bytesSent) {
  if (completed) set->steps++;
  set->calls++;
  sparcclRestartPolicyAfterCall(comm, set, normSquared, completed);
  comm->stats.calls++;
  comm->stats.bytesSent += bytesSent;
  comm->stats.bytesDense += set->count * sparccl_dtype_size(dtype);
}

static sparcclResult_t allReduce(const void* send, void* recv, size_t count, int dtype, int op,
                                 int tagged, uint64_t key, sparcclComm_t comm, void* stream,
                                 const char* caller) {
  sparcclLayerSet_t* set;
  SPARCCLCHECK(sparcclCheckBuffers(comm, send, recv, count, dtype, op, stream, caller));
  if (count == 0) return sparcclSuccess;
  if (!tagged) key = (uint64_t)(uintptr_t)send;
  SPARCCLCHECK(sparcclFindOrCreateKey(comm, tagged, key, count, stream, caller, &set));
  if (sparcclPendingCompress(set)) {
    WARN("%s: the key is between the phase API's two halves: decompress or abandon it first",
         caller);
    return sparcclInvalidUsage;
  }
  /* A device backend enqueues everything (restart policies and counters included) on the
   * stream, so that a captured graph's replays count too. */
  return comm->backend->allReduce(comm, set, send, recv, dtype, op, stream, caller);
}

SPARCCL_API sparcclResult_t sparcclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                             sparcclDataType_t datatype, sparcclRedOp_t op,
                                             sparcclComm_t comm, void* stream) {
  return allReduce(sendbuff, recvbuff, count, (int)datatype, (int)op, 0, 0, comm, stream,
                   "sparcclAllReduce");
}

SPARCCL_API sparcclResult_t sparcclAllReduceTagged(const void* sendbuff, void* recvbuff,
                                                   size_t count, sparcclDataType_t datatype,
                                                   sparcclRedOp_t op, unsigned long long tag,
                                                   sparcclComm_t comm, void* stream) {
  return allReduce(sendbuff, recvbuff, count, (int)datatype, (int)op, 1, tag, comm, stream,
                   "sparcclAllReduceTagged");
}
