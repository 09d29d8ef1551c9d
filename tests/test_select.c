/*
 * The exact radix top-k of src/select.c (SPEC 1: the k largest keys, ties to the lower
 * index) against a sort: sizes from 1 to 1000003, k from 1 to d - 1, uniform keys, heavy
 * ties, all equal, zero, keys sharing their top digits, all-ones keys, and the keys the
 * library really makes (|x| of floats, impk_random's ordered doubles).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "core.h"
#include "select_stream.h"


enum {
  DIST_UNIFORM, DIST_FEW, DIST_EQUAL, DIST_ZERO, DIST_TOP11, DIST_TOP22, DIST_TOP22_FEW,
  DIST_ALMOST_ALL, DIST_MAX, DIST_MAX_MIX, DIST_REAL, DIST_ASCENDING, DIST_DESCENDING,
  DIST_OUTLIER, DIST_COUNT
};
static const char* const distNames[DIST_COUNT] = {
    "uniform", "few distinct", "all equal", "all zero", "top 11 bits shared",
    "top 22 bits shared", "top 22 bits shared, few low", "all but 3 low bits shared",
    "all max", "half max", "library keys", "ascending", "descending", "one huge outlier"};

/* Keys of one distribution, in the low `bits` bits of out. */
static void make_keys(int dist, int bits, size_t d, uint64_t seed, uint64_t* out) {
  const uint64_t mask = bits == 64 ? ~0ull : (1ull << bits) - 1u;
  uint64_t rs = seed * 0x9e3779b97f4a7c15ull + (uint64_t)dist * 131u + (uint64_t)bits;
  uint64_t vals[4], c = test_random_u64(&rs) & mask;
  size_t i;
  for (i = 0; i < 4; i++) vals[i] = test_random_u64(&rs) & mask;
  for (i = 0; i < d; i++) {
    uint64_t r = test_random_u64(&rs), k;
    switch (dist) {
      case DIST_UNIFORM: k = r; break;
      case DIST_FEW: k = vals[r % 4]; break;
      case DIST_EQUAL: k = c; break;
      case DIST_ZERO: k = 0; break;
      case DIST_TOP11: k = (c & ~(mask >> 11)) | (r & (mask >> 11)); break;
      case DIST_TOP22: k = (c & ~(mask >> 22)) | (r & (mask >> 22)); break;
      case DIST_TOP22_FEW: k = (c & ~(mask >> 22)) | (vals[r % 4] & 3u); break;
      case DIST_ALMOST_ALL: k = (c & ~7ull) | (r & 7u); break;
      case DIST_MAX: k = mask; break;
      case DIST_MAX_MIX: k = (r & 1) ? mask : r >> 1; break;
      case DIST_ASCENDING: k = (uint64_t)i * (mask / (d + 1)); break;
      case DIST_DESCENDING: k = (uint64_t)(d - i) * (mask / (d + 1)); break;
      case DIST_OUTLIER: k = i == d / 3 ? mask : (r & (mask >> 20)); break;
      default:
        if (bits == 32) { /* topk keys of a normal gradient, with some exact zeros */
          k = (r % 5 == 0) ? sparccl_key_magnitude(0.0f)
                           : sparccl_key_magnitude(test_random_normal(&rs));
        } else {          /* impk_random keys, a third of the weights zero (-Inf keys) */
          float w = (r % 3 == 0) ? 0.0f : (float)((r >> 40) % 1000) / 100.0f;
          k = sparccl_key_impk_random((uint32_t)(r >> 8), w);
        }
    }
    out[i] = k & mask;
  }
}

static int cmp_u64(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y ? 1 : 0;
}
typedef struct { uint64_t key; uint32_t index; } Pair;
static int cmp_pair(const void* a, const void* b) {
  const Pair* x = (const Pair*)a;
  const Pair* y = (const Pair*)b;
  if (x->key != y->key) return x->key > y->key ? -1 : 1; /* larger key first */
  return x->index < y->index ? -1 : x->index > y->index ? 1 : 0; /* then lower index */
}

/* The reference order: indices by key descending, ties by lower index.  The first k of
 * it are the selected set for every k. */
static void reference_order(const uint64_t* keys, int bits, size_t d, uint32_t* order) {
  size_t i;
  if (bits == 32) { /* (~key, index) packed in a uint64 sorts the same way, faster */
    uint64_t* packed = malloc(d * sizeof(uint64_t));
    REQUIRE(packed);
    for (i = 0; i < d; i++) packed[i] = ((uint64_t)(~(uint32_t)keys[i]) << 32) | (uint64_t)i;
    qsort(packed, d, sizeof(uint64_t), cmp_u64);
    for (i = 0; i < d; i++) order[i] = (uint32_t)packed[i];
    free(packed);
  } else {
    Pair* p = malloc(d * sizeof(Pair));
    REQUIRE(p);
    for (i = 0; i < d; i++) { p[i].key = keys[i]; p[i].index = (uint32_t)i; }
    qsort(p, d, sizeof(Pair), cmp_pair);
    for (i = 0; i < d; i++) order[i] = p[i].index;
    free(p);
  }
}

typedef struct {
  size_t d;
  int bits;
  uint32_t* keys32;
  uint64_t* keys64;
  uint32_t hist[SPARCCL_RADIX_BINS];
  uint32_t* candidates;
  uint32_t* order;   /* the reference order */
  uint32_t* rank;    /* rank[i] = position of index i in the reference order */
} Case;

static void case_init(Case* c, const uint64_t* keys, int bits, size_t d) {
  size_t i;
  memset(c, 0, sizeof(*c));
  c->d = d;
  c->bits = bits;
  c->candidates = malloc(d * sizeof(uint32_t));
  c->order = malloc(d * sizeof(uint32_t));
  c->rank = malloc(d * sizeof(uint32_t));
  REQUIRE(c->candidates && c->order && c->rank);
  /* as keyPass in src/compress.c: the first digit's histogram comes with the keys */
  if (bits == 32) {
    c->keys32 = malloc(d * sizeof(uint32_t));
    REQUIRE(c->keys32);
    for (i = 0; i < d; i++) {
      c->keys32[i] = (uint32_t)keys[i];
      c->hist[c->keys32[i] >> (32 - SPARCCL_RADIX_BITS)]++;
    }
  } else {
    c->keys64 = malloc(d * sizeof(uint64_t));
    REQUIRE(c->keys64);
    for (i = 0; i < d; i++) {
      c->keys64[i] = keys[i];
      c->hist[c->keys64[i] >> (64 - SPARCCL_RADIX_BITS)]++;
    }
  }
  reference_order(keys, bits, d, c->order);
  for (i = 0; i < d; i++) c->rank[c->order[i]] = (uint32_t)i;
}

static void case_free(Case* c) {
  free(c->keys32);
  free(c->keys64);
  free(c->candidates);
  free(c->order);
  free(c->rank);
}

/* Select k, expand (threshold, ties) as emitPass in src/compress.c does, and compare
 * with the first k of the reference order. */
static void check_k(const Case* c, size_t k, const char* what) {
  sparcclSelection_t sel;
  size_t i, n = 0, ties;
  /* poison the scratch: select must not depend on what it held */
  memset(c->candidates, 0xa5, c->d * sizeof(uint32_t));
  if (c->bits == 32) {
    uint32_t threshold;
    sel = sparcclSelect32(c->keys32, c->d, k, c->hist, c->candidates);
    REQUIRE_MSG(sel.threshold <= 0xffffffffull, "%s d %zu k %zu: threshold 0x%llx", what, c->d,
                  k, (unsigned long long)sel.threshold);
    threshold = (uint32_t)sel.threshold;
    ties = sel.ties;
    for (i = 0; i < c->d; i++) {
      int taken = c->keys32[i] > threshold || (c->keys32[i] == threshold && ties > 0 && ties--);
      int want = c->rank[i] < k;
      REQUIRE_MSG(taken == want,
                    "%s, 32-bit, d %zu k %zu: index %zu (key 0x%08x, reference rank %u) %s; "
                    "threshold 0x%08x ties %zu",
                    what, c->d, k, i, c->keys32[i], c->rank[i], taken ? "taken" : "missed",
                    threshold, sel.ties);
      n += (size_t)taken;
    }
  } else {
    sel = sparcclSelect64(c->keys64, c->d, k, c->hist, c->candidates);
    ties = sel.ties;
    for (i = 0; i < c->d; i++) {
      int taken = c->keys64[i] > sel.threshold ||
                  (c->keys64[i] == sel.threshold && ties > 0 && ties--);
      int want = c->rank[i] < k;
      REQUIRE_MSG(taken == want,
                    "%s, 64-bit, d %zu k %zu: index %zu (key 0x%016llx, reference rank %u) %s; "
                    "threshold 0x%016llx ties %zu",
                    what, c->d, k, i, (unsigned long long)c->keys64[i], c->rank[i],
                    taken ? "taken" : "missed", (unsigned long long)sel.threshold, sel.ties);
      n += (size_t)taken;
    }
  }
  REQUIRE_MSG(n == k, "%s d %zu k %zu: %zu selected", what, c->d, k, n);
  REQUIRE_MSG(ties == 0, "%s d %zu k %zu: %zu ties left unused", what, c->d, k, ties);
}

/* The streaming selection of src/select_stream.c as compress.c runs it: a strided sample,
 * its bound, the candidates at or above it, the exact top-k among them.  Where it applies
 * (the sample gives a bound and the candidates are between k and the cap), the set must be
 * the first k of the reference order; elsewhere compress.c falls back to check_k's path.
 * Returns whether it applied. */
static int check_stream(const Case* c, size_t k, const char* what) {
  size_t m = sparcclStreamSampleSize(c->d, k), j, n = 0, cap = 0, i;
  uint32_t *cand, *out, *scratch;
  int applied = 0;
  if (m == 0) return 0;
  cand = malloc(c->d * sizeof(uint32_t));
  out = malloc(k * sizeof(uint32_t));
  scratch = malloc(c->d * sizeof(uint32_t));
  REQUIRE(cand && out && scratch);
  memset(scratch, 0xa5, c->d * sizeof(uint32_t));
  if (c->bits == 32) {
    uint32_t* sample = malloc(m * sizeof(uint32_t));
    uint32_t* keys = malloc(c->d * sizeof(uint32_t));
    uint32_t bound;
    REQUIRE(sample && keys);
    for (j = 0; j < m; j++) sample[j] = c->keys32[sparcclStreamSampleIndex(c->d, m, j)];
    if (sparcclStreamBound32(sample, m, c->d, k, scratch, &bound, &cap)) {
      REQUIRE(bound > 0 && cap <= c->d / 2 && cap >= k);
      for (i = 0; i < c->d; i++)
        if (c->keys32[i] >= bound) { keys[n] = c->keys32[i]; cand[n++] = (uint32_t)i; }
      if (n >= k && n <= cap) {
        sparcclStreamAmong32(keys, cand, n, k, scratch, out);
        applied = 1;
      }
    }
    free(sample); free(keys);
  } else {
    uint64_t* sample = malloc(m * sizeof(uint64_t));
    uint64_t* keys = malloc(c->d * sizeof(uint64_t));
    uint64_t bound;
    REQUIRE(sample && keys);
    for (j = 0; j < m; j++) sample[j] = c->keys64[sparcclStreamSampleIndex(c->d, m, j)];
    if (sparcclStreamBound64(sample, m, c->d, k, scratch, &bound, &cap)) {
      REQUIRE(bound > 0 && cap <= c->d / 2 && cap >= k);
      for (i = 0; i < c->d; i++)
        if (c->keys64[i] >= bound) { keys[n] = c->keys64[i]; cand[n++] = (uint32_t)i; }
      if (n >= k && n <= cap) {
        sparcclStreamAmong64(keys, cand, n, k, scratch, out);
        applied = 1;
      }
    }
    free(sample); free(keys);
  }
  if (applied)
    for (j = 0; j < k; j++) {
      REQUIRE_MSG(c->rank[out[j]] < k && (j == 0 || out[j] > out[j - 1]),
                  "%s, %d-bit stream, d %zu k %zu (%zu candidates): set member %zu is index %u "
                  "(reference rank %u)", what, c->bits, c->d, k, n, j, out[j], c->rank[out[j]]);
    }
  free(cand); free(out); free(scratch);
  return applied;
}

/* k in {1, 2, d/100 + 1, d/2, d - 1} (every k < d for small d); k == d never reaches select. */
static void run_case(int dist, int bits, size_t d, uint64_t seed) {
  uint64_t* keys = calloc(d, sizeof(uint64_t));
  Case c;
  size_t ks[5], k, j;
  char what[96];
  REQUIRE(keys);
  make_keys(dist, bits, d, seed, keys);
  case_init(&c, keys, bits, d);
  snprintf(what, sizeof(what), "%s (seed %llu)", distNames[dist], (unsigned long long)seed);
  if (d <= 100) {
    for (k = 1; k < d; k++) check_k(&c, k, what);
  } else {
    ks[0] = 1; ks[1] = 2; ks[2] = d / 100 + 1; ks[3] = d / 2; ks[4] = d - 1;
    for (j = 0; j < 5; j++) {
      if (ks[j] < 1 || ks[j] >= d) continue;
      if (j > 0 && ks[j] == ks[j - 1]) continue;
      check_k(&c, ks[j], what);
      check_stream(&c, ks[j], what);
    }
    if (d > 1000) { /* the densities the library runs at: 1%, 0.1%, 5% */
      size_t more[3] = {(d + 99) / 100, (d + 999) / 1000, (d + 19) / 20};
      for (j = 0; j < 3; j++) check_stream(&c, more[j], what);
    }
  }
  case_free(&c);
  free(keys);
}

static const size_t smallSizes[] = {1, 2, 3, 5, 7, 13, 31, 100};

static void run_sizes(int bits, const size_t* sizes, size_t nsizes, int seeds) {
  size_t s;
  int dist, seed;
  for (s = 0; s < nsizes; s++)
    for (dist = 0; dist < DIST_COUNT; dist++)
      for (seed = 0; seed < seeds; seed++) run_case(dist, bits, sizes[s], (uint64_t)seed + 1);
}

START_TEST(test_select32_small) {
  run_sizes(32, smallSizes, sizeof(smallSizes) / sizeof(smallSizes[0]), 8);
}
END_TEST

START_TEST(test_select64_small) {
  run_sizes(64, smallSizes, sizeof(smallSizes) / sizeof(smallSizes[0]), 8);
}
END_TEST

START_TEST(test_select32_medium) {
  static const size_t sizes[] = {4096, 4097, 65537};
  run_sizes(32, sizes, 3, 2);
}
END_TEST

START_TEST(test_select64_medium) {
  static const size_t sizes[] = {4096, 4097, 65537};
  run_sizes(64, sizes, 3, 2);
}
END_TEST

/* A million keys: the distributions whose selection walks every digit, once each. */
static const int largeDists[] = {DIST_UNIFORM, DIST_FEW, DIST_EQUAL, DIST_TOP22,
                                 DIST_TOP22_FEW, DIST_MAX_MIX, DIST_REAL};

START_TEST(test_select32_large) {
  size_t j;
  for (j = 0; j < sizeof(largeDists) / sizeof(largeDists[0]); j++)
    run_case(largeDists[j], 32, 1000003, 77);
}
END_TEST

START_TEST(test_select64_large) {
  size_t j;
  for (j = 0; j < sizeof(largeDists) / sizeof(largeDists[0]); j++)
    run_case(largeDists[j], 64, 1000003, 78);
}
END_TEST

/* The streaming path must apply where it pays: uniform and library keys at 1% always
 * stream (a check that the fallback is not quietly taken everywhere). */
START_TEST(test_stream_applies) {
  static const int dists[2] = {DIST_UNIFORM, DIST_REAL};
  int bits, j;
  for (bits = 32; bits <= 64; bits += 32)
    for (j = 0; j < 2; j++) {
      uint64_t* keys = calloc(200003, sizeof(uint64_t));
      Case c;
      REQUIRE(keys);
      make_keys(dists[j], bits, 200003, 5, keys);
      case_init(&c, keys, bits, 200003);
      REQUIRE_MSG(check_stream(&c, 2001, distNames[dists[j]]), "%s, %d-bit: fell back",
                  distNames[dists[j]], bits);
      REQUIRE_MSG(check_stream(&c, 201, distNames[dists[j]]), "%s, %d-bit, 0.1%%: fell back",
                  distNames[dists[j]], bits);
      case_free(&c);
      free(keys);
    }
  /* all equal: the sample sees the ties and declines */
  {
    uint64_t* keys = calloc(100000, sizeof(uint64_t));
    uint32_t sample[4096], scratch[4096], bound;
    size_t cap, m = sparcclStreamSampleSize(100000, 1000), i;
    REQUIRE(keys && m > 0 && m <= 4096);
    for (i = 0; i < m; i++) sample[i] = 7;
    REQUIRE(!sparcclStreamBound32(sample, m, 100000, 1000, scratch, &bound, &cap));
    free(keys);
  }
}
END_TEST

/* Hand cases, the expected sets written out. */
static void hand_case32(const uint32_t* keys, size_t d, size_t k, const int* want) {
  uint64_t wide[16] = {0};
  Case c;
  size_t i;
  for (i = 0; i < d; i++) wide[i] = keys[i];
  case_init(&c, wide, 32, d);
  for (i = 0; i < d; i++) REQUIRE_MSG((c.rank[i] < k) == (want[i] != 0), "reference, index %zu", i);
  check_k(&c, k, "hand");
  case_free(&c);
}

START_TEST(test_select_hand_cases) {
  {
    const uint32_t keys[5] = {5, 3, 5, 1, 5};
    const int want[5] = {1, 0, 1, 0, 0}; /* three 5s, two wanted: the lower indices */
    hand_case32(keys, 5, 2, want);
  }
  {
    const uint32_t keys[6] = {0, 0, 0, 0, 0, 0};
    const int want[6] = {1, 1, 1, 0, 0, 0};
    hand_case32(keys, 6, 3, want);
  }
  {
    const uint32_t keys[6] = {0xffffffffu, 0, 0xffffffffu, 0xfffffffeu, 0xffffffffu, 0x80000000u};
    const int want[6] = {1, 0, 1, 0, 0, 0};
    hand_case32(keys, 6, 2, want);
  }
  {
    /* same top 22 bits; the last digit decides */
    const uint32_t keys[5] = {0x12345401u, 0x12345403u, 0x12345400u, 0x12345403u, 0x12345402u};
    const int want[5] = {0, 1, 0, 1, 1};
    hand_case32(keys, 5, 3, want);
  }
  {
    /* the boundary bin is taken whole */
    const uint32_t keys[4] = {0x00000001u, 0xc0000000u, 0x00000002u, 0x80000000u};
    const int want[4] = {0, 1, 0, 1};
    hand_case32(keys, 4, 2, want);
  }
}
END_TEST

Suite* make_select_suite(void) {
  Suite* s = suite_create("select");
  TCase* tc = tcase_create("radix top-k against a sort");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_select_hand_cases);
  tcase_add_test(tc, test_stream_applies);
  tcase_add_test(tc, test_select32_small);
  tcase_add_test(tc, test_select64_small);
  tcase_add_test(tc, test_select32_medium);
  tcase_add_test(tc, test_select64_medium);
  tcase_add_test(tc, test_select32_large);
  tcase_add_test(tc, test_select64_large);
  suite_add_tcase(s, tc);
  return s;
}
