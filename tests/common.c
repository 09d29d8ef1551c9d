#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include "common.h"
#include "sparccl_math.h"

sparcclConfig_t test_config(int compressor, int feedback, double density, size_t minSparse) {
  sparcclConfig_t c = SPARCCL_CONFIG_INITIALIZER;
  c.compressor = compressor;
  c.feedback = feedback;
  c.density = density;
  c.minSparseCount = minSparse;
  c.wireType = sparcclFloat32;
  c.seed = 0;
  c.sharedRandomness = 0;
  c.importance = sparcclImportanceNone;
  c.warmupSteps = 0;
  c.momentum = 0.9;
  return c;
}

static sparcclComm_t make(MPI_Comm world, const sparcclConfig_t* config) {
  sparcclComm_t comm = NULL;
  sparcclResult_t r = sparcclCommInitMpi(&comm, world, config);
  ck_assert_msg(r == sparcclSuccess, "sparcclCommInitMpi: %s", sparcclGetErrorString(r));
  return comm;
}
sparcclComm_t test_comm_self(const sparcclConfig_t* config) { return make(MPI_COMM_SELF, config); }
sparcclComm_t test_comm_world(const sparcclConfig_t* config) { return make(MPI_COMM_WORLD, config); }

int test_agree_all(int ok, const char* what, const char* file, int line) {
  int all = 0, rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (!ok) fprintf(stderr, "[rank %d] %s:%d: check failed: %s\n", rank, file, line, what);
  MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all;
}

#define AGREE(cond) (ok &= test_agree_all((cond) ? 1 : 0, #cond, file, __LINE__))
int test_disagreeing_call(const sparcclConfig_t* config, int kind, const char* file) {
  const size_t count = 4000;
  float *g = malloc(count * 4), *other = malloc(count * 4), *o1 = malloc(count * 4);
  float *o2 = malloc(count * 4), *before = malloc(count * 4);
  sparcclComm_t comm = NULL, twin = NULL;
  int rank, size, ok = 1, bad, op;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  bad = rank == size - 1;
  op = kind == 0 && bad ? sparcclAvg : sparcclSum;
  AGREE(g && other && o1 && o2 && before);
  AGREE(sparcclCommInitMpi(&comm, MPI_COMM_WORLD, config) == sparcclSuccess);
  AGREE(sparcclCommInitMpi(&twin, MPI_COMM_WORLD, config) == sparcclSuccess);
  AGREE(sparcclRegisterLayout(comm, other, 1, &count) == sparcclSuccess);
  test_fill_normal(g, count, 11u + (uint64_t)rank);
  AGREE(sparcclAllReduce(g, o1, count, sparcclFloat32, sparcclSum, comm, NULL) == sparcclSuccess);
  AGREE(sparcclAllReduce(g, o2, count, sparcclFloat32, sparcclSum, twin, NULL) == sparcclSuccess);
  memcpy(other, g, count * 4);
  memcpy(before, o1, count * 4);
  AGREE(sparcclAllReduce(kind == 1 && bad ? other : g, o1, count, sparcclFloat32, op, comm, NULL) ==
        sparcclInvalidUsage);
  AGREE(memcmp(o1, before, count * 4) == 0);
  test_fill_normal(g, count, 12u + (uint64_t)rank);
  AGREE(sparcclAllReduce(g, o1, count, sparcclFloat32, sparcclSum, comm, NULL) == sparcclSuccess);
  AGREE(sparcclAllReduce(g, o2, count, sparcclFloat32, sparcclSum, twin, NULL) == sparcclSuccess);
  AGREE(memcmp(o1, o2, count * 4) == 0);
  AGREE(sparcclCommDestroy(comm) == sparcclSuccess && sparcclCommDestroy(twin) == sparcclSuccess);
  free(g); free(other); free(o1); free(o2); free(before);
  return ok;
}
#undef AGREE

float test_random_normal(uint64_t* s) {
  /* sum of 4 uniforms, centred and scaled: enough for test inputs */
  double sum = 0.0;
  int i;
  for (i = 0; i < 4; i++) sum += (double)(test_random_u64(s) >> 11) * (1.0 / 9007199254740992.0);
  return (float)((sum - 2.0) * 1.7320508075688772);
}

void test_fill_normal(float* x, size_t n, uint64_t seed) {
  size_t i;
  for (i = 0; i < n; i++) x[i] = test_random_normal(&seed);
}

long test_first_difference(const float* a, const float* b, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return (long)i;
  return -1;
}

size_t test_dtype_size(int dtype) { return dtype == sparcclFloat32 ? 4 : 2; }

void test_store_value(void* p, size_t i, int dtype, float v) {
  if (dtype == sparcclFloat32) ((float*)p)[i] = v;
  else if (dtype == sparcclFloat16) ((uint16_t*)p)[i] = sparccl_float_to_half(v, 0);
  else ((uint16_t*)p)[i] = sparccl_float_to_bfloat16(v, 0);
}

int test_is_nan(const void* p, size_t i, int dtype) {
  if (dtype == sparcclFloat32) return isnan(((const float*)p)[i]);
  {
    uint16_t b = ((const uint16_t*)p)[i];
    if (dtype == sparcclFloat16) return (b & 0x7c00u) == 0x7c00u && (b & 0x03ffu) != 0;
    return (b & 0x7f80u) == 0x7f80u && (b & 0x007fu) != 0;
  }
}

long test_mismatch(const void* a, const void* b, size_t n, int dtype) {
  size_t i, sz = test_dtype_size(dtype);
  for (i = 0; i < n; i++) {
    if (memcmp((const char*)a + i * sz, (const char*)b + i * sz, sz) == 0) continue;
    if (test_is_nan(a, i, dtype) && test_is_nan(b, i, dtype)) continue;
    return (long)i;
  }
  return -1;
}
