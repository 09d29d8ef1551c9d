/* MLP forward/backward (see mlp.h). */
#include "mlp.h"
#include "example_util.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int mlpInit(mlp_t* m, int nl, const size_t* sizes, size_t maxBatch) {
  size_t off = 0, wmax = 0;
  int l;
  memset(m, 0, sizeof(*m));
  if (nl < 1 || nl > MLP_MAX_LAYERS || maxBatch == 0) return -1;
  m->nl = nl;
  m->maxBatch = maxBatch;
  for (l = 0; l <= nl; l++) {
    m->sizes[l] = sizes[l];
    if (sizes[l] == 0) return -1;
    if (sizes[l] > wmax) wmax = sizes[l];
  }
  for (l = 0; l < nl; l++) {
    m->offW[l] = off;
    off += sizes[l] * sizes[l + 1];
    m->offB[l] = off;
    off += sizes[l + 1];
  }
  m->nparams = off;
  for (l = 1; l <= nl; l++) {
    m->act[l] = (float*)malloc(maxBatch * sizes[l] * sizeof(float));
    if (m->act[l] == NULL) return -1;
  }
  m->delta[0] = (float*)malloc(maxBatch * wmax * sizeof(float));
  m->delta[1] = (float*)malloc(maxBatch * wmax * sizeof(float));
  if (m->delta[0] == NULL || m->delta[1] == NULL) return -1;
  return 0;
}

void mlpFree(mlp_t* m) {
  int l;
  for (l = 1; l <= m->nl; l++) free(m->act[l]);
  free(m->delta[0]);
  free(m->delta[1]);
  memset(m, 0, sizeof(*m));
}

size_t mlpLayout(const mlp_t* m, size_t* counts) {
  int l;
  for (l = 0; l < m->nl; l++) {
    counts[2 * l] = m->sizes[l] * m->sizes[l + 1];
    counts[2 * l + 1] = m->sizes[l + 1];
  }
  return (size_t)(2 * m->nl);
}

void mlpInitParams(const mlp_t* m, float* params, unsigned long long seed) {
  uint64_t s = seed * 0x2545F4914F6CDD1DULL + 12345;
  int l;
  size_t i;
  const double twopi = 6.283185307179586;
  for (l = 0; l < m->nl; l++) {
    size_t n = m->sizes[l] * m->sizes[l + 1];
    double sd = sqrt(2.0 / (double)m->sizes[l]);
    float* w = params + m->offW[l];
    for (i = 0; i < n; i += 2) {
      double u1 = ((double)(example_splitmix64(&s) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
      double u2 = (double)(example_splitmix64(&s) >> 11) * (1.0 / 9007199254740992.0);
      double r = sqrt(-2.0 * log(u1));
      w[i] = (float)(sd * r * cos(twopi * u2));
      if (i + 1 < n) w[i + 1] = (float)(sd * r * sin(twopi * u2));
    }
    memset(params + m->offB[l], 0, m->sizes[l + 1] * sizeof(float));
  }
}

/* act[nl] <- the network's linear outputs (logits). */
static void forwardLinear(mlp_t* m, const float* params, const float* x, size_t B) {
  int l;
  size_t r, j;
  const float* in = x;
  for (l = 0; l < m->nl; l++) {
    size_t ni = m->sizes[l], no = m->sizes[l + 1];
    float* out = m->act[l + 1];
    const float* b = params + m->offB[l];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)no, (int)ni, 1.0f, in,
                (int)ni, params + m->offW[l], (int)no, 0.0f, out, (int)no);
    for (r = 0; r < B; r++) {
      float* o = out + r * no;
      if (l + 1 < m->nl) {
        for (j = 0; j < no; j++) {
          float v = o[j] + b[j];
          o[j] = v > 0.0f ? v : 0.0f;
        }
      } else {
        for (j = 0; j < no; j++) o[j] = o[j] + b[j];
      }
    }
    in = out;
  }
}

/* act[nl] ends as softmax probabilities; returns the mean loss. */
static double forward(mlp_t* m, const float* params, const float* x, const unsigned char* y,
                      size_t B, size_t* correct) {
  size_t r, j;
  double loss = 0.0;
  forwardLinear(m, params, x, B);
  {
    size_t nc = m->sizes[m->nl];
    float* z = m->act[m->nl];
    for (r = 0; r < B; r++) {
      float* o = z + r * nc;
      double mx = o[0], s = 0.0;
      size_t arg = 0;
      for (j = 1; j < nc; j++)
        if (o[j] > mx) {
          mx = o[j];
          arg = j;
        }
      for (j = 0; j < nc; j++) s += exp((double)o[j] - mx);
      loss += -(((double)o[y[r]] - mx) - log(s));
      for (j = 0; j < nc; j++) o[j] = (float)(exp((double)o[j] - mx) / s);
      if (correct != NULL && arg == y[r]) (*correct)++;
    }
  }
  return loss / (double)B;
}

double mlpForward(mlp_t* m, const float* params, const float* x, const unsigned char* y,
                  size_t B, size_t* correct) {
  return forward(m, params, x, y, B, correct);
}

/* Backpropagates delta[0] = d(loss)/d(outputs) (B x sizes[nl]) into grad. */
static void backward(mlp_t* m, const float* params, const float* x, size_t B, float* grad) {
  int l, cur = 0;
  size_t r, j;
  float* d = m->delta[0];
  for (l = m->nl - 1; l >= 0; l--) {
    size_t ni = m->sizes[l], no = m->sizes[l + 1];
    const float* in = l == 0 ? x : m->act[l];
    float* db = grad + m->offB[l];
    /* dW = in^T d  (ni x no) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ni, (int)no, (int)B, 1.0f, in,
                (int)ni, d, (int)no, 0.0f, grad + m->offW[l], (int)no);
    for (j = 0; j < no; j++) db[j] = 0.0f;
    for (r = 0; r < B; r++)
      for (j = 0; j < no; j++) db[j] = db[j] + d[r * no + j];
    if (l > 0) {
      float* dn = m->delta[1 - cur];
      /* d_in = d W^T (B x ni), then through the ReLU of layer l's input */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)ni, (int)no, 1.0f, d,
                  (int)no, params + m->offW[l], (int)no, 0.0f, dn, (int)ni);
      for (r = 0; r < B * ni; r++)
        if (!(in[r] > 0.0f)) dn[r] = 0.0f;
      cur = 1 - cur;
      d = dn;
    }
  }
}

double mlpLossGrad(mlp_t* m, const float* params, const float* x, const unsigned char* y,
                   size_t B, float* grad) {
  double loss = forward(m, params, x, y, B, NULL);
  size_t r, j, nc = m->sizes[m->nl];
  float* d = m->delta[0];
  const float invB = 1.0f / (float)B;
  /* d(loss)/d(logits) = (softmax - onehot) / B */
  for (r = 0; r < B; r++) {
    const float* p = m->act[m->nl] + r * nc;
    for (j = 0; j < nc; j++) d[r * nc + j] = (p[j] - (j == y[r] ? 1.0f : 0.0f)) * invB;
  }
  backward(m, params, x, B, grad);
  return loss;
}

double mlpPredict(mlp_t* m, const float* params, const float* x, size_t B, float* out) {
  size_t n = B * m->sizes[m->nl];
  forwardLinear(m, params, x, B);
  memcpy(out, m->act[m->nl], n * sizeof(float));
  return 0.0;
}

double mlpLossGradMSE(mlp_t* m, const float* params, const float* x, const float* t, size_t B,
                      float* grad) {
  size_t r, no = m->sizes[m->nl];
  double loss = 0.0;
  float* d = m->delta[0];
  const float invB = 1.0f / (float)B;
  forwardLinear(m, params, x, B);
  for (r = 0; r < B * no; r++) {
    float e = m->act[m->nl][r] - t[r];
    loss += 0.5 * (double)e * (double)e;
    d[r] = e * invB;
  }
  if (grad != NULL) backward(m, params, x, B, grad);
  return loss / (double)B;
}
