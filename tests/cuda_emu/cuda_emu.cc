/* The CPU emulator's runtime (see cuda_emu.h): devices, memory, streams (immediate or
 * deferred), graphs, events, errors and injected faults, the block scheduler (cooperative
 * fibers, in forward, reverse or seeded random order) and a fake NCCL over MPI (nccl.h). */
#include "cuda_emu.h"
#include "nccl.h"
#include "../test_rng.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <deque>
#include <map>
#include <vector>

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

/* Work a deferred stream holds: `seq` orders it against other streams' (cudaDeviceSynchronize). */
struct HeldOp {
  unsigned long long seq;
  std::function<void()> op;
};
struct CUstream_st {
  int capturing;
  int invalidated;
  cudaGraph_t graph;
  unsigned flags;  /* cudaStreamNonBlocking: not ordered with the legacy stream */
  int device;      /* current at its creation */
  int deferred;    /* cudaEmuStreamDefer */
  int destroyed;   /* kept, so that a later use is caught */
  std::deque<HeldOp> held;
};
struct CUgraph_st { std::vector<std::function<void()>> ops; };
struct CUgraphExec_st { std::vector<std::function<void()>> ops; };
struct CUevent_st {
  int recorded;
  double ms; /* CLOCK_MONOTONIC at the record, in milliseconds */
  cudaStream_t stream; /* of the last record (NULL: the legacy stream) */
};

namespace {
thread_local cudaError_t lastError = cudaSuccess;
const int kDevices = 2;
thread_local int currentDevice = 0;
struct Allocation {
  size_t bytes;
  int device;
};
std::map<uintptr_t, Allocation> allocations; /* device memory: base -> size, device */
int capturingStreams = 0;                /* streams in global-mode capture */
unsigned long long launches = 0, blocks = 0;
unsigned long long enqueued = 0;          /* HeldOp::seq */
/* cudaEmuInjectFault: launches and memsets left to fail, with what; the sticky error */
unsigned faultsLeft[2] = {0, 0};
cudaError_t faultError[2] = {cudaSuccess, cudaSuccess};
cudaError_t stickyError = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  lastError = e;
  return e;
}

/* An injected fault of this kind (cudaEmuFaultLaunch, cudaEmuFaultMemset), if one is due. */
cudaError_t injectedFault(int kind) {
  if (faultsLeft[kind] == 0) return cudaSuccess;
  faultsLeft[kind]--;
  return fail(faultError[kind]);
}

cudaStream_t legacyAsNull(cudaStream_t s) { return s == cudaStreamLegacy ? NULL : s; }

cudaError_t destroyedStream(cudaStream_t s) {
  fprintf(stderr, "cuda_emu: stream %p used after cudaStreamDestroy\n", (void*)s);
  return fail(cudaErrorInvalidResourceHandle);
}

/* ------------------------------------------------------------ order */
/* CUDA_EMU_ORDER: unset, empty or "forward"; "reverse"; "random" or "random:SEED".  Random:
 * the blocks of each launch in a shuffled order; within a block, after the start and after
 * every barrier, the next thread to resume drawn at random among those not yet at the
 * barrier; and a thread may yield to another at each emulated atomic (cuda_emu::atomicPoint),
 * so threads interleave between barriers.  The generator is the tests' splitmix64
 * (tests/test_rng.h) on a state of the emulator's own, and a run is fully determined by its
 * seed (printed once to stderr). */
enum Order { kForward, kReverse, kRandom };
uint64_t rngState;

uint64_t splitmix64() { return test_random_u64(&rngState); }

/* Uniform in [0, n), n > 0 (multiply-shift; the bias is below 2^-32 for the n used here). */
uint64_t randomBelow(uint64_t n) { return (uint64_t)(((unsigned __int128)splitmix64() * n) >> 64); }

Order readOrder() {
  const char* env = getenv("CUDA_EMU_ORDER");
  if (env == NULL || *env == 0 || strcmp(env, "forward") == 0) return kForward;
  if (strcmp(env, "reverse") == 0) return kReverse;
  if (strncmp(env, "random", 6) == 0 && (env[6] == 0 || env[6] == ':')) {
    uint64_t seed;
    if (env[6] == ':') {
      char* end = NULL;
      errno = 0;
      seed = strtoull(env + 7, &end, 0);
      if (env[7] < '0' || env[7] > '9' || *end != 0 || errno != 0) {
        fprintf(stderr, "cuda_emu: CUDA_EMU_ORDER=%s: the seed is not an unsigned number\n", env);
        abort();
      }
    } else { /* a fresh seed per run: clock and process id, kept to 32 bits to be easy to copy */
      struct timespec now;
      clock_gettime(CLOCK_REALTIME, &now);
      rngState = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
      rngState ^= (uint64_t)getpid() << 32;
      seed = splitmix64() & 0xffffffffu;
    }
    rngState = seed;
    fprintf(stderr, "cuda_emu: random block and thread order, CUDA_EMU_ORDER=random:%llu "
            "reproduces this run\n", (unsigned long long)seed);
    cuda_emu::yieldAtAtomics = 1;
    return kRandom;
  }
  fprintf(stderr, "cuda_emu: CUDA_EMU_ORDER=%s: expected forward, reverse, random or random:SEED\n", env);
  abort();
}

Order order() {
  static int order = -1;
  if (order < 0) order = (int)readOrder();
  return (Order)order;
}

/* A call that a global-mode capture forbids (allocation, synchronisation): fails and
 * invalidates every capture in progress, as on a GPU. */
std::vector<CUstream_st*> liveStreams;

cudaError_t captureForbidden() {
  if (capturingStreams == 0) return cudaSuccess;
  for (CUstream_st* s : liveStreams)
    if (s->capturing) s->invalidated = 1;
  fprintf(stderr, "cuda_emu: a synchronising or allocating call during a stream capture\n");
  return fail(cudaErrorStreamCaptureUnsupported);
}

const char* findAllocation(const void* p, size_t* left, int* device = NULL) {
  uintptr_t a = (uintptr_t)p;
  auto it = allocations.upper_bound(a);
  if (it == allocations.begin()) return NULL;
  --it;
  if (a >= it->first + it->second.bytes) return NULL;
  if (left) *left = it->first + it->second.bytes - a;
  if (device) *device = it->second.device;
  return (const char*)it->first;
}

/* ------------------------------------------------------------ deferred streams */
void runHeld(CUstream_st* s) {
  while (!s->held.empty()) {
    std::function<void()> op = std::move(s->held.front().op);
    s->held.pop_front();
    op();
  }
}

/* What the deferred streams hold (only the blocking ones': what legacy-stream work waits
 * for), in the order it was enqueued. */
void runAllHeld(bool blockingOnly) {
  for (;;) {
    CUstream_st* next = NULL;
    for (CUstream_st* s : liveStreams)
      if (!s->held.empty() && (!blockingOnly || !(s->flags & cudaStreamNonBlocking)) &&
          (next == NULL || s->held.front().seq < next->held.front().seq))
        next = s;
    if (next == NULL) return;
    std::function<void()> op = std::move(next->held.front().op);
    next->held.pop_front();
    op();
  }
}

/* ------------------------------------------------------------ fibers */
struct Fiber {
  ucontext_t context;
  char* stack;
  int done;
};
const size_t kStack = 256 * 1024;
thread_local std::vector<Fiber> fibers;
thread_local ucontext_t scheduler;
thread_local const std::function<void()>* body;
thread_local int current = -1;
thread_local int yielded;                    /* the current fiber left at a yield, not a barrier */
thread_local std::vector<unsigned> runnable; /* random order: threads not yet at the barrier */
thread_local std::vector<unsigned long long> blockOrder; /* random order: one launch's blocks */

void trampoline() {
  (*body)();
  fibers[(size_t)current].done = 1;
  /* returning resumes uc_link, the scheduler */
}

void setThreadIdx(unsigned t, dim3 block) {
  threadIdx.x = t % block.x;
  threadIdx.y = (t / block.x) % block.y;
  threadIdx.z = t / (block.x * block.y);
}

void runBlock(dim3 block, const std::function<void()>& fn) {
  unsigned n = block.x * block.y * block.z;
  while (fibers.size() < n) {
    Fiber f;
    f.stack = (char*)malloc(kStack);
    if (f.stack == NULL) { fprintf(stderr, "cuda_emu: out of memory\n"); abort(); }
    fibers.push_back(f);
  }
  body = &fn;
  for (unsigned t = 0; t < n; t++) {
    Fiber& f = fibers[t];
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack;
    f.context.uc_stack.ss_size = kStack;
    f.context.uc_link = &scheduler;
    makecontext(&f.context, trampoline, 0);
    f.done = 0;
  }
  for (;;) { /* one phase: every live thread runs to the next barrier or to its end */
    unsigned finished = 0, waiting = 0;
    if (order() == kRandom) {
      /* resume a thread drawn at random among those still running in this phase; one that
       * yielded (at an atomic) stays among them, one at the barrier or at its end leaves */
      runnable.clear();
      for (unsigned t = 0; t < n; t++)
        if (!fibers[t].done) runnable.push_back(t);
      while (!runnable.empty()) {
        size_t i = (size_t)randomBelow(runnable.size());
        unsigned t = runnable[i];
        current = (int)t;
        yielded = 0;
        setThreadIdx(t, block);
        swapcontext(&scheduler, &fibers[t].context);
        if (yielded) continue;
        if (fibers[t].done) finished++;
        else waiting++;
        runnable[i] = runnable.back();
        runnable.pop_back();
      }
    } else {
      for (unsigned j = 0; j < n; j++) {
        unsigned t = order() == kReverse ? n - 1 - j : j;
        if (fibers[t].done) continue;
        current = (int)t;
        setThreadIdx(t, block);
        swapcontext(&scheduler, &fibers[t].context);
        if (fibers[t].done) finished++;
        else waiting++;
      }
    }
    current = -1;
    if (waiting == 0) return;
    if (finished != 0) {
      fprintf(stderr, "cuda_emu: block (%u,%u,%u): __syncthreads reached by %u threads while %u "
              "returned (a barrier in divergent code)\n", blockIdx.x, blockIdx.y, blockIdx.z,
              waiting, finished);
      abort();
    }
  }
}
} // namespace

namespace cuda_emu {
int yieldAtAtomics = 0;

void syncthreads() {
  if (current < 0) { fprintf(stderr, "cuda_emu: __syncthreads outside a kernel\n"); abort(); }
  swapcontext(&fibers[(size_t)current].context, &scheduler);
}

void yieldAtAtomic() {
  if (current < 0 || randomBelow(2) != 0) return; /* half the time: keep running */
  yielded = 1;
  swapcontext(&fibers[(size_t)current].context, &scheduler);
}

cudaError_t enqueue(cudaStream_t stream, std::function<void()> op) {
  stream = legacyAsNull(stream);
  if (stickyError != cudaSuccess) return fail(stickyError);
  if (stream != NULL && stream->destroyed) return destroyedStream(stream);
  if (stream != NULL && stream->capturing) {
    stream->graph->ops.push_back(std::move(op));
    return cudaSuccess;
  }
  if (stream == NULL && capturingStreams > 0) /* the legacy stream during a global capture */
    return captureForbidden();
  if (stream == NULL) {
    runAllHeld(true); /* the legacy stream waits for every blocking stream */
  } else if (stream->deferred) {
    stream->held.push_back(HeldOp{++enqueued, std::move(op)});
    return cudaSuccess;
  }
  op();
  return cudaSuccess;
}

cudaError_t checkLaunch(dim3 grid, dim3 block, cudaStream_t stream) {
  unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
  unsigned nthreads = block.x * block.y * block.z;
  stream = legacyAsNull(stream);
  if (stickyError != cudaSuccess) return fail(stickyError);
  if (injectedFault(cudaEmuFaultLaunch) != cudaSuccess) return lastError;
  if (nblocks == 0 || nthreads == 0 || nthreads > 1024 || block.x > 1024 || block.y > 1024 ||
      block.z > 64 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    fprintf(stderr, "cuda_emu: invalid launch configuration (grid %u,%u,%u block %u,%u,%u)\n",
            grid.x, grid.y, grid.z, block.x, block.y, block.z);
    return fail(cudaErrorInvalidConfiguration);
  }
  if (stream != NULL && stream->destroyed) return destroyedStream(stream);
  if (stream != NULL && stream->device != currentDevice) {
    fprintf(stderr, "cuda_emu: a launch on a stream of device %d while device %d is current\n",
            stream->device, currentDevice);
    return fail(cudaErrorInvalidResourceHandle);
  }
  return cudaSuccess;
}

void runGrid(dim3 grid, dim3 block, const std::function<void()>& fn) {
  unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
  launches++; /* the configuration was checked at the launch (checkLaunch) */
  gridDim = grid;
  blockDim = block;
  if (order() == kRandom) { /* a Fisher-Yates shuffle of the launch's blocks */
    blockOrder.resize(nblocks);
    for (unsigned long long j = 0; j < nblocks; j++) blockOrder[j] = j;
    for (unsigned long long j = nblocks - 1; j > 0; j--)
      std::swap(blockOrder[j], blockOrder[randomBelow(j + 1)]);
  }
  for (unsigned long long j = 0; j < nblocks; j++) {
    unsigned long long b = order() == kForward ? j : order() == kReverse ? nblocks - 1 - j : blockOrder[j];
    blockIdx.x = (unsigned)(b % grid.x);
    blockIdx.y = (unsigned)((b / grid.x) % grid.y);
    blockIdx.z = (unsigned)(b / ((unsigned long long)grid.x * grid.y));
    runBlock(block, fn);
    blocks++;
  }
}
} // namespace cuda_emu

/* ------------------------------------------------------------ runtime API */
extern "C" {

unsigned long long cudaEmuLaunches(void) { return launches; }
unsigned long long cudaEmuBlocks(void) { return blocks; }

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == NULL) return fail(cudaErrorInvalidValue);
  *count = kDevices;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (device == NULL) return fail(cudaErrorInvalidValue);
  *device = currentDevice;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= kDevices) return fail(cudaErrorInvalidDevice);
  currentDevice = device;
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  cudaError_t e = lastError;
  if (stickyError != cudaSuccess) return stickyError;
  lastError = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return stickyError != cudaSuccess ? stickyError : lastError; }

cudaError_t cudaEmuStreamDefer(cudaStream_t stream, int defer) {
  stream = legacyAsNull(stream);
  if (stream == NULL) return fail(cudaErrorInvalidValue); /* the legacy stream is never deferred */
  if (stream->destroyed) return destroyedStream(stream);
  if (!defer) runHeld(stream);
  stream->deferred = defer != 0;
  return cudaSuccess;
}
size_t cudaEmuStreamPending(cudaStream_t stream) {
  stream = legacyAsNull(stream);
  return stream == NULL ? 0 : stream->held.size();
}
void cudaEmuInjectFault(cudaEmuFault kind, unsigned count, cudaError_t error) {
  if (kind == cudaEmuFaultSticky) {
    stickyError = error;
    return;
  }
  faultsLeft[kind] = count;
  faultError[kind] = error;
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error (emulated)";
    case cudaErrorInvalidValue: return "invalid argument (emulated)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated)";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (emulated)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (emulated)";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle (emulated)";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered (emulated)";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch (emulated)";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream (emulated)";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing (emulated)";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture (emulated)";
    default: return "cuda error (emulated)";
  }
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (ptr == NULL) return fail(cudaErrorInvalidValue);
  if (captureForbidden() != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
  if (stickyError != cudaSuccess) return fail(stickyError);
  void* p = malloc(bytes ? bytes : 1);
  if (p == NULL) return fail(cudaErrorMemoryAllocation);
  memset(p, 0xff, bytes); /* never-written device memory reads as NaN */
  allocations[(uintptr_t)p] = Allocation{bytes ? bytes : 1, currentDevice};
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == NULL) return cudaSuccess;
  auto it = allocations.find((uintptr_t)ptr);
  if (it == allocations.end()) {
    fprintf(stderr, "cuda_emu: cudaFree(%p) of memory not from cudaMalloc\n", ptr);
    return fail(cudaErrorInvalidValue);
  }
  runAllHeld(false); /* cudaFree waits for the device */
  allocations.erase(it);
  free(ptr);
  return cudaSuccess;
}

/* A transfer checked against its kind: the device side must lie inside one allocation. */
static cudaError_t checkCopy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  size_t left = 0;
  int dstDevice = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  int srcDevice = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (bytes == 0) return cudaSuccess;
  if ((dstDevice && (!findAllocation(dst, &left) || left < bytes)) ||
      (srcDevice && (!findAllocation(src, &left) || left < bytes)) ||
      (kind == cudaMemcpyHostToDevice && findAllocation(src, NULL)) ||
      (kind == cudaMemcpyDeviceToHost && findAllocation(dst, NULL))) {
    fprintf(stderr, "cuda_emu: bad copy of %zu bytes %p -> %p (kind %d)\n", bytes, src, dst, (int)kind);
    return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

/* The legacy stream's: after the blocking streams' work. */
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (captureForbidden() != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
  if (stickyError != cudaSuccess) return fail(stickyError);
  if (checkCopy(dst, src, bytes, kind) != cudaSuccess) return cudaErrorInvalidValue;
  runAllHeld(true);
  memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (checkCopy(dst, src, bytes, kind) != cudaSuccess) return cudaErrorInvalidValue;
  return cuda_emu::enqueue(stream, [=]() { memmove(dst, src, bytes); });
}

static cudaError_t checkSet(void* ptr, size_t bytes) {
  size_t left = 0;
  if (bytes && (!findAllocation(ptr, &left) || left < bytes)) {
    fprintf(stderr, "cuda_emu: memset of %zu bytes at %p outside device memory\n", bytes, ptr);
    return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (captureForbidden() != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
  if (stickyError != cudaSuccess) return fail(stickyError);
  if (injectedFault(cudaEmuFaultMemset) != cudaSuccess) return lastError;
  if (checkSet(ptr, bytes) != cudaSuccess) return cudaErrorInvalidValue;
  runAllHeld(true);
  memset(ptr, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  if (stickyError != cudaSuccess) return fail(stickyError);
  if (injectedFault(cudaEmuFaultMemset) != cudaSuccess) return lastError;
  if (checkSet(ptr, bytes) != cudaSuccess) return cudaErrorInvalidValue;
  return cuda_emu::enqueue(stream, [=]() { memset(ptr, value, bytes); });
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  if (attr == NULL) return fail(cudaErrorInvalidValue);
  memset(attr, 0, sizeof(*attr));
  if (findAllocation(ptr, NULL, &attr->device)) {
    attr->type = cudaMemoryTypeDevice;
    attr->devicePointer = (void*)ptr;
  } else {
    attr->type = cudaMemoryTypeUnregistered;
    attr->hostPointer = (void*)ptr;
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  if (captureForbidden() != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
  if (stickyError != cudaSuccess) return fail(stickyError);
  runAllHeld(false);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  if (stream == NULL) return fail(cudaErrorInvalidValue);
  *stream = new CUstream_st();
  (*stream)->flags = flags;
  (*stream)->device = currentDevice;
  liveStreams.push_back(*stream);
  return cudaSuccess;
}

/* Its held work runs (CUDA finishes it after the call returns); the handle stays known. */
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  stream = legacyAsNull(stream);
  if (stream == NULL) return fail(cudaErrorInvalidResourceHandle);
  if (stream->destroyed) return destroyedStream(stream);
  for (size_t i = 0; i < liveStreams.size(); i++)
    if (liveStreams[i] == stream) { liveStreams.erase(liveStreams.begin() + (long)i); break; }
  if (stream->capturing) { capturingStreams--; delete stream->graph; stream->capturing = 0; }
  runHeld(stream);
  stream->destroyed = 1;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  stream = legacyAsNull(stream);
  if (stream != NULL && stream->destroyed) return destroyedStream(stream);
  if (captureForbidden() != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
  if (stickyError != cudaSuccess) return fail(stickyError);
  if (stream == NULL) runAllHeld(true);
  else runHeld(stream);
  return cudaSuccess;
}

/* On the legacy stream: cudaErrorStreamCaptureImplicit while a blocking stream of the
 * current device is capturing (that capture goes on). */
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  if (status == NULL) return fail(cudaErrorInvalidValue);
  stream = legacyAsNull(stream);
  if (stream != NULL && stream->destroyed) return destroyedStream(stream);
  *status = cudaStreamCaptureStatusNone;
  if (stream == NULL) {
    for (CUstream_st* s : liveStreams)
      if (s->capturing && !(s->flags & cudaStreamNonBlocking) && s->device == currentDevice)
        return fail(cudaErrorStreamCaptureImplicit);
    return cudaSuccess;
  }
  *status = !stream->capturing ? cudaStreamCaptureStatusNone
            : stream->invalidated ? cudaStreamCaptureStatusInvalidated
                                  : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  (void)mode; /* every capture here is a global one */
  stream = legacyAsNull(stream);
  if (stream != NULL && stream->destroyed) return destroyedStream(stream);
  if (stream == NULL || stream->capturing) return fail(cudaErrorInvalidValue);
  stream->capturing = 1;
  stream->invalidated = 0;
  stream->graph = new CUgraph_st();
  capturingStreams++;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  stream = legacyAsNull(stream);
  if (stream != NULL && stream->destroyed) return destroyedStream(stream);
  if (stream == NULL || !stream->capturing || graph == NULL) return fail(cudaErrorInvalidValue);
  stream->capturing = 0;
  capturingStreams--;
  if (stream->invalidated) {
    delete stream->graph;
    stream->graph = NULL;
    *graph = NULL;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = stream->graph;
  stream->graph = NULL;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
  (void)flags;
  if (exec == NULL || graph == NULL) return fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st();
  (*exec)->ops = graph->ops;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == NULL) return fail(cudaErrorInvalidValue);
  for (auto& op : exec->ops) {
    cudaError_t e = cuda_emu::enqueue(stream, op);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) { delete graph; return cudaSuccess; }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { delete exec; return cudaSuccess; }

/* ------------------------------------------------------------ events */
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  if (event == NULL) return fail(cudaErrorInvalidValue);
  *event = new CUevent_st();
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (event == NULL) return fail(cudaErrorInvalidResourceHandle);
  event->stream = legacyAsNull(stream);
  return cuda_emu::enqueue(stream, [event]() {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    event->ms = (double)now.tv_sec * 1e3 + (double)now.tv_nsec * 1e-6;
    event->recorded = 1;
  });
}

/* Its stream's held work runs, the event's record with it. */
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (event == NULL) return fail(cudaErrorInvalidResourceHandle);
  if (captureForbidden() != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
  if (stickyError != cudaSuccess) return fail(stickyError);
  if (event->stream != NULL && !event->stream->destroyed) runHeld(event->stream);
  return cudaSuccess;
}

/* As on a GPU: an event never recorded is an invalid handle here. */
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == NULL) return fail(cudaErrorInvalidValue);
  if (start == NULL || end == NULL || !start->recorded || !end->recorded)
    return fail(cudaErrorInvalidResourceHandle);
  *ms = (float)(end->ms - start->ms);
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (event == NULL) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

/* ------------------------------------------------------------ fake NCCL */
/* A collective's work, and the stream it goes on. */
struct NcclWork {
  cudaStream_t stream;
  std::function<void()> op;
};

struct ncclComm {
  int rank, nranks;
  MPI_Comm mpi;   /* MPI_COMM_NULL with one rank */
  int device;     /* current at its creation (ncclCommCuDevice) */
  int blocking;   /* 0: ncclConfig_t.blocking = 0 */
  /* non-blocking: polls of ncclCommGetAsyncError left until the last call completes, and
   * the work of that call, put on its stream only then */
  int inProgress;
  std::vector<NcclWork> held;
  int ended; /* aborted: work still on a stream does nothing */
};

namespace {
thread_local int groupDepth = 0;          /* ncclGroupStart nesting, per thread as in NCCL */
thread_local std::vector<NcclWork> grouped; /* collectives enqueued at the outer ncclGroupEnd */
unsigned long long collectives = 0;

/* A send or a receive of ncclSend / ncclRecv. */
struct P2p {
  int send;
  void* buffer;
  size_t bytes;
  int peer;
  ncclComm_t comm;
  cudaStream_t stream;
};
thread_local std::vector<P2p> groupedP2p; /* issued together at the outer ncclGroupEnd */
const int kP2pTag = 0x5350; /* MPI keeps point-to-point apart from the collectives */

/* Operations in flight together: every one to or from another rank as MPI_Isend / MPI_Irecv,
 * waited for together; a rank's sends to itself paired in order with its receives from
 * itself.  A send or receive that cannot complete (a send to itself with no receive) aborts:
 * NCCL would hang. */
void runP2p(const std::vector<P2p>& ops) {
  std::vector<MPI_Request> requests;
  std::vector<const P2p*> selfSends, selfReceives;
  for (const P2p& op : ops) {
    if (op.comm->ended) continue;
    if (op.peer == op.comm->rank) {
      (op.send ? selfSends : selfReceives).push_back(&op);
      continue;
    }
    MPI_Request request;
    int rc = op.send ? MPI_Isend(op.buffer, (int)op.bytes, MPI_BYTE, op.peer, kP2pTag, op.comm->mpi, &request)
                     : MPI_Irecv(op.buffer, (int)op.bytes, MPI_BYTE, op.peer, kP2pTag, op.comm->mpi, &request);
    if (rc != MPI_SUCCESS) abort();
    requests.push_back(request);
  }
  if (selfSends.size() != selfReceives.size()) {
    fprintf(stderr, "fake NCCL: %zu sends of a rank to itself, %zu receives from itself: NCCL "
            "would hang\n", selfSends.size(), selfReceives.size());
    abort();
  }
  for (size_t i = 0; i < selfSends.size(); i++) {
    if (selfSends[i]->bytes != selfReceives[i]->bytes) {
      fprintf(stderr, "fake NCCL: a rank sends itself %zu bytes and receives %zu\n",
              selfSends[i]->bytes, selfReceives[i]->bytes);
      abort();
    }
    memmove(selfReceives[i]->buffer, selfSends[i]->buffer, selfSends[i]->bytes);
  }
  if (!requests.empty() &&
      MPI_Waitall((int)requests.size(), requests.data(), MPI_STATUSES_IGNORE) != MPI_SUCCESS)
    abort();
}

/* A non-blocking comm answers ncclInProgress to init and to each collective, and completes
 * at the second ncclCommGetAsyncError after it. */
const int kPollsToComplete = 2;

ncclResult_t enqueueWork(const NcclWork& w) {
  return cuda_emu::enqueue(w.stream, w.op) == cudaSuccess ? ncclSuccess : ncclUnhandledCudaError;
}

/* NCCL's ncclCommEnsureReady: a call on a comm whose last call is still in progress. */
ncclResult_t notReady(ncclComm_t comm, const char* call) {
  if (comm->inProgress == 0) return ncclSuccess;
  fprintf(stderr, "fake NCCL: %s on a non-blocking communicator before its last call completed "
          "(poll ncclCommGetAsyncError until it is not ncclInProgress)\n", call);
  return ncclInvalidArgument;
}

/* A collective: counted, then held by the group, by the comm (non-blocking), or enqueued. */
ncclResult_t submit(ncclComm_t comm, cudaStream_t stream, std::function<void()> op, const char* call) {
  ncclResult_t r = notReady(comm, call);
  if (r != ncclSuccess) return r;
  collectives++;
  NcclWork w{stream, [comm, op]() { if (!comm->ended) op(); }};
  if (groupDepth > 0) {
    grouped.push_back(std::move(w));
    return ncclSuccess;
  }
  if (!comm->blocking) {
    comm->held.push_back(std::move(w));
    comm->inProgress = kPollsToComplete;
    return ncclInProgress;
  }
  return enqueueWork(w);
}
} // namespace

unsigned long long ncclEmuCollectives(void) { return collectives; }

const char* ncclGetErrorString(ncclResult_t r) {
  return r == ncclSuccess ? "no error (fake NCCL)" : "error (fake NCCL)";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (id == NULL) return ncclInvalidArgument;
  memset(id, 0, sizeof(*id));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t* config) {
  (void)id;
  ncclComm* c = new ncclComm();
  c->rank = rank;
  c->nranks = nranks;
  c->mpi = MPI_COMM_NULL;
  c->device = currentDevice;
  c->blocking = config == NULL || config->blocking == NCCL_CONFIG_UNDEF_INT || config->blocking != 0;
  if (nranks > 1) { /* n ranks = the n processes of MPI_COMM_WORLD */
    int initialized = 0, size = 0, me = -1;
    MPI_Initialized(&initialized);
    if (initialized) { MPI_Comm_size(MPI_COMM_WORLD, &size); MPI_Comm_rank(MPI_COMM_WORLD, &me); }
    if (size != nranks || me != rank) {
      fprintf(stderr, "fake NCCL: %d ranks need %d MPI processes (rank %d is MPI rank %d)\n",
              nranks, nranks, rank, me);
      delete c;
      return ncclInvalidUsage;
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi);
  }
  *comm = c;
  if (!c->blocking) {
    c->inProgress = kPollsToComplete;
    return ncclInProgress;
  }
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  return ncclCommInitRankConfig(comm, nranks, id, rank, NULL);
}

static void freeMpi(ncclComm_t c) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (c->mpi != MPI_COMM_NULL && !finalized) MPI_Comm_free(&c->mpi);
}
/* As NCCL's, it waits for the comm's work (here: every stream's). */
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  runAllHeld(false);
  freeMpi(comm);
  delete comm;
  return ncclSuccess;
}
/* Waits for nothing: work still on a stream does nothing when it runs (a hung collective
 * returns); the comm is kept for it. */
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  comm->ended = 1;
  comm->held.clear();
  comm->inProgress = 0;
  freeMpi(comm);
  return ncclSuccess;
}
ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  ncclResult_t r = notReady(comm, "ncclCommCount");
  if (r == ncclSuccess) *count = comm->nranks;
  return r;
}
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  ncclResult_t r = notReady(comm, "ncclCommUserRank");
  if (r == ncclSuccess) *rank = comm->rank;
  return r;
}
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  ncclResult_t r = notReady(comm, "ncclCommCuDevice");
  if (r == ncclSuccess) *device = comm->device;
  return r;
}
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* e) {
  ncclResult_t r = ncclSuccess;
  if (comm->inProgress > 0 && --comm->inProgress == 0) {
    for (const NcclWork& w : comm->held)
      if (r == ncclSuccess) r = enqueueWork(w);
    comm->held.clear();
  }
  *e = comm->inProgress > 0 ? ncclInProgress : r;
  return ncclSuccess;
}

ncclResult_t ncclGroupStart(void) {
  groupDepth++;
  return ncclSuccess;
}
ncclResult_t ncclGroupEnd(void) {
  ncclResult_t r = ncclSuccess;
  if (groupDepth == 0) {
    fprintf(stderr, "fake NCCL: ncclGroupEnd: not in a group call\n");
    return ncclInvalidUsage;
  }
  if (--groupDepth > 0) return ncclSuccess;
  for (const NcclWork& w : grouped)
    if (r == ncclSuccess) r = enqueueWork(w);
  grouped.clear();
  if (!groupedP2p.empty()) {
    std::vector<P2p> ops;
    ops.swap(groupedP2p);
    for (const P2p& op : ops)
      if (op.stream != ops[0].stream) {
        fprintf(stderr, "fake NCCL: a group's sends and receives on several streams (the "
                "emulator runs them on one)\n");
        return ncclInvalidUsage;
      }
    if (r == ncclSuccess) r = enqueueWork(NcclWork{ops[0].stream, [ops]() { runP2p(ops); }});
  }
  return r;
}

static ncclResult_t pointToPoint(int send, void* buffer, size_t count, ncclDataType_t type,
                                 int peer, ncclComm_t comm, cudaStream_t stream, const char* call) {
  static const size_t sizes[] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2};
  size_t bytes = count * sizes[(int)type], left = 0;
  ncclResult_t r = notReady(comm, call);
  if (r != ncclSuccess) return r;
  if (peer < 0 || peer >= comm->nranks) {
    fprintf(stderr, "fake NCCL: %s to peer %d of %d ranks\n", call, peer, comm->nranks);
    return ncclInvalidArgument;
  }
  if (bytes && (!findAllocation(buffer, &left) || left < bytes)) {
    fprintf(stderr, "fake NCCL: %s on memory that is not device memory\n", call);
    return ncclInvalidArgument;
  }
  collectives++;
  P2p op{send, buffer, bytes, peer, comm, stream};
  if (groupDepth > 0) {
    groupedP2p.push_back(op);
    return ncclSuccess;
  }
  return enqueueWork(NcclWork{stream, [op]() { runP2p(std::vector<P2p>{op}); }});
}

ncclResult_t ncclSend(const void* send, size_t count, ncclDataType_t type, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  return pointToPoint(1, const_cast<void*>(send), count, type, peer, comm, stream, "ncclSend");
}
ncclResult_t ncclRecv(void* recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return pointToPoint(0, recv, count, type, peer, comm, stream, "ncclRecv");
}

static int tamperNext = 0;
void cudaEmuTamperNextAllGather(int mode) { tamperNext = mode; }

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
  static const size_t sizes[] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2};
  size_t bytes = count * sizes[(int)type];
  size_t left = 0;
  if (bytes && (!findAllocation(send, &left) || left < bytes || !findAllocation(recv, &left) ||
                left < bytes * (size_t)comm->nranks)) {
    fprintf(stderr, "fake NCCL: ncclAllGather on memory that is not device memory\n");
    return ncclInvalidArgument;
  }
  const int tamper = tamperNext;
  tamperNext = 0;
  return submit(comm, stream, [=]() {
    if (tamper == 3) {
      for (int r = 0; r < comm->nranks; r++) memcpy((char*)recv + (size_t)r * bytes, send, bytes < 8 ? bytes : 8);
      return;
    }
    if (comm->nranks == 1) memmove(recv, send, bytes);
    else if (MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, comm->mpi) != MPI_SUCCESS)
      abort();
    for (int r = 0; tamper == 1 && r < comm->nranks; r++) {
      unsigned long long* sequence = (unsigned long long*)((char*)recv + (size_t)(r + 1) * bytes - 16);
      (*sequence)++;
    }
    if (tamper == 2) {
      const uint32_t far = 0xfffffff0u;
      memcpy(recv, &far, sizeof(far));
    }
  }, "ncclAllGather");
}

/* Float32 sum or avg (the sum divided by the ranks), in place (send == recv) or not, as in
 * NCCL; the order of the additions is MPI's, not NCCL's. */
ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  size_t bytes = count * sizeof(float), left = 0;
  if (type != ncclFloat32 || (op != ncclSum && op != ncclAvg)) {
    fprintf(stderr, "fake NCCL: ncclAllReduce of type %d, op %d (only float32 sum and avg)\n",
            (int)type, (int)op);
    return ncclInvalidArgument;
  }
  if (count > (size_t)0x7fffffff) {
    fprintf(stderr, "fake NCCL: ncclAllReduce of %zu elements (MPI counts are int)\n", count);
    return ncclInvalidArgument;
  }
  if (bytes && (!findAllocation(send, &left) || left < bytes || !findAllocation(recv, &left) ||
                left < bytes)) {
    fprintf(stderr, "fake NCCL: ncclAllReduce on memory that is not device memory\n");
    return ncclInvalidArgument;
  }
  return submit(comm, stream, [=]() {
    float* out = (float*)recv;
    if (comm->nranks == 1) memmove(recv, send, bytes);
    else if (MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, (int)count, MPI_FLOAT,
                           MPI_SUM, comm->mpi) != MPI_SUCCESS)
      abort();
    if (op == ncclAvg && comm->nranks > 1)
      for (size_t i = 0; i < count; i++) out[i] /= (float)comm->nranks;
  }, "ncclAllReduce");
}

} /* extern "C" */
