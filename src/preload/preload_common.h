/* What the two preload libraries share (mpi_preload.c, nccl_preload.c): the
 * SPARCCL_PRELOAD_* settings, the log, the per-thread reentrancy guard, the table that logs
 * each decision once, and the layout of a buffer cut into layers.  Hidden: each .so links
 * its own copy and exports only the interposed entry points. */
#ifndef SPARCCL_PRELOAD_COMMON_H
#define SPARCCL_PRELOAD_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include "sparccl.h"

#pragma GCC visibility push(hidden)

enum { PRELOAD_NONE = 0, PRELOAD_WARN = 1, PRELOAD_INFO = 2, PRELOAD_TRACE = 3 };

/* Defined by each library: what its log lines say after the level ("preload", "nccl
 * preload").  A constant, since a WARN can come before the settings are read. */
extern const char preloadLogTag[];

/* Read once by preloadSettingsInit; a library may tighten them before preloadLogSettings. */
typedef struct {
  int enabled;          /* SPARCCL_PRELOAD_ENABLE; 0 after a malformed variable */
  long long minCount;   /* SPARCCL_PRELOAD_MIN_COUNT, at least 1 */
  long long layerChunk; /* SPARCCL_PRELOAD_LAYER; 0: a buffer is one layer */
} PreloadSettings;

extern PreloadSettings preloadSettings;

/* Nonzero inside a call into sparccl: the interposed entry points pass through. */
extern __thread int preloadInSparccl;

/* SPARCCL_DEBUG and SPARCCL_PRELOAD_* into the log level and preloadSettings; a malformed
 * variable warns and disables the preload.  Call once (pthread_once). */
void preloadSettingsInit(void);

/* The INFO line that says what the library does with these settings:
 * "<library> enabled|disabled: <calls> and count >= N goes through sparccl, layers of L". */
void preloadLogSettings(const char* library, const char* calls);

/* 1 when a line of this level is printed: up to SPARCCL_DEBUG's level, and WARN unless
 * SPARCCL_DEBUG=NONE or VERSION. */
int preloadLogs(int level);

/* The library's format (src/debug.c): host:pid:tid SPARCCL LEVEL <tag>: message, on stderr. */
void preloadLog(int level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

/* What a decision is logged once for; the fields a library has no use for stay 0. */
typedef struct {
  const void* buf;
  uint64_t count;
  uint64_t comm;  /* the communicator handle */
  uint64_t type;  /* the datatype */
  uint64_t op;    /* the reduction */
  uint64_t kind;  /* which of a library's messages */
  uint64_t gen;   /* which life of a reused communicator handle */
} PreloadKey;

/* 1 the first time key is seen, when level is being logged.  The table is bounded: past
 * 4095 keys, new ones are no longer logged (an INFO line says so once). */
int preloadFirstTime(int level, const PreloadKey* key);

/* How many layers of SPARCCL_PRELOAD_LAYER elements a buffer of count elements is: 1 without
 * SPARCCL_PRELOAD_LAYER or when it is one layer. */
size_t preloadLayerCount(size_t count);

/* sparcclRegisterLayout of buf (count elements) as nlayers layers of SPARCCL_PRELOAD_LAYER
 * elements, the last one shorter, with *res its result.  0 (after a WARN) when out of memory
 * for the layout, 1 otherwise. */
int preloadRegisterLayers(sparcclComm_t comm, const void* buf, size_t count, size_t nlayers,
                          sparcclResult_t* res);

/* sparcclCommDestroy(comm) unless NULL, and the INFO line naming the communicator handle. */
void preloadDestroyComm(const void* handle, sparcclComm_t comm);

#pragma GCC visibility pop

#endif
