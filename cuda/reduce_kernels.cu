/*
 * After the exchange, on the device (SPEC 1, 2, 7), 2 launches (+ 2 for the restart norm,
 * + 2 for the restart kernels):
 *   rank ranges: for every rank and chunk of a sparse layer, where that rank's section of the
 *   layer enters the chunk (its indices ascend), so a chunk finds its pairs unsearched
 *   -> one block per chunk: the skip flag (a layer non-finite on any rank is skipped on
 *      every rank); the online importance step; then the rank-ordered sums, rank by rank
 *      with a barrier between ranks (a rank's indices are unique within a layer, so no two
 *      threads of a rank touch one element: no atomics), this rank's sent values also giving
 *      h <- h + sent (and e <- a - sent with one error buffer); then the output (s, s / n,
 *      or EF21's H) converted once.  With two error buffers e's next value is already in the
 *      second one (the key pass wrote a = e + g, the emit a - sent where this rank sent);
 *      with one, it is formed in shared memory and written back.  Dense layers: summed in
 *      rank order.  The last block to finish runs the counters and restart policies (policy),
 *      and the error buffers swap roles; with restartRatio > 0 they wait for the blocked
 *      norm of SPEC 3a, a launch of its own, and run in a one-thread launch after it.
 * State changes only after every rank's flag is known (SPEC 2): a skipped layer's e is
 * copied into the buffer that holds e from the next call on, its h, H, w left alone.
 */
#include "device_set.cuh"

/* One thread per wire position t of a layer, for every rank r: t is where r's section enters
 * every chunk after the one of position t - 1, up to its own (the last position also writes
 * k for the chunks after its own), so each entry of a.rankStarts is written exactly once.
 * Positions are layer-local: k <= 2^32 - 1 (SPEC 1) fits. */
__global__ void rankRangesKernel(KernelArgs a) {
  size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= a.valueCount || a.counters->callRefused) return; /* refused: indices untrusted */
  const DeviceLayer L = a.layers[layerOfPosition(a, p)];
  const uint32_t t = (uint32_t)(p - L.valuePos);
  for (uint32_t r = 0; r < a.nranks; r++) {
    const uint32_t* indices = indicesOf(a, L, a.recvBlocks + (size_t)r * a.blockBytes);
    uint32_t* starts = a.rankStarts + (size_t)L.chunkBegin * a.nranks + r;
    const uint32_t chunk = indices[t] / SPARCCL_CHUNK;
    for (uint32_t c = t == 0 ? 0 : indices[t - 1] / SPARCCL_CHUNK + 1; c <= chunk; c++)
      starts[(size_t)c * a.nranks] = t;
    if (t + 1 == L.k)
      for (uint32_t c = chunk + 1; c < L.nchunks; c++) starts[(size_t)c * a.nranks] = t + 1;
  }
}

/* e of the chunk's elements kept as it was (dense and skipped layers), in the buffer that
 * holds e after this call: a copy with two buffers, nothing to do with one. */
__device__ __forceinline__ void keepError(const KernelArgs& a, const DeviceChunk& ch,
                                          const DeviceLayer& L) {
  if (a.errorNext == NULL) return;
  const float* now = errorNow(a);
  float* after = errorAfter(a);
  SPARCCL_FOR_CHUNK(i, ch) after[L.offset + i] = now[L.offset + i];
}

/* One block per chunk: the state update, the rank-ordered sums and the output.  With two
 * error buffers the compression already wrote e's next value into the buffer that will hold
 * it (errorAfter: a = e + g from the key pass, a - sent from the emit where this rank sent),
 * so the chunk reads neither g nor e.  With one, a is formed here from e and g in shared
 * memory, this rank's sent values subtracted, and the whole chunk's e written back. */
template <int InPlace> /* 1: ef or scam with one error buffer, e updated here */
__device__ __forceinline__ void reduceChunk(const KernelArgs& a, const void* send, void* recv) {
  __shared__ float sums[SPARCCL_CHUNK]; /* s, element i at i - ch.begin */
  /* one buffer: a = e + g, then a - sent where sent (16 KiB only then: more blocks an SM) */
  __shared__ float error[InPlace ? SPARCCL_CHUNK : 1];
  const uint32_t c = blockIdx.x;
  const DeviceChunk ch = a.chunks[c];
  const DeviceLayer L = a.layers[ch.layer];
  uint32_t skip = 0; /* SPEC 2: a layer non-finite on any rank is skipped on every rank */
  if (L.flagged)
    for (uint32_t r = 0; r < a.nranks; r++) skip |= rankFlags(a, (int)r)[L.flagPos];
  if (L.flagged && c == L.chunkBegin && threadIdx.x == 0) a.skip[ch.layer] = skip; /* for policy */
  if (!L.sparse && !skip) {
    keepError(a, ch, L);
    SPARCCL_FOR_CHUNK(i, ch) {
      const size_t at = L.offset + i;
      float s = +0.0f;
      for (uint32_t r = 0; r < a.nranks; r++)
        s = s + ((const float*)(a.recvBlocks + (size_t)r * a.blockBytes + a.indexBytes +
                                a.valueBytes))[L.densePos + i];
      /* dgc's dense layer: u <- momentum * u + g, what it sent (g read before an in-place
       * output overwrites it) */
      if (a.momentum)
        a.momentum[at] = sparccl_feedback_gradient(SPARCCL_FB_DGC, sparccl_load(send, at, a.dtype),
                                                   a.momentum[at], a.momentumFactor);
      storeOutput(a, recv, at, outputOf(a, at, s, 0));
    }
    return;
  }
  if (skip) { /* SPEC 2: NaN out, state as it was */
    keepError(a, ch, L);
    SPARCCL_FOR_CHUNK(i, ch) storeOutput(a, recv, L.offset + i, sparcclNaN());
    return;
  }
  /* one buffer: e <- e + g (= a, exactly as the key pass computed it; dgc's e + u after
   * u <- momentum * u + g, SPEC 9); online importance committed */
  const int havePrev = a.havePrevGrad[ch.layer];
  SPARCCL_FOR_CHUNK(i, ch) {
    size_t at = L.offset + i;
    sums[i - ch.begin] = +0.0f;
    if (!InPlace && !a.prevGrad && !a.momentum) continue;
    float g = sparccl_load(send, at, a.dtype);
    float u = 0.0f;
    if (a.momentum) {
      u = sparccl_feedback_gradient(SPARCCL_FB_DGC, g, a.momentum[at], a.momentumFactor);
      a.momentum[at] = u; /* masked below where this rank sent */
    }
    if (InPlace) error[i - ch.begin] = a.error[at] + (a.momentum ? u : g);
    if (a.prevGrad) {
      if (havePrev)
        a.importance[at] = sparccl_cube_step(a.importance[at], g, a.prevGrad[at], a.rate, a.low, a.high);
      a.prevGrad[at] = g;
    }
  }
  __syncthreads();
  /* s <- s + sent_r for r = 0 .. n-1, only where r selected the element */
  const uint32_t* starts = a.rankStarts + (size_t)c * a.nranks;
  const int lastChunk = c + 1 == L.chunkBegin + L.nchunks;
  for (uint32_t r = 0; r < a.nranks; r++) {
    const uint8_t* block = a.recvBlocks + (size_t)r * a.blockBytes;
    const uint32_t* indices = indicesOf(a, L, block);
    const uint32_t first = starts[r], end = lastChunk ? (uint32_t)L.k : starts[a.nranks + r];
    const int own = r == a.commRank;
    for (uint32_t o = threadIdx.x; o < end - first; o += blockDim.x) {
      uint32_t i = indices[first + o];
      if (i - ch.begin >= ch.end - ch.begin) {
        /* outside the chunk: only a bug in the selection (indices not ascending, fewer than
         * k written) does that; reported by sparcclCommGetStats, not written past sums[] */
        atomicOr(&a.counters->internalErrors, 1u);
        continue;
      }
      float sent = sparccl_load(block + a.indexBytes, L.valuePos + first + o, a.wireType);
      sums[i - ch.begin] = sums[i - ch.begin] + sent;
      if (own) { /* this rank's indices are distinct: one thread an element */
        /* (with two buffers the emit already wrote a - sent there) */
        if (InPlace) error[i - ch.begin] = sparccl_error_update(error[i - ch.begin], sent);
        if (a.h) a.h[L.offset + i] += sent;
        if (a.momentum) a.momentum[L.offset + i] = 0.0f; /* momentum factor masking (DGC) */
      }
    }
    __syncthreads();
  }
  SPARCCL_FOR_CHUNK(i, ch) {
    size_t at = L.offset + i;
    if (InPlace) a.error[at] = error[i - ch.begin];
    storeOutput(a, recv, at, outputOf(a, at, sums[i - ch.begin], a.H != NULL));
  }
}

__device__ void policy(const KernelArgs& a);

/* One block per chunk; the last block to finish runs the call's counters and restart
 * policies, unless the restart norm needs its own pass first (policyHere = 0). */
template <int InPlace>
__global__ void reduceKernel(KernelArgs a, const void* send, void* recv, int policyHere) {
  if (!a.counters->callRefused) reduceChunk<InPlace>(a, send, recv); /* SPEC 4: else nothing */
  if (policyHere && lastToArrive(&a.arrivals[a.nlayers], gridDim.x) && threadIdx.x == 0)
    policy(a);
}

/* A dense call's float32 sum s of element `at` (SPEC 9): the ring's shard sum (already
 * +0.0f + x_0 + x_1 + ..., dense_kernels.cu), or that sum over the gathered blocks. */
__device__ __forceinline__ float denseSum(const KernelArgs& a, const DenseLayout& d, size_t at) {
  if (d.ring) {
    const size_t shard = at / d.chunk;
    return ((const float*)(d.sums + shard * d.sumStride))[at - shard * d.chunk];
  }
  float s = +0.0f;
  for (uint32_t r = 0; r < a.nranks; r++) s = s + ((const float*)(d.sums + (size_t)r * d.sumStride))[at];
  return s;
}

/* One block per chunk after a dense call's verified exchange (SPEC 9): a flagged layer
 * non-finite on any rank is skipped (NaN out, state as it was); otherwise the state of
 * SPEC 9's table (ef21's h <- g and H <- s / n, dgc's u <- momentum * u + g, e unchanged)
 * and the output s or s / n, ef21 included.  g is read before an in-place output
 * overwrites it. */
__device__ __forceinline__ void denseChunk(const KernelArgs& a, const DenseLayout& d,
                                           const void* send, void* recv) {
  const uint32_t c = blockIdx.x;
  const DeviceChunk ch = a.chunks[c];
  const DeviceLayer L = a.layers[ch.layer];
  const float n = (float)a.nranks;
  uint32_t skip = 0;
  if (L.flagged)
    for (uint32_t r = 0; r < a.nranks; r++)
      skip |= ((const uint32_t*)(d.receivedFlags + (size_t)r * d.receivedStride))[L.flagPos];
  if (L.flagged && c == L.chunkBegin && threadIdx.x == 0) a.skip[ch.layer] = skip; /* for policy */
  keepError(a, ch, L);
  SPARCCL_FOR_CHUNK(i, ch) {
    const size_t at = L.offset + i;
    if (skip) {
      storeOutput(a, recv, at, sparcclNaN());
      continue;
    }
    const float g = sparccl_load(send, at, a.dtype);
    const float s = denseSum(a, d, at);
    if (a.h && L.sparse) a.h[at] = g;
    if (a.H && L.sparse) a.H[at] = sparccl_canonical_nan(s / n);
    if (a.momentum)
      a.momentum[at] = sparccl_feedback_gradient(SPARCCL_FB_DGC, g, a.momentum[at], a.momentumFactor);
    storeOutput(a, recv, at, a.op == sparcclSum ? s : s / n);
  }
}

__global__ void denseFinishKernel(KernelArgs a, DenseLayout d, const void* send, void* recv,
                                  int policyHere) {
  if (!a.counters->callRefused) denseChunk(a, d, send, recv); /* SPEC 4: else nothing */
  if (policyHere && lastToArrive(&a.arrivals[a.nlayers], gridDim.x) && threadIdx.x == 0)
    policy(a);
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

/* One thread, after every chunk's reduceChunk: counters, havePrevGrad, the restart policies
 * (SPEC 7).  a.skip was written in the same kernel by other blocks (lastToArrive): read
 * through a volatile pointer. */
__device__ void policy(const KernelArgs& a) {
  DeviceCounters* c = a.counters;
  const volatile uint32_t* skip = a.skip;
  unsigned long long skipped = 0;
  if (c->callRefused) { /* SPEC 4: the call did not happen, but is counted as refused */
    c->refusedCalls++;
    return;
  }
  if (!a.phase) (*a.callSequence)++; /* the comm's: phase calls finish in any order */
  c->calls++;
  c->keyCalls++;
  c->bytesSent += a.bytesSent;
  c->bytesDense += a.count * sparccl_dtype_size(a.dtype);
  if (a.errorNext) c->errorParity ^= 1; /* the decompress wrote every element's e there */
  for (uint32_t l = 0; l < a.nlayers; l++) {
    if (!a.layers[l].flagged) continue; /* the layers with state: sparse, or any under dgc */
    if (skip[l]) {
      skipped++;
      continue;
    }
    a.layerSteps[l]++;
    /* a dense call (SPEC 9) keeps no previous g: the online step waits for a sparse one */
    if (a.prevGrad && !a.dense && a.layers[l].sparse) a.havePrevGrad[l] = 1;
  }
  c->skipped += skipped;
  if (skipped) return; /* a step counts only when every flagged layer completed */
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

__global__ void policyKernel(KernelArgs a) { policy(a); }

/* Restart: e, h, H <- 0, w <- 1 where a restart is pending (or forced). */
__global__ void restartKernel(KernelArgs a, int force) {
  if (!force && !a.counters->restartPending) return;
  float* error = a.error ? errorNow(a) : NULL;
  for (size_t at = (size_t)blockIdx.x * blockDim.x + threadIdx.x; at < a.count;
       at += (size_t)gridDim.x * blockDim.x) {
    if (error) error[at] = 0.0f;
    if (a.h) a.h[at] = 0.0f;
    if (a.H) a.H[at] = 0.0f;
    if (a.momentum) a.momentum[at] = 0.0f;
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

/* After the reduce (whose last block ran policy unless the restart norm is wanted): the
 * norm and policy in launches of their own, then the automatic restarts. */
static cudaError_t launchAfterReduce(const KernelArgs& a, const DeviceSet* ds, cudaStream_t stream) {
  if (a.restartRatio > 0.0) {
    SPARCCL_LAUNCH(gridFor((a.count + SPARCCL_SUM_BLOCK - 1) / SPARCCL_SUM_BLOCK), SPARCCL_THREADS,
                   stream, normBlocksKernel)(a);
    SPARCCL_LAUNCH(1, 1, stream, policyKernel)(a);
  }
  SPARCCL_CUDA_CHECK(cudaGetLastError());
  if (a.restartEvery > 0 || a.restartRatio > 0.0) return sparcclLaunchRestart(a, ds, 0, stream);
  return cudaSuccess;
}

/* After the plain reduce (plain_kernels.cu), whose blocks run no policy: the norm where
 * wanted, policy, then the automatic restarts, each in a launch of its own. */
cudaError_t sparcclLaunchPolicy(const KernelArgs& a, const DeviceSet* ds, cudaStream_t stream) {
  if (a.restartRatio <= 0.0) SPARCCL_LAUNCH(1, 1, stream, policyKernel)(a);
  return launchAfterReduce(a, ds, stream);
}

cudaError_t sparcclLaunchDecompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                    void* recv, cudaStream_t stream) {
  if (a.valueCount)
    SPARCCL_LAUNCH(gridFor(a.valueCount), SPARCCL_THREADS, stream, rankRangesKernel)(a);
  const int policyHere = a.restartRatio > 0.0 ? 0 : 1; /* else after the norm */
  if (a.error != NULL && a.errorNext == NULL)
    SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, reduceKernel<1>)(a, send, recv, policyHere);
  else
    SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, reduceKernel<0>)(a, send, recv, policyHere);
  return launchAfterReduce(a, ds, stream);
}

cudaError_t sparcclLaunchDenseFinish(const KernelArgs& a, const DeviceSet* ds, const DenseLayout& d,
                                     const void* send, void* recv, cudaStream_t stream) {
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, denseFinishKernel)(a, d, send, recv,
                                                                        a.restartRatio > 0.0 ? 0 : 1);
  return launchAfterReduce(a, ds, stream);
}

__global__ void scaleKernel(KernelArgs a, float factor) {
  float* error = a.error ? errorNow(a) : NULL;
  for (size_t at = (size_t)blockIdx.x * blockDim.x + threadIdx.x; at < a.count;
       at += (size_t)gridDim.x * blockDim.x) {
    /* the canonical NaN for any NaN product, as the host's sparcclScaleState (src/comm.c) */
    if (error) error[at] = sparccl_canonical_nan(error[at] * factor);
    if (a.h) a.h[at] = sparccl_canonical_nan(a.h[at] * factor);
    if (a.H) a.H[at] = sparccl_canonical_nan(a.H[at] * factor);
    if (a.momentum) a.momentum[at] = sparccl_canonical_nan(a.momentum[at] * factor);
  }
}

cudaError_t sparcclLaunchScale(const KernelArgs& a, const DeviceSet* ds, float factor,
                               cudaStream_t stream) {
  SPARCCL_LAUNCH(256, SPARCCL_THREADS, stream, scaleKernel)(a, factor);
  return cudaGetLastError();
}
