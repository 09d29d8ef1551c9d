/* libsparccl_nccl_preload.so: sparccl for unmodified NCCL programs, by symbol interposition
 * (LD_PRELOAD=.../libsparccl_nccl_preload.so SPARCCL_DENSITY=0.01 ./app).  Which calls it
 * takes and which pass through to NCCL, and why every rank decides alike, how failures are
 * returned, reentrancy and teardown: docs/PRELOAD.md, "Design notes of the NCCL preload". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include "sparccl.h"
#include "sparccl_nccl.h"
#include "preload_common.h"

#define PRELOAD_API __attribute__((visibility("default")))
#define HANDLE(x) ((void*)(x)) /* a communicator handle, for the log */

/* ------------------------------------------------------------ settings and logging */
/* The SPARCCL_PRELOAD_* settings, the log and the reentrancy guard are preload_common.c's,
 * shared with the MPI preload; what differs is what this one says, and its layer limit. */
const char preloadLogTag[] = "nccl preload";

static pthread_once_t settingsOnce = PTHREAD_ONCE_INIT;

static void settingsInit(void) {
  preloadSettingsInit();
  if (preloadSettings.layerChunk > (long long)UINT32_MAX) {
    preloadLog(PRELOAD_WARN, "SPARCCL_PRELOAD_LAYER=%s is over 2^32-1 elements (a layer's "
               "limit); the preload passes every call through", getenv("SPARCCL_PRELOAD_LAYER"));
    preloadSettings.enabled = 0;
    preloadSettings.layerChunk = 0;
  }
  preloadLogSettings("libsparccl_nccl_preload", "ncclAllReduce of float32/float16/bfloat16 "
                     "with ncclSum or ncclAvg");
}

/* ------------------------------------------------------------ the real functions */
typedef ncclResult_t (*AllReduceFn)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t,
                                    ncclComm_t, cudaStream_t);
typedef ncclResult_t (*GroupFn)(void);
typedef ncclResult_t (*GroupSimulateEndFn)(ncclSimInfo_t*);
typedef ncclResult_t (*InitRankFn)(ncclComm_t*, int, ncclUniqueId, int);
typedef ncclResult_t (*InitRankConfigFn)(ncclComm_t*, int, ncclUniqueId, int, ncclConfig_t*);
typedef ncclResult_t (*InitAllFn)(ncclComm_t*, int, const int*);
typedef ncclResult_t (*InitRankScalableFn)(ncclComm_t*, int, int, int, ncclUniqueId*,
                                           ncclConfig_t*);
typedef ncclResult_t (*SplitFn)(ncclComm_t, int, int, ncclComm_t*, ncclConfig_t*);
typedef ncclResult_t (*ShrinkFn)(ncclComm_t, int*, int, ncclComm_t*, ncclConfig_t*, int);
typedef ncclResult_t (*CommFn)(ncclComm_t);

static struct {
  AllReduceFn allReduce;
  GroupFn groupStart, groupEnd;
  GroupSimulateEndFn groupSimulateEnd;
  InitRankFn initRank;
  InitRankConfigFn initRankConfig;
  InitAllFn initAll;
  InitRankScalableFn initRankScalable;
  SplitFn split;
  ShrinkFn shrink;
  CommFn destroy, abort;
} real;
static pthread_once_t realOnce = PTHREAD_ONCE_INIT;

static void* lookup(const char* name) {
  char pname[64];
  void* f = dlsym(RTLD_NEXT, name);
  snprintf(pname, sizeof(pname), "p%s", name);
  if (f == NULL) f = dlsym(RTLD_NEXT, pname);
  if (f == NULL) f = dlsym(RTLD_DEFAULT, pname); /* never ours: we define no pnccl* */
  return f;
}

static void realInit(void) {
  /* dlsym returns void*; POSIX guarantees the conversion to a function pointer works. */
  real.allReduce = (AllReduceFn)lookup("ncclAllReduce");
  real.groupStart = (GroupFn)lookup("ncclGroupStart");
  real.groupEnd = (GroupFn)lookup("ncclGroupEnd");
  real.groupSimulateEnd = (GroupSimulateEndFn)lookup("ncclGroupSimulateEnd");
  real.initRank = (InitRankFn)lookup("ncclCommInitRank");
  real.initRankConfig = (InitRankConfigFn)lookup("ncclCommInitRankConfig");
  real.initAll = (InitAllFn)lookup("ncclCommInitAll");
  real.initRankScalable = (InitRankScalableFn)lookup("ncclCommInitRankScalable");
  real.split = (SplitFn)lookup("ncclCommSplit");
  real.shrink = (ShrinkFn)lookup("ncclCommShrink");
  real.destroy = (CommFn)lookup("ncclCommDestroy");
  real.abort = (CommFn)lookup("ncclCommAbort");
}

/* The real function, or NULL after a WARN (an NCCL without it: never expected, since the
 * program itself called it). */
#define REAL(field, name)                                                                   \
  (pthread_once(&realOnce, realInit),                                                       \
   real.field != NULL                                                                       \
       ? real.field                                                                         \
       : (preloadLog(PRELOAD_WARN, "cannot find the real %s in the process", name), real.field))

/* ------------------------------------------------------------ groups */
static __thread int groupDepth = 0;

/* ------------------------------------------------------------ communicator table */
/* Every communicator created through an interposed call, from creation to destruction. */
typedef struct {
  ncclComm_t nccl;
  int blocking;
  int pass;             /* 1: its calls pass through for good (sparccl comm creation refused) */
  unsigned gen;         /* distinguishes a reused handle in the decision log */
  sparcclComm_t comm;   /* created at the first taken call; NULL before */
} CommEntry;

static pthread_mutex_t tableLock = PTHREAD_MUTEX_INITIALIZER;
static CommEntry* table = NULL;
static size_t tableCount = 0, tableCap = 0;
static unsigned nextGen = 1;

static CommEntry* tableFind(ncclComm_t nccl) {
  size_t i;
  for (i = 0; i < tableCount; i++)
    if (table[i].nccl == nccl) return &table[i];
  return NULL;
}

/* Takes the entry out; returns 1 and its sparccl comm if it was there. */
static int tableRemove(ncclComm_t nccl, sparcclComm_t* comm) {
  CommEntry* e;
  int found = 0;
  pthread_mutex_lock(&tableLock);
  e = tableFind(nccl);
  if (e != NULL) {
    *comm = e->comm;
    *e = table[tableCount - 1];
    tableCount--;
    found = 1;
  }
  pthread_mutex_unlock(&tableLock);
  return found;
}

static void destroySparccl(ncclComm_t nccl, sparcclComm_t comm) {
  preloadDestroyComm(HANDLE(nccl), comm);
}

/* NCCL_COMM_BLOCKING=0 or 1 overrides the config's field (NCCL's envConfigOverride). */
static int blockingOf(const ncclConfig_t* config, int inherited) {
  const char* env = getenv("NCCL_COMM_BLOCKING");
  if (env != NULL && strcmp(env, "0") == 0) return 0;
  if (env != NULL && strcmp(env, "1") == 0) return 1;
  if (config != NULL && config->blocking != NCCL_CONFIG_UNDEF_INT) return config->blocking != 0;
  return inherited;
}

static int blockingOfComm(ncclComm_t nccl) {
  CommEntry* e;
  int blocking = 1;
  pthread_mutex_lock(&tableLock);
  e = tableFind(nccl);
  if (e != NULL) blocking = e->blocking;
  pthread_mutex_unlock(&tableLock);
  return blocking;
}

static void track(ncclComm_t nccl, int blocking, const char* how) {
  CommEntry* e;
  sparcclComm_t stale = NULL;
  if (nccl == NULL) return;
  pthread_once(&settingsOnce, settingsInit);
  pthread_mutex_lock(&tableLock);
  e = tableFind(nccl);
  if (e == NULL) {
    if (tableCount == tableCap) {
      size_t cap = tableCap ? 2 * tableCap : 8;
      CommEntry* grown = (CommEntry*)realloc(table, cap * sizeof(*grown));
      if (grown == NULL) {
        pthread_mutex_unlock(&tableLock);
        preloadLog(PRELOAD_WARN, "out of memory for the communicator table: communicator %p passes "
                   "through", HANDLE(nccl));
        return;
      }
      table = grown;
      tableCap = cap;
    }
    e = &table[tableCount++];
  } else {
    stale = e->comm; /* a handle NCCL reused without our seeing the destruction */
  }
  e->nccl = nccl;
  e->blocking = blocking;
  e->pass = 0;
  e->gen = nextGen++;
  e->comm = NULL;
  pthread_mutex_unlock(&tableLock);
  if (stale != NULL) destroySparccl(nccl, stale);
  preloadLog(PRELOAD_INFO, "communicator %p created by %s (%s)", HANDLE(nccl), how,
             blocking ? "blocking" : "non-blocking: its calls pass through");
}

/* ------------------------------------------------------------ decision log, once per buffer */
/* 1 the first time this (buffer, count, type, op, comm, kind) is seen, when level is being
 * logged. */
static int firstTime(int level, int kind, const void* buf, size_t count, int type, int op,
                     ncclComm_t comm, unsigned gen) {
  PreloadKey key = {0};
  key.buf = buf;
  key.count = (uint64_t)count;
  key.comm = (uint64_t)(uintptr_t)comm;
  key.type = (uint64_t)(unsigned)type;
  key.op = (uint64_t)(unsigned)op;
  key.kind = (uint64_t)(unsigned)kind;
  key.gen = gen;
  return preloadFirstTime(level, &key);
}

static const char* typeName(int t) {
  switch (t) {
    case ncclInt8: return "int8";
    case ncclUint8: return "uint8";
    case ncclInt32: return "int32";
    case ncclUint32: return "uint32";
    case ncclInt64: return "int64";
    case ncclUint64: return "uint64";
    case ncclFloat16: return "float16";
    case ncclFloat32: return "float32";
    case ncclFloat64: return "float64";
    case ncclBfloat16: return "bfloat16";
    default: return "another datatype";
  }
}

static const char* opName(int op) {
  switch (op) {
    case ncclSum: return "sum";
    case ncclProd: return "prod";
    case ncclMax: return "max";
    case ncclMin: return "min";
    case ncclAvg: return "avg";
    default: return "another op";
  }
}

static unsigned genOf(ncclComm_t nccl) {
  CommEntry* e;
  unsigned gen = 0;
  pthread_mutex_lock(&tableLock);
  e = tableFind(nccl);
  if (e != NULL) gen = e->gen;
  pthread_mutex_unlock(&tableLock);
  return gen;
}

static void logDecision(const void* send, void* recv, size_t count, int type, int op,
                        ncclComm_t comm, const char* decision) {
  const void* key = send != NULL ? send : recv;
  if (!firstTime(PRELOAD_INFO, 0, key, count, type, op, comm, genOf(comm))) return;
  preloadLog(PRELOAD_INFO, "ncclAllReduce %s %p count %zu %s %s comm %p -> %s",
             send == recv ? "in place on" : "from", key, count, typeName(type), opName(op),
             HANDLE(comm), decision);
}

/* ------------------------------------------------------------ the sparse path */
static int argumentError(sparcclResult_t res) {
  return res == sparcclInvalidArgument || res == sparcclInvalidUsage ||
         res == sparcclNotSupported;
}

/* sparccl's codes 1..7 are NCCL's (include/sparccl.h); sparcclNotSupported is not. */
static ncclResult_t toNccl(sparcclResult_t res) {
  if (res == sparcclNotSupported) return ncclInvalidUsage;
  if (res >= sparcclSuccess && res <= sparcclInProgress) return (ncclResult_t)res;
  return ncclInternalError;
}

/* 1 capturing, 0 not, -1 unknown (the query failed). */
static int capturing(cudaStream_t stream) {
  enum cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return -1;
  }
  return status != cudaStreamCaptureStatusNone;
}

static ncclResult_t dense(const void* send, void* recv, size_t count, ncclDataType_t type,
                          ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  AllReduceFn f = REAL(allReduce, "ncclAllReduce");
  if (f == NULL) return ncclInternalError;
  return f(send, recv, count, type, op, comm, stream);
}

/* The table's answer for nccl: 1 when it needs no new comm (*comm its comm, or NULL with
 * *decision saying why the call passes through), 0 when one is to be made (*gen: its entry's). */
static int tableDecision(ncclComm_t nccl, sparcclComm_t* comm, const char** decision,
                         unsigned* gen) {
  CommEntry* e;
  pthread_mutex_lock(&tableLock);
  e = tableFind(nccl);
  if (e != NULL && e->blocking && !e->pass && e->comm == NULL) {
    *gen = e->gen;
    pthread_mutex_unlock(&tableLock);
    return 0;
  }
  *comm = e != NULL && e->blocking && !e->pass ? e->comm : NULL;
  *decision = e == NULL ? "NCCL (communicator not seen at creation)"
              : !e->blocking ? "NCCL (non-blocking communicator)"
              : e->pass ? "NCCL (no sparccl comm)" : NULL;
  pthread_mutex_unlock(&tableLock);
  if (e == NULL && firstTime(PRELOAD_WARN, 2, NULL, 0, 0, 0, nccl, 0))
    preloadLog(PRELOAD_WARN, "communicator %p was not created through an interposed "
               "ncclCommInit*/ncclCommSplit/ncclCommShrink call (its blocking mode is unknown): "
               "its calls pass through", HANDLE(nccl));
  return 1;
}

/* sparcclCommInitNccl did not make a comm: an error the call returns (*result), or a
 * refusal after which the communicator's calls pass through. */
static void creationFailed(ncclComm_t nccl, sparcclResult_t res, unsigned gen,
                           const char** decision, ncclResult_t* result) {
  CommEntry* e;
  if (!argumentError(res)) {
    preloadLog(PRELOAD_WARN, "sparcclCommInitNccl on communicator %p failed: %s; the call "
               "returns the error", HANDLE(nccl), sparcclGetErrorString(res));
    *result = toNccl(res);
    *decision = NULL;
    return;
  }
  preloadLog(PRELOAD_WARN, "sparcclCommInitNccl on communicator %p refused: %s (set "
             "SPARCCL_DEBUG=WARN for the reason); its calls pass through to NCCL", HANDLE(nccl),
             sparcclGetErrorString(res));
  pthread_mutex_lock(&tableLock);
  e = tableFind(nccl);
  if (e != NULL && e->gen == gen) e->pass = 1;
  pthread_mutex_unlock(&tableLock);
  *decision = "NCCL (no sparccl comm)";
}

/* The new comm into nccl's entry, unless it was destroyed or given one meanwhile by another
 * thread (a race the program owns): then the new comm is destroyed.  Returns the comm to use. */
static sparcclComm_t recordComm(ncclComm_t nccl, sparcclComm_t comm, unsigned gen,
                                const char** decision) {
  CommEntry* e;
  int nranks = 0;
  pthread_mutex_lock(&tableLock);
  e = tableFind(nccl);
  if (e == NULL || e->gen != gen || e->comm != NULL) {
    sparcclComm_t other = e != NULL && e->gen == gen ? e->comm : NULL;
    pthread_mutex_unlock(&tableLock);
    preloadInSparccl++;
    sparcclCommDestroy(comm);
    preloadInSparccl--;
    *decision = other != NULL ? NULL : "NCCL (communicator destroyed during the call)";
    return other;
  }
  e->comm = comm;
  pthread_mutex_unlock(&tableLock);
  sparcclCommCount(comm, &nranks);
  preloadLog(PRELOAD_INFO, "sparccl comm %p created for communicator %p (%d ranks)", HANDLE(comm),
             HANDLE(nccl), nranks);
  *decision = NULL;
  return comm;
}

/* The sparccl comm of nccl, or NULL with *decision saying why the call passes through;
 * *result is set (and NULL returned) when the creation failed in a way the call reports. */
static sparcclComm_t sparcclFor(ncclComm_t nccl, int capture, const char** decision,
                                ncclResult_t* result) {
  sparcclComm_t comm = NULL;
  sparcclResult_t res;
  unsigned gen = 0;
  *result = ncclSuccess;
  if (tableDecision(nccl, &comm, decision, &gen)) return comm;
  if (capture != 0) {
    *decision = "NCCL (first call on the communicator during CUDA graph capture)";
    return NULL;
  }
  /* Local: sparcclCommInitNccl makes no collective call, so ranks cannot mismatch here. */
  preloadInSparccl++;
  res = sparcclCommInitNccl(&comm, nccl, NULL);
  preloadInSparccl--;
  if (res != sparcclSuccess) {
    creationFailed(nccl, res, gen, decision, result);
    return NULL;
  }
  return recordComm(nccl, comm, gen, decision);
}

static ncclResult_t sparseAllReduce(const void* send, void* recv, size_t count,
                                    ncclDataType_t type, ncclRedOp_t op, ncclComm_t nccl,
                                    cudaStream_t stream) {
  const char* decision = NULL;
  ncclResult_t result = ncclSuccess;
  sparcclResult_t res = sparcclSuccess;
  size_t nlayers;
  char text[160];
  int capture = capturing(stream);
  sparcclComm_t comm = sparcclFor(nccl, capture, &decision, &result);

  if (comm == NULL) {
    if (decision == NULL) return result; /* creation failed: reported, not hidden */
    logDecision(send, recv, count, type, op, nccl, decision);
    return dense(send, recv, count, type, op, nccl, stream);
  }
  nlayers = preloadLayerCount(count);
  /* Registering is collective and synchronising on a new key: never during capture.  A key
   * registered before is found by sparcclAllReduce itself; a new one is refused by it
   * (sparcclInvalidUsage) and passes through below. */
  if (nlayers > 1 && capture == 0 && !preloadRegisterLayers(comm, send, count, nlayers, &res))
    return ncclSystemError;
  if (res == sparcclSuccess) {
    preloadInSparccl++;
    res = sparcclAllReduce(send, recv, count, (sparcclDataType_t)type, (sparcclRedOp_t)op, comm,
                           (void*)stream);
    preloadInSparccl--;
  }
  if (res == sparcclSuccess) {
    snprintf(text, sizeof(text), "sparccl (%zu layer%s)", nlayers, nlayers > 1 ? "s" : "");
    logDecision(send, recv, count, type, op, nccl, text);
    return ncclSuccess;
  }
  if (argumentError(res)) {
    /* Every rank refuses this call alike, before any collective or after the layout
     * fingerprint exchange every rank saw alike: all of them go dense together.  A new key
     * during capture is expected (INFO); anything else is worth a WARN, once per key. */
    int level = capture == 1 ? PRELOAD_INFO : PRELOAD_WARN;
    if (firstTime(level, 1, send, count, type, op, nccl, genOf(nccl)))
      preloadLog(level, "sparccl refused a %zu-element ncclAllReduce from %p (%s%s); it goes to "
                 "NCCL dense on every rank", count, send, sparcclGetErrorString(res),
                 capture == 1 ? ": a new key during CUDA graph capture"
                              : "; set SPARCCL_DEBUG=WARN for the reason");
    return dense(send, recv, count, type, op, nccl, stream);
  }
  /* A runtime failure may be this rank's alone, after other ranks enqueued sparccl's
   * ncclAllGather: a dense call here could mismatch theirs.  Report it instead. */
  preloadLog(PRELOAD_WARN, "sparccl failed on a %zu-element ncclAllReduce (%s); the call "
             "returns the error", count, sparcclGetErrorString(res));
  return toNccl(res);
}

/* ------------------------------------------------------------ interposed entry points */
PRELOAD_API ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                       ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                       cudaStream_t stream) {
  const char* why = NULL;
  if (preloadInSparccl) return dense(sendbuff, recvbuff, count, datatype, op, comm, stream);
  pthread_once(&settingsOnce, settingsInit);
  if (!preloadSettings.enabled) why = "NCCL (preload disabled)";
  else if (datatype != ncclFloat32 && datatype != ncclFloat16 && datatype != ncclBfloat16)
    why = "NCCL (not float32, float16 or bfloat16)";
  else if (op != ncclSum && op != ncclAvg) why = "NCCL (not sum or avg)";
  else if ((long long)count < preloadSettings.minCount || count == 0)
    why = "NCCL (below SPARCCL_PRELOAD_MIN_COUNT)";
  else if (groupDepth > 0) why = "NCCL (inside ncclGroupStart/ncclGroupEnd)";
  else if (comm == NULL || sendbuff == NULL || recvbuff == NULL) why = "NCCL (null argument)";
  else if (preloadSettings.layerChunk == 0 && count > UINT32_MAX)
    why = "NCCL (one layer over 2^32-1 elements; set SPARCCL_PRELOAD_LAYER)";
  if (why != NULL) {
    if (preloadLogs(PRELOAD_INFO) && count > 0)
      logDecision(sendbuff, recvbuff, count, datatype, op, comm, why);
    return dense(sendbuff, recvbuff, count, datatype, op, comm, stream);
  }
  return sparseAllReduce(sendbuff, recvbuff, count, datatype, op, comm, stream);
}

PRELOAD_API ncclResult_t ncclGroupStart(void) {
  GroupFn f = REAL(groupStart, "ncclGroupStart");
  ncclResult_t res;
  if (f == NULL) return ncclInternalError;
  res = f();
  if (res == ncclSuccess && !preloadInSparccl) groupDepth++;
  return res;
}

/* NCCL leaves the group whatever the result (an error is the group's error). */
PRELOAD_API ncclResult_t ncclGroupEnd(void) {
  GroupFn f = REAL(groupEnd, "ncclGroupEnd");
  if (!preloadInSparccl && groupDepth > 0) groupDepth--;
  if (f == NULL) return ncclInternalError;
  return f();
}

PRELOAD_API ncclResult_t ncclGroupSimulateEnd(ncclSimInfo_t* simInfo) {
  GroupSimulateEndFn f = REAL(groupSimulateEnd, "ncclGroupSimulateEnd");
  if (!preloadInSparccl && groupDepth > 0) groupDepth--;
  if (f == NULL) return ncclInternalError;
  return f(simInfo);
}

/* A created communicator is tracked on ncclSuccess, and on ncclInProgress (a non-blocking
 * one: the handle is valid, its initialisation goes on). */
#define CREATED(res) ((res) == ncclSuccess || (res) == ncclInProgress)

PRELOAD_API ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId,
                                          int rank) {
  InitRankFn f = REAL(initRank, "ncclCommInitRank");
  ncclResult_t res;
  if (f == NULL) return ncclInternalError;
  res = f(comm, nranks, commId, rank);
  if (!preloadInSparccl && CREATED(res) && comm != NULL)
    track(*comm, blockingOf(NULL, 1), "ncclCommInitRank");
  return res;
}

PRELOAD_API ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks,
                                                ncclUniqueId commId, int rank,
                                                ncclConfig_t* config) {
  InitRankConfigFn f = REAL(initRankConfig, "ncclCommInitRankConfig");
  ncclResult_t res;
  if (f == NULL) return ncclInternalError;
  res = f(comm, nranks, commId, rank, config);
  if (!preloadInSparccl && CREATED(res) && comm != NULL)
    track(*comm, blockingOf(config, 1), "ncclCommInitRankConfig");
  return res;
}

PRELOAD_API ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  InitAllFn f = REAL(initAll, "ncclCommInitAll");
  ncclResult_t res;
  int i;
  if (f == NULL) return ncclInternalError;
  res = f(comms, ndev, devlist);
  if (!preloadInSparccl && CREATED(res) && comms != NULL)
    for (i = 0; i < ndev; i++) track(comms[i], blockingOf(NULL, 1), "ncclCommInitAll");
  return res;
}

PRELOAD_API ncclResult_t ncclCommInitRankScalable(ncclComm_t* comm, int nranks, int myrank,
                                                  int nId, ncclUniqueId* commIds,
                                                  ncclConfig_t* config) {
  InitRankScalableFn f = REAL(initRankScalable, "ncclCommInitRankScalable");
  ncclResult_t res;
  if (f == NULL) return ncclInternalError;
  res = f(comm, nranks, myrank, nId, commIds, config);
  if (!preloadInSparccl && CREATED(res) && comm != NULL)
    track(*comm, blockingOf(config, 1), "ncclCommInitRankScalable");
  return res;
}

/* A child made with config NULL inherits its parent's config (NCCL's copyCommConfig). */
PRELOAD_API ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm,
                                       ncclConfig_t* config) {
  SplitFn f = REAL(split, "ncclCommSplit");
  ncclResult_t res;
  if (f == NULL) return ncclInternalError;
  res = f(comm, color, key, newcomm, config);
  if (!preloadInSparccl && CREATED(res) && newcomm != NULL && *newcomm != NULL)
    track(*newcomm, blockingOf(config, blockingOfComm(comm)), "ncclCommSplit");
  return res;
}

PRELOAD_API ncclResult_t ncclCommShrink(ncclComm_t comm, int* excludeRanksList,
                                        int excludeRanksCount, ncclComm_t* newcomm,
                                        ncclConfig_t* config, int shrinkFlags) {
  ShrinkFn f = REAL(shrink, "ncclCommShrink");
  ncclResult_t res;
  if (f == NULL) return ncclInternalError;
  res = f(comm, excludeRanksList, excludeRanksCount, newcomm, config, shrinkFlags);
  if (!preloadInSparccl && CREATED(res) && newcomm != NULL && *newcomm != NULL)
    track(*newcomm, blockingOf(config, blockingOfComm(comm)), "ncclCommShrink");
  return res;
}

/* The sparccl comm first: it is freed while the NCCL communicator is still alive. */
PRELOAD_API ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  CommFn f = REAL(destroy, "ncclCommDestroy");
  sparcclComm_t sc = NULL;
  if (f == NULL) return ncclInternalError;
  if (!preloadInSparccl && comm != NULL && tableRemove(comm, &sc)) destroySparccl(comm, sc);
  return f(comm);
}

/* Out of the table first (no call reaches it), NCCL's abort (it stops hung kernels), then
 * the sparccl comm's device memory (its teardown makes no NCCL call). */
PRELOAD_API ncclResult_t ncclCommAbort(ncclComm_t comm) {
  CommFn f = REAL(abort, "ncclCommAbort");
  sparcclComm_t sc = NULL;
  ncclResult_t res;
  int found = 0;
  if (f == NULL) return ncclInternalError;
  if (!preloadInSparccl && comm != NULL) found = tableRemove(comm, &sc);
  res = f(comm);
  if (found) destroySparccl(comm, sc);
  return res;
}
