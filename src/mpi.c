/* The MPI transport and sparcclCommInitMpi (SPEC 8): one MPI_Allgather per call, or one
 * MPI_Iallgather per pipeline group (pipeline.c); warm-up's dense calls an MPI_Alltoall and
 * an MPI_Allgather (dense.c). */
/* Every MPI call here goes to its PMPI_ entry point (standard MPI, same behaviour): the
 * PMPI preload (src/preload/mpi_preload.c) interposes MPI_Allreduce & co., and sparccl's
 * own collectives must never re-enter it. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include "core.h"
#include "sparccl_mpi.h"

typedef struct {
  MPI_Comm comm; /* a duplicate: sparccl's traffic never mixes with the caller's */
} MpiTransport;

static sparcclResult_t mpiError(int rc, const char* what) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  PMPI_Error_string(rc, text, &len);
  WARN("%s failed: %s", what, text);
  return sparcclRemoteError;
}

/* Ranks whose calls disagree may enter exchanges of different sizes (a live key's block
 * against a new key's layout fingerprint), and MPI_Allgather does not survive that (with
 * three ranks or more it hangs): every exchange agrees its size first (sparcclAgreeSize). */
static sparcclResult_t sizeGather(void* ctx, const void* send, void* recv, size_t bytes) {
  int rc = PMPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE,
                          ((MpiTransport*)ctx)->comm);
  return rc == MPI_SUCCESS ? sparcclSuccess : mpiError(rc, "MPI_Allgather (size)");
}

/* The unit and count of `bytes`: blocks and chunks are multiples of 16 bytes (SPEC 4), so
 * past INT_MAX bytes they count in 16-byte units (a type the caller frees). */
static sparcclResult_t mpiUnits(size_t bytes, const char* what, MPI_Datatype* unit, size_t* count) {
  *unit = MPI_BYTE;
  *count = bytes;
  if (bytes <= (size_t)INT_MAX) return sparcclSuccess;
  if (bytes % 16 != 0 || bytes / 16 > (size_t)INT_MAX) {
    WARN("%s: a block of %zu bytes is too large", what, bytes);
    return sparcclInvalidArgument;
  }
  PMPI_Type_contiguous(16, MPI_BYTE, unit);
  PMPI_Type_commit(unit);
  *count = bytes / 16;
  return sparcclSuccess;
}

/* MPI_Allgather or MPI_Alltoall of `bytes` per rank, after the size agreement. */
static sparcclResult_t mpiExchange(sparcclTransport_t* self, const void* send, void* recv,
                                   size_t bytes, int alltoall) {
  MpiTransport* t = (MpiTransport*)self->impl;
  const char* what = alltoall ? "MPI_Alltoall" : "MPI_Allgather";
  MPI_Datatype unit;
  size_t count;
  int rc;
  SPARCCLCHECK(sparcclAgreeSize(self->nranks, bytes, alltoall, sizeGather, t));
  SPARCCLCHECK(mpiUnits(bytes, what, &unit, &count));
  rc = alltoall ? PMPI_Alltoall(send, (int)count, unit, recv, (int)count, unit, t->comm)
                : PMPI_Allgather(send, (int)count, unit, recv, (int)count, unit, t->comm);
  if (unit != MPI_BYTE) PMPI_Type_free(&unit);
  return rc == MPI_SUCCESS ? sparcclSuccess : mpiError(rc, what);
}

static sparcclResult_t mpiAllgather(sparcclTransport_t* self, const void* send, void* recv,
                                    size_t bytes) {
  return mpiExchange(self, send, recv, bytes, 0);
}

static sparcclResult_t mpiAlltoall(sparcclTransport_t* self, const void* send, void* recv,
                                   size_t chunkBytes) {
  return mpiExchange(self, send, recv, chunkBytes, 1);
}

/* A pipelined call's exchanges (pipeline.c agreed their sizes): MPI_Iallgather, MPI_Wait.
 * A type in use may be freed at once: the pending exchange keeps it (MPI 4.1, 5.1.8). */
typedef char mpiRequestFits[sizeof(MPI_Request) <= sizeof(sparcclRequest_t) ? 1 : -1];

static sparcclResult_t mpiIallgather(sparcclTransport_t* self, const void* send, void* recv,
                                     size_t bytes, sparcclRequest_t* request) {
  MpiTransport* t = (MpiTransport*)self->impl;
  MPI_Request r;
  MPI_Datatype unit;
  size_t count;
  int rc;
  SPARCCLCHECK(mpiUnits(bytes, "MPI_Iallgather", &unit, &count));
  rc = PMPI_Iallgather(send, (int)count, unit, recv, (int)count, unit, t->comm, &r);
  if (unit != MPI_BYTE) PMPI_Type_free(&unit);
  if (rc != MPI_SUCCESS) return mpiError(rc, "MPI_Iallgather");
  memcpy(request, &r, sizeof(r));
  return sparcclSuccess;
}

static sparcclResult_t mpiWait(sparcclTransport_t* self, sparcclRequest_t* request) {
  MPI_Request r;
  int rc;
  (void)self;
  memcpy(&r, request, sizeof(r));
  rc = PMPI_Wait(&r, MPI_STATUS_IGNORE);
  return rc == MPI_SUCCESS ? sparcclSuccess : mpiError(rc, "MPI_Wait (MPI_Iallgather)");
}

/* MPI_Test: a completed request becomes MPI_REQUEST_NULL, which the wait then returns at once. */
static sparcclResult_t mpiProgress(sparcclTransport_t* self, sparcclRequest_t* request) {
  MPI_Request r;
  int done = 0, rc;
  (void)self;
  memcpy(&r, request, sizeof(r));
  rc = PMPI_Test(&r, &done, MPI_STATUS_IGNORE);
  memcpy(request, &r, sizeof(r));
  return rc == MPI_SUCCESS ? sparcclSuccess : mpiError(rc, "MPI_Test (MPI_Iallgather)");
}

static void mpiDestroy(sparcclTransport_t* self) {
  MpiTransport* t = (MpiTransport*)self->impl;
  int finalized = 0;
  if (self->topology != NULL) {
    if (self->topology->node != NULL) mpiDestroy(self->topology->node);
    if (self->topology->column != NULL) mpiDestroy(self->topology->column);
    free(self->topology);
  }
  PMPI_Finalized(&finalized);
  if (!finalized) PMPI_Comm_free(&t->comm);
  free(t);
  free(self);
}

/* A transport over c (which it owns from here on; freed with it). */
static void mpiFill(sparcclTransport_t* transport, MpiTransport* t, MPI_Comm c, const char* name) {
  t->comm = c;
  PMPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
  PMPI_Comm_rank(c, &transport->rank);
  PMPI_Comm_size(c, &transport->nranks);
  transport->name = name;
  transport->allgather = mpiAllgather;
  transport->alltoall = mpiAlltoall;
  transport->iallgather = mpiIallgather;
  transport->wait = mpiWait;
  transport->progress = mpiProgress;
  transport->destroy = mpiDestroy;
  transport->impl = t;
}

static sparcclTransport_t* mpiSubTransport(MPI_Comm c, const char* name) {
  sparcclTransport_t* transport = (sparcclTransport_t*)calloc(1, sizeof(*transport));
  MpiTransport* t = (MpiTransport*)calloc(1, sizeof(*t));
  if (transport == NULL || t == NULL) {
    free(transport); free(t);
    PMPI_Comm_free(&c);
    return NULL;
  }
  mpiFill(transport, t, c, name);
  return transport;
}

/* Every node the same size (11.2), else refused on every rank (each sees every node). */
static sparcclResult_t checkNodeSizes(const int* lowestAndSize, int nranks) {
  char sizes[256];
  size_t at = 0;
  int r, equal = 1;
  for (r = 0; r < nranks; r++) equal &= lowestAndSize[2 * r + 1] == lowestAndSize[1];
  if (equal) return sparcclSuccess;
  sizes[0] = '\0';
  for (r = 0; r < nranks && at + 16 < sizeof(sizes); r++)
    if (lowestAndSize[2 * r] == r)
      at += (size_t)snprintf(sizes + at, sizeof(sizes) - at, "%s%d", at ? ", " : "", lowestAndSize[2 * r + 1]);
  WARN("sparcclCommInitMpi: the hierarchical exchange needs nodes of one size; the nodes (by "
       "lowest rank) have %s ranks", sizes);
  return sparcclInvalidUsage;
}

/* The nodes: MPI_COMM_TYPE_SHARED, or r / ranksPerNode; node index v by lowest global rank,
 * local index j by global rank; then the column of local index j in node order. */
static sparcclResult_t mpiTopology(sparcclTransport_t* world, int ranksPerNode) {
  MPI_Comm w = ((MpiTransport*)world->impl)->comm, node, column;
  int mine[2], *all, v = 0, j, r, rc;
  sparcclTopology_t* topology;
  sparcclResult_t res;
  rc = ranksPerNode > 0 ? PMPI_Comm_split(w, world->rank / ranksPerNode, world->rank, &node)
                        : PMPI_Comm_split_type(w, MPI_COMM_TYPE_SHARED, world->rank, MPI_INFO_NULL, &node);
  if (rc != MPI_SUCCESS) return mpiError(rc, "MPI_Comm_split (nodes)");
  PMPI_Comm_size(node, &mine[1]);
  PMPI_Comm_rank(node, &j);
  PMPI_Allreduce(&world->rank, &mine[0], 1, MPI_INT, MPI_MIN, node);
  all = (int*)malloc(2 * sizeof(int) * (size_t)world->nranks);
  topology = (sparcclTopology_t*)calloc(1, sizeof(*topology));
  if (all == NULL || topology == NULL) { free(all); free(topology); PMPI_Comm_free(&node); return sparcclSystemError; }
  rc = PMPI_Allgather(mine, 2, MPI_INT, all, 2, MPI_INT, w);
  res = rc != MPI_SUCCESS ? mpiError(rc, "MPI_Allgather (nodes)") : checkNodeSizes(all, world->nranks);
  for (r = 0; r < mine[0]; r++) v += all[2 * r] == r; /* the nodes whose lowest rank is below */
  topology->nodes = world->nranks / mine[1];
  free(all);
  if (res != sparcclSuccess) { free(topology); PMPI_Comm_free(&node); return res; }
  rc = PMPI_Comm_split(w, j, v, &column);
  if (rc != MPI_SUCCESS) { free(topology); PMPI_Comm_free(&node); return mpiError(rc, "MPI_Comm_split (columns)"); }
  topology->perNode = mine[1];
  topology->nodeIndex = v;
  topology->localIndex = j;
  topology->node = mpiSubTransport(node, "mpi node");
  topology->column = mpiSubTransport(column, "mpi column");
  world->topology = topology; /* freed with the world transport */
  if (topology->node == NULL || topology->column == NULL) return sparcclSystemError;
  INFO("hierarchical exchange: %d nodes of %d ranks; rank %d is local %d of node %d",
       topology->nodes, topology->perNode, world->rank, j, v);
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclCommInitMpi(sparcclComm_t* comm, MPI_Comm mpiComm,
                                               const sparcclConfig_t* config) {
  sparcclConfig_t resolved;
  sparcclTransport_t* transport;
  MpiTransport* t;
  int initialized = 0, rc, ok, local, failed = 0;
  MPI_Comm dup;
  sparcclResult_t res;
  if (comm == NULL) {
    WARN("sparcclCommInitMpi: comm is NULL");
    return sparcclInvalidArgument;
  }
  PMPI_Initialized(&initialized);
  if (!initialized) {
    WARN("sparcclCommInitMpi: MPI is not initialised (call MPI_Init first)");
    return sparcclInvalidUsage;
  }
  if (mpiComm == MPI_COMM_NULL) {
    WARN("sparcclCommInitMpi: mpiComm is MPI_COMM_NULL");
    return sparcclInvalidArgument;
  }
  transport = (sparcclTransport_t*)calloc(1, sizeof(*transport));
  t = (MpiTransport*)calloc(1, sizeof(*t));
  ok = transport != NULL && t != NULL;
  /* Collective from here on: every rank learns whether every rank could go on, so a bad
   * config or allocation on one rank is an error on all, never a hang. */
  rc = PMPI_Comm_dup(mpiComm, &dup);
  if (rc != MPI_SUCCESS) {
    free(transport); free(t);
    return mpiError(rc, "MPI_Comm_dup");
  }
  PMPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  res = sparcclConfigResolve(config, &resolved);
  local = (res != sparcclSuccess || !ok) ? 1 : 0;
  rc = PMPI_Allreduce(&local, &failed, 1, MPI_INT, MPI_MAX, dup);
  if (rc != MPI_SUCCESS || failed) {
    PMPI_Comm_free(&dup);
    free(transport); free(t);
    if (rc != MPI_SUCCESS) return mpiError(rc, "MPI_Allreduce");
    if (res != sparcclSuccess) return res;
    if (!ok) return sparcclSystemError;
    WARN("sparcclCommInitMpi: another rank refused its configuration");
    return sparcclInvalidUsage;
  }
  mpiFill(transport, t, dup, "mpi");
  if (sparccl_exchange_sharded(resolved.exchange)) {
    res = mpiTopology(transport, resolved.ranksPerNode);
    res = sparcclTransportAgree(transport, res, sparcclInvalidUsage, "sparcclCommInitMpi",
                                "find its node");
    if (res != sparcclSuccess) {
      mpiDestroy(transport);
      return res;
    }
  }
  res = sparcclCommCreate(comm, transport, &resolved);
  if (res != sparcclSuccess) mpiDestroy(transport);
  return res;
}
