/*
 * After the exchange: the state update of this rank's layer (SPEC 1, the table of
 * feedback schemes) and the rank-ordered float32 sum of every rank's sent vector.
 */
#include <string.h>
#include "core.h"

/* dgc: u <- (float)momentum * u + g, the momentum the layer's x was formed from (SPEC 9). */
static void updateMomentum(const sparcclCallValues_t* v, sparcclLayer_t* l, const void* grad,
                           int dtype) {
  size_t i;
  for (i = 0; i < l->count; i++)
    sparccl_momentum_step(sparccl_load(grad, i, dtype), &l->momentum[i], v->momentumFactor);
}

/* e <- e + g with the layer's sum zeroed in the same pass (g is read first: in place, sum is
 * g); only where g is not read again (no online importance). */
static int accumulateAndZero(sparcclLayer_t* l, const float* g, float* sum) {
  float* e = l->error;
  size_t i;
  if (sum == NULL || l->prevGrad != NULL) {
    for (i = 0; i < l->count; i++) e[i] = e[i] + g[i];
    return 0;
  }
  for (i = 0; i < l->count; i++) {
    float gi = g[i];
    e[i] = e[i] + gi;
    sum[i] = 0.0f;
  }
  return 1;
}

int sparcclUpdateState(sparcclComm_t comm, const sparcclGroup_t* group, sparcclLayer_t* l,
                       const void* send, int dtype, const uint8_t* block, float* sum) {
  const sparcclConfig_t* c = &comm->config;
  const sparcclCallValues_t v = sparccl_call_values(c, comm->rank);
  const void* grad = (const uint8_t*)send + l->offset * sparccl_dtype_size(dtype);
  const uint32_t* indices;
  const void* values;
  size_t i, t;
  int zeroed = 0;
  if (l->momentum != NULL) updateMomentum(&v, l, grad, dtype);
  if (!l->sparse) { /* dgc's dense layer: u is all its state */
    l->step++;
    return 0;
  }
  indices = sparcclLayerIndices(comm, group, l, block);
  values = sparcclLayerValues(group, l, block);
  if (l->error != NULL) {
    /* e <- a - sent: a everywhere (a = e + g, dgc's e + u), then the sent values subtracted
     * where selected. */
    float* e = l->error;
    if (l->momentum != NULL) {
      for (i = 0; i < l->count; i++) e[i] = e[i] + l->momentum[i];
    } else if (dtype == SPARCCL_DT_FLOAT32) {
      zeroed = accumulateAndZero(l, (const float*)grad, sum);
    } else {
      for (i = 0; i < l->count; i++) e[i] = e[i] + sparccl_load(grad, i, dtype);
    }
    for (t = 0; t < l->k; t++)
      e[indices[t]] = sparccl_error_update(e[indices[t]], sparccl_load(values, t, c->wireType));
  }
  if (l->momentum != NULL) /* momentum factor masking (DGC) */
    for (t = 0; t < l->k; t++) l->momentum[indices[t]] = 0.0f;
  if (l->h != NULL) /* h <- h + sent (H is updated with the sum, in the output pass) */
    for (t = 0; t < l->k; t++) l->h[indices[t]] += sparccl_load(values, t, c->wireType);
  if (l->prevGrad != NULL) {
    /* Online importance: commit the step the selection used, then remember g. */
    if (l->havePrevGrad)
      for (i = 0; i < l->count; i++)
        l->importance[i] = sparcclOnlineWeight(&v, l, i, sparccl_load(grad, i, dtype));
    for (i = 0; i < l->count; i++) l->prevGrad[i] = sparccl_load(grad, i, dtype);
    l->havePrevGrad = 1;
  }
  l->step++;
  return zeroed;
}

void sparcclReduceLayer(sparcclComm_t comm, const sparcclGroup_t* group,
                        const sparcclLayer_t* l, const uint8_t* blocks, float* sum, int zeroed) {
  int wireType = comm->config.wireType;
  size_t i, t;
  int r;
  if (!l->sparse) { /* sent whole */
    for (i = 0; i < l->count; i++)
      sum[i] = sparccl_rank_sum(&group->wire, blocks, (uint32_t)comm->nranks,
                                l->densePos - group->denseBase + i);
    return;
  }
  /* s = +0.0f; s = s + sent_j in rank order.  Adding a zero to a sum that started at +0
   * never changes it, so only the selected elements need adding. */
  if (!zeroed) memset(sum, 0, l->count * sizeof(float));
  for (r = 0; r < comm->nranks; r++) {
    const uint8_t* block = sparccl_wire_block(&group->wire, blocks, (size_t)r);
    const uint32_t* indices = sparcclLayerIndices(comm, group, l, block);
    const uint8_t* values = sparcclLayerValues(group, l, block);
    if (wireType == SPARCCL_DT_FLOAT32)
      for (t = 0; t < l->k; t++) sum[indices[t]] += ((const float*)values)[t];
    else
      for (t = 0; t < l->k; t++) sum[indices[t]] += sparccl_load(values, t, wireType);
  }
}
