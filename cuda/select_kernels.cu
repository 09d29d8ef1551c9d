/* Compression on the device, every layer of a call in 2 + (digits - 1) launches, one block a
 * chunk: keys and first-digit histograms, a histogram a later digit, the counts, the ordered
 * emit; the per-layer steps between them in each layer's last block to finish (lastToArrive).
 * The arithmetic is sparccl_math.h's (docs/DEVICE.md, "Compression: the selection kernels"). */
#include "device_set.cuh"

template <typename Key> struct KeyBits;
template <> struct KeyBits<uint32_t> { static const int bits = 32; };
template <> struct KeyBits<uint64_t> { static const int bits = 64; };

/* Digit p of a key of `bits` bits: 11-bit digits from the top, the last one narrower. */
__host__ __device__ inline int digitShift(int bits, int pass) {
  int remaining = bits;
  for (int p = 0; p <= pass; p++) {
    int width = remaining < SPARCCL_RADIX_BITS ? remaining : SPARCCL_RADIX_BITS;
    remaining -= width;
  }
  return remaining;
}
__host__ __device__ inline int digitWidth(int bits, int pass) {
  int before = pass == 0 ? bits : digitShift(bits, pass - 1);
  return before - digitShift(bits, pass);
}
__host__ __device__ inline int digitPasses(int bits) { return (bits + SPARCCL_RADIX_BITS - 1) / SPARCCL_RADIX_BITS; }

/* What element `at`'s key and value are made of, as read (the key pass reads a batch of
 * these before it uses any, forChunkBatched): g's bits, e (ef, scam, dgc; `error` is
 * errorNow(a)) or h (ef21), dgc's momentum u, and for ImpK w and, with online importance
 * after a first step, the previous g. */
struct ElementInputs {
  uint32_t g;
  float e, h, u, w, prev;
};

/* The feedback rows that keep e (the method table's SPARCCL_S_ERROR): ef, scam, dgc. */
template <int F>
__device__ __forceinline__ int keepsError() { return sparccl_has_error(F); }

template <int C, int F>
__device__ __forceinline__ void readInputs(const KernelArgs& a, const void* send,
                                           const float* error, size_t at, int havePrev,
                                           ElementInputs* in) {
  in->g = sparccl_load_bits(send, at, a.dtype);
  in->e = keepsError<F>() ? error[at] : 0.0f;
  in->h = F == SPARCCL_FB_EF21 ? a.h[at] : 0.0f;
  in->u = F == SPARCCL_FB_DGC ? a.momentum[at] : 0.0f;
  const int impk = C == SPARCCL_IMPK || C == SPARCCL_IMPK_SELECT || C == SPARCCL_IMPK_RANDOM;
  in->w = impk ? a.importance[at] : 1.0f;
  in->prev = impk && a.online && havePrev ? a.prevGrad[at] : 0.0f;
}

/* The key input (e + g, g - h or g; dgc's e + u after u <- momentum * u + g, SPEC 9),
 * given g = sparccl_bits_value(in.g, dtype). */
template <int F>
__device__ __forceinline__ float keyInputOf(const KernelArgs& a, const ElementInputs& in, float g) {
  return sparccl_key_input(F, sparccl_feedback_gradient(F, g, in.u, a.call.momentumFactor), in.e, in.h);
}

/* The weight w (ImpK: this step's, online importance taking its cube step first), else 1. */
template <int C>
__device__ __forceinline__ float weightOf(const KernelArgs& a, const ElementInputs& in, float g,
                                          int havePrev) {
  if (C != SPARCCL_IMPK && C != SPARCCL_IMPK_SELECT && C != SPARCCL_IMPK_RANDOM) return 1.0f;
  if (a.online && havePrev) return sparccl_cube_step(in.w, g, in.prev, a.call.rate, a.call.low, a.call.high);
  return in.w;
}

/* Element i's key (layer-local i) for the passes after the key pass, as the key pass
 * computed it: stored, or computed again (SPARCCL_KEYS_*; the same sparccl_key32 and Philox
 * block, on the same inputs, which no kernel of the call changes). */
template <typename Key>
struct KeySource {
  int mode;
  const Key* keys;     /* the layer's stored keys */
  const float* values; /* the layer's a (second error buffer) or w */
  const float* weights; /* the layer's w, with a (SPARCCL_KEYS_FROM_AW) */
  const void* send;
  size_t offset;
  int dtype;
  uint64_t seed;
  uint32_t id, step, rank;
  __device__ __forceinline__ KeySource(const KernelArgs& a, const void* send_,
                                       const DeviceLayer& L, uint32_t layer)
      : mode(a.keyMode), keys(a.keys ? (const Key*)a.keys + L.offset : NULL), values(NULL),
        weights(NULL), send(send_), offset(L.offset), dtype(a.dtype), seed(a.call.seed), id(L.id),
        step((uint32_t)a.layerSteps[layer]), rank(a.call.randomRank) {
    if (mode == SPARCCL_KEYS_FROM_A || mode == SPARCCL_KEYS_FROM_AW) values = errorAfter(a) + L.offset;
    if (mode == SPARCCL_KEYS_FROM_W) values = a.importance + L.offset;
    if (mode == SPARCCL_KEYS_FROM_AW) weights = a.importance + L.offset;
  }
  /* What read() reads of an element: the stored key, or the bits of a, g or w (and of w
   * beside a); nothing for a Philox word. */
  struct Raw {
    Key bits;
    uint32_t w;
  };
  /* Element i's key in two steps, as forChunkBatched wants them: the read, then the key made
   * from it. */
  __device__ __forceinline__ Raw read(uint32_t i) const {
    Raw raw = {0, 0};
    /* (32-bit keys only, as impk's: w stays a constant 0 for impk_random's 64-bit keys,
     * which are stored, and takes no register there) */
    if (KeyBits<Key>::bits == 32 && mode == SPARCCL_KEYS_FROM_AW)
      raw.w = sparccl_float_bits(weights[i]);
    switch (mode) {
      case SPARCCL_KEYS_FROM_AW:
      case SPARCCL_KEYS_FROM_A:
      case SPARCCL_KEYS_FROM_W: raw.bits = (Key)sparccl_float_bits(values[i]); break;
      case SPARCCL_KEYS_FROM_G: raw.bits = (Key)sparccl_load_bits(send, offset + i, dtype); break;
      case SPARCCL_KEYS_PHILOX: break;
      default: raw.bits = keys[i];
    }
    return raw;
  }
  __device__ __forceinline__ Key key(Raw raw, uint32_t i) const {
    const float x = sparccl_bits_float((uint32_t)raw.bits);
    switch (mode) {
      case SPARCCL_KEYS_FROM_A: return (Key)sparccl_key32(SPARCCL_TOPK, x, 1.0f, 0u);
      case SPARCCL_KEYS_FROM_AW:
        return (Key)sparccl_key32(SPARCCL_IMPK, x, sparccl_bits_float(raw.w), 0u);
      case SPARCCL_KEYS_FROM_G:
        return (Key)sparccl_key32(SPARCCL_TOPK, sparccl_bits_value((uint32_t)raw.bits, dtype), 1.0f, 0u);
      case SPARCCL_KEYS_FROM_W: return (Key)sparccl_key32(SPARCCL_IMPK_SELECT, 0.0f, x, 0u);
      case SPARCCL_KEYS_PHILOX:
        return (Key)sparccl_key32(SPARCCL_RANDK, 0.0f, 1.0f,
                                  sparccl_random_word(seed, i, id, step, rank));
      default: return raw.bits;
    }
  }
  __device__ __forceinline__ Key operator()(uint32_t i) const { return key(read(i), i); }
};

/* body(o, m, key) for the keys of this thread's elements of chunk ch (offsets o = threadIdx.x
 * + m * SPARCCL_THREADS), read a batch at a time (forChunkBatched). */
template <typename Key, typename Body>
__device__ __forceinline__ void forChunkKeys(const KeySource<Key>& keyOf, const DeviceChunk& ch,
                                             const Body& body) {
  typedef typename KeySource<Key>::Raw Raw;
  forChunkBatched<Raw>(
      ch.end - ch.begin, [&](uint32_t o, Raw* raw) { *raw = keyOf.read(ch.begin + o); },
      [&](uint32_t o, uint32_t m, const Raw& raw) { body(o, m, keyOf.key(raw, ch.begin + o)); });
}

__device__ __forceinline__ uint32_t* blockFlags(const KernelArgs& a, uint8_t* block) {
  return sparccl_wire_flags(&a.wire, block);
}

/* The first digit's bins [*lo, *hi] of the key pass's window around a predicted bin. */
__device__ __forceinline__ void predictionWindow(uint32_t predicted, uint32_t* lo, uint32_t* hi) {
  *lo = predicted >= SPARCCL_PREDICTION_SPREAD ? predicted - SPARCCL_PREDICTION_SPREAD : 0u;
  *hi = predicted + SPARCCL_PREDICTION_SPREAD < SPARCCL_RADIX_BINS
            ? predicted + SPARCCL_PREDICTION_SPREAD : SPARCCL_RADIX_BINS - 1u;
}

/* Whether the key pass's window around `predicted` holds the first-digit bin `bin`. */
__device__ __forceinline__ int windowHolds(uint32_t predicted, uint64_t bin) {
  uint32_t lo, hi;
  if (predicted == SPARCCL_NO_PREDICTION) return 0;
  predictionWindow(predicted, &lo, &hi);
  return lo <= bin && bin <= hi;
}

/* Bit m of writeClasses' masks for an element whose first digit is `top`, against the bins
 * [lo, hi]: above them, or in them (a candidate, returned 1), counted. */
template <typename T>
__device__ __forceinline__ int markClass(T top, T lo, T hi, uint32_t m, uint32_t* mine,
                                         uint32_t* high, uint32_t* candidates, uint32_t* above) {
  if (top > hi) { *high |= 1u << m; ++*above; return 0; }
  if (top < lo) return 0;
  *mine |= 1u << m;
  ++*candidates;
  return 1;
}

/* Per layer: the bin of this digit holding the need-th largest key (SPEC 1), the highest bin
 * with at least `need` keys in it and above it; run by the layer's last chunk to finish the
 * pass, it leaves the histogram zero (docs/DEVICE.md, "findLayer"). */
template <typename Key>
__device__ __forceinline__ void findLayer(const KernelArgs& a, uint32_t layer, int pass) {
  const DeviceLayer L = a.layers[layer];
  const int bits = KeyBits<Key>::bits;
  const int width = digitWidth(bits, pass), shift = digitShift(bits, pass);
  const uint32_t bins = 1u << width;
  const uint32_t groups = bins < SPARCCL_THREADS ? bins : SPARCCL_THREADS, perGroup = bins / groups;
  volatile uint32_t* hist = a.hist + (size_t)layer * SPARCCL_RADIX_BINS;
  DeviceSelect* S = &a.select[layer];
  if (pass == 0 && threadIdx.x == 0) {
    S->prefix = 0;
    S->need = L.k;
    S->done = L.all;
    S->threshold = 0;
    S->ties = 0;
    S->window = L.all ? SPARCCL_NO_PREDICTION : a.predicted[layer]; /* what the key pass used */
  }
  if (pass == 1 && threadIdx.x == 0) /* the first digit's bin is S->prefix until the find */
    atomicAdd(windowHolds(S->window, S->prefix) ? &a.counters->predictionHits
                                                : &a.counters->predictionMisses, 1ull);
  __syncthreads();
  if (!S->done) { /* the same for the whole block: every thread reaches the scan's barriers */
    const uint32_t group = SPARCCL_THREADS - 1 - threadIdx.x;
    uint64_t need = S->need, inGroup = 0, total;
    if (group < groups)
      for (uint32_t b = group * perGroup; b < (group + 1) * perGroup; b++) inGroup += hist[b];
    uint64_t above = blockExclusiveScan<uint64_t>(inGroup, &total); /* keys in higher groups */
    /* the boundary group: the highest one with `need` keys in it and above it (the top one
     * when need is 0), else group 0; exactly one thread's group passes */
    if (group < groups && (group == 0 || above + inGroup >= need) &&
        (group == groups - 1 || above < need)) {
      uint32_t bin = (group + 1) * perGroup - 1;
      while (bin > group * perGroup && above + hist[bin] < need) above += hist[bin--];
      need -= above;
      if (pass == 0) a.predicted[layer] = bin; /* the next call's prediction */
      S->prefix = (S->prefix << width) | bin;
      S->need = need;
      if (shift == 0) {
        S->threshold = S->prefix;
        S->ties = need;
        S->done = 1;
      } else if (need == hist[bin]) {
        S->threshold = (S->prefix << shift) - 1u;
        S->ties = 0;
        S->done = 1;
      }
    }
  }
  __syncthreads();
  for (uint32_t b = threadIdx.x; b < SPARCCL_RADIX_BINS; b += blockDim.x) hist[b] = 0;
}

/* Where byte o of writeClasses' shared class bytes sits, in 32-bit words: one unused word
 * after every 32, so that thread t's reads of words 4t .. 4t + 3 fall in different banks
 * across a warp (without it, 4t + q puts 32 threads in 8 banks). */
__device__ __forceinline__ uint32_t classSlot(uint32_t word) { return word + word / 32; }

/* Chunk c's keys against a range of the first digit's bins (bit m of `mine`: in it, of
 * `high`: above it): writes the chunk's class mask, its run of candidates and its count
 * above the range.  Every thread of the block calls it (docs/DEVICE.md, "writeClasses"). */
template <typename Key>
__device__ __forceinline__ void writeClasses(const KernelArgs& a, uint32_t c,
                                             const DeviceChunk& ch, const KeySource<Key>& keyOf,
                                             uint32_t mine, uint32_t high, uint32_t candidates,
                                             uint32_t above) {
  /* one byte a chunk element, its class, at byte o % 4 of word classSlot(o / 4) */
  __shared__ uint32_t classBytes[SPARCCL_CHUNK / 4 + SPARCCL_CHUNK / 4 / 32];
  const uint32_t size = ch.end - ch.begin;
  Key* run = (Key*)a.candidates + (size_t)c * SPARCCL_CANDIDATES;
  /* the class mask: each element's class as one byte in shared memory (the block's threads
   * on consecutive bytes, no atomics; bytes past the chunk's end 0, below), then thread t
   * packs the 16 bytes of its word and writes it (coalesced) */
  for (uint32_t m = 0; m < SPARCCL_PER_THREAD; m++) {
    const uint32_t o = threadIdx.x + m * SPARCCL_THREADS;
    ((uint8_t*)&classBytes[classSlot(o / 4)])[o % 4] =
        (uint8_t)((((mine >> m) & 1u) ? SPARCCL_CLASS_CANDIDATE : SPARCCL_CLASS_BELOW) |
                  (((high >> m) & 1u) ? SPARCCL_CLASS_ABOVE : SPARCCL_CLASS_BELOW));
  }
  __syncthreads();
  uint32_t word = 0;
  for (uint32_t q = 0; q < SPARCCL_PER_THREAD / 4; q++) {
    /* bytes 0..3 (each 0..2) of a little-endian word: elements 4q .. 4q + 3 of the 16 */
    const uint32_t b = classBytes[classSlot(threadIdx.x * (SPARCCL_PER_THREAD / 4) + q)];
    const uint32_t packed = (b & 0x3u) | ((b >> 6) & 0xcu) | ((b >> 12) & 0x30u) | ((b >> 18) & 0xc0u);
    word |= packed << (8 * q);
  }
  a.chunkClass[(size_t)c * SPARCCL_CLASS_WORDS + threadIdx.x] = word;
  /* both counts in one scan: each is at most SPARCCL_CHUNK, so the halves never carry; the
   * low half places this thread's candidates in the run */
  uint64_t total;
  uint32_t slot = (uint32_t)blockExclusiveScan<uint64_t>(((uint64_t)above << 32) | candidates, &total);
  const uint32_t count = (uint32_t)total;
  if (count <= SPARCCL_CANDIDATES)
    for (uint32_t o = threadIdx.x, m = 0; o < size; o += blockDim.x, m++)
      if ((mine >> m) & 1u) run[slot++] = keyOf(ch.begin + o);
  if (threadIdx.x == 0) {
    a.chunkAbove[c] = (uint32_t)(total >> 32);
    a.chunkCandidates[c] = count <= SPARCCL_CANDIDATES ? count : SPARCCL_NO_RUN;
  }
}

/* A dense layer's chunk, sent whole: g, or dgc's u <- momentum * u + g (SPEC 9), whose
 * layer is flagged. */
template <int F>
__device__ __forceinline__ void packDenseChunk(const KernelArgs& a, const DeviceChunk& ch,
                                               const DeviceLayer& L, const void* send) {
  float* dense = sparccl_wire_dense(&a.wire, a.sendBlock) + L.densePos;
  int finite = 1;
  SPARCCL_FOR_CHUNK(i, ch) {
    const size_t at = L.offset + i;
    const float g = sparccl_load(send, at, a.dtype);
    const float x = F == SPARCCL_FB_DGC ? sparccl_feedback_gradient(F, g, a.momentum[at], a.call.momentumFactor) : g;
    dense[i] = x;
    finite &= sparccl_is_finite(x);
  }
  if (L.flagged) /* uniform over the block */
    arriveWithFlag(a, ch.layer, L, finite, (uint8_t*)blockFlags(a, a.sendBlock), 1, 0);
}

/* An element's key (SPEC 1) from its inputs and x; `word`: its Philox word (randk, impk_random). */
template <int C, typename Key>
__device__ __forceinline__ Key elementKey(const KernelArgs& a, const ElementInputs& in, float g,
                                          float x, uint32_t word, int havePrev) {
  if (C == SPARCCL_IMPK_RANDOM) return (Key)sparccl_key_impk_random(word, weightOf<C>(a, in, g, havePrev));
  return (Key)sparccl_key32(C, x, weightOf<C>(a, in, g, havePrev), word);
}

/* After the key pass's loop over a chunk: its classes (a predicted layer), its histogram
 * into the layer's, its non-finite flag; the layer's last chunk writes the layer's flag into
 * the wire block (every call: the block is not cleared) and finds the first digit. */
template <typename Key>
__device__ __forceinline__ void finishKeyChunk(const KernelArgs& a, const DeviceChunk& ch,
                                               const DeviceLayer& L, const void* send,
                                               uint32_t predicted, const uint32_t* hist,
                                               uint32_t bad, uint32_t mine, uint32_t high,
                                               uint32_t candidates, uint32_t above) {
  if (predicted != SPARCCL_NO_PREDICTION) /* uniform over the block */
    writeClasses<Key>(a, blockIdx.x, ch, KeySource<Key>(a, send, L, ch.layer), mine, high,
                      candidates, above);
  if (!L.all)
    for (int b = threadIdx.x; b < SPARCCL_RADIX_BINS; b += blockDim.x)
      if (hist[b]) atomicAdd(&a.hist[(size_t)ch.layer * SPARCCL_RADIX_BINS + b], hist[b]);
  if (threadIdx.x == 0 && bad) atomicOr(&a.layerBad[ch.layer], 1u);
  if (lastToArrive(&a.arrivals[ch.layer], L.nchunks)) {
    if (threadIdx.x == 0) {
      volatile uint32_t* layerBad = a.layerBad + ch.layer;
      blockFlags(a, a.sendBlock)[L.flagPos] = *layerBad;
      *layerBad = 0;
    }
    findLayer<Key>(a, ch.layer, 0);
  }
}

/* Pass 1: keys and the first digit's histogram per layer; a = e + g with two error buffers;
 * dense layers packed; a predicted layer's classes and candidates.  4 blocks an SM for
 * 32-bit keys, 2 for 64-bit ones (docs/DEVICE.md, keyKernel). */
template <int C, int F, typename Key>
__global__ void __launch_bounds__(SPARCCL_THREADS, KeyBits<Key>::bits == 32 ? 4 : 2)
    keyKernel(KernelArgs a, const void* send) {
  __shared__ uint32_t hist[SPARCCL_RADIX_BINS];
  __shared__ uint32_t bad;
  const DeviceChunk ch = a.chunks[blockIdx.x];
  const DeviceLayer L = a.layers[ch.layer];
  const int shift = KeyBits<Key>::bits - SPARCCL_RADIX_BITS;
  if (!L.sparse) {
    packDenseChunk<F>(a, ch, L, send);
    return;
  }
  for (int b = threadIdx.x; b < SPARCCL_RADIX_BINS; b += blockDim.x) hist[b] = 0;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  const uint32_t step = (uint32_t)a.layerSteps[ch.layer];
  const int havePrev = a.havePrevGrad[ch.layer];
  const uint32_t rank = a.call.randomRank;
  const int ef = keepsError<F>();
  const float* error = ef ? errorNow(a) : NULL;
  /* a = e + g for the decompress to commit (double-buffered e; reduce_kernels.cu) */
  float* accumulated = ef && a.errorNext ? errorAfter(a) : NULL;
  const uint32_t predicted = L.all ? SPARCCL_NO_PREDICTION : a.predicted[ch.layer];
  uint32_t lo, hi, mine = 0, high = 0, candidates = 0, above = 0;
  predictionWindow(predicted, &lo, &hi);
  int finite = 1;
  forChunkBatched<ElementInputs>(
      ch.end - ch.begin,
      [&](uint32_t o, ElementInputs* in) {
        readInputs<C, F>(a, send, error, L.offset + ch.begin + o, havePrev, in);
      },
      [&](uint32_t o, uint32_t m, const ElementInputs& in) {
        const uint32_t i = ch.begin + o;
        const size_t at = L.offset + i;
        const float g = sparccl_bits_value(in.g, a.dtype);
        const float x = keyInputOf<F>(a, in, g);
        if (accumulated) accumulated[at] = x;
        finite &= sparccl_is_finite(x);
        if (L.all) return;
        const uint32_t word = C == SPARCCL_RANDK || C == SPARCCL_IMPK_RANDOM
                                  ? sparccl_random_word(a.call.seed, i, L.id, step, rank) : 0u;
        const Key key = elementKey<C, Key>(a, in, g, x, word, havePrev);
        if (a.keyMode == SPARCCL_KEYS_STORED) ((Key*)a.keys)[at] = key;
        const uint32_t top = (uint32_t)(key >> shift);
        atomicAdd(&hist[top], 1u);
        if (predicted != SPARCCL_NO_PREDICTION)
          markClass<uint32_t>(top, lo, hi, m, &mine, &high, &candidates, &above);
      });
  if (!finite) atomicOr(&bad, 1u); /* plain stores from many threads race (racecheck) */
  __syncthreads();
  finishKeyChunk<Key>(a, ch, L, send, predicted, hist, bad, mine, high, candidates, above);
}


/* The histogram of digit `pass` over the keys under the layer's prefix so far; pass 1 also
 * classifies the chunk (writeClasses) unless the key pass's prediction held the bin; a run,
 * where the chunk has one, read instead of every key (docs/DEVICE.md, "digitKernel"). */
template <typename Key> /* 4 blocks an SM, as before its reads were batched */
__global__ void __launch_bounds__(SPARCCL_THREADS, 4)
    digitKernel(KernelArgs a, int pass, const void* send) {
  __shared__ uint32_t hist[SPARCCL_RADIX_BINS];
  const uint32_t c = blockIdx.x;
  const DeviceChunk ch = a.chunks[c];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse) return;
  const DeviceSelect S = a.select[ch.layer];
  if (S.done) {
    /* decided by the first digit (k == d too): neither a run nor a class mask (the key
     * pass's, against a window, is not used) */
    if (pass == 1 && threadIdx.x == 0) a.chunkCandidates[c] = SPARCCL_NO_CLASS;
    return;
  }
  const int bits = KeyBits<Key>::bits;
  const int width = digitWidth(bits, pass), shift = digitShift(bits, pass);
  const Key prefix = (Key)S.prefix;
  const uint32_t mask = (1u << width) - 1u;
  for (int b = threadIdx.x; b < SPARCCL_RADIX_BINS; b += blockDim.x) hist[b] = 0;
  __syncthreads();
  const KeySource<Key> keyOf(a, send, L, ch.layer);
  const Key* run = (const Key*)a.candidates + (size_t)c * SPARCCL_CANDIDATES;
  /* pass 1: the key pass's window holds the boundary bin, and the chunk a run (its
   * chunkCandidates are this call's only where there is a window) */
  const int hit = pass == 1 && windowHolds(S.window, S.prefix) &&
                  a.chunkCandidates[c] <= SPARCCL_CANDIDATES;
  if (pass == 1 && !hit) {
    /* bit m of `mine` (of `high`): this thread's m-th key (offset threadIdx.x + m *
     * blockDim.x) is a candidate (above the bin); at most SPARCCL_PER_THREAD of them */
    uint32_t mine = 0, high = 0, candidates = 0, above = 0;
    forChunkKeys<Key>(keyOf, ch, [&](uint32_t, uint32_t m, Key key) {
      if (markClass<Key>(key >> (shift + width), prefix, prefix, m, &mine, &high, &candidates, &above))
        atomicAdd(&hist[(uint32_t)(key >> shift) & mask], 1u);
    });
    writeClasses<Key>(a, c, ch, keyOf, mine, high, candidates, above);
  } else {
    const uint32_t n = a.chunkCandidates[c]; /* a count or SPARCCL_NO_RUN, never NO_CLASS */
    auto count = [&](uint32_t, uint32_t, Key key) {
      if ((Key)(key >> (shift + width)) == prefix) atomicAdd(&hist[(uint32_t)(key >> shift) & mask], 1u);
    };
    if (n > SPARCCL_CANDIDATES) /* uniform over the block */
      forChunkKeys<Key>(keyOf, ch, count);
    else
      for (uint32_t o = threadIdx.x; o < n; o += blockDim.x) count(o, 0, run[o]);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < (int)(1u << width); b += blockDim.x)
    if (hist[b]) atomicAdd(&a.hist[(size_t)ch.layer * SPARCCL_RADIX_BINS + b], hist[b]);
  if (lastToArrive(&a.arrivals[ch.layer], L.nchunks)) findLayer<Key>(a, ch.layer, pass);
}

/* A key against its layer's final threshold (SPEC 1): above it, or equal to it while ties
 * are taken (which of the equal ones are taken is the scans' business). */
template <typename Key>
__device__ __forceinline__ void classifyKey(const DeviceSelect& S, Key key, int* greater,
                                            int* equal) {
  *greater = key > (Key)S.threshold;
  *equal = key == (Key)S.threshold && S.ties > 0;
}

/* classifyKey into bit j of emitKernel's masks, counting the equal ones. */
template <typename Key>
__device__ __forceinline__ void markKey(const DeviceSelect& S, Key key, uint32_t j,
                                        uint32_t* greaterMask, uint32_t* equalMask,
                                        uint32_t* equal) {
  int gt, eq;
  classifyKey<Key>(S, key, &gt, &eq);
  *greaterMask |= (uint32_t)gt << j;
  *equalMask |= (uint32_t)eq << j;
  *equal += eq;
}

/* Per layer: ties taken before each chunk, and each chunk's first output position.  Run by
 * the last of the layer's chunks to finish countKernel (lastToArrive): the counts the other
 * chunks wrote are read through volatile pointers. */
__device__ __forceinline__ void scanLayer(const KernelArgs& a, uint32_t layer) {
  const DeviceLayer L = a.layers[layer];
  const volatile uint32_t* chunkEqual = a.chunkEqual;
  const volatile uint32_t* chunkGreater = a.chunkGreater;
  const uint64_t ties = a.select[layer].ties;
  const uint32_t per = (L.nchunks + SPARCCL_THREADS - 1) / SPARCCL_THREADS;
  const uint64_t first = L.chunkBegin + (uint64_t)threadIdx.x * per;
  uint64_t end = first + per, total;
  if (end > L.chunkBegin + L.nchunks) end = L.chunkBegin + L.nchunks;
  uint64_t equal = 0;
  for (uint64_t c = first; c < end; c++) equal += chunkEqual[c];
  uint64_t equalBefore = blockExclusiveScan<uint64_t>(equal, &total);
  uint64_t selected = 0;
  for (uint64_t c = first; c < end; c++) {
    uint64_t take = ties > equalBefore ? ties - equalBefore : 0;
    if (take > chunkEqual[c]) take = chunkEqual[c];
    a.chunkTiesBefore[c] = equalBefore;
    equalBefore += chunkEqual[c];
    selected += chunkGreater[c] + take;
  }
  uint64_t position = blockExclusiveScan<uint64_t>(selected, &total);
  /* exactly k, whatever the keys: anything else is a bug in the passes before (a key missed
   * by a histogram, a wrong boundary), which would write past the layer's section of the
   * wire; sparcclCommGetStats reports it */
  if (threadIdx.x == 0 && total != L.k) atomicOr(&a.counters->internalErrors, 1u);
  for (uint64_t c = first; c < end; c++) {
    uint64_t before = a.chunkTiesBefore[c];
    uint64_t take = ties > before ? ties - before : 0;
    if (take > chunkEqual[c]) take = chunkEqual[c];
    a.chunkOffset[c] = position;
    position += chunkGreater[c] + take;
  }
}

/* Per chunk: how many keys are above the threshold, and how many equal it; from the run
 * and the count above the range where the chunk has a run, else from all its keys
 * (docs/DEVICE.md, "countKernel" and, for why that is exact, "emitKernel"). */
template <typename Key> /* 5 blocks an SM, as before its reads were batched */
__global__ void __launch_bounds__(SPARCCL_THREADS, 5) countKernel(KernelArgs a, const void* send) {
  const uint32_t c = blockIdx.x;
  const DeviceChunk ch = a.chunks[c];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse) return;
  const DeviceSelect S = a.select[ch.layer];
  const uint32_t run = a.chunkCandidates[c]; /* uniform over the block */
  uint32_t greater = 0, equal = 0, above = 0;
  if (run <= SPARCCL_CANDIDATES) { /* not SPARCCL_NO_RUN nor SPARCCL_NO_CLASS */
    const Key* candidates = (const Key*)a.candidates + (size_t)c * SPARCCL_CANDIDATES;
    above = a.chunkAbove[c];
    for (uint32_t o = threadIdx.x; o < run; o += blockDim.x) {
      int gt, eq;
      classifyKey<Key>(S, candidates[o], &gt, &eq);
      greater += gt;
      equal += eq;
    }
  } else if (L.all) { /* k == d: every element, no keys */
    for (uint32_t o = threadIdx.x; o < ch.end - ch.begin; o += blockDim.x) greater++;
  } else {
    forChunkKeys<Key>(KeySource<Key>(a, send, L, ch.layer), ch, [&](uint32_t, uint32_t, Key key) {
      int gt, eq;
      classifyKey<Key>(S, key, &gt, &eq);
      greater += gt;
      equal += eq;
    });
  }
  /* both counts in one scan: each is at most SPARCCL_CHUNK, so the halves never carry */
  uint64_t total;
  blockExclusiveScan<uint64_t>(((uint64_t)greater << 32) | equal, &total);
  if (threadIdx.x == 0) {
    a.chunkGreater[c] = above + (uint32_t)(total >> 32);
    a.chunkEqual[c] = (uint32_t)total;
  }
  if (lastToArrive(&a.arrivals[ch.layer], L.nchunks)) scanLayer(a, ch.layer);
}

/* Where each candidate of a chunk sits in the chunk's run, from the class mask: slot[o] for
 * every candidate offset o, so that emitKernel reads its key from the run.  Every thread of
 * the block calls it; it ends with a barrier (docs/DEVICE.md, "runSlots"). */
__device__ __forceinline__ void runSlots(uint32_t myWord, uint32_t size, uint32_t* words,
                                         uint16_t* slot) {
  words[threadIdx.x] = myWord;
  __syncthreads();
  /* this thread's offsets as the key pass took them: o = threadIdx.x + m * SPARCCL_THREADS,
   * in word o / SPARCCL_PER_THREAD, bits 2 (o % SPARCCL_PER_THREAD) */
  uint32_t mine = 0, count = 0;
  for (uint32_t m = 0; m < SPARCCL_PER_THREAD; m++) {
    const uint32_t o = threadIdx.x + m * SPARCCL_THREADS;
    const uint32_t cls = o < size ? (words[o / SPARCCL_PER_THREAD] >> (2 * (o % SPARCCL_PER_THREAD))) & 3u
                                  : SPARCCL_CLASS_BELOW;
    if (cls == SPARCCL_CLASS_CANDIDATE) { mine |= 1u << m; count++; }
  }
  uint32_t total;
  uint32_t next = blockExclusiveScan<uint32_t>(count, &total);
  for (uint32_t m = 0; m < SPARCCL_PER_THREAD; m++)
    if ((mine >> m) & 1u) slot[threadIdx.x + m * SPARCCL_THREADS] = (uint16_t)next++;
  __syncthreads();
}

/* Where offset o of a chunk sits in emitKernel's shared copy of the chunk's keys: one unused
 * slot after every SPARCCL_PER_THREAD keys, so that the threads of a warp, each reading its
 * own run of consecutive keys, start their runs in different banks (without it, thread t's
 * run starts at word 16t or 32t: all of a warp's reads in one or two banks). */
__device__ __forceinline__ uint32_t stagedSlot(uint32_t o) { return o + o / SPARCCL_PER_THREAD; }

/* A non-finite layer on this rank: a well-formed empty-valued set, as the CPU path. */
__device__ __forceinline__ void emitEmptySet(const KernelArgs& a, const DeviceChunk& ch,
                                             const DeviceLayer& L, uint32_t* indices, void* values) {
  SPARCCL_FOR_CHUNK(p, ch) {
    if (p >= L.k) break;
    indices[p] = p;
    sparccl_wire_store(values, p, a.wireType, 0.0f);
  }
}

/* Bit j of *greaterMask / *equalMask: this thread's element first + j (of n, from offset lo)
 * is above the threshold / equal to it; *equal counts the latter.  From the class mask and
 * the candidates where the chunk has one, else from all keys staged in shared memory
 * (docs/DEVICE.md, emitKernel, says why both give the same bits). */
template <typename Key>
__device__ __forceinline__ void markChunk(const KernelArgs& a, const void* send, uint32_t c,
                                          const DeviceChunk& ch, const DeviceLayer& L,
                                          const DeviceSelect& S, uint32_t lo, uint32_t n,
                                          Key* staged, uint32_t* runWords, uint16_t* runSlot,
                                          uint32_t* greaterMask, uint32_t* equalMask, uint32_t* equal) {
  const uint32_t size = ch.end - ch.begin, first = ch.begin + (lo < size ? lo : size);
  if (L.all) {
    *greaterMask = (1u << n) - 1u; /* k == d: every element, no keys (n <= 16) */
  } else if (a.chunkCandidates[c] != SPARCCL_NO_CLASS) { /* uniform over the block */
    const uint32_t word = a.chunkClass[(size_t)c * SPARCCL_CLASS_WORDS + threadIdx.x];
    const uint32_t runCount = a.chunkCandidates[c]; /* uniform too */
    if (runCount <= SPARCCL_CANDIDATES) runSlots(word, size, runWords, runSlot);
    const KeySource<Key> keyOf(a, send, L, ch.layer);
    const Key* run = (const Key*)a.candidates + (size_t)c * SPARCCL_CANDIDATES;
    for (uint32_t j = 0; j < SPARCCL_PER_THREAD; j++) { /* a fixed count: unrolled */
      const uint32_t cls = (word >> (2 * j)) & 3u;
      if (j < n && cls == SPARCCL_CLASS_ABOVE) *greaterMask |= 1u << j;
      if (j < n && cls == SPARCCL_CLASS_CANDIDATE)
        markKey<Key>(S, runCount <= SPARCCL_CANDIDATES ? run[runSlot[lo + j]] : keyOf(first + j),
                     j, greaterMask, equalMask, equal);
    }
  } else {
    forChunkKeys<Key>(KeySource<Key>(a, send, L, ch.layer), ch,
                      [&](uint32_t o, uint32_t, Key key) { staged[stagedSlot(o)] = key; });
    __syncthreads();
    for (uint32_t j = 0; j < SPARCCL_PER_THREAD; j++) /* a fixed count: unrolled */
      if (j < n) /* lo is a multiple of SPARCCL_PER_THREAD */
        markKey<Key>(S, staged[stagedSlot(lo) + j], j, greaterMask, equalMask, equal);
  }
}

/* This thread's selected elements [first, last) (selectedMask) and their values, from
 * output position `position` on; with two error buffers, a - sent where this rank sends. */
template <int C, int F>
__device__ __forceinline__ void emitSelected(const KernelArgs& a, const void* send,
                                             const DeviceLayer& L, uint32_t layer, uint32_t first,
                                             uint32_t last, uint32_t selectedMask, uint64_t position,
                                             uint32_t* indices, void* values) {
  const int havePrev = a.havePrevGrad[layer];
  const float scale = sparccl_randk_scale(L.count, L.k);
  const int ef = keepsError<F>();
  const float* error = ef ? errorNow(a) : NULL;
  /* it becomes e only when the call commits (a skipped layer's is overwritten) */
  float* accumulated = ef && a.errorNext ? errorAfter(a) : NULL;
  for (uint32_t i = first; i < last; i++) {
    if (!((selectedMask >> (i - first)) & 1u)) continue;
    /* never past the layer's k pairs: a selection of more than k is a bug, which scanLayer
     * reports (sparcclCommGetStats), not a write into the next layer's pairs */
    if (position >= L.k) break;
    size_t at = L.offset + i;
    ElementInputs in;
    readInputs<C, F>(a, send, error, at, havePrev, &in);
    float g = sparccl_bits_value(in.g, a.dtype);
    float x = keyInputOf<F>(a, in, g);
    float v = sparccl_value_input(F, g, x);
    float w = C == SPARCCL_IMPK ? weightOf<C>(a, in, g, havePrev) : 1.0f;
    const float value = sparccl_value(C, v, w, scale);
    indices[position] = i;
    sparccl_wire_store(values, position, a.wireType, value);
    /* what the receivers read back (SPEC 4): the same bits the decompress would subtract */
    if (accumulated) accumulated[at] = sparccl_error_update(x, sparccl_wire_round(value, a.wireType));
    position++;
  }
}

/* Per chunk: the selected elements in ascending index order, with their values; each thread
 * takes SPARCCL_PER_THREAD consecutive elements, so that block scans of per-thread counts
 * give ascending output positions (docs/DEVICE.md, emitKernel). */
template <int C, int F, typename Key> /* 6 blocks an SM, as before its reads were batched */
__global__ void __launch_bounds__(SPARCCL_THREADS, 6) emitKernel(KernelArgs a, const void* send) {
  __shared__ union {
    Key staged[SPARCCL_CHUNK + SPARCCL_THREADS]; /* the chunk's keys (no class mask) */
    struct {
      uint16_t slot[SPARCCL_CHUNK];  /* a candidate's place in the chunk's run */
      uint32_t word[SPARCCL_THREADS]; /* the chunk's class mask */
    } run;
  } shared;
  const uint32_t c = blockIdx.x;
  const DeviceChunk ch = a.chunks[c];
  const DeviceLayer L = a.layers[ch.layer];
  if (!L.sparse) return;
  uint32_t* indices = sparccl_wire_layer_indices(&a.wire, a.sendBlock, L.sharedSet, L.indexPos,
                                                 a.sharedIndices, L.valuePos);
  void* values = sparccl_wire_values(&a.wire, a.sendBlock, L.valuePos);
  if (blockFlags(a, a.sendBlock)[L.flagPos]) {
    emitEmptySet(a, ch, L, indices, values);
    return;
  }
  const DeviceSelect S = a.select[ch.layer];
  /* this thread's elements [first, last) of the chunk, as offsets (ch.begin + offset + 16
   * could wrap past 2^32 - 1 in a layer's last chunk) */
  const uint32_t size = ch.end - ch.begin, lo = threadIdx.x * SPARCCL_PER_THREAD;
  const uint32_t first = ch.begin + (lo < size ? lo : size);
  const uint32_t last = ch.begin + (lo + SPARCCL_PER_THREAD < size ? lo + SPARCCL_PER_THREAD : size);
  const uint32_t n = last - first;
  uint32_t greaterMask = 0, equalMask = 0, equal = 0, total;
  markChunk<Key>(a, send, c, ch, L, S, lo, n, shared.staged, shared.run.word, shared.run.slot,
                 &greaterMask, &equalMask, &equal);
  uint64_t tieRank = a.chunkTiesBefore[c] + blockExclusiveScan<uint32_t>(equal, &total);
  uint32_t mine = 0;
  uint32_t selectedMask = 0;
  for (uint32_t j = 0; j < n; j++) {
    int take = ((greaterMask >> j) & 1u) || (((equalMask >> j) & 1u) && tieRank++ < S.ties);
    selectedMask |= (uint32_t)take << j;
    mine += take;
  }
  uint64_t position = a.chunkOffset[c] + blockExclusiveScan<uint32_t>(mine, &total);
  emitSelected<C, F>(a, send, L, ch.layer, first, last, selectedMask, position, indices, values);
}

template <int C, int F, typename Key>
static cudaError_t compress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                            cudaStream_t stream) {
  const int passes = digitPasses(KeyBits<Key>::bits);
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, keyKernel<C, F, Key>)(a, send);
  for (int p = 1; p < passes; p++)
    SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, digitKernel<Key>)(a, p, send);
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, countKernel<Key>)(a, send);
  SPARCCL_LAUNCH(ds->nchunks, SPARCCL_THREADS, stream, emitKernel<C, F, Key>)(a, send);
  return cudaGetLastError();
}

/* One instance per (compressor, feedback) pair of the method tables (src/methods.h); a new
 * feedback row adds one CASE to FEEDBACKS, which feedbacksListed checks. */
#define CASE(C, F, K) case (C) * SPARCCL_NUM_FEEDBACKS + (F): return compress<C, F, K>(a, ds, send, stream);
#define FEEDBACKS(C, K) CASE(C, SPARCCL_FB_NONE, K) CASE(C, SPARCCL_FB_EF, K) CASE(C, SPARCCL_FB_EF21, K) \
                        CASE(C, SPARCCL_FB_SCAM, K) CASE(C, SPARCCL_FB_DGC, K)
typedef char feedbacksListed[SPARCCL_NUM_FEEDBACKS == 5 ? 1 : -1];

cudaError_t sparcclLaunchCompress(const KernelArgs& a, const DeviceSet* ds, const void* send,
                                  cudaStream_t stream) {
  switch (a.compressor * SPARCCL_NUM_FEEDBACKS + a.feedback) {
    FEEDBACKS(SPARCCL_TOPK, uint32_t)
    FEEDBACKS(SPARCCL_RANDK, uint32_t)
    FEEDBACKS(SPARCCL_IMPK, uint32_t)
    FEEDBACKS(SPARCCL_IMPK_SELECT, uint32_t)
    FEEDBACKS(SPARCCL_IMPK_RANDOM, uint64_t)
  }
  return cudaErrorInvalidValue;
}
