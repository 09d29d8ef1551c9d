/*
 * A plain MPI program (no sparccl headers) for libsparccl_mpi_preload.so:
 *
 *   mpirun -np N [-x LD_PRELOAD=libsparccl_mpi_preload.so -x SPARCCL_...] \
 *       preload_allreduce_check PREFIX sparse|dense
 *
 * It mixes the traffic of a trainer: a scalar loss, small buffers, MPI_DOUBLE, MPI_MAX,
 * MPI_IN_PLACE, one element under the threshold and large float32 gradients, on
 * MPI_COMM_WORLD and on sub-communicators that are freed and created again.  It checks
 * itself that every call the preload must pass through is bitwise what plain MPI
 * (PMPI_Allreduce) gives, that the scalar loss is the exact sum, that every rank holds the
 * same output, and that the large float32 sums are sparse ("sparse": preloaded) or dense
 * ("dense": no preload, or SPARCCL_PRELOAD_ENABLE=0).  The outputs of the large sums go to
 * PREFIX_r<rank>.bin.
 *
 * Built with -DPRELOAD_CHECK_DIRECT (mode "direct"), the same source calls
 * sparcclAllReduce itself exactly where the preload would (same keys, the same
 * SPARCCL_PRELOAD_LAYER chunking, the same config from SPARCCL_*), so the two files can be
 * compared bitwise.  Assumes the default SPARCCL_PRELOAD_MIN_COUNT=65536.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include "../test_rng.h"
#ifdef PRELOAD_CHECK_DIRECT
#include "sparccl_mpi.h"
#endif

#define GRAD_COUNT 100000
#define INPLACE_COUNT 70000
#define EDGE_COUNT 65536 /* exactly the threshold: taken */
#define SUB_COUNT 80000
#define SMALL_COUNT 1000

static int rank, nranks, failures = 0;
static const char* mode;
static FILE* out;

#define CHECK(cond, ...)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      failures++;                                                                   \
      fprintf(stderr, "rank %d: FAIL line %d: ", rank, __LINE__);                   \
      fprintf(stderr, __VA_ARGS__);                                                 \
      fputc('\n', stderr);                                                          \
    }                                                                               \
  } while (0)

/* A hash of x: the first word of the tests' generator seeded with x. */
static uint64_t mix(uint64_t x) { return test_random_u64(&x); }

/* A gradient-like value of rank r at step s: signed, magnitudes over several decades. */
static float value(int r, int s, size_t i) {
  uint64_t h = mix(((uint64_t)(unsigned)r << 48) ^ ((uint64_t)(unsigned)s << 32) ^ (uint64_t)i);
  float mant = (float)(int32_t)(uint32_t)(h >> 32) / 2147483648.0f;
  float scale = (float)(1u << (h & 7u)) / 128.0f;
  return mant * scale;
}

static void fill(float* x, size_t n, int r, int s) {
  size_t i;
  for (i = 0; i < n; i++) x[i] = value(r, s, i);
}

static uint64_t hashBytes(const void* p, size_t bytes) {
  const unsigned char* c = (const unsigned char*)p;
  uint64_t h = 1469598103934665603ULL;
  size_t i;
  for (i = 0; i < bytes; i++) h = (h ^ c[i]) * 1099511628211ULL;
  return h;
}

/* Every rank of comm holds the same bytes (two passed-through allreduces of a hash). */
static int sameOnAll(const void* p, size_t bytes, MPI_Comm comm) {
  unsigned long long h = hashBytes(p, bytes), lo, hi;
  MPI_Allreduce(&h, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, comm);
  MPI_Allreduce(&h, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, comm);
  return lo == h && hi == h;
}

static size_t nonzeros(const float* x, size_t n) {
  size_t i, c = 0;
  for (i = 0; i < n; i++) c += x[i] != 0.0f;
  return c;
}

/* ------------------------------------------------------------ the large float32 sums */
#ifdef PRELOAD_CHECK_DIRECT
static struct { MPI_Comm mpi; sparcclComm_t comm; } direct[8];
static int ndirect = 0;

static sparcclComm_t directComm(MPI_Comm mpi) {
  int i;
  sparcclResult_t res;
  for (i = 0; i < ndirect; i++)
    if (direct[i].mpi == mpi) return direct[i].comm;
  res = sparcclCommInitMpi(&direct[ndirect].comm, mpi, NULL);
  if (res != sparcclSuccess) {
    fprintf(stderr, "rank %d: sparcclCommInitMpi: %s\n", rank, sparcclGetErrorString(res));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  direct[ndirect].mpi = mpi;
  return direct[ndirect++].comm;
}

static void directFree(MPI_Comm mpi) {
  int i;
  for (i = 0; i < ndirect; i++)
    if (direct[i].mpi == mpi) {
      sparcclCommDestroy(direct[i].comm);
      direct[i] = direct[--ndirect];
      return;
    }
}
#endif

/* What the preload does with MPI_Allreduce(send, recv, count, MPI_FLOAT, MPI_SUM, comm)
 * when count >= SPARCCL_PRELOAD_MIN_COUNT. */
static void gradAllreduce(const void* send, float* recv, int count, MPI_Comm comm) {
#ifdef PRELOAD_CHECK_DIRECT
  sparcclComm_t c = directComm(comm);
  const void* key = send == MPI_IN_PLACE ? (const void*)recv : send;
  const char* chunkText = getenv("SPARCCL_PRELOAD_LAYER");
  size_t chunk = chunkText ? (size_t)strtoull(chunkText, NULL, 10) : 0;
  sparcclResult_t res = sparcclSuccess;
  if (chunk > 0 && (size_t)count > chunk) {
    size_t n = ((size_t)count + chunk - 1) / chunk, i;
    size_t* counts = (size_t*)malloc(n * sizeof(size_t));
    for (i = 0; i < n; i++) counts[i] = chunk;
    counts[n - 1] = (size_t)count - (n - 1) * chunk;
    res = sparcclRegisterLayout(c, key, n, counts);
    free(counts);
  }
  if (res == sparcclSuccess)
    res = sparcclAllReduce(key, recv, (size_t)count, sparcclFloat32, sparcclSum, c, NULL);
  if (res != sparcclSuccess) {
    fprintf(stderr, "rank %d: sparccl: %s\n", rank, sparcclGetErrorString(res));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
#else
  MPI_Allreduce(send, recv, count, MPI_FLOAT, MPI_SUM, comm);
#endif
}

static void freeComm(MPI_Comm* comm) {
#ifdef PRELOAD_CHECK_DIRECT
  directFree(*comm);
#endif
  MPI_Comm_free(comm);
}

/* One large float32 sum: run it, check it, record it.  input is this rank's gradient
 * (for in place, recv holds it on entry). */
static void bigSum(const char* what, const float* input, float* recv, int count, int inPlace,
                   MPI_Comm comm) {
  float* dense = (float*)malloc((size_t)count * sizeof(float));
  size_t nz;
  PMPI_Allreduce(input, dense, count, MPI_FLOAT, MPI_SUM, comm); /* plain MPI's answer */
  gradAllreduce(inPlace ? MPI_IN_PLACE : (const void*)input, recv, count, comm);
  nz = nonzeros(recv, (size_t)count);
  CHECK(sameOnAll(recv, (size_t)count * sizeof(float), comm),
        "%s: the ranks' outputs differ", what);
  if (strcmp(mode, "dense") == 0) {
    CHECK(memcmp(recv, dense, (size_t)count * sizeof(float)) == 0,
          "%s: not bitwise plain MPI's sum", what);
  } else {
    /* density 1% per layer, <= 4 ranks, <= 3 steps of ef21's accumulation: far below half */
    CHECK(nz < (size_t)count / 2, "%s: %zu of %d nonzero: not sparsified", what, nz, count);
    CHECK(nz > 0, "%s: all zero", what);
  }
  if (fwrite(recv, sizeof(float), (size_t)count, out) != (size_t)count) {
    fprintf(stderr, "rank %d: cannot write the output file\n", rank);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  free(dense);
}

/* ------------------------------------------------------------ passed-through calls */
static void passThrough(int step) {
  float loss = 0.25f * (float)(rank + 1), lossSum = -1.0f;
  float expectLoss = 0.25f * (float)(nranks * (nranks + 1) / 2);
  float small[SMALL_COUNT], smallOut[SMALL_COUNT], smallRef[SMALL_COUNT];
  /* The same buffers every step, as a trainer's (the decision log is per buffer). */
  static float under[EDGE_COUNT - 1], underOut[EDGE_COUNT - 1], underRef[EDGE_COUNT - 1];
  static double d[GRAD_COUNT], dOut[GRAD_COUNT], dRef[GRAD_COUNT];
  static float m[GRAD_COUNT], mOut[GRAD_COUNT], mRef[GRAD_COUNT];
  double inPlace[16], inPlaceRef[16];
  int ints[4], intsOut[4];
  size_t i;
  int r;

  /* The scalar loss: exactly the dense sum. */
  MPI_Allreduce(&loss, &lossSum, 1, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  CHECK(lossSum == expectLoss, "loss: %.9g, expected %.9g", (double)lossSum, (double)expectLoss);

  /* Small float32 sum. */
  fill(small, SMALL_COUNT, rank, 100 + step);
  MPI_Allreduce(small, smallOut, SMALL_COUNT, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  PMPI_Allreduce(small, smallRef, SMALL_COUNT, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  CHECK(memcmp(smallOut, smallRef, sizeof(smallOut)) == 0, "small float sum differs from MPI");

  /* One element under the threshold. */
  fill(under, EDGE_COUNT - 1, rank, 200 + step);
  MPI_Allreduce(under, underOut, EDGE_COUNT - 1, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  PMPI_Allreduce(under, underRef, EDGE_COUNT - 1, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  CHECK(memcmp(underOut, underRef, (EDGE_COUNT - 1) * sizeof(float)) == 0,
        "count %d (under the threshold) differs from MPI", EDGE_COUNT - 1);

  /* Large MPI_DOUBLE sum. */
  for (i = 0; i < GRAD_COUNT; i++) d[i] = (double)value(rank, 300 + step, i) * 1.000001;
  MPI_Allreduce(d, dOut, GRAD_COUNT, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  PMPI_Allreduce(d, dRef, GRAD_COUNT, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  CHECK(memcmp(dOut, dRef, GRAD_COUNT * sizeof(double)) == 0, "double sum differs from MPI");

  /* Large float32 MPI_MAX: exactly the maximum (each rank knows every rank's input). */
  fill(m, GRAD_COUNT, rank, 400 + step);
  MPI_Allreduce(m, mOut, GRAD_COUNT, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
  PMPI_Allreduce(m, mRef, GRAD_COUNT, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
  CHECK(memcmp(mOut, mRef, GRAD_COUNT * sizeof(float)) == 0, "float max differs from MPI");
  for (i = 0; i < GRAD_COUNT; i++) {
    float best = value(0, 400 + step, i);
    for (r = 1; r < nranks; r++) if (value(r, 400 + step, i) > best) best = value(r, 400 + step, i);
    if (mOut[i] != best) { CHECK(0, "float max at %zu: %g, expected %g", i, (double)mOut[i], (double)best); break; }
  }

  /* MPI_IN_PLACE on a passed-through call. */
  for (i = 0; i < 16; i++) inPlace[i] = (double)value(rank, 500 + step, i);
  PMPI_Allreduce(inPlace, inPlaceRef, 16, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, inPlace, 16, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  CHECK(memcmp(inPlace, inPlaceRef, sizeof(inPlace)) == 0, "in-place double sum differs from MPI");

  /* Integers: exact. */
  for (i = 0; i < 4; i++) ints[i] = rank * 10 + (int)i;
  MPI_Allreduce(ints, intsOut, 4, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  for (i = 0; i < 4; i++)
    CHECK(intsOut[i] == 10 * nranks * (nranks - 1) / 2 + nranks * (int)i, "int sum %zu", i);

}

int main(int argc, char** argv) {
  char path[4096];
  float *grad, *gradOut, *inplace, *inplaceInput, *edge, *edgeOut, *sub, *subOut;
  int step, round, total;
  MPI_Comm subComm;

  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  if (argc != 3) {
    if (rank == 0) fprintf(stderr, "usage: %s PREFIX sparse|dense|direct\n", argv[0]);
    MPI_Finalize();
    return 2;
  }
  mode = argv[2];
  snprintf(path, sizeof(path), "%s_r%d.bin", argv[1], rank);
  out = fopen(path, "wb");
  if (out == NULL) { fprintf(stderr, "cannot open %s\n", path); MPI_Abort(MPI_COMM_WORLD, 1); }

  grad = (float*)malloc(GRAD_COUNT * sizeof(float));
  gradOut = (float*)malloc(GRAD_COUNT * sizeof(float));
  inplace = (float*)malloc(INPLACE_COUNT * sizeof(float));
  inplaceInput = (float*)malloc(INPLACE_COUNT * sizeof(float));
  edge = (float*)malloc(EDGE_COUNT * sizeof(float));
  edgeOut = (float*)malloc(EDGE_COUNT * sizeof(float));
  sub = (float*)malloc(SUB_COUNT * sizeof(float));
  subOut = (float*)malloc(SUB_COUNT * sizeof(float));

  for (step = 0; step < 3; step++) {
    passThrough(step);
    fill(grad, GRAD_COUNT, rank, step);
    bigSum("gradient", grad, gradOut, GRAD_COUNT, 0, MPI_COMM_WORLD);
    if (step < 2) {
      fill(inplaceInput, INPLACE_COUNT, rank, 10 + step);
      memcpy(inplace, inplaceInput, INPLACE_COUNT * sizeof(float));
      bigSum("in place", inplaceInput, inplace, INPLACE_COUNT, 1, MPI_COMM_WORLD);
    }
  }
  fill(edge, EDGE_COUNT, rank, 20);
  bigSum("threshold", edge, edgeOut, EDGE_COUNT, 0, MPI_COMM_WORLD);

  /* A sub-communicator, freed and created again with the same buffer: the second one must
   * start from fresh state, as a new sparccl comm does. */
  for (round = 0; round < 2; round++) {
    MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &subComm);
    for (step = 0; step < 2; step++) {
      fill(sub, SUB_COUNT, rank, 30 + step);
      bigSum("sub-communicator", sub, subOut, SUB_COUNT, 0, subComm);
    }
    freeComm(&subComm);
  }

  fclose(out);
#ifdef PRELOAD_CHECK_DIRECT
  directFree(MPI_COMM_WORLD);
#endif
  MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0)
    printf("preload check (%s, %d ranks): %s\n", mode, nranks,
           total == 0 ? "all checks passed" : "FAILED");
  free(grad); free(gradOut); free(inplace); free(inplaceInput); free(edge); free(edgeOut);
  free(sub); free(subOut);
  MPI_Finalize();
  return total == 0 ? 0 : 1;
}
