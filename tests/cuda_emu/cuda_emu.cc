/* The CPU emulator's runtime (see cuda_emu.h): memory, streams, graphs, events, the block
 * scheduler (cooperative fibers, in forward, reverse or seeded random order) and a fake NCCL
 * over MPI. */
#include "cuda_emu.h"
#include "nccl.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <map>
#include <vector>

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

struct CUstream_st {
  int capturing;
  int invalidated;
  cudaGraph_t graph;
};
struct CUgraph_st { std::vector<std::function<void()>> ops; };
struct CUgraphExec_st { std::vector<std::function<void()>> ops; };
struct CUevent_st {
  int recorded;
  double ms; /* CLOCK_MONOTONIC at the record, in milliseconds */
};

namespace {
thread_local cudaError_t lastError = cudaSuccess;
std::map<uintptr_t, size_t> allocations; /* device memory: base -> bytes */
int capturingStreams = 0;                /* streams in global-mode capture */
unsigned long long launches = 0, blocks = 0;

cudaError_t fail(cudaError_t e) {
  lastError = e;
  return e;
}

/* ------------------------------------------------------------ order */
/* CUDA_EMU_ORDER: unset, empty or "forward"; "reverse"; "random" or "random:SEED".  Random:
 * the blocks of each launch in a shuffled order; within a block, after the start and after
 * every barrier, the next thread to resume drawn at random among those not yet at the
 * barrier; and a thread may yield to another at each emulated atomic (cuda_emu::atomicPoint),
 * so threads interleave between barriers.  The generator is splitmix64, private to the
 * emulator, and a run is fully determined by its seed (printed once to stderr). */
enum Order { kForward, kReverse, kRandom };
uint64_t rngState;

uint64_t splitmix64() {
  uint64_t z = (rngState += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

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

const char* findAllocation(const void* p, size_t* left) {
  uintptr_t a = (uintptr_t)p;
  auto it = allocations.upper_bound(a);
  if (it == allocations.begin()) return NULL;
  --it;
  if (a >= it->first + it->second) return NULL;
  if (left) *left = it->first + it->second - a;
  return (const char*)it->first;
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

void enqueue(cudaStream_t stream, std::function<void()> op) {
  if (stream != NULL && stream->capturing) {
    stream->graph->ops.push_back(std::move(op));
    return;
  }
  if (stream == NULL && capturingStreams > 0) { /* the legacy stream during a global capture */
    captureForbidden();
    return;
  }
  op();
}

void runGrid(dim3 grid, dim3 block, const std::function<void()>& fn) {
  unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
  unsigned nthreads = block.x * block.y * block.z;
  launches++;
  if (nblocks == 0 || nthreads == 0 || nthreads > 1024 || block.x > 1024 || block.y > 1024 ||
      block.z > 64 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    fprintf(stderr, "cuda_emu: invalid launch configuration (grid %u,%u,%u block %u,%u,%u)\n",
            grid.x, grid.y, grid.z, block.x, block.y, block.z);
    fail(cudaErrorInvalidConfiguration);
    return;
  }
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

cudaError_t cudaGetDeviceCount(int* count) { *count = 1; return cudaSuccess; }
cudaError_t cudaGetDevice(int* device) {
  if (device == NULL) return fail(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }

cudaError_t cudaGetLastError(void) {
  cudaError_t e = lastError;
  lastError = cudaSuccess;
  return e;
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error (emulated)";
    case cudaErrorInvalidValue: return "invalid argument (emulated)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated)";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (emulated)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (emulated)";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle (emulated)";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing (emulated)";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture (emulated)";
    default: return "cuda error (emulated)";
  }
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (ptr == NULL) return fail(cudaErrorInvalidValue);
  if (captureForbidden() != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
  void* p = malloc(bytes ? bytes : 1);
  if (p == NULL) return fail(cudaErrorMemoryAllocation);
  memset(p, 0xff, bytes); /* never-written device memory reads as NaN */
  allocations[(uintptr_t)p] = bytes ? bytes : 1;
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

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (captureForbidden() != cudaSuccess) return cudaErrorStreamCaptureUnsupported;
  if (checkCopy(dst, src, bytes, kind) != cudaSuccess) return cudaErrorInvalidValue;
  memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (checkCopy(dst, src, bytes, kind) != cudaSuccess) return cudaErrorInvalidValue;
  cuda_emu::enqueue(stream, [=]() { memmove(dst, src, bytes); });
  return cudaSuccess;
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
  if (checkSet(ptr, bytes) != cudaSuccess) return cudaErrorInvalidValue;
  memset(ptr, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  if (checkSet(ptr, bytes) != cudaSuccess) return cudaErrorInvalidValue;
  cuda_emu::enqueue(stream, [=]() { memset(ptr, value, bytes); });
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  if (attr == NULL) return fail(cudaErrorInvalidValue);
  memset(attr, 0, sizeof(*attr));
  if (findAllocation(ptr, NULL)) {
    attr->type = cudaMemoryTypeDevice;
    attr->devicePointer = (void*)ptr;
  } else {
    attr->type = cudaMemoryTypeUnregistered;
    attr->hostPointer = (void*)ptr;
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return captureForbidden(); }

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  (void)flags;
  if (stream == NULL) return fail(cudaErrorInvalidValue);
  *stream = new CUstream_st();
  liveStreams.push_back(*stream);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (stream == NULL) return fail(cudaErrorInvalidResourceHandle);
  for (size_t i = 0; i < liveStreams.size(); i++)
    if (liveStreams[i] == stream) { liveStreams.erase(liveStreams.begin() + (long)i); break; }
  if (stream->capturing) { capturingStreams--; delete stream->graph; }
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  (void)stream; /* work runs when it is enqueued */
  return captureForbidden();
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  if (status == NULL) return fail(cudaErrorInvalidValue);
  *status = stream == NULL || !stream->capturing ? cudaStreamCaptureStatusNone
            : stream->invalidated ? cudaStreamCaptureStatusInvalidated
                                  : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  (void)mode; /* every capture here is a global one */
  if (stream == NULL || stream->capturing) return fail(cudaErrorInvalidValue);
  stream->capturing = 1;
  stream->invalidated = 0;
  stream->graph = new CUgraph_st();
  capturingStreams++;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
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
  for (auto& op : exec->ops) cuda_emu::enqueue(stream, op);
  return cudaGetLastError();
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
  cuda_emu::enqueue(stream, [event]() {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    event->ms = (double)now.tv_sec * 1e3 + (double)now.tv_nsec * 1e-6;
    event->recorded = 1;
  });
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (event == NULL) return fail(cudaErrorInvalidResourceHandle);
  return captureForbidden();
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
struct ncclComm {
  int rank, nranks;
  MPI_Comm mpi; /* MPI_COMM_NULL with one rank */
};

const char* ncclGetErrorString(ncclResult_t r) {
  return r == ncclSuccess ? "no error (fake NCCL)" : "error (fake NCCL)";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (id == NULL) return ncclInvalidArgument;
  memset(id, 0, sizeof(*id));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  (void)id;
  ncclComm* c = new ncclComm();
  c->rank = rank;
  c->nranks = nranks;
  c->mpi = MPI_COMM_NULL;
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
  return ncclSuccess;
}

static void destroyComm(ncclComm_t c) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (c->mpi != MPI_COMM_NULL && !finalized) MPI_Comm_free(&c->mpi);
  delete c;
}
ncclResult_t ncclCommDestroy(ncclComm_t comm) { destroyComm(comm); return ncclSuccess; }
ncclResult_t ncclCommAbort(ncclComm_t comm) { destroyComm(comm); return ncclSuccess; }
ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) { *count = comm->nranks; return ncclSuccess; }
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) { *rank = comm->rank; return ncclSuccess; }
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* e) { (void)comm; *e = ncclSuccess; return ncclSuccess; }

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
  cuda_emu::enqueue(stream, [=]() {
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
  });
  return ncclSuccess;
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
  cuda_emu::enqueue(stream, [=]() {
    float* out = (float*)recv;
    if (comm->nranks == 1) memmove(recv, send, bytes);
    else if (MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, (int)count, MPI_FLOAT,
                           MPI_SUM, comm->mpi) != MPI_SUCCESS)
      abort();
    if (op == ncclAvg && comm->nranks > 1)
      for (size_t i = 0; i < count; i++) out[i] /= (float)comm->nranks;
  });
  return ncclSuccess;
}

} /* extern "C" */
