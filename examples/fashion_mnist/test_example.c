/*
 * Tests that keep the Fashion-MNIST example honest (run under mpirun with 1 or 2 ranks):
 *  1. the MLP's gradients (softmax cross-entropy and MSE heads) against central finite
 *     differences on tiny networks;
 *  2. a tiny data-parallel run through sparccl (SCAM-ImpK_c with the per-epoch solver, and
 *     EF-TopK) whose loss decreases and whose model replicas stay bitwise identical;
 *  3. the IDX loader accepting a good file and rejecting corrupt, truncated, bad-magic and
 *     trailing-garbage files with a message.
 * Prints one PASS/FAIL line per check and "fmnist tests: PASS" at the end; exit 1 on failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <mpi.h>
#include <sparccl_mpi.h>

#include "example_util.h"
#include "idx.h"
#include "mlp.h"

static int rank_ = 0, nranks_ = 1, failures_ = 0;

static void check(int ok, const char* what) {
  if (rank_ == 0) printf("%s: %s\n", ok ? "PASS" : "FAIL", what);
  if (!ok) failures_++;
}

static uint64_t rs_ = 88172645463325252ULL;
static double urand(void) { return example_uniform01(&rs_); } /* the examples' generator */

/* ------------------------------------------------------------ 1. finite differences */
static void testGradients(void) {
  size_t sizes[4] = {5, 7, 6, 3};
  const size_t B = 4;
  mlp_t m;
  float *p, *g, x[4 * 5];
  unsigned char y[4] = {0, 2, 1, 2};
  size_t i, bad = 0;
  double worst = 0.0;
  mlpInit(&m, 3, sizes, B);
  p = (float*)malloc(m.nparams * sizeof(float));
  g = (float*)malloc(m.nparams * sizeof(float));
  mlpInitParams(&m, p, 7);
  for (i = 0; i < m.nparams; i++) p[i] = p[i] + (float)(0.1 * (urand() - 0.5)); /* biases too */
  for (i = 0; i < B * 5; i++) x[i] = (float)(2.0 * urand() - 1.0);
  mlpLossGrad(&m, p, x, y, B, g);
  for (i = 0; i < m.nparams; i++) {
    const float h = 1e-3f;
    float keep = p[i];
    double lp, lm, num, err;
    p[i] = keep + h;
    lp = mlpForward(&m, p, x, y, B, NULL);
    p[i] = keep - h;
    lm = mlpForward(&m, p, x, y, B, NULL);
    p[i] = keep;
    num = (lp - lm) / (2.0 * (double)h);
    err = fabs(num - (double)g[i]) / (1e-2 + fabs(num)); /* float32 noise ~1e-5 absolute */
    if (err > worst) worst = err;
    if (err > 1e-2) {
      bad++;
      printf("      param %zu: analytic %.6g numeric %.6g\n", i, (double)g[i], num);
    }
  }
  if (rank_ == 0)
    printf("      gradient check: %zu parameters, worst relative error %.2e, %zu over 1e-2\n",
           m.nparams, worst, bad);
  check(bad == 0, "MLP gradients match central finite differences");
  free(p);
  free(g);
  mlpFree(&m);
}

/* The same for the regression head (restarts_regression): linear outputs, MSE. */
static void testGradientsMSE(void) {
  size_t sizes[4] = {3, 6, 5, 2};
  const size_t B = 4;
  mlp_t m;
  float *p, *g, x[4 * 3], t[4 * 2];
  size_t i, bad = 0;
  double worst = 0.0;
  mlpInit(&m, 3, sizes, B);
  p = (float*)malloc(m.nparams * sizeof(float));
  g = (float*)malloc(m.nparams * sizeof(float));
  mlpInitParams(&m, p, 11);
  for (i = 0; i < m.nparams; i++) p[i] = p[i] + (float)(0.1 * (urand() - 0.5));
  for (i = 0; i < B * 3; i++) x[i] = (float)(2.0 * urand() - 1.0);
  for (i = 0; i < B * 2; i++) t[i] = (float)(2.0 * urand() - 1.0);
  mlpLossGradMSE(&m, p, x, t, B, g);
  for (i = 0; i < m.nparams; i++) {
    const float h = 1e-3f;
    float keep = p[i];
    double lp, lm, num, err;
    p[i] = keep + h;
    lp = mlpLossGradMSE(&m, p, x, t, B, NULL);
    p[i] = keep - h;
    lm = mlpLossGradMSE(&m, p, x, t, B, NULL);
    p[i] = keep;
    num = (lp - lm) / (2.0 * (double)h);
    err = fabs(num - (double)g[i]) / (1e-2 + fabs(num)); /* float32 noise ~1e-5 absolute */
    if (err > worst) worst = err;
    if (err > 1e-2) bad++;
  }
  if (rank_ == 0)
    printf("      MSE gradient check: %zu parameters, worst relative error %.2e, %zu over 1e-2\n",
           m.nparams, worst, bad);
  check(bad == 0, "MLP regression (MSE) gradients match central finite differences");
  free(p);
  free(g);
  mlpFree(&m);
}

/* ------------------------------------------------------------ 2. tiny training run */
static double tinyRun(int compressor, int feedback, int importance, int* replicasEqual) {
  size_t sizes[4] = {20, 32, 32, 4};
  const size_t B = 16, N = 256, steps = 240, epochLen = N / B;
  mlp_t m;
  float *p, *g, *probe, *gp, *mom, *x, cent[4 * 20];
  unsigned char* y;
  size_t counts[6], i, s, j;
  double first = 0.0, last = 0.0;
  sparcclComm_t comm;
  sparcclConfig_t cfg = SPARCCL_CONFIG_INITIALIZER;
  uint64_t sum[2] = {0, 0}, mine[2] = {0, 0};

  mlpInit(&m, 3, sizes, B);
  mlpLayout(&m, counts);
  p = (float*)malloc(m.nparams * sizeof(float));
  g = (float*)malloc(m.nparams * sizeof(float));
  probe = (float*)malloc(m.nparams * sizeof(float));
  gp = (float*)malloc(m.nparams * sizeof(float));
  mom = (float*)calloc(m.nparams, sizeof(float));
  x = (float*)malloc(N * 20 * sizeof(float));
  y = (unsigned char*)malloc(N);
  rs_ = 1234567; /* same class centres on every rank, own samples per rank */
  for (i = 0; i < 4 * 20; i++) cent[i] = (float)(2.0 * urand() - 1.0);
  rs_ = 99991 + 7919ULL * (uint64_t)rank_;
  for (i = 0; i < N; i++) {
    y[i] = (unsigned char)(urand() * 4.0);
    for (j = 0; j < 20; j++) x[i * 20 + j] = cent[y[i] * 20 + j] + (float)(0.8 * (urand() - 0.5));
  }
  mlpInitParams(&m, p, 3);

  cfg.density = 0.05;
  cfg.compressor = compressor;
  cfg.feedback = feedback;
  cfg.importance = importance;
  cfg.minSparseCount = 0; /* every layer sparse, even the 4 biases of the last layer */
  cfg.importanceGamma = 0.1;
  cfg.importanceEta = 1000.0;
  if (sparcclCommInitMpi(&comm, MPI_COMM_WORLD, &cfg) != sparcclSuccess ||
      sparcclRegisterLayout(comm, g, 6, counts) != sparcclSuccess) {
    check(0, "sparccl comm creation");
    return 1e30;
  }
  for (s = 0; s < steps; s++) {
    size_t b = s % epochLen;
    const float* xb = x + b * B * 20;
    double loss = mlpLossGrad(&m, p, xb, y + b * B, B, g);
    if (importance != sparcclImportanceNone && b == 0) {
      int k;
      sparcclImportanceReset(comm, g, m.nparams);
      for (k = 0; k < 3; k++) {
        sparcclImportanceProbe(p, g, probe, m.nparams, sparcclFloat32, comm, NULL);
        mlpLossGrad(&m, probe, xb, y + b * B, B, gp);
        sparcclImportanceUpdate(gp, g, m.nparams, sparcclFloat32, comm, NULL);
      }
    }
    if (sparcclAllReduce(g, g, m.nparams, sparcclFloat32, sparcclAvg, comm, NULL) != sparcclSuccess) {
      check(0, "sparcclAllReduce");
      break;
    }
    for (i = 0; i < m.nparams; i++) {
      mom[i] = 0.9f * mom[i] + g[i];
      p[i] = p[i] - 0.1f * mom[i];
    }
    if (s < 10) first += loss / 10.0;
    if (s >= steps - 10) last += loss / 10.0;
  }
  /* Replicas: every rank's parameters must be bitwise identical. */
  for (i = 0; i < m.nparams; i++) {
    uint32_t u;
    memcpy(&u, &p[i], 4);
    mine[0] = mine[0] * 1000003ULL + u;
  }
  mine[1] = ~mine[0];
  MPI_Allreduce(mine, sum, 2, MPI_UINT64_T, MPI_BAND, MPI_COMM_WORLD);
  *replicasEqual = sum[0] == mine[0] && sum[1] == mine[1];
  {
    double l[1] = {last};
    MPI_Allreduce(MPI_IN_PLACE, l, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    last = l[0] / nranks_;
    l[0] = first;
    MPI_Allreduce(MPI_IN_PLACE, l, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    first = l[0] / nranks_;
  }
  if (rank_ == 0) printf("      loss over the first 10 steps %.4f, last 10 steps %.4f\n", first, last);
  sparcclCommDestroy(comm);
  free(p);
  free(g);
  free(probe);
  free(gp);
  free(mom);
  free(x);
  free(y);
  mlpFree(&m);
  return first > 0 && last < 0.5 * first ? 1.0 : 0.0;
}

static void testTraining(void) {
  int eq = 0;
  double ok = tinyRun(sparcclImpK, sparcclFeedbackSCAM, sparcclImportanceCube, &eq);
  check(ok == 1.0, "tiny run, SCAM-ImpK_c at 5%: loss falls below half its start");
  check(eq, "tiny run, SCAM-ImpK_c: model replicas bitwise identical on every rank");
  ok = tinyRun(sparcclTopK, sparcclFeedbackEF, sparcclImportanceNone, &eq);
  check(ok == 1.0, "tiny run, EF-TopK at 5%: loss falls below half its start");
  check(eq, "tiny run, EF-TopK: model replicas bitwise identical on every rank");
}

/* ------------------------------------------------------------ 3. IDX loader */
static void putBE(unsigned char* p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* An images file of n 28x28 random bytes: gzip when gz, else plain. */
static void writeImages(const char* path, size_t n, uint32_t magic, int gz, size_t cut) {
  size_t len = 16 + n * 784, i;
  unsigned char* buf = (unsigned char*)malloc(len);
  putBE(buf, magic);
  putBE(buf + 4, (uint32_t)n);
  putBE(buf + 8, 28);
  putBE(buf + 12, 28);
  for (i = 16; i < len; i++) buf[i] = (unsigned char)(urand() * 256.0);
  if (gz) {
    gzFile f = gzopen(path, "wb");
    gzwrite(f, buf, (unsigned)len);
    gzclose(f);
  } else {
    FILE* f = fopen(path, "wb");
    fwrite(buf, 1, len - cut, f);
    fclose(f);
  }
  free(buf);
}

static long fileSize(const char* path) {
  FILE* f = fopen(path, "rb");
  long n;
  if (f == NULL) return -1;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fclose(f);
  return n;
}

static void expectReject(const char* path, const char* what) {
  idxData_t d;
  char err[512] = "";
  int r = idxLoad(path, 3, 28, 28, &d, err, sizeof err);
  char line[700];
  printf("      %s -> %s\n", what, r == 0 ? "(accepted)" : err);
  snprintf(line, sizeof line, "IDX loader rejects %s with a message", what);
  check(r != 0 && err[0] != '\0', line);
  if (r == 0) idxFree(&d);
}

static void testLoader(void) {
  char good[256], path[256];
  idxData_t d;
  char err[512] = "";
  long n;
  int r;
  FILE* f;
  snprintf(good, sizeof good, "/tmp/fmnist_test_%ld_good.gz", (long)getpid());
  writeImages(good, 20, 0x803, 1, 0);
  r = idxLoad(good, 3, 28, 28, &d, err, sizeof err);
  check(r == 0 && d.n == 20 && d.rows == 28 && d.cols == 28, "IDX loader reads a valid gzip file");
  if (r == 0) idxFree(&d);
  else printf("      %s\n", err);

  /* truncated gzip: the first half of the compressed stream */
  n = fileSize(good);
  snprintf(path, sizeof path, "/tmp/fmnist_test_%ld_trunc.gz", (long)getpid());
  {
    FILE* in = fopen(good, "rb");
    unsigned char* b = (unsigned char*)malloc((size_t)n);
    size_t got = fread(b, 1, (size_t)n, in);
    fclose(in);
    f = fopen(path, "wb");
    fwrite(b, 1, got / 2, f);
    fclose(f);
    expectReject(path, "a truncated gzip file");
    /* corrupt gzip: bytes flipped in the middle of the deflate data */
    b[got / 2] ^= 0xff;
    b[got / 2 + 1] ^= 0x5a;
    f = fopen(path, "wb");
    fwrite(b, 1, got, f);
    fclose(f);
    expectReject(path, "a corrupt gzip file (flipped bytes)");
    /* trailing garbage appended to a valid plain file */
    free(b);
  }
  snprintf(path, sizeof path, "/tmp/fmnist_test_%ld_plain", (long)getpid());
  writeImages(path, 5, 0x803, 0, 100);
  expectReject(path, "a truncated uncompressed file");
  writeImages(path, 5, 0x802, 0, 0);
  expectReject(path, "a file with a bad magic number");
  writeImages(path, 5, 0x803, 0, 0);
  f = fopen(path, "ab");
  fputc(42, f);
  fclose(f);
  expectReject(path, "a file with trailing bytes");
  f = fopen(path, "wb");
  fwrite("\0\0\x08", 1, 3, f);
  fclose(f);
  expectReject(path, "a 3-byte file");
  expectReject("/nonexistent/fmnist.gz", "a missing file");
  writeImages(path, 5, 0x803, 0, 0);
  r = idxLoad(path, 3, 28, 28, &d, err, sizeof err);
  check(r == 0 && d.n == 5, "IDX loader reads a valid uncompressed file");
  if (r == 0) idxFree(&d);
  remove(path);
  snprintf(path, sizeof path, "/tmp/fmnist_test_%ld_trunc.gz", (long)getpid());
  remove(path);
  remove(good);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
  if (rank_ == 0) {
    testGradients();
    testGradientsMSE();
  }
  testTraining();
  if (rank_ == 0) testLoader();
  MPI_Allreduce(MPI_IN_PLACE, &failures_, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank_ == 0) printf("fmnist tests (%d ranks): %s\n", nranks_, failures_ ? "FAIL" : "PASS");
  MPI_Finalize();
  return failures_ ? 1 : 0;
}
