/* A fake NCCL for the CPU emulator (tests/cuda_emu): one rank in-process, or n ranks as n MPI
 * processes (ncclAllGather is an MPI_Allgather over a duplicate of MPI_COMM_WORLD,
 * ncclAllReduce an MPI_Allreduce: float32, sum or avg only).  Work is
 * enqueued on the stream like a kernel, so it is recorded by a graph capture too.
 * As NCCL:
 * - between ncclGroupStart and ncclGroupEnd (per thread) a collective is only recorded; the
 *   outermost ncclGroupEnd enqueues the group's collectives, then its sends and receives
 *   (ncclSend, ncclRecv: MPI_Isend and MPI_Irecv, all of them waited for together);
 * - a non-blocking communicator (ncclCommInitRankConfig with config.blocking = 0) answers
 *   ncclInProgress to its creation and to each collective, whose work is not on the stream
 *   yet: it completes (and its work is enqueued) at the second ncclCommGetAsyncError after,
 *   and any other call before then fails with ncclInvalidArgument (ncclCommEnsureReady);
 * - ncclCommCuDevice is the device current at the communicator's creation;
 * - ncclCommDestroy waits for the streams' work; ncclCommAbort waits for nothing, and a
 *   collective of an aborted communicator does nothing when its stream runs it. */
#ifndef SPARCCL_FAKE_NCCL_H_
#define SPARCCL_FAKE_NCCL_H_
#include <limits.h>
#include "cuda_emu.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef struct ncclComm* ncclComm_t;
#define NCCL_UNIQUE_ID_BYTES 128
typedef struct { char internal[NCCL_UNIQUE_ID_BYTES]; } ncclUniqueId;
typedef enum { ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclSystemError = 2,
               ncclInternalError = 3, ncclInvalidArgument = 4, ncclInvalidUsage = 5,
               ncclRemoteError = 6, ncclInProgress = 7, ncclNumResults = 8 } ncclResult_t;
typedef enum { ncclInt8 = 0, ncclChar = 0, ncclUint8 = 1, ncclInt32 = 2, ncclInt = 2,
               ncclUint32 = 3, ncclInt64 = 4, ncclUint64 = 5, ncclFloat16 = 6, ncclHalf = 6,
               ncclFloat32 = 7, ncclFloat = 7, ncclFloat64 = 8, ncclDouble = 8,
               ncclBfloat16 = 9 } ncclDataType_t;
typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4,
               ncclNumOps = 5 } ncclRedOp_t;
#define NCCL_CONFIG_UNDEF_INT INT_MIN
typedef struct {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
} ncclConfig_t;
#define NCCL_CONFIG_INITIALIZER {sizeof(ncclConfig_t), 0xcafebeef, 0, NCCL_CONFIG_UNDEF_INT}
const char* ncclGetErrorString(ncclResult_t result);
ncclResult_t ncclGetUniqueId(ncclUniqueId* id);
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t* config);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclCommCount(const ncclComm_t comm, int* count);
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank);
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError);
ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream);
/* Point-to-point, as NCCL's: a send and its peer's receive must be in flight together,
 * which a group gives (its operations are issued together at the outermost ncclGroupEnd;
 * the emulator wants a group's operations on one stream).  A rank may send to itself
 * inside a group (paired in order with its receives from itself); outside one that would
 * never complete, and the emulator aborts instead of hanging. */
ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclGroupStart(void);
ncclResult_t ncclGroupEnd(void);
/* Emulator only: the collectives issued so far (counted when called, grouped or not). */
unsigned long long ncclEmuCollectives(void);
#ifdef __cplusplus
}
#endif
#endif
