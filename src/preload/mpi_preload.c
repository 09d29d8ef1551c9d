/*
 * libsparccl_mpi_preload.so: sparccl for unmodified MPI programs, through MPI's standard
 * profiling interface (PMPI).
 *
 *   mpirun -x LD_PRELOAD=/path/libsparccl_mpi_preload.so -x SPARCCL_DENSITY=0.01 ... ./app
 *
 * MPI_Allreduce of MPI_FLOAT with MPI_SUM and count >= SPARCCL_PRELOAD_MIN_COUNT on an
 * intracommunicator goes through sparcclAllReduce on a sparccl comm created lazily for that
 * MPI communicator (the first such call is collective, as the allreduce itself is).  Every
 * other call goes untouched to PMPI_Allreduce.  The decision depends only on count,
 * datatype, op, the kind of communicator and the environment, which every rank shares, so
 * every rank decides alike.
 *
 * State is keyed as SPEC 5 says: (sendbuf, count), and an MPI_IN_PLACE call by its
 * receive buffer.  Without SPARCCL_PRELOAD_LAYER a buffer is one layer; with
 * SPARCCL_PRELOAD_LAYER=L it is registered as consecutive layers of L elements (the last
 * one shorter).
 *
 * Environment (read once, at the first intercepted call):
 *   SPARCCL_PRELOAD_ENABLE     1 (default) or 0: 0 passes every call through
 *   SPARCCL_PRELOAD_MIN_COUNT  elements; smaller calls pass through (default 65536)
 *   SPARCCL_PRELOAD_LAYER      elements per layer chunk; 0 = the whole buffer (default 0)
 *   SPARCCL_DEBUG=INFO         logs each decision once per (buffer, count, type, op, comm)
 *   SPARCCL_* (SPEC 8)         the sparccl config of every comm the preload creates
 *
 * MPI_Iallreduce is not intercepted (it passes to the MPI library as is): running sparccl
 * at the time of the call would block inside a nonblocking call, which can deadlock
 * programs that are correct MPI (a rank that sends before it waits), and a correct version
 * needs a progress engine this host library does not have.
 *
 * sparccl's own collectives (src/mpi.c) call PMPI_* entry points, so they never come back
 * here; a per-thread guard passes any call made from inside sparccl through as well.
 * MPI_Comm_free / MPI_Comm_disconnect destroy the sparccl comm of the communicator before
 * freeing it (a new communicator may get the same handle), and MPI_Finalize destroys them
 * all before PMPI_Finalize.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <mpi.h>
#include "sparccl.h"
#include "sparccl_mpi.h"

#define PRELOAD_API __attribute__((visibility("default")))
#define HANDLE(x) ((void*)(uintptr_t)(x)) /* a communicator handle, for the log */

/* ------------------------------------------------------------ settings and logging */
enum { LOG_NONE = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_TRACE = 3 };

static pthread_once_t settingsOnce = PTHREAD_ONCE_INIT;
static int enabled = 1;
static long long minCount = 65536;
static long long layerChunk = 0;
static int logLevel = LOG_NONE;
static int quiet = 0; /* SPARCCL_DEBUG=NONE (or VERSION) said so explicitly */
static char logHost[64] = "unknown";
static pthread_mutex_t logLock = PTHREAD_MUTEX_INITIALIZER;

/* The library's format (src/debug.c): host:pid:tid SPARCCL LEVEL message, on stderr. */
static void plog(int level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void plog(int level, const char* fmt, ...) {
  static const char* names[] = {"NONE", "WARN", "INFO", "TRACE"};
  char message[1024];
  va_list args;
  /* Warnings that the preload is not doing its job print even without SPARCCL_DEBUG: a
   * mistyped variable must not silently leave a run uncompressed. */
  if (level > logLevel && (level != LOG_WARN || quiet)) return;
  va_start(args, fmt);
  vsnprintf(message, sizeof(message), fmt, args);
  va_end(args);
  pthread_mutex_lock(&logLock);
  fprintf(stderr, "%s:%d:%d SPARCCL %s preload: %s\n", logHost, (int)getpid(),
          (int)syscall(SYS_gettid), names[level], message);
  fflush(stderr);
  pthread_mutex_unlock(&logLock);
}

/* A non-negative integer, or -1 when malformed. */
static long long parseCount(const char* name, const char* text) {
  char* end = NULL;
  long long v;
  errno = 0;
  v = strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < 0) {
    plog(LOG_WARN, "%s=%s is not a non-negative integer; the preload passes every call "
         "through", name, text);
    return -1;
  }
  return v;
}

static void settingsInit(void) {
  const char* level = getenv("SPARCCL_DEBUG");
  const char* text;
  gethostname(logHost, sizeof(logHost) - 1);
  if (level != NULL) {
    if (strcasecmp(level, "INFO") == 0) logLevel = LOG_INFO;
    else if (strcasecmp(level, "TRACE") == 0) logLevel = LOG_TRACE;
    else if (strcasecmp(level, "VERSION") == 0 || strcasecmp(level, "NONE") == 0) quiet = 1;
    else logLevel = LOG_WARN; /* WARN, or a bad value the library itself reports */
  }
  text = getenv("SPARCCL_PRELOAD_ENABLE");
  if (text != NULL) {
    if (strcmp(text, "0") == 0) enabled = 0;
    else if (strcmp(text, "1") == 0) enabled = 1;
    else {
      plog(LOG_WARN, "SPARCCL_PRELOAD_ENABLE=%s is not 0 or 1; the preload passes every call "
           "through", text);
      enabled = 0;
    }
  }
  text = getenv("SPARCCL_PRELOAD_MIN_COUNT");
  if (text != NULL) {
    long long v = parseCount("SPARCCL_PRELOAD_MIN_COUNT", text);
    if (v < 0) enabled = 0;
    else minCount = v < 1 ? 1 : v;
  }
  text = getenv("SPARCCL_PRELOAD_LAYER");
  if (text != NULL) {
    long long v = parseCount("SPARCCL_PRELOAD_LAYER", text);
    if (v < 0) enabled = 0;
    else layerChunk = v;
  }
  plog(LOG_INFO, "libsparccl_mpi_preload %s: MPI_Allreduce of MPI_FLOAT with MPI_SUM and "
       "count >= %lld goes through sparccl, layers of %s",
       enabled ? "enabled" : "disabled", minCount,
       layerChunk > 0 ? getenv("SPARCCL_PRELOAD_LAYER") : "the whole buffer");
}

/* ------------------------------------------------------------ reentrancy guard */
static __thread int inSparccl = 0;

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
    plog(LOG_INFO, "communicator %p is an intercommunicator: its calls pass through",
         HANDLE(mpi));
  } else {
    inSparccl++;
    res = sparcclCommInitMpi(&comm, mpi, NULL);
    inSparccl--;
    if (res != sparcclSuccess) {
      /* sparcclCommInitMpi agrees on failure over every rank, so every rank passes. */
      plog(LOG_WARN, "sparcclCommInitMpi on communicator %p failed: %s; its calls pass "
           "through to MPI", HANDLE(mpi), sparcclGetErrorString(res));
      comm = NULL;
    } else {
      int size = 0;
      PMPI_Comm_size(mpi, &size);
      plog(LOG_INFO, "sparccl comm %p created for communicator %p (%d ranks)", HANDLE(comm),
           HANDLE(mpi), size);
    }
  }
  pthread_mutex_lock(&cacheLock);
  if (cacheCount == cacheCap) {
    size_t cap = cacheCap ? 2 * cacheCap : 8;
    CacheEntry* grown = (CacheEntry*)realloc(cache, cap * sizeof(*grown));
    if (grown == NULL) {
      pthread_mutex_unlock(&cacheLock);
      if (comm != NULL) { inSparccl++; sparcclCommDestroy(comm); inSparccl--; }
      plog(LOG_WARN, "out of memory for the communicator cache");
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
  if (comm == NULL) return;
  inSparccl++;
  sparcclCommDestroy(comm);
  inSparccl--;
  plog(LOG_INFO, "sparccl comm %p of communicator %p destroyed", HANDLE(comm), HANDLE(mpi));
}

/* ------------------------------------------------------------ decision log, once per buffer */
typedef struct {
  const void* buf;
  int count;
  MPI_Datatype type;
  MPI_Op op;
  MPI_Comm comm;
  int used;
} Seen;

#define SEEN_CAP 4096
static Seen seen[SEEN_CAP];
static size_t seenCount = 0;

/* 1 the first time this (buffer, count, type, op, comm) is seen; only when INFO is on.
 * The table is bounded: past SEEN_CAP - 1 buffers, new ones are no longer logged. */
static int firstTime(const void* buf, int count, MPI_Datatype type, MPI_Op op, MPI_Comm comm) {
  uint64_t h = (uint64_t)(uintptr_t)buf * 0x9E3779B97F4A7C15ULL;
  size_t i, slot;
  int result = 0, full = 0;
  if (logLevel < LOG_INFO) return 0;
  h ^= (uint64_t)(unsigned)count * 0xC2B2AE3D27D4EB4FULL;
  h ^= (uint64_t)(uintptr_t)comm * 0x165667B19E3779F9ULL;
  h ^= (uint64_t)(uintptr_t)type * 0x27D4EB2F165667C5ULL;
  h ^= (uint64_t)(uintptr_t)op * 0x94D049BB133111EBULL;
  h ^= h >> 31;
  pthread_mutex_lock(&cacheLock);
  slot = (size_t)(h % SEEN_CAP);
  for (i = 0; i < SEEN_CAP; i++) {
    Seen* s = &seen[(slot + i) % SEEN_CAP];
    if (s->used && s->buf == buf && s->count == count && s->type == type && s->op == op &&
        s->comm == comm)
      break; /* seen before */
    if (!s->used) {
      if (seenCount + 1 < SEEN_CAP) {
        s->used = 1; s->buf = buf; s->count = count; s->type = type; s->op = op; s->comm = comm;
        seenCount++;
        result = 1;
      } else if (seenCount + 1 == SEEN_CAP) {
        seenCount++; /* say it once */
        full = 1;
      }
      break;
    }
  }
  pthread_mutex_unlock(&cacheLock);
  if (full) plog(LOG_INFO, "%d distinct buffers seen; later decisions are not logged", SEEN_CAP - 1);
  return result;
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
  plog(LOG_INFO, "MPI_Allreduce %s %p count %d %s %s comm %p -> %s",
       inPlace ? "in place on" : "from", key, count, typeName(type), opName(op), HANDLE(comm),
       decision);
}

/* ------------------------------------------------------------ the sparse path */
static int sparseAllreduce(const void* sendbuf, void* recvbuf, int count, MPI_Comm mpi,
                           int inPlace) {
  sparcclComm_t comm = NULL;
  sparcclResult_t res = sparcclSuccess;
  const void* send = inPlace ? (const void*)recvbuf : sendbuf;
  size_t nlayers = 1;
  int pass = 0, rc;
  char decision[160];

  rc = commFor(mpi, &comm, &pass);
  if (rc != MPI_SUCCESS) return rc;
  if (pass) {
    logDecision(send, count, MPI_FLOAT, MPI_SUM, mpi, inPlace, "MPI (no sparccl comm)");
    return PMPI_Allreduce(inPlace ? MPI_IN_PLACE : sendbuf, recvbuf, count, MPI_FLOAT, MPI_SUM,
                          mpi);
  }
  if (layerChunk > 0 && (long long)count > layerChunk) {
    size_t chunk = (size_t)layerChunk, i, *counts;
    nlayers = ((size_t)count + chunk - 1) / chunk;
    counts = (size_t*)malloc(nlayers * sizeof(size_t));
    if (counts == NULL) {
      plog(LOG_WARN, "out of memory for a layout of %zu layers", nlayers);
      return MPI_ERR_NO_MEM;
    }
    for (i = 0; i < nlayers; i++) counts[i] = chunk;
    counts[nlayers - 1] = (size_t)count - (nlayers - 1) * chunk;
    /* Collective the first time for this key (every rank meets a new key at the same
     * call, as sparcclAllReduce's own first call would), a no-op once it is live. */
    inSparccl++;
    res = sparcclRegisterLayout(comm, send, nlayers, counts);
    inSparccl--;
    free(counts);
  }
  if (res == sparcclSuccess) {
    snprintf(decision, sizeof(decision), "sparccl (%zu layer%s)", nlayers, nlayers > 1 ? "s" : "");
    logDecision(send, count, MPI_FLOAT, MPI_SUM, mpi, inPlace, decision);
    inSparccl++;
    res = sparcclAllReduce(send, recvbuf, (size_t)count, sparcclFloat32, sparcclSum, comm, NULL);
    inSparccl--;
  }
  if (res != sparcclSuccess) {
    /* Falling back to a dense allreduce here could hang against ranks that succeeded:
     * report through the communicator's error handler, as MPI would. */
    plog(LOG_WARN, "sparccl failed on a %d-element MPI_Allreduce (%s); set SPARCCL_DEBUG=WARN "
         "for the reason", count, sparcclGetErrorString(res));
    PMPI_Comm_call_errhandler(mpi, MPI_ERR_OTHER);
    return MPI_ERR_OTHER;
  }
  return MPI_SUCCESS;
}

/* ------------------------------------------------------------ interposed entry points */
PRELOAD_API int MPI_Allreduce(const void* sendbuf, void* recvbuf, int count,
                              MPI_Datatype datatype, MPI_Op op, MPI_Comm comm) {
  int inPlace = sendbuf == MPI_IN_PLACE;
  if (inSparccl) return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
  pthread_once(&settingsOnce, settingsInit);
  if (!enabled || datatype != MPI_FLOAT || op != MPI_SUM || (long long)count < minCount ||
      comm == MPI_COMM_NULL || recvbuf == NULL || sendbuf == NULL) {
    if (logLevel >= LOG_INFO && count > 0) {
      const char* why = !enabled ? "MPI (preload disabled)"
                        : datatype != MPI_FLOAT ? "MPI (not MPI_FLOAT)"
                        : op != MPI_SUM ? "MPI (not MPI_SUM)"
                        : (long long)count < minCount ? "MPI (below SPARCCL_PRELOAD_MIN_COUNT)"
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
  if (inSparccl) return PMPI_Comm_free(comm);
  return freeHook(comm, 0);
}

PRELOAD_API int MPI_Comm_disconnect(MPI_Comm* comm) {
  if (inSparccl) return PMPI_Comm_disconnect(comm);
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
