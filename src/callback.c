/* The callback transport and sparcclCommInitCallback (SPEC 10): a host comm whose every
 * exchange is the caller's own allgather (torch.distributed, UCC, a parameter server), for
 * hosts without MPI. */
#include <stdlib.h>
#include "core.h"

typedef struct {
  sparcclAllgatherFn_t allgather;
  void* user;
} CallbackTransport;

static sparcclResult_t rawAllgather(void* ctx, const void* send, void* recv, size_t bytes) {
  CallbackTransport* t = (CallbackTransport*)ctx;
  int rc = t->allgather(send, recv, bytes, t->user);
  if (rc != 0) {
    WARN("the caller's allgather of %zu bytes returned %d; state unchanged", bytes, rc);
    return sparcclRemoteError;
  }
  return sparcclSuccess;
}

/* As on MPI, every exchange agrees its size first, so the caller's allgather never sees
 * ranks that disagree on it. */
static sparcclResult_t callbackAllgather(sparcclTransport_t* self, const void* send, void* recv,
                                         size_t bytes) {
  SPARCCLCHECK(sparcclAgreeSize(self->nranks, bytes, 0, rawAllgather, self->impl));
  return rawAllgather(self->impl, send, recv, bytes);
}

static void callbackDestroy(sparcclTransport_t* self) {
  free(self->impl);
  free(self);
}

SPARCCL_API sparcclResult_t sparcclCommInitCallback(sparcclComm_t* comm, int nranks, int rank,
                                                    sparcclAllgatherFn_t allgather, void* user,
                                                    const sparcclConfig_t* config) {
  static const char caller[] = "sparcclCommInitCallback";
  sparcclConfig_t resolved;
  sparcclTransport_t* transport;
  CallbackTransport* t;
  sparcclResult_t res;
  if (comm == NULL || allgather == NULL) {
    WARN("%s: comm %p or allgather is NULL", caller, (void*)comm);
    return sparcclInvalidArgument;
  }
  if (nranks < 1 || rank < 0 || rank >= nranks) {
    WARN("%s: rank %d of %d ranks", caller, rank, nranks);
    return sparcclInvalidArgument;
  }
  transport = (sparcclTransport_t*)calloc(1, sizeof(*transport));
  t = (CallbackTransport*)calloc(1, sizeof(*t));
  if (transport == NULL || t == NULL) {
    free(transport); free(t);
    WARN("%s: out of memory", caller);
    return sparcclSystemError;
  }
  t->allgather = allgather;
  t->user = user;
  transport->rank = rank;
  transport->nranks = nranks;
  transport->name = "callback";
  transport->allgather = callbackAllgather;
  transport->destroy = callbackDestroy;
  transport->impl = t;
  /* Collective, as sparcclCommInitMpi: a config refused on one rank is refused on all. */
  res = sparcclConfigResolve(config, &resolved);
  res = sparcclTransportAgree(transport, res, sparcclInvalidUsage, caller, "accept its configuration");
  if (res == sparcclSuccess) res = sparcclCommCreate(comm, transport, &resolved);
  if (res != sparcclSuccess) callbackDestroy(transport);
  return res;
}
