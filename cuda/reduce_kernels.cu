/* After the exchange, on the device (SPEC 1, 2, 7): the rank ranges, then one block a chunk
 * for the skip rule, the state update, the rank-ordered sums and the output; the last block
 * runs the counters and restart policies.  State changes only after every rank's flag is
 * known (SPEC 2).  docs/DEVICE.md, "After the exchange: the reduce kernels". */
#include "device_set.cuh"

/* One thread per wire position t of a layer, for every rank: where that rank's section
 * enters each chunk, each entry of a.rankStarts written exactly once (docs/DEVICE.md).
 * Positions are layer-local: k <= 2^32 - 1 (SPEC 1) fits. */
__global__ void rankRangesKernel(KernelArgs a) {
  size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= a.valueCount || a.counters->callRefused) return; /* refused: indices untrusted */
  const DeviceLayer L = a.layers[layerOfPosition(a, p)];
  const uint32_t t = (uint32_t)(p - L.valuePos);
  for (uint32_t r = 0; r < a.nranks; r++) {
    const uint32_t* indices = indicesOf(a, L, sparccl_wire_block(&a.wire, a.recvBlocks, r));
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

/* A dense layer's chunk in a sparse call: the rank-ordered sums and the output; dgc's
 * u <- momentum * u + g, what it sent (g read before an in-place output overwrites it). */
__device__ __forceinline__ void denseLayerChunk(const KernelArgs& a, const DeviceChunk& ch,
                                                const DeviceLayer& L, const void* send, void* recv) {
  keepError(a, ch, L);
  SPARCCL_FOR_CHUNK(i, ch) {
    const size_t at = L.offset + i;
    const float s = sparccl_rank_sum(&a.wire, a.recvBlocks, a.nranks, L.densePos + i);
    if (a.momentum)
      sparccl_momentum_step(sparccl_load(send, at, a.dtype), &a.momentum[at], a.call.momentumFactor);
    storeOutput(a, recv, at, outputOf(a, at, s, 0));
  }
}

/* Before the sums: s <- +0; dgc's u <- momentum * u + g; with one error buffer e <- e + g
 * (= a, as the key pass computed it; dgc's e + u, SPEC 9); online importance committed. */
template <int InPlace>
__device__ __forceinline__ void prepareChunk(const KernelArgs& a, const DeviceChunk& ch,
                                             const DeviceLayer& L, const void* send, float* sums,
                                             float* error) {
  const int havePrev = a.havePrevGrad[ch.layer];
  SPARCCL_FOR_CHUNK(i, ch) {
    size_t at = L.offset + i;
    sums[i - ch.begin] = +0.0f;
    if (!InPlace && !a.prevGrad && !a.momentum) continue;
    float g = sparccl_load(send, at, a.dtype);
    float u = 0.0f;
    if (a.momentum) {
      sparccl_momentum_step(g, &a.momentum[at], a.call.momentumFactor);
      u = a.momentum[at]; /* masked below where this rank sent */
    }
    if (InPlace) error[i - ch.begin] = a.error[at] + (a.momentum ? u : g);
    if (a.prevGrad) {
      if (havePrev)
        a.importance[at] = sparccl_cube_step(a.importance[at], g, a.prevGrad[at], a.call.rate, a.call.low, a.call.high);
      a.prevGrad[at] = g;
    }
  }
  __syncthreads();
}

/* s <- s + sent_r for r = 0 .. n-1, only where r selected the element, rank by rank; this
 * rank's pairs also update h, u's mask and (one buffer) e (docs/DEVICE.md). */
template <int InPlace>
__device__ __forceinline__ void addRanks(const KernelArgs& a, uint32_t c, const DeviceChunk& ch,
                                         const DeviceLayer& L, float* sums, float* error) {
  const uint32_t* starts = a.rankStarts + (size_t)c * a.nranks;
  const int lastChunk = c + 1 == L.chunkBegin + L.nchunks;
  for (uint32_t r = 0; r < a.nranks; r++) {
    const uint8_t* block = sparccl_wire_block(&a.wire, a.recvBlocks, r);
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
      float sent = sparccl_load(sparccl_wire_values(&a.wire, block, L.valuePos), first + o, a.wireType);
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
}

/* One block per chunk: the state update, the rank-ordered sums and the output (with two
 * error buffers e's next value is already written; with one, formed in shared memory). */
template <int InPlace> /* 1: ef or scam with one error buffer, e updated here */
__device__ __forceinline__ void reduceChunk(const KernelArgs& a, const void* send, void* recv) {
  __shared__ float sums[SPARCCL_CHUNK]; /* s, element i at i - ch.begin */
  /* one buffer: a = e + g, then a - sent where sent (16 KiB only then: more blocks an SM) */
  __shared__ float error[InPlace ? SPARCCL_CHUNK : 1];
  const uint32_t c = blockIdx.x;
  const DeviceChunk ch = a.chunks[c];
  const DeviceLayer L = a.layers[ch.layer];
  uint32_t skip = 0; /* SPEC 2: a layer non-finite on any rank is skipped on every rank */
  if (L.flagged) skip = sparccl_wire_any_flag(&a.wire, a.recvBlocks, a.nranks, L.flagPos);
  if (L.flagged && c == L.chunkBegin && threadIdx.x == 0) a.skip[ch.layer] = skip; /* for policy */
  if (!L.sparse && !skip) {
    denseLayerChunk(a, ch, L, send, recv);
    return;
  }
  if (skip) { /* SPEC 2: NaN out, state as it was */
    keepError(a, ch, L);
    SPARCCL_FOR_CHUNK(i, ch) storeOutput(a, recv, L.offset + i, sparccl_skipped_output());
    return;
  }
  prepareChunk<InPlace>(a, ch, L, send, sums, error);
  addRanks<InPlace>(a, c, ch, L, sums, error);
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
    return sparccl_wire_dense(&d.sumWire, sparccl_wire_block(&d.sumWire, d.sums, shard))[at - shard * d.chunk];
  }
  return sparccl_rank_sum(&d.sumWire, d.sums, a.nranks, at);
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
  if (L.flagged) skip = sparccl_wire_any_flag(&d.receivedWire, d.received, a.nranks, L.flagPos);
  if (L.flagged && c == L.chunkBegin && threadIdx.x == 0) a.skip[ch.layer] = skip; /* for policy */
  keepError(a, ch, L);
  SPARCCL_FOR_CHUNK(i, ch) {
    const size_t at = L.offset + i;
    if (skip) {
      storeOutput(a, recv, at, sparccl_skipped_output());
      continue;
    }
    const float g = sparccl_load(send, at, a.dtype);
    const float s = denseSum(a, d, at);
    sparccl_dense_state(g, a.h && L.sparse ? &a.h[at] : NULL, a.momentum ? &a.momentum[at] : NULL,
                        a.call.momentumFactor);
    storeOutput(a, recv, at, sparccl_layer_output(a.op, n, s, a.H && L.sparse ? &a.H[at] : NULL, 1));
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
  if (sparccl_restart_every_due(a.restartEvery, c->steps)) c->restartPending = 1;
  if (a.restartRatio > 0.0) {
    size_t blocks = (a.count + SPARCCL_SUM_BLOCK - 1) / SPARCCL_SUM_BLOCK;
    double total = 0.0;
    for (size_t b = 0; b < blocks; b++) total += a.blockSums[b];
    const double norm = sparccl_restart_norm(total);
    const double before = sparccl_history_push(a.normRing, c->normCount++, a.restartLag, norm);
    if (sparccl_norm_jumped(norm, before, a.restartRatio)) c->restartPending = 1;
  }
}

__global__ void policyKernel(KernelArgs a) { policy(a); }

/* The state arrays of the whole buffer (element `at` at at), e the one that holds it now. */
__device__ __forceinline__ sparcclStateArrays_t stateOf(const KernelArgs& a) {
  sparcclStateArrays_t s;
  s.error = a.error ? errorNow(a) : NULL;
  s.h = a.h; s.H = a.H; s.momentum = a.momentum; s.importance = a.importance;
  return s;
}

/* Restart (src/steps.h) where a restart is pending (or forced). */
__global__ void restartKernel(KernelArgs a, int force) {
  if (!force && !a.counters->restartPending) return;
  const sparcclStateArrays_t s = stateOf(a);
  for (size_t at = (size_t)blockIdx.x * blockDim.x + threadIdx.x; at < a.count;
       at += (size_t)gridDim.x * blockDim.x)
    sparccl_state_reset(&s, at);
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
  const sparcclStateArrays_t s = stateOf(a);
  for (size_t at = (size_t)blockIdx.x * blockDim.x + threadIdx.x; at < a.count;
       at += (size_t)gridDim.x * blockDim.x)
    sparccl_state_scale(&s, at, factor);
}

cudaError_t sparcclLaunchScale(const KernelArgs& a, const DeviceSet* ds, float factor,
                               cudaStream_t stream) {
  SPARCCL_LAUNCH(256, SPARCCL_THREADS, stream, scaleKernel)(a, factor);
  return cudaGetLastError();
}
