/* Exact top-k in expected O(d) (SPEC 1): a most-significant-digit radix select on the
 * ordered keys, 11-bit digits, ties to the lower index; the first histogram comes fused
 * from the key pass, later digits work on the boundary bin's shrinking candidate list
 * (docs/ARCHITECTURE.md, "Selection on the host"). */
#include <string.h>
#include "core.h"

/* Walk the histogram from the top bin down to the bin holding the need-th largest.
 * Returns the bin; *above = how many lie in higher bins. */
static uint32_t boundaryBin(const uint32_t* hist, uint32_t bins, size_t need, size_t* above) {
  size_t acc = 0;
  uint32_t b = bins;
  while (b > 0) {
    b--;
    if (acc + hist[b] >= need) break;
    acc += hist[b];
  }
  *above = acc;
  return b;
}

#define DEFINE_SELECT(NAME, KEY_T, BITS)                                                     \
  sparcclSelection_t NAME(const KEY_T* keys, size_t d, size_t k, const uint32_t* firstHist, \
                          uint32_t* candidates) {                                            \
    sparcclSelection_t result;                                                               \
    uint32_t hist[SPARCCL_RADIX_BINS];                                                       \
    int remaining = BITS;                                                                    \
    int width = remaining < SPARCCL_RADIX_BITS ? remaining : SPARCCL_RADIX_BITS;             \
    int shift = remaining - width;                                                           \
    KEY_T prefix;                                                                            \
    size_t need = k, above, ncand = 0, i;                                                    \
    uint32_t bin = boundaryBin(firstHist, 1u << width, need, &above);                        \
    need -= above;                                                                           \
    prefix = (KEY_T)bin;                                                                     \
    remaining = shift;                                                                       \
    if (need == firstHist[bin] || remaining == 0) {                                          \
      /* every key of the bin is taken, or the digit was the whole key */                   \
      goto done;                                                                             \
    }                                                                                        \
    for (i = 0; i < d; i++)                                                                  \
      if ((KEY_T)(keys[i] >> shift) == prefix) candidates[ncand++] = (uint32_t)i;            \
    while (remaining > 0) {                                                                  \
      size_t kept = 0;                                                                       \
      uint32_t mask;                                                                         \
      width = remaining < SPARCCL_RADIX_BITS ? remaining : SPARCCL_RADIX_BITS;               \
      shift = remaining - width;                                                             \
      mask = (1u << width) - 1u;                                                             \
      memset(hist, 0, sizeof(uint32_t) << width);                                            \
      for (i = 0; i < ncand; i++) hist[(uint32_t)(keys[candidates[i]] >> shift) & mask]++;   \
      bin = boundaryBin(hist, 1u << width, need, &above);                                    \
      need -= above;                                                                         \
      prefix = (KEY_T)((prefix << width) | bin);                                             \
      remaining = shift;                                                                     \
      if (need == hist[bin] || remaining == 0) break;                                        \
      for (i = 0; i < ncand; i++)                                                            \
        if (((uint32_t)(keys[candidates[i]] >> shift) & mask) == bin)                        \
          candidates[kept++] = candidates[i];                                                \
      ncand = kept;                                                                          \
    }                                                                                        \
  done:                                                                                      \
    if (remaining == 0) {                                                                    \
      /* prefix is the full k-th key: take all above it and the first `need` equal */        \
      result.threshold = (uint64_t)prefix;                                                   \
      result.ties = need;                                                                    \
    } else {                                                                                 \
      /* every key >= prefix << remaining is taken (k < d, so this bound is > 0) */          \
      result.threshold = ((uint64_t)prefix << remaining) - 1u;                               \
      result.ties = 0;                                                                       \
    }                                                                                        \
    return result;                                                                           \
  }

DEFINE_SELECT(sparcclSelect32, uint32_t, 32)
DEFINE_SELECT(sparcclSelect64, uint64_t, 64)
