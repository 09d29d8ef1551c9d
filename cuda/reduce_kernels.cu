/*
 * After the exchange, on the device (SPEC 1, 2, 7):
 *   skip flags (a layer non-finite on any rank is skipped everywhere; step counters)
 *   -> state update: e <- e + g (then e <- a - sent where selected), h <- h + sent,
 *      online importance step committed
 *   -> rank-ordered sums: one scatter launch per rank, in rank order; a rank's indices are
 *      unique within a layer, so no two threads of a launch touch one element: no atomics
 *   -> output pass (s, s / n, or EF21's H), converted once; dense layers summed in rank order
 *   -> restart policies and counters (one thread; the blocked norm of SPEC 3a first).
 */
#include "device_set.cuh"

__device__ __forceinline__ const uint32_t* rankFlags(const KernelArgs& a, int r) {
  return (const uint32_t*)(a.recvBlocks + (size_t)r * a.blockBytes + a.indexBytes + a.valueBytes +
                           a.denseBytes);
}

__global__ void skipKernel(KernelArgs a) {
  for (uint32_t l = threadIdx.x; l < a.nlayers; l += blockDim.x) {
    const DeviceLayer L = a.layers[l];
    uint32_t skip = 0;
    if (L.sparse)
      for (uint32_t r = 0; r < a.nranks; r++) skip |= rankFlags(a, (int)r)[L.flagPos];
    a.skip[l] = skip;
    if (L.sparse && skip) {
      atomicAdd(&a.counters->skipped, 1ull);
      a.counters->anySkipped = 1;
    }
  }
}

/* e <- e + g (= a, exactly as the key pass computed it); online importance committed. */
__global__ void updateKernel(KernelArgs a, const void* send) {
  const DeviceChunk ch = a.chunks[blockIdx.x];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse || a.skip[ch.layer]) return;
  const int havePrev = a.havePrevGrad[ch.layer];
  SPARCCL_FOR_CHUNK(i, ch) {
    size_t at = L.offset + i;
    float g = sparccl_load(send, at, a.dtype);
    if (a.error) a.error[at] = a.error[at] + g;
    if (a.prevGrad) {
      if (havePrev)
        a.importance[at] = sparccl_cube_step(a.importance[at], g, a.prevGrad[at], a.rate, a.low, a.high);
      a.prevGrad[at] = g;
    }
  }
}

/* The sparse layer holding wire position p (binary search over value order). */
__device__ __forceinline__ uint32_t layerOfPosition(const KernelArgs& a, size_t p) {
  uint32_t lo = 0, hi = a.nsparse - 1;
  while (lo < hi) {
    uint32_t mid = (lo + hi + 1) / 2;
    if (a.layers[a.sparseByValue[mid]].valuePos <= p) lo = mid; else hi = mid - 1;
  }
  return a.sparseByValue[lo];
}

__device__ __forceinline__ const uint32_t* indicesOf(const KernelArgs& a, const DeviceLayer& L,
                                                     const uint8_t* block) {
  return L.sharedSet ? a.sharedIndices + L.valuePos : (const uint32_t*)block + L.indexPos;
}

/* This rank's sent values: e <- a - sent, h <- h + sent. */
__global__ void ownSentKernel(KernelArgs a) {
  size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= a.valueCount) return;
  uint32_t l = layerOfPosition(a, p);
  const DeviceLayer L = a.layers[l];
  if (a.skip[l]) return;
  size_t t = p - L.valuePos;
  size_t at = L.offset + indicesOf(a, L, a.sendBlock)[t];
  float sent = sparccl_load(a.sendBlock + a.indexBytes, p, a.wireType);
  if (a.error) a.error[at] = sparccl_error_update(a.error[at], sent);
  if (a.h) a.h[at] += sent;
}

/* s <- s + sent_r for rank r's selected elements (launched once per rank, in order). */
__global__ void scatterKernel(KernelArgs a, int r) {
  size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= a.valueCount) return;
  uint32_t l = layerOfPosition(a, p);
  const DeviceLayer L = a.layers[l];
  if (a.skip[l]) return;
  const uint8_t* block = a.recvBlocks + (size_t)r * a.blockBytes;
  size_t at = L.offset + indicesOf(a, L, block)[p - L.valuePos];
  a.sums[at] += sparccl_load(block + a.indexBytes, p, a.wireType);
}

/* The output: s or s / n; EF21: H <- H + s / n, then H * n or H (SPEC 1). */
__global__ void outputKernel(KernelArgs a, void* recv) {
  const DeviceChunk ch = a.chunks[blockIdx.x];
  const DeviceLayer L = a.layers[ch.layer];
  const float n = (float)a.nranks;
  const int skip = L.sparse && a.skip[ch.layer];
  SPARCCL_FOR_CHUNK(i, ch) {
    size_t at = L.offset + i;
    float v;
    if (skip) {
      v = sparcclNaN();
    } else {
      float s;
      if (L.sparse) {
        s = a.sums[at];
      } else {
        s = +0.0f;
        for (uint32_t r = 0; r < a.nranks; r++)
          s = s + ((const float*)(a.recvBlocks + (size_t)r * a.blockBytes + a.indexBytes +
                                  a.valueBytes))[L.densePos + i];
      }
      if (L.sparse && a.H) {
        a.H[at] = sparccl_canonical_nan(a.H[at] + s / n); /* Inf - Inf: NaN bits as on the host */
        v = a.op == sparcclSum ? a.H[at] * n : a.H[at];
      } else {
        v = a.op == sparcclSum ? s : s / n;
      }
    }
    if (a.restartRatio > 0.0) a.sums[at] = v; /* the float32 output, for the norm */
    sparccl_store(recv, at, a.dtype, v);
  }
}

/* Blocked sum of squares over the whole buffer (SPEC 3a): one thread per 4096 block. */
__global__ void normBlocksKernel(KernelArgs a) {
  size_t b = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  size_t first = b * SPARCCL_SUM_BLOCK;
  if (first >= a.count) return;
  size_t last = first + SPARCCL_SUM_BLOCK < a.count ? first + SPARCCL_SUM_BLOCK : a.count;
  double sum = 0.0;
  for (size_t i = first; i < last; i++) sum += (double)a.sums[i] * (double)a.sums[i];
  a.blockSums[b] = sum;
}

/* One thread: counters, havePrevGrad, the restart policies (SPEC 7). */
__global__ void policyKernel(KernelArgs a) {
  DeviceCounters* c = a.counters;
  int completed = !c->anySkipped;
  c->calls++;
  c->bytesSent += a.blockBytes;
  c->bytesDense += a.count * sparccl_dtype_size(a.dtype);
  c->anySkipped = 0;
  for (uint32_t l = 0; l < a.nlayers; l++)
    if (a.layers[l].sparse && !a.skip[l]) {
      a.layerSteps[l]++;
      if (a.prevGrad) a.havePrevGrad[l] = 1;
    }
  if (!completed) return;
  c->steps++;
  if (a.restartEvery > 0 && c->steps % (unsigned long long)a.restartEvery == 0) c->restartPending = 1;
  if (a.restartRatio > 0.0) {
    size_t blocks = (a.count + SPARCCL_SUM_BLOCK - 1) / SPARCCL_SUM_BLOCK;
    double total = 0.0;
    for (size_t b = 0; b < blocks; b++) total += a.blockSums[b];
    double norm = sparccl_canonical_nan_double(sqrt(total)); /* NaN bits as on the host */
    unsigned long long t = c->normCount++;
    unsigned long long ring = (unsigned long long)a.restartLag + 1;
    a.normRing[t % ring] = norm;
    if (t >= (unsigned long long)a.restartLag) {
      double before = a.normRing[(t - a.restartLag) % ring];
      if (before > 0.0 && norm / before > a.restartRatio) c->restartPending = 1;
    }
  }
}

/* Restart: e, h, H <- 0, w <- 1 where a restart is pending (or forced). */
__global__ void restartKernel(KernelArgs a, int force) {
  if (!force && !a.counters->restartPending) return;
  for (size_t at = (size_t)blockIdx.x * blockDim.x + threadIdx.x; at < a.count;
       at += (size_t)gridDim.x * blockDim.x) {
    if (a.error) a.error[at] = 0.0f;
    if (a.h) a.h[at] = 0.0f;
    if (a.H) a.H[at] = 0.0f;
    if (a.importance) a.importance[at] = 1.0f;
  }
}

__global__ void restartDoneKernel(KernelArgs a, int force) {
  if (force || a.counters->restartPending) a.counters->restarts++;
  a.counters->restartPending = 0;
}

static unsigned gridFor(size_t n) { return (unsigned)((n + SPARCCL_THREADS - 1) / SPARCCL_THREADS); }

cudaError_t sparcclLaunchRestart(const KernelArgs& a, const DeviceSet* ds, int force,
                                 cudaStream_t stream) {
  SPARCCL_LAUNCH(256, SPARCCL_THREADS, stream, restartKernel)(a, force);
  SPARCCL_LAUNCH(1, 1, stream, restartDoneKernel)(a, force);
  return cudaGetLastError();
}

cudaError_t sparcclLaunchDecompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                    void* recv, cudaStream_t stream) {
  SPARCCL_LAUNCH(1, SPARCCL_THREADS, stream, skipKernel)(a);
  if (a.error || a.prevGrad) SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, updateKernel)(a, send);
  if (a.valueCount && (a.error || a.h))
    SPARCCL_LAUNCH(gridFor(a.valueCount), SPARCCL_THREADS, stream, ownSentKernel)(a);
  SPARCCL_CUDA_CHECK(cudaMemsetAsync(a.sums, 0, a.count * sizeof(float), stream));
  for (uint32_t r = 0; a.valueCount && r < a.nranks; r++)
    SPARCCL_LAUNCH(gridFor(a.valueCount), SPARCCL_THREADS, stream, scatterKernel)(a, (int)r);
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, outputKernel)(a, recv);
  if (a.restartRatio > 0.0)
    SPARCCL_LAUNCH(gridFor((a.count + SPARCCL_SUM_BLOCK - 1) / SPARCCL_SUM_BLOCK), SPARCCL_THREADS,
                   stream, normBlocksKernel)(a);
  SPARCCL_LAUNCH(1, 1, stream, policyKernel)(a);
  SPARCCL_CUDA_CHECK(cudaGetLastError());
  if (a.restartEvery > 0 || a.restartRatio > 0.0) return sparcclLaunchRestart(a, ds, 0, stream);
  return cudaSuccess;
}

__global__ void scaleKernel(KernelArgs a, float factor) {
  for (size_t at = (size_t)blockIdx.x * blockDim.x + threadIdx.x; at < a.count;
       at += (size_t)gridDim.x * blockDim.x) {
    if (a.error) a.error[at] *= factor;
    if (a.h) a.h[at] *= factor;
    if (a.H) a.H[at] *= factor;
  }
}

cudaError_t sparcclLaunchScale(const KernelArgs& a, const DeviceSet* ds, float factor,
                               cudaStream_t stream) {
  SPARCCL_LAUNCH(256, SPARCCL_THREADS, stream, scaleKernel)(a, factor);
  return cudaGetLastError();
}
