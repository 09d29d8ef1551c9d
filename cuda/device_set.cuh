/* Device-side state of one layer set and the arguments every kernel gets (cuda/): elements
 * addressed by their index in the key's buffer, work cut into chunks of SPARCCL_CHUNK
 * elements of one layer, one thread block a chunk (docs/DEVICE.md, "Device state and
 * chunks"). */
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
/* Candidates: a chunk's keys in the first digit's boundary bin (or the key pass's window
 * around it), room for this many a chunk; a chunk with more has no run (SPARCCL_NO_RUN) and
 * the later passes read all its keys (docs/DEVICE.md, "Candidates"). */
#define SPARCCL_CANDIDATES (SPARCCL_CHUNK / 4)
#define SPARCCL_NO_RUN 0xffffffffu
/* chunkCandidates of a chunk whose layer the first digit decided (or k == d): no run, and no
 * class mask either, as the first digit pass never read its keys.  A chunk with NO_RUN (more
 * candidates than SPARCCL_CANDIDATES) has no run but has its class mask. */
#define SPARCCL_NO_CLASS 0xfffffffeu
/* The class mask: 2 bits an element (below, in, above the range of first-digit bins the
 * chunk was classified against), word t of a chunk's SPARCCL_CLASS_WORDS holding the
 * elements emitKernel's thread t takes (docs/DEVICE.md, "The class mask"). */
#define SPARCCL_CLASS_WORDS (SPARCCL_CHUNK * 2 / 32)
#define SPARCCL_CLASS_BELOW 0u
#define SPARCCL_CLASS_CANDIDATE 1u
#define SPARCCL_CLASS_ABOVE 2u
#if SPARCCL_CLASS_WORDS != SPARCCL_THREADS || SPARCCL_PER_THREAD != 16
#error "one class word a thread, 16 elements of 2 bits"
#endif

/* Where the selection's passes after the first get an element's key (KeySource): stored,
 * or made again from a, g, w or a Philox word where that reads no more than a stored key
 * would (docs/DEVICE.md, "Key modes"). */
enum {
  SPARCCL_KEYS_STORED,
  SPARCCL_KEYS_FROM_A,
  SPARCCL_KEYS_FROM_G,
  SPARCCL_KEYS_FROM_W,
  SPARCCL_KEYS_PHILOX,
  SPARCCL_KEYS_FROM_AW
};

struct DeviceLayer {
  uint64_t offset, count, k;
  uint64_t indexPos, valuePos, densePos;
  uint64_t chunkBegin;
  uint32_t nchunks, id, flagPos;
  int sparse, sharedSet, all; /* all: k == d, every element sent */
  int flagged; /* keeps state, so follows the skip rule: sparse, or any layer under dgc */
};

struct DeviceChunk {
  uint32_t layer;
  uint32_t begin, end; /* element range within the layer */
};

/* Radix-select progress of one layer (SPEC 1: the k largest keys, ties to lower index). */
struct DeviceSelect {
  uint64_t prefix, need, threshold, ties;
  int done;
  uint32_t window; /* the first digit's bin the key pass predicted (SPARCCL_NO_PREDICTION) */
};

/* The key pass's prediction of a layer's first-digit boundary bin: the bin of the layer's
 * previous call (DeviceArrays::predicted).  Where there is one, the key pass classifies its
 * keys against the bins within SPARCCL_PREDICTION_SPREAD of it and keeps those in between as
 * the chunk's candidates; when this call's bin falls in that window, digit pass 1 reads only
 * the candidates (select_kernels.cu).  A hint: the result is the same either way. */
#define SPARCCL_NO_PREDICTION 0xffffffffu
#define SPARCCL_PREDICTION_SPREAD 1u

/* Per-set counters that a captured graph must update on the device (SPEC 5). */
struct DeviceCounters {
  unsigned long long calls, bytesSent, bytesDense; /* so graph replays are counted too */
  unsigned long long steps;      /* calls whose every sparse layer completed */
  unsigned long long normCount;
  unsigned long long skipped, restarts;
  /* the key's completed calls, graph replays included: the call count a save writes (SPEC
   * 9's warm-up clock; the host decides each call by its own count of calls made,
   * set->calls, which a save and a load set from this) */
  unsigned long long keyCalls;
  int restartPending;
  int errorParity; /* which of the two error buffers holds e (DeviceArrays::errorNext) */
  unsigned internalErrors; /* nonzero: a device-side invariant failed (a bug), see scanLayer */
  /* SPEC 4's call check: nonzero while this call is refused (a block of another call, or a
   * received index outside its layer or out of order); cleared by the compress */
  unsigned callRefused;
  unsigned long long refusedCalls;
  /* layers that needed a second digit, by whether the key pass's prediction held their
   * first-digit bin (no prediction counts as a miss); for tools/gpu_perf.cu */
  unsigned long long predictionHits, predictionMisses;
};

/* The device arrays of a layer set: held by DeviceSet, and handed to every kernel inside
 * KernelArgs (both derive from this, so the list is written once). */
struct DeviceArrays {
  DeviceLayer* layers;
  DeviceChunk* chunks;
  uint32_t* sparseByValue; /* sparse layer ids in wire (value) order */
  /* state.  e is double-buffered unless SPARCCL_ERROR_BUFFERS=1: error and errorNext swap
   * roles every call (errorNow / errorAfter below); errorNext is NULL with one buffer
   * (docs/DEVICE.md, "Double-buffered e"). */
  float *error, *errorNext, *h, *H, *importance, *prevGrad;
  float* momentum; /* dgc's u (SPEC 9), every layer's */
  unsigned long long* layerSteps;
  int* havePrevGrad;
  DeviceCounters* counters;
  unsigned long long* callSequence; /* the comm's (one word for all its sets): SPEC 4 */
  double* normRing;
  /* scratch */
  int keyMode; /* how the passes after the key pass get a key: SPARCCL_KEYS_* (select_kernels.cu) */
  void* keys;  /* SPARCCL_KEYS_STORED only */
  uint32_t* hist; /* nlayers x SPARCCL_RADIX_BINS */
  DeviceSelect* select;
  uint32_t *chunkGreater, *chunkEqual;
  /* nchunks x SPARCCL_CANDIDATES keys: chunk c's candidates from c * SPARCCL_CANDIDATES,
   * chunkCandidates[c] of them (or SPARCCL_NO_RUN, SPARCCL_NO_CLASS); chunkAbove[c]: its
   * keys whose first digit is above that range; chunkClass: nchunks x
   * SPARCCL_CLASS_WORDS, each element's class against it (SPARCCL_CLASS_*), valid where
   * chunkCandidates[c] != SPARCCL_NO_CLASS */
  void* candidates;
  uint32_t *chunkCandidates, *chunkAbove, *chunkClass;
  uint64_t *chunkTiesBefore, *chunkOffset;
  uint32_t* sharedIndices;
  uint8_t *sendBlock, *recvBlocks;
  /* nchunks x nranks, chunk-major: rank r's first position (layer-local, in its section of
   * the chunk's sparse layer) whose index falls in the chunk or after it */
  uint32_t* rankStarts;
  float* sums; /* the float32 outputs, for the restart norm (restartRatio > 0 only) */
  uint32_t* skip;
  double* blockSums;
  /* lastToArrive's counters: one a layer (the compression's passes), then one for the whole
   * decompression grid; 0 between uses */
  uint32_t* arrivals;
  uint32_t* layerBad; /* per layer: a chunk of it is non-finite (keyKernel); 0 between calls */
  uint32_t* predicted; /* per layer: its previous call's first-digit bin, or SPARCCL_NO_PREDICTION */
  void* phaseGrad; /* the phase API: g as compressed (4 bytes an element), made on first use */
  /* warm-up's dense calls (SPEC 9, dense_kernels.cu), with warmupSteps > 0 only: the ring's
   * reduce-scatter chunks sent and received (nranks each), its allgather block and the
   * gathered blocks, in one allocation (sparcclDenseRing_t's layout) */
  uint8_t* ring;
};

struct DeviceSet : DeviceArrays {
  uint32_t nlayers, nchunks, nsparse;
  size_t count;
  DeviceLayer* hostLayers; /* host copy of layers */
};

/* Everything a kernel needs, by value: the arrays and the call's scalars. */
struct KernelArgs : DeviceArrays {
  uint32_t nlayers, nsparse, nranks;
  uint32_t commRank; /* this rank: its block in recvBlocks */
  int compressor, feedback, wireType, dtype, op, online;
  sparcclCallValues_t call; /* from the config (src/steps.h) */
  double restartRatio;
  long long restartEvery;
  int restartLag;
  size_t count, valueCount;
  sparcclWire_t wire; /* the blocks' layout (src/wire.h) */
  uint64_t checkFingerprint; /* this call's (sparcclCallCheck) */
  int phase; /* the phase API's call: its check's sequence is the key's calls, not the comm's */
  int dense; /* a warm-up call (SPEC 9): whole vectors sent, no selection */
  unsigned long long bytesSent; /* what this call puts on the wire for this rank (stats) */
  int plain; /* config.deviceKernels: the plain kernels (plain_kernels.cu) */
};

/* Where a dense call's whole vectors, flags and sums are (dense_kernels.cu,
 * reduce_kernels.cu): element `at` of x in shard at / chunk; the allgather of whole blocks
 * is one shard (docs/DEVICE.md, "Dense layouts"). */
struct DenseLayout {
  int ring;
  size_t chunk;
  uint8_t* values;
  size_t valueStride;
  uint8_t* flags; /* this rank's flags in its send chunks (flagCopies, valueStride apart) */
  uint32_t flagCopies;
  const uint8_t* sums;
  sparcclWire_t sumWire;
  const uint8_t* received; /* every rank's flags, laid out as receivedWire */
  sparcclWire_t receivedWire;
};

/* The call check's sequence number of this call (SPEC 4). */
__device__ __forceinline__ unsigned long long callSequenceOf(const KernelArgs& a) {
  return a.phase ? a.counters->calls : *a.callSequence;
}

KernelArgs sparcclKernelArgs(sparcclComm_t comm, const sparcclLayerSet_t* set, int dtype, int op);

/* Launchers (select_kernels.cu, reduce_kernels.cu, importance_kernels.cu); each returns
 * the first launch error. */
cudaError_t sparcclLaunchCompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                  cudaStream_t stream);
/* SPEC 4's call check (callcheck_kernels.cu): written before the compress, verified after
 * the exchange (the decompress then does nothing when it failed). */
/* copies: the ring's send chunks (block q of a.sendBlock, q < copies) each get the
 * check; a.recvBlocks NULL: no receive slots to zero (the phase API's dense compress). */
cudaError_t sparcclLaunchCallCheckWrite(const KernelArgs& a, cudaStream_t stream, uint32_t copies = 1);
cudaError_t sparcclLaunchCallCheckVerify(const KernelArgs& a, cudaStream_t stream);
cudaError_t sparcclLaunchDecompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                    void* recv, cudaStream_t stream);
/* The plain kernels (plain_kernels.cu, config.deviceKernels): the same wire block, outputs
 * and state as the two above, bit for bit; the plain decompress ends in sparcclLaunchPolicy. */
cudaError_t sparcclLaunchPlainCompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                       cudaStream_t stream);
cudaError_t sparcclLaunchPlainDecompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                         void* recv, cudaStream_t stream);
cudaError_t sparcclLaunchPolicy(const KernelArgs& a, const DeviceSet* ds, cudaStream_t stream);
/* Warm-up's dense calls (SPEC 9, dense_kernels.cu): the whole x of every layer into the
 * send chunks, with each flagged layer's non-finite flag; the ring's shard sums (and their
 * check) from the received chunks; after the exchange, the outputs, the state and the
 * counters (reduce_kernels.cu). */
cudaError_t sparcclLaunchDensePack(const KernelArgs& a, const DeviceSet* ds, const DenseLayout& d,
                                   const void* send, cudaStream_t stream);
cudaError_t sparcclLaunchShardSums(const KernelArgs& a, const sparcclDenseRing_t& ring,
                                   const uint8_t* received, uint8_t* block, uint8_t* gathered,
                                   cudaStream_t stream);
cudaError_t sparcclLaunchDenseFinish(const KernelArgs& a, const DeviceSet* ds, const DenseLayout& d,
                                     const void* send, void* recv, cudaStream_t stream);
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

/* The sparse layer holding wire position p (binary search over value order). */
__device__ __forceinline__ uint32_t layerOfPosition(const KernelArgs& a, size_t p) {
  uint32_t lo = 0, hi = a.nsparse - 1;
  while (lo < hi) {
    uint32_t mid = (lo + hi + 1) / 2;
    if (a.layers[a.sparseByValue[mid]].valuePos <= p) lo = mid; else hi = mid - 1;
  }
  return a.sparseByValue[lo];
}

/* The elements i of chunk ch that this thread takes, strided over the block.  The stride
 * runs on the offset within the chunk: in the last chunk of a layer of nearly 2^32 elements
 * (SPEC 2 allows 2^32 - 1), `i += blockDim.x` would wrap past 2^32 - 1 to the layer's first
 * elements and never end. */
#define SPARCCL_FOR_CHUNK(i, ch)                                                     \
  for (uint32_t i##Offset_ = threadIdx.x, i = (ch).begin + threadIdx.x;              \
       i##Offset_ < (ch).end - (ch).begin; i##Offset_ += blockDim.x, i = (ch).begin + i##Offset_)

/* The same elements (offsets o = threadIdx.x + m * SPARCCL_THREADS below `size`) in batches
 * of SPARCCL_BATCH: read(o, &raw) for each of a batch, then use(o, m, raw) for each, so a
 * thread has SPARCCL_BATCH loads in flight; read should only load (docs/DEVICE.md, "Batched
 * reads"). */
#define SPARCCL_BATCH 8
#if defined(__CUDACC__)
#define SPARCCL_UNROLL _Pragma("unroll")
#else
#define SPARCCL_UNROLL /* the CPU emulator: g++ needs no hint */
#endif
#if SPARCCL_PER_THREAD % SPARCCL_BATCH != 0
#error "a thread's elements in whole batches"
#endif
template <typename Raw, typename Read, typename Use>
__device__ __forceinline__ void forChunkBatched(uint32_t size, const Read& read, const Use& use) {
  for (uint32_t m0 = 0; m0 < SPARCCL_PER_THREAD && threadIdx.x + m0 * SPARCCL_THREADS < size;
       m0 += SPARCCL_BATCH) {
    Raw raw[SPARCCL_BATCH];
    SPARCCL_UNROLL
    for (uint32_t u = 0; u < SPARCCL_BATCH; u++) {
      const uint32_t o = threadIdx.x + (m0 + u) * SPARCCL_THREADS;
      if (o < size) read(o, &raw[u]);
    }
    SPARCCL_UNROLL
    for (uint32_t u = 0; u < SPARCCL_BATCH; u++) {
      const uint32_t o = threadIdx.x + (m0 + u) * SPARCCL_THREADS;
      if (o < size) use(o, m0 + u, raw[u]);
    }
  }
}

/* The buffer holding e before this call's decompress commits, and the one that will hold it
 * after (the same buffer with one).  Every thread of a call reads the same parity: only
 * policy (reduce_kernels.cu), the last thing a call does, flips it, in the reduce's last
 * block after every other block has finished, or in its own launch after the norm. */
__device__ __forceinline__ float* errorNow(const DeviceArrays& a) {
  return a.errorNext != NULL && a.counters->errorParity ? a.errorNext : a.error;
}
__device__ __forceinline__ float* errorAfter(const DeviceArrays& a) {
  return a.errorNext != NULL && !a.counters->errorParity ? a.errorNext : a.error;
}

/* RAFT's "last block finishes": every block of a group calls this once, after the writes
 * the group's last block reads; 1 in the block that arrives last (uniformly), 0 in the
 * others, the counter back to 0.  All of a block's threads must call it (docs/DEVICE.md). */
__device__ __forceinline__ int lastToArrive(uint32_t* counter, uint32_t blocks) {
  __shared__ int last;
  __threadfence(); /* this block's writes, before its arrival is counted */
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(counter, 1u) == blocks - 1;
    if (last) *counter = 0; /* every block of the group has arrived: no one else touches it */
  }
  __syncthreads();
  if (last) __threadfence(); /* the arrivals seen, before the reads of what they wrote */
  return last;
}

/* A layer's non-finite flag (SPEC 2) from its chunks, one block each: every block of the
 * layer calls this once, all its threads, each with whether its elements were finite; the
 * last block to arrive writes the layer's flag at flagPos of `copies` flag arrays `stride`
 * bytes apart and returns 1 (uniformly over the block), the others 0.  a.layerBad is 0
 * again after. */
__device__ __forceinline__ int arriveWithFlag(const KernelArgs& a, uint32_t layer,
                                              const DeviceLayer& L, int finite, uint8_t* flags,
                                              uint32_t copies, size_t stride) {
  __shared__ uint32_t bad;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  if (!finite) atomicOr(&bad, 1u); /* plain stores from many threads race (racecheck) */
  __syncthreads();
  if (threadIdx.x == 0 && bad) atomicOr(&a.layerBad[layer], 1u);
  const int last = lastToArrive(&a.arrivals[layer], L.nchunks);
  if (last && threadIdx.x == 0) {
    volatile uint32_t* layerBad = a.layerBad + layer;
    const uint32_t flag = *layerBad;
    for (uint32_t q = 0; q < copies; q++) ((uint32_t*)(flags + q * stride))[L.flagPos] = flag;
    *layerBad = 0;
  }
  return last;
}

/* The reduce's per-element steps, shared by reduce_kernels.cu and plain_kernels.cu: rank r's
 * flags and a layer's indices in a received block, an element's output, its store. */
__device__ __forceinline__ const uint32_t* rankFlags(const KernelArgs& a, int r) {
  return sparccl_wire_flags(&a.wire, sparccl_wire_block(&a.wire, a.recvBlocks, (size_t)r));
}

__device__ __forceinline__ const uint32_t* indicesOf(const KernelArgs& a, const DeviceLayer& L,
                                                     const uint8_t* block) {
  return sparccl_wire_layer_indices(&a.wire, block, L.sharedSet, L.indexPos, a.sharedIndices,
                                    L.valuePos);
}

/* The output of one element (src/steps.h); EF21's H where ef21. */
__device__ __forceinline__ float outputOf(const KernelArgs& a, size_t at, float s, int ef21) {
  return sparccl_layer_output(a.op, (float)a.nranks, s, ef21 ? &a.H[at] : NULL, 0);
}

__device__ __forceinline__ void storeOutput(const KernelArgs& a, void* recv, size_t at, float v) {
  if (a.restartRatio > 0.0) a.sums[at] = v; /* the float32 output, for the norm */
  sparccl_store(recv, at, a.dtype, v);
}

/* Exclusive scan of per-thread values over a block of SPARCCL_THREADS threads: returns the
 * thread's prefix, *total the block's; Kogge-Stone in shared memory, no warp shuffles (the
 * CPU emulator has none; docs/DEVICE.md, "Block scan"). */
template <typename T>
__device__ __forceinline__ T blockExclusiveScan(T value, T* total) {
  __shared__ T partial[2][SPARCCL_THREADS];
  const uint32_t t = threadIdx.x;
  uint32_t in = 0;
  T inclusive = value;
  partial[0][t] = value;
  __syncthreads();
  for (uint32_t offset = 1; offset < SPARCCL_THREADS; offset <<= 1) {
    if (t >= offset) inclusive += partial[in][t - offset];
    in ^= 1u;
    partial[in][t] = inclusive;
    __syncthreads();
  }
  *total = partial[in][SPARCCL_THREADS - 1];
  __syncthreads(); /* before a next call's first store overwrites what others still read */
  return inclusive - value;
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
