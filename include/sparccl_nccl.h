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
 * call live in GPU memory of the communicator's device (ncclCommCuDevice); every call makes
 * that device current while it runs and gives the caller's current device back, so that
 * the caller's current device does not matter.  Work is enqueued on the caller's stream.
 *
 * Streams: the calls on one key use that key's state and scratch memory, so they must be
 * ordered: issue them on one stream, or order the streams (cudaStreamWaitEvent), as with
 * any buffer two streams share.  The comm keeps no stream of the caller's.  The calls that
 * take no stream (save, load, stats, release, destroy, importance reset, restart, scale,
 * and the restart of a loss report) first wait for the whole device (cudaDeviceSynchronize:
 * every call enqueued so far on any stream, a graph replay included, has completed), then
 * run on a stream of the comm's own and wait for it, so that the next call on any stream
 * sees what they did.  Make them where every collective already enqueued on the device can
 * complete, since they wait for it.
 *
 * What callers must not do:
 * - Call any of those while a CUDA graph is being captured on the device: refused
 *   (sparcclInvalidUsage).  A capture on a blocking stream, or on the stream of a call that
 *   creates a key, is seen and left intact; one on a non-blocking stream (torch.cuda.graph
 *   captures on one) cannot be seen before the device synchronisation fails, and CUDA then
 *   invalidates that capture (its cudaStreamEndCapture fails).  sparcclAllReduce and the
 *   importance probe and update on a key that exists may be captured (past its warm-up,
 *   below), and the graph replayed on any stream.
 * - Call sparccl between ncclGroupStart and ncclGroupEnd.  NCCL defers the group's
 *   collectives to ncclGroupEnd, while a sparccl call enqueues at once the kernels that read
 *   its exchange: the sums and the state would be garbage.  NCCL has no query of the group
 *   depth; a call that exchanges host data (a new key, a load, a loss report) checks that
 *   its exchange ran and is refused (sparcclInvalidUsage), sparcclAllReduce on a live key
 *   cannot tell.
 * - Leave a CUDA error pending (a launch of its own it did not check): a call that finds
 *   one (cudaGetLastError, which clears it) returns sparcclUnhandledCudaError before it
 *   enqueues anything.  The other ranks make the call and wait in its exchange for this
 *   one: handle it as any failed collective (abort).  Once a call has enqueued anything its
 *   exchange always goes out: a rank whose compression fails to launch sends a block whose
 *   call check makes every rank refuse the call (below) and returns the error.
 * - Make calls that differ between ranks (another key, op, dtype).  Each block carries
 *   SPEC 4's call check, verified on the device after the exchange: a call whose blocks
 *   disagree, or whose received indices fall outside their layers, writes no output and
 *   changes no state on every rank.  The device cannot return that from the call (it
 *   does not wait); sparcclCommGetStats counts it in refusedCalls.  Ranks whose exchanges
 *   differ in size (a live key on one rank, a new key on another) are beyond it: NCCL
 *   pairs collectives by order, not size, and such a job hangs or reads garbage there.
 * - Pass memory of another device: refused (sparcclInvalidUsage).
 *
 * Non-blocking communicators (ncclConfig_t.blocking = 0): where NCCL answers ncclInProgress
 * (a communicator still initialising, a collective whose work is not on the stream yet),
 * sparccl polls ncclCommGetAsyncError until it is done before it goes on, so its calls
 * block the host as on a blocking communicator; an operation of the caller's own still in
 * progress when a call comes is waited for too.
 *
 * Warm-up (SPEC 9, warmupSteps > 0): whether a call is dense is decided when it is made,
 * by the key's count of calls made so far (the host cannot wait for the device's).  That
 * count is the device's own (graph replays included, calls the device refused not) after a
 * save or a load; between them it counts the calls made, refused ones too.  A dense call,
 * one-call or either half of the phase API, cannot be captured in a CUDA graph (a replay
 * would be dense forever): it is refused (sparcclInvalidUsage) during a capture it can see
 * (as a new key's first call is) with nothing enqueued; capture a key's calls after its
 * warm-up.  A dense one-call exchanges at a ring allreduce's volume: a reduce-scatter of
 * ncclSend/ncclRecv pairs in one group, then an ncclAllGather of the shard sums; the ring's
 * scratch (8 + 4 (n + 1) / n bytes a parameter on n ranks) is allocated with the key when
 * warmupSteps > 0.
 *
 * Memory: ef, scam and dgc keep e in two device buffers that swap roles every call (the
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
