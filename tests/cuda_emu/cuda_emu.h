/*
 * A small CUDA emulator for the CPU, so that the sources in cuda/ can be compiled by g++ and run here
 * bitwise against the CPU reference (tests/gpu/gpu_tests.c (built with SPARCCL_TEST_SCALE=0)).
 *
 * - The runtime API part (streams, memory, graphs, errors) is plain C and also serves the C
 *   test program; tests/cuda_emu/cuda_runtime.h and nccl.h stand in for the real headers.
 * - The kernel part (C++ only): __global__ & co. expand to nothing, __shared__ to static
 *   storage (valid because blocks run one at a time), threadIdx/blockIdx/blockDim/gridDim are
 *   per-OS-thread globals, and a kernel launch (SPARCCL_LAUNCH in cuda/device_set.cuh) runs
 *   the grid block by block.  The threads of a block are cooperative fibers (ucontext):
 *   each runs until it reaches __syncthreads() or returns; when every thread of the block
 *   waits at the barrier, all are released.  A barrier reached by only part of a block is
 *   reported and aborts.  The order in which blocks and threads run is forward, reversed
 *   with CUDA_EMU_ORDER=reverse, or random with CUDA_EMU_ORDER=random or random:SEED: the
 *   blocks of each launch shuffled, the threads of a block resumed in a random order at its
 *   start and after every barrier, and a thread yielding to another at random at each atomic
 *   (atomicAdd & co.), so threads also interleave between barriers.  The seed (from the clock
 *   and process id when not given) is printed once to stderr; the same seed gives the same
 *   run.  A result that depends on the order is a race in the kernel.
 * - Device memory is host memory from cudaMalloc, filled with 0xff bytes (NaN floats) so a
 *   read of memory never written shows; cudaPointerGetAttributes reports it as device memory.
 *   A kernel launched with a pointer argument that is not device memory aborts (a GPU
 *   would fault).
 * - A stream being captured (cudaStreamBeginCapture) records its work into the graph; in
 *   global capture mode an allocation or a synchronising call during a capture fails and
 *   invalidates it, as on a GPU.  cudaStreamIsCapturing on the legacy stream (NULL or
 *   cudaStreamLegacy) returns cudaErrorStreamCaptureImplicit while a blocking stream is
 *   capturing, and leaves that capture alone, as CUDA documents.
 * - Streams run their work when it is enqueued, unless deferred (cudaEmuStreamDefer): a
 *   deferred stream holds its work until something orders it, as a busy GPU would: a
 *   cudaStreamSynchronize of it, cudaDeviceSynchronize and cudaFree (which waits for the
 *   device), cudaEventSynchronize of an event recorded on it, its cudaStreamDestroy, and,
 *   for a blocking stream (one created without cudaStreamNonBlocking), any work of the
 *   legacy stream (cudaMemcpy, cudaMemset, a launch on stream NULL).  cudaDeviceSynchronize
 *   runs what the streams hold in the order it was enqueued.  So a missing synchronisation
 *   shows: work on another stream that nothing ordered after a deferred stream's runs
 *   before it.  A destroyed stream stays known: using it again is reported and fails with
 *   cudaErrorInvalidResourceHandle (a GPU would do anything).
 * - Devices: two (cudaGetDeviceCount), one current per host thread (cudaSetDevice).  Memory
 *   and streams belong to the device current at their creation; cudaPointerGetAttributes
 *   says which.  A launch on another device's stream fails (cudaErrorInvalidResourceHandle,
 *   as CUDA documents); a kernel argument in another device's memory aborts (a GPU without
 *   peer access would fault).  Every device's memory is host memory underneath.
 * - Errors: the last error is CUDA's (cudaGetLastError returns and clears it,
 *   cudaPeekAtLastError returns it).  The tests inject faults (cudaEmuInjectFault): the
 *   next n kernel launches or memsets fail with a given error (nothing runs), or a sticky
 *   error, as after a kernel fault on a GPU, which every later call returns and
 *   cudaGetLastError does not clear, until the test clears it (a GPU would need a reset).
 * - Events hold the host's wall-clock time when the work before them ran: timing code runs
 *   (tools/gpu_perf.cu), but its times are the emulator's.
 * Not emulated: warps (no __shfl/__ballot here), concurrency between blocks or streams
 * (a deferred stream's work runs late, never alongside other work), the memory model
 * (everything is sequentially consistent), device limits beyond the launch
 * configuration's (grid and block sizes are checked), cudaStreamWaitEvent.
 */
#ifndef SPARCCL_CUDA_EMU_H_
#define SPARCCL_CUDA_EMU_H_

#include <stddef.h>
#include <stdint.h>

#define CUDA_EMU 1

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureImplicit = 906
} cudaError_t;

typedef struct CUstream_st* cudaStream_t;
typedef struct CUgraph_st* cudaGraph_t;
typedef struct CUgraphExec_st* cudaGraphExec_t;
typedef struct CUevent_st* cudaEvent_t;

/* C++ callers may leave out a trailing stream, as CUDA's headers allow. */
#ifdef __cplusplus
#define CUDA_EMU_DEFAULT(value) = value
#else
#define CUDA_EMU_DEFAULT(value)
#endif

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4
};
enum cudaMemoryType {
  cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1, cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
  enum cudaMemoryType type;
  int device;
  void* devicePointer;
  void* hostPointer;
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0, cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2
};
#ifndef __cplusplus
typedef enum cudaMemcpyKind cudaMemcpyKind;
typedef struct cudaPointerAttributes cudaPointerAttributes;
typedef enum cudaStreamCaptureStatus cudaStreamCaptureStatus;
typedef enum cudaStreamCaptureMode cudaStreamCaptureMode;
#endif
#define cudaStreamDefault 0x0
#define cudaStreamNonBlocking 0x1
/* The legacy default stream by name, as CUDA's headers define it (the same stream as NULL). */
#define cudaStreamLegacy ((cudaStream_t)0x1)

cudaError_t cudaGetDeviceCount(int* count); /* 2 */
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes* attr, const void* ptr);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* status);
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
/* Events hold the host's wall-clock time at which the work before them ran (work runs when
 * it is enqueued, so that is when cudaEventRecord returns, or when a graph replays it). */
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream CUDA_EMU_DEFAULT(0));
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventDestroy(cudaEvent_t event);
/* Emulator statistics: kernel launches and emulated thread blocks run so far. */
unsigned long long cudaEmuLaunches(void);
unsigned long long cudaEmuBlocks(void);
/* The next ncclAllGather's received blocks, tampered with as a hostile or disagreeing peer
 * would (tests of SPEC 4's call check): 1 every slot's call check off by one in its
 * sequence, 2 the first index of rank 0's slot far outside any layer, 3 only the first 8
 * bytes of every slot delivered (the rest left as it was). */
void cudaEmuTamperNextAllGather(int mode);
/* Emulator only.  defer 1: the stream holds its work until something orders it (above);
 * 0: it runs what it holds, then runs work when enqueued again. */
cudaError_t cudaEmuStreamDefer(cudaStream_t stream, int defer);
/* Operations a deferred stream holds, not yet run. */
size_t cudaEmuStreamPending(cudaStream_t stream);
/* Faults for the tests: the next `count` kernel launches (cudaEmuFaultLaunch) or memsets
 * (cudaEmuFaultMemset) fail with `error` and do nothing; count 0 ends an injection.
 * cudaEmuFaultSticky: `error` becomes sticky (count is ignored); cudaSuccess clears it. */
typedef enum { cudaEmuFaultLaunch = 0, cudaEmuFaultMemset = 1, cudaEmuFaultSticky = 2 } cudaEmuFault;
void cudaEmuInjectFault(cudaEmuFault kind, unsigned count, cudaError_t error);

#ifdef __cplusplus
} /* extern "C" */

/* ------------------------------------------------------------ the kernel side (C++) */
#include <stdio.h>
#include <stdlib.h>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

namespace cuda_emu {
void syncthreads();
/* CUDA_EMU_ORDER=random: each emulated atomic may first yield to another thread of the block. */
extern int yieldAtAtomics;
void yieldAtAtomic();
inline void atomicPoint() { if (yieldAtAtomics) yieldAtAtomic(); }
/* Run op on the stream now, hold it (a deferred stream) or record it (a stream being
 * captured); an error (a destroyed stream, a sticky error) is returned and made the last
 * error, and op is dropped. */
cudaError_t enqueue(cudaStream_t stream, std::function<void()> op);
/* Whether a kernel may be launched (configuration, stream, injected faults, sticky error);
 * if not, the error is the last error and nothing is enqueued. */
cudaError_t checkLaunch(dim3 grid, dim3 block, cudaStream_t stream);
/* Run a grid: body once per thread, blocks one after the other; errors go to the last error. */
void runGrid(dim3 grid, dim3 block, const std::function<void()>& body);

/* A pointer kernel argument must be NULL or memory of the current device: a GPU faults on a
 * host pointer (an illegal address), which the CPU here would read without complaint, and on
 * another device's memory without peer access. */
template <typename T>
void checkKernelArgument(const T& value) {
  if constexpr (std::is_pointer<T>::value) {
    cudaPointerAttributes attr;
    int device = -1;
    if (value != nullptr && (cudaPointerGetAttributes(&attr, (const void*)value) != cudaSuccess ||
                             attr.type != cudaMemoryTypeDevice)) {
      fprintf(stderr, "cuda_emu: kernel argument %p is not device memory\n", (const void*)value);
      abort();
    }
    if (value != nullptr && cudaGetDevice(&device) == cudaSuccess && attr.device != device) {
      fprintf(stderr, "cuda_emu: kernel argument %p is memory of device %d, launched on device %d\n",
              (const void*)value, attr.device, device);
      abort();
    }
  }
}

template <typename... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  cudaStream_t stream;
  template <typename... A>
  void operator()(A&&... args) const {
    void (*k)(P...) = kernel;
    dim3 g = grid, b = block;
    /* Arguments are copied at launch, as CUDA copies kernel parameters. */
    std::tuple<typename std::decay<P>::type...> params(std::forward<A>(args)...);
    if (checkLaunch(g, b, stream) != cudaSuccess) return;
    std::apply([](const auto&... p) { (checkKernelArgument(p), ...); }, params);
    enqueue(stream, [k, g, b, params]() { runGrid(g, b, [&]() { std::apply(k, params); }); });
  }
};
template <typename... P>
Launch<P...> launch(dim3 grid, dim3 block, cudaStream_t stream, void (*kernel)(P...)) {
  return Launch<P...>{kernel, grid, block, stream};
}
} // namespace cuda_emu

#define cudaEmuLaunch(grid, block, stream, ...) cuda_emu::launch((grid), (block), (stream), __VA_ARGS__)

inline void __syncthreads() { cuda_emu::syncthreads(); }
/* Blocks run one at a time and memory is sequentially consistent: nothing to order. */
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

inline unsigned atomicAdd(unsigned* p, unsigned v) {
  cuda_emu::atomicPoint();
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline int atomicAdd(int* p, int v) {
  cuda_emu::atomicPoint();
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  cuda_emu::atomicPoint();
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned atomicOr(unsigned* p, unsigned v) {
  cuda_emu::atomicPoint();
  return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
  cuda_emu::atomicPoint();
  unsigned old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}

inline unsigned __float_as_uint(float f) { unsigned u; __builtin_memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
inline long long __double_as_longlong(double d) { long long u; __builtin_memcpy(&u, &d, 8); return u; }
inline double __longlong_as_double(long long u) { double d; __builtin_memcpy(&d, &u, 8); return d; }

#endif /* __cplusplus */
#endif /* SPARCCL_CUDA_EMU_H_ */
