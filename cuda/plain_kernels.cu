/* The plain device kernels (config.deviceKernels = plain, docs/DEVICE.md): llm.c's version 1
 * of select_kernels.cu and reduce_kernels.cu, the fallback and the baseline.  The same wire
 * block, outputs and state, bit for bit; no key, candidate or class arrays: every pass makes
 * each key again from the inputs. */
#include "device_set.cuh"

/* ------------------------------------------------------------ per element */

/* Element i (layer-local) as the compress sees it (SPEC 1): g, the feedback's g (dgc: u <-
 * momentum * u + g), the key input x and the weight w (1 outside ImpK; online importance's
 * cube step taken first).  No kernel of the compress changes what it reads. */
struct PlainInputs {
  float g, fg, x, w;
};

__device__ __forceinline__ PlainInputs plainInputs(const KernelArgs& a, const void* send,
                                                   const DeviceLayer& L, uint32_t layer,
                                                   uint32_t i) {
  const size_t at = L.offset + i;
  PlainInputs in;
  in.g = sparccl_load(send, at, a.dtype);
  in.fg = sparccl_feedback_gradient(a.feedback, in.g, a.momentum ? a.momentum[at] : 0.0f,
                                    a.call.momentumFactor);
  in.x = sparccl_key_input(a.feedback, in.fg, a.error ? errorNow(a)[at] : 0.0f,
                           a.h ? a.h[at] : 0.0f);
  in.w = a.importance ? a.importance[at] : 1.0f;
  if (a.prevGrad && a.havePrevGrad[layer])
    in.w = sparccl_cube_step(in.w, in.g, a.prevGrad[at], a.call.rate, a.call.low, a.call.high);
  return in;
}

/* Element i's key (SPEC 1, 3): 32 bits, or impk_random's 64. */
template <typename Key>
__device__ __forceinline__ Key plainKey(const KernelArgs& a, const PlainInputs& in,
                                        const DeviceLayer& L, uint32_t layer, uint32_t i) {
  uint32_t word = 0;
  if (sparccl_compressor_props(a.compressor) & SPARCCL_C_RANDOM)
    word = sparccl_random_word(a.call.seed, i, L.id, (uint32_t)a.layerSteps[layer], a.call.randomRank);
  if (a.compressor == SPARCCL_IMPK_RANDOM) return (Key)sparccl_key_impk_random(word, in.w);
  return (Key)sparccl_key32(a.compressor, in.x, in.w, word);
}

__device__ __forceinline__ uint32_t* plainFlags(const KernelArgs& a) {
  return sparccl_wire_flags(&a.wire, a.sendBlock);
}

/* Digit `pass` of a key of `bits` bits: bits [shift, shift + width), SPARCCL_RADIX_BITS
 * wide from the top, the last one narrower. */
__device__ __forceinline__ int plainShift(int bits, int pass) {
  const int shift = bits - SPARCCL_RADIX_BITS * (pass + 1);
  return shift > 0 ? shift : 0;
}
__device__ __forceinline__ int plainWidth(int bits, int pass) {
  return bits - SPARCCL_RADIX_BITS * pass - plainShift(bits, pass);
}

/* ------------------------------------------------------------ compress kernels */

/* One thread per layer, first: the layer's non-finite flag cleared (the pack sets it). */
__global__ void __launch_bounds__(SPARCCL_THREADS) plainClearKernel(KernelArgs a) {
  const uint32_t layer = blockIdx.x * blockDim.x + threadIdx.x;
  if (layer < a.nlayers && a.layers[layer].flagged) plainFlags(a)[a.layers[layer].flagPos] = 0u;
}

/* One block per chunk: dense layers' values (g, or dgc's u) into the block; every flagged
 * layer's flag set where one of its x is not finite (SPEC 2). */
__global__ void __launch_bounds__(SPARCCL_THREADS) plainPackKernel(KernelArgs a, const void* send) {
  const DeviceChunk ch = a.chunks[blockIdx.x];
  const DeviceLayer L = a.layers[ch.layer];
  float* dense = sparccl_wire_dense(&a.wire, a.sendBlock) + L.densePos;
  SPARCCL_FOR_CHUNK(i, ch) {
    const PlainInputs in = plainInputs(a, send, L, ch.layer, i);
    if (!L.sparse) dense[i] = in.fg;
    if (L.flagged && !sparccl_is_finite(L.sparse ? in.x : in.fg))
      atomicOr(&plainFlags(a)[L.flagPos], 1u);
  }
}

/* One block per chunk: the histogram of digit `pass` over the keys under the layer's
 * prefix so far (every key at pass 0), global atomics. */
template <typename Key>
__global__ void __launch_bounds__(SPARCCL_THREADS)
    plainHistogramKernel(KernelArgs a, const void* send, int pass) {
  const DeviceChunk ch = a.chunks[blockIdx.x];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse) return;
  const int bits = 8 * (int)sizeof(Key), shift = plainShift(bits, pass);
  const int above = shift + plainWidth(bits, pass); /* the bits the prefix covers */
  const Key prefix = (Key)a.select[ch.layer].prefix;
  const uint32_t mask = (1u << plainWidth(bits, pass)) - 1u;
  uint32_t* hist = a.hist + (size_t)ch.layer * SPARCCL_RADIX_BINS;
  SPARCCL_FOR_CHUNK(i, ch) {
    const Key key = plainKey<Key>(a, plainInputs(a, send, L, ch.layer, i), L, ch.layer, i);
    if (pass == 0 || (Key)(key >> above) == prefix)
      atomicAdd(&hist[(uint32_t)(key >> shift) & mask], 1u);
  }
}

/* One thread per layer: the bin of digit `pass` that holds the need-th largest key under
 * the prefix (need = k at pass 0), appended to the prefix; the histogram zeroed for the
 * next pass and call.  After the last digit the prefix is the k-th largest key T and need
 * how many keys equal to T are taken, the lowest indices first (SPEC 1). */
__global__ void __launch_bounds__(SPARCCL_THREADS)
    plainFindKernel(KernelArgs a, int pass, int bits) {
  const uint32_t layer = blockIdx.x * blockDim.x + threadIdx.x;
  if (layer >= a.nlayers || !a.layers[layer].sparse) return;
  DeviceSelect* S = &a.select[layer];
  uint32_t* hist = a.hist + (size_t)layer * SPARCCL_RADIX_BINS;
  if (pass == 0) {
    S->prefix = 0;
    S->need = a.layers[layer].k;
  }
  const int width = plainWidth(bits, pass);
  uint64_t above = 0;
  uint32_t bin = (1u << width) - 1u;
  while (bin > 0 && above + hist[bin] < S->need) above += hist[bin--];
  S->need -= above;
  S->prefix = (S->prefix << width) | bin;
  for (uint32_t b = 0; b < SPARCCL_RADIX_BINS; b++) hist[b] = 0;
}

/* One block per chunk: how many of its keys are above T, and how many equal it. */
template <typename Key>
__global__ void __launch_bounds__(SPARCCL_THREADS)
    plainCountKernel(KernelArgs a, const void* send) {
  __shared__ uint32_t greater, equal;
  const uint32_t c = blockIdx.x;
  const DeviceChunk ch = a.chunks[c];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse) return;
  const Key threshold = (Key)a.select[ch.layer].prefix;
  if (threadIdx.x == 0) greater = equal = 0;
  __syncthreads();
  SPARCCL_FOR_CHUNK(i, ch) {
    const Key key = plainKey<Key>(a, plainInputs(a, send, L, ch.layer, i), L, ch.layer, i);
    if (key > threshold) atomicAdd(&greater, 1u);
    if (key == threshold) atomicAdd(&equal, 1u);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    a.chunkGreater[c] = greater;
    a.chunkEqual[c] = equal;
  }
}

/* One thread per layer, over its chunks in order: the ties taken before each chunk and
 * each chunk's first output position. */
__global__ void __launch_bounds__(SPARCCL_THREADS) plainScanKernel(KernelArgs a) {
  const uint32_t layer = blockIdx.x * blockDim.x + threadIdx.x;
  if (layer >= a.nlayers || !a.layers[layer].sparse) return;
  const DeviceLayer L = a.layers[layer];
  const uint64_t ties = a.select[layer].need;
  uint64_t equalBefore = 0, position = 0;
  for (uint64_t c = L.chunkBegin; c < L.chunkBegin + L.nchunks; c++) {
    uint64_t take = ties > equalBefore ? ties - equalBefore : 0;
    if (take > a.chunkEqual[c]) take = a.chunkEqual[c];
    a.chunkTiesBefore[c] = equalBefore;
    a.chunkOffset[c] = position;
    equalBefore += a.chunkEqual[c];
    position += a.chunkGreater[c] + take;
  }
}

/* The selected element i's index and value at wire position p (SPEC 4). */
__device__ __forceinline__ void plainEmitOne(const KernelArgs& a, const void* send,
                                             const DeviceLayer& L, uint32_t layer, uint32_t i,
                                             uint64_t p, uint32_t* indices, void* values) {
  const PlainInputs in = plainInputs(a, send, L, layer, i);
  const float v = sparccl_value_input(a.feedback, in.g, in.x);
  indices[p] = i;
  sparccl_wire_store(values, p, a.wireType,
                     sparccl_value(a.compressor, v, in.w, sparccl_randk_scale(L.count, L.k)));
}

/* One block per chunk, thread t on the chunk's elements SPARCCL_PER_THREAD * t onwards: the
 * keys above T and the first `need` equal to it, in ascending index order by two block
 * scans.  A layer non-finite on this rank sends indices 0 .. k-1 with zeros (SPEC 2). */
template <typename Key>
__global__ void __launch_bounds__(SPARCCL_THREADS) plainEmitKernel(KernelArgs a, const void* send) {
  const uint32_t c = blockIdx.x;
  const DeviceChunk ch = a.chunks[c];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse) return;
  uint32_t* indices = (uint32_t*)indicesOf(a, L, a.sendBlock);
  void* values = sparccl_wire_values(&a.wire, a.sendBlock, L.valuePos);
  if (plainFlags(a)[L.flagPos]) {
    SPARCCL_FOR_CHUNK(p, ch) {
      if (p >= L.k) break;
      indices[p] = p;
      sparccl_wire_store(values, p, a.wireType, 0.0f);
    }
    return;
  }
  const Key threshold = (Key)a.select[ch.layer].prefix;
  const uint32_t size = ch.end - ch.begin, lo = threadIdx.x * SPARCCL_PER_THREAD;
  const uint32_t rest = lo < size ? size - lo : 0;
  const uint32_t n = rest < SPARCCL_PER_THREAD ? rest : SPARCCL_PER_THREAD;
  /* bit j of the masks: element ch.begin + lo + j */
  uint32_t greater = 0, equal = 0, equals = 0, selected = 0, count = 0, total;
  for (uint32_t j = 0; j < n; j++) {
    const uint32_t i = ch.begin + lo + j;
    const Key key = plainKey<Key>(a, plainInputs(a, send, L, ch.layer, i), L, ch.layer, i);
    greater |= (uint32_t)(key > threshold) << j;
    equal |= (uint32_t)(key == threshold) << j;
    equals += key == threshold;
  }
  uint64_t tie = a.chunkTiesBefore[c] + blockExclusiveScan<uint32_t>(equals, &total);
  for (uint32_t j = 0; j < n; j++)
    if (((greater >> j) & 1u) || (((equal >> j) & 1u) && tie++ < a.select[ch.layer].need)) {
      selected |= 1u << j;
      count++;
    }
  uint64_t p = a.chunkOffset[c] + blockExclusiveScan<uint32_t>(count, &total);
  for (uint32_t j = 0; j < n && p < L.k; j++)
    if ((selected >> j) & 1u)
      plainEmitOne(a, send, L, ch.layer, ch.begin + lo + j, p++, indices, values);
}

/* ------------------------------------------------------------ decompress kernel */

/* Where rank r's ascending indices (the call check verified them) hold element i, or k. */
__device__ __forceinline__ uint64_t plainPosition(const uint32_t* indices, uint64_t k, uint32_t i) {
  uint64_t lo = 0, hi = k;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (indices[mid] < i) lo = mid + 1; else hi = mid;
  }
  return lo < k && indices[lo] == i ? lo : k;
}

/* Element i of a sparse layer kept: the online step committed, s = +0 + sent_0 + sent_1 ...
 * over the ranks that sent it, in rank order (SPEC 1); this rank's e <- a - sent, h <- h +
 * sent, u masked where it sent. */
__device__ __forceinline__ float plainSparseSum(const KernelArgs& a, const void* send,
                                                const DeviceLayer& L, uint32_t layer, uint32_t i) {
  const size_t at = L.offset + i;
  const PlainInputs in = plainInputs(a, send, L, layer, i);
  float s = +0.0f, e = in.x;
  if (a.prevGrad) {
    if (a.havePrevGrad[layer]) a.importance[at] = in.w;
    a.prevGrad[at] = in.g;
  }
  if (a.momentum) a.momentum[at] = in.fg;
  for (uint32_t r = 0; r < a.nranks; r++) {
    const uint8_t* block = sparccl_wire_block(&a.wire, a.recvBlocks, r);
    const uint64_t p = plainPosition(indicesOf(a, L, block), L.k, i);
    if (p == L.k) continue;
    const float sent = sparccl_load(sparccl_wire_values(&a.wire, block, L.valuePos), p, a.wireType);
    s = s + sent;
    if (r != a.commRank) continue;
    e = sparccl_error_update(in.x, sent);
    if (a.h) a.h[at] += sent;
    if (a.momentum) a.momentum[at] = 0.0f;
  }
  if (a.error) errorAfter(a)[at] = e;
  return s;
}

/* Element i of a layer sent dense: the rank-ordered sum of the whole vectors; dgc's u <-
 * momentum * u + g, what it sent. */
__device__ __forceinline__ float plainDenseSum(const KernelArgs& a, const void* send,
                                               const DeviceLayer& L, uint32_t i) {
  const size_t at = L.offset + i;
  const float s = sparccl_rank_sum(&a.wire, a.recvBlocks, a.nranks, L.densePos + i);
  if (a.momentum) sparccl_momentum_step(sparccl_load(send, at, a.dtype), &a.momentum[at], a.call.momentumFactor);
  return s;
}

/* One block per chunk, one thread an element, after the verified exchange: a flagged layer
 * non-finite on any rank is skipped (NaN out, e kept, the rest left alone, SPEC 2); else
 * the sums, the state and the output.  Nothing at all in a refused call (SPEC 4). */
__global__ void plainReduceKernel(KernelArgs a, const void* send, void* recv) {
  if (a.counters->callRefused) return;
  const uint32_t c = blockIdx.x;
  const DeviceChunk ch = a.chunks[c];
  const DeviceLayer L = a.layers[ch.layer];
  uint32_t skip = 0;
  for (uint32_t r = 0; L.flagged && r < a.nranks; r++) skip |= rankFlags(a, (int)r)[L.flagPos];
  if (L.flagged && c == L.chunkBegin && threadIdx.x == 0) a.skip[ch.layer] = skip; /* for policy */
  SPARCCL_FOR_CHUNK(i, ch) {
    const size_t at = L.offset + i;
    if ((skip || !L.sparse) && a.error) errorAfter(a)[at] = errorNow(a)[at];
    float out = sparccl_skipped_output();
    if (!skip && !L.sparse) out = outputOf(a, at, plainDenseSum(a, send, L, i), 0);
    if (!skip && L.sparse)
      out = outputOf(a, at, plainSparseSum(a, send, L, ch.layer, i), a.H != NULL);
    storeOutput(a, recv, at, out);
  }
}

/* ------------------------------------------------------------ launchers */

static unsigned plainGrid(size_t n) {
  return (unsigned)((n + SPARCCL_THREADS - 1) / SPARCCL_THREADS);
}

template <typename Key>
static cudaError_t plainCompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                 cudaStream_t stream) {
  const int bits = 8 * (int)sizeof(Key);
  const unsigned layers = plainGrid(ds->nlayers);
  SPARCCL_LAUNCH(layers, SPARCCL_THREADS, stream, plainClearKernel)(a);
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, plainPackKernel)(a, send);
  for (int pass = 0; pass * SPARCCL_RADIX_BITS < bits; pass++) {
    SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, plainHistogramKernel<Key>)(a, send, pass);
    SPARCCL_LAUNCH(layers, SPARCCL_THREADS, stream, plainFindKernel)(a, pass, bits);
  }
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, plainCountKernel<Key>)(a, send);
  SPARCCL_LAUNCH(layers, SPARCCL_THREADS, stream, plainScanKernel)(a);
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, plainEmitKernel<Key>)(a, send);
  return cudaGetLastError();
}

cudaError_t sparcclLaunchPlainCompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                       cudaStream_t stream) {
  if (sparccl_compressor_props(a.compressor) & SPARCCL_C_WIDE_KEY)
    return plainCompress<uint64_t>(a, ds, send, stream);
  return plainCompress<uint32_t>(a, ds, send, stream);
}

cudaError_t sparcclLaunchPlainDecompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                         void* recv, cudaStream_t stream) {
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, plainReduceKernel)(a, send, recv);
  SPARCCL_CUDA_CHECK(cudaGetLastError());
  return sparcclLaunchPolicy(a, ds, stream);
}
