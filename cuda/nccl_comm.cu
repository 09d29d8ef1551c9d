/* Device comms over NCCL (SPEC 8): creation, the NCCL transport, layer-set device state, and
 * the backend table's device operations (src/backend.h).  After a key's first call nothing
 * here allocates or synchronises; the calls without a stream run on the comm's own stream
 * after waiting for the device (docs/DEVICE.md, "Device comms and streams"). */
#include <nccl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include "device_set.cuh"
extern "C" {
#include "backend.h"
#include "sparccl_nccl.h"
}

struct NcclTransport {
  ncclComm_t nccl;
  int owned;
  int device; /* the NCCL communicator's (ncclCommCuDevice): every entry point runs on it */
  /* sparcclCommAbort: the teardown waits for nothing; keepDeviceMemory: nor frees device
   * memory (cudaFree waits for the device), when the communicator is the caller's */
  int aborting, keepDeviceMemory;
  /* the comm's own, non-blocking, on its device: the small host-data exchanges
   * (fingerprints, load status), set creation, and the work of the calls without a stream */
  cudaStream_t stream;
  void* scratch;
  size_t scratchBytes;
  int errorBuffers; /* the config's: 2 (default) or 1 (device_set.cuh) */
  unsigned long long* callSequence; /* device memory: the comm's call sequence (SPEC 4) */
  int checkSizes; /* the config's: every exchange agrees its size first (synchronising) */
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

/* ------------------------------------------------------------ devices, errors, NCCL states */

/* Every entry point runs on the comm's device, whatever the caller's current one, and gives
 * the caller's back when it returns: sets are allocated there, kernels launched there. */
class DeviceScope {
 public:
  explicit DeviceScope(int device) : previous_(-1), result_(cudaSuccess), device_(device) {
    int current = -1;
    result_ = cudaGetDevice(&current);
    if (result_ == cudaSuccess && current != device) {
      result_ = cudaSetDevice(device);
      if (result_ == cudaSuccess) previous_ = current;
    }
  }
  ~DeviceScope() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  sparcclResult_t check(const char* caller) const {
    if (result_ == cudaSuccess) return sparcclSuccess;
    (void)cudaGetLastError();
    WARN("%s: cannot make the comm's device %d current: %s", caller, device_,
         cudaGetErrorString(result_));
    return sparcclUnhandledCudaError;
  }

 private:
  int previous_;
  cudaError_t result_;
  int device_;
};
#define ON_DEVICE(device, caller)      \
  DeviceScope deviceScope_(device);     \
  SPARCCLCHECK(deviceScope_.check(caller))

/* A CUDA error left pending by the caller's own earlier work (a launch it did not check):
 * refused before anything is enqueued, so that the checks after our launches report only
 * ours, and no rank returns half-way through a call's collective sequence. */
static sparcclResult_t checkPendingError(const char* caller) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return sparcclSuccess;
  WARN("%s: a CUDA error was pending from earlier work (not this call's): %s; nothing was "
       "enqueued", caller, cudaGetErrorString(e));
  return sparcclUnhandledCudaError;
}

static int captureError(cudaError_t e) {
  return e == cudaErrorStreamCaptureUnsupported || e == cudaErrorStreamCaptureImplicit ||
         e == cudaErrorStreamCaptureInvalidated;
}

/* A CUDA graph capture that sparccl can see without disturbing it: on `stream` (the
 * caller's; NULL: none) or, through the legacy stream, on any blocking stream of the current
 * device (cudaStreamIsCapturing says so without invalidating it).  A capture on a
 * non-blocking stream (torch.cuda.graph's) cannot be seen this way; the synchronisation
 * that follows then fails, and CUDA invalidates that capture (quiesce reports it). */
static sparcclResult_t refuseCapture(cudaStream_t stream, int device, const char* caller,
                                     const char* why) {
  cudaStream_t queried[2] = {stream, cudaStreamLegacy};
  for (int i = stream != NULL ? 0 : 1; i < 2; i++) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    cudaError_t e = cudaStreamIsCapturing(queried[i], &status);
    if (e == cudaErrorStreamCaptureImplicit || (e == cudaSuccess && status != cudaStreamCaptureStatusNone)) {
      (void)cudaGetLastError();
      WARN("%s: a CUDA graph is being captured on %s of device %d; %s", caller,
           i == 0 ? "the call's stream" : "a blocking stream", device, why);
      return sparcclInvalidUsage;
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      WARN("%s: cudaStreamIsCapturing failed: %s", caller, cudaGetErrorString(e));
      return sparcclUnhandledCudaError;
    }
  }
  return sparcclSuccess;
}

/* A synchronisation that a capture in progress on the device makes fail (and invalidates). */
static sparcclResult_t synchronise(cudaStream_t stream, int device, const char* caller) {
  cudaError_t e = stream != NULL ? cudaStreamSynchronize(stream) : cudaDeviceSynchronize();
  if (e == cudaSuccess) return sparcclSuccess;
  (void)cudaGetLastError();
  if (captureError(e)) {
    WARN("%s: refused: a CUDA graph is being captured on device %d, on a stream sparccl cannot "
         "see before synchronising (a non-blocking one), and CUDA has invalidated that "
         "capture; make this call outside the capture", caller, device);
    return sparcclInvalidUsage;
  }
  WARN("%s: %s failed: %s", caller, stream != NULL ? "cudaStreamSynchronize" : "cudaDeviceSynchronize",
       cudaGetErrorString(e));
  return sparcclUnhandledCudaError;
}

/* A non-blocking communicator (ncclConfig_t.blocking = 0) may answer ncclInProgress, before
 * the call's work is on the stream: nothing that depends on it may be enqueued, and no other
 * NCCL call made, until ncclCommGetAsyncError no longer says so.  Returns the outcome. */
static ncclResult_t ncclWait(ncclComm_t nc, ncclResult_t res) {
  while (res == ncclInProgress) {
    ncclResult_t state = ncclSuccess;
    res = ncclCommGetAsyncError(nc, &state);
    if (res == ncclSuccess) res = state;
    if (res == ncclInProgress) sched_yield();
  }
  return res;
}
/* The communicator's earlier operations (its initialisation, the caller's own calls on a
 * non-blocking one) completed, and no asynchronous error. */
static ncclResult_t ncclReady(ncclComm_t nc) { return ncclWait(nc, ncclInProgress); }

/* ------------------------------------------------------------ transport */

/* Small host buffers through NCCL: staged through device scratch, synchronising.  Used
 * only at layout creation, load and loss reports -- never on a call's hot path.  A gather
 * that did not run (NCCL defers every call between the caller's ncclGroupStart and
 * ncclGroupEnd) is caught: this rank's own block is set to something else than it sends
 * first. */
static sparcclResult_t hostAllgather(sparcclTransport_t* self, const void* send, void* recv,
                                     size_t bytes) {
  static const char caller[] = "sparccl's host-data exchange (new key, load, loss report)";
  NcclTransport* t = (NcclTransport*)self->impl;
  size_t need = bytes * (size_t)(self->nranks + 1), i;
  sparcclResult_t res = sparcclSuccess;
  uint8_t* mark = NULL;
  ncclResult_t nres;
  ON_DEVICE(t->device, caller);
  SPARCCLCHECK(refuseCapture(NULL, t->device, caller, "make this call outside the capture "
                             "(it synchronises)"));
  NCCLCHECK(ncclReady(t->nccl), caller);
  if (need > t->scratchBytes) {
    void* grown = NULL;
    CUDACHECK(cudaMalloc(&grown, need), caller);
    if (t->scratch) cudaFree(t->scratch);
    t->scratch = grown;
    t->scratchBytes = need;
  }
  uint8_t* dsend = (uint8_t*)t->scratch;
  uint8_t* drecv = dsend + bytes;
  mark = (uint8_t*)malloc(bytes ? bytes : 1);
  if (mark == NULL) return sparcclSystemError;
  for (i = 0; i < bytes; i++) mark[i] = (uint8_t)~((const uint8_t*)send)[i];
  if (cudaMemcpyAsync(dsend, send, bytes, cudaMemcpyHostToDevice, t->stream) != cudaSuccess ||
      cudaMemcpyAsync(drecv + bytes * (size_t)self->rank, mark, bytes, cudaMemcpyHostToDevice,
                      t->stream) != cudaSuccess) {
    WARN("%s: a copy failed: %s", caller, cudaGetErrorString(cudaGetLastError()));
    res = sparcclUnhandledCudaError;
    goto done;
  }
  nres = ncclWait(t->nccl, ncclAllGather(dsend, drecv, bytes, ncclUint8, t->nccl, t->stream));
  if (nres != ncclSuccess) {
    WARN("%s: ncclAllGather failed: %s", caller, ncclGetErrorString(nres));
    res = nres == ncclSystemError ? sparcclSystemError : sparcclRemoteError;
    goto done;
  }
  if (cudaMemcpyAsync(recv, drecv, bytes * (size_t)self->nranks, cudaMemcpyDeviceToHost,
                      t->stream) != cudaSuccess) {
    WARN("%s: a copy failed: %s", caller, cudaGetErrorString(cudaGetLastError()));
    res = sparcclUnhandledCudaError;
    goto done;
  }
  res = synchronise(t->stream, t->device, caller);
  if (res == sparcclSuccess && memcmp((const uint8_t*)recv + bytes * (size_t)self->rank, send, bytes) != 0) {
    WARN("%s: ncclAllGather returned but did not run: is the call between ncclGroupStart and "
         "ncclGroupEnd? No sparccl call on a device comm may be (include/sparccl_nccl.h)", caller);
    res = sparcclInvalidUsage;
  }
done:
  free(mark);
  return res;
}

static sparcclResult_t rawGather(void* self, const void* send, void* recv, size_t bytes) {
  return hostAllgather((sparcclTransport_t*)self, send, recv, bytes);
}

/* checkSizes (include/sparccl_nccl.h): every exchange first agrees its size and collective
 * on every rank, as on MPI (sparcclAgreeSize), at the price of a synchronisation. */
static sparcclResult_t ncclHostAllgather(sparcclTransport_t* self, const void* send, void* recv,
                                         size_t bytes) {
  if (((NcclTransport*)self->impl)->checkSizes)
    SPARCCLCHECK(sparcclAgreeSize(self->nranks, bytes, 0, rawGather, self));
  return hostAllgather(self, send, recv, bytes);
}

static void ncclTransportDestroy(sparcclTransport_t* self) {
  NcclTransport* t = (NcclTransport*)self->impl;
  {
    DeviceScope scope(t->device); /* the stream and memory are that device's */
    if (t->scratch && !t->keepDeviceMemory) cudaFree(t->scratch);
    if (t->callSequence && !t->keepDeviceMemory) cudaFree(t->callSequence);
    if (t->stream) cudaStreamDestroy(t->stream); /* returns at once, even with work left */
    if (t->owned) ncclCommDestroy(t->nccl);
  }
  free(t);
  free(self);
}

static NcclTransport* nccl(sparcclComm_t comm) { return (NcclTransport*)comm->transport->impl; }

/* Before the work of a call without a stream argument: refuse during a capture, then wait
 * for every call's work on the device (docs/DEVICE.md, "Device comms and streams").
 * bestEffort (release, destroy): a pending or device error is reported and ignored, a
 * capture still refused.  On sparcclCommAbort's teardown nothing is waited for. */
static sparcclResult_t quiesce(sparcclComm_t comm, const char* caller, int bestEffort) {
  NcclTransport* t = nccl(comm);
  sparcclResult_t res;
  cudaError_t e;
  if (t->aborting) return sparcclSuccess;
  e = cudaGetLastError();
  if (e != cudaSuccess) {
    WARN("%s: a CUDA error was pending from earlier work: %s%s", caller, cudaGetErrorString(e),
         bestEffort ? " (going on)" : "; nothing done");
    if (!bestEffort) return sparcclUnhandledCudaError;
  }
  SPARCCLCHECK(refuseCapture(NULL, t->device, caller, "make this call outside the capture (it "
                             "waits for the device, which a capture forbids)"));
  res = synchronise(NULL, t->device, caller);
  return res == sparcclInvalidUsage || !bestEffort ? res : sparcclSuccess;
}

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
  a.commRank = (uint32_t)comm->rank;
  a.compressor = c->compressor;
  a.feedback = c->feedback;
  a.wireType = c->wireType;
  a.dtype = dtype;
  a.op = op;
  a.online = c->importance == sparcclImportanceOnline;
  a.call = sparccl_call_values(c, comm->rank);
  a.restartRatio = c->restartRatio;
  a.restartEvery = c->restartEvery;
  a.restartLag = c->restartLag;
  a.count = set->count;
  a.valueCount = set->valueCount;
  a.wire = set->wire;
  a.callSequence = nccl(comm)->callSequence;
  a.checkFingerprint = sparcclCallCheck(comm, set, dtype, op, SPARCCL_CALL_SPARSE).fingerprint;
  a.bytesSent = set->wire.blockBytes;
  a.plain = c->deviceKernels == sparcclDeviceKernelsPlain;
  return a;
}

/* config.deviceKernels: the optimised kernels or the plain ones (plain_kernels.cu). */
static cudaError_t launchCompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                  cudaStream_t stream) {
  return (a.plain ? sparcclLaunchPlainCompress : sparcclLaunchCompress)(a, ds, send, stream);
}
static cudaError_t launchDecompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                    void* recv, cudaStream_t stream) {
  return (a.plain ? sparcclLaunchPlainDecompress : sparcclLaunchDecompress)(a, ds, send, recv, stream);
}

/* keepDeviceMemory: sparcclCommAbort on the caller's communicator (NcclTransport). */
static void freeDeviceSet(DeviceSet* ds, int keepDeviceMemory) {
  if (ds == NULL) return;
  void* arrays[] = {ds->layers, ds->chunks, ds->sparseByValue, ds->error, ds->errorNext, ds->h, ds->H,
                    ds->importance, ds->prevGrad, ds->layerSteps, ds->havePrevGrad,
                    ds->counters, ds->normRing, ds->keys, ds->hist, ds->select,
                    ds->chunkGreater, ds->chunkEqual, ds->candidates, ds->chunkCandidates,
                    ds->chunkAbove, ds->chunkClass, ds->chunkTiesBefore, ds->chunkOffset, ds->sharedIndices,
                    ds->sendBlock, ds->recvBlocks, ds->rankStarts, ds->sums, ds->skip,
                    ds->blockSums, ds->arrivals, ds->layerBad, ds->predicted, ds->phaseGrad,
                    ds->momentum, ds->ring};
  for (size_t i = 0; !keepDeviceMemory && i < sizeof(arrays) / sizeof(arrays[0]); i++)
    if (arrays[i]) cudaFree(arrays[i]);
  free(ds->hostLayers);
  free(ds);
}

/* Counters a set kept on the device, added into *stats; after quiesce, on the comm's stream. */
static sparcclResult_t addCounters(const DeviceSet* ds, sparcclStats_t* stats, cudaStream_t stream) {
  DeviceCounters counters;
  CUDACHECK(cudaMemcpyAsync(&counters, ds->counters, sizeof(counters), cudaMemcpyDeviceToHost, stream),
            "sparcclCommGetStats");
  CUDACHECK(cudaStreamSynchronize(stream), "sparcclCommGetStats");
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

/* After deviceQuiesce (a release, a destruction), or with no call made yet (a set refused at
 * creation): no work of the set is left, except on an abort, which reads nothing. */
static void deviceFreeSet(sparcclComm_t comm, sparcclLayerSet_t* set) {
  NcclTransport* t = nccl(comm);
  DeviceSet* ds = (DeviceSet*)set->device;
  DeviceScope scope(t->device);
  /* the released set's counters stay in the comm's totals */
  if (ds != NULL && !t->aborting && scope.check("sparccl (releasing a key)") == sparcclSuccess)
    (void)addCounters(ds, &comm->stats, t->stream);
  freeDeviceSet(ds, t->keepDeviceMemory);
  set->device = NULL;
}

static sparcclResult_t deviceQuiesce(sparcclComm_t comm, const char* caller) {
  ON_DEVICE(nccl(comm)->device, caller);
  return quiesce(comm, caller, 1);
}

/* SPARCCL_KEYS_* (device_set.cuh): store the keys, or compute them again where that reads
 * no more than a stored key would. */
static int keyModeFor(const sparcclConfig_t* c, int errorBuffers) {
  const int ef = sparccl_has_error(c->feedback); /* ef, scam, dgc: the key pass writes a */
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

/* Warm-up's ring (SPEC 9) in DeviceSet::ring, in the host's layout (src/dense.c): the
 * reduce-scatter's nranks send chunks and nranks received ones, the allgather's block and
 * the nranks gathered blocks. */
struct RingParts {
  sparcclDenseRing_t ring;
  uint8_t *scatterSend, *scatterRecv, *gatherSend, *gatherRecv;
};
static RingParts ringParts(sparcclComm_t comm, const sparcclLayerSet_t* set, uint8_t* base) {
  RingParts p;
  const size_t n = (size_t)comm->nranks;
  p.ring = sparcclDenseRingOf(comm, set);
  p.scatterSend = base;
  p.scatterRecv = p.scatterSend + n * p.ring.scatter.blockBytes;
  p.gatherSend = p.scatterRecv + n * p.ring.scatter.blockBytes;
  p.gatherRecv = p.gatherSend + p.ring.gather.blockBytes;
  return p;
}
static size_t denseRingBytes(sparcclComm_t comm, const sparcclLayerSet_t* set) {
  const sparcclDenseRing_t r = sparcclDenseRingOf(comm, set);
  const size_t n = (size_t)comm->nranks;
  return 2 * n * r.scatter.blockBytes + (n + 1) * r.gather.blockBytes;
}

/* The set's layers and chunks on the host (ds->hostLayers, *chunks), and its sparse layers
 * in value order (*byValue); host memory only. */
static sparcclResult_t layOutChunks(const sparcclLayerSet_t* set, DeviceSet* ds,
                                    DeviceChunk** chunks, uint32_t** byValue) {
  size_t nchunks = 0, i;
  ds->hostLayers = (DeviceLayer*)calloc(set->nlayers, sizeof(DeviceLayer));
  for (i = 0; i < set->nlayers; i++) nchunks += (set->layers[i].count + SPARCCL_CHUNK - 1) / SPARCCL_CHUNK;
  *chunks = (DeviceChunk*)malloc(nchunks * sizeof(DeviceChunk));
  *byValue = (uint32_t*)malloc((set->nsparse ? set->nsparse : 1) * sizeof(uint32_t));
  if (ds->hostLayers == NULL || *chunks == NULL || *byValue == NULL) return sparcclSystemError;
  nchunks = 0;
  for (i = 0; i < set->nlayers; i++) {
    const sparcclLayer_t* l = &set->layers[i];
    DeviceLayer* L = &ds->hostLayers[i];
    L->offset = l->offset; L->count = l->count; L->k = l->k;
    L->indexPos = l->indexPos; L->valuePos = l->valuePos; L->densePos = l->densePos;
    L->id = l->id; /* numbered by buildSet (src/comm.c, SPEC 3): the Philox counters use it */
    L->flagPos = (uint32_t)l->flagPos;
    L->sparse = l->sparse; L->sharedSet = l->sharedSet; L->all = l->sparse && l->k == l->count;
    L->flagged = l->flagged;
    L->chunkBegin = nchunks;
    for (size_t b = 0; b < l->count; b += SPARCCL_CHUNK, nchunks++) {
      (*chunks)[nchunks].layer = (uint32_t)i;
      (*chunks)[nchunks].begin = (uint32_t)b;
      (*chunks)[nchunks].end = (uint32_t)(b + SPARCCL_CHUNK < l->count ? b + SPARCCL_CHUNK : l->count);
    }
    L->nchunks = (uint32_t)(nchunks - L->chunkBegin);
    if (l->sparse) (*byValue)[l->flagPos] = (uint32_t)i; /* flag order is value order */
  }
  ds->nchunks = (uint32_t)nchunks;
  ds->nsparse = (uint32_t)set->nsparse;
  return sparcclSuccess;
}

#define ALLOC(ptr, bytes)                                                      \
  do {                                                                         \
    if ((bytes) > 0) SPARCCL_CUDA_CHECK(cudaMalloc((void**)&(ptr), (bytes)));  \
  } while (0)

/* The state arrays the methods keep (src/methods.h's state columns), full-size. */
static cudaError_t allocateState(sparcclComm_t comm, const sparcclLayerSet_t* set, DeviceSet* ds) {
  const sparcclConfig_t* c = &comm->config;
  const size_t floats = set->count * sizeof(float);
  const int ef = sparccl_has_error(c->feedback);
  const int importance = sparccl_has_weights(c->compressor);
  if (ef) ALLOC(ds->error, floats);
  if (ef && nccl(comm)->errorBuffers == 2) ALLOC(ds->errorNext, floats);
  if (sparccl_feedback_props(c->feedback) & SPARCCL_S_H) { ALLOC(ds->h, floats); ALLOC(ds->H, floats); }
  if (importance) ALLOC(ds->importance, floats);
  if (importance && c->importance == sparcclImportanceOnline) ALLOC(ds->prevGrad, floats);
  if (sparccl_has_momentum(c->feedback)) ALLOC(ds->momentum, floats);
  ALLOC(ds->ring, c->warmupSteps ? denseRingBytes(comm, set) : 0);
  ALLOC(ds->layerSteps, set->nlayers * sizeof(unsigned long long));
  ALLOC(ds->havePrevGrad, set->nlayers * sizeof(int));
  ALLOC(ds->counters, sizeof(DeviceCounters));
  ALLOC(ds->normRing, ((size_t)c->restartLag + 1) * sizeof(double));
  return cudaSuccess;
}

/* The selection's and the reduce's scratch, and the wire blocks. */
static cudaError_t allocateScratch(sparcclComm_t comm, const sparcclLayerSet_t* set, DeviceSet* ds) {
  const sparcclConfig_t* c = &comm->config;
  const size_t nchunks = ds->nchunks, keyBytes = c->compressor == sparcclImpKRandom ? 8 : 4;
  ALLOC(ds->layers, set->nlayers * sizeof(DeviceLayer));
  ALLOC(ds->chunks, nchunks * sizeof(DeviceChunk));
  ALLOC(ds->sparseByValue, (set->nsparse ? set->nsparse : 1) * sizeof(uint32_t));
  ds->keyMode = keyModeFor(c, nccl(comm)->errorBuffers);
  if (ds->keyMode == SPARCCL_KEYS_STORED) ALLOC(ds->keys, set->count * keyBytes);
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
  ALLOC(ds->sendBlock, set->wire.blockBytes);
  ALLOC(ds->recvBlocks, set->wire.blockBytes * (size_t)comm->nranks);
  ALLOC(ds->rankStarts, nchunks * (size_t)comm->nranks * sizeof(uint32_t));
  if (c->restartRatio > 0.0) ALLOC(ds->sums, set->count * sizeof(float));
  ALLOC(ds->skip, set->nlayers * sizeof(uint32_t));
  ALLOC(ds->blockSums, (nchunks + set->nlayers) * sizeof(double));
  ALLOC(ds->arrivals, (set->nlayers + 1) * sizeof(uint32_t));
  ALLOC(ds->layerBad, set->nlayers * sizeof(uint32_t));
  ALLOC(ds->predicted, set->nlayers * sizeof(uint32_t));
  return cudaSuccess;
}
#undef ALLOC

/* The layout copied in; every array that a call reads before writing set (memory left as
 * cudaMalloc gave it would be read as state), each call checked. */
static cudaError_t initialiseArrays(sparcclComm_t comm, const sparcclLayerSet_t* set, DeviceSet* ds,
                                    const DeviceChunk* chunks, const uint32_t* byValue,
                                    cudaStream_t stream) {
  const size_t floats = set->count * sizeof(float), n = set->nlayers;
  const size_t ringBytes = comm->config.warmupSteps ? denseRingBytes(comm, set) : 0;
  SPARCCL_CUDA_CHECK(cudaMemcpyAsync(ds->layers, ds->hostLayers, n * sizeof(DeviceLayer), cudaMemcpyHostToDevice, stream));
  SPARCCL_CUDA_CHECK(cudaMemcpyAsync(ds->chunks, chunks, ds->nchunks * sizeof(DeviceChunk), cudaMemcpyHostToDevice, stream));
  SPARCCL_CUDA_CHECK(cudaMemcpyAsync(ds->sparseByValue, byValue, (set->nsparse ? set->nsparse : 1) * sizeof(uint32_t),
                                     cudaMemcpyHostToDevice, stream));
#define FILL(ptr, value, bytes)                                                         \
  do {                                                                                  \
    if ((ptr) != NULL) SPARCCL_CUDA_CHECK(cudaMemsetAsync((ptr), (value), (bytes), stream)); \
  } while (0)
  FILL(ds->error, 0, floats);
  FILL(ds->errorNext, 0, floats);
  FILL(ds->h, 0, floats);
  FILL(ds->H, 0, floats);
  FILL(ds->prevGrad, 0, floats);
  FILL(ds->momentum, 0, floats);
  FILL(ds->ring, 0, ringBytes); /* padding that no call writes: sums of zeros */
  FILL(ds->layerSteps, 0, n * sizeof(unsigned long long));
  FILL(ds->havePrevGrad, 0, n * sizeof(int));
  FILL(ds->counters, 0, sizeof(DeviceCounters));
  FILL(ds->normRing, 0, ((size_t)comm->config.restartLag + 1) * sizeof(double));
  /* zero here and left zero by every call (select_kernels.cu): the histograms, the arrival
   * counters, the non-finite flags; the wire block's padding, which no call writes */
  FILL(ds->hist, 0, n * SPARCCL_RADIX_BINS * sizeof(uint32_t));
  FILL(ds->arrivals, 0, (n + 1) * sizeof(uint32_t));
  FILL(ds->layerBad, 0, n * sizeof(uint32_t));
  FILL(ds->sendBlock, 0, set->wire.blockBytes);
  FILL(ds->predicted, 0xff, n * sizeof(uint32_t)); /* none yet */
#undef FILL
  return cudaSuccess;
}

/* Allocated, initialised (w <- 1) and synchronised: the set's first call reads it. */
static cudaError_t makeDeviceSet(sparcclComm_t comm, sparcclLayerSet_t* set, DeviceSet* ds,
                                 const DeviceChunk* chunks, const uint32_t* byValue) {
  cudaStream_t stream = nccl(comm)->stream;
  SPARCCL_CUDA_CHECK(allocateState(comm, set, ds));
  SPARCCL_CUDA_CHECK(allocateScratch(comm, set, ds));
  SPARCCL_CUDA_CHECK(initialiseArrays(comm, set, ds, chunks, byValue, stream));
  if (ds->importance) {
    set->device = ds;
    KernelArgs a = sparcclKernelArgs(comm, set, sparcclFloat32, sparcclSum);
    set->device = NULL;
    SPARCCL_CUDA_CHECK(sparcclLaunchImportanceReset(a, ds, stream));
  }
  return cudaStreamSynchronize(stream);
}

static sparcclResult_t deviceCreateSet(sparcclComm_t comm, sparcclLayerSet_t* set) {
  DeviceSet* ds = (DeviceSet*)calloc(1, sizeof(DeviceSet));
  DeviceChunk* chunks = NULL;
  uint32_t* byValue = NULL;
  cudaError_t err = cudaSuccess;
  DeviceScope scope(nccl(comm)->device);
  if (ds == NULL) return sparcclSystemError;
  if (scope.check("sparccl (a new key)") != sparcclSuccess) { free(ds); return sparcclUnhandledCudaError; }
  ds->count = set->count;
  ds->nlayers = (uint32_t)set->nlayers;
  const int laidOut = layOutChunks(set, ds, &chunks, &byValue) == sparcclSuccess;
  if (laidOut) err = makeDeviceSet(comm, set, ds, chunks, byValue);
  free(chunks);
  free(byValue);
  if (laidOut && err == cudaSuccess) {
    set->device = ds;
    return sparcclSuccess;
  }
  (void)cudaGetLastError();
  WARN("layer set of %zu elements: device allocation or copy failed: %s%s", set->count,
       cudaGetErrorString(err),
       sparccl_has_error(comm->config.feedback) && nccl(comm)->errorBuffers == 2
           ? " (e is double-buffered: SPARCCL_ERROR_BUFFERS=1 needs 4 bytes a parameter less)" : "");
  freeDeviceSet(ds, 0);
  return sparcclUnhandledCudaError;
}

/* ------------------------------------------------------------ checks */

static int isDevicePointer(const void* p) {
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError(); /* clears the error of a host pointer */
    return 0;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

/* Host comms in this library refuse device buffers through this hook (src/core.h). */
static int isDevicePointerHook(const void* p) { return p != NULL && isDevicePointer(p); }
static struct DevicePointerHook {
  DevicePointerHook() { sparcclIsDevicePointer = isDevicePointerHook; }
} devicePointerHook;

/* Device memory of the comm's device (or managed memory, which every device reaches). */
static sparcclResult_t deviceCheckPointers(sparcclComm_t comm, const void* a, const void* b,
                                           const char* caller) {
  const void* buffers[2] = {a, b};
  for (int i = 0; i < 2; i++) {
    cudaPointerAttributes attr;
    if (buffers[i] == NULL) continue;
    if (!isDevicePointer(buffers[i])) {
      WARN("%s: a host buffer on a device comm (%p, %p); pass device memory", caller, a, b);
      return sparcclInvalidUsage;
    }
    if (cudaPointerGetAttributes(&attr, buffers[i]) == cudaSuccess &&
        attr.type == cudaMemoryTypeDevice && attr.device != nccl(comm)->device) {
      WARN("%s: buffer %p is memory of device %d; the comm's NCCL communicator is on device %d",
           caller, buffers[i], attr.device, nccl(comm)->device);
      return sparcclInvalidUsage;
    }
  }
  return sparcclSuccess;
}

/* Before a new key's collectives (its layout fingerprint and allocation status exchanges),
 * so that a rank refuses before any: a pending CUDA error, a capture. */
static sparcclResult_t deviceCheckNewKey(sparcclComm_t comm, void* stream, const char* caller) {
  SPARCCLCHECK(checkPendingError(caller));
  ON_DEVICE(nccl(comm)->device, caller);
  return refuseCapture((cudaStream_t)stream, nccl(comm)->device, caller,
                       "a new key allocates and synchronises: make the first call on a key "
                       "outside the graph");
}

/* ------------------------------------------------------------ calls */

/* This rank's compression could not be launched; its exchange still goes out (a rank that
 * returned before it would leave the others waiting in theirs), with a zeroed call check,
 * so that every rank refuses the call (SPEC 4: no output, no state change, no rank's call
 * sequence moves).  The scratch that a compression's passes leave zero is zeroed again. */
static cudaError_t sendRefusedBlock(const sparcclLayerSet_t* set, DeviceSet* ds, cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(sparccl_wire_check(&set->wire, ds->sendBlock), 0, SPARCCL_CALL_CHECK_BYTES, stream);
  if (err == cudaSuccess) err = cudaMemsetAsync(ds->hist, 0, set->nlayers * SPARCCL_RADIX_BINS * sizeof(uint32_t), stream);
  if (err == cudaSuccess) err = cudaMemsetAsync(ds->arrivals, 0, (set->nlayers + 1) * sizeof(uint32_t), stream);
  if (err == cudaSuccess) err = cudaMemsetAsync(ds->layerBad, 0, set->nlayers * sizeof(uint32_t), stream);
  return err;
}

/* A block whose check could not be zeroed is not sent: other ranks could sum it.  Their
 * calls then fail or wait, as on a dead rank; the comm is to be aborted. */
static sparcclResult_t refusalNotSent(const char* caller, cudaError_t launch, cudaError_t zero) {
  WARN("%s: a launch failed (%s) and this rank's block could not be marked refused (%s): the "
       "exchange is not sent, the state is unchanged; abort the comm (sparcclCommAbort)",
       caller, cudaGetErrorString(launch), cudaGetErrorString(zero));
  return sparcclUnhandledCudaError;
}

/* checkSizes: the sizes of a call's exchanges (each collective's bytes and kind), agreed
 * on every rank before anything is enqueued, so that ranks whose calls disagree are refused
 * instead of meeting in NCCL collectives of different sizes.  It synchronises. */
static sparcclResult_t agreeExchanges(sparcclComm_t comm, cudaStream_t stream, const size_t* bytes,
                                      const int* alltoall, int count, const char* caller) {
  if (!nccl(comm)->checkSizes) return sparcclSuccess;
  SPARCCLCHECK(refuseCapture(stream, nccl(comm)->device, caller,
                             "SPARCCL_CHECK_SIZES=1 synchronises every call: capture with it off"));
  for (int i = 0; i < count; i++) {
    sparcclResult_t res = sparcclAgreeSize(comm->nranks, bytes[i], alltoall[i], rawGather,
                                           comm->transport);
    if (res == sparcclInvalidUsage) comm->stats.refusedCalls++;
    SPARCCLCHECK(res);
  }
  return sparcclSuccess;
}

/* Warm-up's calls (SPEC 9) are decided on the host, by the key's count of calls made
 * (set->calls): a graph would replay a dense call as dense forever, so a dense call is
 * refused during a capture (include/sparccl_nccl.h). */
static sparcclResult_t refuseDenseCapture(sparcclComm_t comm, cudaStream_t stream,
                                          const char* caller) {
  return refuseCapture(stream, nccl(comm)->device, caller,
                       "the key is in its warm-up (its first warmupSteps calls are dense, "
                       "SPEC 9), which a graph cannot replay: capture its calls after those");
}

/* The ring's reduce-scatter exchange: chunk r of send to rank r, rank r's chunk for this
 * rank into slot r of recv, as point-to-point pairs in one group (NCCL's alltoall); a
 * failure inside the group still ends it. */
static ncclResult_t exchangeShards(ncclComm_t nc, const uint8_t* send, uint8_t* recv,
                                   size_t bytes, int nranks, cudaStream_t stream) {
  ncclResult_t res = ncclGroupStart(), end;
  if (res != ncclSuccess) return res;
  for (int r = 0; r < nranks && res == ncclSuccess; r++) {
    res = ncclSend(send + (size_t)r * bytes, bytes, ncclUint8, r, nc, stream);
    if (res == ncclSuccess) res = ncclRecv(recv + (size_t)r * bytes, bytes, ncclUint8, r, nc, stream);
  }
  end = ncclWait(nc, ncclGroupEnd());
  return res != ncclSuccess ? res : end;
}

static sparcclResult_t ncclFailure(const char* caller, const char* what, ncclResult_t nres) {
  WARN("%s: %s failed: %s; state unchanged", caller, what, ncclGetErrorString(nres));
  return nres == ncclSystemError ? sparcclSystemError : sparcclRemoteError;
}

/* The check slots of one of the ring's exchanges: the reduce-scatter's chunks sent and
 * received (scatter), or the allgather's gathered blocks. */
static KernelArgs ringCheckArgs(const KernelArgs& a, const RingParts& p, int scatter) {
  KernelArgs k = a;
  if (scatter) k.sendBlock = p.scatterSend;
  k.recvBlocks = scatter ? p.scatterRecv : p.gatherRecv;
  k.wire = scatter ? p.ring.scatter : p.ring.gather;
  k.valueCount = 0;
  return k;
}

/* Where the ring's x, flags and sums are, for the pack and the finish (DenseLayout). */
static DenseLayout ringLayout(const RingParts& p, uint32_t nranks) {
  DenseLayout d;
  memset(&d, 0, sizeof(d));
  d.ring = 1;
  d.chunk = p.ring.chunk;
  d.values = p.scatterSend;
  d.valueStride = p.ring.scatter.blockBytes;
  d.flags = (uint8_t*)sparccl_wire_flags(&p.ring.scatter, p.scatterSend);
  d.flagCopies = nranks;
  d.sums = p.gatherRecv;
  d.sumWire = p.ring.gather;
  d.received = p.scatterRecv;
  d.receivedWire = p.ring.scatter;
  return d;
}

/* A dense call at the volume of a ring allreduce (SPEC 9; the host's ringAllReduce): once
 * anything is enqueued both exchanges go out, with zeroed checks where a launch failed, so
 * that every rank refuses the call (docs/DEVICE.md, "Dense calls"). */
static sparcclResult_t deviceDenseAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set,
                                            const void* send, void* recv, int dtype, int op,
                                            cudaStream_t stream) {
  static const char caller[] = "sparcclAllReduce";
  NcclTransport* t = nccl(comm);
  DeviceSet* ds = (DeviceSet*)set->device;
  const RingParts p = ringParts(comm, set, ds->ring);
  const sparcclDenseRing_t& ring = p.ring;
  const uint32_t n = (uint32_t)comm->nranks;
  ncclResult_t nres;
  SPARCCLCHECK(refuseDenseCapture(comm, stream, caller));
  const size_t sizes[2] = {ring.scatter.blockBytes, ring.gather.blockBytes};
  const int alltoall[2] = {1, 0};
  SPARCCLCHECK(agreeExchanges(comm, stream, sizes, alltoall, 2, caller));
  KernelArgs a = sparcclKernelArgs(comm, set, dtype, op);
  a.dense = 1;
  a.checkFingerprint = sparcclCallCheck(comm, set, dtype, op, SPARCCL_CALL_DENSE).fingerprint;
  a.bytesSent = (unsigned long long)(n - 1) * (ring.scatter.blockBytes + ring.gather.blockBytes);
  const KernelArgs scatter = ringCheckArgs(a, p, 1), gather = ringCheckArgs(a, p, 0);
  const DenseLayout d = ringLayout(p, n);
  cudaError_t err = sparcclLaunchCallCheckWrite(scatter, stream, n);
  if (err == cudaSuccess) err = sparcclLaunchDensePack(a, ds, d, send, stream);
  if (err != cudaSuccess) { /* every chunk's check zeroed: every rank refuses */
    cudaError_t zero = cudaMemsetAsync(p.scatterSend, 0, (size_t)n * ring.scatter.blockBytes, stream);
    if (zero == cudaSuccess) zero = sendRefusedBlock(set, ds, stream);
    if (zero != cudaSuccess) return refusalNotSent(caller, err, zero);
  }
  nres = exchangeShards(t->nccl, p.scatterSend, p.scatterRecv, ring.scatter.blockBytes, (int)n, stream);
  if (nres != ncclSuccess) return ncclFailure(caller, "the reduce-scatter (ncclSend, ncclRecv)", nres);
  if (err == cudaSuccess) err = sparcclLaunchCallCheckVerify(scatter, stream);
  if (err == cudaSuccess) err = sparcclLaunchShardSums(a, ring, p.scatterRecv, p.gatherSend, p.gatherRecv, stream);
  if (err != cudaSuccess) {
    cudaError_t zero = cudaMemsetAsync(sparccl_wire_check(&ring.gather, p.gatherSend), 0, SPARCCL_CALL_CHECK_BYTES, stream);
    if (zero != cudaSuccess) return refusalNotSent(caller, err, zero);
  }
  nres = ncclWait(t->nccl, ncclAllGather(p.gatherSend, p.gatherRecv, ring.gather.blockBytes, ncclUint8,
                                         t->nccl, stream));
  if (err != cudaSuccess) {
    WARN("%s: a launch of the dense call failed: %s; the exchanges went out with checks that "
         "make every rank refuse this call; this rank's state is unchanged", caller,
         cudaGetErrorString(err));
    return sparcclUnhandledCudaError;
  }
  if (nres != ncclSuccess) return ncclFailure(caller, "ncclAllGather", nres);
  err = sparcclLaunchCallCheckVerify(gather, stream);
  if (err == cudaSuccess) err = sparcclLaunchDenseFinish(a, ds, d, send, recv, stream);
  if (err != cudaSuccess) {
    WARN("%s: the dense call's output launch failed: %s", caller, cudaGetErrorString(err));
    return sparcclUnhandledCudaError;
  }
  set->calls++;
  return sparcclSuccess;
}

/* The hot path: nothing here waits for the device, allocates, or keeps the stream. */
static sparcclResult_t deviceAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set,
                                       const void* send, void* recv, int dtype, int op,
                                       void* streamArg, const char* caller) {
  NcclTransport* t = nccl(comm);
  DeviceSet* ds = (DeviceSet*)set->device;
  cudaStream_t stream = (cudaStream_t)streamArg;
  ncclResult_t nres;
  SPARCCLCHECK(checkPendingError(caller));
  ON_DEVICE(t->device, caller);
  NCCLCHECK(ncclReady(t->nccl), caller); /* refused before anything is enqueued */
  if (sparcclNextCallDense(comm, set))
    return deviceDenseAllReduce(comm, set, send, recv, dtype, op, stream);
  const int gather = 0;
  SPARCCLCHECK(agreeExchanges(comm, stream, &set->wire.blockBytes, &gather, 1, caller));
  KernelArgs a = sparcclKernelArgs(comm, set, dtype, op);
  cudaError_t err = sparcclLaunchCallCheckWrite(a, stream);
  if (err == cudaSuccess) err = launchCompress(a, ds, send, stream);
  if (err != cudaSuccess) {
    cudaError_t zero = sendRefusedBlock(set, ds, stream);
    if (zero != cudaSuccess) return refusalNotSent(caller, err, zero);
  }
  /* Once anything is enqueued the exchange goes out, whatever happened.  A failure of it
   * leaves the state as it was: nothing is written before the exchange. */
  nres = ncclWait(t->nccl, ncclAllGather(ds->sendBlock, ds->recvBlocks, set->wire.blockBytes,
                                         ncclUint8, t->nccl, stream));
  if (err != cudaSuccess) {
    WARN("%s: compression launch failed: %s; the exchange went out with a block that makes "
         "every rank refuse this call; this rank's state is unchanged", caller, cudaGetErrorString(err));
    return sparcclUnhandledCudaError;
  }
  if (nres != ncclSuccess) return ncclFailure(caller, "ncclAllGather", nres);
  err = sparcclLaunchCallCheckVerify(a, stream);
  if (err == cudaSuccess) err = launchDecompress(a, ds, send, recv, stream);
  if (err != cudaSuccess) {
    WARN("%s: decompression launch failed: %s", caller, cudaGetErrorString(err));
    return sparcclUnhandledCudaError;
  }
  set->calls++; /* the warm-up's clock: calls made (a refusal on the device counts too) */
  return sparcclSuccess;
}

static sparcclResult_t deviceProbe(sparcclComm_t comm, sparcclLayerSet_t* set,
                                   const void* params, const void* grad, void* out, int dtype,
                                   void* stream) {
  DeviceSet* ds = (DeviceSet*)set->device;
  SPARCCLCHECK(checkPendingError("sparcclImportanceProbe"));
  ON_DEVICE(nccl(comm)->device, "sparcclImportanceProbe");
  KernelArgs a = sparcclKernelArgs(comm, set, dtype, sparcclSum);
  cudaError_t err = sparcclLaunchProbe(a, ds, params, grad, out,
                                       (float)comm->config.importanceGamma, (cudaStream_t)stream);
  CUDACHECK(err, "sparcclImportanceProbe");
  return sparcclSuccess;
}

static sparcclResult_t deviceUpdate(sparcclComm_t comm, sparcclLayerSet_t* set, const void* q,
                                    const void* g, int dtype, void* stream) {
  DeviceSet* ds = (DeviceSet*)set->device;
  SPARCCLCHECK(checkPendingError("sparcclImportanceUpdate"));
  ON_DEVICE(nccl(comm)->device, "sparcclImportanceUpdate");
  KernelArgs a = sparcclKernelArgs(comm, set, dtype, sparcclSum);
  cudaError_t err = sparcclLaunchImportanceUpdate(
      a, ds, q, g, comm->config.importance == sparcclImportanceSimplex, (cudaStream_t)stream);
  CUDACHECK(err, "sparcclImportanceUpdate");
  return sparcclSuccess;
}

/* ------------------------------------------------------------ calls without a stream */

static sparcclResult_t deviceResetImportance(sparcclComm_t comm, sparcclLayerSet_t* set) {
  static const char caller[] = "sparcclImportanceReset";
  NcclTransport* t = nccl(comm);
  DeviceSet* ds = (DeviceSet*)set->device;
  ON_DEVICE(t->device, caller);
  SPARCCLCHECK(quiesce(comm, caller, 0));
  if (ds->importance == NULL) return sparcclSuccess;
  KernelArgs a = sparcclKernelArgs(comm, set, sparcclFloat32, sparcclSum);
  CUDACHECK(sparcclLaunchImportanceReset(a, ds, t->stream), caller);
  return synchronise(t->stream, t->device, caller);
}

static sparcclResult_t deviceRestartSet(sparcclComm_t comm, sparcclLayerSet_t* set) {
  static const char caller[] = "sparcclRestart";
  NcclTransport* t = nccl(comm);
  ON_DEVICE(t->device, caller);
  SPARCCLCHECK(quiesce(comm, caller, 0));
  KernelArgs a = sparcclKernelArgs(comm, set, sparcclFloat32, sparcclSum);
  CUDACHECK(sparcclLaunchRestart(a, (DeviceSet*)set->device, 1, t->stream), caller);
  return synchronise(t->stream, t->device, caller);
}

static sparcclResult_t deviceScale(sparcclComm_t comm, sparcclLayerSet_t* set, float factor) {
  static const char caller[] = "sparcclScaleState";
  NcclTransport* t = nccl(comm);
  ON_DEVICE(t->device, caller);
  SPARCCLCHECK(quiesce(comm, caller, 0));
  KernelArgs a = sparcclKernelArgs(comm, set, sparcclFloat32, sparcclSum);
  CUDACHECK(sparcclLaunchScale(a, (DeviceSet*)set->device, factor, t->stream), caller);
  return synchronise(t->stream, t->device, caller);
}

/* Device arrays <-> the host mirror: each layer's e, h, H, w, previous g in the order
 * src/comm.c lays them out in set->stateMemory, plus step counters and restart history.
 * After quiesce (every call's work done, on any stream), every copy goes on the comm's
 * stream, synchronised before returning: a plain cudaMemcpy from pageable memory may
 * return before its DMA has landed, and runs on the legacy stream. */
static sparcclResult_t transferState(sparcclComm_t comm, sparcclLayerSet_t* set, int toHost) {
  const char* caller = toHost ? "sparcclSaveState" : "sparcclLoadState";
  DeviceSet* ds = (DeviceSet*)set->device;
  cudaStream_t stream = nccl(comm)->stream;
  ON_DEVICE(nccl(comm)->device, caller);
  SPARCCLCHECK(quiesce(comm, caller, 0));
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
    float* host[] = {l->error, l->h, l->H, l->importance, l->prevGrad, l->momentum};
    float* dev[] = {error, ds->h, ds->H, ds->importance, ds->prevGrad, ds->momentum};
    for (int j = 0; j < 6; j++) {
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
    set->calls = counters.keyCalls; /* graph replays counted, calls refused on the device not */
  } else {
    counters.steps = set->steps;
    counters.normCount = set->normCount;
    counters.keyCalls = set->calls;
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
  NcclTransport* t = nccl(comm);
  ON_DEVICE(t->device, "sparcclCommGetStats");
  SPARCCLCHECK(quiesce(comm, "sparcclCommGetStats", 0));
  for (size_t i = 0; i < comm->nsets; i++)
    SPARCCLCHECK(addCounters((const DeviceSet*)comm->sets[i]->device, stats, t->stream));
  return sparcclSuccess;
}

static void deviceDestroy(sparcclComm_t comm) { (void)comm; }

/* A phase call's kernel arguments: its check's sequence is the key's calls (SPEC 10). */
static KernelArgs phaseArgs(sparcclComm_t comm, const sparcclLayerSet_t* set, int dtype, int op,
                            int dense, uint64_t fingerprint) {
  KernelArgs a = sparcclKernelArgs(comm, set, dtype, op);
  a.phase = 1;
  a.dense = dense;
  a.checkFingerprint = fingerprint;
  return a;
}

/* The phase API's halves (src/phase.c, SPEC 10): deviceAllReduce's two halves around the
 * caller's exchange, the block copied out and g kept; a refused decompress does nothing on
 * the device and counts in refusedCalls (docs/DEVICE.md, "Device comms and streams"). */
static sparcclResult_t devicePhaseCompress(sparcclComm_t comm, sparcclLayerSet_t* set,
                                           const void* send, int dtype, void* block,
                                           uint64_t fingerprint, void* streamArg) {
  static const char caller[] = "sparcclCompressTagged";
  DeviceSet* ds = (DeviceSet*)set->device;
  cudaStream_t stream = (cudaStream_t)streamArg;
  const int dense = sparcclNextCallDense(comm, set);
  SPARCCLCHECK(checkPendingError(caller));
  ON_DEVICE(nccl(comm)->device, caller);
  if (dense) SPARCCLCHECK(refuseDenseCapture(comm, stream, caller));
  if (ds->phaseGrad == NULL) { /* a key's first compress allocates, as its first call does */
    SPARCCLCHECK(deviceCheckNewKey(comm, streamArg, caller));
    CUDACHECK(cudaMalloc(&ds->phaseGrad, set->count * sizeof(float)), caller);
  }
  KernelArgs a = phaseArgs(comm, set, dtype, sparcclSum, dense, fingerprint);
  if (dense) {
    /* as src/dense.c's sparcclPackDenseBlock: x in float32, the flags, the check; padding 0 */
    const sparcclWire_t wire = sparcclDenseBlockWire(set);
    const size_t xBytes = set->count * sizeof(float);
    KernelArgs w = a; /* the check into the caller's block; the gathered blocks are the caller's */
    w.sendBlock = (uint8_t*)block;
    w.recvBlocks = NULL;
    w.wire = wire;
    DenseLayout d;
    memset(&d, 0, sizeof(d));
    d.chunk = set->count; /* one shard: x at its element's offset */
    d.values = (uint8_t*)block;
    d.flags = (uint8_t*)sparccl_wire_flags(&wire, (uint8_t*)block);
    d.flagCopies = 1;
    CUDACHECK(cudaMemsetAsync((uint8_t*)block + xBytes, 0, wire.check - xBytes, stream), caller);
    CUDACHECK(sparcclLaunchCallCheckWrite(w, stream), caller);
    CUDACHECK(sparcclLaunchDensePack(a, ds, d, send, stream), caller);
  } else {
    CUDACHECK(sparcclLaunchCallCheckWrite(a, stream), caller);
    CUDACHECK(launchCompress(a, ds, send, stream), caller);
    CUDACHECK(cudaMemcpyAsync(block, ds->sendBlock, set->wire.blockBytes, cudaMemcpyDeviceToDevice, stream), caller);
  }
  CUDACHECK(cudaMemcpyAsync(ds->phaseGrad, send, set->count * sparccl_dtype_size(dtype),
                            cudaMemcpyDeviceToDevice, stream), caller);
  return sparcclSuccess;
}

static sparcclResult_t devicePhaseDecompress(sparcclComm_t comm, sparcclLayerSet_t* set,
                                             const void* blocks, void* recv, int dtype, int op,
                                             uint64_t fingerprint, void* streamArg) {
  static const char caller[] = "sparcclDecompressTagged";
  DeviceSet* ds = (DeviceSet*)set->device;
  cudaStream_t stream = (cudaStream_t)streamArg;
  const int dense = sparcclNextCallDense(comm, set); /* as at the compress: no call between */
  SPARCCLCHECK(checkPendingError(caller));
  ON_DEVICE(nccl(comm)->device, caller);
  if (dense) SPARCCLCHECK(refuseDenseCapture(comm, stream, caller));
  KernelArgs a = phaseArgs(comm, set, dtype, op, dense, fingerprint);
  if (dense) {
    /* the caller's gathered blocks read where they are: whole vectors, no indices */
    const sparcclWire_t wire = sparcclDenseBlockWire(set);
    KernelArgs v = a;
    v.recvBlocks = (uint8_t*)blocks;
    v.wire = wire;
    v.valueCount = 0;
    a.bytesSent = wire.blockBytes; /* as the host's (src/dense.c, sparcclFinishDenseCall) */
    DenseLayout d;
    memset(&d, 0, sizeof(d));
    d.sums = (const uint8_t*)blocks;
    d.sumWire = wire;
    d.received = (const uint8_t*)blocks;
    d.receivedWire = wire;
    CUDACHECK(sparcclLaunchCallCheckVerify(v, stream), caller);
    CUDACHECK(sparcclLaunchDenseFinish(a, ds, d, ds->phaseGrad, recv, stream), caller);
  } else {
    CUDACHECK(cudaMemcpyAsync(ds->recvBlocks, blocks, set->wire.blockBytes * (size_t)comm->nranks,
                              cudaMemcpyDeviceToDevice, stream), caller);
    CUDACHECK(sparcclLaunchCallCheckVerify(a, stream), caller);
    CUDACHECK(launchDecompress(a, ds, ds->phaseGrad, recv, stream), caller);
  }
  set->calls++;
  return sparcclSuccess;
}

static sparcclResult_t deviceCheckStream(sparcclComm_t comm, void* stream, const char* caller) {
  (void)comm; (void)stream; (void)caller;
  return sparcclSuccess; /* any stream of the comm's device, the legacy default included */
}

static const sparcclBackend_t deviceOps = {
    "device", deviceCreateSet, deviceFreeSet, deviceQuiesce, deviceCheckPointers,
    deviceCheckStream, deviceCheckNewKey,
    deviceAllReduce, deviceProbe, deviceUpdate, deviceResetImportance, deviceRestartSet,
    deviceScale, devicePullState, devicePushState, deviceStats, deviceDestroy,
    devicePhaseCompress, devicePhaseDecompress};

/* ------------------------------------------------------------ creation */

/* The NCCL transport of nc: its own stream and call sequence on nc's device. */
static sparcclResult_t makeTransport(ncclComm_t nc, int owned, int errorBuffers, const char* caller,
                                     sparcclTransport_t** out) {
  sparcclTransport_t* transport;
  NcclTransport* t;
  int rank, nranks, device;
  /* A non-blocking communicator may still be initialising: nothing may be asked of it
   * before ncclCommGetAsyncError stops saying ncclInProgress. */
  NCCLCHECK(ncclReady(nc), caller);
  NCCLCHECK(ncclCommUserRank(nc, &rank), caller);
  NCCLCHECK(ncclCommCount(nc, &nranks), caller);
  NCCLCHECK(ncclCommCuDevice(nc, &device), caller);
  transport = (sparcclTransport_t*)calloc(1, sizeof(*transport));
  t = (NcclTransport*)calloc(1, sizeof(*t));
  if (transport == NULL || t == NULL) { free(transport); free(t); return sparcclSystemError; }
  t->nccl = nc;
  t->owned = owned;
  t->device = device;
  t->errorBuffers = errorBuffers;
  DeviceScope scope(device); /* the comm's stream is its device's */
  if (scope.check(caller) != sparcclSuccess ||
      cudaStreamCreateWithFlags(&t->stream, cudaStreamNonBlocking) != cudaSuccess) {
    free(transport); free(t);
    WARN("%s: cannot create a stream on device %d", caller, device);
    return sparcclUnhandledCudaError;
  }
  transport->impl = t;
  if (cudaMalloc((void**)&t->callSequence, sizeof(unsigned long long)) != cudaSuccess ||
      cudaMemsetAsync(t->callSequence, 0, sizeof(unsigned long long), t->stream) != cudaSuccess ||
      cudaStreamSynchronize(t->stream) != cudaSuccess) {
    WARN("%s: cannot allocate the call sequence on device %d: %s", caller, device,
         cudaGetErrorString(cudaGetLastError()));
    t->owned = 0;
    ncclTransportDestroy(transport);
    return sparcclUnhandledCudaError;
  }
  transport->rank = rank;
  transport->nranks = nranks;
  transport->name = "nccl";
  transport->allgather = ncclHostAllgather;
  transport->destroy = ncclTransportDestroy;
  *out = transport;
  return sparcclSuccess;
}

static sparcclResult_t initOnNccl(sparcclComm_t* out, ncclComm_t nc, int owned,
                                  const sparcclConfig_t* config, const char* caller) {
  sparcclConfig_t resolved;
  sparcclTransport_t* transport = NULL;
  sparcclResult_t res;
  if (out == NULL) {
    WARN("%s: comm is NULL", caller);
    return sparcclInvalidArgument;
  }
  SPARCCLCHECK(sparcclConfigResolve(config, &resolved));
  SPARCCLCHECK(makeTransport(nc, owned, resolved.errorBuffers, caller, &transport));
  ((NcclTransport*)transport->impl)->checkSizes = resolved.checkSizes;
  res = sparcclCommCreate(out, transport, &resolved);
  if (res != sparcclSuccess) {
    ((NcclTransport*)transport->impl)->owned = 0; /* the caller keeps what it passed */
    ncclTransportDestroy(transport);
    return res;
  }
  (*out)->backend = &deviceOps;
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

/* Nothing on this path waits for the device: a collective may be stuck.  An owned
 * communicator is aborted first (NCCL stops its kernels), after which freeing device memory
 * waits only for work that ends.  The caller's cannot be aborted here, so the device state
 * stays allocated (cudaFree would wait for the device, the stuck collective with it). */
extern "C" SPARCCL_API sparcclResult_t sparcclCommAbort(sparcclComm_t comm) {
  NcclTransport* t;
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclCommAbort"));
  if (comm->backend != &deviceOps) return sparcclCommDestroy(comm);
  t = nccl(comm);
  t->aborting = 1;
  if (t->owned) {
    ncclCommAbort(t->nccl);
    t->owned = 0;
  } else {
    t->keepDeviceMemory = 1;
    INFO("sparcclCommAbort: the NCCL communicator is the caller's: the device state of %zu "
         "key(s) is left allocated, since freeing it would wait for the device", comm->nsets);
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
  if (comm->backend != &deviceOps) { *asyncError = sparcclSuccess; return sparcclSuccess; }
  NCCLCHECK(ncclCommGetAsyncError(nccl(comm)->nccl, &nres), "sparcclCommGetAsyncError");
  *asyncError = nres == ncclSuccess ? sparcclSuccess
                : nres == ncclInProgress ? sparcclInProgress : sparcclRemoteError;
  return sparcclSuccess;
}
