/*
 * After the exchange: the state update of this rank's layer (SPEC 1, the table of
 * feedback schemes) and the rank-ordered float32 sum of every rank's sent vector.
 */
#include <string.h>
#include "core.h"

void sparcclUpdateState(sparcclComm_t comm, const sparcclLayerSet_t* set, sparcclLayer_t* l,
                        const void* send, int dtype, const uint8_t* block) {
  const sparcclConfig_t* c = &comm->config;
  const void* grad = (const uint8_t*)send + l->offset * sparccl_dtype_size(dtype);
  const uint32_t* indices = sparcclLayerIndices(comm, set, l, (uint8_t*)block);
  const void* values = (const uint8_t*)block + set->indexBytes +
                       l->valuePos * sparccl_dtype_size(c->wireType);
  size_t i, t;
  if (l->error != NULL) {
    /* e <- a - sent: a everywhere, then the sent values subtracted where selected. */
    float* e = l->error;
    if (dtype == SPARCCL_DT_FLOAT32) {
      const float* g = (const float*)grad;
      for (i = 0; i < l->count; i++) e[i] = e[i] + g[i];
    } else {
      for (i = 0; i < l->count; i++) e[i] = e[i] + sparccl_load(grad, i, dtype);
    }
    for (t = 0; t < l->k; t++)
      e[indices[t]] = sparccl_error_update(e[indices[t]], sparccl_load(values, t, c->wireType));
  }
  if (l->h != NULL) /* h <- h + sent (H is updated with the sum, in the output pass) */
    for (t = 0; t < l->k; t++) l->h[indices[t]] += sparccl_load(values, t, c->wireType);
  if (l->prevGrad != NULL) {
    /* Online importance: commit the step the selection used, then remember g. */
    if (l->havePrevGrad)
      for (i = 0; i < l->count; i++)
        l->importance[i] = sparcclOnlineWeight(c, l, i, sparccl_load(grad, i, dtype));
    for (i = 0; i < l->count; i++) l->prevGrad[i] = sparccl_load(grad, i, dtype);
    l->havePrevGrad = 1;
  }
  l->step++;
}

void sparcclReduceLayer(sparcclComm_t comm, const sparcclLayerSet_t* set,
                        const sparcclLayer_t* l, const uint8_t* blocks, float* sum) {
  int wireType = comm->config.wireType;
  size_t wireSize = sparccl_dtype_size(wireType);
  size_t i, t;
  int r;
  /* s = +0.0f; s = s + sent_j in rank order.  Adding a zero to a sum that started at +0
   * never changes it, so only the selected elements need adding. */
  memset(sum, 0, l->count * sizeof(float));
  for (r = 0; r < comm->nranks; r++) {
    uint8_t* block = (uint8_t*)blocks + (size_t)r * set->blockBytes;
    if (l->sparse) {
      const uint32_t* indices = sparcclLayerIndices(comm, set, l, block);
      const uint8_t* values = block + set->indexBytes + l->valuePos * wireSize;
      if (wireType == SPARCCL_DT_FLOAT32)
        for (t = 0; t < l->k; t++) sum[indices[t]] += ((const float*)values)[t];
      else
        for (t = 0; t < l->k; t++) sum[indices[t]] += sparccl_load(values, t, wireType);
    } else {
      const float* dense = sparcclBlockDense(set, block) + l->densePos;
      for (i = 0; i < l->count; i++) sum[i] += dense[i];
    }
  }
}
