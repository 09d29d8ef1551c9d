/*
 * sparccl_gpu_perf: per-call time of the device path on real layouts (nccl-tests'
 * conventions), split into compress / exchange / decompress with CUDA events around the
 * same launchers sparcclAllReduce uses, against the memory floor at the copy bandwidth
 * measured in the same run, and beside ncclAllReduce of the dense buffer.
 *
 *   mpirun -np R sparccl_gpu_perf [-n iters] [-w warmup] [--density D] [--copy-mib M]
 *                                 [--kernels optimised|plain] LAYOUT...
 *
 * The R MPI processes form one NCCL communicator (rank r on device local-rank % devices;
 * ranks that share a device get their own NCCL_HOSTID, as in tests/gpu/multirank.c).  Times
 * are per call, averaged over the iterations on each rank, then over the ranks (nccl-tests'
 * default); rank 0 prints.  Options apply to every layout, wherever they stand.  The copy
 * bandwidth is measured on M MiB (default 1024).  Under the CPU emulator (tests/cuda_emu,
 * `make cudaemu`) this runs as a smoke test of the logic; its times mean nothing.
 * --kernels plain times the plain kernels (config.deviceKernels, docs/DEVICE.md).
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
  CHECK(cudaEventDestroy(t0)); CHECK(cudaEventDestroy(t1));
  CHECK(cudaFree(a)); CHECK(cudaFree(b));
  return 2.0 * (double)bytes * 10 / (ms * 1e-3);
}

static void usage(const char* why) {
  fprintf(stderr, "sparccl_gpu_perf: %s\nusage: sparccl_gpu_perf [-n iters >= 1] [-w warmup >= 0] "
          "[--density D in (0, 1]] [--copy-mib M >= 1] [--kernels optimised|plain] LAYOUT...\n", why);
  exit(2);
}

struct Method { const char* name; int compressor, feedback; };

int main(int argc, char** argv) {
  static const Method methods[] = {{"scam-topk", sparcclTopK, sparcclFeedbackSCAM},
                                   {"ef-topk", sparcclTopK, sparcclFeedbackEF},
                                   {"ef21-topk", sparcclTopK, sparcclFeedbackEF21},
                                   {"scam-impk", sparcclImpK, sparcclFeedbackSCAM},
                                   {"ef-randk", sparcclRandK, sparcclFeedbackEF}};
  int iters = 20, warmup = 5, nlayouts = 0, rank, nranks, a, kernels = sparcclDeviceKernelsOptimised;
  double density = 0.01, copyMiB = 1024;
  const char** layouts = (const char**)calloc((size_t)argc, sizeof(char*));
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  /* every option first, so that it applies to every layout */
  for (a = 1; a < argc; a++) {
    const char* v = a + 1 < argc ? argv[a + 1] : NULL;
    if (!strcmp(argv[a], "--kernels")) {
      if (v == NULL || (strcmp(v, "optimised") && strcmp(v, "plain"))) usage("--kernels: optimised or plain");
      kernels = strcmp(v, "plain") ? sparcclDeviceKernelsOptimised : sparcclDeviceKernelsPlain;
      a++;
      continue;
    }
    if (!strcmp(argv[a], "-n") || !strcmp(argv[a], "-w") || !strcmp(argv[a], "--density") ||
        !strcmp(argv[a], "--copy-mib")) {
      char* end = NULL;
      double x = v ? strtod(v, &end) : 0;
      if (v == NULL || end == v || *end != 0) usage("an option without its number");
      if (!strcmp(argv[a], "-n")) { iters = (int)x; if (x < 1 || x != iters) usage("-n: an integer >= 1"); }
      else if (!strcmp(argv[a], "-w")) { warmup = (int)x; if (x < 0 || x != warmup) usage("-w: an integer >= 0"); }
      else if (!strcmp(argv[a], "--density")) { density = x; if (!(x > 0 && x <= 1)) usage("--density: in (0, 1]"); }
      else { copyMiB = x; if (!(x >= 1)) usage("--copy-mib: at least 1"); }
      a++;
      continue;
    }
    if (argv[a][0] == '-') usage("unknown option");
    layouts[nlayouts++] = argv[a];
  }
  if (nlayouts == 0) usage("no layout");

  /* One device per rank; ranks sharing a device are separate hosts to NCCL ("Duplicate GPU"
   * otherwise), which makes their exchange go over sockets: fine for a check, not a figure. */
  int ndev = 0, localRank = 0, localSize = 1;
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &localRank);
  MPI_Comm_size(local, &localSize);
  MPI_Comm_free(&local);
  CHECK(cudaGetDeviceCount(&ndev));
  CHECK(cudaSetDevice(localRank % ndev));
  if (localSize > ndev) {
    static char hostid[64];
    snprintf(hostid, sizeof(hostid), "sparccl-gpu-perf-rank-%d", rank);
    setenv("NCCL_HOSTID", hostid, 1);
  }
  ncclComm_t nc;
  ncclUniqueId id;
  if (rank == 0) SPARCCL_OK(ncclGetUniqueId(&id));
  MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
  SPARCCL_OK(ncclCommInitRank(&nc, nranks, id, rank));

  /* measured by one rank at a time, so that ranks sharing a device do not halve it */
  double bandwidth = 0;
  for (int r = 0; r < nranks; r++) {
    if (r == rank) bandwidth = copyBandwidth((size_t)(copyMiB * 1048576.0));
    MPI_Barrier(MPI_COMM_WORLD);
  }
  bandwidth = tool_rankMean(bandwidth);
  if (rank == 0) {
    printf("# %d rank(s), density %g, %s kernels, %d calls after %d warm-up, times per call (us), "
           "mean over ranks\n", nranks, density, kernels ? "plain" : "optimised", iters, warmup);
    printf("# copy bandwidth (device to device, read + write): %.1f GB/s\n", bandwidth / 1e9);
    printf("# %-18s %-10s %10s %10s %10s %10s %10s %10s %8s %10s %10s %8s\n", "layout", "method",
           "count", "call(us)", "compr(us)", "exch(us)", "decomp(us)", "floor(us)", "x floor",
           "algbw", "dense(us)", "pred(%)");
  }
  for (int l = 0; l < nlayouts; l++) {
    const char* path = layouts[l];
    tool_Layout layout;
    char label[256];
    int status = tool_readLayout(path, &layout);
    if (status != TOOL_LAYOUT_OK) {
      char msg[4200];
      tool_layoutError(status, path, &layout, msg, sizeof(msg));
      fprintf(stderr, "%s\n", msg);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    tool_layoutLabel(path, label, sizeof(label));
    size_t nlayers = layout.nlayers, count = layout.total;
    const size_t* counts = layout.counts;
    float *grad, *out;
    CHECK(cudaMalloc((void**)&grad, count * 4));
    CHECK(cudaMalloc((void**)&out, count * 4));
    {
      /* standard normal, each rank its own: sparccl_perf's first gradient (seed 1) */
      float* h = (float*)malloc(count * 4);
      if (h == NULL) { fprintf(stderr, "out of memory\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
      tool_fillNormal(h, count, sparcclFloat32, 1000003ull + 7919ull * (uint64_t)rank);
      CHECK(cudaMemcpy(grad, h, count * 4, cudaMemcpyHostToDevice));
      free(h);
    }
    cudaStream_t stream;
    cudaEvent_t ev[4];
    CHECK(cudaStreamCreate(&stream));
    for (int e = 0; e < 4; e++) CHECK(cudaEventCreate(&ev[e]));
    /* the dense baseline: ncclAllReduce of the whole buffer on the same communicator */
    float denseMs = 0;
    for (int i = 0; i < warmup + iters; i++) {
      if (i == warmup) CHECK(cudaEventRecord(ev[0], stream));
      SPARCCL_OK(ncclAllReduce(grad, out, count, ncclFloat32, ncclSum, nc, stream));
    }
    CHECK(cudaEventRecord(ev[1], stream));
    CHECK(cudaEventSynchronize(ev[1]));
    CHECK(cudaEventElapsedTime(&denseMs, ev[0], ev[1]));
    double denseUs = tool_rankMean(denseMs * 1e3 / iters);
    for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
      sparcclConfig_t c = SPARCCL_CONFIG_INITIALIZER;
      sparcclComm_t comm;
      c.compressor = methods[m].compressor;
      c.feedback = methods[m].feedback;
      c.density = density;
      c.importance = sparcclImportanceNone;
      c.deviceKernels = kernels;
      SPARCCL_OK(sparcclCommInitNccl(&comm, nc, &c));
      SPARCCL_OK(sparcclRegisterLayout(comm, grad, nlayers, counts));
      sparcclLayerSet_t* set = sparcclFindSet(comm, 0, (uint64_t)(uintptr_t)grad, count);
      if (set == NULL || set->device == NULL) { fprintf(stderr, "no device set\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
      DeviceSet* ds = (DeviceSet*)set->device;
      KernelArgs ka = sparcclKernelArgs(comm, set, sparcclFloat32, sparcclSum);
      double tCall = 0, tCompress = 0, tExchange = 0, tDecompress = 0;
      DeviceCounters before, after; /* the timed calls' prediction hits (select_kernels.cu) */
      for (int i = 0; i < warmup + iters; i++) {
        float ms[3], whole;
        if (i == warmup) CHECK(cudaMemcpy(&before, ds->counters, sizeof(before), cudaMemcpyDeviceToHost));
        /* the call's three parts, as deviceAllReduce (cuda/nccl_comm.cu) enqueues them */
        CHECK(cudaEventRecord(ev[0], stream));
        CHECK((ka.plain ? sparcclLaunchPlainCompress : sparcclLaunchCompress)(ka, ds, grad, stream));
        CHECK(cudaEventRecord(ev[1], stream));
        SPARCCL_OK(ncclAllGather(ds->sendBlock, ds->recvBlocks, set->wire.blockBytes, ncclUint8, nc, stream));
        CHECK(cudaEventRecord(ev[2], stream));
        CHECK((ka.plain ? sparcclLaunchPlainDecompress : sparcclLaunchDecompress)(ka, ds, grad, out, stream));
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
      CHECK(cudaMemcpy(&after, ds->counters, sizeof(after), cudaMemcpyDeviceToHost));
      /* the share of layer-calls needing a second digit whose first-digit bin the key pass
       * predicted, over the ranks; -1 (printed "-") when no layer needed one */
      double hits = (double)(after.predictionHits - before.predictionHits);
      double layerCalls = hits + (double)(after.predictionMisses - before.predictionMisses);
      hits = tool_rankMean(hits);
      layerCalls = tool_rankMean(layerCalls);
      /* per call, in microseconds, mean over the ranks */
      double us = 1e3 / iters;
      tCall = tool_rankMean(tCall * us);
      tCompress = tool_rankMean(tCompress * us);
      tExchange = tool_rankMean(tExchange * us);
      tDecompress = tool_rankMean(tDecompress * us);
      /* The floor: read g and e (and w for impk), write e and the output (16 or 20 B a
       * parameter), write this rank's pairs and read every rank's. */
      double perParam = 16.0 + (c.compressor == sparcclImpK ? 4.0 : 0.0);
      double floorBytes = perParam * (double)count + (1.0 + nranks) * (double)set->wire.blockBytes;
      double floorUs = floorBytes / bandwidth * 1e6;
      if (rank == 0) {
        char predicted[16] = "-";
        if (layerCalls > 0) snprintf(predicted, sizeof(predicted), "%.1f", 100.0 * hits / layerCalls);
        printf("  %-18.18s %-10s %10zu %10.1f %10.1f %10.1f %10.1f %10.1f %8.2f %10.1f %10.1f %8s\n",
               label, methods[m].name, count, tCall, tCompress, tExchange, tDecompress, floorUs,
               (tCompress + tDecompress) / floorUs, (double)count * 4 / (tCall * 1e-6) / 1e9,
               denseUs, predicted);
      }
      SPARCCL_OK(sparcclCommDestroy(comm));
    }
    for (int e = 0; e < 4; e++) CHECK(cudaEventDestroy(ev[e]));
    CHECK(cudaStreamDestroy(stream));
    CHECK(cudaFree(grad)); CHECK(cudaFree(out));
    free(layout.counts);
  }
  if (rank == 0)
    printf("# floor = (16 B/param, +4 for ImpK's w, + the pairs: this rank's written, every rank's "
           "read) / copy bandwidth; target: compress + decompress within 2x of it\n"
           "# pred = layers needing a second radix digit whose first-digit bin the key pass "
           "predicted from their previous call (both calls of an iteration counted)\n");
  fflush(stdout);
  ncclCommDestroy(nc);
  free(layouts);
  MPI_Finalize();
  return 0;
}
