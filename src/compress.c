/* Compression of one layer on the host: keys -> exact top-k -> pack (index, value).  No
 * state is written: the update waits for the exchange (SPEC 2), so that a layer non-finite
 * on any rank leaves every rank's state as it was.  The loops are written once, generic in
 * (compressor, feedback), and instantiated per pair by compressDispatch. */
#include <string.h>
#include "core.h"
#include "select_stream.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* What a layer's loops read besides the gradient. */
typedef struct {
  const float* error;
  const float* h;
  const float* importance;
  const float* prevGrad; /* non-NULL: online importance with a previous gradient */
  const float* momentum; /* dgc's u */
  sparcclCallValues_t call;
  uint32_t layerId, step;
  float randkScale;
  size_t indexBase; /* the layer-local index of element 0: a shard's first (11.2) */
} LayerInputs;

static LayerInputs layerInputs(const sparcclComm_t comm, const sparcclLayer_t* l) {
  const sparcclConfig_t* c = &comm->config;
  LayerInputs in;
  in.error = l->error;
  in.h = l->h;
  in.importance = l->importance;
  in.prevGrad = (l->prevGrad && l->havePrevGrad) ? l->prevGrad : NULL;
  in.momentum = l->momentum;
  in.call = sparccl_call_values(c, sparcclRandomRank(comm));
  in.layerId = l->id;
  in.step = (uint32_t)l->step;
  in.randkScale = sparccl_randk_scale(l->count, l->k);
  in.indexBase = l->shardOffset;
  return in;
}

/* The importance of element i as this call sees it: online mode steps it first (SPEC 7). */
ALWAYS_INLINE float weightAt(const LayerInputs* in, size_t i, float g) {
  if (in->importance == NULL) return 1.0f;
  if (in->prevGrad != NULL)
    return sparccl_cube_step(in->importance[i], g, in->prevGrad[i], in->call.rate, in->call.low, in->call.high);
  return in->importance[i];
}

float sparcclOnlineWeight(const sparcclCallValues_t* v, const sparcclLayer_t* l, size_t i, float g) {
  return sparccl_cube_step(l->importance[i], g, l->prevGrad[i], v->rate, v->low, v->high);
}

/* x of the feedback scheme (SPEC 1, 9); g is the trainer's gradient. */
ALWAYS_INLINE float keyInputAt(const LayerInputs* in, size_t i, float g, const int feedback) {
  float e = (feedback == SPARCCL_FB_EF || feedback == SPARCCL_FB_SCAM ||
             feedback == SPARCCL_FB_DGC) ? in->error[i] : 0.0f;
  float h = feedback == SPARCCL_FB_EF21 ? in->h[i] : 0.0f;
  float u = feedback == SPARCCL_FB_DGC ? in->momentum[i] : 0.0f;
  return sparccl_key_input(feedback, sparccl_feedback_gradient(feedback, g, u, in->call.momentumFactor),
                           e, h);
}

/* The Philox word of element i for the random compressors (0 for the others), from the
 * block of its four that *random holds (drawn at the block's first element, or at i = 0
 * when a shard starts inside a block).  Words follow the layer-local index. */
ALWAYS_INLINE uint32_t wordAt(const LayerInputs* in, size_t i, sparccl_philox_block_t* random,
                              const int compressor) {
  size_t at = i + in->indexBase;
  if (compressor != SPARCCL_RANDK && compressor != SPARCCL_IMPK_RANDOM) return 0;
  if ((at & 3u) == 0 || i == 0)
    *random = sparccl_random_block(in->call.seed, at >> 2, in->layerId, in->step, in->call.randomRank);
  return random->v[at & 3u];
}

/* The key of element i (g its gradient, x its key input): 64 bits for impk_random, else the
 * 32-bit key. */
ALWAYS_INLINE uint64_t keyOf(const LayerInputs* in, size_t i, float g, float x, uint32_t word,
                             const int compressor) {
  if (compressor == SPARCCL_IMPK_RANDOM) return sparccl_key_impk_random(word, weightAt(in, i, g));
  return sparccl_key32(compressor, x,
                       (compressor == SPARCCL_IMPK || compressor == SPARCCL_IMPK_SELECT)
                           ? weightAt(in, i, g) : 1.0f,
                       word);
}

/* Pass 1: keys and the first digit's histogram.  Returns 1 on a NaN/Inf key input. */
ALWAYS_INLINE int keyPass(const LayerInputs* in, const void* grad, int dtype, size_t d,
                          const int compressor, const int feedback, void* keys, uint32_t* hist) {
  sparccl_philox_block_t random = {{0, 0, 0, 0}};
  /* Four interleaved histograms: consecutive keys often share a bin (a gradient's
   * magnitudes span few exponents), and one histogram would serialise their increments
   * through memory.  Summed into hist at the end; the counts are the same. */
  uint32_t sub[4][SPARCCL_RADIX_BINS];
  uint32_t finite = 1;
  size_t i;
  memset(sub, 0, sizeof(sub));
  for (i = 0; i < d; i++) {
    float g = sparccl_load(grad, i, dtype);
    float x = keyInputAt(in, i, g, feedback);
    uint64_t key = keyOf(in, i, g, x, wordAt(in, i, &random, compressor), compressor);
    finite &= (uint32_t)sparccl_is_finite(x);
    if (compressor == SPARCCL_IMPK_RANDOM) {
      ((uint64_t*)keys)[i] = key;
      sub[i & 3u][key >> (64 - SPARCCL_RADIX_BITS)]++;
    } else {
      ((uint32_t*)keys)[i] = (uint32_t)key;
      sub[i & 3u][key >> (32 - SPARCCL_RADIX_BITS)]++;
    }
  }
  for (i = 0; i < SPARCCL_RADIX_BINS; i++) hist[i] += sub[0][i] + sub[1][i] + sub[2][i] + sub[3][i];
  return !finite;
}

/* Only the finiteness check (k == d needs no keys). */
ALWAYS_INLINE int finitePass(const LayerInputs* in, const void* grad, int dtype, size_t d,
                             const int feedback) {
  uint32_t finite = 1;
  size_t i;
  for (i = 0; i < d; i++)
    finite &= (uint32_t)sparccl_is_finite(keyInputAt(in, i, sparccl_load(grad, i, dtype), feedback));
  return !finite;
}

ALWAYS_INLINE void emitOne(const LayerInputs* in, const void* grad, int dtype, size_t i,
                           size_t n, const int compressor, const int feedback, int wireType,
                           uint32_t* indices, void* values) {
  float g = sparccl_load(grad, i, dtype);
  float x = keyInputAt(in, i, g, feedback);
  float v = sparccl_value_input(feedback, g, x); /* scam's g; the others' x */
  float w = compressor == SPARCCL_IMPK ? weightAt(in, i, g) : 1.0f;
  indices[n] = (uint32_t)i;
  sparccl_wire_store(values, n, wireType, sparccl_value(compressor, v, w, in->randkScale));
}

/* Final pass: the selected set in ascending index order, with its values. */
ALWAYS_INLINE void emitPass(const LayerInputs* in, const void* grad, int dtype, size_t d,
                            size_t k, const int compressor, const int feedback, int wireType,
                            const void* keys, sparcclSelection_t sel, uint32_t* indices,
                            void* values) {
  size_t i, n = 0, ties = sel.ties;
  if (k == d) {
    for (i = 0; i < d; i++) emitOne(in, grad, dtype, i, i, compressor, feedback, wireType, indices, values);
    return;
  }
  if (compressor == SPARCCL_IMPK_RANDOM) {
    const uint64_t* key = (const uint64_t*)keys;
    for (i = 0; n < k; i++) {
      if (key[i] > sel.threshold || (key[i] == sel.threshold && ties > 0 && ties--))
        emitOne(in, grad, dtype, i, n++, compressor, feedback, wireType, indices, values);
    }
  } else {
    /* Two passes: the selected indices from a sequential scan of the keys, then the
     * values gathered by a tight loop whose loads are independent (a selected element
     * every 1/density elements misses the cache; this way the misses overlap). */
    const uint32_t* key = (const uint32_t*)keys;
    const uint32_t threshold = (uint32_t)sel.threshold;
    for (i = 0; n < k; i++) {
      if (key[i] > threshold || (key[i] == threshold && ties > 0 && ties--))
        indices[n++] = (uint32_t)i;
    }
    for (n = 0; n < k; n++)
      emitOne(in, grad, dtype, indices[n], n, compressor, feedback, wireType, indices, values);
  }
}

/* The key of element i alone (the sample of the streaming path): keyPass's key. */
ALWAYS_INLINE uint64_t keyAt(const LayerInputs* in, const void* grad, const int dtype, size_t i,
                             const int compressor, const int feedback) {
  sparccl_philox_block_t random = {{0, 0, 0, 0}};
  float g = sparccl_load(grad, i, dtype);
  size_t at = i + in->indexBase;
  if (compressor == SPARCCL_RANDK || compressor == SPARCCL_IMPK_RANDOM)
    random = sparccl_random_block(in->call.seed, at >> 2, in->layerId, in->step, in->call.randomRank);
  return keyOf(in, i, g, keyInputAt(in, i, g, feedback), random.v[at & 3u], compressor);
}

/* The candidate pass (select_stream.c): keyPass's keys, but only those >= bound are kept,
 * with their indices, in ascending index order.  Returns the count, or cap + 1 once it
 * passes cap (the pass stops there); *nonfinite as keyPass's result (valid when the pass
 * ran to the end).  The stores are unconditional (n <= i < d: the buffers hold d). */
ALWAYS_INLINE size_t candidatePass(const LayerInputs* in, const void* grad, const int dtype,
                                   size_t d, const int compressor, const int feedback,
                                   uint64_t bound, size_t cap, void* keys, uint32_t* cand,
                                   int* nonfinite) {
  sparccl_philox_block_t random = {{0, 0, 0, 0}};
  uint32_t finite = 1;
  size_t i = 0, n = 0, end;
  while (i < d) {
    end = d - i > SPARCCL_STREAM_BLOCK ? i + SPARCCL_STREAM_BLOCK : d;
    for (; i < end; i++) {
      float g = sparccl_load(grad, i, dtype);
      float x = keyInputAt(in, i, g, feedback);
      uint64_t key = keyOf(in, i, g, x, wordAt(in, i, &random, compressor), compressor);
      finite &= (uint32_t)sparccl_is_finite(x);
      if (compressor == SPARCCL_IMPK_RANDOM) ((uint64_t*)keys)[n] = key;
      else ((uint32_t*)keys)[n] = (uint32_t)key;
      cand[n] = (uint32_t)i;
      n += key >= bound;
    }
    if (n > cap) return cap + 1;
  }
  *nonfinite = !finite;
  return n;
}

/* The streaming path: sample, candidate pass, exact top-k among the candidates, values.
 * Returns -1 where it does not apply or gives up (the caller takes the exact path), else
 * what compressGeneric returns. */
ALWAYS_INLINE int compressStream(const LayerInputs* in, const void* grad, const int dtype,
                                 size_t d, size_t k, const int compressor, const int feedback,
                                 int wireType, void* keys, uint32_t* candidates,
                                 uint32_t* indices, void* values) {
  const int wide = compressor == SPARCCL_IMPK_RANDOM; /* 64-bit keys */
  /* the sample lives in the key scratch (m <= d / 16) until the bound is known */
  uint64_t* sample = (uint64_t*)keys;
  uint32_t* sample32 = (uint32_t*)keys;
  uint64_t bound;
  size_t m = sparcclStreamSampleSize(d, k), j, n, cap;
  int nonfinite = 0;
  if (m == 0) return -1;
  for (j = 0; j < m; j++) {
    uint64_t key = keyAt(in, grad, dtype, sparcclStreamSampleIndex(d, m, j), compressor, feedback);
    if (wide) sample[j] = key;
    else sample32[j] = (uint32_t)key;
  }
  if (wide) {
    if (!sparcclStreamBound64(sample, m, d, k, candidates, &bound, &cap)) return -1;
  } else {
    uint32_t b;
    if (!sparcclStreamBound32(sample32, m, d, k, candidates, &b, &cap)) return -1;
    bound = b;
  }
  if (sparcclStreamF32Available() &&
      (compressor == SPARCCL_TOPK || (compressor == SPARCCL_IMPK && in->prevGrad == NULL))) {
    sparcclStreamF32Args a;
    a.g = grad;
    a.dtype = dtype;
    a.e = (feedback == SPARCCL_FB_EF || feedback == SPARCCL_FB_SCAM ||
           feedback == SPARCCL_FB_DGC) ? in->error : NULL;
    a.h = feedback == SPARCCL_FB_EF21 ? in->h : NULL;
    a.u = feedback == SPARCCL_FB_DGC ? in->momentum : NULL;
    a.w = compressor == SPARCCL_IMPK ? in->importance : NULL;
    a.momentum = in->call.momentumFactor;
    a.d = d;
    a.cap = cap;
    a.bound = (uint32_t)bound;
    a.keys = (uint32_t*)keys;
    a.cand = candidates;
    n = sparcclStreamF32(&a, &nonfinite);
  } else {
    n = candidatePass(in, grad, dtype, d, compressor, feedback, bound, cap, keys, candidates,
                      &nonfinite);
  }
  if (n > cap || n < k) return -1;
  if (nonfinite) return 1;
  if (wide) sparcclStreamAmong64((const uint64_t*)keys, candidates, n, k, candidates + n, indices);
  else sparcclStreamAmong32((const uint32_t*)keys, candidates, n, k, candidates + n, indices);
  for (n = 0; n < k; n++)
    emitOne(in, grad, dtype, indices[n], n, compressor, feedback, wireType, indices, values);
  return 0;
}

/* The streaming path with the dtype a constant (no per-element dtype switch). */
ALWAYS_INLINE int compressStreamTyped(const LayerInputs* in, const void* grad, int dtype,
                                      size_t d, size_t k, const int compressor,
                                      const int feedback, int wireType, void* keys,
                                      uint32_t* candidates, uint32_t* indices, void* values) {
  switch (dtype) {
    case SPARCCL_DT_FLOAT32:
      return compressStream(in, grad, SPARCCL_DT_FLOAT32, d, k, compressor, feedback, wireType,
                            keys, candidates, indices, values);
    case SPARCCL_DT_FLOAT16:
      return compressStream(in, grad, SPARCCL_DT_FLOAT16, d, k, compressor, feedback, wireType,
                            keys, candidates, indices, values);
    default:
      return compressStream(in, grad, SPARCCL_DT_BFLOAT16, d, k, compressor, feedback, wireType,
                            keys, candidates, indices, values);
  }
}

ALWAYS_INLINE int compressGeneric(const LayerInputs* in, const void* grad, int dtype, size_t d,
                                  size_t k, const int compressor, const int feedback,
                                  int wireType, void* keys, uint32_t* candidates,
                                  uint32_t* indices, void* values) {
  uint32_t hist[SPARCCL_RADIX_BINS];
  sparcclSelection_t sel = {0, 0};
  if (k < d) {
    int streamed = compressStreamTyped(in, grad, dtype, d, k, compressor, feedback, wireType,
                                       keys, candidates, indices, values);
    if (streamed >= 0) return streamed;
  }
  if (k == d) {
    if (finitePass(in, grad, dtype, d, feedback)) return 1;
  } else {
    memset(hist, 0, sizeof(hist));
    if (keyPass(in, grad, dtype, d, compressor, feedback, keys, hist)) return 1;
    sel = compressor == SPARCCL_IMPK_RANDOM
              ? sparcclSelect64((const uint64_t*)keys, d, k, hist, candidates)
              : sparcclSelect32((const uint32_t*)keys, d, k, hist, candidates);
  }
  emitPass(in, grad, dtype, d, k, compressor, feedback, wireType, keys, sel, indices, values);
  return 0;
}

#define CASE(C, F)                                                                         \
  case (C) * SPARCCL_NUM_FEEDBACKS + (F):                                                  \
    return compressGeneric(in, grad, dtype, d, k, C, F, wireType, keys, candidates, indices, \
                           values);

typedef char feedbacksListed[SPARCCL_NUM_FEEDBACKS == 5 ? 1 : -1];

static int compressDispatch(const LayerInputs* in, const void* grad, int dtype, size_t d,
                            size_t k, int compressor, int feedback, int wireType, void* keys,
                            uint32_t* candidates, uint32_t* indices, void* values) {
  /* One instance per (compressor, feedback) pair of the method tables (a new feedback row
   * adds one CASE to FEEDBACKS, which feedbacksListed checks; the compressors come from the
   * table). */
  switch (compressor * SPARCCL_NUM_FEEDBACKS + feedback) {
#define FEEDBACKS(C) CASE(C, SPARCCL_FB_NONE) CASE(C, SPARCCL_FB_EF) CASE(C, SPARCCL_FB_EF21) \
                     CASE(C, SPARCCL_FB_SCAM) CASE(C, SPARCCL_FB_DGC)
#define COMPRESSOR_CASES(C, cv, cname, cprops) FEEDBACKS(C)
    SPARCCL_COMPRESSOR_TABLE(COMPRESSOR_CASES)
#undef COMPRESSOR_CASES
#undef FEEDBACKS
  }
  return 1; /* unreachable: the config was validated */
}
#undef CASE

int sparcclCompressLayer(sparcclComm_t comm, const sparcclGroup_t* group,
                         const sparcclLayer_t* layer, const void* send, int dtype,
                         uint8_t* block) {
  const sparcclConfig_t* c = &comm->config;
  LayerInputs in = layerInputs(comm, layer);
  const void* grad = (const uint8_t*)send + layer->offset * sparccl_dtype_size(dtype);
  uint32_t* indices = sparcclLayerIndices(comm, group, layer, block);
  void* values = sparcclLayerValues(group, layer, block);
  int nonfinite = compressDispatch(&in, grad, dtype, layer->count, layer->k, c->compressor,
                                   c->feedback, c->wireType, comm->keys, comm->candidates,
                                   indices, values);
  if (nonfinite) {
    /* The layer is skipped on every rank; send a well-formed, empty-valued set. */
    size_t i;
    for (i = 0; i < layer->k; i++) indices[i] = (uint32_t)i;
    memset(values, 0, layer->k * sparccl_dtype_size(c->wireType));
  }
  return nonfinite;
}

int sparcclDenseInput(sparcclComm_t comm, const sparcclLayer_t* layer, const void* send,
                      int dtype, float* out) {
  const void* grad = (const uint8_t*)send + layer->offset * sparccl_dtype_size(dtype);
  const float m = sparccl_call_values(&comm->config, comm->rank).momentumFactor;
  uint32_t finite = 1;
  size_t i;
  if (layer->momentum != NULL) {
    for (i = 0; i < layer->count; i++) {
      out[i] = sparccl_feedback_gradient(SPARCCL_FB_DGC, sparccl_load(grad, i, dtype),
                                         layer->momentum[i], m);
      finite &= (uint32_t)sparccl_is_finite(out[i]);
    }
  } else {
    if (dtype == SPARCCL_DT_FLOAT32) memcpy(out, grad, layer->count * sizeof(float));
    else
      for (i = 0; i < layer->count; i++) out[i] = sparccl_load(grad, i, dtype);
    for (i = 0; i < layer->count; i++) finite &= (uint32_t)sparccl_is_finite(out[i]);
  }
  return !finite;
}

int sparcclPackDense(sparcclComm_t comm, const sparcclGroup_t* group, const sparcclLayer_t* layer,
                     const void* send, int dtype, uint8_t* block) {
  return sparcclDenseInput(comm, layer, send, dtype, sparcclLayerDense(group, layer, block));
}
