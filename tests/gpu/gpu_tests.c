/*
 * The device suite: device comms against the CPU reference (host comms), bitwise (SPEC 3a).
 * One source, two builds:
 *   - on a GPU (mk/cuda.mk, build/bin/sparccl_gpu_tests, run by tools/gpucheck.sh): full
 *     sizes (layers up to 10 million elements, 200 layers); one rank (the multi-process
 *     one-GPU check is tests/gpu/multirank.c).  Registered only when a CUDA device is
 *     present; otherwise one line says it was not run.
 *   - on the CPU (mk/cuda_emu.mk, `make cudaemu`): the kernels of cuda/ run in the emulator
 *     (tests/cuda_emu/cuda_emu.h), built with -DSPARCCL_TEST_SCALE=0: smaller sizes (an
 *     emulated 256-thread block is slow), but every path is there: layers of one element,
 *     of several 4096-element chunks, of more than 256 chunks, dense layers among sparse
 *     ones, all-zero inputs and ties (every radix pass), keys sharing their high bits,
 *     equal 64-bit keys (all six digits; chunks with and without a run of candidates),
 *     non-finite layers, importance, restarts, save/load, graph capture; the device comm's
 *     use of streams, graphs, groups, devices, errors and non-blocking communicators
 *     (test_streams and after: the emulator holds a stream's work until it is ordered,
 *     and injects faults).
 *
 * Every comparison runs the same inputs through a host comm and a device comm, then
 * compares the outputs bitwise, the whole state through sparcclSaveState files, which must
 * be byte-identical (e, h, H, w, previous gradients, step counters, restart history), and
 * the statistics the device comm keeps on the device.
 *
 * SPARCCL_TEST_SCALE (compile time): 1 (the default) the full GPU sizes, 0 the emulator's
 * (also built for the GPU, for compute-sanitizer).  EMU_TESTS_SUBSET=select (run time) runs
 * only the selection tests (the emulator's reverse-order and random-order runs),
 * EMU_TESTS_SUBSET=sec9 only SPEC 9's (warm-up, dgc).  In the emulator build, n processes (mpirun -np n): the
 * device comm has n ranks (the fake NCCL gathers over MPI) and is compared with a host comm
 * over MPI_COMM_WORLD; the real build always runs one rank per process (MPI_COMM_SELF).
 */
#include <check.h>
#include <cuda_runtime.h>
#include <math.h>
#include <mpi.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sparccl.h"
#include "sparccl_mpi.h"
#include "sparccl_nccl.h"
#include "sparccl_math.h"
#include "../test_rng.h"

#define CUDA_OK(call) ck_assert_msg((call) == cudaSuccess, "%s failed", #call)

#ifndef SPARCCL_TEST_SCALE
#define SPARCCL_TEST_SCALE 1
#endif
/* FULL: the GPU sizes; SIZE(full, small) picks one.  Plain C conditions, not #if, so that
 * both builds compile every branch. */
#define FULL (SPARCCL_TEST_SCALE != 0)
#define SIZE(full, small) (FULL ? (full) : (small))

/* The emulator build takes these from MPI_COMM_WORLD; the real build keeps one rank. */
static int worldRank = 0, worldSize = 1;

static uint64_t rng(uint64_t* s) { return test_random_u64(s); }
static float normal(uint64_t* s) {
  double sum = 0.0;
  for (int i = 0; i < 4; i++) sum += (double)(rng(s) >> 11) * (1.0 / 9007199254740992.0);
  return (float)((sum - 2.0) * 1.7320508075688772);
}

/* Gradients in a dtype: kind 0 normal, 1 all zero, 2 few distinct values (ties),
 * 3 magnitudes sharing their high bits (1 + tiny: the radix select needs every pass),
 * 4 distinct magnitudes sharing their top 22 bits, 1 + j ulp for j < 1021, in runs of 1021
 * elements, ascending, descending, then shuffled (j = 389 i + seed, mod 1021): the boundary
 * lies in the last digit, where every key counts, and a layer of one run has its largest
 * keys at its start, at its end, or anywhere. */
static void fill(void* out, size_t n, int dtype, uint64_t seed, int kind) {
  seed += (uint64_t)worldRank * 1000003u; /* ranks differ */
  const uint64_t shift = seed % 1021;      /* kind 4's shuffle */
  for (size_t i = 0; i < n; i++) {
    float v;
    if (kind == 1) v = 0.0f;
    else if (kind == 2) v = (float)(rng(&seed) % 4) - 1.5f;
    else if (kind == 3) {
      uint64_t r = rng(&seed);
      v = sparccl_bits_float(0x3f800000u | (uint32_t)(r % 64)); /* 1 + k ulp, k < 64 */
      if (r & (1ull << 40)) v = -v;
    } else if (kind == 4) {
      uint64_t run = (i / 1021) % 3, j = i % 1021;
      j = run == 0 ? j : run == 1 ? 1020 - j : (389 * j + shift) % 1021;
      v = sparccl_bits_float(0x3f800000u | (uint32_t)j);
      if (rng(&seed) & 1u) v = -v;
    } else v = normal(&seed);
    if (dtype == sparcclFloat32) ((float*)out)[i] = v;
    else if (dtype == sparcclFloat16) ((uint16_t*)out)[i] = sparccl_float_to_half(v, 0);
    else ((uint16_t*)out)[i] = sparccl_float_to_bfloat16(v, 0);
  }
}

static sparcclConfig_t config(int compressor, int feedback, int wire, size_t minSparse) {
  sparcclConfig_t c = SPARCCL_CONFIG_INITIALIZER;
  c.compressor = compressor; c.feedback = feedback; c.wireType = wire;
  c.density = 0.01; c.minSparseCount = minSparse; c.seed = 1234;
  c.sharedRandomness = 0; c.importance = sparcclImportanceNone;
  return c;
}

static sparcclComm_t hostComm(const sparcclConfig_t* c) {
  sparcclComm_t comm;
  ck_assert_int_eq(sparcclCommInitMpi(&comm, worldSize > 1 ? MPI_COMM_WORLD : MPI_COMM_SELF, c),
                   sparcclSuccess);
  return comm;
}
/* A device comm with one or two error buffers (SPARCCL_ERROR_BUFFERS, cuda/device_set.cuh):
 * the results must not depend on it. */
static sparcclComm_t deviceCommWith(const sparcclConfig_t* c, int errorBuffers) {
  sparcclComm_t comm;
  ncclUniqueId id;
  ck_assert_int_eq(setenv("SPARCCL_ERROR_BUFFERS", errorBuffers == 1 ? "1" : "2", 1), 0);
  ck_assert_int_eq(sparcclGetUniqueId(&id), sparcclSuccess);
  ck_assert_int_eq(sparcclCommInitRank(&comm, worldSize, id, worldRank, c), sparcclSuccess);
  unsetenv("SPARCCL_ERROR_BUFFERS");
  return comm;
}
/* The same with the optimised or the plain kernels (config.deviceKernels, docs/DEVICE.md). */
static sparcclComm_t deviceCommKernels(const sparcclConfig_t* c, int errorBuffers, int kernels) {
  sparcclConfig_t with = *c;
  with.deviceKernels = kernels;
  return deviceCommWith(&with, errorBuffers);
}
/* Every other device comm has one error buffer, and every other pair the plain kernels, so
 * each test with several comms runs every way (the same sequence on every rank). */
static sparcclComm_t deviceComm(const sparcclConfig_t* c) {
  static int created = 0;
  const int n = created++;
  return deviceCommKernels(c, 1 + (n & 1), (n >> 1) & 1);
}

static void* readFile(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  void* data;
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  data = malloc(*size);
  ck_assert_uint_eq(fread(data, 1, *size, f), *size);
  fclose(f);
  return data;
}

static long firstDifference(const void* a, const void* b, size_t bytes) {
  const unsigned char *x = (const unsigned char*)a, *y = (const unsigned char*)b;
  for (size_t i = 0; i < bytes; i++)
    if (x[i] != y[i]) return (long)i;
  return -1;
}

/* Save both comms' state and compare the files byte for byte, and the stats (bytesSent
 * too unless the device's calls were the phase API's while the host's were one-calls: their
 * dense calls differ in what they send, SPEC 10). */
static void assertSameStateOf(sparcclComm_t host, sparcclComm_t device, const char* what,
                              int sameBytesSent) {
  char a[] = "/tmp/sparccl_gpu_hostXXXXXX", b[] = "/tmp/sparccl_gpu_devXXXXXX";
  size_t na, nb;
  int fa = mkstemp(a), fb = mkstemp(b);
  close(fa); close(fb);
  ck_assert_int_eq(sparcclSaveState(host, a), sparcclSuccess);
  ck_assert_int_eq(sparcclSaveState(device, b), sparcclSuccess);
  unsigned char* da = (unsigned char*)readFile(a, &na);
  unsigned char* db = (unsigned char*)readFile(b, &nb);
  /* every byte but the save id (at 64, each save's own) and the checksum over it */
  ck_assert(na == nb && na > 80);
  memset(da + 64, 0, 8); memset(db + 64, 0, 8);
  long at = firstDifference(da, db, na - 8);
  free(da); free(db);
  unlink(a); unlink(b);
  ck_assert_msg(na == nb && at < 0, "%s: device state differs from the CPU reference (sizes %zu/%zu, "
                "first byte %ld)", what, na, nb, at);
  {
    /* the counters a device comm keeps on the device match the host's */
    sparcclStats_t hs, ds;
    ck_assert_int_eq(sparcclCommGetStats(host, &hs), sparcclSuccess);
    ck_assert_int_eq(sparcclCommGetStats(device, &ds), sparcclSuccess);
    ck_assert_msg(hs.calls == ds.calls && (!sameBytesSent || hs.bytesSent == ds.bytesSent) &&
                  hs.bytesDense == ds.bytesDense && hs.skippedSteps == ds.skippedSteps &&
                  hs.restarts == ds.restarts && hs.layerSets == ds.layerSets,
                  "%s: stats differ: calls %llu/%llu sent %llu/%llu dense %llu/%llu skipped "
                  "%llu/%llu restarts %llu/%llu", what, hs.calls, ds.calls, hs.bytesSent,
                  ds.bytesSent, hs.bytesDense, ds.bytesDense, hs.skippedSteps, ds.skippedSteps,
                  hs.restarts, ds.restarts);
  }
}

static void assertSameState(sparcclComm_t host, sparcclComm_t device, const char* what) {
  assertSameStateOf(host, device, what, 1);
}

static void assertSameOutput(const void* device, const void* host, size_t bytes, size_t dsize,
                             const char* what, int step) {
  long at = firstDifference(device, host, bytes);
  ck_assert_msg(at < 0, "%s: step %d output differs from the CPU reference at element %ld",
                what, step, at < 0 ? -1 : at / (long)dsize);
}

/* One float32 SUM step with fresh gradients on both comms (h -> out on the host, d -> dout on
 * the device; d == dout in place), outputs compared bitwise. */
static void stepBoth(sparcclComm_t host, sparcclComm_t device, float* h, float* out, float* d,
                     float* dout, float* back, size_t count, uint64_t seed, const char* what,
                     int step) {
  size_t bytes = count * sizeof(float);
  fill(h, count, sparcclFloat32, seed, 0);
  CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
  ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
  ck_assert_int_eq(sparcclAllReduce(d, dout, count, sparcclFloat32, sparcclSum, device, NULL), sparcclSuccess);
  CUDA_OK(cudaMemcpy(back, dout, bytes, cudaMemcpyDeviceToHost));
  assertSameOutput(back, out, bytes, 4, what, step);
}

/* One device comm's buffers for compareRun. */
typedef struct {
  sparcclComm_t comm;
  void *send, *recv;
} DeviceRun;

static DeviceRun deviceRun(sparcclComm_t comm, size_t bytes, int inPlace, size_t nlayers,
                           const size_t* counts) {
  DeviceRun r = {comm, NULL, NULL};
  CUDA_OK(cudaMalloc(&r.send, bytes));
  r.recv = r.send;
  if (!inPlace) CUDA_OK(cudaMalloc(&r.recv, bytes));
  ck_assert_int_eq(sparcclRegisterLayout(comm, r.send, nlayers, counts), sparcclSuccess);
  return r;
}

/* One call of `run` on the host's gradients, its output copied back into `out`. */
static void deviceStep(const DeviceRun* run, const void* hsend, void* out, size_t count, int dtype,
                       int op, cudaStream_t stream) {
  const size_t bytes = count * sparccl_dtype_size(dtype);
  CUDA_OK(cudaMemcpy(run->send, hsend, bytes, cudaMemcpyHostToDevice));
  ck_assert_int_eq(sparcclAllReduce(run->send, run->recv, count, dtype, op, run->comm, stream), sparcclSuccess);
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaMemcpy(out, run->recv, bytes, cudaMemcpyDeviceToHost));
}

static void freeRun(DeviceRun* run, int inPlace) {
  sparcclCommDestroy(run->comm);
  cudaFree(run->send);
  if (!inPlace) cudaFree(run->recv);
}

/* Run `steps` calls with fresh random gradients on the host comm and two device comms, the
 * optimised kernels and the plain ones (docs/DEVICE.md); every output and the saved state
 * compared bitwise, each device comm with the host and the two with each other. */
static void compareRun(const sparcclConfig_t* c, size_t nlayers, const size_t* counts,
                       int dtype, int op, int inPlace, int steps, uint64_t seed, int kind,
                       const char* what) {
  static int created = 0;
  size_t count = 0, bytes, dsize = sparccl_dtype_size(dtype);
  char plainWhat[160];
  for (size_t i = 0; i < nlayers; i++) count += counts[i];
  bytes = count * dsize;
  snprintf(plainWhat, sizeof(plainWhat), "%s (plain kernels)", what);
  sparcclComm_t host = hostComm(c);
  void *hsend = malloc(bytes), *hrecv = malloc(bytes), *back = malloc(bytes), *plainBack = malloc(bytes);
  const int buffers = 1 + (created++ & 1);
  DeviceRun fast = deviceRun(deviceCommKernels(c, buffers, sparcclDeviceKernelsOptimised), bytes,
                             inPlace, nlayers, counts);
  DeviceRun plain = deviceRun(deviceCommKernels(c, 3 - buffers, sparcclDeviceKernelsPlain), bytes,
                              inPlace, nlayers, counts);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  ck_assert_int_eq(sparcclRegisterLayout(host, hsend, nlayers, counts), sparcclSuccess);
  for (int s = 0; s < steps; s++) {
    void* expected = inPlace ? hsend : hrecv;
    fill(hsend, count, dtype, seed + (uint64_t)s * 7919, kind);
    deviceStep(&fast, hsend, back, count, dtype, op, stream);
    deviceStep(&plain, hsend, plainBack, count, dtype, op, stream);
    ck_assert_int_eq(sparcclAllReduce(hsend, expected, count, dtype, op, host, NULL), sparcclSuccess);
    assertSameOutput(back, expected, bytes, dsize, what, s);
    assertSameOutput(plainBack, back, bytes, dsize, plainWhat, s);
  }
  assertSameState(host, fast.comm, what);
  assertSameState(host, plain.comm, plainWhat);
  assertSameState(fast.comm, plain.comm, plainWhat);
  sparcclCommDestroy(host);
  freeRun(&fast, inPlace);
  freeRun(&plain, inPlace);
  cudaStreamDestroy(stream);
  free(hsend); free(hrecv); free(back); free(plainBack);
}

static const char* names[] = {"topk", "randk", "impk", "impk_select", "impk_random"};
static const char* feedbacks[] = {"none", "ef", "ef21", "scam", "dgc"};
static const char* dtypeNames[] = {"float32", "float16", "bfloat16"};
static const int dtypes[] = {sparcclFloat32, sparcclFloat16, sparcclBfloat16};

/* Every compressor x feedback, fp32, several layouts. */
START_TEST(test_methods) {
  int compressor = _i / 4, feedback = _i % 4;
  /* the 70000-element layer only at full size */
  size_t one[] = {1}, prime[] = {4099}, mixed[] = {5000, 17, 4096, 100, 12289, 3, 70000};
  size_t nmixed = SIZE(7, 6);
  char what[128];
  sparcclConfig_t c = config(compressor, feedback, sparcclFloat32, 64);
  snprintf(what, sizeof(what), "%s + %s", names[compressor], feedbacks[feedback]);
  c.minSparseCount = 1;
  compareRun(&c, 1, one, sparcclFloat32, sparcclSum, 0, SIZE(3, 2), 11, 0, what);
  compareRun(&c, 1, prime, sparcclFloat32, sparcclAvg, 0, SIZE(3, 2), 12, 0, what);
  c.minSparseCount = 64;
  compareRun(&c, nmixed, mixed, sparcclFloat32, sparcclSum, 1, SIZE(4, 3), 13, 0, what);
  compareRun(&c, nmixed, mixed, sparcclFloat32, sparcclSum, 0, 2, 14, 1, what); /* all zero */
  compareRun(&c, nmixed, mixed, sparcclFloat32, sparcclAvg, 0, SIZE(3, 2), 15, 2, what); /* ties */
}
END_TEST

/* k = d (density 1: every element sent) and k < d over small prime sizes, every compressor x
 * feedback, the three wire types and gradient types: the plain kernels against the
 * optimised ones and the host (compareRun). */
START_TEST(test_every_element) {
  int compressor = _i % 5, feedback = _i / 5, wire = dtypes[_i % 3], dtype = dtypes[(_i / 3) % 3];
  size_t primes[] = {2, 3, 5, 7, 13, 4093, 4099, 8191};
  char what[128];
  sparcclConfig_t c = config(compressor, feedback, wire, 1);
  snprintf(what, sizeof(what), "k = d: %s + %s, %s gradients, %s wire", names[compressor],
           feedbacks[feedback], dtypeNames[(_i / 3) % 3], dtypeNames[_i % 3]);
  c.density = 1.0;
  compareRun(&c, 8, primes, dtype, sparcclSum, 0, 2, 400 + (uint64_t)_i, 0, what);
  snprintf(what, sizeof(what), "primes: %s + %s, %s gradients, %s wire", names[compressor],
           feedbacks[feedback], dtypeNames[(_i / 3) % 3], dtypeNames[_i % 3]);
  c.density = 0.05;
  compareRun(&c, 8, primes, dtype, sparcclAvg, 1, 2, 500 + (uint64_t)_i, 2, what);
}
END_TEST

/* Keys sharing their high bits: every digit of the radix select is needed. */
START_TEST(test_radix) {
  size_t counts[] = {12289, 300};
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 64);
  compareRun(&c, 2, counts, sparcclFloat32, sparcclSum, 0, 3, 16, 3, "topk high bits");
  c = config(sparcclImpK, sparcclFeedbackNone, sparcclFloat32, 64);
  c.density = 0.3;
  compareRun(&c, 2, counts, sparcclFloat32, sparcclSum, 0, 2, 17, 3, "impk high bits, density 0.3");
  c = config(sparcclImpKRandom, sparcclFeedbackSCAM, sparcclFloat32, 64);
  compareRun(&c, 2, counts, sparcclFloat32, sparcclAvg, 1, 2, 18, 2, "impk_random ties");
  {
    /* distinct keys decided by the last digit: one missed key shifts the boundary */
    size_t runs[] = {1021, 1021, 1021};
    c = config(sparcclTopK, sparcclFeedbackNone, sparcclFloat32, 64);
    compareRun(&c, 3, runs, sparcclFloat32, sparcclSum, 0, 2, 19, 4, "topk, last digit");
    c.density = 0.5;
    compareRun(&c, 3, runs, sparcclFloat32, sparcclSum, 0, 2, 20, 4, "topk, last digit, density 0.5");
  }
}
END_TEST

/* The key pass predicts each layer's first-digit boundary bin from its previous call and
 * keeps the keys of the bins around it; a call whose bin falls outside must give the same
 * result.  Gradients scaled by 1, 1, 2^20, 2^20, 2^-30: calls 1 and 3 predict well, calls 2
 * and 4 do not (call 0 has no prediction).  Every compressor, with and without feedback. */
START_TEST(test_prediction) {
  static const int compressors[] = {sparcclTopK, sparcclTopK, sparcclRandK, sparcclImpK,
                                    sparcclImpKSelect, sparcclImpKRandom};
  static const int schemes[] = {sparcclFeedbackEF, sparcclFeedbackNone, sparcclFeedbackSCAM,
                                sparcclFeedbackSCAM, sparcclFeedbackEF21, sparcclFeedbackEF};
  static const float scales[] = {1.0f, 1.0f, 1048576.0f, 1048576.0f, 9.313225746154785e-10f};
  size_t counts[] = {5000, 100, 12289};
  size_t count = 17389, bytes = count * sizeof(float);
  sparcclConfig_t c = config(compressors[_i], schemes[_i], sparcclFloat32, 64);
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  char what[64];
  snprintf(what, sizeof(what), "prediction, %s + %s", names[compressors[_i]], feedbacks[schemes[_i]]);
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  ck_assert_int_eq(sparcclRegisterLayout(host, h, 3, counts), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(device, d, 3, counts), sparcclSuccess);
  for (int s = 0; s < 5; s++) {
    fill(h, count, sparcclFloat32, 300 + (uint64_t)s, 0);
    for (size_t i = 0; i < count; i++) h[i] *= scales[s];
    CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL), sparcclSuccess);
    CUDA_OK(cudaMemcpy(back, d, bytes, cudaMemcpyDeviceToHost));
    assertSameOutput(back, out, bytes, 4, what, s);
  }
  assertSameState(host, device, what);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); free(h); free(out); free(back);
}
END_TEST

/* Equal 64-bit keys: impk_random gives w = 0 the key -inf.  A cube step clips chosen w to 0
 * (the default low bound), and the density exceeds the share of the others, so that the
 * boundary falls among the -inf keys: all six digits are needed, ties taken at the last.
 * Layer 0: a fifth of every chunk, few enough for each chunk's run of candidates
 * (SPARCCL_CANDIDATES, a quarter of a chunk); layer 1: half of its first chunk (more than
 * its run holds: that chunk's keys are all read) and a tenth of the others. */
START_TEST(test_equal_keys) {
  size_t counts[] = {12288, 10000};
  size_t count = counts[0] + counts[1], bytes = count * 4;
  sparcclConfig_t c = config(sparcclImpKRandom, sparcclFeedbackEF, sparcclFloat32, 64);
  c.importance = sparcclImportanceCube;
  c.importanceLow = 0.0;
  c.density = 0.9;
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *g = (float*)malloc(bytes), *q = (float*)malloc(bytes), *out = (float*)malloc(bytes),
        *back = (float*)malloc(bytes);
  float *dg, *dq, *dout;
  CUDA_OK(cudaMalloc((void**)&dg, bytes)); CUDA_OK(cudaMalloc((void**)&dq, bytes));
  CUDA_OK(cudaMalloc((void**)&dout, bytes));
  ck_assert_int_eq(sparcclRegisterLayout(host, g, 2, counts), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(device, dg, 2, counts), sparcclSuccess);
  for (size_t i = 0; i < count; i++) {
    size_t j = i - counts[0]; /* in layer 1 */
    int zero = i < counts[0] ? i % 5 == 0 : j < 4096 ? j % 2 == 0 : j % 10 == 0;
    g[i] = 1.0f;
    q[i] = zero ? -1.0e6f : 0.0f; /* w + rate * (q * g) below 0: clipped to 0 */
  }
  CUDA_OK(cudaMemcpy(dg, g, bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dq, q, bytes, cudaMemcpyHostToDevice));
  ck_assert_int_eq(sparcclImportanceUpdate(q, g, count, sparcclFloat32, host, NULL), sparcclSuccess);
  ck_assert_int_eq(sparcclImportanceUpdate(dq, dg, count, sparcclFloat32, device, NULL), sparcclSuccess);
  assertSameState(host, device, "equal keys: importance update");
  for (int s = 0; s < 2; s++) {
    stepBoth(host, device, g, out, dg, dout, back, count, 40 + (uint64_t)s, "equal 64-bit keys", s);
  }
  assertSameState(host, device, "equal 64-bit keys");
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(dg); cudaFree(dq); cudaFree(dout);
  free(g); free(q); free(out); free(back);
}
END_TEST

/* Every dtype x wire type for three methods. */
START_TEST(test_dtypes) {
  int dtype = dtypes[_i / 3], wire = dtypes[_i % 3];
  size_t full[] = {9000, 40, 4097, 33333}, small[] = {5000, 40, 4097};
  const size_t* mixed = FULL ? full : small;
  size_t n = SIZE(4, 3);
  int steps = SIZE(3, 2);
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackSCAM, wire, 64);
  compareRun(&c, n, mixed, dtype, sparcclSum, 0, steps, 21, 0, "topk+scam dtypes");
  c = config(sparcclImpKRandom, sparcclFeedbackEF21, wire, 64);
  compareRun(&c, n, mixed, dtype, sparcclAvg, 1, steps, 22, 0, "impk_random+ef21 dtypes");
  /* the later passes compute topk's keys again from g in its own dtype (SPARCCL_KEYS_FROM_G) */
  c = config(sparcclTopK, sparcclFeedbackNone, wire, 64);
  compareRun(&c, n, mixed, dtype, sparcclSum, 1, steps, 23, 0, "topk+none dtypes");
}
END_TEST

/* At full size 200 layers of up to 20000 elements; many layers (more than a block of
 * threads: the per-layer loops stride); one layer of many chunks (10 million elements at
 * full size), and one of more than 256 chunks (the per-layer chunk scan gives each thread
 * several chunks; with an all-zero input the ties span every chunk). */
START_TEST(test_sizes) {
  uint64_t s = 99, t = 99;
  size_t many[300], large[200], big[] = {SIZE(10000000, 70000)}, huge[] = {1050000};
  char what[64];
  sparcclConfig_t c;
  if (FULL) {
    for (int i = 0; i < 200; i++) large[i] = 1 + (size_t)(rng(&t) % 20000);
    c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 4096);
    compareRun(&c, 200, large, sparcclFloat32, sparcclSum, 0, 3, 31, 0, "200 layers");
  }
  for (int i = 0; i < 300; i++) many[i] = 1 + (size_t)(rng(&s) % 400);
  c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 100);
  compareRun(&c, 300, many, sparcclFloat32, sparcclSum, 0, 2, 31, 0, "300 layers");
  snprintf(what, sizeof(what), "%zu-element layer", big[0]);
  c = config(sparcclImpK, sparcclFeedbackSCAM, sparcclBfloat16, 4096);
  compareRun(&c, 1, big, sparcclFloat32, sparcclSum, 1, 2, 32, 0, what);
  snprintf(what, sizeof(what), "%zu-element randk shared", big[0]);
  c = config(sparcclRandK, sparcclFeedbackEF, sparcclFloat32, 4096);
  c.sharedRandomness = 1;
  compareRun(&c, 1, big, sparcclFloat32, sparcclAvg, 0, 2, 33, 0, what);
  c = config(sparcclTopK, sparcclFeedbackNone, sparcclFloat32, 4096);
  compareRun(&c, 1, huge, sparcclFloat32, sparcclSum, 0, 1, 34, 1, "257 chunks, all zero");
  compareRun(&c, 1, huge, sparcclFloat32, sparcclSum, 0, 1, 35, 2, "257 chunks, ties");
}
END_TEST

/* Non-finite values in one layer (on one rank only when there are several): output NaN,
 * state unchanged, the same as the CPU; without (_i 0) and with (_i 1) a restart ratio.
 * Step 3: a NaN with a sign and payload in the dense layer, summed (a GPU returns its own
 * NaN from the sum, x86 the input's): the output and the restart norm hold the canonical
 * NaN on both. */
START_TEST(test_nonfinite) {
  size_t counts[] = {5000, 6000, 50};
  size_t count = 11050, bytes = count * 4;
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 64);
  if (_i == 1) c.restartRatio = 1.5;
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  int last = worldSize - 1;
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  sparcclRegisterLayout(host, h, 3, counts);
  sparcclRegisterLayout(device, d, 3, counts);
  for (int s = 0; s < 4; s++) {
    fill(h, count, sparcclFloat32, 40 + (uint64_t)s, 0);
    if (s == 1 && worldRank == last) h[7000] = NAN;
    if (s == 2 && worldRank == 0) h[10] = INFINITY;
    if (s == 3 && worldRank == 0) h[11007] = sparccl_bits_float(0xff800123u); /* dense */
    CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL), sparcclSuccess);
    CUDA_OK(cudaMemcpy(back, d, bytes, cudaMemcpyDeviceToHost));
    assertSameOutput(back, out, bytes, 4, "non-finite", s);
    if (s == 3) ck_assert_uint_eq(sparccl_float_bits(back[11007]), SPARCCL_CANONICAL_NAN_BITS);
  }
  assertSameState(host, device, "non-finite");
  sparcclStats_t hs, ds;
  sparcclCommGetStats(host, &hs);
  sparcclCommGetStats(device, &ds);
  ck_assert_uint_eq(hs.skippedSteps, 2);
  ck_assert_uint_eq(ds.skippedSteps, 2);
  ck_assert_uint_eq(hs.restarts, ds.restarts);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); free(h); free(out); free(back);
}
END_TEST

/* A captured call replays correctly: counters and state live on the device.  A call of a
 * key in its warm-up (SPEC 9: the first `warmup` calls, made outside the capture) is refused
 * during a capture, with nothing enqueued: a graph would replay it dense forever. */
static void graphRun(const sparcclConfig_t* c, const size_t* counts, int op, int warmup,
                     uint64_t seed, const char* what) {
  size_t count = counts[0] + counts[1] + counts[2], bytes = count * 4;
  sparcclComm_t host = hostComm(c), device = deviceComm(c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float *d, *dout;
  cudaStream_t stream;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamCreate(&stream));
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  CUDA_OK(cudaMalloc((void**)&dout, bytes));
  sparcclRegisterLayout(host, h, 3, counts);
  sparcclRegisterLayout(device, d, 3, counts);
  /* A new key may not be created inside a capture. */
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  ck_assert_int_eq(sparcclAllReduce(dout, dout, 77, sparcclFloat32, sparcclSum, device, stream), sparcclInvalidUsage);
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  cudaGraphDestroy(graph);
  for (int s = 0; s < warmup + 7; s++) {
    if (s <= warmup) {
      /* The call on a live key neither allocates nor synchronises (the emulator fails both);
       * in warm-up it is refused */
      CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
      ck_assert_int_eq(sparcclAllReduce(d, dout, count, sparcclFloat32, op, device, stream),
                       s < warmup ? sparcclInvalidUsage : sparcclSuccess);
      CUDA_OK(cudaStreamEndCapture(stream, &graph));
      if (s < warmup) cudaGraphDestroy(graph);
      else CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    }
    fill(h, count, sparcclFloat32, seed + (uint64_t)s, 0);
    CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, op, host, NULL), sparcclSuccess);
    if (s < warmup)
      ck_assert_int_eq(sparcclAllReduce(d, dout, count, sparcclFloat32, op, device, stream), sparcclSuccess);
    else
      CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(back, dout, bytes, cudaMemcpyDeviceToHost));
    assertSameOutput(back, out, bytes, 4, what, s);
  }
  assertSameState(host, device, what); /* the saved call count is the device's, replays included */
  cudaGraphExecDestroy(exec); cudaGraphDestroy(graph);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); cudaFree(dout); cudaStreamDestroy(stream);
  free(h); free(out); free(back);
}

START_TEST(test_graph) {
  size_t counts[] = {8192, 100, SIZE(30000, 9000)};
  sparcclConfig_t c = config(sparcclRandK, sparcclFeedbackSCAM, sparcclFloat32, 1000);
  c.restartEvery = 3;
  graphRun(&c, counts, sparcclAvg, 0, 50, "graph replay");
}
END_TEST

/* Importance probe and solver steps (cube, simplex, online) against the CPU, with
 * impk and impk_random. */
START_TEST(test_importance) {
  static const int modes[] = {sparcclImportanceCube, sparcclImportanceSimplex, sparcclImportanceOnline};
  size_t counts[] = {9000, 50, SIZE(20000, 5000)};
  size_t count = counts[0] + counts[1] + counts[2], bytes = count * 4;
  sparcclConfig_t c = config(_i < 3 ? sparcclImpK : sparcclImpKRandom, sparcclFeedbackSCAM,
                             sparcclFloat32, 1000);
  c.importance = modes[_i % 3];
  c.importanceEta = 50.0;
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *x = (float*)malloc(bytes), *g = (float*)malloc(bytes), *p = (float*)malloc(bytes),
        *q = (float*)malloc(bytes), *back = (float*)malloc(bytes), *out = (float*)malloc(bytes);
  float *dx, *dg, *dp, *dq;
  CUDA_OK(cudaMalloc((void**)&dx, bytes)); CUDA_OK(cudaMalloc((void**)&dg, bytes));
  CUDA_OK(cudaMalloc((void**)&dp, bytes)); CUDA_OK(cudaMalloc((void**)&dq, bytes));
  sparcclRegisterLayout(host, g, 3, counts);
  sparcclRegisterLayout(device, dg, 3, counts);
  for (int s = 0; s < 3; s++) {
    fill(x, count, sparcclFloat32, 60 + (uint64_t)s, 0);
    fill(g, count, sparcclFloat32, 70 + (uint64_t)s, 0);
    fill(q, count, sparcclFloat32, 80 + (uint64_t)s, 0);
    if (s == 2) q[100] = INFINITY; /* the first layer's step is refused, the others run */
    CUDA_OK(cudaMemcpy(dx, x, bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dg, g, bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dq, q, bytes, cudaMemcpyHostToDevice));
    if (c.importance != sparcclImportanceOnline) {
      ck_assert_int_eq(sparcclImportanceProbe(x, g, p, count, sparcclFloat32, host, NULL), sparcclSuccess);
      ck_assert_int_eq(sparcclImportanceProbe(dx, dg, dp, count, sparcclFloat32, device, NULL), sparcclSuccess);
      CUDA_OK(cudaMemcpy(back, dp, bytes, cudaMemcpyDeviceToHost));
      assertSameOutput(back, p, bytes, 4, "probe", s);
      ck_assert_int_eq(sparcclImportanceUpdate(q, g, count, sparcclFloat32, host, NULL), sparcclSuccess);
      ck_assert_int_eq(sparcclImportanceUpdate(dq, dg, count, sparcclFloat32, device, NULL), sparcclSuccess);
      assertSameState(host, device, "importance update");
    }
    ck_assert_int_eq(sparcclAllReduce(g, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(dg, dp, count, sparcclFloat32, sparcclSum, device, NULL), sparcclSuccess);
    CUDA_OK(cudaMemcpy(back, dp, bytes, cudaMemcpyDeviceToHost));
    assertSameOutput(back, out, bytes, 4, "importance", s);
  }
  assertSameState(host, device, "importance");
  ck_assert_int_eq(sparcclImportanceReset(host, g, count), sparcclSuccess);
  ck_assert_int_eq(sparcclImportanceReset(device, dg, count), sparcclSuccess);
  assertSameState(host, device, "importance reset");
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(dx); cudaFree(dg); cudaFree(dp); cudaFree(dq);
  free(x); free(g); free(p); free(q); free(back); free(out);
}
END_TEST

/* Restart policies (every N, ratio), the explicit restart and state scaling. */
/* `steps` calls on both comms, an explicit restart after call restartAt and a scaling by
 * `factor` after call scaleAt, states compared after each; with restartOnLoss, a loss report
 * after every call (a rise at the last restarts every key). */
static void restartScaleRun(const sparcclConfig_t* c, int buffers, int kernels, int steps,
                            uint64_t seed, int restartAt, int scaleAt, float factor,
                            const char* what) {
  size_t counts[] = {6000, 6000, 50};
  size_t count = 12050, bytes = count * 4;
  sparcclComm_t host = hostComm(c), device = deviceCommKernels(c, buffers, kernels);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  sparcclStats_t hs, ds;
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  sparcclRegisterLayout(host, h, 3, counts);
  sparcclRegisterLayout(device, d, 3, counts);
  for (int s = 0; s < steps; s++) {
    stepBoth(host, device, h, out, d, d, back, count, seed + (uint64_t)s, what, s);
    if (s == restartAt) {
      ck_assert_int_eq(sparcclRestart(host), sparcclSuccess);
      ck_assert_int_eq(sparcclRestart(device), sparcclSuccess);
      assertSameState(host, device, "after sparcclRestart");
    }
    if (c->restartOnLoss) { /* the loss policy: a rise restarts every key */
      double loss = s == steps - 1 ? 2.0 : 1.0 - 0.1 * s;
      ck_assert_int_eq(sparcclReportLoss(host, loss), sparcclSuccess);
      ck_assert_int_eq(sparcclReportLoss(device, loss), sparcclSuccess);
    }
    if (s == scaleAt) {
      ck_assert_int_eq(sparcclScaleState(host, factor), sparcclSuccess);
      ck_assert_int_eq(sparcclScaleState(device, factor), sparcclSuccess);
      assertSameState(host, device, "after sparcclScaleState");
    }
  }
  assertSameState(host, device, what);
  sparcclCommGetStats(host, &hs);
  sparcclCommGetStats(device, &ds);
  ck_assert_uint_eq(hs.restarts, ds.restarts);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); free(h); free(out); free(back);
}

START_TEST(test_restarts) {
  size_t counts[] = {6000, 6000, 50};
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF21, sparcclFloat32, 64);
  c.restartRatio = 1.05;
  c.restartEvery = 4;
  compareRun(&c, 3, counts, sparcclFloat32, sparcclSum, 0, 9, 90, 0, "restart policies");
  if (FULL) /* the two sparse layers alone */
    compareRun(&c, 2, counts, sparcclFloat32, sparcclSum, 0, 9, 90, 0, "restart policies, 2 layers");
  c = config(sparcclImpK, sparcclFeedbackEF, sparcclFloat32, 64);
  c.restartRatio = 1.01;
  c.restartLag = 2;
  compareRun(&c, 3, counts, sparcclFloat32, sparcclAvg, 1, 7, 91, 0, "restart ratio, lag 2");
  c.restartOnLoss = 1;
  /* with two error buffers, the restart comes after an even number of calls and the
   * scaling after an odd one: e in either buffer; the optimised kernels and the plain */
  for (int buffers = 1; buffers <= 2; buffers++)
    for (int kernels = 0; kernels <= 1; kernels++)
      restartScaleRun(&c, buffers, kernels, 4, 95, 1, 2, 0.5f, "explicit restart");
}
END_TEST

/* How many times the 4 bytes of `bits` (little-endian) occur in a comm's saved state, at
 * any offset. */
static size_t countInState(sparcclComm_t comm, uint32_t bits) {
  char path[] = "/tmp/sparccl_gpu_scanXXXXXX";
  size_t size, n = 0;
  int fd = mkstemp(path);
  close(fd);
  ck_assert_int_eq(sparcclSaveState(comm, path), sparcclSuccess);
  unsigned char* data = (unsigned char*)readFile(path, &size);
  unlink(path);
  for (size_t i = 0; i + 4 <= size; i++) {
    uint32_t w;
    memcpy(&w, data + i, 4);
    n += w == bits;
  }
  free(data);
  return n;
}

/* Scaling a state that holds Inf (e, h and H overflowed by two scalings by 3e38) by 0: Inf * 0
 * is a NaN whose bits are the hardware's (x86 0xffc00000, a GPU 0x7fffffff); both comms
 * store the canonical one (0x7fc00000), so that their states match to the bit and hold no
 * other NaN.  _i 0: ef (e), _i 1: ef21 (h, H), _i 2: dgc (e, u). */
START_TEST(test_scale_nan) {
  size_t counts[] = {6000, 50};
  size_t count = 6050, bytes = count * 4;
  static const int feedback[] = {sparcclFeedbackEF, sparcclFeedbackEF21, sparcclFeedbackDGC};
  sparcclConfig_t c = config(sparcclTopK, feedback[_i], sparcclFloat32, 64);
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  sparcclRegisterLayout(host, h, 2, counts);
  sparcclRegisterLayout(device, d, 2, counts);
  for (int s = 0; s < 2; s++)
    stepBoth(host, device, h, out, d, d, back, count, 150 + (uint64_t)s, "scale NaN", s);
  const float factors[] = {3.0e38f, 3.0e38f, 0.0f, 2.0f};
  for (int f = 0; f < 4; f++) {
    ck_assert_int_eq(sparcclScaleState(host, factors[f]), sparcclSuccess);
    ck_assert_int_eq(sparcclScaleState(device, factors[f]), sparcclSuccess);
  }
  assertSameState(host, device, "Inf * 0 in the state");
  ck_assert_uint_gt(countInState(host, SPARCCL_CANONICAL_NAN_BITS), 0);
  ck_assert_uint_eq(countInState(host, 0xffc00000u), 0);  /* x86's NaN */
  ck_assert_uint_eq(countInState(device, 0x7fffffffu), 0); /* a GPU's */
  ck_assert_uint_eq(countInState(device, 0xffc00000u), 0);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); free(h); free(out); free(back);
}
END_TEST

/* Save on one comm, load into fresh ones: both continue identically.  _i = 2: dgc with
 * warm-up (u and the key's call count), saved in warm-up, which ends after the load.
 * _i = 1: SCAM's e,
 * saved from the second error buffer (an odd number of calls) and loaded into a comm that
 * has run a call, in both buffer modes. */
START_TEST(test_load) {
  size_t counts[] = {5000, 30, 4100};
  size_t count = 9130, bytes = count * 4;
  char path[] = "/tmp/sparccl_gpu_loadXXXXXX";
  sparcclConfig_t c = config(sparcclImpKRandom, sparcclFeedbackEF21, sparcclFloat32, 64);
  const int steps = _i == 0 ? 2 : 3;
  if (_i == 1) c = config(sparcclTopK, sparcclFeedbackSCAM, sparcclFloat32, 64);
  c.importance = sparcclImportanceOnline;
  if (_i == 2) { /* dgc's u and the call count: saved in warm-up, loaded, warm-up ends */
    c = config(sparcclImpK, sparcclFeedbackDGC, sparcclFloat32, 64);
    c.warmupSteps = 4;
  }
  sparcclComm_t host = hostComm(&c), device = deviceCommWith(&c, 2);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  int fd = mkstemp(path);
  close(fd);
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  for (int phase = 0; phase < 2; phase++) {
    sparcclRegisterLayout(host, h, 3, counts);
    sparcclRegisterLayout(device, d, 3, counts);
    if (phase == 1) {
      if (_i == 1) stepBoth(host, device, h, out, d, d, back, count, 140, "load: before", 0);
      ck_assert_int_eq(sparcclLoadState(host, path), sparcclSuccess);
      ck_assert_int_eq(sparcclLoadState(device, path), sparcclSuccess);
    }
    for (int s = 0; s < steps; s++) {
      fill(h, count, sparcclFloat32, 100 + (uint64_t)(phase * 10 + s), 0);
      CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
      ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
      ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL), sparcclSuccess);
      CUDA_OK(cudaMemcpy(back, d, bytes, cudaMemcpyDeviceToHost));
      assertSameOutput(back, out, bytes, 4, "load", phase * 10 + s);
    }
    assertSameState(host, device, "load");
    if (phase == 0) {
      ck_assert_int_eq(sparcclSaveState(host, path), sparcclSuccess);
      sparcclCommDestroy(host); sparcclCommDestroy(device);
      host = hostComm(&c); device = deviceCommWith(&c, 1 + _i);
    }
  }
  unlink(path);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); free(h); free(out); free(back);
}
END_TEST

/* Argument errors on a device comm. */
START_TEST(test_errors) {
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 64);
  sparcclComm_t device = deviceComm(&c);
  float host[16];
  float* d;
  CUDA_OK(cudaMalloc((void**)&d, 64));
  ck_assert_int_eq(sparcclAllReduce(host, host, 16, sparcclFloat32, sparcclSum, device, NULL), sparcclInvalidUsage);
  ck_assert_int_eq(sparcclAllReduce(NULL, d, 16, sparcclFloat32, sparcclSum, device, NULL), sparcclInvalidArgument);
  ck_assert_int_eq(sparcclAllReduce(d, d, 16, (sparcclDataType_t)3, sparcclSum, device, NULL), sparcclInvalidArgument);
  {
    /* a host buffer among the importance call's arguments is refused before any state is
     * made for the key */
    sparcclStats_t stats;
    ck_assert_int_eq(sparcclImportanceProbe(host, d, d, 16, sparcclFloat32, device, NULL), sparcclInvalidUsage);
    ck_assert_int_eq(sparcclImportanceProbe(d, d, host, 16, sparcclFloat32, device, NULL), sparcclInvalidUsage);
    ck_assert_int_eq(sparcclCommGetStats(device, &stats), sparcclSuccess);
    ck_assert_uint_eq(stats.layerSets, 0);
  }
  ck_assert_int_eq(sparcclCommDestroy(device), sparcclSuccess);
  ck_assert_int_eq(sparcclAllReduce(d, d, 16, sparcclFloat32, sparcclSum, device, NULL), sparcclInvalidUsage);
  {
    /* SPARCCL_ERROR_BUFFERS takes 1 or 2; anything else fails the comm's creation */
    const char* bad[] = {"0", "3", "two"};
    for (int i = 0; i < 3; i++) {
      sparcclComm_t comm = NULL;
      ncclUniqueId id;
      ck_assert_int_eq(setenv("SPARCCL_ERROR_BUFFERS", bad[i], 1), 0);
      ck_assert_int_eq(sparcclGetUniqueId(&id), sparcclSuccess);
      ck_assert_int_eq(sparcclCommInitRank(&comm, 1, id, 0, &c), sparcclInvalidArgument);
      unsetenv("SPARCCL_ERROR_BUFFERS");
    }
  }
  {
    /* the hierarchical exchange is host (MPI) only for now (docs/EXCHANGES.md): refused */
    sparcclConfig_t hierarchical = c;
    sparcclComm_t comm = NULL;
    ncclUniqueId id;
    hierarchical.exchange = sparcclExchangeHierarchical;
    ck_assert_int_eq(sparcclGetUniqueId(&id), sparcclSuccess);
    ck_assert_int_eq(sparcclCommInitRank(&comm, 1, id, 0, &hierarchical), sparcclNotSupported);
    ck_assert_ptr_null(comm);
    hierarchical.exchange = sparcclExchangeSplit; /* the split exchange too (11.3) */
    ck_assert_int_eq(sparcclGetUniqueId(&id), sparcclSuccess);
    ck_assert_int_eq(sparcclCommInitRank(&comm, 1, id, 0, &hierarchical), sparcclNotSupported);
    ck_assert_ptr_null(comm);
  }
  {
    /* and the reverse: a device buffer on a host comm */
    sparcclComm_t hc = hostComm(&c);
    for (int i = 0; i < 16; i++) host[i] = 1.0f;
    ck_assert_int_eq(sparcclAllReduce(d, d, 16, sparcclFloat32, sparcclSum, hc, NULL), sparcclInvalidUsage);
    ck_assert_int_eq(sparcclAllReduce(host, d, 16, sparcclFloat32, sparcclSum, hc, NULL), sparcclInvalidUsage);
    ck_assert_int_eq(sparcclAllReduce(host, host, 16, sparcclFloat32, sparcclSum, hc, NULL), sparcclSuccess);
    sparcclCommDestroy(hc);
  }
  cudaFree(d);
}
END_TEST

/* ------------------------------------------------------------ streams, graphs, groups, devices */

/* The calls without a stream argument order themselves after every call on any stream, and
 * the next call on any stream sees what they did.  A call captured on one stream and
 * replayed on another (what torch.cuda.graph does: capture on a side stream, replay on the
 * current one), with a restart, a scaling, a save and the stats, an importance update and
 * reset (_i 1) in between, each made while the replay before it may still be running,
 * matches the CPU at every step.  In the emulator the replay stream holds its work until
 * something orders it (cudaEmuStreamDefer), as a busy GPU would: a restart that went on the
 * stream of the call the comm last saw (the capture's) would run before the replay made
 * before it.  The capture stream is destroyed half-way: nothing may use it after. */
START_TEST(test_streams) {
  size_t counts[] = {8192, 100, 5000};
  size_t count = 13292, bytes = count * 4;
  sparcclConfig_t c = _i == 0 ? config(sparcclTopK, sparcclFeedbackEF21, sparcclFloat32, 1000)
                              : config(sparcclImpK, sparcclFeedbackEF, sparcclFloat32, 1000);
  if (_i == 1) { c.importance = sparcclImportanceCube; c.importanceEta = 50.0; }
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes),
        *q = (float*)malloc(bytes);
  float *d, *dout, *dq;
  cudaStream_t capture, replay;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  sparcclStats_t hs, ds;
  CUDA_OK(cudaStreamCreateWithFlags(&capture, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&replay, cudaStreamNonBlocking));
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  CUDA_OK(cudaMalloc((void**)&dout, bytes));
  CUDA_OK(cudaMalloc((void**)&dq, bytes));
  ck_assert_int_eq(sparcclRegisterLayout(host, h, 3, counts), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(device, d, 3, counts), sparcclSuccess);
  for (int s = 0; s < 7; s++) {
    fill(h, count, sparcclFloat32, 500 + (uint64_t)s, 0);
    CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
    if (s == 0) { /* eager, on the capture stream; then the capture */
      ck_assert_int_eq(sparcclAllReduce(d, dout, count, sparcclFloat32, sparcclSum, device, capture), sparcclSuccess);
      CUDA_OK(cudaStreamSynchronize(capture));
      CUDA_OK(cudaStreamBeginCapture(capture, cudaStreamCaptureModeGlobal));
      ck_assert_int_eq(sparcclAllReduce(d, dout, count, sparcclFloat32, sparcclSum, device, capture), sparcclSuccess);
      CUDA_OK(cudaStreamEndCapture(capture, &graph));
      CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
#ifdef CUDA_EMU
      CUDA_OK(cudaEmuStreamDefer(replay, 1));
#endif
    } else {
      CUDA_OK(cudaGraphLaunch(exec, replay));
    }
    switch (s) {
      case 1:
        ck_assert_int_eq(sparcclRestart(host), sparcclSuccess);
        ck_assert_int_eq(sparcclRestart(device), sparcclSuccess);
        break;
      case 2:
        ck_assert_int_eq(sparcclScaleState(host, 0.5f), sparcclSuccess);
        ck_assert_int_eq(sparcclScaleState(device, 0.5f), sparcclSuccess);
        break;
      case 3: /* the save and the stats see the replay made before them */
        assertSameState(host, device, "streams: a save after a replay");
        CUDA_OK(cudaStreamDestroy(capture));
        break;
      case 4:
        if (_i == 1) { /* an update on the replay stream, then a reset: in that order */
          fill(q, count, sparcclFloat32, 600, 0);
          CUDA_OK(cudaMemcpy(dq, q, bytes, cudaMemcpyHostToDevice));
          ck_assert_int_eq(sparcclImportanceUpdate(q, h, count, sparcclFloat32, host, NULL), sparcclSuccess);
          ck_assert_int_eq(sparcclImportanceUpdate(dq, d, count, sparcclFloat32, device, replay), sparcclSuccess);
          ck_assert_int_eq(sparcclImportanceReset(host, h, count), sparcclSuccess);
          ck_assert_int_eq(sparcclImportanceReset(device, d, count), sparcclSuccess);
        }
        break;
      case 5: /* with the capture stream gone */
        ck_assert_int_eq(sparcclScaleState(host, 2.0f), sparcclSuccess);
        ck_assert_int_eq(sparcclScaleState(device, 2.0f), sparcclSuccess);
        ck_assert_int_eq(sparcclRestart(host), sparcclSuccess);
        ck_assert_int_eq(sparcclRestart(device), sparcclSuccess);
        break;
      case 6:
        ck_assert_int_eq(sparcclCommGetStats(host, &hs), sparcclSuccess);
        ck_assert_int_eq(sparcclCommGetStats(device, &ds), sparcclSuccess);
        ck_assert_uint_eq(hs.calls, ds.calls);
        ck_assert_uint_eq(hs.restarts, ds.restarts);
        break;
    }
    CUDA_OK(cudaStreamSynchronize(s == 0 ? capture : replay));
    CUDA_OK(cudaMemcpy(back, dout, bytes, cudaMemcpyDeviceToHost));
    assertSameOutput(back, out, bytes, 4, "streams: capture on one, replay on another", s);
  }
  assertSameState(host, device, "streams: capture on one, replay on another");
  cudaGraphExecDestroy(exec); cudaGraphDestroy(graph);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); cudaFree(dout); cudaFree(dq); cudaStreamDestroy(replay);
  free(h); free(out); free(back); free(q);
}
END_TEST

/* The calls without a stream argument are refused while a graph is being captured.  _i 0:
 * on a blocking stream, which the legacy stream's capture query sees: refused before
 * anything happens, and the capture (of an allreduce on the live key) goes on and replays.
 * _i 1: on a non-blocking stream, which only the device synchronisation finds: refused, and
 * CUDA invalidates that capture.  Either way the state is as on the CPU, which made none of
 * the refused calls. */
START_TEST(test_capture_refused) {
  size_t count = 6000, bytes = count * 4;
  char path[] = "/tmp/sparccl_gpu_captureXXXXXX";
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 64);
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  cudaStream_t stream;
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec;
  sparcclStats_t stats;
  int fd = mkstemp(path);
  close(fd);
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  stepBoth(host, device, h, out, d, d, back, count, 700, "capture refused", 0);
  CUDA_OK(cudaStreamCreateWithFlags(&stream, _i == 0 ? cudaStreamDefault : cudaStreamNonBlocking));
  fill(h, count, sparcclFloat32, 701, 0);
  CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, stream), sparcclSuccess);
  ck_assert_int_eq(sparcclRestart(device), sparcclInvalidUsage);
  if (_i == 0) { /* each refused, the capture intact */
    ck_assert_int_eq(sparcclScaleState(device, 0.5f), sparcclInvalidUsage);
    ck_assert_int_eq(sparcclCommGetStats(device, &stats), sparcclInvalidUsage);
    ck_assert_int_eq(sparcclSaveState(device, path), sparcclInvalidUsage);
    ck_assert_int_eq(sparcclRelease(device, d, count), sparcclInvalidUsage);
    ck_assert_int_eq(sparcclCommDestroy(device), sparcclInvalidUsage);
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(back, d, bytes, cudaMemcpyDeviceToHost));
    assertSameOutput(back, out, bytes, 4, "capture refused: the replay", 1);
    cudaGraphExecDestroy(exec); cudaGraphDestroy(graph);
  } else {
    ck_assert_int_eq(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
    ck_assert_ptr_null(graph);
    (void)cudaGetLastError();
  }
  assertSameState(host, device, "capture refused");
  unlink(path);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); cudaStreamDestroy(stream);
  free(h); free(out); free(back);
}
END_TEST

/* A CUDA error pending from the caller's own earlier work (here an invalid cudaSetDevice,
 * which leaves cudaErrorInvalidDevice as the last error): each call refuses before it
 * enqueues anything (no kernel, no collective: a rank that returned after its compression
 * but before its exchange would leave the others waiting), the error is consumed, and the
 * state is as on the CPU, which made none of them.  In the emulator also a sticky error,
 * and a compression whose launches fail: that call's exchange still goes out. */
START_TEST(test_pending_error) {
  size_t count = 6000, bytes = count * 4;
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackSCAM, sparcclFloat32, 64);
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float *d, *other;
  sparcclStats_t stats;
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  CUDA_OK(cudaMalloc((void**)&other, 400));
  stepBoth(host, device, h, out, d, d, back, count, 710, "pending error", 0);
#ifdef CUDA_EMU
  unsigned long long launches = cudaEmuLaunches(), collectives = ncclEmuCollectives();
#endif
  ck_assert_int_ne(cudaSetDevice(999), cudaSuccess);
  ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL), sparcclUnhandledCudaError);
  ck_assert_int_eq(cudaGetLastError(), cudaSuccess);
  ck_assert_int_ne(cudaSetDevice(999), cudaSuccess); /* a new key: refused before its exchanges */
  ck_assert_int_eq(sparcclAllReduce(other, other, 100, sparcclFloat32, sparcclSum, device, NULL), sparcclUnhandledCudaError);
  ck_assert_int_ne(cudaSetDevice(999), cudaSuccess);
  ck_assert_int_eq(sparcclRestart(device), sparcclUnhandledCudaError);
  ck_assert_int_eq(cudaGetLastError(), cudaSuccess);
  ck_assert_int_eq(sparcclCommGetStats(device, &stats), sparcclSuccess);
  ck_assert_uint_eq(stats.layerSets, 1);
#ifdef CUDA_EMU
  ck_assert_uint_eq(cudaEmuLaunches(), launches);
  ck_assert_uint_eq(ncclEmuCollectives(), collectives);
  /* sticky: cudaGetLastError does not clear it */
  cudaEmuInjectFault(cudaEmuFaultSticky, 0, cudaErrorIllegalAddress);
  ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL), sparcclUnhandledCudaError);
  ck_assert_int_eq(sparcclRestart(device), sparcclUnhandledCudaError);
  cudaEmuInjectFault(cudaEmuFaultSticky, 0, cudaSuccess);
  ck_assert_int_eq(cudaGetLastError(), cudaSuccess);
  ck_assert_uint_eq(cudaEmuLaunches(), launches);
  ck_assert_uint_eq(ncclEmuCollectives(), collectives);
  /* the compression's launches fail: the exchange goes out all the same, nothing after it */
  cudaEmuInjectFault(cudaEmuFaultLaunch, 1000, cudaErrorLaunchOutOfResources);
  ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL), sparcclUnhandledCudaError);
  cudaEmuInjectFault(cudaEmuFaultLaunch, 0, cudaSuccess);
  ck_assert_int_eq(cudaGetLastError(), cudaSuccess);
  ck_assert_uint_eq(cudaEmuLaunches(), launches);
  ck_assert_uint_eq(ncclEmuCollectives(), collectives + 1);
  /* ... and the memsets that would mark the block refused fail too: nothing is sent */
  cudaEmuInjectFault(cudaEmuFaultLaunch, 1000, cudaErrorLaunchOutOfResources);
  cudaEmuInjectFault(cudaEmuFaultMemset, 1000, cudaErrorInvalidValue);
  ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL), sparcclUnhandledCudaError);
  cudaEmuInjectFault(cudaEmuFaultLaunch, 0, cudaSuccess);
  cudaEmuInjectFault(cudaEmuFaultMemset, 0, cudaSuccess);
  (void)cudaGetLastError();
  ck_assert_uint_eq(cudaEmuLaunches(), launches);
  ck_assert_uint_eq(ncclEmuCollectives(), collectives + 1);
#endif
  for (int s = 1; s < 3; s++)
    stepBoth(host, device, h, out, d, d, back, count, 710 + (uint64_t)s, "pending error", s);
  assertSameState(host, device, "pending error");
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); cudaFree(other);
  free(h); free(out); free(back);
}
END_TEST

/* The comm runs on its NCCL communicator's device whatever the caller's current one (each
 * call sets it and gives the caller's back), and refuses another device's memory.  The comm
 * is made on device 0; device 1 is current for the calls (a key created then, a stream of
 * device 0, restarts, a scaling, a save).  Needs two devices. */
START_TEST(test_devices) {
  size_t counts[] = {5000, 40};
  size_t count = 5040, bytes = count * 4;
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF21, sparcclFloat32, 64);
  c.restartEvery = 3;
  CUDA_OK(cudaSetDevice(0));
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float *d, *elsewhere;
  cudaStream_t stream;
  int current = -1;
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_OK(cudaSetDevice(1));
  CUDA_OK(cudaMalloc((void**)&elsewhere, bytes));
  ck_assert_int_eq(sparcclAllReduce(elsewhere, elsewhere, count, sparcclFloat32, sparcclSum, device, stream), sparcclInvalidUsage);
  ck_assert_int_eq(sparcclRegisterLayout(host, h, 2, counts), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(device, d, 2, counts), sparcclSuccess);
  for (int s = 0; s < 4; s++) {
    fill(h, count, sparcclFloat32, 720 + (uint64_t)s, 0);
    CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, stream), sparcclSuccess);
    CUDA_OK(cudaGetDevice(&current));
    ck_assert_int_eq(current, 1);
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(back, d, bytes, cudaMemcpyDeviceToHost));
    assertSameOutput(back, out, bytes, 4, "devices", s);
    if (s == 1) {
      ck_assert_int_eq(sparcclRestart(host), sparcclSuccess);
      ck_assert_int_eq(sparcclRestart(device), sparcclSuccess);
      ck_assert_int_eq(sparcclScaleState(host, 0.25f), sparcclSuccess);
      ck_assert_int_eq(sparcclScaleState(device, 0.25f), sparcclSuccess);
    }
  }
  assertSameState(host, device, "devices");
  CUDA_OK(cudaGetDevice(&current));
  ck_assert_int_eq(current, 1);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(elsewhere);
  CUDA_OK(cudaSetDevice(0));
  cudaFree(d); cudaStreamDestroy(stream);
  free(h); free(out); free(back);
}
END_TEST

/* A non-blocking NCCL communicator (its creation, and maybe each collective, answers
 * ncclInProgress): the comm waits for each before it goes on -- creation, the layout
 * exchanges, every call's exchange, a loss report -- and matches the CPU.  The caller does
 * not poll the communicator before handing it over. */
START_TEST(test_nonblocking) {
  size_t counts[] = {6000, 30};
  size_t count = 6030, bytes = count * 4;
  sparcclConfig_t c = config(sparcclImpKSelect, sparcclFeedbackEF, sparcclFloat32, 64);
  c.restartOnLoss = 1;
  ncclConfig_t nconfig = NCCL_CONFIG_INITIALIZER;
  ncclUniqueId id;
  ncclComm_t nc;
  ncclResult_t nres;
  sparcclComm_t host = hostComm(&c), device;
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  nconfig.blocking = 0;
  ck_assert_int_eq(ncclGetUniqueId(&id), ncclSuccess);
  nres = ncclCommInitRankConfig(&nc, 1, id, 0, &nconfig);
  ck_assert_msg(nres == ncclSuccess || nres == ncclInProgress, "ncclCommInitRankConfig: %d", (int)nres);
  ck_assert_int_eq(sparcclCommInitNccl(&device, nc, &c), sparcclSuccess);
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  ck_assert_int_eq(sparcclRegisterLayout(host, h, 2, counts), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(device, d, 2, counts), sparcclSuccess);
  for (int s = 0; s < 4; s++) {
    stepBoth(host, device, h, out, d, d, back, count, 730 + (uint64_t)s, "non-blocking NCCL", s);
    ck_assert_int_eq(sparcclReportLoss(host, s == 2 ? 3.0 : 1.0 - 0.1 * s), sparcclSuccess);
    ck_assert_int_eq(sparcclReportLoss(device, s == 2 ? 3.0 : 1.0 - 0.1 * s), sparcclSuccess);
  }
  assertSameState(host, device, "non-blocking NCCL");
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  ncclCommDestroy(nc);
  cudaFree(d); free(h); free(out); free(back);
}
END_TEST

/* Inside the caller's ncclGroupStart/ncclGroupEnd NCCL only records collectives: a call
 * that exchanges host data finds its exchange did not run and is refused -- a new key
 * (nothing created), a loss report (nothing recorded) -- instead of reading whatever the
 * exchange's buffer held. */
START_TEST(test_group) {
  size_t count = 5000, bytes = count * 4;
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 64);
  c.restartOnLoss = 1;
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  sparcclStats_t stats;
  sparcclResult_t newKey, loss;
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  ck_assert_int_eq(ncclGroupStart(), ncclSuccess);
  newKey = sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL);
  ck_assert_int_eq(ncclGroupEnd(), ncclSuccess);
  ck_assert_int_eq(newKey, sparcclInvalidUsage);
  ck_assert_int_eq(sparcclCommGetStats(device, &stats), sparcclSuccess);
  ck_assert_uint_eq(stats.layerSets, 0);
  stepBoth(host, device, h, out, d, d, back, count, 740, "group", 0);
  ck_assert_int_eq(ncclGroupStart(), ncclSuccess);
  loss = sparcclReportLoss(device, 0.5);
  ck_assert_int_eq(ncclGroupEnd(), ncclSuccess);
  ck_assert_int_eq(loss, sparcclInvalidUsage);
  CUDA_OK(cudaDeviceSynchronize());
  for (int s = 1; s < 3; s++) { /* the loss history is the CPU's: a rise restarts both */
    ck_assert_int_eq(sparcclReportLoss(host, s == 2 ? 2.0 : 1.0), sparcclSuccess);
    ck_assert_int_eq(sparcclReportLoss(device, s == 2 ? 2.0 : 1.0), sparcclSuccess);
    stepBoth(host, device, h, out, d, d, back, count, 740 + (uint64_t)s, "group", s);
  }
  assertSameState(host, device, "group");
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); free(h); free(out); free(back);
}
END_TEST

/* sparcclCommAbort waits for nothing: on a communicator the caller owns, with a call still
 * on a stream (in the emulator a deferred one: its work stays there, as behind a stuck
 * collective), the abort returns and that work is still pending; the caller then aborts its
 * communicator.  On one the comm owns, NCCL's abort comes first. */
START_TEST(test_abort) {
  size_t count = 5000, bytes = count * 4;
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 64);
  ncclUniqueId id;
  ncclComm_t nc;
  sparcclComm_t wrapped, owned;
  float *d, *d2;
  cudaStream_t stream;
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  CUDA_OK(cudaMalloc((void**)&d2, bytes));
  CUDA_OK(cudaMemset(d, 0, bytes));
  CUDA_OK(cudaMemset(d2, 0, bytes));
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  ck_assert_int_eq(ncclGetUniqueId(&id), ncclSuccess);
  ck_assert_int_eq(ncclCommInitRank(&nc, 1, id, 0), ncclSuccess);
  ck_assert_int_eq(sparcclCommInitNccl(&wrapped, nc, &c), sparcclSuccess);
  owned = deviceComm(&c);
  ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, wrapped, NULL), sparcclSuccess);
  ck_assert_int_eq(sparcclAllReduce(d2, d2, count, sparcclFloat32, sparcclSum, owned, NULL), sparcclSuccess);
#ifdef CUDA_EMU
  CUDA_OK(cudaEmuStreamDefer(stream, 1));
#endif
  ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, wrapped, stream), sparcclSuccess);
  ck_assert_int_eq(sparcclCommAbort(wrapped), sparcclSuccess);
#ifdef CUDA_EMU
  ck_assert_uint_gt(cudaEmuStreamPending(stream), 0);
#endif
  ck_assert_int_eq(ncclCommAbort(nc), ncclSuccess);
  ck_assert_int_eq(sparcclAllReduce(d2, d2, count, sparcclFloat32, sparcclSum, owned, stream), sparcclSuccess);
  ck_assert_int_eq(sparcclCommAbort(owned), sparcclSuccess);
  CUDA_OK(cudaStreamSynchronize(stream));
  cudaStreamDestroy(stream);
  cudaFree(d); cudaFree(d2);
}
END_TEST

#ifdef CUDA_EMU
/* Every fill of a new key's device state is checked: with the memsets failing (an injected
 * fault), the key is refused on every rank instead of starting from whatever the memory
 * held, and a later call creates it afresh. */
START_TEST(test_fill_fault) {
  size_t count = 5000, bytes = count * 4;
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 64);
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  sparcclStats_t stats;
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  CUDA_OK(cudaMemset(d, 0, bytes));
  cudaEmuInjectFault(cudaEmuFaultMemset, 1000, cudaErrorInvalidValue);
  ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL), sparcclUnhandledCudaError);
  cudaEmuInjectFault(cudaEmuFaultMemset, 0, cudaSuccess);
  (void)cudaGetLastError();
  ck_assert_int_eq(sparcclCommGetStats(device, &stats), sparcclSuccess);
  ck_assert_uint_eq(stats.layerSets, 0);
  for (int s = 0; s < 2; s++) stepBoth(host, device, h, out, d, d, back, count, 750 + (uint64_t)s, "fill fault", s);
  assertSameState(host, device, "fill fault");
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); free(h); free(out); free(back);
}
END_TEST
#endif

/* With several ranks: a subset (every compressor, shared randomness, wire types). */
START_TEST(test_ranks) {
  int compressor = _i % 5, feedback = (_i * 3 + 1) % 4;
  size_t mixed[] = {5000, 17, 4096, 100, 9000};
  char what[128];
  sparcclConfig_t c = config(compressor, feedback, _i % 3 == 0 ? sparcclBfloat16 : sparcclFloat32, 64);
  c.sharedRandomness = _i >= 5;
  snprintf(what, sizeof(what), "%d ranks: %s + %s%s", worldSize, names[compressor],
           feedbacks[feedback], c.sharedRandomness ? ", shared randomness" : "");
  compareRun(&c, 5, mixed, sparcclFloat32, _i % 2 ? sparcclAvg : sparcclSum, _i % 2, 3,
             200 + (uint64_t)_i, _i == 7 ? 2 : 0, what);
}
END_TEST

/* SPEC 4's call check on the device: a refused call writes no output, changes no state
 * and is counted in stats.refusedCalls; the following calls give the bits of a host comm
 * that never saw it.  `refuse` makes the one bad call on the device comm alone. */
static void refusedCallRun(const sparcclConfig_t* c, void (*refuse)(sparcclComm_t, float*, float*, size_t),
                           int counted, const char* what) {
  const size_t count = 6000, bytes = count * sizeof(float);
  sparcclComm_t host = hostComm(c), device = deviceComm(c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float *before = (float*)malloc(bytes), *d, *dout;
  sparcclStats_t stats;
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  CUDA_OK(cudaMalloc((void**)&dout, bytes));
  for (int s = 0; s < 2; s++) stepBoth(host, device, h, out, d, dout, back, count, 500u + (uint64_t)s, what, s);
  CUDA_OK(cudaMemcpy(before, dout, bytes, cudaMemcpyDeviceToHost));
  fill(h, count, sparcclFloat32, 777u, 0);
  CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
  refuse(device, d, dout, count);
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaMemcpy(back, dout, bytes, cudaMemcpyDeviceToHost));
  ck_assert_msg(firstDifference(back, before, bytes) < 0, "%s: a refused call wrote its output", what);
  ck_assert_int_eq(sparcclCommGetStats(device, &stats), sparcclSuccess);
  ck_assert_msg(stats.refusedCalls == (unsigned long long)counted && stats.calls == 2 && stats.layerSets == 1,
                "%s: %llu refused, %llu calls, %llu keys", what, stats.refusedCalls, stats.calls,
                stats.layerSets);
  for (int s = 2; s < 5; s++) stepBoth(host, device, h, out, d, dout, back, count, 500u + (uint64_t)s, what, s);
  assertSameState(host, device, what);
  sparcclCommDestroy(host);
  sparcclCommDestroy(device);
  cudaFree(d); cudaFree(dout);
  free(h); free(out); free(back); free(before);
}

/* Ranks that disagree: sum on the even ranks, avg on the odd ones, on a live key. */
static void refuseByOp(sparcclComm_t device, float* d, float* dout, size_t count) {
  ck_assert_int_eq(sparcclAllReduce(d, dout, count, sparcclFloat32, worldRank % 2 ? sparcclAvg : sparcclSum,
                                    device, NULL), sparcclSuccess); /* known on the device only */
}

START_TEST(test_disagreeing_ranks) {
  sparcclConfig_t c = config(_i ? sparcclImpK : sparcclTopK, _i ? sparcclFeedbackSCAM : sparcclFeedbackEF21,
                             sparcclFloat32, 64);
  refusedCallRun(&c, refuseByOp, 1, _i ? "sum against avg (impk + scam)" : "sum against avg (topk + ef21)");
}
END_TEST

/* checkSizes: every exchange agrees its size first, so a live key against a new one (the odd
 * ranks' count differs) is refused on every rank before NCCL sees collectives of different
 * sizes, and the new key is not kept.  The new key's rank refuses it in its layout
 * exchange, which is not a call's exchange: only the others count a refused call. */
static void refuseByCount(sparcclComm_t device, float* d, float* dout, size_t count) {
  ck_assert_int_eq(sparcclAllReduce(d, dout, worldRank % 2 ? count - 1000 : count, sparcclFloat32,
                                    sparcclSum, device, NULL), sparcclInvalidUsage);
}

START_TEST(test_disagreeing_sizes) {
  sparcclConfig_t c = config(sparcclTopK, _i ? sparcclFeedbackDGC : sparcclFeedbackEF, sparcclFloat32, 64);
  c.checkSizes = 1;
  c.warmupSteps = _i ? 3 : 0; /* the third call is dense against the odd ranks' new key */
  refusedCallRun(&c, refuseByCount, worldRank % 2 == 0,
                 _i ? "checkSizes: a dense call against a new key" : "checkSizes: a live key against a new key");
}
END_TEST

/* The phase API on a device comm (SPEC 10): compress into a device block, the caller's
 * exchange (an MPI_Allgather through the host here), decompress: bitwise the host comm's
 * one call, outputs and state; a one-call on a key between its halves is refused.  With
 * warm-up the first calls' blocks are whole vectors (their size asked before each call);
 * the device's bytesSent is then the blocks it compressed, the host's one-calls its ring. */
static void phaseRun(const sparcclConfig_t* c, int dtype, int steps, const char* what) {
  const size_t counts[] = {6000, 50, 5000}, count = 11050, bytes = count * sparccl_dtype_size(dtype);
  sparcclComm_t host = hostComm(c), device = deviceComm(c);
  void *h = malloc(bytes), *out = malloc(bytes), *back = malloc(bytes), *d, *dout, *dblock = NULL, *dblocks = NULL;
  unsigned char *block = NULL, *blocks = NULL;
  size_t blockBytes = 0, capacity = 0;
  unsigned long long sent = 0;
  sparcclStats_t stats;
  ck_assert_int_eq(sparcclRegisterLayoutTagged(host, 4, 3, counts), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayoutTagged(device, 4, 3, counts), sparcclSuccess);
  CUDA_OK(cudaMalloc(&d, bytes));
  CUDA_OK(cudaMalloc(&dout, bytes));
  for (int s = 0; s < steps; s++) {
    ck_assert_int_eq(sparcclBlockBytesTagged(device, 4, &blockBytes), sparcclSuccess);
    if (blockBytes > capacity) {
      free(block); free(blocks); cudaFree(dblock); cudaFree(dblocks);
      capacity = blockBytes;
      block = (unsigned char*)malloc(capacity);
      blocks = (unsigned char*)malloc(capacity * (size_t)worldSize);
      CUDA_OK(cudaMalloc(&dblock, capacity));
      CUDA_OK(cudaMalloc(&dblocks, capacity * (size_t)worldSize));
    }
    sent += blockBytes;
    fill(h, count, dtype, 900 + (uint64_t)s * 13 + (uint64_t)worldRank, 0);
    CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclAllReduceTagged(h, out, count, dtype, sparcclAvg, 4, host, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclCompressTagged(d, count, dtype, 4, device, dblock, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduceTagged(d, dout, count, dtype, sparcclAvg, 4, device, NULL), sparcclInvalidUsage);
    CUDA_OK(cudaMemcpy(block, dblock, blockBytes, cudaMemcpyDeviceToHost));
#ifdef CUDA_EMU
    MPI_Allgather(block, (int)blockBytes, MPI_BYTE, blocks, (int)blockBytes, MPI_BYTE, MPI_COMM_WORLD);
#else
    memcpy(blocks, block, blockBytes);
#endif
    CUDA_OK(cudaMemcpy(dblocks, blocks, blockBytes * (size_t)worldSize, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclDecompressTagged(dblocks, dout, count, dtype, sparcclAvg, 4, device, NULL), sparcclSuccess);
    CUDA_OK(cudaMemcpy(back, dout, bytes, cudaMemcpyDeviceToHost));
    assertSameOutput(back, out, bytes, sparccl_dtype_size(dtype), what, s);
  }
  assertSameStateOf(host, device, what, c->warmupSteps == 0);
  ck_assert_int_eq(sparcclCommGetStats(device, &stats), sparcclSuccess);
  ck_assert_msg(stats.bytesSent == sent, "%s: the device sent %llu bytes, its blocks were %llu",
                what, stats.bytesSent, sent);
  sparcclCommDestroy(host);
  sparcclCommDestroy(device);
  cudaFree(d); cudaFree(dout); cudaFree(dblock); cudaFree(dblocks);
  free(h); free(out); free(back); free(block); free(blocks);
}

START_TEST(test_phase) {
  static const int methods[][2] = {{sparcclTopK, sparcclFeedbackSCAM}, {sparcclImpK, sparcclFeedbackEF21},
                                   {sparcclRandK, sparcclFeedbackEF}, {sparcclImpKRandom, sparcclFeedbackNone}};
  sparcclConfig_t c = config(methods[_i % 4][0], methods[_i % 4][1], sparcclFloat32, 64);
  phaseRun(&c, _i / 4 ? sparcclBfloat16 : sparcclFloat32, 4, "phase API");
}
END_TEST

/* The phase API in warm-up's dense calls and the compressed ones after (SPEC 9, 10), dgc
 * among them. */
START_TEST(test_phase_warmup) {
  static const int methods[][2] = {{sparcclTopK, sparcclFeedbackDGC}, {sparcclImpK, sparcclFeedbackEF21},
                                   {sparcclRandK, sparcclFeedbackEF}, {sparcclImpKSelect, sparcclFeedbackDGC}};
  sparcclConfig_t c = config(methods[_i % 4][0], methods[_i % 4][1], sparcclFloat32, 64);
  c.warmupSteps = 1 + (size_t)(_i % 2);
  phaseRun(&c, _i / 4 ? sparcclBfloat16 : sparcclFloat32, 4, "phase API, warm-up");
}
END_TEST

/* ------------------------------------------------------------ SPEC 9 on the device */

/* Two sparse layers and two dense ones (which under dgc keep u and follow the skip rule). */
static const size_t sec9Layout[] = {5000, 50, 4099, 3};

/* dgc (momentum correction and factor masking) under every compressor x dtype x wire type. */
START_TEST(test_dgc) {
  int compressor = _i % 5, dtype = dtypes[(_i / 5) % 3], wire = dtypes[_i / 15];
  char what[128];
  sparcclConfig_t c = config(compressor, sparcclFeedbackDGC, wire, 64);
  c.momentum = _i % 2 ? 0.9 : 0.5;
  snprintf(what, sizeof(what), "dgc: %s, %s gradients, %s wire", names[compressor],
           dtypeNames[(_i / 5) % 3], dtypeNames[_i / 15]);
  compareRun(&c, 4, sec9Layout, dtype, _i % 2 ? sparcclAvg : sparcclSum, _i % 3 == 0, 3,
             300 + (uint64_t)_i, 0, what);
}
END_TEST

/* Warm-up: 0 to 4 dense calls, ending mid-run (6 calls), under every feedback, each with
 * another compressor, dtype and op: the ring's bits, the state, the stats' bytes. */
START_TEST(test_warmup) {
  int feedback = _i % 5, compressor = (_i + _i / 5) % 5;
  char what[128];
  sparcclConfig_t c = config(compressor, feedback, sparcclFloat32, 64);
  c.warmupSteps = (size_t)(_i / 5);
  snprintf(what, sizeof(what), "%zu warm-up calls: %s + %s, %s", c.warmupSteps, names[compressor],
           feedbacks[feedback], dtypeNames[_i % 3]);
  compareRun(&c, 4, sec9Layout, dtypes[_i % 3], _i % 2 ? sparcclAvg : sparcclSum, _i % 4 == 1, 6,
             400 + (uint64_t)_i, 0, what);
}
END_TEST

/* With several ranks: warm-up and dgc across the ring's shards. */
START_TEST(test_ranks_warmup) {
  static const int feedback[] = {sparcclFeedbackDGC, sparcclFeedbackEF21, sparcclFeedbackSCAM,
                                 sparcclFeedbackDGC, sparcclFeedbackNone, sparcclFeedbackEF};
  char what[128];
  sparcclConfig_t c = config(_i % 5, feedback[_i], _i % 3 == 0 ? sparcclBfloat16 : sparcclFloat32, 64);
  c.warmupSteps = (size_t)(_i % 4);
  c.sharedRandomness = _i == 1;
  snprintf(what, sizeof(what), "%d ranks, %zu warm-up calls: %s + %s", worldSize, c.warmupSteps,
           names[_i % 5], feedbacks[feedback[_i]]);
  compareRun(&c, 4, sec9Layout, dtypes[_i % 3], _i % 2 ? sparcclAvg : sparcclSum, _i % 2, 5,
             600 + (uint64_t)_i, _i == 4 ? 2 : 0, what);
}
END_TEST

/* The state around warm-up: restart policies counting dense calls' steps (_i 0), online
 * importance, whose first step waits for a compressed call (_i 1), and an explicit restart
 * during warm-up and a scaling after it under dgc (u reset and scaled like e, _i 2). */
START_TEST(test_warmup_state) {
  size_t counts[] = {6000, 6000, 50};
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF21, sparcclFloat32, 64);
  if (_i == 0) {
    c.restartRatio = 1.05;
    c.restartEvery = 2;
    c.warmupSteps = 3;
    compareRun(&c, 3, counts, sparcclFloat32, sparcclSum, 0, 7, 700, 0, "warm-up and restart policies");
    return;
  }
  if (_i == 1) {
    c = config(sparcclImpK, sparcclFeedbackEF, sparcclFloat32, 64);
    c.importance = sparcclImportanceOnline;
    c.warmupSteps = 2;
    compareRun(&c, 3, counts, sparcclFloat32, sparcclAvg, 1, 5, 710, 0, "warm-up and online importance");
    return;
  }
  c = config(sparcclRandK, sparcclFeedbackDGC, sparcclFloat32, 64);
  c.warmupSteps = 2;
  for (int buffers = 1; buffers <= 2; buffers++) /* the plain kernels with two */
    restartScaleRun(&c, buffers, buffers - 1, 5, 720, 0, 3, 0.25f,
                    "dgc: restart in warm-up, scale after");
}
END_TEST

/* NaN and Inf during warm-up (calls 0 and 1) and after (3 and 4), in a sparse layer and in
 * the dense one: a layer with state is skipped on every rank (dgc's dense one too), a
 * dense layer without state sums them; a skipped call still counts in the warm-up.
 * _i: ef, ef21, dgc. */
START_TEST(test_warmup_nonfinite) {
  static const int feedback[] = {sparcclFeedbackEF, sparcclFeedbackEF21, sparcclFeedbackDGC};
  size_t counts[] = {5000, 6000, 50};
  size_t count = 11050, bytes = count * 4;
  sparcclConfig_t c = config(_i == 2 ? sparcclImpK : sparcclTopK, feedback[_i], sparcclFloat32, 64);
  c.warmupSteps = 2;
  c.restartRatio = _i == 1 ? 1.5 : 0.0;
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  int last = worldSize - 1;
  char what[64];
  snprintf(what, sizeof(what), "non-finite around warm-up (%s)", feedbacks[feedback[_i]]);
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  sparcclRegisterLayout(host, h, 3, counts);
  sparcclRegisterLayout(device, d, 3, counts);
  for (int s = 0; s < 6; s++) {
    fill(h, count, sparcclFloat32, 800 + (uint64_t)s, 0);
    if ((s == 0 || s == 3) && worldRank == last) h[7000] = NAN;
    if ((s == 1 || s == 4) && worldRank == 0) h[11007] = s == 1 ? INFINITY : sparccl_bits_float(0xff800123u);
    if (s == 4 && worldRank == last) h[10] = -INFINITY;
    CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL), sparcclSuccess);
    CUDA_OK(cudaMemcpy(back, d, bytes, cudaMemcpyDeviceToHost));
    assertSameOutput(back, out, bytes, 4, what, s);
    ck_assert_uint_eq(sparccl_float_bits(back[7000]) == SPARCCL_CANONICAL_NAN_BITS, s == 0 || s == 3);
  }
  assertSameState(host, device, what);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); free(h); free(out); free(back);
}
END_TEST

/* Warm-up's dense calls, then a graph of the key's compressed call (graphRun). */
START_TEST(test_warmup_graph) {
  size_t counts[] = {8192, 100, 9000};
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackDGC, sparcclFloat32, 1000);
  c.warmupSteps = 2;
  graphRun(&c, counts, sparcclSum, 2, 60, "warm-up, then a graph replay");
}
END_TEST

#ifdef CUDA_EMU
/* A hostile or broken peer, played by the emulator's NCCL (cudaEmuTamperNextAllGather). */
static int tamperMode;
static void refuseByTamper(sparcclComm_t device, float* d, float* dout, size_t count) {
  cudaEmuTamperNextAllGather(tamperMode);
  ck_assert_int_eq(sparcclAllReduce(d, dout, count, sparcclFloat32, sparcclSum, device, NULL), sparcclSuccess);
}

START_TEST(test_tampered_blocks) {
  static const char* whats[] = {"a check of another call", "an index outside its layer",
                                "a short exchange (stale slots)"};
  sparcclConfig_t c = config(sparcclTopK, _i % 2 ? sparcclFeedbackSCAM : sparcclFeedbackEF21,
                             sparcclFloat32, 64);
  tamperMode = 1 + _i / 2;
  refusedCallRun(&c, refuseByTamper, 1, whats[_i / 2]);
}
END_TEST

/* The same in warm-up's dense calls (SPEC 9), whose allgather carries the shard sums: a
 * check of another call, a short exchange.  (A dense block has no indices: a changed sum
 * is NCCL's to prevent.)  The warm-up outlasts the run, so the refused call, which the
 * host side counts as made, changes no call's kind. */
START_TEST(test_tampered_dense) {
  static const char* whats[] = {"dense: a check of another call", "dense: a short exchange (stale slots)"};
  sparcclConfig_t c = config(sparcclTopK, _i % 2 ? sparcclFeedbackDGC : sparcclFeedbackEF21,
                             sparcclFloat32, 64);
  c.warmupSteps = 10;
  tamperMode = _i / 2 ? 3 : 1;
  refusedCallRun(&c, refuseByTamper, 1, whats[_i / 2]);
}
END_TEST
#endif

/* SPEC 9's tests (warm-up, dgc); alone: also the loops' SPEC 9 cases of other tests
 * (EMU_TESTS_SUBSET=sec9). */
static void addWarmupTests(TCase* tc, int alone) {
  if (worldSize == 1) {
    tcase_add_test(tc, test_warmup_graph);
    tcase_add_loop_test(tc, test_dgc, 0, 45);
    tcase_add_loop_test(tc, test_warmup, 0, 25);
    tcase_add_loop_test(tc, test_warmup_state, 0, 3);
    if (alone) {
      tcase_add_loop_test(tc, test_scale_nan, 2, 3);
      tcase_add_loop_test(tc, test_load, 2, 3);
    }
#ifdef CUDA_EMU
    tcase_add_loop_test(tc, test_tampered_dense, 0, 4);
#endif
  } else {
    tcase_add_loop_test(tc, test_ranks_warmup, 0, 6);
  }
  tcase_add_loop_test(tc, test_phase_warmup, 0, 8);
  tcase_add_loop_test(tc, test_warmup_nonfinite, 0, 3);
}

static Suite* deviceSuite(void) {
#ifdef CUDA_EMU
  Suite* s = suite_create("cuda_emu");
#else
  Suite* s = suite_create(FULL ? "gpu" : "gpu, small sizes (for compute-sanitizer)");
#endif
  TCase* tc = tcase_create("device vs CPU reference");
  tcase_set_timeout(tc, 600);
  const char* subset = getenv("EMU_TESTS_SUBSET");
  const int selectOnly = subset != NULL && strcmp(subset, "select") == 0;
  if (subset != NULL && strcmp(subset, "sec9") == 0) {
    addWarmupTests(tc, 1);
    suite_add_tcase(s, tc);
    return s;
  }
  if (selectOnly || worldSize == 1) {
    /* the selection and compaction kernels: every compressor x feedback, every radix pass */
    tcase_add_loop_test(tc, test_methods, 0, 20);
    tcase_add_loop_test(tc, test_every_element, 0, 25);
    tcase_add_test(tc, test_radix);
    tcase_add_test(tc, test_equal_keys);
    tcase_add_loop_test(tc, test_prediction, 0, 6);
  }
  if (!selectOnly) {
    if (worldSize == 1) {
      tcase_add_loop_test(tc, test_dtypes, 0, 9);
      tcase_add_test(tc, test_sizes);
      tcase_add_test(tc, test_graph);
      tcase_add_loop_test(tc, test_importance, 0, 6);
      tcase_add_test(tc, test_restarts);
      tcase_add_loop_test(tc, test_scale_nan, 0, 3);
      tcase_add_loop_test(tc, test_load, 0, 3);
      tcase_add_test(tc, test_errors);
#ifdef CUDA_EMU
      tcase_add_loop_test(tc, test_tampered_blocks, 0, 6);
#endif
      tcase_add_loop_test(tc, test_streams, 0, 2);
      tcase_add_loop_test(tc, test_capture_refused, 0, 2);
      tcase_add_test(tc, test_pending_error);
      tcase_add_test(tc, test_nonblocking);
      tcase_add_test(tc, test_group);
      tcase_add_test(tc, test_abort);
#ifdef CUDA_EMU
      tcase_add_test(tc, test_fill_fault);
#endif
      {
        int devices = 0;
        if (cudaGetDeviceCount(&devices) == cudaSuccess && devices >= 2)
          tcase_add_test(tc, test_devices);
        else
          printf("gpu suite: test_devices not run (it needs two devices, %d found)\n", devices);
      }
    } else {
      tcase_add_loop_test(tc, test_ranks, 0, 10);
      tcase_add_test(tc, test_restarts);
      tcase_add_loop_test(tc, test_disagreeing_ranks, 0, 2);
      tcase_add_loop_test(tc, test_disagreeing_sizes, 0, 2);
    }
    tcase_add_loop_test(tc, test_nonfinite, 0, 2);
    tcase_add_loop_test(tc, test_phase, 0, 8);
    addWarmupTests(tc, 0);
  }
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char** argv) {
  int devices = 0, failed;
  cudaError_t err;
  SRunner* runner;
  MPI_Init(&argc, &argv);
#ifdef CUDA_EMU
  /* the fake NCCL gathers over MPI: one device comm across every process */
  MPI_Comm_rank(MPI_COMM_WORLD, &worldRank);
  MPI_Comm_size(MPI_COMM_WORLD, &worldSize);
#endif
  err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    printf("GPU suite not run: no CUDA device (%s)\n",
           err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount returned 0");
    MPI_Finalize();
    return 0;
  }
  runner = srunner_create(deviceSuite());
  srunner_set_fork_status(runner, CK_NOFORK);
  srunner_run_all(runner, worldRank == 0 ? CK_NORMAL : CK_SILENT);
  failed = srunner_ntests_failed(runner);
  srunner_free(runner);
#ifdef CUDA_EMU
  if (worldRank == 0)
    printf("cuda_emu: %llu kernel launches, %llu emulated thread blocks on rank 0\n",
           cudaEmuLaunches(), cudaEmuBlocks());
#endif
  MPI_Finalize();
  return failed == 0 ? 0 : 1;
}
