/* Warm-up's dense calls on the device (SPEC 9; the host's are src/dense.c): the pack of every
 * layer's whole x and flags into the send chunks, and the ring's shard sums in rank order;
 * the outputs and state after the exchange are reduce_kernels.cu's denseChunk
 * (docs/DEVICE.md, "Dense calls"). */
#include "device_set.cuh"

/* One block per chunk of a layer. */
__global__ void densePackKernel(KernelArgs a, DenseLayout d, const void* send) {
  const DeviceChunk ch = a.chunks[blockIdx.x];
  const DeviceLayer L = a.layers[ch.layer];
  int finite = 1;
  SPARCCL_FOR_CHUNK(i, ch) {
    const size_t at = L.offset + i, shard = at / d.chunk;
    const float g = sparccl_load(send, at, a.dtype);
    const float x = a.momentum ? sparccl_feedback_gradient(SPARCCL_FB_DGC, g, a.momentum[at], a.call.momentumFactor) : g;
    ((float*)(d.values + shard * d.valueStride))[at - shard * d.chunk] = x;
    finite &= sparccl_is_finite(x);
  }
  if (L.flagged) /* uniform over the block */
    arriveWithFlag(a, ch.layer, L, finite, d.flags, d.flagCopies, d.valueStride);
}

/* The shard's sums and this call's check into the allgather block, the gathered blocks'
 * check slots zeroed.  A call the reduce-scatter's checks refused sends a zeroed check
 * (every rank refuses it already: each saw every rank's check). */
__global__ void shardSumKernel(KernelArgs a, sparcclDenseRing_t ring, const uint8_t* received,
                               uint8_t* block, uint8_t* gathered) {
  const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int refused = a.counters->callRefused != 0;
  float* sums = sparccl_wire_dense(&ring.gather, block);
  for (size_t j = first; !refused && j < ring.chunk; j += (size_t)gridDim.x * blockDim.x) {
    sums[j] = sparccl_rank_sum(&ring.scatter, received, a.nranks, j);
  }
  if (first == 0) {
    sparcclCallCheck_t* check = sparccl_wire_check(&ring.gather, block);
    check->sequence = refused ? 0 : callSequenceOf(a);
    check->fingerprint = refused ? 0 : a.checkFingerprint;
  }
  for (size_t r = first; r < a.nranks; r += (size_t)gridDim.x * blockDim.x) {
    sparcclCallCheck_t* slot = sparccl_wire_check(&ring.gather, sparccl_wire_block(&ring.gather, gathered, r));
    slot->sequence = 0;
    slot->fingerprint = 0;
  }
}

cudaError_t sparcclLaunchDensePack(const KernelArgs& a, const DeviceSet* ds, const DenseLayout& d,
                                   const void* send, cudaStream_t stream) {
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, densePackKernel)(a, d, send);
  return cudaGetLastError();
}

cudaError_t sparcclLaunchShardSums(const KernelArgs& a, const sparcclDenseRing_t& ring,
                                   const uint8_t* received, uint8_t* block, uint8_t* gathered,
                                   cudaStream_t stream) {
  size_t blocks = (ring.chunk + SPARCCL_THREADS - 1) / SPARCCL_THREADS;
  if (blocks > 1024) blocks = 1024; /* a grid-stride loop beyond */
  if (blocks == 0) blocks = 1;
  SPARCCL_LAUNCH((unsigned)blocks, SPARCCL_THREADS, stream, shardSumKernel)(a, ring, received, block, gathered);
  return cudaGetLastError();
}
