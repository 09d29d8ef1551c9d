/*
 * Save and load all state of a comm (SPEC 5).  The file is validated whole (size, magic,
 * version, rank, rank count, config, every layer set's layout, checksum) before anything
 * is applied, and load applies nothing unless every rank's file passed.  Written to a
 * temporary name and renamed, so a crash never leaves a half-written file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "device.h"

#define FILE_MAGIC "SPARCCL"
#define FILE_FORMAT 1u

typedef struct {
  char magic[8];
  uint32_t format, library;
  int32_t rank, nranks;
  uint64_t configFingerprint;
  uint64_t nsets;
  uint64_t nextLayerId;
  uint64_t lossCount;
  uint64_t lag;
} FileHeader;

typedef struct {
  uint64_t fingerprint, count, nlayers, steps, normCount, stateFloats;
} SetHeader;

typedef struct {
  uint64_t id, step, havePrevGrad;
} LayerHeader;

/* A growing byte buffer (the whole file is built in memory, then written at once). */
typedef struct { uint8_t* data; size_t size, cap; int failed; } Buffer;

static void put(Buffer* b, const void* p, size_t n) {
  if (b->failed) return;
  if (b->size + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    uint8_t* grown;
    while (cap < b->size + n) cap *= 2;
    grown = (uint8_t*)realloc(b->data, cap);
    if (grown == NULL) { b->failed = 1; return; }
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->size, p, n);
  b->size += n;
}

static size_t historyBytes(const sparcclComm_t comm) {
  return ((size_t)comm->config.restartLag + 1) * sizeof(double);
}

SPARCCL_API sparcclResult_t sparcclSaveState(sparcclComm_t comm, const char* path) {
  Buffer b = {NULL, 0, 0, 0};
  FileHeader fh;
  size_t i, j;
  uint64_t checksum;
  char tmp[4096];
  FILE* f;
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclSaveState"));
  if (path == NULL || strlen(path) + 16 > sizeof(tmp)) {
    WARN("sparcclSaveState: path is NULL or too long");
    return sparcclInvalidArgument;
  }
  for (i = 0; comm->device && i < comm->nsets; i++)
    SPARCCLCHECK(comm->device->pullState(comm, comm->sets[i]));
  memset(&fh, 0, sizeof(fh));
  memcpy(fh.magic, FILE_MAGIC, sizeof(FILE_MAGIC));
  fh.format = FILE_FORMAT;
  fh.library = SPARCCL_VERSION_CODE;
  fh.rank = comm->rank;
  fh.nranks = comm->nranks;
  fh.configFingerprint = sparcclConfigFingerprint(&comm->config);
  fh.nsets = comm->nsets;
  fh.nextLayerId = comm->nextLayerId;
  fh.lossCount = comm->lossCount;
  fh.lag = (uint64_t)comm->config.restartLag;
  put(&b, &fh, sizeof(fh));
  put(&b, comm->lossHistory, historyBytes(comm));
  for (i = 0; i < comm->nsets; i++) {
    const sparcclLayerSet_t* s = comm->sets[i];
    SetHeader sh;
    sh.fingerprint = s->fingerprint;
    sh.count = s->count;
    sh.nlayers = s->nlayers;
    sh.steps = s->steps;
    sh.normCount = s->normCount;
    sh.stateFloats = s->stateFloats;
    put(&b, &sh, sizeof(sh));
    put(&b, s->normHistory, historyBytes(comm));
    for (j = 0; j < s->nlayers; j++) {
      LayerHeader lh;
      lh.id = s->layers[j].id;
      lh.step = s->layers[j].step;
      lh.havePrevGrad = (uint64_t)s->layers[j].havePrevGrad;
      put(&b, &lh, sizeof(lh));
    }
    if (s->stateFloats) put(&b, s->stateMemory, s->stateFloats * sizeof(float));
  }
  checksum = sparcclHash64(SPARCCL_HASH_SEED, b.data, b.size);
  put(&b, &checksum, sizeof(checksum));
  if (b.failed) {
    free(b.data);
    WARN("sparcclSaveState: out of memory");
    return sparcclSystemError;
  }
  snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, comm->rank);
  f = fopen(tmp, "wb");
  if (f == NULL || fwrite(b.data, 1, b.size, f) != b.size || fclose(f) != 0 ||
      rename(tmp, path) != 0) {
    WARN("sparcclSaveState: cannot write %s", path);
    free(b.data);
    remove(tmp);
    return sparcclSystemError;
  }
  free(b.data);
  INFO("sparcclSaveState: %zu layer sets, %zu bytes to %s", comm->nsets, b.size, path);
  return sparcclSuccess;
}

/* Bounds-checked reader over the file's bytes. */
typedef struct { const uint8_t* data; size_t size, pos; } Reader;

static const void* take(Reader* r, size_t n) {
  const void* p;
  if (n > r->size - r->pos) return NULL;
  p = r->data + r->pos;
  r->pos += n;
  return p;
}

/* Validate everything; on success r is positioned for apply(). */
static sparcclResult_t validate(sparcclComm_t comm, const uint8_t* data, size_t size,
                                const char* path) {
  Reader r = {data, size, 0};
  FileHeader fh;
  uint64_t checksum;
  size_t i, j;
  if (size < sizeof(FileHeader) + sizeof(uint64_t)) {
    WARN("sparcclLoadState: %s is truncated (%zu bytes)", path, size);
    return sparcclInvalidUsage;
  }
  memcpy(&checksum, data + size - sizeof(uint64_t), sizeof(checksum));
  if (memcmp(data, FILE_MAGIC, sizeof(FILE_MAGIC)) != 0) {
    WARN("sparcclLoadState: %s is not a sparccl state file", path);
    return sparcclInvalidUsage;
  }
  if (sparcclHash64(SPARCCL_HASH_SEED, data, size - sizeof(uint64_t)) != checksum) {
    WARN("sparcclLoadState: %s is corrupted or truncated (checksum mismatch)", path);
    return sparcclInvalidUsage;
  }
  r.size = size - sizeof(uint64_t);
  memcpy(&fh, take(&r, sizeof(fh)), sizeof(fh));
  if (fh.format != FILE_FORMAT) {
    WARN("sparcclLoadState: %s has format %u; this library reads %u", path, fh.format, FILE_FORMAT);
    return sparcclInvalidUsage;
  }
  if (fh.nranks != comm->nranks || fh.rank != comm->rank) {
    WARN("sparcclLoadState: %s was saved by rank %d of %d; this is rank %d of %d", path,
         fh.rank, fh.nranks, comm->rank, comm->nranks);
    return sparcclInvalidUsage;
  }
  if (fh.configFingerprint != sparcclConfigFingerprint(&comm->config) ||
      fh.lag != (uint64_t)comm->config.restartLag) {
    WARN("sparcclLoadState: %s was saved under another config (or library version %u)", path,
         fh.library);
    return sparcclInvalidUsage;
  }
  if (fh.nsets != comm->nsets) {
    WARN("sparcclLoadState: %s holds %llu layer sets; this comm has %zu (register the layouts "
         "in the same order before loading)", path, (unsigned long long)fh.nsets, comm->nsets);
    return sparcclInvalidUsage;
  }
  if (take(&r, historyBytes(comm)) == NULL) goto truncated;
  for (i = 0; i < comm->nsets; i++) {
    const sparcclLayerSet_t* s = comm->sets[i];
    const void* p = take(&r, sizeof(SetHeader));
    SetHeader sh;
    if (p == NULL) goto truncated;
    memcpy(&sh, p, sizeof(sh));
    if (sh.fingerprint != s->fingerprint || sh.count != s->count || sh.nlayers != s->nlayers ||
        sh.stateFloats != s->stateFloats) {
      WARN("sparcclLoadState: %s: layer set %zu has another layout (%llu elements in %llu "
           "layers; here %zu in %zu)", path, i, (unsigned long long)sh.count,
           (unsigned long long)sh.nlayers, s->count, s->nlayers);
      return sparcclInvalidUsage;
    }
    if (take(&r, historyBytes(comm)) == NULL) goto truncated;
    for (j = 0; j < s->nlayers; j++)
      if (take(&r, sizeof(LayerHeader)) == NULL) goto truncated;
    if (take(&r, s->stateFloats * sizeof(float)) == NULL) goto truncated;
  }
  if (r.pos != r.size) {
    WARN("sparcclLoadState: %s has %zu unexpected trailing bytes", path, r.size - r.pos);
    return sparcclInvalidUsage;
  }
  return sparcclSuccess;
truncated:
  WARN("sparcclLoadState: %s is truncated", path);
  return sparcclInvalidUsage;
}

static void apply(sparcclComm_t comm, const uint8_t* data) {
  Reader r = {data, (size_t)-1, 0};
  FileHeader fh;
  size_t i, j;
  memcpy(&fh, take(&r, sizeof(fh)), sizeof(fh));
  comm->nextLayerId = (uint32_t)fh.nextLayerId;
  comm->lossCount = fh.lossCount;
  memcpy(comm->lossHistory, take(&r, historyBytes(comm)), historyBytes(comm));
  for (i = 0; i < comm->nsets; i++) {
    sparcclLayerSet_t* s = comm->sets[i];
    SetHeader sh;
    memcpy(&sh, take(&r, sizeof(sh)), sizeof(sh));
    s->steps = sh.steps;
    s->normCount = sh.normCount;
    memcpy(s->normHistory, take(&r, historyBytes(comm)), historyBytes(comm));
    for (j = 0; j < s->nlayers; j++) {
      LayerHeader lh;
      memcpy(&lh, take(&r, sizeof(lh)), sizeof(lh));
      s->layers[j].id = (uint32_t)lh.id;
      s->layers[j].step = lh.step;
      s->layers[j].havePrevGrad = (int)lh.havePrevGrad;
    }
    if (s->stateFloats)
      memcpy(s->stateMemory, take(&r, s->stateFloats * sizeof(float)), s->stateFloats * sizeof(float));
  }
}

SPARCCL_API sparcclResult_t sparcclLoadState(sparcclComm_t comm, const char* path) {
  uint8_t* data = NULL;
  size_t size = 0;
  sparcclResult_t own = sparcclSuccess, res;
  int32_t mine, *all;
  int r;
  FILE* f;
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclLoadState"));
  if (path == NULL) {
    WARN("sparcclLoadState: path is NULL");
    return sparcclInvalidArgument;
  }
  f = fopen(path, "rb");
  if (f == NULL) {
    WARN("sparcclLoadState: cannot open %s", path);
    own = sparcclSystemError;
  } else {
    long end;
    if (fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
      own = sparcclSystemError;
    } else {
      size = (size_t)end;
      data = (uint8_t*)malloc(size ? size : 1);
      if (data == NULL || fread(data, 1, size, f) != size) own = sparcclSystemError;
    }
    fclose(f);
    if (own != sparcclSuccess) WARN("sparcclLoadState: cannot read %s", path);
  }
  if (own == sparcclSuccess) own = validate(comm, data, size, path);

  /* All ranks apply, or none: the replicas (H, counters) must not diverge. */
  all = (int32_t*)malloc(sizeof(int32_t) * (size_t)comm->nranks);
  if (all == NULL) { free(data); return sparcclSystemError; }
  mine = (int32_t)own;
  res = comm->transport->allgather(comm->transport, &mine, all, sizeof(int32_t));
  if (res == sparcclSuccess) {
    for (r = 0; r < comm->nranks; r++)
      if (all[r] != sparcclSuccess && own == sparcclSuccess) {
        WARN("sparcclLoadState: rank %d could not load its file; nothing loaded", r);
        own = sparcclInvalidUsage;
      }
  } else {
    own = res;
  }
  free(all);
  if (own == sparcclSuccess) {
    size_t i;
    apply(comm, data);
    for (i = 0; comm->device && i < comm->nsets; i++)
      if (comm->device->pushState(comm, comm->sets[i]) != sparcclSuccess) own = sparcclUnhandledCudaError;
    INFO("sparcclLoadState: %zu layer sets from %s", comm->nsets, path);
  }
  free(data);
  return own;
}
