/*
 * The restart slides' regression experiment on sparccl: an over-parameterised MLP
 * 1-256-256-1 (66,561 parameters) fitted to 64 noisy points of
 * y = sin(x) + 0.5 cos(2x) + 0.1 x^2 + eps, the points split across MPI ranks, full-batch
 * AdamW on gradients reduced by sparccl (or MPI_Allreduce for --method dense), with and
 * without restarts every N steps (sparccl's restartEvery policy; the optimiser's moments are
 * reset with it, as the slides do; for dense the moments alone are reset).
 *
 *   mpirun -np 2 build/bin/restarts_regression --method ef-topk --restart-every 500 --csv fit.csv
 *
 * Prints the final training MSE, the test MSE against the noiseless function on a 201-point
 * grid, and the roughness of the fit (mean squared second difference on that grid: the
 * slides' "noisy" against "smooth").  --csv writes the grid predictions.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>
#include <sparccl_mpi.h>

#include "mlp.h"

#define NPTS 64
#define NGRID 201

static double target(double x) { return sin(x) + 0.5 * cos(2.0 * x) + 0.1 * x * x; }

static uint64_t st_;
static double urand(void) {
  uint64_t z = (st_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

int main(int argc, char** argv) {
  const char* method = "ef-topk";
  const char* csv = NULL;
  long long restartEvery = 0, steps = 3000;
  double lr = 1e-3, density = 0.01, noise = 0.3;
  unsigned long long seed = 1;
  int rank, n, i, dense = 0;
  size_t sizes[4] = {1, 256, 256, 1}, counts[6], np, nloc, j;
  mlp_t m;
  float *p, *g, *mo, *ve, xs[NPTS], ys[NPTS], xl[NPTS], yl[NPTS], xg[NGRID], pg[NGRID];
  sparcclComm_t comm = NULL;
  sparcclConfig_t cfg = SPARCCL_CONFIG_INITIALIZER;
  unsigned long long lastRestarts = 0, resets = 0;
  long long t = 0, s;
  double trainMse, testMse = 0.0, rough = 0.0;

  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  for (i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--method") && i + 1 < argc) method = argv[++i];
    else if (!strcmp(argv[i], "--restart-every") && i + 1 < argc) restartEvery = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--lr") && i + 1 < argc) lr = atof(argv[++i]);
    else if (!strcmp(argv[i], "--density") && i + 1 < argc) density = atof(argv[++i]);
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
    else {
      if (rank == 0)
        fprintf(stderr, "usage: restarts_regression [--method dense|topk|ef-topk|scam-topk] "
                        "[--restart-every N] [--steps N] [--lr X] [--density X] [--seed S] [--csv F]\n");
      MPI_Finalize();
      return 2;
    }
  }
  if (!strcmp(method, "dense")) dense = 1;
  else if (!strcmp(method, "topk")) cfg.feedback = sparcclFeedbackNone;
  else if (!strcmp(method, "ef-topk")) cfg.feedback = sparcclFeedbackEF;
  else if (!strcmp(method, "scam-topk")) cfg.feedback = sparcclFeedbackSCAM;
  else {
    if (rank == 0) fprintf(stderr, "restarts_regression: unknown method %s\n", method);
    MPI_Finalize();
    return 2;
  }

  /* Data: the same 64 points on every rank (seeded); rank r keeps points r, r+n, ... */
  st_ = seed * 7919ULL + 17;
  for (i = 0; i < NPTS; i++) {
    double x = -3.0 + 6.0 * urand(), u1 = urand(), u2 = urand();
    xs[i] = (float)(x / 3.0); /* the network sees x/3 in [-1, 1] */
    ys[i] = (float)(target(x) + noise * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
  }
  for (nloc = 0, i = rank; i < NPTS; i += n, nloc++) {
    xl[nloc] = xs[i];
    yl[nloc] = ys[i];
  }
  for (i = 0; i < NGRID; i++) xg[i] = (float)(-1.0 + 2.0 * i / (NGRID - 1));

  mlpInit(&m, 3, sizes, NGRID);
  mlpLayout(&m, counts);
  np = m.nparams;
  p = (float*)malloc(np * sizeof(float));
  g = (float*)malloc(np * sizeof(float));
  mo = (float*)calloc(np, sizeof(float));
  ve = (float*)calloc(np, sizeof(float));
  mlpInitParams(&m, p, seed);
  if (!dense) {
    cfg.density = density;
    cfg.compressor = sparcclTopK;
    cfg.minSparseCount = 0;
    cfg.restartEvery = restartEvery;
    if (sparcclCommInitMpi(&comm, MPI_COMM_WORLD, &cfg) != sparcclSuccess ||
        sparcclRegisterLayout(comm, g, 6, counts) != sparcclSuccess) {
      fprintf(stderr, "restarts_regression: sparccl setup failed\n");
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
  }
  for (s = 0; s < steps; s++) {
    int reset = 0;
    mlpLossGradMSE(&m, p, xl, yl, nloc, g);
    if (dense) {
      MPI_Allreduce(MPI_IN_PLACE, g, (int)np, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      for (j = 0; j < np; j++) g[j] = g[j] / (float)n;
      reset = restartEvery > 0 && s > 0 && s % restartEvery == 0;
    } else {
      sparcclStats_t stats;
      sparcclAllReduce(g, g, np, sparcclFloat32, sparcclAvg, comm, NULL);
      sparcclCommGetStats(comm, &stats);
      reset = stats.restarts != lastRestarts;
      lastRestarts = stats.restarts;
    }
    if (reset) { /* the slides' restart: drop the accumulated moments */
      memset(mo, 0, np * sizeof(float));
      memset(ve, 0, np * sizeof(float));
      t = 0;
      resets++;
    }
    t++;
    {
      const float b1 = 0.9f, b2 = 0.999f, wd = 0.01f, eps = 1e-8f, l = (float)lr;
      const float c1 = (float)(1.0 - pow(0.9, (double)t)), c2 = (float)(1.0 - pow(0.999, (double)t));
      for (j = 0; j < np; j++) {
        mo[j] = b1 * mo[j] + (1.0f - b1) * g[j];
        ve[j] = b2 * ve[j] + (1.0f - b2) * (g[j] * g[j]);
        p[j] = p[j] - l * ((mo[j] / c1) / (sqrtf(ve[j] / c2) + eps) + wd * p[j]);
      }
    }
  }
  trainMse = 2.0 * mlpLossGradMSE(&m, p, xs, ys, NPTS, NULL); /* all points, mean (out-y)^2 */
  mlpPredict(&m, p, xg, NGRID, pg);
  for (i = 0; i < NGRID; i++) {
    double e = (double)pg[i] - target(3.0 * (double)xg[i]);
    testMse += e * e / NGRID;
    if (i > 0 && i + 1 < NGRID) {
      double d2 = (double)pg[i + 1] - 2.0 * (double)pg[i] + (double)pg[i - 1];
      rough += d2 * d2 / (NGRID - 2);
    }
  }
  if (rank == 0) {
    printf("%s restart-every %lld seed %llu: train mse %.5f  test mse %.5f  roughness %.3e  "
           "restarts %llu\n", method, restartEvery, seed, trainMse, testMse, rough, resets);
    if (csv != NULL) {
      FILE* f = fopen(csv, "w");
      if (f != NULL) {
        fprintf(f, "# x prediction target\n");
        for (i = 0; i < NGRID; i++)
          fprintf(f, "%.4f %.6f %.6f\n", 3.0 * xg[i], pg[i], target(3.0 * xg[i]));
        fprintf(f, "\n\n# data points\n");
        for (i = 0; i < NPTS; i++) fprintf(f, "%.4f %.6f\n", 3.0 * xs[i], ys[i]);
        fclose(f);
      }
    }
  }
  if (comm != NULL) sparcclCommDestroy(comm);
  free(p);
  free(g);
  free(mo);
  free(ve);
  mlpFree(&m);
  MPI_Finalize();
  return 0;
}
