/* The pipeline's steps that both backends take, element by element, as host-and-device
 * inline functions over sparccl_math.h's arithmetic: the per-call values from the config,
 * a layer's output (EF21's H), the dense call's state, the rank-ordered sum of whole
 * layers, the restart decision, and the reset and scaling of the state. */
#ifndef SPARCCL_STEPS_H_
#define SPARCCL_STEPS_H_

#include <math.h>
#include "sparccl.h"
#include "sparccl_math.h"
#include "wire.h"

/* ------------------------------------------------------------ per-call values (SPEC 1, 7, 9) */

/* What the loops and kernels read from the config, derived once per call. */
typedef struct {
  float momentumFactor;  /* dgc: (float)momentum */
  float rate, low, high; /* online importance's cube step (SPEC 7) */
  uint64_t seed;
  uint32_t randomRank;   /* the Philox counter's rank: 0 on every rank with shared randomness */
} sparcclCallValues_t;

SPARCCL_HD sparcclCallValues_t sparccl_call_values(const sparcclConfig_t* c, int rank) {
  sparcclCallValues_t v;
  v.momentumFactor = (float)c->momentum;
  v.rate = sparccl_importance_rate(c->importanceEta, c->importanceGamma);
  v.low = (float)c->importanceLow;
  v.high = (float)c->importanceHigh;
  v.seed = c->seed;
  v.randomRank = c->sharedRandomness ? 0u : (uint32_t)rank;
  return v;
}

/* ------------------------------------------------------------ outputs and state */

/* One element's output from its float32 sum s (SPEC 1): s or s / n.  H: EF21's replica at
 * this element, NULL without one; H <- H + s / n, output H * n or H.  In a dense call (SPEC
 * 9) H <- s / n and the output is s or s / n.  H's NaNs canonical, as on every backend. */
SPARCCL_HD float sparccl_layer_output(int op, float n, float s, float* H, int denseCall) {
  if (H != NULL && !denseCall) {
    *H = sparccl_canonical_nan(*H + s / n);
    return op == sparcclSum ? *H * n : *H;
  }
  if (H != NULL) *H = sparccl_canonical_nan(s / n);
  return op == sparcclSum ? s : s / n;
}

/* A skipped layer's output (SPEC 2): the canonical NaN. */
SPARCCL_HD float sparccl_skipped_output(void) {
  return sparccl_bits_float(SPARCCL_CANONICAL_NAN_BITS);
}

/* dgc's u <- momentum * u + g (SPEC 9), the x its layer sent. */
SPARCCL_HD void sparccl_momentum_step(float g, float* u, float momentumFactor) {
  *u = sparccl_feedback_gradient(SPARCCL_FB_DGC, g, *u, momentumFactor);
}

/* The state a dense call changes at one element (SPEC 9's table): ef21's h <- g, dgc's
 * u <- its x (NULL where the layer has none); H is written with the output. */
SPARCCL_HD void sparccl_dense_state(float g, float* h, float* u, float momentumFactor) {
  if (h != NULL) *h = g;
  if (u != NULL) sparccl_momentum_step(g, u, momentumFactor);
}

/* Element `at` of whole layers' floats summed in rank order, +0.0f + x_0 + x_1 + ... */
SPARCCL_HD float sparccl_rank_sum(const sparcclWire_t* w, const uint8_t* blocks, uint32_t nranks,
                                  size_t at) {
  float s = +0.0f;
  uint32_t r;
  for (r = 0; r < nranks; r++) s = s + sparccl_wire_dense(w, sparccl_wire_block(w, blocks, r))[at];
  return s;
}

/* ------------------------------------------------------------ restarts (SPEC 7) */

/* restartEvery: every that many completed steps. */
SPARCCL_HD int sparccl_restart_every_due(long long every, uint64_t steps) {
  return every > 0 && steps % (uint64_t)every == 0;
}

/* The restart norm from the blocked sum of the output's squares, its NaN canonical. */
SPARCCL_HD double sparccl_restart_norm(double normSquared) {
  return sparccl_canonical_nan_double(sqrt(normSquared));
}

/* Push v as the t-th value of a ring of lag + 1; returns the value lag pushes ago, or NaN
 * (which no comparison passes). */
SPARCCL_HD double sparccl_history_push(double* ring, uint64_t t, int lag, double v) {
  ring[t % (uint64_t)(lag + 1)] = v;
  return t >= (uint64_t)lag ? ring[(t - (uint64_t)lag) % (uint64_t)(lag + 1)]
                            : sparccl_bits_double(0x7ff8000000000000ull);
}

/* restartRatio: the norm grew by more than ratio over lag steps. */
SPARCCL_HD int sparccl_norm_jumped(double norm, double before, double ratio) {
  return before > 0.0 && norm / before > ratio;
}

/* ------------------------------------------------------------ reset and scale */

/* The float state a layer keeps at an element; NULL where it has none. */
typedef struct { float *error, *h, *H, *momentum, *importance; } sparcclStateArrays_t;

/* Restart (SPEC 7): e, h, H, u <- 0, w <- 1. */
SPARCCL_HD void sparccl_state_reset(const sparcclStateArrays_t* s, size_t at) {
  if (s->error != NULL) s->error[at] = 0.0f;
  if (s->h != NULL) s->h[at] = 0.0f;
  if (s->H != NULL) s->H[at] = 0.0f;
  if (s->momentum != NULL) s->momentum[at] = 0.0f;
  if (s->importance != NULL) s->importance[at] = 1.0f;
}

/* sparcclScaleState: e, h, H, u times factor, any NaN product canonical (x86, aarch64 and
 * GPUs each return their own NaN). */
SPARCCL_HD void sparccl_state_scale(const sparcclStateArrays_t* s, size_t at, float factor) {
  if (s->error != NULL) s->error[at] = sparccl_canonical_nan(s->error[at] * factor);
  if (s->h != NULL) s->h[at] = sparccl_canonical_nan(s->h[at] * factor);
  if (s->H != NULL) s->H[at] = sparccl_canonical_nan(s->H[at] * factor);
  if (s->momentum != NULL) s->momentum[at] = sparccl_canonical_nan(s->momentum[at] * factor);
}

#endif /* SPARCCL_STEPS_H_ */
