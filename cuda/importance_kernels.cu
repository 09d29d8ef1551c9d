/* Importance weights on the device (SPEC 7; thesis eqs. (11)-(13)), the same arithmetic as
 * src/importance.c through sparccl_math.h. */
#include "device_set.cuh"

__global__ void probeKernel(KernelArgs a, const void* params, const void* grad, void* out,
                            float gamma) {
  const DeviceChunk ch = a.chunks[blockIdx.x];
  const DeviceLayer L = a.layers[ch.layer];
  SPARCCL_FOR_CHUNK(i, ch) {
    size_t at = L.offset + i;
    float w = (L.sparse && a.importance) ? a.importance[at] : 1.0f;
    sparccl_store(out, at, a.dtype,
                  sparccl_probe(sparccl_load(params, at, a.dtype), w, sparccl_load(grad, at, a.dtype), gamma));
  }
}

/* Per layer: a non-finite exponent blocks the step (a.skip), and the max exponent as an
 * ordered integer (an integer max is order-independent). */
__global__ void exponentKernel(KernelArgs a, const void* q, const void* g, uint32_t* zmax) {
  const DeviceChunk ch = a.chunks[blockIdx.x];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse) return;
  uint32_t bad = 0, best = 0;
  SPARCCL_FOR_CHUNK(i, ch) {
    size_t at = L.offset + i;
    float z = sparccl_simplex_exponent(sparccl_load(q, at, a.dtype), sparccl_load(g, at, a.dtype), a.call.rate);
    bad |= !sparccl_is_finite(z);
    uint32_t key = sparccl_ordered_float(z);
    best = key > best ? key : best;
  }
  if (bad) atomicOr(&a.skip[ch.layer], 1u);
  atomicMax(&zmax[ch.layer], best);
}

__device__ __forceinline__ float unorderFloat(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

__global__ void cubeKernel(KernelArgs a, const void* q, const void* g) {
  const DeviceChunk ch = a.chunks[blockIdx.x];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse || a.skip[ch.layer]) return;
  SPARCCL_FOR_CHUNK(i, ch) {
    size_t at = L.offset + i;
    a.importance[at] = sparccl_cube_step(a.importance[at], sparccl_load(q, at, a.dtype),
                                         sparccl_load(g, at, a.dtype), a.call.rate, a.call.low, a.call.high);
  }
}

/* Simplex, eq. (12): one thread per chunk sums its 4096 terms in order (a block of the
 * blocked sum); one thread per layer then sums the blocks in order. */
__global__ void simplexChunkSumKernel(KernelArgs a, const void* q, const void* g,
                                      const uint32_t* zmax, uint32_t nchunks) {
  uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= nchunks) return;
  const DeviceChunk ch = a.chunks[c];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse || a.skip[ch.layer]) return;
  const float zm = unorderFloat(zmax[ch.layer]);
  double sum = 0.0;
  for (uint32_t i = ch.begin; i < ch.end; i++) {
    size_t at = L.offset + i;
    float z = sparccl_simplex_exponent(sparccl_load(q, at, a.dtype), sparccl_load(g, at, a.dtype), a.call.rate);
    sum += sparccl_simplex_term(a.importance[at], z, zm);
  }
  a.blockSums[c] = sum;
}

__global__ void simplexLayerSumKernel(KernelArgs a, double* layerSums) {
  uint32_t l = blockIdx.x * blockDim.x + threadIdx.x;
  if (l >= a.nlayers) return;
  const DeviceLayer L = a.layers[l];
  if (!L.sparse) return;
  double total = 0.0;
  for (uint32_t c = 0; c < L.nchunks; c++) total += a.blockSums[L.chunkBegin + c];
  layerSums[l] = total;
  if (!(total > 0.0)) a.skip[l] = 1; /* all weights zero: nothing to normalise */
}

__global__ void simplexWeightKernel(KernelArgs a, const void* q, const void* g,
                                    const uint32_t* zmax, const double* layerSums) {
  const DeviceChunk ch = a.chunks[blockIdx.x];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse || a.skip[ch.layer]) return;
  const float zm = unorderFloat(zmax[ch.layer]);
  SPARCCL_FOR_CHUNK(i, ch) {
    size_t at = L.offset + i;
    float z = sparccl_simplex_exponent(sparccl_load(q, at, a.dtype), sparccl_load(g, at, a.dtype), a.call.rate);
    a.importance[at] = sparccl_simplex_weight((double)L.count,
                                              sparccl_simplex_term(a.importance[at], z, zm),
                                              layerSums[ch.layer]);
  }
}

__global__ void importanceResetKernel(KernelArgs a) {
  for (size_t at = (size_t)blockIdx.x * blockDim.x + threadIdx.x; at < a.count;
       at += (size_t)gridDim.x * blockDim.x)
    a.importance[at] = 1.0f;
}

cudaError_t sparcclLaunchProbe(const KernelArgs& a, const DeviceSet* ds, const void* params,
                               const void* grad, void* out, float gamma, cudaStream_t stream) {
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, probeKernel)(a, params, grad, out, gamma);
  return cudaGetLastError();
}

cudaError_t sparcclLaunchImportanceReset(const KernelArgs& a, const DeviceSet* ds,
                                         cudaStream_t stream) {
  SPARCCL_LAUNCH(256, SPARCCL_THREADS, stream, importanceResetKernel)(a);
  return cudaGetLastError();
}

/* Scratch: a.skip (per layer), a.chunkGreater (as per-layer max exponents: nchunks >= nlayers
 * entries; not a.hist, which the compression needs zero between calls), a.blockSums (per
 * chunk, then per layer after the chunks: allocated with nchunks + nlayers entries). */
cudaError_t sparcclLaunchImportanceUpdate(const KernelArgs& a, const DeviceSet* ds,
                                          const void* q, const void* g, int simplex,
                                          cudaStream_t stream) {
  uint32_t* zmax = a.chunkGreater;
  double* layerSums = (double*)a.blockSums + ds->nchunks;
  SPARCCL_CUDA_CHECK(cudaMemsetAsync(a.skip, 0, ds->nlayers * sizeof(uint32_t), stream));
  SPARCCL_CUDA_CHECK(cudaMemsetAsync(zmax, 0, ds->nlayers * sizeof(uint32_t), stream));
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, exponentKernel)(a, q, g, zmax);
  if (!simplex) {
    SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, cubeKernel)(a, q, g);
    return cudaGetLastError();
  }
  SPARCCL_LAUNCH((ds->nchunks + 127) / 128, 128, stream, simplexChunkSumKernel)(a, q, g, zmax, ds->nchunks);
  SPARCCL_LAUNCH((ds->nlayers + 127) / 128, 128, stream, simplexLayerSumKernel)(a, layerSums);
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, simplexWeightKernel)(a, q, g, zmax, layerSums);
  return cudaGetLastError();
}
