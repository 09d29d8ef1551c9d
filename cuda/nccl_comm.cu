/*
 * Device comms over NCCL (SPEC 8): creation, the NCCL transport, layer-set device state,
 * and the table of device operations the host library calls (src/device.h).  After a key's
 * first call nothing here allocates or synchronises: every call is a fixed sequence of
 * kernels and one ncclAllGather on the caller's stream, so it can be captured in a graph.
 */
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include "device_set.cuh"
extern "C" {
#include "device.h"
#include "sparccl_nccl.h"
}

struct NcclTransport {
  ncclComm_t nccl;
  int owned;
  cudaStream_t stream; /* for the small host-data exchanges (fingerprints, load status) */
  void* scratch;
  size_t scratchBytes;
  int errorBuffers; /* SPARCCL_ERROR_BUFFERS: 2 (default) or 1 (device_set.cuh) */
  unsigned long long* callSequence; /* device memory: the comm's call sequence (SPEC 4) */
};

#define CUDACHECK(call, caller)                                                       \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      WARN("%s: %s failed: %s", caller, #call, cudaGetErrorString(e_));               \
      return sparcclUnhandledCudaError;                                               \
    }                                                                                 \
  } while (0)
#define NCCLCHECK(call, caller)                                                       \
  do {                                                                                \
    ncclResult_t n_ = (call);                                                         \
    if (n_ != ncclSuccess) {                                                          \
      WARN("%s: %s failed: %s", caller, #call, ncclGetErrorString(n_));               \
      return n_ == ncclSystemError ? sparcclSystemError : sparcclRemoteError;         \
    }                                                                                 \
  } while (0)

/* Small host buffers through NCCL: staged through device scratch, synchronising.  Used
 * only at layout creation, load and loss reports -- never on a call's hot path. */
static sparcclResult_t ncclHostAllgather(sparcclTransport_t* self, const void* send, void* recv,
                                         size_t bytes) {
  NcclTransport* t = (NcclTransport*)self->impl;
  size_t need = bytes * (size_t)(self->nranks + 1);
  if (need > t->scratchBytes) {
    void* grown = NULL;
    CUDACHECK(cudaMalloc(&grown, need), "allgather");
    if (t->scratch) cudaFree(t->scratch);
    t->scratch = grown;
    t->scratchBytes = need;
  }
  uint8_t* dsend = (uint8_t*)t->scratch;
  uint8_t* drecv = dsend + bytes;
  CUDACHECK(cudaMemcpyAsync(dsend, send, bytes, cudaMemcpyHostToDevice, t->stream), "allgather");
  NCCLCHECK(ncclAllGather(dsend, drecv, bytes, ncclUint8, t->nccl, t->stream), "allgather");
  CUDACHECK(cudaMemcpyAsync(recv, drecv, bytes * (size_t)self->nranks, cudaMemcpyDeviceToHost, t->stream), "allgather");
  CUDACHECK(cudaStreamSynchronize(t->stream), "allgather");
  return sparcclSuccess;
}

static void ncclTransportDestroy(sparcclTransport_t* self) {
  NcclTransport* t = (NcclTransport*)self->impl;
  if (t->scratch) cudaFree(t->scratch);
  if (t->callSequence) cudaFree(t->callSequence);
  if (t->stream) cudaStreamDestroy(t->stream);
  if (t->owned) ncclCommDestroy(t->nccl);
  free(t);
  free(self);
}

static NcclTransport* nccl(sparcclComm_t comm) { return (NcclTransport*)comm->transport->impl; }

/* ------------------------------------------------------------ layer sets */

KernelArgs sparcclKernelArgs(sparcclComm_t comm, const sparcclLayerSet_t* set, int dtype, int op) {
  const sparcclConfig_t* c = &comm->config;
  const DeviceSet* ds = (const DeviceSet*)set->device;
  KernelArgs a;
  memset(&a, 0, sizeof(a));
  static_cast<DeviceArrays&>(a) = *ds;
  a.nlayers = ds->nlayers;
  a.nsparse = ds->nsparse;
  a.nranks = (uint32_t)comm->nranks;
  a.rank = c->sharedRandomness ? 0u : (uint32_t)comm->rank;
  a.commRank = (uint32_t)comm->rank;
  a.compressor = c->compressor;
  a.feedback = c->feedback;
  a.wireType = c->wireType;
  a.dtype = dtype;
  a.op = op;
  a.online = c->importance == sparcclImportanceOnline;
  a.seed = c->seed;
  a.rate = sparccl_importance_rate(c->importanceEta, c->importanceGamma);
  a.low = (float)c->importanceLow;
  a.high = (float)c->importanceHigh;
  a.restartRatio = c->restartRatio;
  a.restartEvery = c->restartEvery;
  a.restartLag = c->restartLag;
  a.count = set->count;
  a.valueCount = set->valueCount;
  a.indexBytes = set->indexBytes;
  a.valueBytes = set->valueBytes;
  a.denseBytes = set->denseBytes;
  a.checkOffset = set->checkOffset;
  a.blockBytes = set->blockBytes;
  a.callSequence = nccl(comm)->callSequence;
  a.checkFingerprint = sparcclCallCheck(comm, set, dtype, op, SPARCCL_CALL_SPARSE).fingerprint;
  return a;
}

static void freeDeviceSet(DeviceSet* ds) {
  if (ds == NULL) return;
  void* arrays[] = {ds->layers, ds->chunks, ds->sparseByValue, ds->error, ds->errorNext, ds->h, ds->H,
                    ds->importance, ds->prevGrad, ds->layerSteps, ds->havePrevGrad,
                    ds->counters, ds->normRing, ds->keys, ds->hist, ds->select,
                    ds->chunkGreater, ds->chunkEqual, ds->candidates, ds->chunkCandidates,
                    ds->chunkAbove, ds->chunkClass, ds->chunkTiesBefore, ds->chunkOffset, ds->sharedIndices,
                    ds->sendBlock, ds->recvBlocks, ds->rankStarts, ds->sums, ds->skip,
                    ds->blockSums, ds->arrivals, ds->layerBad, ds->predicted};
  for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
    if (arrays[i]) cudaFree(arrays[i]);
  free(ds->hostLayers);
  free(ds);
}

/* Counters a set kept on the device, added into *stats. */
static sparcclResult_t addCounters(const DeviceSet* ds, sparcclStats_t* stats) {
  DeviceCounters counters;
  CUDACHECK(cudaStreamSynchronize(ds->lastStream), "sparcclCommGetStats");
  CUDACHECK(cudaMemcpy(&counters, ds->counters, sizeof(counters), cudaMemcpyDeviceToHost), "sparcclCommGetStats");
  stats->calls += counters.calls;
  stats->bytesSent += counters.bytesSent;
  stats->bytesDense += counters.bytesDense;
  stats->skippedSteps += counters.skipped;
  stats->restarts += counters.restarts;
  stats->refusedCalls += counters.refusedCalls;
  if (counters.internalErrors) {
    WARN("sparcclCommGetStats: a device-side selection invariant failed in an earlier call "
         "(a layer did not select exactly k elements, or a pair's index fell outside its "
         "chunk): a sparccl bug, please report it");
    return sparcclInternalError;
  }
  return sparcclSuccess;
}

static void deviceFreeSet(sparcclComm_t comm, sparcclLayerSet_t* set) {
  DeviceSet* ds = (DeviceSet*)set->device;
  /* the released set's counters stay in the comm's totals (this also waits for its work);
   * a NULL lastStream is the legacy stream, where the last call went */
  if (ds != NULL) addCounters(ds, &comm->stats);
  freeDeviceSet(ds);
  set->device = NULL;
}

/* SPARCCL_KEYS_* (device_set.cuh): store the keys, or compute them again where that reads
 * no more than a stored key would. */
static int keyModeFor(const sparcclConfig_t* c, int errorBuffers) {
  const int ef = c->feedback == sparcclFeedbackEF || c->feedback == sparcclFeedbackSCAM;
  switch (c->compressor) {
    case sparcclRandK: return SPARCCL_KEYS_PHILOX;
    case sparcclTopK:
      if (c->feedback == sparcclFeedbackNone) return SPARCCL_KEYS_FROM_G;
      return ef && errorBuffers == 2 ? SPARCCL_KEYS_FROM_A : SPARCCL_KEYS_STORED;
    case sparcclImpKSelect:
      return c->importance == sparcclImportanceOnline ? SPARCCL_KEYS_STORED : SPARCCL_KEYS_FROM_W;
    case sparcclImpK: /* online importance: w changes within the call (the cube step) */
      return ef && errorBuffers == 2 && c->importance != sparcclImportanceOnline
                 ? SPARCCL_KEYS_FROM_AW : SPARCCL_KEYS_STORED;
    default: return SPARCCL_KEYS_STORED; /* impk_random (a log each) */
  }
}

#define ALLOC(ptr, bytes)                                                   \
  do {                                                                      \
    if ((bytes) > 0 && cudaMalloc((void**)&(ptr), (bytes)) != cudaSuccess) \
      goto fail;                                                            \
  } while (0)

static sparcclResult_t deviceCreateSet(sparcclComm_t comm, sparcclLayerSet_t* set) {
  const sparcclConfig_t* c = &comm->config;
  DeviceSet* ds = (DeviceSet*)calloc(1, sizeof(DeviceSet));
  DeviceChunk* chunks = NULL;
  uint32_t* byValue = NULL;
  size_t nchunks = 0, i, keyBytes = c->compressor == sparcclImpKRandom ? 8 : 4;
  size_t count = set->count, floats = count * sizeof(float);
  int ef = c->feedback == sparcclFeedbackEF || c->feedback == sparcclFeedbackSCAM;
  int ef21 = c->feedback == sparcclFeedbackEF21;
  int importance = c->compressor == sparcclImpK || c->compressor == sparcclImpKSelect ||
                   c->compressor == sparcclImpKRandom;
  int online = importance && c->importance == sparcclImportanceOnline;
  cudaStream_t stream = nccl(comm)->stream;
  if (ds == NULL) return sparcclSystemError;
  ds->count = count;
  ds->nlayers = (uint32_t)set->nlayers;
  ds->hostLayers = (DeviceLayer*)calloc(set->nlayers, sizeof(DeviceLayer));
  if (ds->hostLayers == NULL) goto fail;
  for (i = 0; i < set->nlayers; i++) nchunks += (set->layers[i].count + SPARCCL_CHUNK - 1) / SPARCCL_CHUNK;
  chunks = (DeviceChunk*)malloc(nchunks * sizeof(DeviceChunk));
  byValue = (uint32_t*)malloc((set->nsparse ? set->nsparse : 1) * sizeof(uint32_t));
  if (chunks == NULL || byValue == NULL) goto fail;
  nchunks = 0;
  for (i = 0; i < set->nlayers; i++) {
    const sparcclLayer_t* l = &set->layers[i];
    DeviceLayer* L = &ds->hostLayers[i];
    L->offset = l->offset; L->count = l->count; L->k = l->k;
    L->indexPos = l->indexPos; L->valuePos = l->valuePos; L->densePos = l->densePos;
    /* sparcclGetSet numbers the layers (SPEC 3) only after this returns: l->id is still 0 */
    L->id = l->id;
    L->flagPos = (uint32_t)l->flagPos;
    L->sparse = l->sparse; L->sharedSet = l->sharedSet; L->all = l->sparse && l->k == l->count;
    L->chunkBegin = nchunks;
    for (size_t b = 0; b < l->count; b += SPARCCL_CHUNK) {
      chunks[nchunks].layer = (uint32_t)i;
      chunks[nchunks].begin = (uint32_t)b;
      chunks[nchunks].end = (uint32_t)(b + SPARCCL_CHUNK < l->count ? b + SPARCCL_CHUNK : l->count);
      nchunks++;
    }
    L->nchunks = (uint32_t)(nchunks - L->chunkBegin);
    if (l->sparse) byValue[l->flagPos] = (uint32_t)i; /* flag order is value order */
  }
  ds->nchunks = (uint32_t)nchunks;
  ds->nsparse = (uint32_t)set->nsparse;
  ALLOC(ds->layers, set->nlayers * sizeof(DeviceLayer));
  ALLOC(ds->chunks, nchunks * sizeof(DeviceChunk));
  ALLOC(ds->sparseByValue, (set->nsparse ? set->nsparse : 1) * sizeof(uint32_t));
  if (ef) ALLOC(ds->error, floats);
  if (ef && nccl(comm)->errorBuffers == 2) ALLOC(ds->errorNext, floats);
  if (ef21) { ALLOC(ds->h, floats); ALLOC(ds->H, floats); }
  if (importance) ALLOC(ds->importance, floats);
  if (online) ALLOC(ds->prevGrad, floats);
  ALLOC(ds->layerSteps, set->nlayers * sizeof(unsigned long long));
  ALLOC(ds->havePrevGrad, set->nlayers * sizeof(int));
  ALLOC(ds->counters, sizeof(DeviceCounters));
  ALLOC(ds->normRing, ((size_t)c->restartLag + 1) * sizeof(double));
  ds->keyMode = keyModeFor(c, nccl(comm)->errorBuffers);
  if (ds->keyMode == SPARCCL_KEYS_STORED) ALLOC(ds->keys, count * keyBytes);
  ALLOC(ds->hist, set->nlayers * SPARCCL_RADIX_BINS * sizeof(uint32_t));
  ALLOC(ds->select, set->nlayers * sizeof(DeviceSelect));
  ALLOC(ds->chunkGreater, nchunks * sizeof(uint32_t));
  ALLOC(ds->chunkEqual, nchunks * sizeof(uint32_t));
  ALLOC(ds->candidates, nchunks * SPARCCL_CANDIDATES * keyBytes);
  ALLOC(ds->chunkCandidates, nchunks * sizeof(uint32_t));
  ALLOC(ds->chunkAbove, nchunks * sizeof(uint32_t));
  ALLOC(ds->chunkClass, nchunks * SPARCCL_CLASS_WORDS * sizeof(uint32_t));
  ALLOC(ds->chunkTiesBefore, nchunks * sizeof(uint64_t));
  ALLOC(ds->chunkOffset, nchunks * sizeof(uint64_t));
  ALLOC(ds->sharedIndices, (set->valueCount ? set->valueCount : 1) * sizeof(uint32_t));
  ALLOC(ds->sendBlock, set->blockBytes);
  ALLOC(ds->recvBlocks, set->blockBytes * (size_t)comm->nranks);
  ALLOC(ds->rankStarts, nchunks * (size_t)comm->nranks * sizeof(uint32_t));
  if (c->restartRatio > 0.0) ALLOC(ds->sums, floats);
  ALLOC(ds->skip, set->nlayers * sizeof(uint32_t));
  ALLOC(ds->blockSums, (nchunks + set->nlayers) * sizeof(double));
  ALLOC(ds->arrivals, (set->nlayers + 1) * sizeof(uint32_t));
  ALLOC(ds->layerBad, set->nlayers * sizeof(uint32_t));
  ALLOC(ds->predicted, set->nlayers * sizeof(uint32_t));
  if (cudaMemcpyAsync(ds->layers, ds->hostLayers, set->nlayers * sizeof(DeviceLayer), cudaMemcpyHostToDevice, stream) != cudaSuccess ||
      cudaMemcpyAsync(ds->chunks, chunks, nchunks * sizeof(DeviceChunk), cudaMemcpyHostToDevice, stream) != cudaSuccess ||
      cudaMemcpyAsync(ds->sparseByValue, byValue, (set->nsparse ? set->nsparse : 1) * sizeof(uint32_t), cudaMemcpyHostToDevice, stream) != cudaSuccess)
    goto fail;
  if (ds->error) cudaMemsetAsync(ds->error, 0, floats, stream);
  if (ds->errorNext) cudaMemsetAsync(ds->errorNext, 0, floats, stream);
  if (ds->h) cudaMemsetAsync(ds->h, 0, floats, stream);
  if (ds->H) cudaMemsetAsync(ds->H, 0, floats, stream);
  if (ds->prevGrad) cudaMemsetAsync(ds->prevGrad, 0, floats, stream);
  cudaMemsetAsync(ds->layerSteps, 0, set->nlayers * sizeof(unsigned long long), stream);
  cudaMemsetAsync(ds->havePrevGrad, 0, set->nlayers * sizeof(int), stream);
  cudaMemsetAsync(ds->counters, 0, sizeof(DeviceCounters), stream);
  cudaMemsetAsync(ds->normRing, 0, ((size_t)c->restartLag + 1) * sizeof(double), stream);
  /* zero here and left zero by every call (select_kernels.cu): the histograms, the arrival
   * counters, the non-finite flags; the wire block's padding, which no call writes */
  cudaMemsetAsync(ds->hist, 0, set->nlayers * SPARCCL_RADIX_BINS * sizeof(uint32_t), stream);
  cudaMemsetAsync(ds->arrivals, 0, (set->nlayers + 1) * sizeof(uint32_t), stream);
  cudaMemsetAsync(ds->layerBad, 0, set->nlayers * sizeof(uint32_t), stream);
  cudaMemsetAsync(ds->sendBlock, 0, set->blockBytes, stream);
  cudaMemsetAsync(ds->predicted, 0xff, set->nlayers * sizeof(uint32_t), stream); /* none yet */
  set->device = ds;
  if (ds->importance) {
    KernelArgs a = sparcclKernelArgs(comm, set, sparcclFloat32, sparcclSum);
    if (sparcclLaunchImportanceReset(a, ds, stream) != cudaSuccess) { set->device = NULL; goto fail; }
  }
  if (cudaStreamSynchronize(stream) != cudaSuccess) { set->device = NULL; goto fail; }
  ds->lastStream = stream;
  free(chunks);
  free(byValue);
  return sparcclSuccess;
fail:
  WARN("layer set of %zu elements: device allocation or copy failed: %s%s", count,
       cudaGetErrorString(cudaGetLastError()),
       ef && nccl(comm)->errorBuffers == 2
           ? " (e is double-buffered: SPARCCL_ERROR_BUFFERS=1 needs 4 bytes a parameter less)" : "");
  free(chunks);
  free(byValue);
  freeDeviceSet(ds);
  return sparcclUnhandledCudaError;
}

/* ------------------------------------------------------------ checks */

static int isDevicePointer(const void* p) {
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

/* Host comms in this library refuse device buffers through this hook (src/core.h). */
static int isDevicePointerHook(const void* p) { return p != NULL && isDevicePointer(p); }
static struct DevicePointerHook {
  DevicePointerHook() { sparcclIsDevicePointer = isDevicePointerHook; }
} devicePointerHook;

static sparcclResult_t deviceCheckPointers(const void* a, const void* b, const char* caller) {
  if ((a && !isDevicePointer(a)) || (b && !isDevicePointer(b))) {
    WARN("%s: a host buffer on a device comm (%p, %p); pass device memory", caller, a, b);
    return sparcclInvalidUsage;
  }
  return sparcclSuccess;
}

static sparcclResult_t deviceCheckCapture(void* stream, const char* caller) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUDACHECK(cudaStreamIsCapturing((cudaStream_t)stream, &status), caller);
  if (status != cudaStreamCaptureStatusNone) {
    WARN("%s: a new key while the stream is being captured; make the first call outside the "
         "graph (it allocates and synchronises)", caller);
    return sparcclInvalidUsage;
  }
  return sparcclSuccess;
}

/* ------------------------------------------------------------ calls */

static sparcclResult_t deviceAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set,
                                       const void* send, void* recv, int dtype, int op,
                                       void* streamArg) {
  DeviceSet* ds = (DeviceSet*)set->device;
  cudaStream_t stream = (cudaStream_t)streamArg;
  KernelArgs a = sparcclKernelArgs(comm, set, dtype, op);
  cudaError_t err = sparcclLaunchCallCheckWrite(a, stream);
  if (err == cudaSuccess) err = sparcclLaunchCompress(a, ds, send, stream);
  if (err != cudaSuccess) {
    WARN("sparcclAllReduce: compression launch failed: %s", cudaGetErrorString(err));
    return sparcclUnhandledCudaError;
  }
  /* A failure here leaves the state as it was: nothing is written before the exchange. */
  NCCLCHECK(ncclAllGather(ds->sendBlock, ds->recvBlocks, set->blockBytes, ncclUint8,
                          nccl(comm)->nccl, stream), "sparcclAllReduce");
  err = sparcclLaunchCallCheckVerify(a, stream);
  if (err == cudaSuccess) err = sparcclLaunchDecompress(a, ds, send, recv, stream);
  if (err != cudaSuccess) {
    WARN("sparcclAllReduce: decompression launch failed: %s", cudaGetErrorString(err));
    return sparcclUnhandledCudaError;
  }
  ds->lastStream = stream;
  return sparcclSuccess;
}

static sparcclResult_t deviceProbe(sparcclComm_t comm, sparcclLayerSet_t* set,
                                   const void* params, const void* grad, void* out, int dtype,
                                   void* stream) {
  DeviceSet* ds = (DeviceSet*)set->device;
  KernelArgs a = sparcclKernelArgs(comm, set, dtype, sparcclSum);
  cudaError_t err = sparcclLaunchProbe(a, ds, params, grad, out,
                                       (float)comm->config.importanceGamma, (cudaStream_t)stream);
  CUDACHECK(err, "sparcclImportanceProbe");
  ds->lastStream = (cudaStream_t)stream; /* a reset of w orders after this read of it */
  return sparcclSuccess;
}

static sparcclResult_t deviceUpdate(sparcclComm_t comm, sparcclLayerSet_t* set, const void* q,
                                    const void* g, int dtype, void* stream) {
  DeviceSet* ds = (DeviceSet*)set->device;
  KernelArgs a = sparcclKernelArgs(comm, set, dtype, sparcclSum);
  cudaError_t err = sparcclLaunchImportanceUpdate(
      a, ds, q, g, comm->config.importance == sparcclImportanceSimplex, (cudaStream_t)stream);
  CUDACHECK(err, "sparcclImportanceUpdate");
  ds->lastStream = (cudaStream_t)stream; /* save, reset and stats wait for this update */
  return sparcclSuccess;
}

static sparcclResult_t deviceResetImportance(sparcclComm_t comm, sparcclLayerSet_t* set) {
  DeviceSet* ds = (DeviceSet*)set->device;
  KernelArgs a = sparcclKernelArgs(comm, set, sparcclFloat32, sparcclSum);
  if (ds->importance) CUDACHECK(sparcclLaunchImportanceReset(a, ds, ds->lastStream), "sparcclImportanceReset");
  return sparcclSuccess;
}

static sparcclResult_t deviceRestartSet(sparcclComm_t comm, sparcclLayerSet_t* set) {
  DeviceSet* ds = (DeviceSet*)set->device;
  KernelArgs a = sparcclKernelArgs(comm, set, sparcclFloat32, sparcclSum);
  CUDACHECK(sparcclLaunchRestart(a, ds, 1, ds->lastStream), "sparcclRestart");
  return sparcclSuccess;
}

static sparcclResult_t deviceScale(sparcclComm_t comm, sparcclLayerSet_t* set, float factor) {
  DeviceSet* ds = (DeviceSet*)set->device;
  KernelArgs a = sparcclKernelArgs(comm, set, sparcclFloat32, sparcclSum);
  CUDACHECK(sparcclLaunchScale(a, ds, factor, ds->lastStream), "sparcclScaleState");
  return sparcclSuccess;
}

/* Device arrays <-> the host mirror: each layer's e, h, H, w, previous g in the order
 * src/comm.c lays them out in set->stateMemory, plus step counters and restart history.
 * Every copy goes on the set's stream and the stream is synchronised before returning: a
 * plain cudaMemcpy from pageable memory may return before its DMA has landed, and runs on
 * the legacy stream, which a non-blocking caller stream does not wait for. */
static sparcclResult_t transferState(sparcclComm_t comm, sparcclLayerSet_t* set, int toHost) {
  DeviceSet* ds = (DeviceSet*)set->device;
  cudaStream_t stream = ds->lastStream;
  cudaMemcpyKind kind = toHost ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice;
  size_t lag = (size_t)comm->config.restartLag + 1, i;
  unsigned long long* steps = (unsigned long long*)malloc(set->nlayers * sizeof(unsigned long long));
  int* havePrev = (int*)malloc(set->nlayers * sizeof(int));
  DeviceCounters counters;
  float* error;
  if (steps == NULL || havePrev == NULL) { free(steps); free(havePrev); return sparcclSystemError; }
  /* the counters first: their errorParity says which buffer holds e */
  CUDACHECK(cudaMemcpyAsync(&counters, ds->counters, sizeof(counters), cudaMemcpyDeviceToHost, stream), "state transfer");
  CUDACHECK(cudaStreamSynchronize(stream), "state transfer");
  error = ds->errorNext != NULL && counters.errorParity ? ds->errorNext : ds->error;
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    float* host[] = {l->error, l->h, l->H, l->importance, l->prevGrad};
    float* dev[] = {error, ds->h, ds->H, ds->importance, ds->prevGrad};
    for (int j = 0; j < 5; j++) {
      if (host[j] == NULL || dev[j] == NULL) continue;
      float* d = dev[j] + l->offset;
      CUDACHECK(toHost ? cudaMemcpyAsync(host[j], d, l->count * sizeof(float), kind, stream)
                       : cudaMemcpyAsync(d, host[j], l->count * sizeof(float), kind, stream), "state transfer");
    }
    steps[i] = l->step;
    havePrev[i] = l->havePrevGrad;
  }
  if (toHost) {
    CUDACHECK(cudaMemcpyAsync(steps, ds->layerSteps, set->nlayers * sizeof(*steps), kind, stream), "state transfer");
    CUDACHECK(cudaMemcpyAsync(havePrev, ds->havePrevGrad, set->nlayers * sizeof(int), kind, stream), "state transfer");
    CUDACHECK(cudaMemcpyAsync(set->normHistory, ds->normRing, lag * sizeof(double), kind, stream), "state transfer");
    CUDACHECK(cudaStreamSynchronize(stream), "state transfer");
    for (i = 0; i < set->nlayers; i++) {
      set->layers[i].step = steps[i];
      set->layers[i].havePrevGrad = havePrev[i];
    }
    set->steps = counters.steps;
    set->normCount = counters.normCount;
  } else {
    counters.steps = set->steps;
    counters.normCount = set->normCount;
    CUDACHECK(cudaMemcpyAsync(ds->counters, &counters, sizeof(counters), kind, stream), "state transfer");
    CUDACHECK(cudaMemcpyAsync(ds->layerSteps, steps, set->nlayers * sizeof(*steps), kind, stream), "state transfer");
    CUDACHECK(cudaMemcpyAsync(ds->havePrevGrad, havePrev, set->nlayers * sizeof(int), kind, stream), "state transfer");
    CUDACHECK(cudaMemcpyAsync(ds->normRing, set->normHistory, lag * sizeof(double), kind, stream), "state transfer");
    /* layer ids may have been renumbered by the file */
    for (i = 0; i < set->nlayers; i++) ds->hostLayers[i].id = set->layers[i].id;
    CUDACHECK(cudaMemcpyAsync(ds->layers, ds->hostLayers, set->nlayers * sizeof(DeviceLayer), kind, stream), "state transfer");
    CUDACHECK(cudaStreamSynchronize(stream), "state transfer");
  }
  free(steps);
  free(havePrev);
  return sparcclSuccess;
}

static sparcclResult_t devicePullState(sparcclComm_t comm, sparcclLayerSet_t* set) {
  return transferState(comm, set, 1);
}
static sparcclResult_t devicePushState(sparcclComm_t comm, sparcclLayerSet_t* set) {
  return transferState(comm, set, 0);
}

static sparcclResult_t deviceStats(sparcclComm_t comm, sparcclStats_t* stats) {
  for (size_t i = 0; i < comm->nsets; i++)
    SPARCCLCHECK(addCounters((const DeviceSet*)comm->sets[i]->device, stats));
  return sparcclSuccess;
}

static void deviceDestroy(sparcclComm_t comm) { (void)comm; }

static const sparcclDeviceOps_t deviceOps = {
    deviceCreateSet, deviceFreeSet, deviceCheckPointers, deviceCheckCapture, deviceAllReduce,
    deviceProbe, deviceUpdate, deviceResetImportance, deviceRestartSet, deviceScale,
    devicePullState, devicePushState, deviceStats, deviceDestroy};

/* ------------------------------------------------------------ creation */

static sparcclResult_t initOnNccl(sparcclComm_t* out, ncclComm_t nc, int owned,
                                  const sparcclConfig_t* config, const char* caller) {
  sparcclConfig_t resolved;
  sparcclTransport_t* transport;
  NcclTransport* t;
  sparcclResult_t res;
  int rank, nranks;
  if (out == NULL) {
    WARN("%s: comm is NULL", caller);
    return sparcclInvalidArgument;
  }
  long long errorBuffers = 2;
  int found;
  SPARCCLCHECK(sparcclConfigResolve(config, &resolved));
  SPARCCLCHECK(sparcclEnvInteger("SPARCCL_ERROR_BUFFERS", 1, 2, &errorBuffers, &found));
  NCCLCHECK(ncclCommUserRank(nc, &rank), caller);
  NCCLCHECK(ncclCommCount(nc, &nranks), caller);
  transport = (sparcclTransport_t*)calloc(1, sizeof(*transport));
  t = (NcclTransport*)calloc(1, sizeof(*t));
  if (transport == NULL || t == NULL) { free(transport); free(t); return sparcclSystemError; }
  t->nccl = nc;
  t->owned = owned;
  t->errorBuffers = (int)errorBuffers;
  if (cudaStreamCreateWithFlags(&t->stream, cudaStreamNonBlocking) != cudaSuccess) {
    free(transport); free(t);
    WARN("%s: cannot create a stream", caller);
    return sparcclUnhandledCudaError;
  }
  if (cudaMalloc((void**)&t->callSequence, sizeof(unsigned long long)) != cudaSuccess ||
      cudaMemsetAsync(t->callSequence, 0, sizeof(unsigned long long), t->stream) != cudaSuccess ||
      cudaStreamSynchronize(t->stream) != cudaSuccess) {
    WARN("%s: cannot allocate the call sequence: %s", caller, cudaGetErrorString(cudaGetLastError()));
    t->owned = 0;
    transport->impl = t;
    ncclTransportDestroy(transport);
    return sparcclUnhandledCudaError;
  }
  transport->rank = rank;
  transport->nranks = nranks;
  transport->name = "nccl";
  transport->allgather = ncclHostAllgather;
  transport->destroy = ncclTransportDestroy;
  transport->impl = t;
  res = sparcclCommCreate(out, transport, &resolved);
  if (res != sparcclSuccess) {
    t->owned = 0; /* the caller keeps what it passed */
    ncclTransportDestroy(transport);
    return res;
  }
  (*out)->device = &deviceOps;
  return sparcclSuccess;
}

extern "C" SPARCCL_API sparcclResult_t sparcclCommInitNccl(sparcclComm_t* comm, ncclComm_t nc,
                                                           const sparcclConfig_t* config) {
  if (nc == NULL) {
    WARN("sparcclCommInitNccl: nccl is NULL");
    return sparcclInvalidArgument;
  }
  return initOnNccl(comm, nc, 0, config, "sparcclCommInitNccl");
}

extern "C" SPARCCL_API sparcclResult_t sparcclGetUniqueId(ncclUniqueId* id) {
  if (id == NULL) {
    WARN("sparcclGetUniqueId: id is NULL");
    return sparcclInvalidArgument;
  }
  NCCLCHECK(ncclGetUniqueId(id), "sparcclGetUniqueId");
  return sparcclSuccess;
}

extern "C" SPARCCL_API sparcclResult_t sparcclCommInitRank(sparcclComm_t* comm, int nranks,
                                                           ncclUniqueId id, int rank,
                                                           const sparcclConfig_t* config) {
  ncclComm_t nc;
  sparcclResult_t res;
  if (nranks < 1 || rank < 0 || rank >= nranks) {
    WARN("sparcclCommInitRank: rank %d of %d", rank, nranks);
    return sparcclInvalidArgument;
  }
  NCCLCHECK(ncclCommInitRank(&nc, nranks, id, rank), "sparcclCommInitRank");
  res = initOnNccl(comm, nc, 1, config, "sparcclCommInitRank");
  if (res != sparcclSuccess) ncclCommDestroy(nc);
  return res;
}

extern "C" SPARCCL_API sparcclResult_t sparcclCommAbort(sparcclComm_t comm) {
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclCommAbort"));
  if (comm->device == NULL) return sparcclCommDestroy(comm);
  if (nccl(comm)->owned) {
    ncclCommAbort(nccl(comm)->nccl);
    nccl(comm)->owned = 0;
  }
  return sparcclCommDestroy(comm);
}

extern "C" SPARCCL_API sparcclResult_t sparcclCommGetAsyncError(sparcclComm_t comm,
                                                                sparcclResult_t* asyncError) {
  ncclResult_t nres;
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclCommGetAsyncError"));
  if (asyncError == NULL) {
    WARN("sparcclCommGetAsyncError: asyncError is NULL");
    return sparcclInvalidArgument;
  }
  if (comm->device == NULL) { *asyncError = sparcclSuccess; return sparcclSuccess; }
  NCCLCHECK(ncclCommGetAsyncError(nccl(comm)->nccl, &nres), "sparcclCommGetAsyncError");
  *asyncError = nres == ncclSuccess ? sparcclSuccess
                : nres == ncclInProgress ? sparcclInProgress : sparcclRemoteError;
  return sparcclSuccess;
}
