/* The streaming selection (issue 14 item 1): a bound from a strided sample of the keys, the
 * candidates at or above it, then the exact top-k among them; fewer than k or too many
 * candidates fall back to the exact path, so the set is always SPEC 1's.  Why this is
 * exact: docs/ARCHITECTURE.md, "The streaming selection". */
#include <string.h>
#include "core.h"
#include "select_stream.h"

/* Below this the exact path is as fast (and the sample would be most of the layer). */
size_t sparcclStreamMinCount = 16384;
/* 0: the portable candidate pass even where the vectorised one could run (tests). */
int sparcclStreamVector = 1;

/* The sample size for a layer (0: do not stream).  Streaming pays where k is a small part of
 * d: above a quarter, the candidates would be most of the layer anyway. */
size_t sparcclStreamSampleSize(size_t d, size_t k) {
  size_t m = d / 16;
  if (d < sparcclStreamMinCount || k * 4 > d) return 0;
  if (m > SPARCCL_STREAM_SAMPLE_MAX) m = SPARCCL_STREAM_SAMPLE_MAX;
  return m;
}

/* Sample j of m: the middle of the j-th of m equal strides (deterministic). */
size_t sparcclStreamSampleIndex(size_t d, size_t m, size_t j) {
  return (size_t)(((uint64_t)j * (uint64_t)d + (uint64_t)d / 2u) / (uint64_t)m);
}

/* An integer square root, rounded up (no libm in the library's selection). */
static size_t sqrtUp(size_t v) {
  size_t r = 0;
  while (r * r < v) r++;
  return r;
}

/* The bound from the sample, and the most candidates worth keeping (more: fall back).
 * Returns 0 when the sample says streaming would not pay (all keys tied, or nearly). */
#define DEFINE_BOUND(NAME, KEY_T, SELECT, BITS)                                              \
  int NAME(KEY_T* sample, size_t m, size_t d, size_t k, uint32_t* scratch, KEY_T* bound,     \
           size_t* cap) {                                                                    \
    uint32_t hist[SPARCCL_RADIX_BINS];                                                       \
    /* expected sample count above the k-th key, then a rank four deviations above it */     \
    size_t expect = (size_t)(((uint64_t)k * m + d - 1) / d);                                 \
    size_t dev = sqrtUp(expect);                                                             \
    size_t r = expect + 4 * dev + 4, lo = expect + 2 * dev + 2, ge = 0, gt = 0, j;          \
    sparcclSelection_t sel;                                                                  \
    KEY_T b;                                                                                 \
    if (r >= m) return 0;                                                                    \
    memset(hist, 0, sizeof(hist));                                                           \
    for (j = 0; j < m; j++) hist[sample[j] >> (BITS - SPARCCL_RADIX_BITS)]++;                \
    sel = SELECT(sample, m, r, hist, scratch);                                               \
    /* the r-th largest sample key, or a bound just above the r largest */                  \
    b = sel.ties ? (KEY_T)sel.threshold : (KEY_T)(sel.threshold + 1u);                       \
    for (j = 0; j < m; j++) {                                                                \
      ge += sample[j] >= b;                                                                  \
      gt += sample[j] > b;                                                                   \
    }                                                                                        \
    if (ge > 2 * r + 16) {                                                                   \
      /* heavy ties at b: keep only what is above it, if that is still enough */            \
      if (gt < lo || b == (KEY_T)~(KEY_T)0) return 0;                                        \
      b++;                                                                                   \
      ge = gt;                                                                               \
    }                                                                                        \
    if (b == 0) return 0; /* everything would be a candidate */                              \
    *bound = b;                                                                              \
    /* four times the expected candidates, but at most half the layer (the other half is   \
     * the exact select's scratch) */                                                        \
    *cap = (size_t)(((uint64_t)ge * 4u * d) / m) + 1024u;                                    \
    if (*cap > d / 2) *cap = d / 2;                                                          \
    return *cap >= k;                                                                        \
  }

/* The exact top-k among n >= k candidates (keys[j], index cand[j], ascending index order):
 * the k selected indices in ascending order into out.  scratch: n uint32. */
#define DEFINE_AMONG(NAME, KEY_T, SELECT, BITS)                                              \
  void NAME(const KEY_T* keys, const uint32_t* cand, size_t n, size_t k, uint32_t* scratch,  \
            uint32_t* out) {                                                                 \
    uint32_t hist[SPARCCL_RADIX_BINS];                                                       \
    sparcclSelection_t sel;                                                                  \
    size_t j, t = 0, ties;                                                                   \
    KEY_T threshold;                                                                         \
    if (n == k) {                                                                            \
      memcpy(out, cand, k * sizeof(uint32_t));                                               \
      return;                                                                                \
    }                                                                                        \
    memset(hist, 0, sizeof(hist));                                                           \
    for (j = 0; j < n; j++) hist[keys[j] >> (BITS - SPARCCL_RADIX_BITS)]++;                  \
    sel = SELECT(keys, n, k, hist, scratch);                                                 \
    threshold = (KEY_T)sel.threshold;                                                        \
    ties = sel.ties;                                                                         \
    for (j = 0; t < k; j++)                                                                  \
      if (keys[j] > threshold || (keys[j] == threshold && ties > 0 && ties--))               \
        out[t++] = cand[j];                                                                  \
  }

DEFINE_BOUND(sparcclStreamBound32, uint32_t, sparcclSelect32, 32)
DEFINE_BOUND(sparcclStreamBound64, uint64_t, sparcclSelect64, 64)
DEFINE_AMONG(sparcclStreamAmong32, uint32_t, sparcclSelect32, 32)
DEFINE_AMONG(sparcclStreamAmong64, uint64_t, sparcclSelect64, 64)
