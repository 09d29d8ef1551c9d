/* What the two preload libraries share: see preload_common.h. */
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
#include "preload_common.h"

/* ------------------------------------------------------------ settings and logging */
PreloadSettings preloadSettings = {1, 65536, 0};
__thread int preloadInSparccl = 0;

static int logLevel = PRELOAD_NONE;
static int quiet = 0; /* SPARCCL_DEBUG=NONE (or VERSION) said so explicitly */
static char logHost[64] = "unknown";
static pthread_mutex_t logLock = PTHREAD_MUTEX_INITIALIZER;

/* Warnings that the preload is not doing its job print even without SPARCCL_DEBUG: a
 * mistyped variable must not silently leave a run uncompressed. */
int preloadLogs(int level) {
  return !(level > logLevel && (level != PRELOAD_WARN || quiet));
}

void preloadLog(int level, const char* fmt, ...) {
  static const char* names[] = {"NONE", "WARN", "INFO", "TRACE"};
  char message[1024];
  va_list args;
  if (!preloadLogs(level)) return;
  va_start(args, fmt);
  vsnprintf(message, sizeof(message), fmt, args);
  va_end(args);
  pthread_mutex_lock(&logLock);
  fprintf(stderr, "%s:%d:%d SPARCCL %s %s: %s\n", logHost, (int)getpid(),
          (int)syscall(SYS_gettid), names[level], preloadLogTag, message);
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
    preloadLog(PRELOAD_WARN, "%s=%s is not a non-negative integer; the preload passes every "
               "call through", name, text);
    return -1;
  }
  return v;
}

void preloadSettingsInit(void) {
  const char* level = getenv("SPARCCL_DEBUG");
  const char* text;
  gethostname(logHost, sizeof(logHost) - 1);
  if (level != NULL) {
    if (strcasecmp(level, "INFO") == 0) logLevel = PRELOAD_INFO;
    else if (strcasecmp(level, "TRACE") == 0) logLevel = PRELOAD_TRACE;
    else if (strcasecmp(level, "VERSION") == 0 || strcasecmp(level, "NONE") == 0) quiet = 1;
    else logLevel = PRELOAD_WARN; /* WARN, or a bad value the library itself reports */
  }
  text = getenv("SPARCCL_PRELOAD_ENABLE");
  if (text != NULL) {
    if (strcmp(text, "0") == 0) preloadSettings.enabled = 0;
    else if (strcmp(text, "1") == 0) preloadSettings.enabled = 1;
    else {
      preloadLog(PRELOAD_WARN, "SPARCCL_PRELOAD_ENABLE=%s is not 0 or 1; the preload passes "
                 "every call through", text);
      preloadSettings.enabled = 0;
    }
  }
  text = getenv("SPARCCL_PRELOAD_MIN_COUNT");
  if (text != NULL) {
    long long v = parseCount("SPARCCL_PRELOAD_MIN_COUNT", text);
    if (v < 0) preloadSettings.enabled = 0;
    else preloadSettings.minCount = v < 1 ? 1 : v;
  }
  text = getenv("SPARCCL_PRELOAD_LAYER");
  if (text != NULL) {
    long long v = parseCount("SPARCCL_PRELOAD_LAYER", text);
    if (v < 0) preloadSettings.enabled = 0;
    else preloadSettings.layerChunk = v;
  }
}

void preloadLogSettings(const char* library, const char* calls) {
  preloadLog(PRELOAD_INFO, "%s %s: %s and count >= %lld goes through sparccl, layers of %s",
             library, preloadSettings.enabled ? "enabled" : "disabled", calls,
             preloadSettings.minCount,
             preloadSettings.layerChunk > 0 ? getenv("SPARCCL_PRELOAD_LAYER")
                                            : "the whole buffer");
}

/* ------------------------------------------------------------ decision log, once per key */
typedef struct {
  PreloadKey key;
  int used;
} Seen;

#define SEEN_CAP 4096
static pthread_mutex_t seenLock = PTHREAD_MUTEX_INITIALIZER;
static Seen seen[SEEN_CAP];
static size_t seenCount = 0;

static int sameKey(const PreloadKey* a, const PreloadKey* b) {
  return a->buf == b->buf && a->count == b->count && a->comm == b->comm && a->type == b->type &&
         a->op == b->op && a->kind == b->kind && a->gen == b->gen;
}

int preloadFirstTime(int level, const PreloadKey* key) {
  uint64_t h = (uint64_t)(uintptr_t)key->buf * 0x9E3779B97F4A7C15ULL;
  size_t i, slot;
  int result = 0, full = 0;
  if (!preloadLogs(level)) return 0;
  h ^= key->count * 0xC2B2AE3D27D4EB4FULL;
  h ^= key->comm * 0x165667B19E3779F9ULL;
  h ^= key->type * 0x27D4EB2F165667C5ULL;
  h ^= key->op * 0x94D049BB133111EBULL;
  h ^= key->kind * 0xBF58476D1CE4E5B9ULL;
  h ^= key->gen * 0xD6E8FEB86659FD93ULL;
  h ^= h >> 31;
  pthread_mutex_lock(&seenLock);
  slot = (size_t)(h % SEEN_CAP);
  for (i = 0; i < SEEN_CAP; i++) {
    Seen* s = &seen[(slot + i) % SEEN_CAP];
    if (s->used && sameKey(&s->key, key)) break; /* seen before */
    if (!s->used) {
      if (seenCount + 1 < SEEN_CAP) {
        s->used = 1;
        s->key = *key;
        seenCount++;
        result = 1;
      } else if (seenCount + 1 == SEEN_CAP) {
        seenCount++; /* say it once */
        full = 1;
      }
      break;
    }
  }
  pthread_mutex_unlock(&seenLock);
  if (full)
    preloadLog(PRELOAD_INFO, "%d distinct buffers seen; later decisions are not logged",
               SEEN_CAP - 1);
  return result;
}

/* ------------------------------------------------------------ layers, comms */
size_t preloadLayerCount(size_t count) {
  long long chunk = preloadSettings.layerChunk;
  if (chunk > 0 && (long long)count > chunk) return (count + (size_t)chunk - 1) / (size_t)chunk;
  return 1;
}

int preloadRegisterLayers(sparcclComm_t comm, const void* buf, size_t count, size_t nlayers,
                          sparcclResult_t* res) {
  size_t chunk = (size_t)preloadSettings.layerChunk, i;
  size_t* counts = (size_t*)malloc(nlayers * sizeof(size_t));
  if (counts == NULL) {
    preloadLog(PRELOAD_WARN, "out of memory for a layout of %zu layers", nlayers);
    return 0;
  }
  for (i = 0; i < nlayers; i++) counts[i] = chunk;
  counts[nlayers - 1] = count - (nlayers - 1) * chunk;
  preloadInSparccl++;
  *res = sparcclRegisterLayout(comm, buf, nlayers, counts);
  preloadInSparccl--;
  free(counts);
  return 1;
}

void preloadDestroyComm(const void* handle, sparcclComm_t comm) {
  if (comm == NULL) return;
  preloadInSparccl++;
  sparcclCommDestroy(comm);
  preloadInSparccl--;
  preloadLog(PRELOAD_INFO, "sparccl comm %p of communicator %p destroyed", (void*)comm, handle);
}
