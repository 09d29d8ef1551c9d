/* libsparccl_mpi_preload.so: sparccl for unmodified MPI programs, through MPI's profiling
 * interface (mpirun -x LD_PRELOAD=.../libsparccl_mpi_preload.so ... ./app): MPI_Allreduce of
 * MPI_FLOAT with MPI_SUM and count >= SPARCCL_PRELOAD_MIN_COUNT on an intracommunicator goes
 * through sparcclAllReduce; keys, environment and teardown: docs/PRELOAD.md. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <mpi.h>
#include "sparccl.h"
#include "sparccl_mpi.h"
#include "preload_common.h"

#define PRELOAD_API __attribute__((visibility("default")))
#define HANDLE(x) ((void*)(uintptr_t)(x)) /* a communicator handle, for the log */

/* ------------------------------------------------------------ settings and logging */
/* The SPARCCL_PRELOAD_* settings, the log and the reentrancy guard are preload_common.c's,
 * shared with the NCCL preload; what differs is what this one says. */
const char preloadLogTag[] = "preload";

static pthread_once_t settingsOnce = PTHREAD_ONCE_INIT;

static void settingsInit(void) {
  preloadSettingsInit();
  preloadLogSettings("libsparccl_mpi_preload", "MPI_Allreduce of MPI_FLOAT with MPI_SUM");
}

/* ------------------------------------------------------------ comm cache */
typedef struct {
  MPI_Comm mpi;
  sparcclComm_t comm; /* NULL when the communicator passes through (init failed, inter) */
} CacheEntry;

static pthread_mutex_t cacheLock = PTHREAD_MUTEX_INITIALIZER;
static CacheEntry* cache = NULL;
static size_t cacheCount = 0, cacheCap = 0;

static CacheEntry* cacheFind(MPI_Comm mpi) {
  size_t i;
  for (i = 0; i < cacheCount; i++)
    if (cache[i].mpi == mpi) return &cache[i];
  return NULL;
}

/* Takes the entry out of the cache; returns its sparccl comm (or NULL). */
static int cacheRemove(MPI_Comm mpi, sparcclComm_t* comm) {
  size_t i;
  int found = 0;
  pthread_mutex_lock(&cacheLock);
  for (i = 0; i < cacheCount; i++)
    if (cache[i].mpi == mpi) {
      *comm = cache[i].comm;
      cache[i] = cache[cacheCount - 1];
      cacheCount--;
      found = 1;
      break;
    }
  pthread_mutex_unlock(&cacheLock);
  return found;
}

/* The sparccl comm of mpi, created on the first eligible call (collective over mpi).
 * *pass is set when the communicator must pass through. */
static int commFor(MPI_Comm mpi, sparcclComm_t* out, int* pass) {
  CacheEntry* e;
  sparcclComm_t comm = NULL;
  sparcclResult_t res;
  int inter = 0;
  pthread_mutex_lock(&cacheLock);
  e = cacheFind(mpi);
  if (e != NULL) {
    *out = e->comm;
    *pass = e->comm == NULL;
    pthread_mutex_unlock(&cacheLock);
    return MPI_SUCCESS;
  }
  pthread_mutex_unlock(&cacheLock);

  PMPI_Comm_test_inter(mpi, &inter);
  if (inter) {
    preloadLog(PRELOAD_INFO, "communicator %p is an intercommunicator: its calls pass through",
               HANDLE(mpi));
  } else {
    preloadInSparccl++;
    res = sparcclCommInitMpi(&comm, mpi, NULL);
    preloadInSparccl--;
    if (res != sparcclSuccess) {
      /* sparcclCommInitMpi agrees on failure over every rank, so every rank passes. */
      preloadLog(PRELOAD_WARN, "sparcclCommInitMpi on communicator %p failed: %s; its calls pass "
                 "through to MPI", HANDLE(mpi), sparcclGetErrorString(res));
      comm = NULL;
    } else {
      int size = 0;
      PMPI_Comm_size(mpi, &size);
      preloadLog(PRELOAD_INFO, "sparccl comm %p created for communicator %p (%d ranks)",
                 HANDLE(comm), HANDLE(mpi), size);
    }
  }
  pthread_mutex_lock(&cacheLock);
  if (cacheCount == cacheCap) {
    size_t cap = cacheCap ? 2 * cacheCap : 8;
    CacheEntry* grown = (CacheEntry*)realloc(cache, cap * sizeof(*grown));
    if (grown == NULL) {
      pthread_mutex_unlock(&cacheLock);
      if (comm != NULL) { preloadInSparccl++; sparcclCommDestroy(comm); preloadInSparccl--; }
      preloadLog(PRELOAD_WARN, "out of memory for the communicator cache");
      return MPI_ERR_NO_MEM;
    }
    cache = grown;
    cacheCap = cap;
  }
  cache[cacheCount].mpi = mpi;
  cache[cacheCount].comm = comm;
  cacheCount++;
  pthread_mutex_unlock(&cacheLock);
  *out = comm;
  *pass = comm == NULL;
  return MPI_SUCCESS;
}

static void destroyComm(MPI_Comm mpi, sparcclComm_t comm) {
  preloadDestroyComm(HANDLE(mpi), comm);
}

/* ------------------------------------------------------------ decision log, once per buffer */
/* 1 the first time this (buffer, count, type, op, comm) is seen; only when INFO is on. */
static int firstTime(const void* buf, int count, MPI_Datatype type, MPI_Op op, MPI_Comm comm) {
  PreloadKey key = {0};
  key.buf = buf;
  key.count = (uint64_t)(unsigned)count;
  key.comm = (uint64_t)(uintptr_t)comm;
  key.type = (uint64_t)(uintptr_t)type;
  key.op = (uint64_t)(uintptr_t)op;
  return preloadFirstTime(PRELOAD_INFO, &key);
}

static const char* typeName(MPI_Datatype t) {
  if (t == MPI_FLOAT) return "MPI_FLOAT";
  if (t == MPI_DOUBLE) return "MPI_DOUBLE";
  if (t == MPI_INT) return "MPI_INT";
  if (t == MPI_LONG) return "MPI_LONG";
  if (t == MPI_LONG_LONG) return "MPI_LONG_LONG";
  if (t == MPI_UNSIGNED_LONG_LONG) return "MPI_UNSIGNED_LONG_LONG";
  if (t == MPI_BYTE) return "MPI_BYTE";
  if (t == MPI_CHAR) return "MPI_CHAR";
  return "another datatype";
}

static const char* opName(MPI_Op op) {
  if (op == MPI_SUM) return "MPI_SUM";
  if (op == MPI_MAX) return "MPI_MAX";
  if (op == MPI_MIN) return "MPI_MIN";
  if (op == MPI_PROD) return "MPI_PROD";
  if (op == MPI_LAND) return "MPI_LAND";
  if (op == MPI_LOR) return "MPI_LOR";
  if (op == MPI_BAND) return "MPI_BAND";
  if (op == MPI_BOR) return "MPI_BOR";
  return "another op";
}

static void logDecision(const void* key, int count, MPI_Datatype type, MPI_Op op, MPI_Comm comm,
                        int inPlace, const char* decision) {
  if (!firstTime(key, count, type, op, comm)) return;
  preloadLog(PRELOAD_INFO, "MPI_Allreduce %s %p count %d %s %s comm %p -> %s",
             inPlace ? "in place on" : "from", key, count, typeName(type), opName(op), HANDLE(comm),
             decision);
}

/* ------------------------------------------------------------ the sparse path */
static int sparseAllreduce(const void* sendbuf, void* recvbuf, int count, MPI_Comm mpi,
                           int inPlace) {
  sparcclComm_t comm = NULL;
  sparcclResult_t res = sparcclSuccess;
  const void* send = inPlace ? (const void*)recvbuf : sendbuf;
  size_t nlayers;
  int pass = 0, rc;
  char decision[160];

  rc = commFor(mpi, &comm, &pass);
  if (rc != MPI_SUCCESS) return rc;
  if (pass) {
    logDecision(send, count, MPI_FLOAT, MPI_SUM, mpi, inPlace, "MPI (no sparccl comm)");
    return PMPI_Allreduce(inPlace ? MPI_IN_PLACE : sendbuf, recvbuf, count, MPI_FLOAT, MPI_SUM,
                          mpi);
  }
  nlayers = preloadLayerCount((size_t)count);
  /* Registering is collective the first time for this key (every rank meets a new key at the
   * same call, as sparcclAllReduce's own first call would), a no-op once it is live. */
  if (nlayers > 1 && !preloadRegisterLayers(comm, send, (size_t)count, nlayers, &res))
    return MPI_ERR_NO_MEM;
  if (res == sparcclSuccess) {
    snprintf(decision, sizeof(decision), "sparccl (%zu layer%s)", nlayers, nlayers > 1 ? "s" : "");
    logDecision(send, count, MPI_FLOAT, MPI_SUM, mpi, inPlace, decision);
    preloadInSparccl++;
    res = sparcclAllReduce(send, recvbuf, (size_t)count, sparcclFloat32, sparcclSum, comm, NULL);
    preloadInSparccl--;
  }
  if (res != sparcclSuccess) {
    /* Falling back to a dense allreduce here could hang against ranks that succeeded:
     * report through the communicator's error handler, as MPI would. */
    preloadLog(PRELOAD_WARN, "sparccl failed on a %d-element MPI_Allreduce (%s); set "
               "SPARCCL_DEBUG=WARN for the reason", count, sparcclGetErrorString(res));
    PMPI_Comm_call_errhandler(mpi, MPI_ERR_OTHER);
    return MPI_ERR_OTHER;
  }
  return MPI_SUCCESS;
}

/* ------------------------------------------------------------ interposed entry points */
PRELOAD_API int MPI_Allreduce(const void* sendbuf, void* recvbuf, int count,
                              MPI_Datatype datatype, MPI_Op op, MPI_Comm comm) {
  int inPlace = sendbuf == MPI_IN_PLACE, enabled, small;
  if (preloadInSparccl) return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
  pthread_once(&settingsOnce, settingsInit);
  enabled = preloadSettings.enabled;
  small = (long long)count < preloadSettings.minCount;
  if (!enabled || datatype != MPI_FLOAT || op != MPI_SUM || small || comm == MPI_COMM_NULL ||
      recvbuf == NULL || sendbuf == NULL) {
    if (preloadLogs(PRELOAD_INFO) && count > 0) {
      const char* why = !enabled ? "MPI (preload disabled)"
                        : datatype != MPI_FLOAT ? "MPI (not MPI_FLOAT)"
                        : op != MPI_SUM ? "MPI (not MPI_SUM)"
                        : small ? "MPI (below SPARCCL_PRELOAD_MIN_COUNT)"
                        : "MPI (null argument)";
      logDecision(inPlace ? recvbuf : sendbuf, count, datatype, op, comm, inPlace, why);
    }
    return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
  }
  return sparseAllreduce(sendbuf, recvbuf, count, comm, inPlace);
}

static int freeHook(MPI_Comm* comm, int disconnect) {
  sparcclComm_t sc = NULL;
  if (comm != NULL && *comm != MPI_COMM_NULL && cacheRemove(*comm, &sc)) destroyComm(*comm, sc);
  return disconnect ? PMPI_Comm_disconnect(comm) : PMPI_Comm_free(comm);
}

PRELOAD_API int MPI_Comm_free(MPI_Comm* comm) {
  if (preloadInSparccl) return PMPI_Comm_free(comm);
  return freeHook(comm, 0);
}

PRELOAD_API int MPI_Comm_disconnect(MPI_Comm* comm) {
  if (preloadInSparccl) return PMPI_Comm_disconnect(comm);
  return freeHook(comm, 1);
}

PRELOAD_API int MPI_Finalize(void) {
  size_t i;
  pthread_mutex_lock(&cacheLock);
  for (i = 0; i < cacheCount; i++) destroyComm(cache[i].mpi, cache[i].comm);
  free(cache);
  cache = NULL;
  cacheCount = cacheCap = 0;
  pthread_mutex_unlock(&cacheLock);
  return PMPI_Finalize();
}
