/* Warm-up's dense calls (SPEC 9): every layer sends its whole x exactly in float32; the
 * output is the rank-ordered float32 sum.  A ring (reduce-scatter + allgather of the shard
 * sums) where the transport has an alltoall, else an allgather of whole vectors: the same
 * bits (docs/ARCHITECTURE.md, "Dense calls"). */
#include <string.h>
#include "core.h"

int sparcclNextCallDense(sparcclComm_t comm, const sparcclLayerSet_t* set) {
  return set->calls < (uint64_t)comm->config.warmupSteps;
}

/* ------------------------------------------------------------ the allgather form */

sparcclWire_t sparcclDenseBlockWire(const sparcclLayerSet_t* set) {
  return sparccl_wire_floats(set->count, set->nflags);
}

size_t sparcclDenseBlockBytes(const sparcclLayerSet_t* set) {
  return sparcclDenseBlockWire(set).blockBytes;
}

/* Every layer's x at its offset in `values`, its flag (flagged layers) in `flags`. */
static void packInputs(sparcclComm_t comm, const sparcclLayerSet_t* set, const void* send,
                       int dtype, float* values, uint32_t* flags) {
  size_t i;
  for (i = 0; i < set->nlayers; i++) {
    const sparcclLayer_t* l = &set->layers[i];
    int nonfinite = sparcclDenseInput(comm, l, send, dtype, values + l->offset);
    if (l->flagged) flags[l->flagPos] = (uint32_t)nonfinite;
  }
}

void sparcclPackDenseBlock(sparcclComm_t comm, const sparcclLayerSet_t* set, const void* send,
                           int dtype, sparcclCallCheck_t check, uint8_t* block) {
  const sparcclWire_t w = sparcclDenseBlockWire(set);
  memset(block, 0, w.blockBytes);
  packInputs(comm, set, send, dtype, sparccl_wire_dense(&w, block), sparccl_wire_flags(&w, block));
  memcpy(sparccl_wire_check(&w, block), &check, sizeof(check));
}

/* The state a dense call changes (SPEC 9's table): ef21's h <- g, dgc's u <- its x; ef21's
 * H <- s / n is written with the output.  The layer's step counts, as in any call. */
static void updateDenseState(sparcclComm_t comm, sparcclLayer_t* l, const void* send, int dtype) {
  const void* grad = (const uint8_t*)send + l->offset * sparccl_dtype_size(dtype);
  const float m = sparccl_call_values(&comm->config, comm->rank).momentumFactor;
  size_t i;
  for (i = 0; (l->h != NULL || l->momentum != NULL) && i < l->count; i++)
    sparccl_dense_state(sparccl_load(grad, i, dtype), l->h != NULL ? &l->h[i] : NULL,
                        l->momentum != NULL ? &l->momentum[i] : NULL, m);
  if (l->flagged) l->step++;
}

/* Where rank-ordered sums and flags come from: the ring's gathered shards, or whole blocks. */
typedef struct {
  int ring;
  const uint8_t* blocks; /* ring: the gathered shard sums; else the gathered blocks */
  sparcclWire_t wire;    /* their layout */
  const uint8_t* flags;  /* where every rank's flags are: the chunks received, or blocks */
  sparcclWire_t flagWire;
  size_t chunk;          /* ring: elements of a shard */
} DenseSums;

/* Elements [offset, offset + count) of the buffer between a layer's contiguous floats and
 * the ring's shards (shard r: elements [r chunk, (r + 1) chunk), at shards + r stride). */
static void shardCopy(uint8_t* shards, size_t stride, size_t chunk, size_t offset, size_t count,
                      float* layer, int toShards) {
  size_t at = offset, end = offset + count;
  while (at < end) {
    size_t shard = at / chunk, within = at - shard * chunk;
    size_t n = chunk - within < end - at ? chunk - within : end - at;
    uint8_t* s = shards + shard * stride + within * sizeof(float);
    if (toShards) memcpy(s, layer + (at - offset), n * sizeof(float));
    else memcpy(layer + (at - offset), s, n * sizeof(float));
    at += n;
  }
}

static uint32_t layerSkipped(sparcclComm_t comm, const DenseSums* d, const sparcclLayer_t* l) {
  if (!l->flagged) return 0;
  return sparccl_wire_any_flag(&d->flagWire, d->flags, (uint32_t)comm->nranks, l->flagPos);
}

/* s of a layer's elements into sum: the ring's shard sums copied out, or summed here. */
static void layerSums(sparcclComm_t comm, const DenseSums* d, const sparcclLayer_t* l, float* sum) {
  size_t i;
  if (d->ring) {
    shardCopy((uint8_t*)d->blocks, d->wire.blockBytes, d->chunk, l->offset, l->count, sum, 0);
    return;
  }
  for (i = 0; i < l->count; i++)
    sum[i] = sparccl_rank_sum(&d->wire, d->blocks, (uint32_t)comm->nranks, l->offset + i);
}

/* After a verified exchange: per layer the skip rule, the state, the output; the epilogue. */
static void finishDense(sparcclComm_t comm, sparcclLayerSet_t* set, const DenseSums* d,
                        const void* send, void* recv, int dtype, int op, size_t bytesSent,
                        const char* caller) {
  size_t dsize = sparccl_dtype_size(dtype), i;
  int completed = 1;
  sparccl_blocked_sum_t norm;
  sparccl_blocked_sum_init(&norm);
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    void* out = (uint8_t*)recv + l->offset * dsize;
    if (layerSkipped(comm, d, l)) {
      sparcclSkipLayer(comm, l, out, dtype, &norm, caller);
      completed = 0;
      continue;
    }
    updateDenseState(comm, l, send, dtype); /* reads g before an in-place output */
    layerSums(comm, d, l, comm->accumulator);
    sparcclWriteOutput(comm, l, comm->accumulator, out, dtype, op, 1, &norm);
  }
  sparcclEndCall(comm, set, dtype, completed, sparccl_blocked_sum_result(&norm), bytesSent);
}

sparcclResult_t sparcclFinishDenseCall(sparcclComm_t comm, sparcclLayerSet_t* set,
                                       const void* send, void* recv, int dtype, int op,
                                       const uint8_t* blocks, sparcclCallCheck_t check,
                                       const char* caller) {
  DenseSums d;
  const sparcclWire_t w = sparcclDenseBlockWire(set);
  sparcclResult_t res = sparcclVerifyChecks(comm, blocks, &w, check, caller);
  if (res != sparcclSuccess) {
    comm->stats.refusedCalls++;
    return res;
  }
  memset(&d, 0, sizeof(d));
  d.blocks = d.flags = blocks;
  d.wire = d.flagWire = w;
  finishDense(comm, set, &d, send, recv, dtype, op, w.blockBytes, caller);
  return sparcclSuccess;
}

/* ------------------------------------------------------------ the ring */

typedef sparcclDenseRing_t Ring;

Ring sparcclDenseRingOf(sparcclComm_t comm, const sparcclLayerSet_t* set) {
  Ring r;
  size_t n = (size_t)comm->nranks;
  r.chunk = ((set->count + n - 1) / n + 3) & ~(size_t)3;
  r.scatter = sparccl_wire_floats(r.chunk, set->nflags);
  r.gather = sparccl_wire_floats(r.chunk, 0);
  return r;
}

size_t sparcclDenseRingBytes(sparcclComm_t comm, const sparcclLayerSet_t* set) {
  Ring r = sparcclDenseRingOf(comm, set);
  if (comm->transport == NULL || comm->transport->alltoall == NULL) return 0;
  return 2 * (size_t)comm->nranks * r.scatter.blockBytes +
         ((size_t)comm->nranks + 1) * r.gather.blockBytes;
}

/* The reduce-scatter's send chunks: this rank's x by shard, each with the flags and check. */
static void packChunks(sparcclComm_t comm, const sparcclLayerSet_t* set, const Ring* ring,
                       const void* send, int dtype, sparcclCallCheck_t check, uint8_t* chunks) {
  const sparcclWire_t* w = &ring->scatter;
  size_t n = (size_t)comm->nranks, q, i;
  uint32_t* flags = sparccl_wire_flags(w, chunks);
  memset(chunks, 0, n * w->blockBytes);
  for (i = 0; i < set->nlayers; i++) {
    const sparcclLayer_t* l = &set->layers[i];
    int nonfinite = sparcclDenseInput(comm, l, send, dtype, comm->accumulator);
    if (l->flagged) flags[l->flagPos] = (uint32_t)nonfinite;
    shardCopy(chunks, w->blockBytes, ring->chunk, l->offset, l->count, comm->accumulator, 1);
  }
  for (q = 0; q < n; q++) {
    uint8_t* c = sparccl_wire_block(w, chunks, q);
    if (q > 0) memcpy(sparccl_wire_flags(w, c), flags, sparccl_wire_flag_bytes(w));
    memcpy(sparccl_wire_check(w, c), &check, sizeof(check));
  }
}

/* This rank's shard: s = +0.0f, then s + x_r in rank order (SPEC 1). */
static void sumShard(sparcclComm_t comm, const Ring* ring, const uint8_t* chunks, uint8_t* out,
                     sparcclCallCheck_t check) {
  float* s = sparccl_wire_dense(&ring->gather, out);
  size_t j;
  for (j = 0; j < ring->chunk; j++)
    s[j] = sparccl_rank_sum(&ring->scatter, chunks, (uint32_t)comm->nranks, j);
  memcpy(sparccl_wire_check(&ring->gather, out), &check, sizeof(check));
}

static void clearChecks(int nranks, uint8_t* blocks, const sparcclWire_t* w) {
  int r;
  for (r = 0; r < nranks; r++)
    memset(sparccl_wire_check(w, sparccl_wire_block(w, blocks, (size_t)r)), 0, SPARCCL_CALL_CHECK_BYTES);
}

static sparcclResult_t ringAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                                     void* recv, int dtype, int op, sparcclCallCheck_t check,
                                     const char* caller) {
  Ring ring = sparcclDenseRingOf(comm, set);
  size_t n = (size_t)comm->nranks;
  uint8_t* scatterSend = comm->ringScratch;
  uint8_t* scatterRecv = scatterSend + n * ring.scatter.blockBytes;
  uint8_t* gatherSend = scatterRecv + n * ring.scatter.blockBytes;
  uint8_t* gatherRecv = gatherSend + ring.gather.blockBytes;
  DenseSums d;
  sparcclResult_t res;
  packChunks(comm, set, &ring, send, dtype, check, scatterSend);
  clearChecks(comm->nranks, scatterRecv, &ring.scatter);
  res = comm->transport->alltoall(comm->transport, scatterSend, scatterRecv, ring.scatter.blockBytes);
  /* Every rank received every rank's check, so every rank refuses alike (no hang below). */
  if (res == sparcclSuccess)
    res = sparcclVerifyChecks(comm, scatterRecv, &ring.scatter, check, caller);
  if (res != sparcclSuccess) {
    if (res == sparcclInvalidUsage) comm->stats.refusedCalls++; /* sizes or checks differ */
    return res;
  }
  memset(gatherSend, 0, ring.gather.blockBytes);
  sumShard(comm, &ring, scatterRecv, gatherSend, check);
  clearChecks(comm->nranks, gatherRecv, &ring.gather);
  SPARCCLCHECK(comm->transport->allgather(comm->transport, gatherSend, gatherRecv,
                                          ring.gather.blockBytes));
  res = sparcclVerifyChecks(comm, gatherRecv, &ring.gather, check, caller);
  if (res != sparcclSuccess) {
    comm->stats.refusedCalls++;
    return res;
  }
  memset(&d, 0, sizeof(d));
  d.ring = 1;
  d.blocks = gatherRecv;
  d.wire = ring.gather;
  d.flags = scatterRecv;
  d.flagWire = ring.scatter;
  d.chunk = ring.chunk;
  finishDense(comm, set, &d, send, recv, dtype, op,
              (n - 1) * (ring.scatter.blockBytes + ring.gather.blockBytes), caller);
  return sparcclSuccess;
}

sparcclResult_t sparcclDenseAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set,
                                      const void* send, void* recv, int dtype, int op,
                                      const char* caller) {
  double t0 = sparcclSeconds();
  sparcclCallCheck_t check = sparcclCallCheck(comm, set, dtype, op, SPARCCL_CALL_DENSE);
  sparcclResult_t res;
  if (comm->transport->alltoall != NULL) {
    res = ringAllReduce(comm, set, send, recv, dtype, op, check, caller);
  } else {
    const sparcclWire_t w = sparcclDenseBlockWire(set);
    sparcclPackDenseBlock(comm, set, send, dtype, check, comm->sendBlock);
    clearChecks(comm->nranks, comm->recvBlocks, &w);
    res = comm->transport->allgather(comm->transport, comm->sendBlock, comm->recvBlocks, w.blockBytes);
    if (res == sparcclSuccess)
      res = sparcclFinishDenseCall(comm, set, send, recv, dtype, op, comm->recvBlocks, check, caller);
  }
  if (res != sparcclSuccess) {
    WARN("%s: the dense exchange of key 0x%llx failed or was refused; state unchanged, nothing "
         "written", caller, (unsigned long long)set->key);
    return res;
  }
  comm->callSequence++;
  comm->stats.exchangeSeconds += sparcclSeconds() - t0; /* a dense call is its exchange */
  return sparcclSuccess;
}
