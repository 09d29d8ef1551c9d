#include <math.h>
#include <string.h>
#include "common.h"

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

uint64_t test_random_u64(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

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
