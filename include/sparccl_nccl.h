/* sparccl on device buffers, exchanging over NCCL (SPEC.md section 8). */
#ifndef SPARCCL_NCCL_H_
#define SPARCCL_NCCL_H_

#include <cuda_runtime.h>
#include <nccl.h>
#include "sparccl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A device comm on a communicator the caller owns (destroying the sparccl comm leaves it
 * alive).  Local: no communication happens until a key's first call.  Buffers of every
 * call live in GPU memory of the current device; work is enqueued on the caller's stream.
 *
 * Streams: the calls on one key use that key's state and scratch memory, so they must be
 * ordered: issue them on one stream, or order the streams (cudaStreamWaitEvent), as with
 * any buffer two streams share.  Save, load, stats, reset, restart and scale wait for the
 * stream of the key's last call; they synchronise with the host, so they are not allowed
 * while that stream is being captured into a CUDA graph (sparcclAllReduce on a key that
 * already exists is).
 *
 * Memory: ef and scam keep e in two device buffers that swap roles every call (the
 * compression writes e + g into the second, so the decompression reads neither g nor e
 * again).  SPARCCL_ERROR_BUFFERS=1, read at comm creation, keeps one, at 8 bytes a
 * parameter more memory traffic a call (12 for topk and impk, whose keys are then stored); results
 * are bitwise the same either way (README.md lists the device memory per parameter). */
sparcclResult_t sparcclCommInitNccl(sparcclComm_t* comm, ncclComm_t nccl,
                                    const sparcclConfig_t* config);

/* A device comm that owns its NCCL communicator; id from sparcclGetUniqueId on one rank,
 * broadcast by the caller (e.g. over MPI or torch.distributed). */
sparcclResult_t sparcclGetUniqueId(ncclUniqueId* id);
sparcclResult_t sparcclCommInitRank(sparcclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    const sparcclConfig_t* config);

/* Like ncclCommAbort: stop and free without waiting for outstanding work. */
sparcclResult_t sparcclCommAbort(sparcclComm_t comm);
/* Like ncclCommGetAsyncError: the NCCL communicator's asynchronous error, if any. */
sparcclResult_t sparcclCommGetAsyncError(sparcclComm_t comm, sparcclResult_t* asyncError);

#ifdef __cplusplus
}
#endif

#endif /* SPARCCL_NCCL_H_ */
