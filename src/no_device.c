/* A host-only build: device comms cannot be made (sparcclNotSupported, SPEC 2), and the
 * device-comm calls behave as on any host comm.  The CUDA build (cuda/nccl_comm.cu)
 * replaces this file. */
#include "core.h"

SPARCCL_API sparcclResult_t sparcclCommInitNccl(sparcclComm_t* comm, void* nccl,
                                                const sparcclConfig_t* config) {
  WARN("sparcclCommInitNccl: this build of sparccl has no CUDA/NCCL part (link libsparccl_cuda)");
  return sparcclNotSupported;
}

SPARCCL_API sparcclResult_t sparcclCommInitRank(sparcclComm_t* comm, int nranks, ...) {
  WARN("sparcclCommInitRank: this build of sparccl has no CUDA/NCCL part (link libsparccl_cuda)");
  return sparcclNotSupported;
}

SPARCCL_API sparcclResult_t sparcclGetUniqueId(void* id) {
  WARN("sparcclGetUniqueId: this build of sparccl has no CUDA/NCCL part (link libsparccl_cuda)");
  return sparcclNotSupported;
}

SPARCCL_API sparcclResult_t sparcclCommAbort(sparcclComm_t comm) {
  return sparcclCommDestroy(comm);
}

SPARCCL_API sparcclResult_t sparcclCommGetAsyncError(sparcclComm_t comm,
                                                     sparcclResult_t* asyncError) {
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclCommGetAsyncError"));
  if (asyncError == NULL) {
    WARN("sparcclCommGetAsyncError: asyncError is NULL");
    return sparcclInvalidArgument;
  }
  *asyncError = sparcclSuccess;
  return sparcclSuccess;
}
