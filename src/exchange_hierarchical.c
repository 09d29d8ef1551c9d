/* The hierarchical exchange on the host (docs/EXCHANGES.md 11.2): a rank-ordered dense
 * reduce-scatter inside the node (an alltoall of shard chunks), each local rank compressing
 * its shard of the node's sum with its own state, an allgather of the blocks over the
 * column, the node-ordered sum, and an allgather of the shards' outputs inside the node.
 * Every layer is compressed by compress.c's loops through a view of its shard. */
#include <string.h>
#include "core.h"

/* Shard j of a layer of d elements starts at floor(j d / L) (11.2). */
static size_t shardStart(size_t d, int j, int L) { return (size_t)j * d / (size_t)L; }
static size_t shardSize(size_t d, int j, int L) {
  return shardStart(d, j + 1, L) - shardStart(d, j, L);
}

/* The floats of local rank j's shards of every layer (the node blocks' payload). */
static size_t shardTotal(const sparcclLayerSet_t* set, int j, int L) {
  size_t i, total = 0;
  for (i = 0; i < set->nlayers; i++) total += shardSize(set->layers[i].count, j, L);
  return total;
}

void sparcclHierarchicalLayOut(sparcclComm_t comm, sparcclLayerSet_t* set) {
  const sparcclTopology_t* t = comm->transport->topology;
  size_t i, pos = 0, indexCount = 0, valueCount = 0, denseCount = 0, widest = 0;
  int j;
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    l->shardOffset = shardStart(l->count, t->localIndex, t->perNode);
    l->shardCount = shardSize(l->count, t->localIndex, t->perNode);
    l->shardK = l->sparse ? sparccl_layer_k(l->shardCount, comm->config.density) : l->shardCount;
    l->shardPos = pos;
    pos += l->shardCount;
    if (l->sparse) {
      l->shardIndexPos = indexCount; indexCount += l->shardK;
      l->shardValuePos = valueCount; valueCount += l->shardK;
    } else {
      l->shardDensePos = denseCount; denseCount += l->shardCount;
    }
  }
  for (j = 0; j < t->perNode; j++)
    if (shardTotal(set, j, t->perNode) > widest) widest = shardTotal(set, j, t->perNode);
  set->nodeChunk = sparccl_wire_floats(widest, 0);
  set->nodeGather = sparccl_wire_floats(widest, set->nflags);
  set->column = sparccl_wire_layout(indexCount, valueCount, sparccl_dtype_size(comm->config.wireType),
                                    denseCount, set->nflags);
}

/* A warm-up call's column block: every shard's x in float32, the flags, the check. */
static sparcclWire_t denseColumn(const sparcclComm_t comm, const sparcclLayerSet_t* set) {
  const sparcclTopology_t* t = comm->transport->topology;
  return sparccl_wire_floats(shardTotal(set, t->localIndex, t->perNode), set->nflags);
}

/* The scratch of one call, carved from comm->hierScratch in this order. */
typedef struct {
  uint8_t *chunksOut, *chunksIn;   /* step 1: L chunks each */
  float *nodeSum, *sums;           /* this rank's shards of G and of S */
  uint8_t *columnOut, *columnIn;   /* step 3: 1 and N blocks */
  uint8_t *gatherOut, *gatherIn;   /* step 4: 1 and L blocks */
  size_t* cursors;                 /* L positions in the gathered blocks */
  size_t columnBytes;
} Scratch;

static Scratch scratchOf(sparcclComm_t comm, const sparcclLayerSet_t* set, uint8_t* base,
                         size_t* bytes) {
  const sparcclTopology_t* t = comm->transport->topology;
  size_t L = (size_t)t->perNode, N = (size_t)t->nodes, at = 0;
  size_t floats = sparccl_align16(set->nodeChunk.blockBytes);
  Scratch s;
  s.columnBytes = set->column.blockBytes > denseColumn(comm, set).blockBytes
                      ? set->column.blockBytes : denseColumn(comm, set).blockBytes;
#define CARVE(field, type, n) (s.field = (type)(void*)((uintptr_t)base + at), at += sparccl_align16(n))
  CARVE(chunksOut, uint8_t*, L * set->nodeChunk.blockBytes);
  CARVE(chunksIn, uint8_t*, L * set->nodeChunk.blockBytes);
  CARVE(nodeSum, float*, floats);
  CARVE(sums, float*, floats);
  CARVE(columnOut, uint8_t*, s.columnBytes);
  CARVE(columnIn, uint8_t*, N * s.columnBytes);
  CARVE(gatherOut, uint8_t*, set->nodeGather.blockBytes);
  CARVE(gatherIn, uint8_t*, L * set->nodeGather.blockBytes);
  CARVE(cursors, size_t*, L * sizeof(size_t));
#undef CARVE
  *bytes = at;
  return s;
}

size_t sparcclHierarchicalScratch(sparcclComm_t comm, const sparcclLayerSet_t* set) {
  size_t bytes;
  (void)scratchOf(comm, set, NULL, &bytes);
  return bytes;
}

static void clearChecks(size_t nblocks, uint8_t* blocks, const sparcclWire_t* w) {
  size_t r;
  for (r = 0; r < nblocks; r++)
    memset(sparccl_wire_check(w, sparccl_wire_block(w, blocks, r)), 0, SPARCCL_CALL_CHECK_BYTES);
}

/* Step 1: this rank's g by shard to each local rank, then G = +0.0f + g_0 + ... + g_(L-1)
 * over this rank's shards, in local (global rank) order. */
static sparcclResult_t nodeSum(sparcclComm_t comm, const sparcclLayerSet_t* set, const void* send,
                               int dtype, sparcclCallCheck_t check, const Scratch* s,
                               const char* caller) {
  const sparcclTopology_t* t = comm->transport->topology;
  const sparcclWire_t* w = &set->nodeChunk;
  size_t i, e, p, mine = shardTotal(set, t->localIndex, t->perNode);
  sparcclResult_t res;
  int j;
  memset(s->chunksOut, 0, (size_t)t->perNode * w->blockBytes);
  for (j = 0; j < t->perNode; j++) {
    uint8_t* chunk = sparccl_wire_block(w, s->chunksOut, (size_t)j);
    float* x = sparccl_wire_dense(w, chunk);
    for (i = 0; i < set->nlayers; i++) {
      const sparcclLayer_t* l = &set->layers[i];
      size_t lo = l->offset + shardStart(l->count, j, t->perNode), n = shardSize(l->count, j, t->perNode);
      for (e = 0; e < n; e++) *x++ = sparccl_load(send, lo + e, dtype);
    }
    *sparccl_wire_check(w, chunk) = check;
  }
  clearChecks((size_t)t->perNode, s->chunksIn, w);
  res = t->node->alltoall(t->node, s->chunksOut, s->chunksIn, w->blockBytes);
  if (res == sparcclSuccess)
    res = sparcclVerifyChecksOf(comm, t->perNode, s->chunksIn, w, check, "node ", caller);
  for (p = 0; res == sparcclSuccess && p < mine; p++)
    s->nodeSum[p] = sparccl_rank_sum(w, s->chunksIn, (uint32_t)t->perNode, p);
  return res;
}

/* A layer's shard as a layer of its own (compress.c and decompress.c read it): its state,
 * its positions in the column block; g at G's shard, element 0 at layer index shardOffset. */
static sparcclLayer_t shardView(const sparcclLayer_t* l) {
  sparcclLayer_t v = *l;
  v.offset = 0;
  v.count = l->shardCount;
  v.k = l->shardK;
  v.sharedSet = 0; /* indices always travel: the column checks them */
  v.indexPos = l->shardIndexPos;
  v.valuePos = l->shardValuePos;
  v.densePos = l->shardDensePos;
  return v;
}

/* The set as compress.c sees it: one group, the column block's layout. */
static sparcclGroup_t columnGroup(const sparcclLayerSet_t* set, const sparcclWire_t* w) {
  sparcclGroup_t g = set->whole;
  g.wire = *w;
  return g;
}

/* Step 2: this rank's column block from its shards of G (no state written). */
static void packColumn(sparcclComm_t comm, const sparcclLayerSet_t* set, int dense,
                       sparcclCallCheck_t check, const Scratch* s) {
  const sparcclWire_t w = dense ? denseColumn(comm, set) : set->column;
  const sparcclGroup_t view = columnGroup(set, &w);
  size_t i, t;
  memset(s->columnOut, 0, w.blockBytes);
  *sparccl_wire_check(&w, s->columnOut) = check;
  for (i = 0; i < set->nlayers; i++) {
    const sparcclLayer_t* l = &set->layers[i];
    sparcclLayer_t v = shardView(l);
    const float* G = s->nodeSum + l->shardPos;
    uint32_t nonfinite;
    if (dense || !l->sparse) {
      float* x = sparccl_wire_dense(&w, s->columnOut) + (dense ? l->shardPos : l->shardDensePos);
      nonfinite = (uint32_t)sparcclDenseInput(comm, &v, G, SPARCCL_DT_FLOAT32, x);
    } else {
      uint32_t* indices = sparccl_wire_indices(&w, s->columnOut) + l->shardIndexPos;
      nonfinite = (uint32_t)sparcclCompressLayer(comm, &view, &v, G, SPARCCL_DT_FLOAT32, s->columnOut);
      for (t = 0; t < l->shardK; t++) indices[t] += (uint32_t)l->shardOffset; /* layer-local */
    }
    if (l->flagged) sparccl_wire_flags(&w, s->columnOut)[l->flagPos] = nonfinite;
  }
}

/* Every column block's check, and every index inside its shard, ascending. */
static sparcclResult_t verifyColumn(sparcclComm_t comm, const sparcclLayerSet_t* set, int dense,
                                    const sparcclWire_t* w, const uint8_t* blocks,
                                    sparcclCallCheck_t check, const char* caller) {
  const sparcclTopology_t* t = comm->transport->topology;
  size_t i;
  int v;
  SPARCCLCHECK(sparcclVerifyChecksOf(comm, t->nodes, blocks, w, check, "column ", caller));
  for (v = 0; v < t->nodes && !dense; v++) {
    const uint32_t* indices = sparccl_wire_indices(w, sparccl_wire_block(w, blocks, (size_t)v));
    for (i = 0; i < set->nlayers; i++) {
      const sparcclLayer_t* l = &set->layers[i];
      if (l->sparse && !sparcclIndicesValid(indices + l->shardIndexPos, l->shardK, l->shardOffset,
                                            l->shardOffset + l->shardCount)) {
        WARN("%s: node %d sent an index outside its shard of layer %u or out of order; refused, "
             "nothing written", caller, v, l->id);
        return sparcclInvalidUsage;
      }
    }
  }
  return sparcclSuccess;
}

/* Step 3's sum of one shard: S = +0.0f; S = S + sent_v in node order. */
static void columnSum(sparcclComm_t comm, const sparcclLayer_t* l, int dense, const sparcclWire_t* w,
                      const uint8_t* blocks, float* S) {
  const sparcclTopology_t* t = comm->transport->topology;
  size_t p, q;
  int v;
  if (dense || !l->sparse) {
    size_t at = dense ? l->shardPos : l->shardDensePos;
    for (p = 0; p < l->shardCount; p++) S[p] = sparccl_rank_sum(w, blocks, (uint32_t)t->nodes, at + p);
    return;
  }
  for (p = 0; p < l->shardCount; p++) S[p] = +0.0f;
  for (v = 0; v < t->nodes; v++) {
    const uint8_t* block = sparccl_wire_block(w, blocks, (size_t)v);
    const uint32_t* indices = sparccl_wire_indices(w, block) + l->shardIndexPos;
    const uint8_t* values = sparccl_wire_values(w, block, l->shardValuePos);
    for (q = 0; q < l->shardK; q++)
      S[indices[q] - l->shardOffset] += sparccl_load(values, q, comm->config.wireType);
  }
}

/* Step 3: the column allgather, the shards' sums, their outputs (EF21's H not yet written:
 * the new H's value, from a copy) and skip flags into this rank's node block. */
static sparcclResult_t columnExchange(sparcclComm_t comm, const sparcclLayerSet_t* set, int dense,
                                      int op, sparcclCallCheck_t check, const Scratch* s,
                                      const char* caller) {
  const sparcclTopology_t* t = comm->transport->topology;
  const sparcclWire_t w = dense ? denseColumn(comm, set) : set->column;
  const sparcclWire_t* g = &set->nodeGather;
  const float n = (float)comm->nranks;
  size_t i, p;
  sparcclResult_t res;
  clearChecks((size_t)t->nodes, s->columnIn, &w);
  res = t->column->allgather(t->column, s->columnOut, s->columnIn, w.blockBytes);
  if (res == sparcclSuccess) res = verifyColumn(comm, set, dense, &w, s->columnIn, check, caller);
  memset(s->gatherOut, 0, g->blockBytes);
  *sparccl_wire_check(g, s->gatherOut) = check;
  for (i = 0; res == sparcclSuccess && i < set->nlayers; i++) {
    const sparcclLayer_t* l = &set->layers[i];
    float* S = s->sums + l->shardPos;
    float* out = sparccl_wire_dense(g, s->gatherOut) + l->shardPos;
    if (l->flagged && sparccl_wire_any_flag(&w, s->columnIn, (uint32_t)t->nodes, l->flagPos)) {
      sparccl_wire_flags(g, s->gatherOut)[l->flagPos] = 1;
      continue;
    }
    columnSum(comm, l, dense, &w, s->columnIn, S);
    for (p = 0; p < l->shardCount; p++) {
      float H = l->H != NULL ? l->H[p] : 0.0f;
      out[p] = sparccl_layer_output(op, n, S[p], l->H != NULL ? &H : NULL, dense);
    }
  }
  return res;
}

/* Step 4: every local rank's shard outputs and flags. */
static sparcclResult_t nodeGather(sparcclComm_t comm, const sparcclLayerSet_t* set,
                                  sparcclCallCheck_t check, const Scratch* s, const char* caller) {
  const sparcclTopology_t* t = comm->transport->topology;
  const sparcclWire_t* g = &set->nodeGather;
  sparcclResult_t res;
  clearChecks((size_t)t->perNode, s->gatherIn, g);
  res = t->node->allgather(t->node, s->gatherOut, s->gatherIn, g->blockBytes);
  if (res == sparcclSuccess)
    res = sparcclVerifyChecksOf(comm, t->perNode, s->gatherIn, g, check, "node ", caller);
  return res;
}

/* This rank's shard state after a completed layer (11.2, SPEC 9 for a dense call): the
 * update of decompress.c (or the dense call's h <- G, u <- x) on the view, then H. */
static void updateShard(sparcclComm_t comm, const sparcclLayerSet_t* set, sparcclLayer_t* l,
                        int dense, int op, const Scratch* s) {
  const sparcclGroup_t view = columnGroup(set, &set->column);
  const float m = sparccl_call_values(&comm->config, comm->rank).momentumFactor;
  const float* G = s->nodeSum + l->shardPos;
  const float* S = s->sums + l->shardPos;
  sparcclLayer_t v = shardView(l);
  uint32_t* indices = sparccl_wire_indices(&set->column, s->columnOut) + l->shardIndexPos;
  size_t p;
  if (dense) {
    for (p = 0; (l->h != NULL || l->momentum != NULL) && p < l->shardCount; p++)
      sparccl_dense_state(G[p], l->h != NULL ? &l->h[p] : NULL,
                          l->momentum != NULL ? &l->momentum[p] : NULL, m);
    if (l->flagged) l->step++;
  } else if (l->flagged) {
    for (p = 0; l->sparse && p < l->shardK; p++) indices[p] -= (uint32_t)l->shardOffset;
    (void)sparcclUpdateState(comm, &view, &v, G, SPARCCL_DT_FLOAT32, s->columnOut, NULL);
    l->step = v.step;
    l->havePrevGrad = v.havePrevGrad;
  }
  for (p = 0; l->H != NULL && p < l->shardCount; p++)
    (void)sparccl_layer_output(op, (float)comm->nranks, S[p], &l->H[p], dense);
}

/* A layer's output from the gathered shard outputs, in element order (the norm's too). */
static void writeLayer(sparcclComm_t comm, const sparcclLayerSet_t* set, const sparcclLayer_t* l,
                       const Scratch* s, void* out, int dtype, sparccl_blocked_sum_t* norm) {
  const sparcclTopology_t* t = comm->transport->topology;
  const sparcclWire_t* g = &set->nodeGather;
  int wantNorm = comm->config.restartRatio > 0.0, j;
  size_t e = 0, p;
  for (j = 0; j < t->perNode; j++) {
    const float* o = sparccl_wire_dense(g, sparccl_wire_block(g, s->gatherIn, (size_t)j)) + s->cursors[j];
    size_t n = shardSize(l->count, j, t->perNode);
    for (p = 0; p < n; p++, e++) {
      if (wantNorm) sparccl_blocked_sum_add(norm, (double)o[p] * (double)o[p]);
      sparccl_store(out, e, dtype, o[p]);
    }
    s->cursors[j] += n;
  }
}

/* After every rank agreed: per layer the skip rule (any shard's flag), the shard's state
 * and the output; then the call's epilogue. */
static void finish(sparcclComm_t comm, sparcclLayerSet_t* set, int dense, void* recv, int dtype,
                   int op, size_t bytesSent, const Scratch* s, const char* caller) {
  const sparcclTopology_t* t = comm->transport->topology;
  const sparcclWire_t* g = &set->nodeGather;
  size_t dsize = sparccl_dtype_size(dtype), i;
  int completed = 1, j;
  sparccl_blocked_sum_t norm;
  sparccl_blocked_sum_init(&norm);
  for (j = 0; j < t->perNode; j++) s->cursors[j] = 0;
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    void* out = (uint8_t*)recv + l->offset * dsize;
    if (l->flagged && sparccl_wire_any_flag(g, s->gatherIn, (uint32_t)t->perNode, l->flagPos)) {
      for (j = 0; j < t->perNode; j++) s->cursors[j] += shardSize(l->count, j, t->perNode);
      sparcclSkipLayer(comm, l, out, dtype, &norm, caller);
      completed = 0;
      continue;
    }
    updateShard(comm, set, l, dense, op, s);
    writeLayer(comm, set, l, s, out, dtype, &norm);
  }
  sparcclEndCall(comm, set, dtype, completed, sparccl_blocked_sum_result(&norm), bytesSent);
}

/* One call: the three exchanges always run on every rank (so that a refusal on one node
 * never leaves another waiting), then every rank agrees before any state is written. */
sparcclResult_t sparcclHierarchicalAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set,
                                             const void* send, void* recv, int dtype, int op,
                                             const char* caller) {
  const sparcclTopology_t* t = comm->transport->topology;
  int dense = sparcclNextCallDense(comm, set);
  sparcclCallCheck_t check = sparcclCallCheck(comm, set, dtype, op,
                                              dense ? SPARCCL_CALL_DENSE : SPARCCL_CALL_SPARSE);
  size_t bytes, sent;
  Scratch s = scratchOf(comm, set, comm->hierScratch, &bytes);
  double t0 = sparcclSeconds(), t1, t2;
  sparcclResult_t res = nodeSum(comm, set, send, dtype, check, &s, caller), step;
  t1 = sparcclSeconds();
  if (res == sparcclSuccess) packColumn(comm, set, dense, check, &s);
  else memset(s.columnOut, 0, s.columnBytes);
  t2 = sparcclSeconds();
  step = columnExchange(comm, set, dense, op, check, &s, caller);
  if (res == sparcclSuccess) res = step;
  step = nodeGather(comm, set, check, &s, caller);
  if (res == sparcclSuccess) res = step;
  res = sparcclAgreeStatus(comm, res, sparcclInvalidUsage, caller, "complete the hierarchical exchange");
  if (res != sparcclSuccess) {
    comm->stats.refusedCalls++;
    WARN("%s: the hierarchical exchange failed or was refused; state unchanged, nothing written", caller);
    return res;
  }
  sent = (size_t)(t->perNode - 1) * set->nodeChunk.blockBytes +
         (dense ? denseColumn(comm, set) : set->column).blockBytes + set->nodeGather.blockBytes;
  comm->stats.compressSeconds += t2 - t1;
  comm->stats.exchangeSeconds += (t1 - t0) + (sparcclSeconds() - t2);
  t1 = sparcclSeconds();
  finish(comm, set, dense, recv, dtype, op, sent, &s, caller);
  comm->callSequence++;
  comm->stats.decompressSeconds += sparcclSeconds() - t1;
  return sparcclSuccess;
}
