/*
 * The plain baseline of issue item 8: SCAM-TopK done the straightforward way, to time
 * sparccl's radix select against (docs/PERFORMANCE.md).  Per sparse layer:
 *
 *   a = e + g;  pairs (|a_i|, i);  std::nth_element to the k-th pair (larger |a| first,
 *   ties to the lower index: SPEC 1);  std::sort of the k selected by index;  gather the
 *   values g (SCAM sends g);  then e <- a - sent.
 *
 * Dense layers (d < minSparseCount) are copied, as sparccl sends them.  The selection and
 * packing ("compress") and the state update are timed separately, because sparccl does
 * its state update after the exchange: only compress is compared with compress.
 *
 * The result is the same selected set and the same float32 values as sparccl's scam-topk
 * with an fp32 wire, so sparccl_perf -c 1 checks the two agree bit for bit.
 * C++11, one core, no tricks.
 */
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "baseline_select.h"

namespace {

struct Pair {
  float magnitude;
  uint32_t index;
};

/* Larger |a| first; equal keys: the lower index first. */
struct LargerFirst {
  bool operator()(const Pair& x, const Pair& y) const {
    if (x.magnitude != y.magnitude) return x.magnitude > y.magnitude;
    return x.index < y.index;
  }
};

struct ByIndex {
  bool operator()(const Pair& x, const Pair& y) const { return x.index < y.index; }
};

struct Layer {
  size_t offset, count, k;
  bool sparse;
  std::vector<float> error;       /* e, zero at creation */
  std::vector<uint32_t> selected; /* the last call's S, ascending */
  std::vector<float> values;      /* the last call's sent values */
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/* k = min(d, max(1, ceil(density * d))) in double, as SPEC 1. */
size_t layerK(size_t d, double density) {
  double kd = density * (double)d;
  size_t k = (size_t)kd;
  if ((double)k < kd) k++;
  if (k < 1) k = 1;
  return k > d ? d : k;
}

}  // namespace

struct plainScamTopk {
  std::vector<Layer> layers;
  std::vector<Pair> pairs; /* scratch of the largest layer */
  const float* lastGrad;
};

extern "C" plainScamTopk* plainScamTopkCreate(size_t nlayers, const size_t* counts,
                                              double density, size_t minSparseCount) {
  plainScamTopk* p = new (std::nothrow) plainScamTopk;
  if (p == NULL) return NULL;
  try {
    size_t offset = 0, largest = 0;
    p->layers.resize(nlayers);
    for (size_t l = 0; l < nlayers; l++) {
      Layer& L = p->layers[l];
      L.offset = offset;
      L.count = counts[l];
      L.sparse = counts[l] >= minSparseCount;
      L.k = L.sparse ? layerK(counts[l], density) : counts[l];
      if (L.sparse) {
        L.error.assign(L.count, 0.0f);
        L.selected.resize(L.k);
        L.values.resize(L.k);
        largest = std::max(largest, L.count);
      }
      offset += counts[l];
    }
    p->pairs.resize(largest);
    p->lastGrad = NULL;
  } catch (...) {
    delete p;
    return NULL;
  }
  return p;
}

extern "C" void plainScamTopkCall(plainScamTopk* p, const float* grad, double* compressSeconds,
                                  double* updateSeconds) {
  double compress = 0.0, update = 0.0;
  for (size_t l = 0; l < p->layers.size(); l++) {
    Layer& L = p->layers[l];
    if (!L.sparse) continue; /* sent dense: the copy is made by plainScamTopkSent */
    const float* g = grad + L.offset;
    float* e = &L.error[0];
    Pair* pairs = &p->pairs[0];
    double t0 = now();
    /* a = e + g and its magnitude, with the index. */
    for (size_t i = 0; i < L.count; i++) {
      float a = e[i] + g[i];
      pairs[i].magnitude = std::fabs(a);
      pairs[i].index = (uint32_t)i;
    }
    if (L.k < L.count)
      std::nth_element(pairs, pairs + L.k - 1, pairs + L.count, LargerFirst());
    std::sort(pairs, pairs + L.k, ByIndex());
    /* SCAM: the set chosen on a is applied to g. */
    for (size_t t = 0; t < L.k; t++) {
      uint32_t i = pairs[t].index;
      L.selected[t] = i;
      L.values[t] = g[i];
    }
    double t1 = now();
    /* e <- a - sent (sent is zero off S, which leaves e = a). */
    for (size_t i = 0; i < L.count; i++) e[i] = e[i] + g[i];
    for (size_t t = 0; t < L.k; t++) e[L.selected[t]] = e[L.selected[t]] - L.values[t];
    double t2 = now();
    compress += t1 - t0;
    update += t2 - t1;
  }
  p->lastGrad = grad;
  if (compressSeconds) *compressSeconds = compress;
  if (updateSeconds) *updateSeconds = update;
}

extern "C" void plainScamTopkSent(const plainScamTopk* p, const float* grad, float* sent) {
  for (size_t l = 0; l < p->layers.size(); l++) {
    const Layer& L = p->layers[l];
    float* out = sent + L.offset;
    if (!L.sparse) {
      std::memcpy(out, grad + L.offset, L.count * sizeof(float));
      continue;
    }
    std::memset(out, 0, L.count * sizeof(float));
    for (size_t t = 0; t < L.k; t++) out[L.selected[t]] = L.values[t];
  }
}

extern "C" void plainScamTopkDestroy(plainScamTopk* p) { delete p; }
