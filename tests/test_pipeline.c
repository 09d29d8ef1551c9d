/* The pipeline's groups (src/pipeline.c, SPEC 4): maximal runs of consecutive layers whose
 * block stays within pipelineBytes, a larger layer alone, checked against block sizes
 * recomputed here; every layer's place inside its group's sections, every flag distinct. */
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "core.h"

static size_t a16(size_t b) { return (b + 15) / 16 * 16; }

/* The block of layers [first, last) of a set, from SPEC 4's four sections and the check. */
static size_t blockOf(const sparcclConfig_t* c, const sparcclLayerSet_t* set, size_t first,
                      size_t last) {
  size_t indices = 0, values = 0, dense = 0, flags = 0, i;
  for (i = first; i < last; i++) {
    const sparcclLayer_t* l = &set->layers[i];
    indices += l->sparse && !l->sharedSet ? l->k : 0;
    values += l->sparse ? l->k : 0;
    dense += l->sparse ? 0 : l->count;
    flags += l->flagged ? 1 : 0;
  }
  return a16(4 * indices) + a16(test_dtype_size(c->wireType) * values) + a16(4 * dense) +
         a16(4 * flags) + 16;
}

/* Every layer inside its group's sections, its flag one of the group's, none shared. */
static void checkPlaces(const sparcclGroup_t* g) {
  const sparcclWire_t* w = &g->wire;
  size_t i, nflags = (w->check - w->flags) / 4;
  unsigned char seen[64];
  memset(seen, 0, sizeof(seen));
  REQUIRE(nflags <= sizeof(seen));
  for (i = 0; i < g->nlayers; i++) {
    const sparcclLayer_t* l = &g->layers[i];
    if (l->sparse && !l->sharedSet) REQUIRE((l->indexPos - g->indexBase + l->k) * 4 <= w->values);
    if (l->sparse) REQUIRE(w->values + (l->valuePos - g->valueBase + l->k) * w->valueSize <= w->dense);
    if (!l->sparse) REQUIRE(w->dense + (l->densePos - g->denseBase + l->count) * 4 <= w->flags);
    if (l->flagged) {
      size_t f = sparcclLayerFlag(g, l);
      REQUIRE(f < nflags && !seen[f]);
      seen[f] = 1;
    }
  }
}

static void checkGroups(const sparcclConfig_t* c, const sparcclLayerSet_t* set) {
  size_t j, first = 0, offset = 0;
  if (set->ngroups == 1) {
    REQUIRE(set->groups == NULL);
    REQUIRE(c->pipelineBytes == 0 || set->wire.blockBytes <= c->pipelineBytes || set->nlayers == 1);
    return;
  }
  for (j = 0; j < set->ngroups; j++) {
    const sparcclGroup_t* g = &set->groups[j];
    size_t last = first + g->nlayers;
    REQUIRE(g->layers == &set->layers[first] && g->nlayers > 0);
    REQUIRE_EQ(g->wire.blockBytes, blockOf(c, set, first, last));
    REQUIRE(g->nlayers == 1 || g->wire.blockBytes <= c->pipelineBytes);
    REQUIRE(last == set->nlayers || blockOf(c, set, first, last + 1) > c->pipelineBytes);
    REQUIRE_EQ(g->sendOffset, offset);
    checkPlaces(g);
    offset += g->wire.blockBytes;
    first = last;
  }
  REQUIRE_EQ(first, set->nlayers);
  REQUIRE_EQ(set->pipelineBytes, offset);
}

/* _i: the config (topk + scam, dgc, shared randk, bf16 wire); random layouts and sizes. */
START_TEST(test_groups_are_maximal_runs) {
  sparcclConfig_t c = test_config(_i == 2 ? sparcclRandK : sparcclTopK,
                                  _i == 1 ? sparcclFeedbackDGC : sparcclFeedbackSCAM, 0.02, 512);
  uint64_t rng = 99u + (uint64_t)_i;
  static const size_t sizes[6] = {0, 1, 700, 3000, 20000, (size_t)1 << 40};
  int trial, si, split = 0;
  c.sharedRandomness = _i == 2;
  c.wireType = _i == 3 ? sparcclBfloat16 : sparcclFloat32;
  for (si = 0; si < 6; si++) {
    sparcclComm_t comm;
    c.pipelineBytes = sizes[si];
    comm = test_comm_self(&c);
    for (trial = 0; trial < 20; trial++) {
      size_t counts[40], n = 1 + test_random_u64(&rng) % 40, i, total = 0;
      const sparcclLayerSet_t* set;
      for (i = 0; i < n; i++) {
        counts[i] = 1 + test_random_u64(&rng) % (test_random_u64(&rng) % 3 ? 2000 : 40000);
        total += counts[i];
      }
      REQUIRE(sparcclRegisterLayoutTagged(comm, (unsigned long long)trial, n, counts) == sparcclSuccess);
      set = sparcclFindSet(comm, 1, (uint64_t)trial, total);
      REQUIRE(set != NULL);
      checkGroups(&c, set);
      split += set->ngroups > 1;
      REQUIRE(sizes[si] != 1 || set->ngroups == set->nlayers);
    }
    sparcclCommDestroy(comm);
  }
  ck_assert_int_gt(split, 40); /* the sizes 1, 700, 3000 split most layouts */
}
END_TEST

Suite* make_pipeline_suite(void) {
  Suite* s = suite_create("pipeline");
  TCase* tc = tcase_create("groups");
  tcase_add_loop_test(tc, test_groups_are_maximal_runs, 0, 4);
  suite_add_tcase(s, tc);
  return s;
}
