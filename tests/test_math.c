/*
 * The shared host-and-device math of src/sparccl_math.h (SPEC 1, 3, 3a, 4): Philox known
 * answers, float16/bfloat16 conversions against independent references, the fdlibm
 * log/exp against libm, the k rule, the key orders and the blocked sum.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "sparccl_math.h"


static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint64_t dbits(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
static double bitsd(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }

/* ================================================================ Philox (SPEC 3) */

static void check_philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                         uint32_t k1, const uint32_t want[4]) {
  sparccl_philox_block_t b = sparccl_philox4x32_10(c0, c1, c2, c3, k0, k1);
  int j;
  for (j = 0; j < 4; j++)
    REQUIRE_MSG(b.v[j] == want[j], "philox word %d: 0x%08x, want 0x%08x", j, b.v[j], want[j]);
}

START_TEST(test_philox_known_answers) {
  static const uint32_t zero[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
  static const uint32_t ones[4] = {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu};
  static const uint32_t pi[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
  check_philox(0, 0, 0, 0, 0, 0, zero);
  check_philox(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu,
               ones);
  check_philox(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u,
               pi);
}
END_TEST

/* SPEC 3: key = {(uint32)seed, (uint32)(seed >> 32)}, counter = {i/4, layer, (uint32)step, rank}. */
START_TEST(test_philox_counter_and_key_layout) {
  static const uint32_t pi[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
  const uint64_t seed = ((uint64_t)0x299f31d0u << 32) | 0xa4093822u;
  sparccl_philox_block_t b = sparccl_random_block(seed, 0x243f6a88u, 0x85a308d3u, 0x13198a2eu,
                                                  0x03707344u);
  sparccl_philox_block_t c = sparccl_random_block(seed, 0x243f6a88u, 0x85a308d3u,
                                                  ((uint64_t)7 << 32) | 0x13198a2eu, 0x03707344u);
  sparccl_philox_block_t z = sparccl_random_block(0, 0, 0, 0, 0);
  int j;
  for (j = 0; j < 4; j++) {
    REQUIRE_EQ(b.v[j], pi[j]);
    REQUIRE_EQ(c.v[j], pi[j]); /* the step enters as (uint32)step */
  }
  REQUIRE_EQ(z.v[0], 0x6627e8d5u);
  /* every field matters */
  REQUIRE_NE(sparccl_random_block(1, 0, 0, 0, 0).v[0], z.v[0]);
  REQUIRE_NE(sparccl_random_block((uint64_t)1 << 32, 0, 0, 0, 0).v[0], z.v[0]);
  REQUIRE_NE(sparccl_random_block(0, 1, 0, 0, 0).v[0], z.v[0]);
  REQUIRE_NE(sparccl_random_block(0, 0, 1, 0, 0).v[0], z.v[0]);
  REQUIRE_NE(sparccl_random_block(0, 0, 0, 1, 0).v[0], z.v[0]);
  REQUIRE_NE(sparccl_random_block(0, 0, 0, 0, 1).v[0], z.v[0]);
}
END_TEST

START_TEST(test_uniform_range) {
  uint64_t rs = 11;
  int n;
  REQUIRE(sparccl_uniform(0) == ldexp(1.0, -32));
  REQUIRE(sparccl_uniform(0xffffffffu) == 1.0);
  REQUIRE(sparccl_uniform(1) == ldexp(2.0, -32));
  for (n = 0; n < 10000; n++) {
    uint32_t w = (uint32_t)test_random_u64(&rs);
    double u = sparccl_uniform(w);
    REQUIRE(u == ldexp((double)w + 1.0, -32));
    REQUIRE(u > 0.0 && u <= 1.0);
  }
}
END_TEST

/* ================================================== float16 / bfloat16 (SPEC 1, 4) */

/* Independent decoders.  The all-ones exponent with a zero mantissa decodes to the
 * power of two just past the largest finite value (65536, 2^128): the overflow point. */
static double ref_half_value(uint32_t h) {
  uint32_t e = (h >> 10) & 31u, m = h & 1023u;
  double v = e == 0 ? ldexp((double)m, -24) : ldexp((double)(1024u + m), (int)e - 25);
  return (h & 0x8000u) ? -v : v;
}
static double ref_bf16_value(uint32_t b) {
  uint32_t e = (b >> 7) & 255u, m = b & 127u;
  double v = e == 0 ? ldexp((double)m, -133) : ldexp((double)(128u + m), (int)e - 134);
  return (b & 0x8000u) ? -v : v;
}

/* Round |f| to the nearest of the magnitudes value(0) < ... < value(top) (top = the
 * overflow point), ties to the even pattern, by binary search.  Differences are exact in
 * double.  Returns the pattern with f's sign; top means overflow. */
static uint32_t ref_round(float f, double (*value)(uint32_t), uint32_t top, uint32_t maxFinite,
                          int saturate) {
  uint32_t sign = signbit(f) ? 0x8000u : 0u, lo = 0, hi = top, r;
  double a = fabs((double)f);
  if (isinf(f)) return sign | top;
  if (a >= value(top)) {
    r = top;
  } else {
    /* invariant: value(lo) <= a < value(hi) */
    while (hi - lo > 1) {
      uint32_t mid = lo + (hi - lo) / 2;
      if (value(mid) <= a) lo = mid; else hi = mid;
    }
    if (value(lo) == a) {
      r = lo;
    } else {
      double dlo = a - value(lo), dhi = value(hi) - a;
      r = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1u) ? hi : lo);
    }
  }
  if (r == top && saturate) r = maxFinite;
  return sign | r;
}
static uint16_t ref_float_to_half(float f, int sat) {
  return (uint16_t)ref_round(f, ref_half_value, 0x7c00u, 0x7bffu, sat);
}
static uint16_t ref_float_to_bf16(float f, int sat) {
  return (uint16_t)ref_round(f, ref_bf16_value, 0x7f80u, 0x7f7fu, sat);
}

static int half_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }
static int bf16_is_nan(uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x7fu) != 0; }

/* Check one float against the references, both overflow modes. */
static void check_half(float f) {
  int sat;
  for (sat = 0; sat < 2; sat++) {
    uint16_t got = sparccl_float_to_half(f, sat);
    if (isnan(f)) {
      REQUIRE_MSG(half_is_nan(got) && (got >> 15) == (fbits(f) >> 31),
                    "half(NaN 0x%08x) = 0x%04x", fbits(f), got);
    } else if (isinf(f) && sat) {
      /* saturation is for finite values; an Inf input may stay Inf */
      REQUIRE_MSG((got & 0x7fffu) == 0x7c00u || (got & 0x7fffu) == 0x7bffu, "0x%04x", got);
      REQUIRE_EQ(got >> 15, fbits(f) >> 31);
    } else {
      uint16_t want = ref_float_to_half(f, sat);
      REQUIRE_MSG(got == want, "half(%a = 0x%08x, sat %d) = 0x%04x, want 0x%04x", (double)f,
                    fbits(f), sat, got, want);
    }
  }
}
static void check_bf16(float f) {
  int sat;
  for (sat = 0; sat < 2; sat++) {
    uint16_t got = sparccl_float_to_bfloat16(f, sat);
    if (isnan(f)) {
      REQUIRE_MSG(bf16_is_nan(got) && (got >> 15) == (fbits(f) >> 31),
                    "bf16(NaN 0x%08x) = 0x%04x", fbits(f), got);
    } else if (isinf(f) && sat) {
      REQUIRE_MSG((got & 0x7fffu) == 0x7f80u || (got & 0x7fffu) == 0x7f7fu, "0x%04x", got);
      REQUIRE_EQ(got >> 15, fbits(f) >> 31);
    } else {
      uint16_t want = ref_float_to_bf16(f, sat);
      REQUIRE_MSG(got == want, "bf16(%a = 0x%08x, sat %d) = 0x%04x, want 0x%04x", (double)f,
                    fbits(f), sat, got, want);
    }
  }
}

START_TEST(test_half_decode_all_patterns) {
  uint32_t h;
  for (h = 0; h < 65536u; h++) {
    float f = sparccl_half_to_float((uint16_t)h);
    if (half_is_nan((uint16_t)h)) {
      REQUIRE_MSG(isnan(f), "0x%04x", h);
      REQUIRE_EQ(fbits(f) >> 31, h >> 15);
    } else if ((h & 0x7fffu) == 0x7c00u) {
      REQUIRE(isinf(f) && (signbit(f) != 0) == ((h >> 15) != 0));
    } else {
      double want = ref_half_value(h);
      REQUIRE_MSG(fbits(f) == fbits((float)want), "half 0x%04x -> %a, want %a", h, (double)f,
                    want);
    }
  }
}
END_TEST

START_TEST(test_half_round_trip_all_patterns) {
  uint32_t h;
  int sat;
  for (h = 0; h < 65536u; h++) {
    float f = sparccl_half_to_float((uint16_t)h);
    for (sat = 0; sat < 2; sat++) {
      uint16_t back = sparccl_float_to_half(f, sat);
      if (half_is_nan((uint16_t)h))
        REQUIRE_MSG(half_is_nan(back) && (back >> 15) == (h >> 15), "0x%04x -> 0x%04x", h, back);
      else if ((h & 0x7fffu) == 0x7c00u && sat)
        REQUIRE_EQ(back >> 15, h >> 15);
      else
        REQUIRE_MSG(back == h, "0x%04x -> %a -> 0x%04x (sat %d)", h, (double)f, back, sat);
    }
  }
}
END_TEST

/* Every representable half, the midpoints to its neighbours (ties), and the floats
 * right beside them. */
START_TEST(test_half_rounding_neighbours) {
  uint32_t h;
  for (h = 0; h < 0x7c00u; h++) {
    double v = ref_half_value(h), next = ref_half_value(h + 1);
    float fv = (float)v, mid = (float)((v + next) / 2.0);
    float cases[6];
    int c, s;
    REQUIRE((double)mid == (v + next) / 2.0); /* the midpoint is a float */
    cases[0] = fv;
    cases[1] = nextafterf(fv, INFINITY);
    cases[2] = nextafterf(fv, -INFINITY);
    cases[3] = mid;
    cases[4] = nextafterf(mid, INFINITY);
    cases[5] = nextafterf(mid, -INFINITY);
    for (c = 0; c < 6; c++)
      for (s = 0; s < 2; s++) check_half(s ? -cases[c] : cases[c]);
  }
}
END_TEST

START_TEST(test_half_edge_cases) {
  REQUIRE_EQ(sparccl_float_to_half(65504.0f, 0), 0x7bffu);
  REQUIRE_EQ(sparccl_float_to_half(65519.99f, 0), 0x7bffu);
  REQUIRE_EQ(sparccl_float_to_half(65519.99f, 1), 0x7bffu);
  REQUIRE_EQ(sparccl_float_to_half(65520.0f, 0), 0x7c00u);
  REQUIRE_EQ(sparccl_float_to_half(65520.0f, 1), 0x7bffu);
  REQUIRE_EQ(sparccl_float_to_half(-65520.0f, 0), 0xfc00u);
  REQUIRE_EQ(sparccl_float_to_half(-65520.0f, 1), 0xfbffu);
  REQUIRE_EQ(sparccl_float_to_half(1e30f, 1), 0x7bffu);
  REQUIRE_EQ(sparccl_float_to_half(FLT_MAX, 0), 0x7c00u);
  REQUIRE_EQ(sparccl_float_to_half(-FLT_MAX, 1), 0xfbffu);
  REQUIRE_EQ(sparccl_float_to_half(INFINITY, 0), 0x7c00u);
  REQUIRE_EQ(sparccl_float_to_half(-INFINITY, 0), 0xfc00u);
  REQUIRE_EQ(sparccl_float_to_half(0.0f, 0), 0x0000u);
  REQUIRE_EQ(sparccl_float_to_half(-0.0f, 0), 0x8000u);
  REQUIRE_EQ(sparccl_float_to_half(-0.0f, 1), 0x8000u);
  /* 2^-25 is the tie between 0 and the smallest subnormal 2^-24: to even, 0 */
  REQUIRE_EQ(sparccl_float_to_half(ldexpf(1.0f, -25), 0), 0x0000u);
  REQUIRE_EQ(sparccl_float_to_half(-ldexpf(1.0f, -25), 0), 0x8000u);
  REQUIRE_EQ(sparccl_float_to_half(nextafterf(ldexpf(1.0f, -25), 1.0f), 0), 0x0001u);
  REQUIRE_EQ(sparccl_float_to_half(ldexpf(1.0f, -24), 0), 0x0001u);
  REQUIRE_EQ(sparccl_float_to_half(ldexpf(3.0f, -25), 0), 0x0002u); /* 1.5 -> 2 */
  REQUIRE_EQ(sparccl_float_to_half(ldexpf(5.0f, -25), 0), 0x0002u); /* 2.5 -> 2 */
  REQUIRE_EQ(sparccl_float_to_half(ldexpf(1.0f, -14), 0), 0x0400u);
  REQUIRE_EQ(sparccl_float_to_half(nextafterf(ldexpf(1.0f, -14), 0.0f), 0), 0x0400u);
  REQUIRE_EQ(sparccl_float_to_half(ldexpf(1.0f, -30), 0), 0x0000u);
  REQUIRE_EQ(sparccl_float_to_half(bitsf(1), 0), 0x0000u); /* float subnormal */
  /* ties in the normal range: 1 + 2^-11 -> 1, 1 + 3 * 2^-11 -> 1 + 2^-9 */
  REQUIRE_EQ(sparccl_float_to_half(1.0f + ldexpf(1.0f, -11), 0), 0x3c00u);
  REQUIRE_EQ(sparccl_float_to_half(1.0f + ldexpf(3.0f, -11), 0), 0x3c02u);
  REQUIRE_EQ(sparccl_float_to_half(nextafterf(1.0f + ldexpf(1.0f, -11), 2.0f), 0), 0x3c01u);
  REQUIRE_EQ(sparccl_float_to_half(2047.5f, 0), 0x6800u); /* 2047.5 -> 2048, even */
  REQUIRE_EQ(sparccl_float_to_half(2049.0f, 0), 0x6800u); /* tie -> 2048 */
  REQUIRE_EQ(sparccl_float_to_half(2051.0f, 0), 0x6802u); /* tie -> 2052 */
  REQUIRE_EQ(sparccl_float_to_half(1.0f, 0), 0x3c00u);
  REQUIRE_EQ(sparccl_float_to_half(-2.0f, 0), 0xc000u);
  /* NaN: stays NaN with its sign, also with a payload only in the low bits */
  REQUIRE(half_is_nan(sparccl_float_to_half(NAN, 0)));
  REQUIRE(half_is_nan(sparccl_float_to_half(bitsf(0x7f800001u), 1)));
  REQUIRE_EQ(sparccl_float_to_half(bitsf(0x7f800001u), 1) >> 15, 0u);
  REQUIRE(half_is_nan(sparccl_float_to_half(bitsf(0xff800001u), 0)));
  REQUIRE_EQ(sparccl_float_to_half(bitsf(0xff800001u), 0) >> 15, 1u);
  REQUIRE(half_is_nan(sparccl_float_to_half(bitsf(0xffc00000u), 1)));
  /* and the same through the reference */
  check_half(65519.99f);
  check_half(65520.0f);
  check_half(ldexpf(1.0f, -25));
  check_half(INFINITY);
  check_half(-INFINITY);
  check_half(bitsf(0x7f800001u));
}
END_TEST

START_TEST(test_half_random) {
  uint64_t rs = 0x1234;
  int n;
  for (n = 0; n < 200000; n++) {
    uint64_t r = test_random_u64(&rs);
    /* all bit patterns, and floats in and around the half range */
    check_half(bitsf((uint32_t)r));
    check_half(ldexpf(1.0f + (float)((r >> 32) & 0xffffff) * ldexpf(1.0f, -24),
                      (int)((r >> 56) % 48) - 30) * ((r >> 20) & 1 ? -1.0f : 1.0f));
  }
}
END_TEST

START_TEST(test_bf16_decode_and_round_trip_all_patterns) {
  uint32_t b;
  int sat;
  for (b = 0; b < 65536u; b++) {
    float f = sparccl_bfloat16_to_float((uint16_t)b);
    if (bf16_is_nan((uint16_t)b)) {
      REQUIRE(isnan(f));
      REQUIRE_EQ(fbits(f) >> 31, b >> 15);
    } else if ((b & 0x7fffu) == 0x7f80u) {
      REQUIRE(isinf(f) && (signbit(f) != 0) == ((b >> 15) != 0));
    } else {
      REQUIRE_MSG(fbits(f) == fbits((float)ref_bf16_value(b)), "bf16 0x%04x -> %a", b,
                    (double)f);
    }
    for (sat = 0; sat < 2; sat++) {
      uint16_t back = sparccl_float_to_bfloat16(f, sat);
      if (bf16_is_nan((uint16_t)b))
        REQUIRE_MSG(bf16_is_nan(back) && (back >> 15) == (b >> 15), "0x%04x -> 0x%04x", b, back);
      else if ((b & 0x7fffu) == 0x7f80u && sat)
        REQUIRE_EQ(back >> 15, b >> 15);
      else
        REQUIRE_MSG(back == b, "0x%04x -> 0x%04x (sat %d)", b, back, sat);
    }
  }
}
END_TEST

START_TEST(test_bf16_rounding_neighbours) {
  uint32_t b;
  for (b = 0; b < 0x7f80u; b++) {
    double v = ref_bf16_value(b), next = ref_bf16_value(b + 1);
    float fv = (float)v, mid = (float)((v + next) / 2.0);
    float cases[6];
    int c, s;
    REQUIRE((double)mid == (v + next) / 2.0);
    cases[0] = fv;
    cases[1] = nextafterf(fv, INFINITY);
    cases[2] = nextafterf(fv, -INFINITY);
    cases[3] = mid;
    cases[4] = nextafterf(mid, INFINITY);
    cases[5] = nextafterf(mid, -INFINITY);
    for (c = 0; c < 6; c++)
      for (s = 0; s < 2; s++) check_bf16(s ? -cases[c] : cases[c]);
  }
}
END_TEST

START_TEST(test_bf16_edge_cases_and_random) {
  uint64_t rs = 99;
  int n;
  REQUIRE_EQ(sparccl_float_to_bfloat16(1.0f, 0), 0x3f80u);
  REQUIRE_EQ(sparccl_float_to_bfloat16(bitsf(0x3f808000u), 0), 0x3f80u); /* tie, even */
  REQUIRE_EQ(sparccl_float_to_bfloat16(bitsf(0x3f818000u), 0), 0x3f82u); /* tie, odd */
  REQUIRE_EQ(sparccl_float_to_bfloat16(bitsf(0x3f808001u), 0), 0x3f81u);
  REQUIRE_EQ(sparccl_float_to_bfloat16(bitsf(0x3f807fffu), 0), 0x3f80u);
  REQUIRE_EQ(sparccl_float_to_bfloat16(FLT_MAX, 0), 0x7f80u); /* rounds past the top */
  REQUIRE_EQ(sparccl_float_to_bfloat16(FLT_MAX, 1), 0x7f7fu);
  REQUIRE_EQ(sparccl_float_to_bfloat16(-FLT_MAX, 0), 0xff80u);
  REQUIRE_EQ(sparccl_float_to_bfloat16(-FLT_MAX, 1), 0xff7fu);
  REQUIRE_EQ(sparccl_float_to_bfloat16(bitsf(0x7f7f8000u), 0), 0x7f80u); /* tie to Inf */
  REQUIRE_EQ(sparccl_float_to_bfloat16(bitsf(0x7f7f8000u), 1), 0x7f7fu);
  REQUIRE_EQ(sparccl_float_to_bfloat16(bitsf(0x7f7f7fffu), 0), 0x7f7fu);
  REQUIRE_EQ(sparccl_float_to_bfloat16(INFINITY, 0), 0x7f80u);
  REQUIRE_EQ(sparccl_float_to_bfloat16(-INFINITY, 0), 0xff80u);
  REQUIRE_EQ(sparccl_float_to_bfloat16(-0.0f, 1), 0x8000u);
  REQUIRE_EQ(sparccl_float_to_bfloat16(bitsf(0x00008000u), 0), 0x0000u); /* subnormal tie */
  REQUIRE_EQ(sparccl_float_to_bfloat16(bitsf(0x00018000u), 0), 0x0002u);
  REQUIRE(bf16_is_nan(sparccl_float_to_bfloat16(bitsf(0x7f800001u), 0)));
  REQUIRE(bf16_is_nan(sparccl_float_to_bfloat16(bitsf(0x7f800001u), 1)));
  REQUIRE(bf16_is_nan(sparccl_float_to_bfloat16(bitsf(0xffffffffu), 1)));
  REQUIRE_EQ(sparccl_float_to_bfloat16(bitsf(0xff800001u), 0) >> 15, 1u);
  for (n = 0; n < 200000; n++) check_bf16(bitsf((uint32_t)test_random_u64(&rs)));
}
END_TEST

/* The wire helpers agree with the conversions (SPEC 4: nearest even, saturated). */
START_TEST(test_wire_round_saturates) {
  REQUIRE(sparccl_wire_round(1e6f, SPARCCL_DT_FLOAT16) == 65504.0f);
  REQUIRE(sparccl_wire_round(-1e6f, SPARCCL_DT_FLOAT16) == -65504.0f);
  REQUIRE(sparccl_wire_round(FLT_MAX, SPARCCL_DT_BFLOAT16) == bitsf(0x7f7f0000u));
  REQUIRE(sparccl_wire_round(1e6f, SPARCCL_DT_FLOAT32) == 1e6f);
  REQUIRE(sparccl_wire_round(1.0f + ldexpf(3.0f, -11), SPARCCL_DT_FLOAT16) ==
            1.0f + ldexpf(1.0f, -9));
  {
    uint16_t out[2];
    sparccl_store(out, 0, SPARCCL_DT_FLOAT16, 1e6f); /* the output: overflow is Inf */
    sparccl_store(out, 1, SPARCCL_DT_BFLOAT16, -FLT_MAX);
    REQUIRE_EQ(out[0], 0x7c00u);
    REQUIRE_EQ(out[1], 0xff80u);
    sparccl_wire_store(out, 0, SPARCCL_DT_FLOAT16, 1e6f);
    sparccl_wire_store(out, 1, SPARCCL_DT_BFLOAT16, -FLT_MAX);
    REQUIRE_EQ(out[0], 0x7bffu);
    REQUIRE_EQ(out[1], 0xff7fu);
  }
}
END_TEST

/* ===================================================== log and exp (SPEC 3, 3a) */

/* Distance in units in the last place, via the monotone integer image of a double. */
static int64_t ord64(double x) {
  uint64_t b = dbits(x);
  return (b >> 63) ? -(int64_t)(b & 0x7fffffffffffffffull) : (int64_t)b;
}
static uint64_t ulps(double a, double b) {
  int64_t d = ord64(a) - ord64(b);
  return d < 0 ? (uint64_t)-d : (uint64_t)d;
}

static void check_log(double x, long* exact) {
  double got = sparccl_log(x), want = log(x);
  REQUIRE_MSG(ulps(got, want) <= 1, "log(%a) = %a, libm %a", x, got, want);
  if (dbits(got) == dbits(want)) ++*exact;
}
static void check_exp(double x, long* exact) {
  double got = sparccl_exp(x), want = exp(x);
  REQUIRE_MSG(ulps(got, want) <= 1, "exp(%a) = %a, libm %a", x, got, want);
  if (dbits(got) == dbits(want)) ++*exact;
}

START_TEST(test_log_uniform_sweep) {
  static const uint32_t words[] = {0u, 1u, 2u, 3u, 7u, 0xffu, 0xffffu, 0x7fffffffu, 0x80000000u,
                                   0xbfffffffu, 0xfffffffdu, 0xfffffffeu, 0xffffffffu};
  uint64_t rs = 5;
  long exact = 0, total = 0;
  size_t j;
  uint32_t t;
  for (j = 0; j < sizeof(words) / sizeof(words[0]); j++, total++)
    check_log(sparccl_uniform(words[j]), &exact);
  for (t = 0; t < 20000; t++, total += 2) { /* u near 1 (the |f| < 2^-20 path) and near 0 */
    check_log(sparccl_uniform(0xffffffffu - t), &exact);
    check_log(sparccl_uniform(t), &exact);
  }
  for (t = 0; t < 300000; t++, total++)
    check_log(sparccl_uniform((uint32_t)test_random_u64(&rs)), &exact);
  REQUIRE(sparccl_log(sparccl_uniform(0)) == -32.0 * 0.69314718055994530942);
  REQUIRE_MSG(exact * 100 >= total * 85, "only %ld of %ld log values match libm", exact, total);
}
END_TEST

START_TEST(test_log_general_sweep) {
  uint64_t rs = 6;
  long exact = 0;
  int t;
  for (t = 0; t < 200000; t++) {
    uint64_t b = test_random_u64(&rs) & 0x7fffffffffffffffull;
    if ((b >> 52) == 0x7ff) continue;
    if (b == 0) continue;
    check_log(bitsd(b), &exact); /* every binade, subnormals included */
  }
  for (t = -1074; t <= 1023; t++) check_log(ldexp(1.0, t), &exact);
  check_log(DBL_MAX, &exact);
  check_log(DBL_MIN, &exact);
  check_log(bitsd(1), &exact);
  check_log(nextafter(1.0, 2.0), &exact);
  check_log(nextafter(1.0, 0.0), &exact);
}
END_TEST

START_TEST(test_exp_sweep) {
  uint64_t rs = 7;
  long exact = 0, total = 0;
  int t;
  for (t = 0; t < 300000; t++, total++) {
    double r = (double)(test_random_u64(&rs) >> 11) * ldexp(1.0, -53);
    check_exp(-745.0 * r, &exact);
  }
  for (t = 0; t < 50000; t++, total += 2) { /* small |x|, the reduction boundaries, subnormal results */
    double r = (double)(test_random_u64(&rs) >> 11) * ldexp(1.0, -53);
    check_exp(-ldexp(r, -(int)(test_random_u64(&rs) % 40)), &exact);
    check_exp(-708.0 - 37.0 * r, &exact);
  }
  for (t = 0; t < 20000; t++, total++) { /* a few positives, up to the overflow threshold */
    double r = (double)(test_random_u64(&rs) >> 11) * ldexp(1.0, -53);
    check_exp(709.78 * r, &exact);
  }
  for (t = 1; t <= 745; t++, total += 2) {
    check_exp(-(double)t, &exact);
    check_exp(-(double)t + 0.5, &exact);
  }
  check_exp(0.5 * 0.6931471805599453, &exact);
  check_exp(-0.5 * 0.6931471805599453, &exact);
  check_exp(1.5 * 0.6931471805599453, &exact);
  check_exp(-1.5 * 0.6931471805599453, &exact);
  check_exp(ldexp(1.0, -28), &exact);
  check_exp(-ldexp(1.0, -28), &exact);
  check_exp(709.782712893384, &exact);
  check_exp(-745.1332191019411, &exact);
  check_exp(-745.0, &exact);
  REQUIRE_MSG(exact * 100 >= total * 85, "only %ld of %ld exp values match libm", exact, total);
}
END_TEST

START_TEST(test_log_exp_special_values) {
  double r;
  r = sparccl_log(1.0);
  REQUIRE(r == 0.0 && !signbit(r));
  REQUIRE(isinf(sparccl_log(0.0)) && sparccl_log(0.0) < 0);
  REQUIRE(isinf(sparccl_log(-0.0)) && sparccl_log(-0.0) < 0);
  REQUIRE(isnan(sparccl_log(-1.0)));
  REQUIRE(isnan(sparccl_log(-INFINITY)));
  REQUIRE(isnan(sparccl_log(NAN)));
  REQUIRE(isnan(sparccl_log(-ldexp(1.0, -1070))));
  REQUIRE(isinf(sparccl_log(INFINITY)) && sparccl_log(INFINITY) > 0);
  REQUIRE(sparccl_log(2.0) == 0.69314718055994530942);
  REQUIRE(sparccl_exp(0.0) == 1.0);
  REQUIRE(sparccl_exp(-0.0) == 1.0);
  r = sparccl_exp(-INFINITY);
  REQUIRE(r == 0.0 && !signbit(r));
  REQUIRE(isinf(sparccl_exp(INFINITY)) && sparccl_exp(INFINITY) > 0);
  REQUIRE(isnan(sparccl_exp(NAN)));
  REQUIRE(isnan(sparccl_exp(-NAN)));
  REQUIRE(isinf(sparccl_exp(710.0)));
  REQUIRE(isinf(sparccl_exp(1e300)));
  REQUIRE(sparccl_exp(-746.0) == 0.0);
  REQUIRE(sparccl_exp(-1e300) == 0.0);
  REQUIRE(ulps(sparccl_exp(1.0), 2.7182818284590452354) <= 1);
  REQUIRE(ulps(sparccl_exp(-1.0), 0.36787944117144232160) <= 1);
  REQUIRE(ulps(sparccl_exp(100.0), 2.6881171418161356e43) <= 1);
}
END_TEST

/* ================================================================ k rule (SPEC 1) */

START_TEST(test_layer_k) {
  static const double densities[] = {1e-300, 1e-9, 0.001, 0.01, 0.0137, 0.1, 0.25, 1.0 / 3.0,
                                     0.5, 0.7, 0.999, 0.9999999, 1.0};
  uint64_t rs = 3;
  size_t j;
  int t;
  REQUIRE_EQ(sparccl_layer_k(1, 1e-9), 1);
  REQUIRE_EQ(sparccl_layer_k(1, 0.5), 1);
  REQUIRE_EQ(sparccl_layer_k(1, 1.0), 1);
  REQUIRE_EQ(sparccl_layer_k(100, 1.0), 100);
  REQUIRE_EQ(sparccl_layer_k(12345, 1.0), 12345);
  REQUIRE_EQ(sparccl_layer_k(100, 0.01), 1);
  REQUIRE_EQ(sparccl_layer_k(101, 0.01), 2);
  REQUIRE_EQ(sparccl_layer_k(200, 0.01), 2);
  REQUIRE_EQ(sparccl_layer_k(1000000, 1e-12), 1);
  REQUIRE_EQ(sparccl_layer_k(8, 0.25), 2);
  REQUIRE_EQ(sparccl_layer_k(9, 0.25), 3);
  REQUIRE_EQ(sparccl_layer_k(30, 0.1), 3);  /* 0.1 * 30 rounds to 3.0 in double */
  REQUIRE_EQ(sparccl_layer_k(100, 0.07), 8); /* 0.07 * 100 = 7.000000000000001 */
  REQUIRE_EQ(sparccl_layer_k(100, 0.29), 29); /* 28.999999999999996 */
  REQUIRE_EQ(sparccl_layer_k(10, 0.1), 1);
  REQUIRE_EQ(sparccl_layer_k(3, 0.9999999), 3);
  REQUIRE_EQ(sparccl_layer_k(4294967295u, 1.0), 4294967295u);
  REQUIRE_EQ(sparccl_layer_k(4294967295u, 0.5), 2147483648u);
  for (j = 0; j < sizeof(densities) / sizeof(densities[0]); j++) {
    size_t d;
    for (d = 1; d < 3000; d++) {
      size_t k = sparccl_layer_k(d, densities[j]);
      double want = ceil(densities[j] * (double)d);
      if (want < 1.0) want = 1.0;
      if (want > (double)d) want = (double)d;
      REQUIRE_MSG((double)k == want, "d %zu density %g: k %zu, want %g", d, densities[j], k,
                    want);
      REQUIRE(k >= 1 && k <= d);
    }
  }
  for (t = 0; t < 100000; t++) {
    size_t d = 1 + (size_t)(test_random_u64(&rs) % 4294967295u);
    double density = (double)(test_random_u64(&rs) >> 11) * ldexp(1.0, -53);
    size_t k;
    double want;
    if (density == 0.0) density = 1.0;
    k = sparccl_layer_k(d, density);
    want = ceil(density * (double)d);
    if (want < 1.0) want = 1.0;
    if (want > (double)d) want = (double)d;
    REQUIRE_MSG((double)k == want, "d %zu density %a: k %zu", d, density, k);
  }
}
END_TEST

/* ======================================================= keys and their order (SPEC 1) */

static int cmp_float(const void* a, const void* b) {
  float x = *(const float*)a, y = *(const float*)b;
  return x < y ? -1 : x > y ? 1 : 0;
}
static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y ? 1 : 0;
}
static int cmp_abs_float(const void* a, const void* b) {
  float x = fabsf(*(const float*)a), y = fabsf(*(const float*)b);
  return x < y ? -1 : x > y ? 1 : 0;
}

#define NKEYS 20000

START_TEST(test_ordered_float_monotone) {
  float* v = malloc(NKEYS * sizeof(float));
  uint64_t rs = 21;
  size_t n = 0, i;
  static const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, FLT_MAX, -FLT_MAX, FLT_MIN,
                                  -FLT_MIN, 1.0f, -1.0f, 1.0f, -1.0f, 2.5f, 2.5f};
  for (i = 0; i < sizeof(special) / sizeof(special[0]); i++) v[n++] = special[i];
  v[n++] = bitsf(1);
  v[n++] = bitsf(0x80000001u);
  while (n < NKEYS) {
    uint64_t r = test_random_u64(&rs);
    float f = (r & 1) ? bitsf((uint32_t)(r >> 32)) : test_random_normal(&rs);
    if (isnan(f)) continue;
    v[n++] = f;
  }
  qsort(v, n, sizeof(float), cmp_float);
  REQUIRE(v[0] == -INFINITY);
  for (i = 1; i < n; i++) {
    uint32_t a = sparccl_ordered_float(v[i - 1]), b = sparccl_ordered_float(v[i]);
    if (v[i - 1] < v[i])
      REQUIRE_MSG(a < b, "%a < %a but keys 0x%08x >= 0x%08x", (double)v[i - 1], (double)v[i], a, b);
    else
      REQUIRE_MSG(a == b, "%a == %a but keys 0x%08x != 0x%08x", (double)v[i - 1], (double)v[i], a, b);
  }
  REQUIRE_EQ(sparccl_ordered_float(-0.0f), sparccl_ordered_float(0.0f));
  REQUIRE_LT(sparccl_ordered_float(-INFINITY), sparccl_ordered_float(-FLT_MAX));
  REQUIRE_LT(sparccl_ordered_float(FLT_MAX), sparccl_ordered_float(INFINITY));
  REQUIRE_LT(sparccl_ordered_float(bitsf(0x80000001u)), sparccl_ordered_float(0.0f));
  REQUIRE_LT(sparccl_ordered_float(0.0f), sparccl_ordered_float(bitsf(1)));
  free(v);
}
END_TEST

START_TEST(test_ordered_double_monotone) {
  double* v = malloc(NKEYS * sizeof(double));
  uint64_t rs = 22;
  size_t n = 0, i;
  static const double special[] = {0.0, -0.0, INFINITY, -INFINITY, DBL_MAX, -DBL_MAX, DBL_MIN,
                                   -DBL_MIN, 1.0, -1.0, -1.0, -22.18, -22.18};
  for (i = 0; i < sizeof(special) / sizeof(special[0]); i++) v[n++] = special[i];
  v[n++] = bitsd(1);
  v[n++] = bitsd(0x8000000000000001ull);
  while (n < NKEYS) {
    uint64_t r = test_random_u64(&rs);
    double f = (r & 1) ? bitsd(test_random_u64(&rs))
                       : log(sparccl_uniform((uint32_t)(r >> 32))) / (double)test_random_normal(&rs);
    if (isnan(f)) continue;
    v[n++] = f;
  }
  qsort(v, n, sizeof(double), cmp_double);
  REQUIRE(v[0] == -INFINITY);
  for (i = 1; i < n; i++) {
    uint64_t a = sparccl_ordered_double(v[i - 1]), b = sparccl_ordered_double(v[i]);
    if (v[i - 1] < v[i])
      REQUIRE_MSG(a < b, "%a < %a but keys not increasing", v[i - 1], v[i]);
    else
      REQUIRE_MSG(a == b, "%a == %a but keys differ", v[i - 1], v[i]);
  }
  REQUIRE(sparccl_ordered_double(-0.0) == sparccl_ordered_double(0.0));
  REQUIRE(sparccl_ordered_double(-INFINITY) < sparccl_ordered_double(-DBL_MAX));
  REQUIRE(sparccl_ordered_double(DBL_MAX) < sparccl_ordered_double(INFINITY));
  free(v);
}
END_TEST

START_TEST(test_key_magnitude_monotone) {
  float* v = malloc(NKEYS * sizeof(float));
  uint64_t rs = 23;
  size_t n = 0, i;
  v[n++] = 0.0f;
  v[n++] = -0.0f;
  v[n++] = INFINITY;
  v[n++] = -INFINITY;
  v[n++] = 3.0f;
  v[n++] = -3.0f;
  while (n < NKEYS) {
    uint64_t r = test_random_u64(&rs);
    float f = (r & 1) ? bitsf((uint32_t)(r >> 32)) : test_random_normal(&rs);
    if (isnan(f)) continue;
    v[n++] = f;
  }
  qsort(v, n, sizeof(float), cmp_abs_float);
  for (i = 1; i < n; i++) {
    uint32_t a = sparccl_key_magnitude(v[i - 1]), b = sparccl_key_magnitude(v[i]);
    if (fabsf(v[i - 1]) < fabsf(v[i]))
      REQUIRE_MSG(a < b, "|%a| < |%a| but keys not increasing", (double)v[i - 1], (double)v[i]);
    else
      REQUIRE_MSG(a == b, "|%a| == |%a| but keys differ", (double)v[i - 1], (double)v[i]);
    REQUIRE_EQ(sparccl_key_magnitude(-v[i]), b);
  }
  /* the 32-bit key rules (SPEC 1 table) */
  REQUIRE_EQ(sparccl_key32(SPARCCL_TOPK, -2.0f, 1.0f, 7), sparccl_key_magnitude(2.0f));
  REQUIRE_EQ(sparccl_key32(SPARCCL_RANDK, -2.0f, 1.0f, 0xdeadbeefu), 0xdeadbeefu);
  REQUIRE_EQ(sparccl_key32(SPARCCL_IMPK, -2.0f, 3.0f, 7), sparccl_key_magnitude(6.0f));
  REQUIRE_EQ(sparccl_key32(SPARCCL_IMPK_SELECT, -2.0f, 0.5f, 7),
                    sparccl_ordered_float(0.5f));
  REQUIRE_LT(sparccl_key32(SPARCCL_IMPK_SELECT, 9.0f, -0.5f, 7),
                    sparccl_key32(SPARCCL_IMPK_SELECT, 0.0f, 0.25f, 7));
  free(v);
}
END_TEST

START_TEST(test_key_impk_random) {
  /* the ordered image of -Inf, computed by hand: ~0xfff0000000000000 */
  const uint64_t minusInf = 0x000fffffffffffffull;
  uint64_t rs = 24;
  int t;
  REQUIRE(sparccl_key_impk_random(12345u, 0.0f) == minusInf);
  REQUIRE(sparccl_key_impk_random(12345u, -0.0f) == minusInf);
  REQUIRE(sparccl_key_impk_random(0xffffffffu, -1.0f) == minusInf);
  REQUIRE(sparccl_key_impk_random(0u, -FLT_MAX) == minusInf);
  REQUIRE(sparccl_key_impk_random(0u, -INFINITY) == minusInf);
  REQUIRE(sparccl_ordered_double(-INFINITY) == minusInf);
  /* u = 1: log(u) / w = +0 for every w > 0; the ordered image of +0 is 0x8000000000000000 */
  REQUIRE(sparccl_key_impk_random(0xffffffffu, 1.0f) == 0x8000000000000000ull);
  REQUIRE(sparccl_key_impk_random(0xffffffffu, 1e-30f) == 0x8000000000000000ull);
  /* the key is the ordered image of the shared log (never libm) over w, in double */
  REQUIRE(sparccl_key_impk_random(0u, 2.0f) ==
            sparccl_ordered_double(sparccl_log(ldexp(1.0, -32)) / 2.0));
  for (t = 0; t < 20000; t++) {
    uint32_t word = (uint32_t)test_random_u64(&rs);
    float w = (float)(test_random_u64(&rs) >> 40) * ldexpf(1.0f, -20) + ldexpf(1.0f, -30);
    uint64_t key = sparccl_key_impk_random(word, w);
    REQUIRE(key == sparccl_ordered_double(sparccl_log(sparccl_uniform(word)) / (double)w));
    REQUIRE(key > minusInf);
    /* larger word (larger u) -> larger key; larger weight -> larger key */
    if (word < 0xffffffffu) REQUIRE(sparccl_key_impk_random(word + 1, w) >= key);
    if (word < 0xfffffff0u) REQUIRE(sparccl_key_impk_random(word + 16, w) > key);
    REQUIRE(sparccl_key_impk_random(word, w * 2.0f) >= key);
    REQUIRE(sparccl_key_impk_random(word, -w) == minusInf);
  }
}
END_TEST

/* ============================================================= blocked sum (SPEC 3a) */

static double blocked_sum_stream(const double* v, size_t n) {
  sparccl_blocked_sum_t s;
  size_t i;
  sparccl_blocked_sum_init(&s);
  for (i = 0; i < n; i++) sparccl_blocked_sum_add(&s, v[i]);
  return sparccl_blocked_sum_result(&s);
}
static double ref_blocked_sum(const double* v, size_t n, size_t block) {
  double total = 0.0;
  size_t start, i;
  for (start = 0; start < n; start += block) {
    double b = 0.0;
    size_t end = start + block < n ? start + block : n;
    for (i = start; i < end; i++) b += v[i];
    total += b;
  }
  return total;
}
static double naive_sum(const double* v, size_t n) {
  double s = 0.0;
  size_t i;
  for (i = 0; i < n; i++) s += v[i];
  return s;
}

START_TEST(test_blocked_sum_matches_reference) {
  static const size_t sizes[] = {0, 1, 2, 4095, 4096, 4097, 8191, 8192, 3 * 4096 + 5};
  const size_t nmax = 3 * 4096 + 5;
  double* v = malloc(nmax * sizeof(double));
  uint64_t rs = 31;
  size_t i, j;
  /* large values that cancel, plus small ones: any other grouping rounds differently */
  for (i = 0; i < nmax; i++)
    v[i] = (double)((int64_t)test_random_u64(&rs) >> 4) +
           ldexp((double)test_random_normal(&rs), (int)(test_random_u64(&rs) % 60));
  for (j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
    double got = blocked_sum_stream(v, sizes[j]), want = ref_blocked_sum(v, sizes[j], 4096);
    REQUIRE_MSG(dbits(got) == dbits(want), "n %zu: %a, want %a", sizes[j], got, want);
  }
  REQUIRE(dbits(blocked_sum_stream(v, 0)) == dbits(0.0));
  REQUIRE(blocked_sum_stream(v, 1) == v[0]);
  /* the input does tell the groupings apart: block 4095 / 4097 / none give other sums */
  REQUIRE(ref_blocked_sum(v, nmax, 4096) != ref_blocked_sum(v, nmax, 4095));
  REQUIRE(ref_blocked_sum(v, nmax, 4096) != ref_blocked_sum(v, nmax, 4097));
  REQUIRE(ref_blocked_sum(v, nmax, 4096) != naive_sum(v, nmax));
  free(v);
}
END_TEST

START_TEST(test_blocked_sum_is_blocked) {
  /* 2^53 then 4095 zeros, then 4096 ones.  Sequentially every + 1 is a tie that rounds
   * back to 2^53; blocked, the ones sum to 4096 first and survive. */
  const size_t n = 8192;
  double* v = calloc(n, sizeof(double));
  size_t i;
  double got;
  v[0] = ldexp(1.0, 53);
  for (i = 4096; i < n; i++) v[i] = 1.0;
  got = blocked_sum_stream(v, n);
  REQUIRE(naive_sum(v, n) == ldexp(1.0, 53));
  REQUIRE_MSG(got == ldexp(1.0, 53) + 4096.0, "blocked sum %a", got);
  /* the absorber as the first element of block 1: each later 1 of that block is lost,
   * while block 0's ones were summed before they met it */
  for (i = 0; i < n; i++) v[i] = 1.0;
  v[4096] = ldexp(1.0, 60);
  got = blocked_sum_stream(v, n);
  REQUIRE_MSG(got == ldexp(1.0, 60) + 4096.0, "blocked sum %a", got);
  REQUIRE(ref_blocked_sum(v, n, 4097) != got); /* a block of 4097 would keep 8191 ones */
  free(v);
}
END_TEST

Suite* make_math_suite(void) {
  Suite* s = suite_create("math");
  TCase* tc;
  tc = tcase_create("philox");
  tcase_add_test(tc, test_philox_known_answers);
  tcase_add_test(tc, test_philox_counter_and_key_layout);
  tcase_add_test(tc, test_uniform_range);
  suite_add_tcase(s, tc);
  tc = tcase_create("float16 and bfloat16");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_half_decode_all_patterns);
  tcase_add_test(tc, test_half_round_trip_all_patterns);
  tcase_add_test(tc, test_half_rounding_neighbours);
  tcase_add_test(tc, test_half_edge_cases);
  tcase_add_test(tc, test_half_random);
  tcase_add_test(tc, test_bf16_decode_and_round_trip_all_patterns);
  tcase_add_test(tc, test_bf16_rounding_neighbours);
  tcase_add_test(tc, test_bf16_edge_cases_and_random);
  tcase_add_test(tc, test_wire_round_saturates);
  suite_add_tcase(s, tc);
  tc = tcase_create("log and exp");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_log_uniform_sweep);
  tcase_add_test(tc, test_log_general_sweep);
  tcase_add_test(tc, test_exp_sweep);
  tcase_add_test(tc, test_log_exp_special_values);
  suite_add_tcase(s, tc);
  tc = tcase_create("k rule and keys");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_layer_k);
  tcase_add_test(tc, test_ordered_float_monotone);
  tcase_add_test(tc, test_ordered_double_monotone);
  tcase_add_test(tc, test_key_magnitude_monotone);
  tcase_add_test(tc, test_key_impk_random);
  suite_add_tcase(s, tc);
  tc = tcase_create("blocked sum");
  tcase_add_test(tc, test_blocked_sum_matches_reference);
  tcase_add_test(tc, test_blocked_sum_is_blocked);
  suite_add_tcase(s, tc);
  return s;
}
