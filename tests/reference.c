/*
 * The naive reference model of SPEC.md sections 1-3 (see reference.h).  Written from the
 * SPEC's text, element by element, with no attempt at speed: every dense vector of the
 * SPEC (a, x, sent, s) is materialised, and the selected set is found by sorting.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "sparccl.h"
#include "sparccl_math.h" /* primitives only: Philox, half/bfloat16 conversions, log */
#include "reference.h"

typedef struct {
  size_t offset, count, k;
  int sparse;
  uint32_t id;
  uint64_t step;
  int skipped;
  float** e;       /* [rank][i] ef, scam */
  float** h;       /* [rank][i] ef21 */
  float** H;       /* [rank][i] ef21 */
  float** u;       /* [rank][i] dgc (every layer) */
  uint32_t** sel;  /* [rank][t] last selected set */
} ref_layer_t;

struct ref_model {
  ref_config_t c;
  int nranks;
  size_t count, nlayers;
  uint64_t calls;  /* completed calls: the warm-up's clock */
  ref_layer_t* layers;
};

static void* xcalloc(size_t n, size_t size) {
  void* p = calloc(n ? n : 1, size ? size : 1);
  if (p == NULL) abort();
  return p;
}

/* k = min(d, max(1, ceil(density * d))), density and the product in double. */
static size_t naive_k(size_t d, double density) {
  double kd = ceil(density * (double)d);
  size_t k;
  if (kd < 1.0) kd = 1.0;
  if (kd > (double)d) kd = (double)d;
  k = (size_t)kd;
  return k;
}

static float** alloc_per_rank(int nranks, size_t n, float fill) {
  float** p = (float**)xcalloc((size_t)nranks, sizeof(float*));
  int r;
  size_t i;
  for (r = 0; r < nranks; r++) {
    p[r] = (float*)xcalloc(n, sizeof(float));
    for (i = 0; i < n; i++) p[r][i] = fill;
  }
  return p;
}

static float** clone_per_rank(float** src, int nranks, size_t n) {
  float** p;
  int r;
  if (src == NULL) return NULL;
  p = (float**)xcalloc((size_t)nranks, sizeof(float*));
  for (r = 0; r < nranks; r++) {
    p[r] = (float*)xcalloc(n, sizeof(float));
    memcpy(p[r], src[r], n * sizeof(float));
  }
  return p;
}

static void free_per_rank(void** p, int nranks) {
  int r;
  if (p == NULL) return;
  for (r = 0; r < nranks; r++) free(p[r]);
  free(p);
}

ref_model_t* ref_create(const ref_config_t* config, int nranks, size_t count, size_t nlayers,
                        const size_t* counts, uint32_t firstLayerId) {
  ref_model_t* m = (ref_model_t*)xcalloc(1, sizeof(*m));
  size_t l, offset = 0;
  int r;
  m->c = *config;
  m->nranks = nranks;
  m->nlayers = (nlayers == 0 || counts == NULL) ? 1 : nlayers;
  m->layers = (ref_layer_t*)xcalloc(m->nlayers, sizeof(ref_layer_t));
  for (l = 0; l < m->nlayers; l++) {
    ref_layer_t* L = &m->layers[l];
    L->count = (nlayers == 0 || counts == NULL) ? count : counts[l];
    L->offset = offset;
    offset += L->count;
    L->id = firstLayerId + (uint32_t)l; /* dense layers are numbered too */
    L->sparse = L->count >= config->minSparseCount;
    L->k = L->sparse ? naive_k(L->count, config->density) : L->count;
    if (config->feedback == sparcclFeedbackDGC) L->u = alloc_per_rank(nranks, L->count, 0.0f);
    if (!L->sparse) continue;
    if (config->feedback == sparcclFeedbackEF || config->feedback == sparcclFeedbackSCAM ||
        config->feedback == sparcclFeedbackDGC)
      L->e = alloc_per_rank(nranks, L->count, 0.0f);
    if (config->feedback == sparcclFeedbackEF21) {
      L->h = alloc_per_rank(nranks, L->count, 0.0f);
      L->H = alloc_per_rank(nranks, L->count, 0.0f);
    }
    L->sel = (uint32_t**)xcalloc((size_t)nranks, sizeof(uint32_t*));
    for (r = 0; r < nranks; r++) L->sel[r] = (uint32_t*)xcalloc(L->k, sizeof(uint32_t));
  }
  m->count = offset;
  return m;
}

ref_model_t* ref_clone(const ref_model_t* src) {
  ref_model_t* m = (ref_model_t*)xcalloc(1, sizeof(*m));
  size_t l;
  int r;
  *m = *src;
  m->layers = (ref_layer_t*)xcalloc(m->nlayers, sizeof(ref_layer_t));
  for (l = 0; l < m->nlayers; l++) {
    const ref_layer_t* S = &src->layers[l];
    ref_layer_t* L = &m->layers[l];
    *L = *S;
    L->e = clone_per_rank(S->e, m->nranks, S->count);
    L->h = clone_per_rank(S->h, m->nranks, S->count);
    L->H = clone_per_rank(S->H, m->nranks, S->count);
    L->u = clone_per_rank(S->u, m->nranks, S->count);
    if (S->sel != NULL) {
      L->sel = (uint32_t**)xcalloc((size_t)m->nranks, sizeof(uint32_t*));
      for (r = 0; r < m->nranks; r++) {
        L->sel[r] = (uint32_t*)xcalloc(S->k, sizeof(uint32_t));
        memcpy(L->sel[r], S->sel[r], S->k * sizeof(uint32_t));
      }
    }
  }
  return m;
}

void ref_destroy(ref_model_t* m) {
  size_t l;
  if (m == NULL) return;
  for (l = 0; l < m->nlayers; l++) {
    ref_layer_t* L = &m->layers[l];
    free_per_rank((void**)L->e, m->nranks);
    free_per_rank((void**)L->h, m->nranks);
    free_per_rank((void**)L->H, m->nranks);
    free_per_rank((void**)L->u, m->nranks);
    free_per_rank((void**)L->sel, m->nranks);
  }
  free(m->layers);
  free(m);
}

/* ------------------------------------------------------------ the arithmetic */

static float load_input(const void* p, size_t i, int dtype) {
  if (dtype == sparcclFloat32) return ((const float*)p)[i];
  if (dtype == sparcclFloat16) return sparccl_half_to_float(((const uint16_t*)p)[i]);
  return sparccl_bfloat16_to_float(((const uint16_t*)p)[i]);
}

/* Once, at the end: nearest even, overflow to Inf, NaN stays NaN. */
static void store_output(void* p, size_t i, int dtype, float v) {
  if (dtype == sparcclFloat32) ((float*)p)[i] = v;
  else if (dtype == sparcclFloat16) ((uint16_t*)p)[i] = sparccl_float_to_half(v, 0);
  else ((uint16_t*)p)[i] = sparccl_float_to_bfloat16(v, 0);
}

/* The wire: nearest even, saturated at the largest finite value. */
static float wire_round(float v, int wireType) {
  if (wireType == sparcclFloat32) /* overflowed values saturate: FLT_MAX keeps its sign */
    return isinf(v) ? (v > 0 ? FLT_MAX : -FLT_MAX) : v;
  if (wireType == sparcclFloat16) return sparccl_half_to_float(sparccl_float_to_half(v, 1));
  return sparccl_bfloat16_to_float(sparccl_float_to_bfloat16(v, 1));
}

static int finite(float v) { return !isnan(v) && !isinf(v); }

/* The Philox word of element i (SPEC 3). */
static uint32_t philox_word(const ref_model_t* m, const ref_layer_t* L, size_t i, int rank) {
  uint32_t counterRank = m->c.sharedRandomness ? 0u : (uint32_t)rank;
  sparccl_philox_block_t b =
      sparccl_philox4x32_10((uint32_t)(i / 4), L->id, (uint32_t)L->step, counterRank,
                            (uint32_t)m->c.seed, (uint32_t)(m->c.seed >> 32));
  return b.v[i % 4];
}

typedef struct {
  double key;
  uint32_t index;
} keyed_t;

static int by_key_desc_then_index(const void* pa, const void* pb) {
  const keyed_t* a = (const keyed_t*)pa;
  const keyed_t* b = (const keyed_t*)pb;
  if (a->key > b->key) return -1;
  if (a->key < b->key) return 1;
  return a->index < b->index ? -1 : (a->index > b->index ? 1 : 0);
}

static int by_value(const void* pa, const void* pb) {
  uint32_t a = *(const uint32_t*)pa, b = *(const uint32_t*)pb;
  return a < b ? -1 : (a > b ? 1 : 0);
}

/* The key of element i (w = 1: no importance solver in this model). */
static double key_of(const ref_model_t* m, const ref_layer_t* L, size_t i, int rank, float x) {
  const float w = 1.0f;
  switch (m->c.compressor) {
    case sparcclTopK: return fabs((double)x);
    case sparcclRandK: return (double)philox_word(m, L, i, rank);
    case sparcclImpK: return fabs((double)(w * x));
    case sparcclImpKSelect: return (double)w;
    default: {
      double u = ((double)philox_word(m, L, i, rank) + 1.0) * ldexp(1.0, -32);
      return w > 0.0f ? sparccl_log(u) / (double)w : -INFINITY;
    }
  }
}

static float value_of(const ref_model_t* m, const ref_layer_t* L, float x) {
  const float w = 1.0f;
  switch (m->c.compressor) {
    case sparcclRandK: return ((float)L->count / (float)L->k) * x;
    case sparcclImpK: return w * x;
    default: return x;
  }
}

/* A dense call (warm-up) on any layer, or a dense layer in a sparse call: x = g, or dgc's
 * u' = momentum * u + g, sent exactly; a layer with state (sparse, or dgc's) skips on a
 * non-finite x anywhere; ef21's h <- g and H <- s / n, dgc's u <- u' (SPEC 9).  Returns
 * whether the layer completed. */
static int dense_layer(ref_model_t* m, ref_layer_t* L, float** g, int denseCall, void* out) {
  const int n = m->nranks;
  const size_t d = L->count;
  const int stateful = L->sparse || L->u != NULL;
  float** x = alloc_per_rank(n, d, 0.0f);
  size_t i;
  int r, anyNonFinite = 0;
  for (r = 0; r < n; r++)
    for (i = 0; i < d; i++) {
      x[r][i] = L->u ? (float)m->c.momentum * L->u[r][i] + g[r][i] : g[r][i];
      if (!finite(x[r][i])) anyNonFinite = 1;
    }
  if (stateful && anyNonFinite) {
    L->skipped = 1;
    for (i = 0; i < d; i++) store_output(out, L->offset + i, m->c.dtype, (float)NAN);
    free_per_rank((void**)x, n);
    return 0;
  }
  for (i = 0; i < d; i++) {
    float sum = +0.0f;
    for (r = 0; r < n; r++) sum = sum + x[r][i];
    store_output(out, L->offset + i, m->c.dtype, m->c.op == sparcclSum ? sum : sum / (float)n);
    for (r = 0; r < n; r++) {
      if (L->u) L->u[r][i] = x[r][i];
      if (denseCall && L->h) L->h[r][i] = g[r][i];
      if (denseCall && L->H) L->H[r][i] = sum / (float)n;
    }
  }
  if (stateful) L->step++;
  free_per_rank((void**)x, n);
  return 1;
}

static void step_layer(ref_model_t* m, ref_layer_t* L, const void* const* grads, void* out) {
  const int n = m->nranks;
  const size_t d = L->count;
  float** g = alloc_per_rank(n, d, 0.0f);
  float** keyIn = alloc_per_rank(n, d, 0.0f);
  float** valIn = alloc_per_rank(n, d, 0.0f);
  float** sent = alloc_per_rank(n, d, 0.0f);
  float* s = (float*)xcalloc(d, sizeof(float));
  keyed_t* keyed = (keyed_t*)xcalloc(d, sizeof(keyed_t));
  const size_t dsize = m->c.dtype == sparcclFloat32 ? 4 : 2;
  size_t i, t;
  int r, anyNonFinite = 0;

  for (r = 0; r < n; r++) {
    const void* src = (const uint8_t*)grads[r] + L->offset * dsize;
    for (i = 0; i < d; i++) g[r][i] = load_input(src, i, m->c.dtype);
  }
  L->skipped = 0;

  if (!L->sparse || m->calls < m->c.warmupSteps) {
    /* Dense: sent = g exactly; rank-ordered sum; non-finite values just propagate (unless
     * the layer has state). */
    dense_layer(m, L, g, m->calls < m->c.warmupSteps, out);
    goto done;
  }

  /* The feedback scheme's key and value inputs, and the non-finite check on every rank. */
  for (r = 0; r < n; r++) {
    for (i = 0; i < d; i++) {
      float x;
      switch (m->c.feedback) {
        case sparcclFeedbackEF: x = L->e[r][i] + g[r][i]; valIn[r][i] = x; break;
        case sparcclFeedbackSCAM: x = L->e[r][i] + g[r][i]; valIn[r][i] = g[r][i]; break;
        case sparcclFeedbackEF21: x = g[r][i] - L->h[r][i]; valIn[r][i] = x; break;
        case sparcclFeedbackDGC:
          x = L->e[r][i] + ((float)m->c.momentum * L->u[r][i] + g[r][i]);
          valIn[r][i] = x;
          break;
        default: x = g[r][i]; valIn[r][i] = x; break;
      }
      keyIn[r][i] = x;
      if (!finite(x) || !finite(valIn[r][i])) anyNonFinite = 1;
    }
  }
  if (anyNonFinite) {
    /* The step never happened: output NaN, every rank's state and counter untouched. */
    L->skipped = 1;
    for (i = 0; i < d; i++) store_output(out, L->offset + i, m->c.dtype, (float)NAN);
    goto done;
  }

  /* Selection per rank: sort every index by key, descending, ties to the lower index. */
  for (r = 0; r < n; r++) {
    for (i = 0; i < d; i++) {
      keyed[i].key = key_of(m, L, i, r, keyIn[r][i]);
      keyed[i].index = (uint32_t)i;
    }
    qsort(keyed, d, sizeof(keyed_t), by_key_desc_then_index);
    for (t = 0; t < L->k; t++) L->sel[r][t] = keyed[t].index;
    qsort(L->sel[r], L->k, sizeof(uint32_t), by_value);
    for (t = 0; t < L->k; t++) {
      uint32_t j = L->sel[r][t];
      sent[r][j] = wire_round(value_of(m, L, valIn[r][j]), m->c.wireType);
    }
  }

  /* Every rank receives every sent_j and sums in rank order. */
  for (i = 0; i < d; i++) {
    float sum = +0.0f;
    for (r = 0; r < n; r++) sum = sum + sent[r][i];
    s[i] = sum;
  }

  /* State updates. */
  for (r = 0; r < n; r++) {
    for (i = 0; i < d; i++) {
      if (L->e != NULL) L->e[r][i] = keyIn[r][i] - sent[r][i]; /* a - sent */
      if (L->h != NULL) L->h[r][i] = L->h[r][i] + sent[r][i];
      if (L->H != NULL) L->H[r][i] = L->H[r][i] + s[i] / (float)n;
      if (L->u != NULL) L->u[r][i] = (float)m->c.momentum * L->u[r][i] + g[r][i];
    }
    for (t = 0; L->u != NULL && t < L->k; t++) L->u[r][L->sel[r][t]] = 0.0f; /* masking */
  }

  /* Output (the same on every rank; rank 0's H replica for ef21). */
  for (i = 0; i < d; i++) {
    float v;
    if (L->H != NULL) v = m->c.op == sparcclSum ? L->H[0][i] * (float)n : L->H[0][i];
    else v = m->c.op == sparcclSum ? s[i] : s[i] / (float)n;
    store_output(out, L->offset + i, m->c.dtype, v);
  }
  L->step++;

done:
  free_per_rank((void**)g, n);
  free_per_rank((void**)keyIn, n);
  free_per_rank((void**)valIn, n);
  free_per_rank((void**)sent, n);
  free(s);
  free(keyed);
}

void ref_step(ref_model_t* m, const void* const* grads, void* out) {
  size_t l;
  for (l = 0; l < m->nlayers; l++) step_layer(m, &m->layers[l], grads, out);
  m->calls++;
}

/* ------------------------------------------------------------ inspection */
size_t ref_nlayers(const ref_model_t* m) { return m->nlayers; }
size_t ref_layer_count(const ref_model_t* m, size_t l) { return m->layers[l].count; }
size_t ref_layer_k(const ref_model_t* m, size_t l) { return m->layers[l].k; }
int ref_layer_sparse(const ref_model_t* m, size_t l) { return m->layers[l].sparse; }
uint64_t ref_layer_step(const ref_model_t* m, size_t l) { return m->layers[l].step; }
int ref_layer_skipped(const ref_model_t* m, size_t l) { return m->layers[l].skipped; }
const float* ref_error(const ref_model_t* m, int rank, size_t l) {
  return m->layers[l].e ? m->layers[l].e[rank] : NULL;
}
const float* ref_h(const ref_model_t* m, int rank, size_t l) {
  return m->layers[l].h ? m->layers[l].h[rank] : NULL;
}
const float* ref_H(const ref_model_t* m, int rank, size_t l) {
  return m->layers[l].H ? m->layers[l].H[rank] : NULL;
}
const float* ref_momentum(const ref_model_t* m, int rank, size_t l) {
  return m->layers[l].u ? m->layers[l].u[rank] : NULL;
}
const uint32_t* ref_selected(const ref_model_t* m, int rank, size_t l) {
  return m->layers[l].sel ? m->layers[l].sel[rank] : NULL;
}
