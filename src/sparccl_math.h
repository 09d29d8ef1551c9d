/* The one copy of sparccl's arithmetic (SPEC 1, 3, 3a, 4, 7): keys and their order, the
 * feedback inputs, the values sent, the state updates, Philox-4x32-10, float16/bfloat16, and
 * ImpK's log/exp; static inline, host-and-device, so CPU and GPU agree to the bit.  Compile
 * with -ffp-contract=off (host) and -fmad=false (nvcc): an fma would round differently.
 * Nothing here allocates, logs, or touches libm. */
#ifndef SPARCCL_MATH_H_
#define SPARCCL_MATH_H_

#include <stdint.h>
#include <stddef.h>
#include "methods.h"

#if defined(__CUDACC__)
#define SPARCCL_HD __host__ __device__ __forceinline__
#else
#define SPARCCL_HD static inline
#endif

/* ---------------------------------------------------------------- bit casts */

SPARCCL_HD uint32_t sparccl_float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  union { float f; uint32_t u; } v; v.f = f; return v.u;
#endif
}
SPARCCL_HD float sparccl_bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  union { float f; uint32_t u; } v; v.u = u; return v.f;
#endif
}
SPARCCL_HD uint64_t sparccl_double_bits(double d) {
#if defined(__CUDA_ARCH__)
  return (uint64_t)__double_as_longlong(d);
#else
  union { double d; uint64_t u; } v; v.d = d; return v.u;
#endif
}
SPARCCL_HD double sparccl_bits_double(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double((long long)u);
#else
  union { double d; uint64_t u; } v; v.u = u; return v.d;
#endif
}

SPARCCL_HD int sparccl_is_finite(float x) {
  return (sparccl_float_bits(x) & 0x7f800000u) != 0x7f800000u;
}

#define SPARCCL_CANONICAL_NAN_BITS 0x7fc00000u

/* Any NaN as the canonical one.  IEEE leaves open which NaN an operation returns: x86 passes
 * an input's sign and payload through (which input's depends on the compiler's operand
 * order), NVIDIA GPUs return their own 0x7fffffff.  Outputs and state that can hold a
 * computed NaN (dense sums, EF21's H, the restart norm) go through these, so that the CPU
 * reference and the GPU agree to the bit (SPEC 3a). */
SPARCCL_HD float sparccl_canonical_nan(float v) {
  return (sparccl_float_bits(v) & 0x7fffffffu) > 0x7f800000u
             ? sparccl_bits_float(SPARCCL_CANONICAL_NAN_BITS) : v;
}
SPARCCL_HD double sparccl_canonical_nan_double(double v) {
  return (sparccl_double_bits(v) & 0x7fffffffffffffffull) > 0x7ff0000000000000ull
             ? sparccl_bits_double(0x7ff8000000000000ull) : v;
}

/* ------------------------------------------------- float16 / bfloat16 (SPEC 1, 4) */

SPARCCL_HD float sparccl_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    if (mantissa == 0) return sparccl_bits_float(sign);
    exponent = 127 - 15 + 1; /* subnormal: normalise */
    while (!(mantissa & 0x400u)) { mantissa <<= 1; exponent--; }
    mantissa &= 0x3ffu;
    return sparccl_bits_float(sign | (exponent << 23) | (mantissa << 13));
  }
  if (exponent == 31) /* Inf, or NaN made quiet */
    return sparccl_bits_float(sign | 0x7f800000u | (mantissa << 13) | (mantissa ? 0x400000u : 0u));
  return sparccl_bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

/* Round to nearest even.  saturate = 0: an overflow becomes Inf (the output, as NCCL);
 * saturate = 1: it becomes the largest finite half (the wire: a finite gradient never
 * becomes Inf).  NaN becomes the quiet NaN of the same sign. */
SPARCCL_HD uint16_t sparccl_float_to_half(float f, int saturate) {
  uint32_t x = sparccl_float_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
  if (ax == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
  if (ax >= 0x477ff000u) /* >= 65520 rounds to Inf */
    return (uint16_t)(sign | (saturate ? 0x7bffu : 0x7c00u));
  if (ax < 0x38800000u) { /* below 2^-14: a half subnormal or zero */
    uint32_t exponent, mantissa, shift, rounded, rest, halfway;
    if (ax < 0x33000000u) return (uint16_t)sign; /* below 2^-25 */
    exponent = ax >> 23;
    mantissa = (ax & 0x7fffffu) | 0x800000u;
    shift = 126 - exponent; /* 14 .. 24 */
    rounded = mantissa >> shift;
    rest = mantissa & ((1u << shift) - 1u);
    halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (rounded & 1u))) rounded++;
    return (uint16_t)(sign | rounded);
  }
  {
    uint32_t odd = (ax >> 13) & 1u;
    uint32_t y = ax + ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
    return (uint16_t)(sign | (y >> 13));
  }
}

SPARCCL_HD float sparccl_bfloat16_to_float(uint16_t b) {
  return sparccl_bits_float((uint32_t)b << 16);
}

SPARCCL_HD uint16_t sparccl_float_to_bfloat16(float f, int saturate) {
  uint32_t x = sparccl_float_bits(f);
  uint32_t ax = x & 0x7fffffffu;
  uint32_t rounded;
  if (ax > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
  if (ax == 0x7f800000u) return (uint16_t)(x >> 16);
  rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  if (saturate && (rounded & 0x7fffu) == 0x7f80u) rounded = (rounded & 0x8000u) | 0x7f7fu;
  return (uint16_t)rounded;
}

/* Datatype codes as sparcclDataType_t (kept numeric so this header needs no other). */
enum { SPARCCL_DT_FLOAT16 = 6, SPARCCL_DT_FLOAT32 = 7, SPARCCL_DT_BFLOAT16 = 9 };

SPARCCL_HD size_t sparccl_dtype_size(int dtype) { return dtype == SPARCCL_DT_FLOAT32 ? 4 : 2; }

/* Element i of a buffer of `dtype` as float32, in two steps: its bits (the read alone), then
 * their value.  The device's batched loops (cuda/select_kernels.cu) issue a batch's reads
 * before converting any of them, so that the reads are in flight together. */
SPARCCL_HD uint32_t sparccl_load_bits(const void* p, size_t i, int dtype) {
  if (dtype == SPARCCL_DT_FLOAT32) return sparccl_float_bits(((const float*)p)[i]);
  return ((const uint16_t*)p)[i];
}
SPARCCL_HD float sparccl_bits_value(uint32_t bits, int dtype) {
  if (dtype == SPARCCL_DT_FLOAT32) return sparccl_bits_float(bits);
  if (dtype == SPARCCL_DT_FLOAT16) return sparccl_half_to_float((uint16_t)bits);
  return sparccl_bfloat16_to_float((uint16_t)bits);
}
SPARCCL_HD float sparccl_load(const void* p, size_t i, int dtype) {
  return sparccl_bits_value(sparccl_load_bits(p, i, dtype), dtype);
}

/* The output conversion: once, at the end, overflow to Inf, NaN stays NaN (the canonical
 * one: a sum of NaNs has no portable payload). */
SPARCCL_HD void sparccl_store(void* p, size_t i, int dtype, float v) {
  v = sparccl_canonical_nan(v);
  if (dtype == SPARCCL_DT_FLOAT32) ((float*)p)[i] = v;
  else if (dtype == SPARCCL_DT_FLOAT16) ((uint16_t*)p)[i] = sparccl_float_to_half(v, 0);
  else ((uint16_t*)p)[i] = sparccl_float_to_bfloat16(v, 0);
}

/* A value rounded to the wire type and back: what the receivers see, and what the error
 * buffer subtracts (SPEC 4: nearest even, saturated). */
/* float32 on the wire saturates too: a value that overflowed on the way (RandK's (d/k) x,
 * ImpK's w x) travels as the largest finite float, and the error buffer keeps the rest. */
SPARCCL_HD float sparccl_saturate_float(float v) {
  uint32_t b = sparccl_float_bits(v);
  if ((b & 0x7fffffffu) == 0x7f800000u) return sparccl_bits_float((b & 0x80000000u) | 0x7f7fffffu);
  return v;
}

SPARCCL_HD float sparccl_wire_round(float v, int wireType) {
  if (wireType == SPARCCL_DT_FLOAT32) return sparccl_saturate_float(v);
  if (wireType == SPARCCL_DT_FLOAT16) return sparccl_half_to_float(sparccl_float_to_half(v, 1));
  return sparccl_bfloat16_to_float(sparccl_float_to_bfloat16(v, 1));
}

SPARCCL_HD void sparccl_wire_store(void* p, size_t i, int wireType, float v) {
  if (wireType == SPARCCL_DT_FLOAT32) ((float*)p)[i] = sparccl_saturate_float(v);
  else if (wireType == SPARCCL_DT_FLOAT16) ((uint16_t*)p)[i] = sparccl_float_to_half(v, 1);
  else ((uint16_t*)p)[i] = sparccl_float_to_bfloat16(v, 1);
}

/* ------------------------------------------------------------ Philox (SPEC 3) */

typedef struct { uint32_t v[4]; } sparccl_philox_block_t;

SPARCCL_HD void sparccl_mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t p = (uint64_t)a * (uint64_t)b;
  *hi = (uint32_t)(p >> 32);
  *lo = (uint32_t)p;
}

SPARCCL_HD sparccl_philox_block_t sparccl_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2,
                                                         uint32_t c3, uint32_t k0, uint32_t k1) {
  sparccl_philox_block_t out;
  int round;
  for (round = 0; round < 10; round++) {
    uint32_t hi0, lo0, hi1, lo1;
    if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
    sparccl_mulhilo32(0xD2511F53u, c0, &hi0, &lo0);
    sparccl_mulhilo32(0xCD9E8D57u, c2, &hi1, &lo1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  out.v[0] = c0; out.v[1] = c1; out.v[2] = c2; out.v[3] = c3;
  return out;
}

/* The four words of element group i / 4 of a layer at a step (SPEC 3). */
SPARCCL_HD sparccl_philox_block_t sparccl_random_block(uint64_t seed, size_t group,
                                                        uint32_t layerId, uint64_t step,
                                                        uint32_t rank) {
  return sparccl_philox4x32_10((uint32_t)group, layerId, (uint32_t)step, rank, (uint32_t)seed,
                               (uint32_t)(seed >> 32));
}

/* Element i's word: word i % 4 of group i / 4 (a loop over consecutive elements can keep
 * the block for four of them, as the CPU path does). */
SPARCCL_HD uint32_t sparccl_random_word(uint64_t seed, size_t i, uint32_t layerId,
                                        uint64_t step, uint32_t rank) {
  return sparccl_random_block(seed, i >> 2, layerId, step, rank).v[i & 3u];
}

/* u = (x + 1) * 2^-32, in (0, 1]. */
SPARCCL_HD double sparccl_uniform(uint32_t word) {
  return ((double)word + 1.0) * 2.3283064365386962890625e-10;
}

/* ----------------------------------------- log and exp (SPEC 3, 3a; from fdlibm) */
/*
 * ====================================================
 * Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
 *
 * Developed at SunSoft, a Sun Microsystems, Inc. business.
 * Permission to use, copy, modify, and distribute this
 * software is freely granted, provided that this notice
 * is preserved.
 * ====================================================
 * e_log.c and e_exp.c, with the word access rewritten as 64-bit bit casts.
 */
SPARCCL_HD double sparccl_log(double x) {
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
               two54 = 1.80143985094819840000e+16, Lg1 = 6.666666666666735130e-01,
               Lg2 = 3.999999999940941908e-01, Lg3 = 2.857142874366239149e-01,
               Lg4 = 2.222219843214978396e-01, Lg5 = 1.818357216161805012e-01,
               Lg6 = 1.531383769920937332e-01, Lg7 = 1.479819860511658591e-01;
  double hfsq, f, s, z, R, w, t1, t2, dk;
  int32_t k = 0, hx, i, j;
  uint64_t bits = sparccl_double_bits(x);
  uint32_t lx = (uint32_t)bits;
  hx = (int32_t)(uint32_t)(bits >> 32);
  if (hx < 0x00100000) { /* x < 2^-1022 */
    if (((hx & 0x7fffffff) | lx) == 0) return -sparccl_bits_double(0x7ff0000000000000ull);
    if (hx < 0) return sparccl_bits_double(0x7ff8000000000000ull);
    k -= 54;
    x *= two54; /* subnormal: scale up */
    bits = sparccl_double_bits(x);
    hx = (int32_t)(uint32_t)(bits >> 32);
  }
  if (hx >= 0x7ff00000) return x + x;
  k += (hx >> 20) - 1023;
  hx &= 0x000fffff;
  i = (hx + 0x95f64) & 0x100000;
  bits = sparccl_double_bits(x);
  x = sparccl_bits_double(((uint64_t)(uint32_t)(hx | (i ^ 0x3ff00000)) << 32) |
                          (bits & 0xffffffffull)); /* normalise x or x/2 */
  k += (i >> 20);
  f = x - 1.0;
  if ((0x000fffff & (2 + hx)) < 3) { /* |f| < 2^-20 */
    if (f == 0.0) {
      if (k == 0) return 0.0;
      dk = (double)k;
      return dk * ln2_hi + dk * ln2_lo;
    }
    R = f * f * (0.5 - 0.33333333333333333 * f);
    if (k == 0) return f - R;
    dk = (double)k;
    return dk * ln2_hi - ((R - dk * ln2_lo) - f);
  }
  s = f / (2.0 + f);
  dk = (double)k;
  z = s * s;
  i = hx - 0x6147a;
  w = z * z;
  j = 0x6b851 - hx;
  t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
  t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
  i |= j;
  R = t2 + t1;
  if (i > 0) {
    hfsq = 0.5 * f * f;
    if (k == 0) return f - (hfsq - s * (hfsq + R));
    return dk * ln2_hi - ((hfsq - (s * (hfsq + R) + dk * ln2_lo)) - f);
  }
  if (k == 0) return f - s * (f - R);
  return dk * ln2_hi - ((s * (f - R) - dk * ln2_lo) - f);
}

SPARCCL_HD double sparccl_exp(double x) {
  const double o_threshold = 7.09782712893383973096e+02, u_threshold = -7.45133219101941108420e+02,
               ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
               invln2 = 1.44269504088896338700e+00, P1 = 1.66666666666666019037e-01,
               P2 = -2.77777777770155933842e-03, P3 = 6.61375632143793436117e-05,
               P4 = -1.65339022054652515390e-06, P5 = 4.13813679705723846039e-08,
               twom1000 = 9.33263618503218878990e-302;
  double y, hi = 0.0, lo = 0.0, c, t;
  int32_t k = 0, xsb;
  uint64_t bits = sparccl_double_bits(x);
  uint32_t hx = (uint32_t)(bits >> 32);
  xsb = (int32_t)((hx >> 31) & 1u);
  hx &= 0x7fffffffu;
  if (hx >= 0x40862E42u) { /* |x| >= 709.78 */
    if (hx >= 0x7ff00000u) {
      if (((hx & 0xfffffu) | (uint32_t)bits) != 0) return x + x; /* NaN */
      return xsb == 0 ? x : 0.0;                                 /* exp(+-Inf) */
    }
    if (x > o_threshold) return sparccl_bits_double(0x7ff0000000000000ull);
    if (x < u_threshold) return 0.0;
  }
  if (hx > 0x3fd62e42u) {   /* |x| > 0.5 ln2 */
    if (hx < 0x3FF0A2B2u) { /* and |x| < 1.5 ln2 */
      hi = xsb ? x + ln2_hi : x - ln2_hi;
      lo = xsb ? -ln2_lo : ln2_lo;
      k = 1 - xsb - xsb;
    } else {
      k = (int32_t)(invln2 * x + (xsb ? -0.5 : 0.5));
      t = (double)k;
      hi = x - t * ln2_hi; /* t * ln2_hi is exact here */
      lo = t * ln2_lo;
    }
    x = hi - lo;
  } else if (hx < 0x3e300000u) { /* |x| < 2^-28 */
    return 1.0 + x;
  }
  t = x * x;
  c = x - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
  if (k == 0) return 1.0 - ((x * c) / (c - 2.0) - x);
  y = 1.0 - ((lo - (x * c) / (2.0 - c)) - hi);
  bits = sparccl_double_bits(y);
  if (k >= -1021) return sparccl_bits_double(bits + ((uint64_t)(int64_t)k << 52));
  return sparccl_bits_double(bits + ((uint64_t)(int64_t)(k + 1000) << 52)) * twom1000;
}

/* -------------------------------------------------- keys and their order (SPEC 1) */
/*
 * Selection works on unsigned keys whose integer order is the key order: the k largest
 * keys win, ties to the lower index.  32-bit keys for every compressor but impk_random,
 * whose key is a double.
 */

/* Order-preserving map of a float to uint32; -0 and +0 are the same key. */
SPARCCL_HD uint32_t sparccl_ordered_float(float f) {
  uint32_t b = sparccl_float_bits(f);
  if ((b & 0x7fffffffu) == 0) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
SPARCCL_HD uint64_t sparccl_ordered_double(double f) {
  uint64_t b = sparccl_double_bits(f);
  if ((b & 0x7fffffffffffffffull) == 0) b = 0;
  return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}

/* |x| as a key: the bits of a non-negative float already order it. */
SPARCCL_HD uint32_t sparccl_key_magnitude(float x) { return sparccl_float_bits(x) & 0x7fffffffu; }

/* impk_random: log(u) / w in double, -Inf where w <= 0 (Efraimidis-Spirakis). */
SPARCCL_HD uint64_t sparccl_key_impk_random(uint32_t word, float w) {
  double key = w > 0.0f ? sparccl_log(sparccl_uniform(word)) / (double)w
                        : -sparccl_bits_double(0x7ff0000000000000ull);
  return sparccl_ordered_double(key);
}

/* The 32-bit key of element i for the compressors other than impk_random.  x is the key
 * input of the feedback scheme, w the importance (1 when unused), word the Philox word. */
SPARCCL_HD uint32_t sparccl_key32(int compressor, float x, float w, uint32_t word) {
  switch (compressor) {
    case SPARCCL_RANDK: return word;
    case SPARCCL_IMPK: return sparccl_key_magnitude(w * x);
    case SPARCCL_IMPK_SELECT: return sparccl_ordered_float(w);
    default: return sparccl_key_magnitude(x);
  }
}

/* ------------------------------------------------ feedback schemes (SPEC 1) */

/* dgc's momentum update u <- (float)momentum * u + g (SPEC 9); the other schemes' g.  The
 * feedback rules below take this as their g. */
SPARCCL_HD float sparccl_feedback_gradient(int feedback, float g, float u, float momentum) {
  return feedback == SPARCCL_FB_DGC ? momentum * u + g : g;
}

/* The vector the keys are computed on: g, a = e + g, or g - h (dgc: a = e + u). */
SPARCCL_HD float sparccl_key_input(int feedback, float g, float e, float h) {
  if (feedback == SPARCCL_FB_EF || feedback == SPARCCL_FB_SCAM || feedback == SPARCCL_FB_DGC)
    return e + g;
  if (feedback == SPARCCL_FB_EF21) return g - h;
  return g;
}

/* The vector the values are taken from: the key input, except SCAM sends g. */
SPARCCL_HD float sparccl_value_input(int feedback, float g, float keyInput) {
  return feedback == SPARCCL_FB_SCAM ? g : keyInput;
}

/* The value sent for a selected element, before wire rounding. */
SPARCCL_HD float sparccl_value(int compressor, float x, float w, float randkScale) {
  if (compressor == SPARCCL_RANDK) return randkScale * x;
  if (compressor == SPARCCL_IMPK) return w * x;
  return x;
}

/* (float)d / (float)k, the RandK rescaling. */
SPARCCL_HD float sparccl_randk_scale(size_t d, size_t k) { return (float)d / (float)k; }

/* ef, scam: e <- a - sent (sent = 0 off the selected set, which leaves e = a). */
SPARCCL_HD float sparccl_error_update(float a, float sent) { return a - sent; }

/* ------------------------------------------------ importance (SPEC 7) */

/* c = (float)(eta * gamma), in double. */
SPARCCL_HD float sparccl_importance_rate(double eta, double gamma) {
  return (float)(eta * gamma);
}

/* Probe: p = x - gamma * (w * g). */
SPARCCL_HD float sparccl_probe(float x, float w, float g, float gamma) {
  float t = gamma * (w * g);
  return x - t;
}

/* Cube step, eq. (13): w <- min(max(w + c * (q * g), a), b). */
SPARCCL_HD float sparccl_cube_step(float w, float q, float g, float c, float low, float high) {
  float v = w + c * (q * g);
  v = v > low ? v : low;
  return v < high ? v : high;
}

/* Simplex step, eq. (12): z = c * (q * g); v = w * exp(z - max z); w = d * v / sum v. */
SPARCCL_HD float sparccl_simplex_exponent(float q, float g, float c) { return c * (q * g); }
SPARCCL_HD double sparccl_simplex_term(float w, float z, float zmax) {
  return (double)w * sparccl_exp((double)z - (double)zmax);
}
SPARCCL_HD float sparccl_simplex_weight(double d, double v, double total) {
  return (float)(d * v / total);
}

/* The blocked sum of SPEC 3a: in double, sequential within blocks of 4096 consecutive
 * elements, then sequential over the block sums.  Streaming, so it can run across the
 * layers of a buffer. */
#define SPARCCL_SUM_BLOCK 4096
typedef struct { double total, block; uint32_t filled; } sparccl_blocked_sum_t;

SPARCCL_HD void sparccl_blocked_sum_init(sparccl_blocked_sum_t* s) {
  s->total = 0.0; s->block = 0.0; s->filled = 0;
}
SPARCCL_HD void sparccl_blocked_sum_add(sparccl_blocked_sum_t* s, double v) {
  s->block += v;
  if (++s->filled == SPARCCL_SUM_BLOCK) { s->total += s->block; s->block = 0.0; s->filled = 0; }
}
SPARCCL_HD double sparccl_blocked_sum_result(const sparccl_blocked_sum_t* s) {
  return s->filled ? s->total + s->block : s->total;
}

/* k = min(d, max(1, ceil(density * d))), in double (SPEC 1). */
SPARCCL_HD size_t sparccl_layer_k(size_t d, double density) {
  double kd = density * (double)d;
  size_t k = (size_t)kd;
  if ((double)k < kd) k++;
  if (k < 1) k = 1;
  return k > d ? d : k;
}

#endif /* SPARCCL_MATH_H_ */
