/*
 * sparccl_gpu_perf: per-call time of the device path on real layouts (nccl-tests'
 * conventions), split into compress / exchange / decompress with CUDA events around the
 * same launchers sparcclAllReduce uses, against the memory floor at the copy bandwidth
 * measured in the same run, and beside ncclAllReduce of the dense buffer.
 *
 *   sparccl_gpu_perf [-n iters] [-w warmup] [--density D] LAYOUT...
 */
#include <cuda_runtime.h>
#include <nccl.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "device_set.cuh"
#include "tool_util.h"
extern "C" {
#include "sparccl_mpi.h"
#include "sparccl_nccl.h"
}

#define CHECK(call)                                                                   \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

/* A failed call would otherwise print timings of work that never ran. */
#define SPARCCL_OK(call)                                                              \
  do {                                                                                \
    int r_ = (int)(call);                                                             \
    if (r_ != 0) {                                                                    \
      fprintf(stderr, "%s:%d %s failed (%d)\n", __FILE__, __LINE__, #call, r_);      \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

/* Copy bandwidth: bytes read + written per second by a device-to-device copy. */
static double copyBandwidth(size_t bytes) {
  void *a, *b;
  cudaEvent_t t0, t1;
  float ms;
  CHECK(cudaMalloc(&a, bytes)); CHECK(cudaMalloc(&b, bytes));
  CHECK(cudaMemset(a, 1, bytes));
  CHECK(cudaEventCreate(&t0)); CHECK(cudaEventCreate(&t1));
  CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
  CHECK(cudaEventRecord(t0));
  for (int i = 0; i < 10; i++) CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
  CHECK(cudaEventRecord(t1));
  CHECK(cudaEventSynchronize(t1));
  CHECK(cudaEventElapsedTime(&ms, t0, t1));
  cudaFree(a); cudaFree(b);
  return 2.0 * (double)bytes * 10 / (ms * 1e-3);
}

struct Method { const char* name; int compressor, feedback; };

int main(int argc, char** argv) {
  static const Method methods[] = {{"scam-topk", sparcclTopK, sparcclFeedbackSCAM},
                                   {"ef-topk", sparcclTopK, sparcclFeedbackEF},
                                   {"ef21-topk", sparcclTopK, sparcclFeedbackEF21},
                                   {"scam-impk", sparcclImpK, sparcclFeedbackSCAM},
                                   {"ef-randk", sparcclRandK, sparcclFeedbackEF}};
  int iters = 20, warmup = 5, a;
  double density = 0.01;
  MPI_Init(&argc, &argv);
  double bandwidth = copyBandwidth((size_t)1 << 30);
  printf("# copy bandwidth (device to device, read + write): %.1f GB/s\n", bandwidth / 1e9);
  printf("# %-18s %-10s %10s %10s %10s %10s %10s %10s %8s %10s %10s\n", "layout", "method",
         "count", "call(us)", "compr(us)", "exch(us)", "decomp(us)", "floor(us)", "x floor",
         "algbw", "dense(us)");
  for (a = 1; a < argc; a++) {
    if (!strcmp(argv[a], "-n")) { iters = atoi(argv[++a]); continue; }
    if (!strcmp(argv[a], "-w")) { warmup = atoi(argv[++a]); continue; }
    if (!strcmp(argv[a], "--density")) { density = atof(argv[++a]); continue; }
    tool_Layout layout;
    int status = tool_readLayout(argv[a], &layout);
    if (status == TOOL_LAYOUT_OPEN) { fprintf(stderr, "cannot open %s\n", argv[a]); exit(1); }
    if (status != TOOL_LAYOUT_OK) {
      char msg[4200];
      tool_layoutError(status, argv[a], &layout, msg, sizeof(msg));
      fprintf(stderr, "%s\n", msg);
      exit(1);
    }
    size_t nlayers = layout.nlayers, count = layout.total;
    const size_t* counts = layout.counts;
    const char* base = strrchr(argv[a], '/') ? strrchr(argv[a], '/') + 1 : argv[a];
    float *grad, *out;
    CHECK(cudaMalloc((void**)&grad, count * 4));
    CHECK(cudaMalloc((void**)&out, count * 4));
    {
      float* h = (float*)malloc(count * 4);
      uint64_t s = 1;
      for (size_t i = 0; i < count; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        h[i] = (float)((int64_t)(s >> 33) - (1ll << 30)) * 0x1p-30f;
      }
      CHECK(cudaMemcpy(grad, h, count * 4, cudaMemcpyHostToDevice));
      free(h);
    }
    cudaStream_t stream;
    cudaEvent_t ev[4];
    CHECK(cudaStreamCreate(&stream));
    for (int e = 0; e < 4; e++) CHECK(cudaEventCreate(&ev[e]));
    /* dense ncclAllReduce on a one-rank communicator, for reference */
    ncclComm_t nc;
    ncclUniqueId id;
    SPARCCL_OK(ncclGetUniqueId(&id));
    SPARCCL_OK(ncclCommInitRank(&nc, 1, id, 0));
    float denseMs = 0;
    for (int i = 0; i < warmup + iters; i++) {
      if (i == warmup) CHECK(cudaEventRecord(ev[0], stream));
      SPARCCL_OK(ncclAllReduce(grad, out, count, ncclFloat32, ncclSum, nc, stream));
    }
    CHECK(cudaEventRecord(ev[1], stream));
    CHECK(cudaEventSynchronize(ev[1]));
    CHECK(cudaEventElapsedTime(&denseMs, ev[0], ev[1]));
    for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
      sparcclConfig_t c = SPARCCL_CONFIG_INITIALIZER;
      sparcclComm_t comm;
      c.compressor = methods[m].compressor;
      c.feedback = methods[m].feedback;
      c.density = density;
      c.importance = sparcclImportanceNone;
      if (sparcclCommInitNccl(&comm, nc, &c) != sparcclSuccess) { fprintf(stderr, "init failed\n"); return 1; }
      SPARCCL_OK(sparcclRegisterLayout(comm, grad, nlayers, counts));
      sparcclLayerSet_t* set = sparcclFindSet(comm, 0, (uint64_t)(uintptr_t)grad, count);
      DeviceSet* ds = (DeviceSet*)set->device;
      KernelArgs ka = sparcclKernelArgs(comm, set, sparcclFloat32, sparcclSum);
      double tCall = 0, tCompress = 0, tExchange = 0, tDecompress = 0;
      for (int i = 0; i < warmup + iters; i++) {
        float ms[3], whole;
        CHECK(cudaEventRecord(ev[0], stream));
        CHECK(sparcclLaunchCompress(ka, ds, grad, stream));
        CHECK(cudaEventRecord(ev[1], stream));
        SPARCCL_OK(ncclAllGather(ds->sendBlock, ds->recvBlocks, set->blockBytes, ncclUint8, nc, stream));
        CHECK(cudaEventRecord(ev[2], stream));
        CHECK(sparcclLaunchDecompress(ka, ds, grad, out, stream));
        CHECK(cudaEventRecord(ev[3], stream));
        CHECK(cudaEventSynchronize(ev[3]));
        for (int e = 0; e < 3; e++) CHECK(cudaEventElapsedTime(&ms[e], ev[e], ev[e + 1]));
        /* the public call, timed whole */
        CHECK(cudaEventRecord(ev[0], stream));
        SPARCCL_OK(sparcclAllReduce(grad, out, count, sparcclFloat32, sparcclSum, comm, stream));
        CHECK(cudaEventRecord(ev[1], stream));
        CHECK(cudaEventSynchronize(ev[1]));
        CHECK(cudaEventElapsedTime(&whole, ev[0], ev[1]));
        if (i < warmup) continue;
        tCompress += ms[0]; tExchange += ms[1]; tDecompress += ms[2]; tCall += whole;
      }
      /* The floor: read g and e (and w for impk), write e and the output, and the pairs. */
      double perParam = 16.0 + (c.compressor == sparcclImpK ? 4.0 : 0.0);
      double floorBytes = perParam * (double)count + 2.0 * (double)set->blockBytes;
      double floorUs = floorBytes / bandwidth * 1e6;
      double us = 1e3 / iters;
      printf("  %-18.18s %-10s %10zu %10.1f %10.1f %10.1f %10.1f %10.1f %8.2f %10.1f %10.1f\n",
             base, methods[m].name, count, tCall * us, tCompress * us, tExchange * us,
             tDecompress * us, floorUs, (tCompress + tDecompress) * us / floorUs,
             (double)count * 4 / (tCall * us * 1e-6) / 1e9, denseMs * us);
      sparcclCommDestroy(comm);
    }
    ncclCommDestroy(nc);
    cudaFree(grad); cudaFree(out);
    cudaStreamDestroy(stream);
    free(layout.counts);
  }
  printf("# floor = (16 B/param, +4 for ImpK's w, + pairs written and read) / copy bandwidth; "
         "target: compress + decompress within 2x of it\n");
  MPI_Finalize();
  return 0;
}
