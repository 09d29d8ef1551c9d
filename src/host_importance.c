/* The host backend's importance steps (SPEC 7; thesis eqs. (11)-(13)): the probe, one
 * solver step (cube or simplex) and the reset, loops over the shared math. */
#include "backend.h"

sparcclResult_t sparcclHostProbe(sparcclComm_t comm, sparcclLayerSet_t* set, const void* params,
                                 const void* grad, void* out, int datatype, void* stream) {
  float gamma = (float)comm->config.importanceGamma;
  size_t i, j;
  (void)stream;
  for (i = 0; i < set->nlayers; i++) {
    const sparcclLayer_t* l = &set->layers[i];
    size_t base = l->offset;
    for (j = 0; j < l->count; j++) {
      float w = l->importance ? l->importance[j] : 1.0f;
      float p = sparccl_probe(sparccl_load(params, base + j, datatype), w,
                              sparccl_load(grad, base + j, datatype), gamma);
      sparccl_store(out, base + j, datatype, p);
    }
  }
  return sparcclSuccess;
}

/* One solver step on one layer; a layer whose q * g is not finite keeps its weights. */
static int updateLayer(const sparcclConfig_t* c, sparcclLayer_t* l, const void* q,
                       const void* g, int datatype) {
  float rate = sparccl_call_values(c, 0).rate;
  size_t i, base = l->offset;
  for (i = 0; i < l->count; i++)
    if (!sparccl_is_finite(sparccl_simplex_exponent(sparccl_load(q, base + i, datatype),
                                                    sparccl_load(g, base + i, datatype), rate)))
      return 0;
  if (c->importance == sparcclImportanceSimplex) {
    /* eq. (12): w <- d * w exp(z - max z) / sum(w exp(z - max z)) */
    float zmax = -sparccl_bits_float(0x7f800000u);
    sparccl_blocked_sum_t total;
    double sum;
    for (i = 0; i < l->count; i++) {
      float z = sparccl_simplex_exponent(sparccl_load(q, base + i, datatype),
                                         sparccl_load(g, base + i, datatype), rate);
      if (z > zmax) zmax = z;
    }
    sparccl_blocked_sum_init(&total);
    for (i = 0; i < l->count; i++) {
      float z = sparccl_simplex_exponent(sparccl_load(q, base + i, datatype),
                                         sparccl_load(g, base + i, datatype), rate);
      sparccl_blocked_sum_add(&total, sparccl_simplex_term(l->importance[i], z, zmax));
    }
    sum = sparccl_blocked_sum_result(&total);
    if (!(sum > 0.0)) return 0; /* all weights zero: nothing to normalise */
    for (i = 0; i < l->count; i++) {
      float z = sparccl_simplex_exponent(sparccl_load(q, base + i, datatype),
                                         sparccl_load(g, base + i, datatype), rate);
      l->importance[i] = sparccl_simplex_weight((double)l->count,
                                                sparccl_simplex_term(l->importance[i], z, zmax), sum);
    }
  } else {
    /* eq. (13), also for importance none (the trainer runs the solver) and online */
    float low = (float)c->importanceLow, high = (float)c->importanceHigh;
    for (i = 0; i < l->count; i++)
      l->importance[i] = sparccl_cube_step(l->importance[i], sparccl_load(q, base + i, datatype),
                                           sparccl_load(g, base + i, datatype), rate, low, high);
  }
  return 1;
}

sparcclResult_t sparcclHostUpdate(sparcclComm_t comm, sparcclLayerSet_t* set, const void* q,
                                  const void* g, int datatype, void* stream) {
  size_t i;
  (void)stream;
  for (i = 0; i < set->nlayers; i++) {
    sparcclLayer_t* l = &set->layers[i];
    if (l->importance != NULL && !updateLayer(&comm->config, l, q, g, datatype))
      INFO("sparcclImportanceUpdate: layer %u: the importance step has a NaN or Inf; weights kept",
           l->id);
  }
  return sparcclSuccess;
}

sparcclResult_t sparcclHostResetImportance(sparcclComm_t comm, sparcclLayerSet_t* set) {
  size_t i, j;
  (void)comm;
  for (i = 0; i < set->nlayers; i++)
    for (j = 0; set->layers[i].importance && j < set->layers[i].count; j++)
      set->layers[i].importance[j] = 1.0f;
  return sparcclSuccess;
}
