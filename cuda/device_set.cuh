/*
 * Device-side state of one layer set and the arguments every kernel gets (cuda/).
 *
 * Elements are addressed by their index in the key's buffer (layer offset + i), so every
 * per-element array (keys, e, h, H, w, previous g, the float32 sums) has `count` entries.
 * Work is cut into chunks of SPARCCL_CHUNK consecutive elements of one layer, starting at
 * the layer's first element; one thread block takes one chunk.  Chunks aligned to layers
 * are also the 4096-element blocks of the blocked sum (SPEC 3a), per layer.
 */
#ifndef SPARCCL_DEVICE_SET_CUH_
#define SPARCCL_DEVICE_SET_CUH_

#include <cuda_runtime.h>
#include <stdint.h>
extern "C" {
#include "core.h"
}

#define SPARCCL_CHUNK 4096
#define SPARCCL_THREADS 256
#define SPARCCL_PER_THREAD (SPARCCL_CHUNK / SPARCCL_THREADS)
#if SPARCCL_CHUNK != SPARCCL_SUM_BLOCK
#error "chunks must be the blocks of the blocked sum"
#endif

struct DeviceLayer {
  uint64_t offset, count, k;
  uint64_t indexPos, valuePos, densePos;
  uint64_t chunkBegin;
  uint32_t nchunks, id, flagPos;
  int sparse, sharedSet, all; /* all: k == d, every element sent */
};

struct DeviceChunk {
  uint32_t layer;
  uint32_t begin, end; /* element range within the layer */
};

/* Radix-select progress of one layer (SPEC 1: the k largest keys, ties to lower index). */
struct DeviceSelect {
  uint64_t prefix, need, threshold, ties;
  int done;
};

/* Per-set counters that a captured graph must update on the device (SPEC 5). */
struct DeviceCounters {
  unsigned long long calls, bytesSent, bytesDense; /* so graph replays are counted too */
  unsigned long long steps;      /* calls whose every sparse layer completed */
  unsigned long long normCount;
  unsigned long long skipped, restarts;
  int restartPending;
  int anySkipped;
};

/* The device arrays of a layer set: held by DeviceSet, and handed to every kernel inside
 * KernelArgs (both derive from this, so the list is written once). */
struct DeviceArrays {
  DeviceLayer* layers;
  DeviceChunk* chunks;
  uint32_t* sparseByValue; /* sparse layer ids in wire (value) order */
  /* state */
  float *error, *h, *H, *importance, *prevGrad;
  unsigned long long* layerSteps;
  int* havePrevGrad;
  DeviceCounters* counters;
  double* normRing;
  /* scratch */
  void* keys;
  uint32_t* hist; /* nlayers x SPARCCL_RADIX_BINS */
  DeviceSelect* select;
  uint32_t *chunkGreater, *chunkEqual;
  uint64_t *chunkTiesBefore, *chunkOffset;
  uint32_t* sharedIndices;
  uint8_t *sendBlock, *recvBlocks;
  /* nchunks x nranks, chunk-major: rank r's first position (layer-local, in its section of
   * the chunk's sparse layer) whose index falls in the chunk or after it */
  uint32_t* rankStarts;
  float* sums; /* the float32 outputs, for the restart norm (restartRatio > 0 only) */
  uint32_t* skip;
  double* blockSums;
};

struct DeviceSet : DeviceArrays {
  uint32_t nlayers, nchunks, nsparse;
  size_t count;
  DeviceLayer* hostLayers; /* host copy of layers */
  cudaStream_t lastStream; /* where the last call's work went: restarts order after it */
};

/* Everything a kernel needs, by value: the arrays and the call's scalars. */
struct KernelArgs : DeviceArrays {
  uint32_t nlayers, nsparse, nranks;
  uint32_t rank;     /* the Philox counter's rank: 0 on every rank under shared randomness */
  uint32_t commRank; /* this rank: its block in recvBlocks */
  int compressor, feedback, wireType, dtype, op, online;
  uint64_t seed;
  float rate, low, high;
  double restartRatio;
  long long restartEvery;
  int restartLag;
  size_t count, valueCount;
  size_t indexBytes, valueBytes, denseBytes, blockBytes;
};

KernelArgs sparcclKernelArgs(sparcclComm_t comm, const sparcclLayerSet_t* set, int dtype, int op);

/* Launchers (select_kernels.cu, reduce_kernels.cu, importance_kernels.cu); each returns
 * the first launch error. */
cudaError_t sparcclLaunchCompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                  cudaStream_t stream);
cudaError_t sparcclLaunchDecompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                    void* recv, cudaStream_t stream);
cudaError_t sparcclLaunchRestart(const KernelArgs& a, const DeviceSet* ds, int force,
                                 cudaStream_t stream);
cudaError_t sparcclLaunchScale(const KernelArgs& a, const DeviceSet* ds, float factor,
                               cudaStream_t stream);
cudaError_t sparcclLaunchImportanceReset(const KernelArgs& a, const DeviceSet* ds,
                                         cudaStream_t stream);
cudaError_t sparcclLaunchProbe(const KernelArgs& a, const DeviceSet* ds, const void* params,
                               const void* grad, void* out, float gamma, cudaStream_t stream);
cudaError_t sparcclLaunchImportanceUpdate(const KernelArgs& a, const DeviceSet* ds,
                                          const void* q, const void* g, int simplex,
                                          cudaStream_t stream);

/* The elements i of chunk ch that this thread takes, strided over the block.  The stride
 * runs on the offset within the chunk: in the last chunk of a layer of nearly 2^32 elements
 * (SPEC 2 allows 2^32 - 1), `i += blockDim.x` would wrap past 2^32 - 1 to the layer's first
 * elements and never end. */
#define SPARCCL_FOR_CHUNK(i, ch)                                                     \
  for (uint32_t i##Offset_ = threadIdx.x, i = (ch).begin + threadIdx.x;              \
       i##Offset_ < (ch).end - (ch).begin; i##Offset_ += blockDim.x, i = (ch).begin + i##Offset_)

/* A float NaN with the canonical bits (host and device). */
__device__ __forceinline__ float sparcclNaN() { return __uint_as_float(SPARCCL_CANONICAL_NAN_BITS); }

/* Exclusive scan of per-thread values over a block of SPARCCL_THREADS threads; returns the
 * thread's exclusive prefix and writes the block total to *total. */
template <typename T>
__device__ __forceinline__ T blockExclusiveScan(T value, T* total) {
  __shared__ T partial[SPARCCL_THREADS];
  __shared__ T sum;
  T prefix;
  partial[threadIdx.x] = value;
  __syncthreads();
  if (threadIdx.x == 0) {
    T acc = 0;
    for (int t = 0; t < SPARCCL_THREADS; t++) {
      T v = partial[t];
      partial[t] = acc;
      acc += v;
    }
    sum = acc;
  }
  __syncthreads();
  prefix = partial[threadIdx.x];
  *total = sum;
  __syncthreads();
  return prefix;
}

/* A kernel launch: SPARCCL_LAUNCH(grid, block, stream, kernel)(args...).  nvcc gets the
 * <<<>>> syntax; the CPU emulator (tests/cuda_emu/cuda_emu.h, g++) its launcher. */
#if defined(__CUDACC__)
#define SPARCCL_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<(grid), (block), 0, (stream)>>>
#else
#define SPARCCL_LAUNCH(grid, block, stream, ...) cudaEmuLaunch((grid), (block), (stream), __VA_ARGS__)
#endif

#define SPARCCL_CUDA_CHECK(call)                                 \
  do {                                                           \
    cudaError_t err_ = (call);                                   \
    if (err_ != cudaSuccess) return err_;                        \
  } while (0)

#endif
