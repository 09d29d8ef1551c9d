/*
 * The GPU suite: device comms against the CPU reference (host comms), bitwise (SPEC 3a).
 * Registered only when a CUDA device is present; otherwise one line says it was not run.
 *
 * Every comparison runs the same inputs through a host comm (MPI_COMM_SELF) and a device
 * comm (a one-rank NCCL communicator), then compares the outputs bitwise and the whole
 * state through sparcclSaveState files, which must be byte-identical (e, h, H, w, previous
 * gradients, step counters, restart history).
 */
#include <check.h>
#include <cuda_runtime.h>
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

#define CUDA_OK(call) ck_assert_msg((call) == cudaSuccess, "%s failed", #call)

static uint64_t rng(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static float normal(uint64_t* s) {
  double sum = 0.0;
  for (int i = 0; i < 4; i++) sum += (double)(rng(s) >> 11) * (1.0 / 9007199254740992.0);
  return (float)((sum - 2.0) * 1.7320508075688772);
}

/* Gradients in a dtype: kind 0 normal, 1 all zero, 2 few distinct values (ties). */
static void fill(void* out, size_t n, int dtype, uint64_t seed, int kind) {
  for (size_t i = 0; i < n; i++) {
    float v = kind == 1 ? 0.0f : kind == 2 ? (float)(rng(&seed) % 4) - 1.5f : normal(&seed);
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
  ck_assert_int_eq(sparcclCommInitMpi(&comm, MPI_COMM_SELF, c), sparcclSuccess);
  return comm;
}
static sparcclComm_t deviceComm(const sparcclConfig_t* c) {
  sparcclComm_t comm;
  ncclUniqueId id;
  ck_assert_int_eq(sparcclGetUniqueId(&id), sparcclSuccess);
  ck_assert_int_eq(sparcclCommInitRank(&comm, 1, id, 0, c), sparcclSuccess);
  return comm;
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

/* Save both comms' state and compare the files byte for byte. */
static void assertSameState(sparcclComm_t host, sparcclComm_t device, const char* what) {
  char a[] = "/tmp/sparccl_gpu_hostXXXXXX", b[] = "/tmp/sparccl_gpu_devXXXXXX";
  size_t na, nb;
  int fa = mkstemp(a), fb = mkstemp(b);
  close(fa); close(fb);
  ck_assert_int_eq(sparcclSaveState(host, a), sparcclSuccess);
  ck_assert_int_eq(sparcclSaveState(device, b), sparcclSuccess);
  void* da = readFile(a, &na);
  void* db = readFile(b, &nb);
  ck_assert_msg(na == nb && memcmp(da, db, na) == 0, "%s: device state differs from the CPU reference", what);
  free(da); free(db);
  unlink(a); unlink(b);
}

/* Run `steps` calls with fresh random gradients on both comms; compare every output. */
static void compareRun(const sparcclConfig_t* c, size_t nlayers, const size_t* counts,
                       int dtype, int op, int inPlace, int steps, uint64_t seed, int kind,
                       const char* what) {
  size_t count = 0, bytes;
  for (size_t i = 0; i < nlayers; i++) count += counts[i];
  bytes = count * sparccl_dtype_size(dtype);
  sparcclComm_t host = hostComm(c), device = deviceComm(c);
  void *hsend = malloc(bytes), *hrecv = malloc(bytes), *back = malloc(bytes), *dsend, *drecv;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  CUDA_OK(cudaMalloc(&dsend, bytes));
  drecv = dsend;
  if (!inPlace) CUDA_OK(cudaMalloc(&drecv, bytes));
  ck_assert_int_eq(sparcclRegisterLayout(host, hsend, nlayers, counts), sparcclSuccess);
  ck_assert_int_eq(sparcclRegisterLayout(device, dsend, nlayers, counts), sparcclSuccess);
  for (int s = 0; s < steps; s++) {
    fill(hsend, count, dtype, seed + (uint64_t)s * 7919, kind);
    CUDA_OK(cudaMemcpy(dsend, hsend, bytes, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclAllReduce(hsend, inPlace ? hsend : hrecv, count, dtype, op, host, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(dsend, drecv, count, dtype, op, device, stream), sparcclSuccess);
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(back, drecv, bytes, cudaMemcpyDeviceToHost));
    ck_assert_msg(memcmp(back, inPlace ? hsend : hrecv, bytes) == 0,
                  "%s: step %d output differs from the CPU reference", what, s);
  }
  assertSameState(host, device, what);
  sparcclCommDestroy(host);
  sparcclCommDestroy(device);
  cudaFree(dsend);
  if (!inPlace) cudaFree(drecv);
  cudaStreamDestroy(stream);
  free(hsend); free(hrecv); free(back);
}

static const char* names[] = {"topk", "randk", "impk", "impk_select", "impk_random"};
static const char* feedbacks[] = {"none", "ef", "ef21", "scam"};

/* Every compressor x feedback, fp32, several layouts. */
START_TEST(test_methods) {
  int compressor = _i / 4, feedback = _i % 4;
  size_t one[] = {1}, prime[] = {4099}, mixed[] = {5000, 17, 4096, 100, 12289, 3, 70000};
  char what[128];
  sparcclConfig_t c = config(compressor, feedback, sparcclFloat32, 64);
  snprintf(what, sizeof(what), "%s + %s", names[compressor], feedbacks[feedback]);
  c.minSparseCount = 1;
  compareRun(&c, 1, one, sparcclFloat32, sparcclSum, 0, 3, 11, 0, what);
  compareRun(&c, 1, prime, sparcclFloat32, sparcclAvg, 0, 3, 12, 0, what);
  c.minSparseCount = 64;
  compareRun(&c, 7, mixed, sparcclFloat32, sparcclSum, 1, 4, 13, 0, what);
  compareRun(&c, 7, mixed, sparcclFloat32, sparcclSum, 0, 2, 14, 1, what); /* all zero */
  compareRun(&c, 7, mixed, sparcclFloat32, sparcclAvg, 0, 3, 15, 2, what); /* ties */
}
END_TEST

/* Every dtype x wire type for two methods. */
START_TEST(test_dtypes) {
  static const int dtypes[] = {sparcclFloat32, sparcclFloat16, sparcclBfloat16};
  int dtype = dtypes[_i / 3], wire = dtypes[_i % 3];
  size_t mixed[] = {9000, 40, 4097, 33333};
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackSCAM, wire, 64);
  compareRun(&c, 4, mixed, dtype, sparcclSum, 0, 3, 21, 0, "topk+scam dtypes");
  c = config(sparcclImpKRandom, sparcclFeedbackEF21, wire, 64);
  compareRun(&c, 4, mixed, dtype, sparcclAvg, 1, 3, 22, 0, "impk_random+ef21 dtypes");
}
END_TEST

/* 1 to 200 layers, sizes up to 10 million. */
START_TEST(test_sizes) {
  uint64_t s = 99;
  size_t many[200], big[] = {10000000};
  for (int i = 0; i < 200; i++) many[i] = 1 + (size_t)(rng(&s) % 20000);
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 4096);
  compareRun(&c, 200, many, sparcclFloat32, sparcclSum, 0, 3, 31, 0, "200 layers");
  c = config(sparcclImpK, sparcclFeedbackSCAM, sparcclBfloat16, 4096);
  compareRun(&c, 1, big, sparcclFloat32, sparcclSum, 1, 2, 32, 0, "10M layer");
  c = config(sparcclRandK, sparcclFeedbackEF, sparcclFloat32, 4096);
  c.sharedRandomness = 1;
  compareRun(&c, 1, big, sparcclFloat32, sparcclAvg, 0, 2, 33, 0, "10M randk shared");
}
END_TEST

/* Non-finite values in one layer: output NaN, state unchanged, same as the CPU. */
START_TEST(test_nonfinite) {
  size_t counts[] = {5000, 6000};
  size_t count = 11000, bytes = count * 4;
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF, sparcclFloat32, 64);
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
  float *h = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes);
  float* d;
  CUDA_OK(cudaMalloc((void**)&d, bytes));
  sparcclRegisterLayout(host, h, 2, counts);
  sparcclRegisterLayout(device, d, 2, counts);
  for (int s = 0; s < 4; s++) {
    fill(h, count, sparcclFloat32, 40 + (uint64_t)s, 0);
    if (s == 1) h[7000] = NAN;
    if (s == 2) h[10] = INFINITY;
    CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(d, d, count, sparcclFloat32, sparcclSum, device, NULL), sparcclSuccess);
    CUDA_OK(cudaMemcpy(back, d, bytes, cudaMemcpyDeviceToHost));
    ck_assert_msg(memcmp(back, out, bytes) == 0, "non-finite step %d differs", s);
  }
  assertSameState(host, device, "non-finite");
  sparcclStats_t hs, ds;
  sparcclCommGetStats(host, &hs);
  sparcclCommGetStats(device, &ds);
  ck_assert_uint_eq(hs.skippedSteps, 2);
  ck_assert_uint_eq(ds.skippedSteps, 2);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); free(h); free(out); free(back);
}
END_TEST

/* A captured call replays correctly: counters and state live on the device. */
START_TEST(test_graph) {
  size_t counts[] = {8192, 100, 30000};
  size_t count = 38292, bytes = count * 4;
  sparcclConfig_t c = config(sparcclRandK, sparcclFeedbackSCAM, sparcclFloat32, 1000);
  c.restartEvery = 3;
  sparcclComm_t host = hostComm(&c), device = deviceComm(&c);
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
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  ck_assert_int_eq(sparcclAllReduce(d, dout, count, sparcclFloat32, sparcclAvg, device, stream), sparcclSuccess);
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int s = 0; s < 7; s++) {
    fill(h, count, sparcclFloat32, 50 + (uint64_t)s, 0);
    CUDA_OK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    ck_assert_int_eq(sparcclAllReduce(h, out, count, sparcclFloat32, sparcclAvg, host, NULL), sparcclSuccess);
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(back, dout, bytes, cudaMemcpyDeviceToHost));
    ck_assert_msg(memcmp(back, out, bytes) == 0, "graph replay %d differs", s);
  }
  assertSameState(host, device, "graph replay");
  cudaGraphExecDestroy(exec); cudaGraphDestroy(graph);
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(d); cudaFree(dout); cudaStreamDestroy(stream);
  free(h); free(out); free(back);
}
END_TEST

/* Importance probe and solver steps (cube, simplex, online) against the CPU. */
START_TEST(test_importance) {
  static const int modes[] = {sparcclImportanceCube, sparcclImportanceSimplex, sparcclImportanceOnline};
  size_t counts[] = {9000, 50, 20000};
  size_t count = 29050, bytes = count * 4;
  sparcclConfig_t c = config(sparcclImpK, sparcclFeedbackSCAM, sparcclFloat32, 1000);
  c.importance = modes[_i];
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
    CUDA_OK(cudaMemcpy(dx, x, bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dg, g, bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dq, q, bytes, cudaMemcpyHostToDevice));
    if (c.importance != sparcclImportanceOnline) {
      ck_assert_int_eq(sparcclImportanceProbe(x, g, p, count, sparcclFloat32, host, NULL), sparcclSuccess);
      ck_assert_int_eq(sparcclImportanceProbe(dx, dg, dp, count, sparcclFloat32, device, NULL), sparcclSuccess);
      CUDA_OK(cudaMemcpy(back, dp, bytes, cudaMemcpyDeviceToHost));
      ck_assert_msg(memcmp(back, p, bytes) == 0, "probe differs");
      ck_assert_int_eq(sparcclImportanceUpdate(q, g, count, sparcclFloat32, host, NULL), sparcclSuccess);
      ck_assert_int_eq(sparcclImportanceUpdate(dq, dg, count, sparcclFloat32, device, NULL), sparcclSuccess);
    }
    ck_assert_int_eq(sparcclAllReduce(g, out, count, sparcclFloat32, sparcclSum, host, NULL), sparcclSuccess);
    ck_assert_int_eq(sparcclAllReduce(dg, dp, count, sparcclFloat32, sparcclSum, device, NULL), sparcclSuccess);
    CUDA_OK(cudaMemcpy(back, dp, bytes, cudaMemcpyDeviceToHost));
    ck_assert_msg(memcmp(back, out, bytes) == 0, "importance mode %d step %d differs", c.importance, s);
  }
  assertSameState(host, device, "importance");
  sparcclCommDestroy(host); sparcclCommDestroy(device);
  cudaFree(dx); cudaFree(dg); cudaFree(dp); cudaFree(dq);
  free(x); free(g); free(p); free(q); free(back); free(out);
}
END_TEST

/* Restart policies (every N, ratio) and the explicit restart, against the CPU. */
START_TEST(test_restarts) {
  size_t counts[] = {6000, 6000};
  sparcclConfig_t c = config(sparcclTopK, sparcclFeedbackEF21, sparcclFloat32, 64);
  c.restartRatio = 1.05;
  c.restartEvery = 4;
  compareRun(&c, 2, counts, sparcclFloat32, sparcclSum, 0, 9, 90, 0, "restart policies");
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
  ck_assert_int_eq(sparcclCommDestroy(device), sparcclSuccess);
  ck_assert_int_eq(sparcclAllReduce(d, d, 16, sparcclFloat32, sparcclSum, device, NULL), sparcclInvalidUsage);
  cudaFree(d);
}
END_TEST

static Suite* gpuSuite(void) {
  Suite* s = suite_create("gpu");
  TCase* tc = tcase_create("device vs CPU reference");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, test_methods, 0, 20);
  tcase_add_loop_test(tc, test_dtypes, 0, 9);
  tcase_add_test(tc, test_sizes);
  tcase_add_test(tc, test_nonfinite);
  tcase_add_test(tc, test_graph);
  tcase_add_loop_test(tc, test_importance, 0, 3);
  tcase_add_test(tc, test_restarts);
  tcase_add_test(tc, test_errors);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char** argv) {
  int devices = 0, failed;
  cudaError_t err;
  SRunner* runner;
  MPI_Init(&argc, &argv);
  err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    printf("GPU suite not run: no CUDA device (%s)\n",
           err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount returned 0");
    MPI_Finalize();
    return 0;
  }
  runner = srunner_create(gpuSuite());
  srunner_set_fork_status(runner, CK_NOFORK);
  srunner_run_all(runner, CK_NORMAL);
  failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  MPI_Finalize();
  return failed == 0 ? 0 : 1;
}
