/* A plain multilayer perceptron (ReLU hidden layers, softmax cross-entropy) on one flat
 * float32 parameter buffer, with OpenBLAS cblas_sgemm for the matrix products. */
#ifndef FMNIST_MLP_H_
#define FMNIST_MLP_H_

#include <stddef.h>

#define MLP_MAX_LAYERS 8

typedef struct {
  int nl;                          /* weight layers */
  size_t sizes[MLP_MAX_LAYERS + 1]; /* sizes[0] inputs ... sizes[nl] classes */
  size_t maxBatch;
  size_t nparams;
  size_t offW[MLP_MAX_LAYERS], offB[MLP_MAX_LAYERS];
  float* act[MLP_MAX_LAYERS + 1];  /* act[0] unused (the input); act[l]: B x sizes[l] */
  float* delta[2];                 /* B x max width */
} mlp_t;

int mlpInit(mlp_t* m, int nl, const size_t* sizes, size_t maxBatch);
void mlpFree(mlp_t* m);
/* 2 * nl layer counts (W0, b0, W1, b1, ...), the order of the flat buffer. */
size_t mlpLayout(const mlp_t* m, size_t* counts);
/* He-normal weights (seeded, identical on every rank), zero biases. */
void mlpInitParams(const mlp_t* m, float* params, unsigned long long seed);
/* Forward pass on B rows of x (B x sizes[0]); returns the mean cross-entropy, and adds the
 * number of correct argmax predictions to *correct when it is not NULL. */
double mlpForward(mlp_t* m, const float* params, const float* x, const unsigned char* y,
                  size_t B, size_t* correct);
/* Forward and backward: grad (nparams) <- d(mean loss)/d(params); returns the mean loss. */
double mlpLossGrad(mlp_t* m, const float* params, const float* x, const unsigned char* y,
                   size_t B, float* grad);

/* Regression: linear outputs, loss = mean over rows of sum 0.5 (out - t)^2; grad may be NULL. */
double mlpLossGradMSE(mlp_t* m, const float* params, const float* x, const float* t, size_t B,
                      float* grad);
/* The linear outputs (B x sizes[nl]) into out; returns 0. */
double mlpPredict(mlp_t* m, const float* params, const float* x, size_t B, float* out);

#endif
