/* Comms and their registry of live handles; layer sets (keys, layouts, state). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "backend.h"

int (*sparcclIsDevicePointer)(const void* p) = NULL;

/* ------------------------------------------------------------ live-handle registry */
/* A handle is checked against this list before it is dereferenced (SPEC 2). */
static pthread_mutex_t registryLock = PTHREAD_MUTEX_INITIALIZER;
static sparcclComm_t* registry = NULL;
static size_t registryCount = 0, registryCap = 0;

static int registryAdd(sparcclComm_t comm) {
  int ok = 1;
  pthread_mutex_lock(&registryLock);
  if (registryCount == registryCap) {
    size_t cap = registryCap ? 2 * registryCap : 16;
    sparcclComm_t* grown = (sparcclComm_t*)realloc(registry, cap * sizeof(*grown));
    if (grown == NULL) ok = 0;
    else { registry = grown; registryCap = cap; }
  }
  if (ok) registry[registryCount++] = comm;
  pthread_mutex_unlock(&registryLock);
  return ok;
}

static void registryRemove(sparcclComm_t comm) {
  size_t i;
  pthread_mutex_lock(&registryLock);
  for (i = 0; i < registryCount; i++)
    if (registry[i] == comm) { registry[i] = registry[--registryCount]; break; }
  pthread_mutex_unlock(&registryLock);
}

int sparcclCommIsLive(sparcclComm_t comm) {
  size_t i;
  int live = 0;
  if (comm == NULL) return 0;
  pthread_mutex_lock(&registryLock);
  for (i = 0; i < registryCount && !live; i++) live = registry[i] == comm;
  pthread_mutex_unlock(&registryLock);
  return live;
}

sparcclResult_t sparcclCheckComm(sparcclComm_t comm, const char* caller) {
  if (!sparcclCommIsLive(comm)) {
    WARN("%s: comm %p is not a live sparccl comm (destroyed, or never created)", caller,
         (void*)comm);
    return sparcclInvalidUsage;
  }
  return sparcclSuccess;
}

/* ------------------------------------------------------------ creation, destruction */
/* The hierarchical exchange needs the nodes (MPI host comms); its per-shard state has no
 * whole-layer importance weights for the probe and solver steps, so the ImpK family runs
 * only with one rank per node; it is not pipelined (docs/EXCHANGES.md, status). */
static sparcclResult_t checkExchange(const sparcclTransport_t* transport, const sparcclConfig_t* c) {
  if (c->exchange != SPARCCL_EXCHANGE_ALLGATHER && c->pipelineBytes > 0) {
    WARN("sparcclCommCreate: exchange %s is not pipelined; unset SPARCCL_PIPELINE_BYTES "
         "(pipelineBytes %zu)", sparccl_exchange_name(c->exchange), c->pipelineBytes);
    return sparcclNotSupported;
  }
  if (c->exchange == SPARCCL_EXCHANGE_SPLIT) return sparcclSplitCheck(transport, c);
  if (!sparccl_exchange_sharded(c->exchange)) return sparcclSuccess;
  if (transport->topology == NULL) {
    WARN("sparcclCommCreate: exchange hierarchical is implemented on MPI host comms only "
         "(this comm's transport: %s); use SPARCCL_EXCHANGE=allgather", transport->name);
    return sparcclNotSupported;
  }
  if (transport->topology->perNode > 1 && sparccl_has_weights(c->compressor)) {
    WARN("sparcclCommCreate: exchange hierarchical with %d ranks per node does not support "
         "compressor %s (importance weights per shard); use topk or randk", transport->topology->perNode,
         sparcclCompressorName(c->compressor));
    return sparcclNotSupported;
  }
  return sparcclSuccess;
}

sparcclResult_t sparcclCommCreate(sparcclComm_t* out, sparcclTransport_t* transport,
                                  const sparcclConfig_t* config) {
  sparcclComm_t comm;
  SPARCCLCHECK(checkExchange(transport, config));
  comm = (sparcclComm_t)calloc(1, sizeof(*comm));
  if (comm == NULL) {
    WARN("sparcclCommCreate: out of memory");
    return sparcclSystemError;
  }
  comm->config = *config;
  comm->backend = &sparcclHostBackend; /* a device comm's creation sets its own */
  comm->transport = transport;
  comm->rank = transport->rank;
  comm->nranks = transport->nranks;
  comm->lossHistory = (double*)calloc((size_t)config->restartLag + 1, sizeof(double));
  if (comm->lossHistory == NULL || !registryAdd(comm)) {
    free(comm->lossHistory);
    free(comm);
    WARN("sparcclCommCreate: out of memory");
    return sparcclSystemError;
  }
  INFO("comm %p rank %d nranks %d transport %s: %s + %s, density %g, wire %d, min sparse %zu",
       (void*)comm, comm->rank, comm->nranks, transport->name,
       sparcclCompressorName(config->compressor), sparcclFeedbackName(config->feedback),
       config->density, config->wireType, config->minSparseCount);
  *out = comm;
  return sparcclSuccess;
}

static void freeSet(sparcclLayerSet_t* set) {
  if (set == NULL) return;
  sparcclFreePending(set);
  free(set->layers);
  free(set->groups);
  free(set->stateMemory);
  free(set->normHistory);
  free(set);
}

SPARCCL_API sparcclResult_t sparcclCommDestroy(sparcclComm_t comm) {
  size_t i;
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclCommDestroy"));
  SPARCCLCHECK(comm->backend->quiesce(comm, "sparcclCommDestroy"));
  registryRemove(comm);
  for (i = 0; i < comm->nsets; i++) {
    comm->backend->freeSet(comm, comm->sets[i]);
    freeSet(comm->sets[i]);
  }
  comm->backend->destroy(comm);
  free(comm->sets);
  free(comm->sendBlock);
  free(comm->recvBlocks);
  free(comm->ringScratch);
  free(comm->keys);
  free(comm->candidates);
  free(comm->accumulator);
  free(comm->sharedIndices);
  free(comm->hierScratch);
  free(comm->lossHistory);
  if (comm->transport != NULL && comm->transport->destroy != NULL)
    comm->transport->destroy(comm->transport);
  INFO("comm %p destroyed", (void*)comm);
  free(comm);
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclCommGetConfig(sparcclComm_t comm, sparcclConfig_t* config) {
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclCommGetConfig"));
  if (config == NULL) {
    WARN("sparcclCommGetConfig: config is NULL");
    return sparcclInvalidArgument;
  }
  *config = comm->config;
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclCommCount(sparcclComm_t comm, int* count) {
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclCommCount"));
  if (count == NULL) {
    WARN("sparcclCommCount: count is NULL");
    return sparcclInvalidArgument;
  }
  *count = comm->nranks;
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclCommUserRank(sparcclComm_t comm, int* rank) {
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclCommUserRank"));
  if (rank == NULL) {
    WARN("sparcclCommUserRank: rank is NULL");
    return sparcclInvalidArgument;
  }
  *rank = comm->rank;
  return sparcclSuccess;
}

/* ------------------------------------------------------------ layer sets */
sparcclLayerSet_t* sparcclFindSet(sparcclComm_t comm, int tagged, uint64_t key, size_t count) {
  size_t i;
  for (i = 0; i < comm->nsets; i++) {
    sparcclLayerSet_t* s = comm->sets[i];
    if (s->tagged == tagged && s->key == key && (tagged || s->count == count)) return s;
  }
  return NULL;
}

static int sameLayout(const sparcclLayerSet_t* set, size_t count, size_t nlayers,
                      const size_t* counts) {
  size_t i;
  if (set->count != count) return 0;
  if (counts == NULL) return set->nlayers == 1;
  if (set->nlayers != nlayers) return 0;
  for (i = 0; i < nlayers; i++)
    if (set->layers[i].count != counts[i]) return 0;
  return 1;
}


static void computeStats(sparcclComm_t comm) {
  size_t i, j;
  unsigned long long sparse = 0, dense = 0, bytes = 0;
  size_t keyBytes = comm->config.compressor == sparcclImpKRandom ? 8 : 4;
  for (i = 0; i < comm->nsets; i++) {
    const sparcclLayerSet_t* s = comm->sets[i];
    for (j = 0; j < s->nlayers; j++) s->layers[j].sparse ? sparse++ : dense++;
    bytes += s->stateFloats * sizeof(float) + (size_t)(comm->config.restartLag + 1) * sizeof(double);
  }
  bytes += comm->scratchCap * (keyBytes + 8) + comm->blockCap * (size_t)(comm->nranks + 1) +
           comm->sharedCap * sizeof(uint32_t) + comm->ringCap + comm->hierCap;
  comm->stats.layerSets = comm->nsets;
  comm->stats.layersSparse = sparse;
  comm->stats.layersDense = dense;
  comm->stats.stateBytes = bytes;
}

void sparcclSetResetState(sparcclComm_t comm, sparcclLayerSet_t* set) {
  size_t i, j;
  (void)comm;
  for (i = 0; i < set->nlayers; i++) {
    const sparcclStateArrays_t s = sparcclLayerState(&set->layers[i]);
    for (j = 0; j < set->layers[i].shardCount; j++) sparccl_state_reset(&s, j);
  }
  if (set->splitFloats) sparcclSplitReset(comm, set);
}

/* The float32 arrays per element a layer keeps (the method tables' state columns, SPEC 1, 7,
 * 9): a sparse layer all its feedback's and compressor's; a dense one only dgc's u. */
static size_t stateArrays(const sparcclConfig_t* c, int sparse) {
  unsigned feedback = sparccl_feedback_props(c->feedback);
  size_t n = 0;
  if (!sparse) return (feedback & SPARCCL_F_SMALL_STATE) && (feedback & SPARCCL_S_MOMENTUM);
  n += (feedback & SPARCCL_S_ERROR) ? 1 : 0;
  n += (feedback & SPARCCL_S_H) ? 2 : 0;
  n += (feedback & SPARCCL_S_MOMENTUM) ? 1 : 0;
  if (sparccl_has_weights(c->compressor))
    n += c->importance == sparcclImportanceOnline ? 2 : 1;
  return n;
}

/* Each layer's place: its offset, k, and positions in the wire block's sections. */
static void layOutLayers(const sparcclConfig_t* c, sparcclLayerSet_t* set, size_t count,
                         const size_t* counts) {
  size_t i, offset = 0;
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    l->offset = offset;
    l->count = counts ? counts[i] : count;
    l->shardCount = l->count; /* the whole layer, unless the exchange shards it */
    offset += l->count;
    l->sparse = l->count >= c->minSparseCount;
    if (l->sparse) {
      l->k = sparccl_layer_k(l->count, c->density);
      l->sharedSet = c->compressor == sparcclRandK && c->sharedRandomness;
      if (!l->sharedSet) { l->indexPos = set->indexCount; set->indexCount += l->k; }
      l->valuePos = set->valueCount;
      set->valueCount += l->k;
      l->flagPos = set->nsparse++;
      if (l->count > set->maxSparseLayer) set->maxSparseLayer = l->count;
    } else {
      l->k = l->count;
      l->densePos = set->denseCount;
      set->denseCount += l->count;
    }
    if (l->count > set->maxLayer) set->maxLayer = l->count;
  }
}

/* The wire block's section sizes, the flags, the call check's offset. */
static void layOutBlock(const sparcclConfig_t* c, sparcclLayerSet_t* set) {
  size_t i;
  /* dgc's dense layers keep u, so they are flagged too: their flags follow the sparse ones. */
  set->nflags = set->nsparse;
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    l->flagged = l->sparse || (sparccl_feedback_props(c->feedback) & SPARCCL_F_SMALL_STATE) != 0;
    if (l->flagged && !l->sparse) l->flagPos = set->nflags++;
  }
  set->wire = sparccl_wire_layout(set->indexCount, set->valueCount, sparccl_dtype_size(c->wireType),
                                  set->denseCount, set->nflags);
}

/* One allocation for every layer's state arrays (over its shard), handed out in layer order. */
static sparcclResult_t assignState(const sparcclConfig_t* c, sparcclLayerSet_t* set) {
  size_t i, cursor = 0;
  set->stateFloats = set->splitFloats; /* the split exchange's boundaries, at the end */
  for (i = 0; i < set->nlayers; i++)
    set->stateFloats += stateArrays(c, set->layers[i].sparse) * set->layers[i].shardCount;
  if (set->stateFloats) {
    set->stateMemory = (float*)calloc(set->stateFloats, sizeof(float));
    if (set->stateMemory == NULL) return sparcclSystemError;
  }
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    int weights = l->sparse && sparccl_has_weights(c->compressor);
#define TAKE(field) (l->field = set->stateMemory + cursor, cursor += l->shardCount)
    if (l->sparse && sparccl_has_error(c->feedback)) TAKE(error);
    if (l->sparse && (sparccl_feedback_props(c->feedback) & SPARCCL_S_H)) { TAKE(h); TAKE(H); }
    if (l->flagged && sparccl_has_momentum(c->feedback)) TAKE(momentum);
    if (weights) TAKE(importance);
    if (weights && c->importance == sparcclImportanceOnline) TAKE(prevGrad);
#undef TAKE
  }
  return sparcclSuccess;
}

/* Build a set's layers, wire layout and state; no collective, no id yet. */
static sparcclResult_t buildSet(sparcclComm_t comm, int tagged, uint64_t key, size_t count,
                                size_t nlayers, const size_t* counts, sparcclLayerSet_t** out) {
  const sparcclConfig_t* c = &comm->config;
  sparcclLayerSet_t* set = (sparcclLayerSet_t*)calloc(1, sizeof(*set));
  if (set == NULL) return sparcclSystemError;
  set->tagged = tagged;
  set->key = key;
  set->count = count;
  set->nlayers = counts ? nlayers : 1;
  set->layers = (sparcclLayer_t*)calloc(set->nlayers, sizeof(sparcclLayer_t));
  set->normHistory = (double*)calloc((size_t)c->restartLag + 1, sizeof(double));
  if (set->layers == NULL || set->normHistory == NULL) { freeSet(set); return sparcclSystemError; }
  layOutLayers(c, set, count, counts);
  layOutBlock(c, set);
  if (sparccl_exchange_sharded(c->exchange)) sparcclHierarchicalLayOut(comm, set);
  if (c->exchange == SPARCCL_EXCHANGE_SPLIT) sparcclSplitLayOut(comm, set);
  if (sparcclLayOutGroups(c, set) != sparcclSuccess || assignState(c, set) != sparcclSuccess) {
    freeSet(set);
    return sparcclSystemError;
  }
  if (c->exchange == SPARCCL_EXCHANGE_SPLIT) sparcclSplitAssign(comm, set);
  sparcclSetResetState(comm, set);
  *out = set;
  return sparcclSuccess;
}

/* A live key: a call without a layout uses whatever the key was registered with; a count
 * that is not the sum of the key's layout is a bad argument (SPEC 2), not a new layout. */
static sparcclResult_t checkLiveSet(const sparcclLayerSet_t* set, int tagged, uint64_t key,
                                    size_t count, size_t nlayers, const size_t* counts,
                                    const char* caller) {
  if (counts == NULL && set->count != count) {
    WARN("%s: count %zu is not the sum of the layout of %s0x%llx (%zu elements in %zu layers)",
         caller, count, tagged ? "tag " : "buffer ", (unsigned long long)key, set->count,
         set->nlayers);
    return sparcclInvalidArgument;
  }
  if ((counts != NULL || set->count != count) && !sameLayout(set, count, nlayers, counts)) {
    WARN("%s: key %s0x%llx is live with another layout (%zu layers, %zu elements); release it first",
         caller, tagged ? "tag " : "buffer ", (unsigned long long)key, set->nlayers, set->count);
    return sparcclInvalidUsage;
  }
  return sparcclSuccess;
}

static sparcclResult_t growSets(sparcclComm_t comm, const char* caller) {
  if (comm->nsets == comm->setsCap) {
    size_t cap = comm->setsCap ? 2 * comm->setsCap : 8;
    sparcclLayerSet_t** grown = (sparcclLayerSet_t**)realloc(comm->sets, cap * sizeof(*grown));
    if (grown == NULL) { WARN("%s: out of memory", caller); return sparcclSystemError; }
    comm->sets = grown;
    comm->setsCap = cap;
  }
  return sparcclSuccess;
}

/* Every rank must have declared the same layout under the same config (SPEC 2): sets
 * set->fingerprint and compares every rank's; the set is the caller's to free on failure. */
static sparcclResult_t agreeFingerprint(sparcclComm_t comm, sparcclLayerSet_t* set, int tagged,
                                        uint64_t key, size_t count, const char* caller) {
  uint64_t fingerprint = sparcclConfigFingerprint(&comm->config), *all;
  sparcclResult_t res;
  size_t i;
  const sparcclTopology_t* topology = comm->transport->topology;
  fingerprint = sparcclHash64(fingerprint, &count, sizeof(count));
  if (sparccl_exchange_sharded(comm->config.exchange)) { /* N and L: the shards (11.2) */
    fingerprint = sparcclHash64(fingerprint, &topology->nodes, sizeof(topology->nodes));
    fingerprint = sparcclHash64(fingerprint, &topology->perNode, sizeof(topology->perNode));
  }
  fingerprint = sparcclHash64(fingerprint, &set->nlayers, sizeof(set->nlayers));
  for (i = 0; i < set->nlayers; i++)
    fingerprint = sparcclHash64(fingerprint, &set->layers[i].count, sizeof(size_t));
  set->fingerprint = fingerprint;
  if (tagged) fingerprint = sparcclHash64(fingerprint, &key, sizeof(key));
  all = (uint64_t*)malloc(sizeof(uint64_t) * (size_t)comm->nranks);
  if (all == NULL) return sparcclSystemError;
  res = comm->transport->allgather(comm->transport, &fingerprint, all, sizeof(uint64_t));
  if (res != sparcclSuccess) WARN("%s: the layout fingerprint exchange failed", caller);
  for (i = 0; res == sparcclSuccess && i < (size_t)comm->nranks; i++) {
    if (all[i] != fingerprint) {
      WARN("%s: rank %zu declared another layout or config than rank %d for a %zu-element "
           "buffer of %zu layers (fingerprints %016llx vs %016llx); refused on every rank",
           caller, i, comm->rank, count, set->nlayers, (unsigned long long)all[i],
           (unsigned long long)fingerprint);
      res = sparcclInvalidUsage;
    }
  }
  free(all);
  return res;
}

sparcclResult_t sparcclGetSet(sparcclComm_t comm, int tagged, uint64_t key, size_t count,
                              size_t nlayers, const size_t* counts, const char* caller,
                              sparcclLayerSet_t** out) {
  sparcclLayerSet_t* set = sparcclFindSet(comm, tagged, key, count);
  sparcclResult_t res;
  size_t i;
  if (set != NULL) {
    SPARCCLCHECK(checkLiveSet(set, tagged, key, count, nlayers, counts, caller));
    *out = set;
    return sparcclSuccess;
  }
  SPARCCLCHECK(growSets(comm, caller));
  res = buildSet(comm, tagged, key, count, nlayers, counts, &set);
  if (res != sparcclSuccess) { WARN("%s: out of memory creating the state of %zu elements", caller, count); return res; }
  res = agreeFingerprint(comm, set, tagged, key, count, caller);
  if (res != sparcclSuccess) { freeSet(set); return res; }
  /* Ids before the backend's state is made: the device kernels' Philox counters need them. */
  for (i = 0; i < set->nlayers; i++) set->layers[i].id = comm->nextLayerId + (uint32_t)i;
  res = comm->backend->createSet(comm, set);
  if (res != sparcclSuccess)
    WARN("%s: out of memory for the state of a %zu-element buffer", caller, count);
  /* Every rank learns whether every rank could allocate: one that could not must not leave
   * the others waiting in the call's exchange. */
  res = sparcclAgreeStatus(comm, res, sparcclRemoteError, caller, "allocate a new key's state");
  if (res != sparcclSuccess) {
    comm->backend->freeSet(comm, set);
    freeSet(set);
    return res;
  }
  comm->nextLayerId += (uint32_t)set->nlayers;
  set->serial = comm->nextSetSerial++;
  comm->sets[comm->nsets++] = set;
  computeStats(comm);
  INFO("new layer set: %s 0x%llx, %zu elements in %zu layers (%zu sparse), block %zu bytes "
       "(dense %zu), state %zu bytes",
       tagged ? "tag" : "buffer", (unsigned long long)key, count, set->nlayers, set->nsparse,
       set->wire.blockBytes, count * 4, set->stateFloats * sizeof(float));
  *out = set;
  return sparcclSuccess;
}

static sparcclResult_t checkLayout(size_t nlayers, const size_t* counts, size_t* total,
                                   const char* caller) {
  size_t i;
  *total = 0;
  if (nlayers == 0 || counts == NULL) {
    WARN("%s: a layout needs at least one layer (nlayers %zu, counts %p)", caller, nlayers,
         (const void*)counts);
    return sparcclInvalidArgument;
  }
  for (i = 0; i < nlayers; i++) {
    if (counts[i] == 0 || counts[i] > UINT32_MAX) {
      WARN("%s: layer %zu has %zu elements; a layer holds 1 to 2^32-1", caller, i, counts[i]);
      return sparcclInvalidArgument;
    }
    if (*total + counts[i] < *total) {
      WARN("%s: layer counts overflow", caller);
      return sparcclInvalidArgument;
    }
    *total += counts[i];
  }
  return sparcclSuccess;
}

static sparcclResult_t registerLayout(sparcclComm_t comm, int tagged, uint64_t key,
                                      size_t nlayers, const size_t* counts, const char* caller) {
  size_t total;
  sparcclLayerSet_t* set;
  SPARCCLCHECK(sparcclCheckComm(comm, caller));
  if (!tagged && key == 0) {
    WARN("%s: buff is NULL", caller);
    return sparcclInvalidArgument;
  }
  SPARCCLCHECK(checkLayout(nlayers, counts, &total, caller));
  return sparcclGetSet(comm, tagged, key, total, nlayers, counts, caller, &set);
}

SPARCCL_API sparcclResult_t sparcclRegisterLayout(sparcclComm_t comm, const void* buff,
                                                  size_t nlayers, const size_t* counts) {
  return registerLayout(comm, 0, (uint64_t)(uintptr_t)buff, nlayers, counts,
                        "sparcclRegisterLayout");
}

SPARCCL_API sparcclResult_t sparcclRegisterLayoutTagged(sparcclComm_t comm, unsigned long long tag,
                                                        size_t nlayers, const size_t* counts) {
  return registerLayout(comm, 1, tag, nlayers, counts, "sparcclRegisterLayoutTagged");
}

static sparcclResult_t release(sparcclComm_t comm, int tagged, uint64_t key, size_t count,
                               const char* caller) {
  size_t i;
  sparcclLayerSet_t* set;
  SPARCCLCHECK(sparcclCheckComm(comm, caller));
  set = sparcclFindSet(comm, tagged, key, count);
  if (set == NULL) {
    WARN("%s: no state for %s 0x%llx (%zu elements)", caller, tagged ? "tag" : "buffer",
         (unsigned long long)key, count);
    return sparcclInvalidUsage;
  }
  SPARCCLCHECK(comm->backend->quiesce(comm, caller));
  for (i = 0; i < comm->nsets; i++)
    if (comm->sets[i] == set) {
      memmove(&comm->sets[i], &comm->sets[i + 1], (comm->nsets - i - 1) * sizeof(*comm->sets));
      comm->nsets--;
      break;
    }
  INFO("%s: released %s 0x%llx (%zu elements)", caller, tagged ? "tag" : "buffer",
       (unsigned long long)key, set->count);
  comm->backend->freeSet(comm, set);
  freeSet(set);
  computeStats(comm);
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclRelease(sparcclComm_t comm, const void* buff, size_t count) {
  return release(comm, 0, (uint64_t)(uintptr_t)buff, count, "sparcclRelease");
}

SPARCCL_API sparcclResult_t sparcclReleaseTagged(sparcclComm_t comm, unsigned long long tag) {
  return release(comm, 1, tag, 0, "sparcclReleaseTagged");
}

SPARCCL_API sparcclResult_t sparcclCommGetStats(sparcclComm_t comm, sparcclStats_t* stats) {
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclCommGetStats"));
  if (stats == NULL) {
    WARN("sparcclCommGetStats: stats is NULL");
    return sparcclInvalidArgument;
  }
  *stats = comm->stats;
  return comm->backend->stats(comm, stats);
}

SPARCCL_API sparcclResult_t sparcclScaleState(sparcclComm_t comm, float factor) {
  size_t i;
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclScaleState"));
  if (!sparccl_is_finite(factor)) {
    WARN("sparcclScaleState: factor %g is not finite", (double)factor);
    return sparcclInvalidArgument;
  }
  for (i = 0; i < comm->nsets; i++) SPARCCLCHECK(comm->backend->scale(comm, comm->sets[i], factor));
  return sparcclSuccess;
}
