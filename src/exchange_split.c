/* The split exchange on the host (docs/EXCHANGES.md 11.3, Ok-Topk's split and reduce): the
 * local top-k, at most C pairs per owner region by an alltoall, the rank-ordered reduce at
 * the owner, its K survivors by |R| (the rest into the owner's e) and an allgather of the
 * survivors with the 16 demand counts that place the next call's regions.  Dense layers
 * travel whole in the final block; dense calls are dense.c's (the allgather's semantics). */
#include <math.h>
#include <string.h>
#include "core.h"

#define SPLIT_BINS 16
typedef char boundsFitFloats[sizeof(uint32_t) == sizeof(float) ? 1 : -1];

sparcclResult_t sparcclSplitCheck(const sparcclTransport_t* transport, const sparcclConfig_t* c) {
  if (c->feedback == SPARCCL_FB_EF21) {
    WARN("sparcclCommCreate: exchange split does not support feedback ef21 (its replica H needs "
         "every rank's sent vector); use ef, scam, dgc or none");
    return sparcclInvalidArgument;
  }
  if (strcmp(transport->name, "mpi") != 0 || transport->alltoall == NULL) {
    WARN("sparcclCommCreate: exchange split is implemented on MPI host comms only (this comm's "
         "transport: %s); use SPARCCL_EXCHANGE=allgather", transport->name);
    return sparcclNotSupported;
  }
  if (c->compressor != SPARCCL_TOPK) {
    WARN("sparcclCommCreate: exchange split supports compressor topk only (here %s)",
         sparcclCompressorName(c->compressor));
    return sparcclNotSupported;
  }
  return sparcclSuccess;
}

/* C = ceil(splitSlack k / n), at most k (a rank never has more for one owner); K = ceil(k / n). */
void sparcclSplitLayOut(sparcclComm_t comm, sparcclLayerSet_t* set) {
  size_t n = (size_t)comm->nranks, i, ci = 0, cv = 0, fi = 0, fv = 0;
  size_t valueSize = sparccl_dtype_size(comm->config.wireType);
  set->splitFloats = 0;
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    double c = ceil(comm->config.splitSlack * (double)l->k / (double)n);
    if (!l->sparse) continue;
    l->splitC = c >= (double)l->k ? l->k : (size_t)c;
    l->splitK = (l->k + n - 1) / n;
    l->chunkIndexPos = ci; ci += 1 + l->splitC;
    l->chunkValuePos = cv; cv += l->splitC;
    l->finalIndexPos = fi; fi += 1 + SPLIT_BINS + l->splitK;
    l->finalValuePos = fv; fv += l->splitK;
    set->splitFloats += n + 1;
  }
  set->splitChunk = sparccl_wire_layout(ci, cv, valueSize, 0, set->nflags);
  set->splitFinal = sparccl_wire_layout(fi, fv, valueSize, set->denseCount, set->nflags);
}

void sparcclSplitAssign(sparcclComm_t comm, sparcclLayerSet_t* set) {
  float* at = set->stateMemory + set->stateFloats - set->splitFloats;
  size_t i;
  for (i = 0; i < set->nlayers; i++) {
    if (!set->layers[i].sparse) continue;
    set->layers[i].bounds = (uint32_t*)(void*)at;
    at += comm->nranks + 1;
  }
}

/* A key's first call, and after a restart: b_j = floor(j d / n). */
void sparcclSplitReset(sparcclComm_t comm, sparcclLayerSet_t* set) {
  size_t i, j, n = (size_t)comm->nranks;
  for (i = 0; i < set->nlayers; i++)
    for (j = 0; set->layers[i].sparse && j <= n; j++)
      set->layers[i].bounds[j] = (uint32_t)(j * set->layers[i].count / n);
}

/* The scratch of one call, carved from comm->hierScratch in this order. */
typedef struct {
  uint8_t *chunksOut, *chunksIn;   /* n chunks each */
  uint8_t *finalOut, *finalIn;     /* 1 and n final blocks */
  size_t* sent;                    /* per layer: the pairs this rank sent */
  uint32_t* bounds;                /* n + 1: the next call's boundaries */
} Scratch;

static Scratch scratchOf(sparcclComm_t comm, const sparcclLayerSet_t* set, uint8_t* base,
                         size_t* bytes) {
  size_t n = (size_t)comm->nranks, at = 0;
  Scratch s;
#define CARVE(field, type, size) (s.field = (type)(void*)((uintptr_t)base + at), at += sparccl_align16(size))
  CARVE(chunksOut, uint8_t*, n * set->splitChunk.blockBytes);
  CARVE(chunksIn, uint8_t*, n * set->splitChunk.blockBytes);
  CARVE(finalOut, uint8_t*, set->splitFinal.blockBytes);
  CARVE(finalIn, uint8_t*, n * set->splitFinal.blockBytes);
  CARVE(sent, size_t*, set->nlayers * sizeof(size_t));
  CARVE(bounds, uint32_t*, (n + 1) * sizeof(uint32_t));
#undef CARVE
  *bytes = at;
  return s;
}

size_t sparcclSplitScratch(sparcclComm_t comm, const sparcclLayerSet_t* set) {
  size_t bytes;
  (void)scratchOf(comm, set, NULL, &bytes);
  return bytes;
}

/* The c largest of m keys (ties to the lower position): each key becomes 1 (kept) or 0. */
static void keepLargest(sparcclComm_t comm, uint32_t* keys, size_t m, size_t c) {
  uint32_t hist[SPARCCL_RADIX_BINS];
  sparcclSelection_t sel;
  size_t t, ties;
  if (c >= m) {
    for (t = 0; t < m; t++) keys[t] = 1;
    return;
  }
  memset(hist, 0, sizeof(hist));
  for (t = 0; t < m; t++) hist[keys[t] >> (32 - SPARCCL_RADIX_BITS)]++;
  sel = sparcclSelect32(keys, m, c, hist, comm->candidates);
  for (t = 0, ties = sel.ties; t < m; t++)
    keys[t] = keys[t] > (uint32_t)sel.threshold ||
              (keys[t] == (uint32_t)sel.threshold && ties > 0 && ties--);
}

/* The key of a selected element i of a layer (SPEC 1: |x|, x the key input). */
static uint32_t keyOf(sparcclComm_t comm, const sparcclLayer_t* l, const void* send, int dtype,
                      uint32_t i) {
  const sparcclConfig_t* c = &comm->config;
  float g = sparccl_load(send, l->offset + i, dtype);
  float u = l->momentum != NULL ? l->momentum[i] : 0.0f;
  float e = l->error != NULL ? l->error[i] : 0.0f;
  g = sparccl_feedback_gradient(c->feedback, g, u, (float)c->momentum);
  return sparccl_key32(c->compressor, sparccl_key_input(c->feedback, g, e, 0.0f), 1.0f, 0);
}

/* A layer's count, indices and values in a chunk or final block. */
typedef struct { uint32_t* count; uint32_t* indices; uint8_t* values; } Pairs;
static Pairs chunkPairs(const sparcclLayerSet_t* set, const sparcclLayer_t* l, const uint8_t* block) {
  Pairs p;
  p.count = sparccl_wire_indices(&set->splitChunk, block) + l->chunkIndexPos;
  p.indices = p.count + 1;
  p.values = sparccl_wire_values(&set->splitChunk, block, l->chunkValuePos);
  return p;
}
static Pairs finalPairs(const sparcclLayerSet_t* set, const sparcclLayer_t* l, const uint8_t* block) {
  Pairs p;
  p.count = sparccl_wire_indices(&set->splitFinal, block) + l->finalIndexPos;
  p.indices = p.count + 1 + SPLIT_BINS; /* after the demand counts */
  p.values = sparccl_wire_values(&set->splitFinal, block, l->finalValuePos);
  return p;
}

/* Step 2 for one layer: the pairs of S in each owner's region, at most C of them by key; the
 * sent ones are compacted at the front of S's slots (the state update's view). */
static size_t splitLayer(sparcclComm_t comm, const sparcclLayerSet_t* set, const sparcclLayer_t* l,
                         const void* send, int dtype, uint8_t* own, const Scratch* s) {
  uint32_t* idx = sparcclLayerIndices(comm, &set->whole, l, own);
  uint8_t* val = sparccl_wire_values(&set->wire, own, l->valuePos);
  size_t vs = set->wire.valueSize, p0 = 0, p1, t, w = 0;
  uint32_t* keys = (uint32_t*)comm->keys;
  int j;
  for (j = 0; j < comm->nranks; j++) {
    Pairs out = chunkPairs(set, l, sparccl_wire_block(&set->splitChunk, s->chunksOut, (size_t)j));
    for (p1 = p0; p1 < l->k && idx[p1] < l->bounds[j + 1]; p1++)
      keys[p1 - p0] = keyOf(comm, l, send, dtype, idx[p1]);
    keepLargest(comm, keys, p1 - p0, l->splitC);
    for (t = p0; t < p1; t++) {
      if (!keys[t - p0]) continue;
      out.indices[*out.count] = idx[t];
      memcpy(out.values + (*out.count)++ * vs, val + t * vs, vs);
      idx[w] = idx[t];
      memmove(val + w++ * vs, val + t * vs, vs);
    }
    p0 = p1;
  }
  return w;
}

/* Step 2: every rank's chunk (the flags and the check in each); no state written. */
static void packChunks(sparcclComm_t comm, const sparcclLayerSet_t* set, const void* send, int dtype,
                       sparcclCallCheck_t check, const Scratch* s) {
  const sparcclWire_t* w = &set->splitChunk;
  const uint8_t* own = comm->sendBlock;
  size_t i, r, n = (size_t)comm->nranks;
  memset(s->chunksOut, 0, n * w->blockBytes);
  for (r = 0; r < n; r++) {
    uint8_t* chunk = sparccl_wire_block(w, s->chunksOut, r);
    memcpy(sparccl_wire_flags(w, chunk), sparccl_wire_flags(&set->wire, own), set->nflags * sizeof(uint32_t));
    *sparccl_wire_check(w, chunk) = check;
  }
  for (i = 0; i < set->nlayers; i++)
    s->sent[i] = set->layers[i].sparse ? splitLayer(comm, set, &set->layers[i], send, dtype,
                                                     comm->sendBlock, s) : 0;
}

/* Every pair in [low, high), ascending, at most cap of them. */
static int pairsValid(const Pairs* p, size_t cap, uint32_t low, uint32_t high) {
  return *p->count <= cap && sparcclIndicesValid(p->indices, *p->count, low, high);
}

/* One exchange's n received blocks (chunks: `final` 0; final blocks: 1): every check, then
 * per sparse layer count <= C (K) and indices ascending in the receiver's (sender's) region. */
static sparcclResult_t verifyPairs(sparcclComm_t comm, const sparcclLayerSet_t* set, int final,
                                   const uint8_t* blocks, sparcclCallCheck_t check, const char* caller) {
  const sparcclWire_t* w = final ? &set->splitFinal : &set->splitChunk;
  size_t i, r, me = (size_t)comm->rank;
  SPARCCLCHECK(sparcclVerifyChecks(comm, blocks, w, check, caller));
  for (r = 0; r < (size_t)comm->nranks; r++)
    for (i = 0; i < set->nlayers; i++) {
      const sparcclLayer_t* l = &set->layers[i];
      const uint8_t* block = sparccl_wire_block(w, blocks, r);
      size_t region = final ? r : me;
      Pairs p;
      if (!l->sparse) continue;
      p = final ? finalPairs(set, l, block) : chunkPairs(set, l, block);
      if (!pairsValid(&p, final ? l->splitK : l->splitC, l->bounds[region], l->bounds[region + 1])) {
        WARN("%s: rank %zu sent more than %s pairs or an index outside region %zu of layer %u, or "
             "out of order; refused, nothing written", caller, r, final ? "K" : "C", region, l->id);
        return sparcclInvalidUsage;
      }
    }
  return sparcclSuccess;
}

/* Step 2's alltoall (`final` 0) or step 6's allgather (1), the received slots' checks
 * zeroed first, then verified. */
static sparcclResult_t exchange(sparcclComm_t comm, const sparcclLayerSet_t* set, int final,
                                sparcclCallCheck_t check, const Scratch* s, const char* caller) {
  const sparcclWire_t* w = final ? &set->splitFinal : &set->splitChunk;
  uint8_t* in = final ? s->finalIn : s->chunksIn;
  sparcclTransport_t* t = comm->transport;
  sparcclResult_t res;
  size_t r;
  for (r = 0; r < (size_t)comm->nranks; r++)
    memset(sparccl_wire_check(w, sparccl_wire_block(w, in, r)), 0, SPARCCL_CALL_CHECK_BYTES);
  res = final ? t->allgather(t, s->finalOut, in, w->blockBytes)
              : t->alltoall(t, s->chunksOut, in, w->blockBytes);
  return res == sparcclSuccess ? verifyPairs(comm, set, final, in, check, caller) : res;
}

/* Step 4: R = +0.0f over this rank's region; R = R + sent_r' in rank order.  Returns 1 if
 * R holds a NaN or Inf (a finite input whose sum overflows). */
static int reduceRegion(sparcclComm_t comm, const sparcclLayerSet_t* set, const sparcclLayer_t* l,
                        const Scratch* s, float* R) {
  uint32_t lo = l->bounds[comm->rank], size = l->bounds[comm->rank + 1] - lo, t, finite = 1;
  int r;
  for (t = 0; t < size; t++) R[t] = +0.0f;
  for (r = 0; r < comm->nranks; r++) {
    Pairs p = chunkPairs(set, l, sparccl_wire_block(&set->splitChunk, s->chunksIn, (size_t)r));
    for (t = 0; t < *p.count; t++)
      R[p.indices[t] - lo] += sparccl_load(p.values, t, comm->config.wireType);
  }
  for (t = 0; t < size; t++) finite &= (uint32_t)sparccl_is_finite(R[t]);
  return !finite;
}

/* Bin m of region [b, b') starts at floor(b + m (b' - b) / 16) (11.3). */
static uint32_t binEdge(uint32_t b, uint32_t b1, uint32_t m) {
  return b + (uint32_t)((uint64_t)m * (b1 - b) / SPLIT_BINS);
}

/* The owner's 16 demand counts: the pairs it received, per bin of its region. */
static void countDemand(sparcclComm_t comm, const sparcclLayerSet_t* set, const sparcclLayer_t* l,
                        const Scratch* s, uint32_t* demand) {
  uint32_t lo = l->bounds[comm->rank], hi = l->bounds[comm->rank + 1], t, m;
  int r;
  for (r = 0; r < comm->nranks; r++) {
    Pairs p = chunkPairs(set, l, sparccl_wire_block(&set->splitChunk, s->chunksIn, (size_t)r));
    for (t = 0, m = 0; t < *p.count; t++) { /* ascending: the bin only moves right */
      while (m + 1 < SPLIT_BINS && binEdge(lo, hi, m + 1) <= p.indices[t]) m++;
      demand[m]++;
    }
  }
}

/* Step 5: the K survivors of |R| (ties low) and the demand counts into this rank's final
 * block; the dense layers' x (every rank's own) and the flags with them. */
static void packFinal(sparcclComm_t comm, const sparcclLayerSet_t* set, sparcclCallCheck_t check,
                      const Scratch* s) {
  const sparcclWire_t* w = &set->splitFinal;
  uint32_t* keys = (uint32_t*)comm->keys;
  size_t i, t;
  memset(s->finalOut, 0, w->blockBytes);
  *sparccl_wire_check(w, s->finalOut) = check;
  memcpy(sparccl_wire_dense(w, s->finalOut), sparccl_wire_dense(&set->wire, comm->sendBlock),
         set->denseCount * sizeof(float));
  for (i = 0; i < set->nlayers; i++) {
    const sparcclLayer_t* l = &set->layers[i];
    uint32_t* flag = sparccl_wire_flags(w, s->finalOut) + l->flagPos;
    uint32_t lo, size;
    Pairs p;
    if (l->flagged) *flag = sparccl_wire_any_flag(&set->splitChunk, s->chunksIn, (uint32_t)comm->nranks, l->flagPos);
    if (!l->sparse || *flag) continue;
    *flag = (uint32_t)reduceRegion(comm, set, l, s, comm->accumulator);
    if (*flag) continue;
    p = finalPairs(set, l, s->finalOut);
    countDemand(comm, set, l, s, p.count + 1);
    lo = l->bounds[comm->rank];
    size = l->bounds[comm->rank + 1] - lo;
    for (t = 0; t < size; t++) keys[t] = sparccl_key_magnitude(comm->accumulator[t]);
    keepLargest(comm, keys, size, l->splitK);
    for (t = 0; t < size; t++) {
      if (!keys[t]) continue;
      p.indices[*p.count] = lo + (uint32_t)t;
      sparccl_wire_store(p.values, (*p.count)++, comm->config.wireType, comm->accumulator[t]);
    }
  }
}

/* Step 5's state at the owner (after step 3's): e_i <- e_i + R_i off the survivors, and
 * e_i <- e_i + (R_i - wire(R_i)) at them; R recomputed from the received chunks. */
static void keepAtOwner(sparcclComm_t comm, const sparcclLayerSet_t* set, sparcclLayer_t* l,
                        const Scratch* s) {
  Pairs p = finalPairs(set, l, s->finalOut);
  uint32_t lo = l->bounds[comm->rank], size = l->bounds[comm->rank + 1] - lo, t, q = 0;
  float* R = comm->accumulator;
  if (l->error == NULL) return; /* none drops them (lossy) */
  (void)reduceRegion(comm, set, l, s, R);
  for (t = 0; t < size; t++) {
    float keep = R[t];
    if (q < *p.count && p.indices[q] == lo + t)
      keep = R[t] - sparccl_load(p.values, q++, comm->config.wireType);
    l->error[lo + t] += keep;
  }
}

/* The next call's boundaries from the n x 16 demand counts (identical on every rank). */
static void moveBounds(sparcclComm_t comm, const sparcclLayerSet_t* set, sparcclLayer_t* l,
                       const Scratch* s) {
  const uint64_t n = (uint64_t)comm->nranks;
  uint64_t total = 0, running = 0, j = 1;
  uint32_t o, m;
  for (o = 0; o < n; o++)
    for (m = 0; m < SPLIT_BINS; m++)
      total += finalPairs(set, l, sparccl_wire_block(&set->splitFinal, s->finalIn, o)).count[1 + m];
  if (total == 0) return;
  for (o = 0; o < n; o++) {
    const uint32_t* demand = finalPairs(set, l, sparccl_wire_block(&set->splitFinal, s->finalIn, o)).count + 1;
    for (m = 0; m < SPLIT_BINS; m++) {
      running += demand[m];
      for (; j < n && running >= (j * total + n - 1) / n; j++)
        s->bounds[j] = binEdge(l->bounds[o], l->bounds[o + 1], m);
    }
  }
  for (j = 1; j < n; j++) l->bounds[j] = s->bounds[j];
}

/* A layer's output: wire(R) at every owner's survivors, +0.0f elsewhere (sparse); the
 * rank-ordered sum of the x's (dense); then SUM or AVG, as sparcclWriteOutput writes (in
 * place for float32, after the layer's state has read its g). */
static void writeLayer(sparcclComm_t comm, const sparcclLayerSet_t* set, sparcclLayer_t* l,
                       const Scratch* s, void* out, int dtype, int op, sparccl_blocked_sum_t* norm) {
  const sparcclWire_t* w = &set->splitFinal;
  float* sum = dtype == sparcclFloat32 ? (float*)out : comm->accumulator;
  size_t t;
  int r;
  if (!l->sparse) {
    for (t = 0; t < l->count; t++)
      sum[t] = sparccl_rank_sum(w, s->finalIn, (uint32_t)comm->nranks, l->densePos + t);
  } else {
    for (t = 0; t < l->count; t++) sum[t] = +0.0f;
    for (r = 0; r < comm->nranks; r++) {
      Pairs p = finalPairs(set, l, sparccl_wire_block(w, s->finalIn, (size_t)r));
      for (t = 0; t < *p.count; t++) sum[p.indices[t]] = sparccl_load(p.values, t, comm->config.wireType);
    }
  }
  sparcclWriteOutput(comm, l, sum, out, dtype, op, 0, norm);
}

/* The pairs this rank received from the other ranks in both exchanges (stats). */
static unsigned long long pairsReceived(sparcclComm_t comm, const sparcclLayerSet_t* set,
                                        const Scratch* s) {
  unsigned long long pairs = 0;
  size_t i;
  int r;
  for (r = 0; r < comm->nranks; r++)
    for (i = 0; r != comm->rank && i < set->nlayers; i++)
      if (set->layers[i].sparse)
        pairs += *chunkPairs(set, &set->layers[i], sparccl_wire_block(&set->splitChunk, s->chunksIn, (size_t)r)).count +
                 *finalPairs(set, &set->layers[i], sparccl_wire_block(&set->splitFinal, s->finalIn, (size_t)r)).count;
  return pairs;
}

/* After every rank agreed: per layer the skip rule, the state (this rank's sent pairs, then
 * what it keeps as owner), the output and the next boundaries; then the epilogue. */
static void finish(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send, void* recv,
                   int dtype, int op, const Scratch* s, const char* caller) {
  size_t dsize = sparccl_dtype_size(dtype), i;
  int completed = 1;
  sparccl_blocked_sum_t norm;
  sparccl_blocked_sum_init(&norm);
  comm->stats.pairsReceived += pairsReceived(comm, set, s);
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    sparcclLayer_t v = *l;
    void* out = (uint8_t*)recv + l->offset * dsize;
    if (l->flagged && sparccl_wire_any_flag(&set->splitFinal, s->finalIn, (uint32_t)comm->nranks, l->flagPos)) {
      sparcclSkipLayer(comm, l, out, dtype, &norm, caller);
      completed = 0;
      continue;
    }
    if (l->flagged) {
      v.k = s->sent[i];
      (void)sparcclUpdateState(comm, &set->whole, &v, send, dtype, comm->sendBlock, NULL);
      l->step = v.step;
    }
    if (l->sparse) keepAtOwner(comm, set, l, s);
    writeLayer(comm, set, l, s, out, dtype, op, &norm);
    if (l->sparse) moveBounds(comm, set, l, s);
  }
  sparcclEndCall(comm, set, dtype, completed, sparccl_blocked_sum_result(&norm),
                 (size_t)(comm->nranks - 1) * set->splitChunk.blockBytes + set->splitFinal.blockBytes);
}

/* One call: both exchanges always run on every rank, then every rank agrees before any
 * state is written. */
sparcclResult_t sparcclSplitAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                                      void* recv, int dtype, int op, const char* caller) {
  sparcclCallCheck_t check;
  size_t bytes;
  Scratch s = scratchOf(comm, set, comm->hierScratch, &bytes);
  double t0 = sparcclSeconds(), t1, t2;
  sparcclResult_t res, step;
  if (sparcclNextCallDense(comm, set)) return sparcclDenseAllReduce(comm, set, send, recv, dtype, op, caller);
  check = sparcclCallCheck(comm, set, dtype, op, SPARCCL_CALL_SPARSE);
  sparcclCompressBlock(comm, &set->whole, send, dtype, check, comm->sendBlock);
  packChunks(comm, set, send, dtype, check, &s);
  t1 = sparcclSeconds();
  res = exchange(comm, set, 0, check, &s, caller);
  t2 = sparcclSeconds();
  if (res == sparcclSuccess) packFinal(comm, set, check, &s);
  else memset(s.finalOut, 0, set->splitFinal.blockBytes);
  step = exchange(comm, set, 1, check, &s, caller);
  if (res == sparcclSuccess) res = step;
  res = sparcclAgreeStatus(comm, res, sparcclInvalidUsage, caller, "complete the split exchange");
  if (res != sparcclSuccess) {
    comm->stats.refusedCalls++;
    WARN("%s: the split exchange failed or was refused; state unchanged, nothing written", caller);
    return res;
  }
  comm->stats.compressSeconds += t1 - t0;
  comm->stats.exchangeSeconds += sparcclSeconds() - t1;
  t1 = sparcclSeconds();
  finish(comm, set, send, recv, dtype, op, &s, caller);
  comm->callSequence++;
  comm->stats.decompressSeconds += sparcclSeconds() - t1;
  (void)t2;
  return sparcclSuccess;
}
