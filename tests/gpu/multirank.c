/*
 * Several processes sharing one GPU (SPEC 3a across ranks).  NCCL 2.28 refuses two ranks
 * of one communicator on one device ("Duplicate GPU"); giving each process its own
 * NCCL_HOSTID makes NCCL treat them as separate hosts, so they talk over its network
 * transport (sockets on loopback) instead of P2P/SHM.  This exercises the multi-rank
 * device path -- the allgather layout, rank-ordered sums, EF21's H -- but not NVLink/P2P
 * or multi-node topologies, which only a multi-GPU machine can.
 *
 * Every rank runs the same gradients through a device comm (NCCL) and a host comm (MPI)
 * and compares outputs and state files bitwise; exits non-zero on any difference.
 */
#include <cuda_runtime.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sparccl.h"
#include "sparccl_mpi.h"
#include "sparccl_nccl.h"
#include "../test_rng.h"

static uint64_t rng(uint64_t* s) { return test_random_u64(s); }

static int sameFiles(const char* a, const char* b) {
  FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
  int same = fa && fb, ca = 0, cb = 0;
  while (same && (ca != EOF || cb != EOF)) {
    ca = fgetc(fa);
    cb = fgetc(fb);
    same = ca == cb;
  }
  if (fa) fclose(fa);
  if (fb) fclose(fb);
  return same;
}

int main(int argc, char** argv) {
  int rank, nranks, failures = 0, total = 0;
  char hostid[64];
  ncclUniqueId id;
  static const int compressors[] = {sparcclTopK, sparcclRandK, sparcclImpKRandom};
  static const int feedbacks[] = {sparcclFeedbackSCAM, sparcclFeedbackEF21, sparcclFeedbackEF};
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  snprintf(hostid, sizeof(hostid), "sparccl-rank-%d", rank);
  setenv("NCCL_HOSTID", hostid, 1);
  if (rank == 0 && sparcclGetUniqueId(&id) != sparcclSuccess) MPI_Abort(MPI_COMM_WORLD, 2);
  MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
  for (int m = 0; m < 3; m++) {
    size_t counts[] = {70000, 300, 9000};
    size_t count = 79300, bytes = count * sizeof(float);
    sparcclConfig_t c = SPARCCL_CONFIG_INITIALIZER;
    sparcclComm_t host, device;
    float *g = (float*)malloc(bytes), *out = (float*)malloc(bytes), *back = (float*)malloc(bytes), *d;
    char a[64], b[64];
    c.compressor = compressors[m]; c.feedback = feedbacks[m]; c.density = 0.01;
    c.minSparseCount = 1000; c.seed = 5; c.importance = sparcclImportanceNone;
    if (sparcclCommInitMpi(&host, MPI_COMM_WORLD, &c) != sparcclSuccess ||
        sparcclCommInitRank(&device, nranks, id, rank, &c) != sparcclSuccess) {
      fprintf(stderr, "rank %d: comm creation failed (NCCL_HOSTID=%s)\n", rank, hostid);
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
    if (cudaMalloc((void**)&d, bytes) != cudaSuccess) MPI_Abort(MPI_COMM_WORLD, 4);
    sparcclRegisterLayout(host, g, 3, counts);
    sparcclRegisterLayout(device, d, 3, counts);
    for (int s = 0; s < 4; s++) {
      uint64_t seed = 1000u * (uint64_t)rank + (uint64_t)s;
      for (size_t i = 0; i < count; i++) g[i] = (float)(rng(&seed) >> 40) * 0x1p-20f - 8.0f;
      cudaMemcpy(d, g, bytes, cudaMemcpyHostToDevice);
      sparcclAllReduce(g, out, count, sparcclFloat32, sparcclAvg, host, NULL);
      sparcclAllReduce(d, d, count, sparcclFloat32, sparcclAvg, device, NULL);
      cudaMemcpy(back, d, bytes, cudaMemcpyDeviceToHost);
      total++;
      if (memcmp(back, out, bytes) != 0) {
        failures++;
        fprintf(stderr, "rank %d: method %d step %d: device output differs from the host's\n", rank, m, s);
      }
    }
    snprintf(a, sizeof(a), "/tmp/sparccl_mr_h%d", rank);
    snprintf(b, sizeof(b), "/tmp/sparccl_mr_d%d", rank);
    sparcclSaveState(host, a);
    sparcclSaveState(device, b);
    total++;
    if (!sameFiles(a, b)) {
      failures++;
      fprintf(stderr, "rank %d: method %d: device state differs from the host's\n", rank, m);
    }
    unlink(a); unlink(b);
    sparcclCommDestroy(host);
    sparcclCommDestroy(device);
    cudaFree(d); free(g); free(out); free(back);
  }
  MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0)
    printf("multi-process on one GPU, %d ranks (NCCL_HOSTID per process): %d checks per rank, %d failed\n",
           nranks, total, failures);
  MPI_Finalize();
  return failures ? 1 : 0;
}
