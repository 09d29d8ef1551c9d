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
 * alive); local: nothing is exchanged until a key's first call.  Buffers in GPU memory of
 * the communicator's device, work on the caller's stream.  Streams, graph capture, NCCL
 * groups, pending errors, non-blocking communicators, warm-up and memory: what callers
 * must and must not do is in docs/DEVICE.md, "Using a device comm".  Ranks whose calls
 * disagree are refused by SPEC 4's call check when their exchanges have equal sizes; of
 * different sizes (a live key against a new one) only with config.checkSizes = 1, which
 * agrees every exchange's size first at a synchronisation per call (no graph capture). */
sparcclResult_t sparcclCommInitNccl(sparcclComm_t* comm, ncclComm_t nccl,
                                    const sparcclConfig_t* config);

/* A device comm that owns its NCCL communicator; id from sparcclGetUniqueId on one rank,
 * broadcast by the caller (e.g. over MPI or torch.distributed). */
sparcclResult_t sparcclGetUniqueId(ncclUniqueId* id);
sparcclResult_t sparcclCommInitRank(sparcclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    const sparcclConfig_t* config);

/* Like ncclCommAbort: stop and free without waiting for outstanding work; nothing on this
 * path waits for the device (a collective may be stuck).  sparcclCommInitRank's
 * communicator is aborted first, then the device state freed.  sparcclCommInitNccl's stays
 * the caller's, to abort: the comm's device state is then left allocated (freeing device
 * memory waits for the device, a stuck collective with it) until the process ends. */
sparcclResult_t sparcclCommAbort(sparcclComm_t comm);
/* Like ncclCommGetAsyncError: the NCCL communicator's asynchronous error, if any. */
sparcclResult_t sparcclCommGetAsyncError(sparcclComm_t comm, sparcclResult_t* asyncError);

#ifdef __cplusplus
}
#endif

#endif /* SPARCCL_NCCL_H_ */
