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

#include "example_util.h"
#include "mlp.h"

#define NPTS 64
#define NGRID 201

static double target(double x) { return sin(x) + 0.5 * cos(2.0 * x) + 0.1 * x * x; }

static uint64_t st_;
static double urand(void) { return example_uniform01(&st_); }

int main(int argc, char** argv) {
  const char* method = "ef-topk";
  const char* csv = NULL;
  long long restartEvery = 0, steps = 3000;
  double lr = 1e-3, density = 0.01, noise = 0.3;
  unsigned long long seed = 1;
  int rank, n, i;
  example_method_t meth;
  size_t sizes[4] = {1, 256, 256, 1}, counts[6], np, nloc;
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
  /* dense, topk, ef-topk or scam-topk */
  if (example_parse_method(method, &meth) != 0 ||
      (!meth.dense && (meth.compressor != sparcclTopK || meth.feedback == sparcclFeedbackEF21))) {
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
  if (!meth.dense) {
    cfg.feedback = meth.feedback;
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
    if (meth.dense) {
      example_dense_average(g, np, n);
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
    example_adamw_step(p, g, mo, ve, np, t, lr, 0.9, 0.999, 0.01, 1e-8);
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
