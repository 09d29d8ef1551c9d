/* The AVX2 candidate pass of the streaming selection (select_stream.c): float32, float16
 * and bfloat16 gradients, topk and fixed-weight impk keys, every feedback scheme; chosen at
 * run time.  Bitwise sparccl_math.h's scalar math: IEEE single ops lane by lane in the same
 * order, no fma (docs/ARCHITECTURE.md, "The streaming selection"). */
#include <string.h>
#include "sparccl_math.h"
#include "select_stream.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SPARCCL_HAVE_AVX2_PASS 1

/* Eight gradient elements as float32: the exact conversions of sparccl_math.h for every
 * finite (and infinite) value (F16C's half -> float is exact; bfloat16 is a shift).  A NaN
 * may carry another payload, but a NaN makes the layer non-finite: no key is used. */
__attribute__((target("avx2,f16c"))) static inline __m256 load8(const void* g, size_t i,
                                                                 int dtype) {
  if (dtype == SPARCCL_DT_FLOAT32) return _mm256_loadu_ps((const float*)g + i);
  if (dtype == SPARCCL_DT_FLOAT16)
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)((const uint16_t*)g + i)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)((const uint16_t*)g + i))), 16));
}

__attribute__((target("avx2,f16c"))) static size_t candidatesAvx2(const sparcclStreamF32Args* a,
                                                                  const int dtype,
                                                                  int* nonfinite) {
  const size_t d = a->d, cap = a->cap;
  const void* g = a->g;
  const float *e = a->e, *h = a->h, *u = a->u, *w = a->w;
  uint32_t* keys = a->keys;
  uint32_t* cand = a->cand;
  const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
  const __m256i expMask = _mm256_set1_epi32(0x7f800000);
  const __m256 momentum = _mm256_set1_ps(a->momentum);
  __m256i bad = _mm256_setzero_si256();
  __m256i limit; /* key >= bound <=> key > bound - 1 (keys < 2^31: a signed compare) */
  size_t i = 0, n = 0, end;
  uint32_t tail = 1; /* scalar tail: finite */
  if (a->bound > 0x7fffffffu) return 0; /* no magnitude reaches it: the caller falls back */
  limit = _mm256_set1_epi32((int)(a->bound - 1u));
  while (i < d) {
    end = d - i > SPARCCL_STREAM_BLOCK ? i + SPARCCL_STREAM_BLOCK : d;
    for (; i + 8 <= end; i += 8) {
      __m256 x = load8(g, i, dtype);
      __m256i bits, key, hit;
      int mask;
      if (u) x = _mm256_add_ps(_mm256_mul_ps(momentum, _mm256_loadu_ps(u + i)), x);
      if (e) x = _mm256_add_ps(_mm256_loadu_ps(e + i), x);
      else if (h) x = _mm256_sub_ps(x, _mm256_loadu_ps(h + i));
      bits = _mm256_castps_si256(x);
      bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(bits, expMask), expMask));
      if (w) bits = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(w + i), x));
      key = _mm256_and_si256(bits, magnitude);
      hit = _mm256_cmpgt_epi32(key, limit);
      mask = _mm256_movemask_ps(_mm256_castsi256_ps(hit));
      if (mask) {
        uint32_t lane[8];
        _mm256_storeu_si256((__m256i*)lane, key);
        do {
          int j = __builtin_ctz((unsigned)mask);
          keys[n] = lane[j];
          cand[n++] = (uint32_t)(i + (size_t)j);
          mask &= mask - 1;
        } while (mask);
      }
    }
    for (; i < end; i++) { /* the layer's last < 8 elements */
      float x = sparccl_load(g, i, dtype);
      uint32_t key;
      if (u) x = a->momentum * u[i] + x;
      if (e) x = e[i] + x;
      else if (h) x = x - h[i];
      tail &= (uint32_t)((sparccl_float_bits(x) & 0x7f800000u) != 0x7f800000u);
      key = sparccl_float_bits(w ? w[i] * x : x) & 0x7fffffffu;
      keys[n] = key;
      cand[n] = (uint32_t)i;
      n += key >= a->bound;
    }
    if (n > cap) return cap + 1;
  }
  *nonfinite = !tail || !_mm256_testz_si256(bad, bad);
  return n;
}
#endif

int sparcclStreamF32Available(void) {
#ifdef SPARCCL_HAVE_AVX2_PASS
  static int have = -1;
  if (have < 0) {
    __builtin_cpu_init();
    have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") ? 1 : 0;
  }
  return have && sparcclStreamVector;
#else
  return 0;
#endif
}

size_t sparcclStreamF32(const sparcclStreamF32Args* a, int* nonfinite) {
#ifdef SPARCCL_HAVE_AVX2_PASS
  /* one instance per gradient dtype: no per-element switch */
  if (a->dtype == SPARCCL_DT_FLOAT16) return candidatesAvx2(a, SPARCCL_DT_FLOAT16, nonfinite);
  if (a->dtype == SPARCCL_DT_BFLOAT16) return candidatesAvx2(a, SPARCCL_DT_BFLOAT16, nonfinite);
  return candidatesAvx2(a, SPARCCL_DT_FLOAT32, nonfinite);
#else
  (void)a;
  *nonfinite = 0;
  return 0;
#endif
}
