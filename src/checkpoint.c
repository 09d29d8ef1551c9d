/* Save and load all state of a comm (SPEC 2, 5), each a collective act: a save's files
 * replace the old ones only when every rank has written its own; a load applies nothing
 * unless every rank's file passed whole, with one save id and one replicated state
 * (docs/ARCHITECTURE.md, "Save and load"). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "core.h"
#include "backend.h"

#define FILE_MAGIC "SPARCCL"
#define FILE_FORMAT 3u /* 3: a key's call count (warm-up), dgc's u */

typedef struct {
  char magic[8];
  uint32_t format, library;
  int32_t rank, nranks;
  uint64_t configFingerprint;
  uint64_t nsets;
  uint64_t nextLayerId;
  uint64_t lossCount;
  uint64_t lag;
  uint64_t saveId; /* the same in every file of one save */
} FileHeader;

typedef struct {
  uint64_t fingerprint, count, nlayers, steps, normCount, stateFloats, calls;
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

/* A save id every rank agrees on: a hash of every rank's nonce, gathered. */
static sparcclResult_t agreeSaveId(sparcclComm_t comm, uint64_t* id) {
  struct timespec now;
  uint64_t nonce[3], *all;
  sparcclResult_t res;
  clock_gettime(CLOCK_REALTIME, &now);
  nonce[0] = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
  nonce[1] = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)comm;
  nonce[2] = ++comm->saveCount;
  all = (uint64_t*)malloc(sizeof(nonce) * (size_t)comm->nranks);
  if (all == NULL) return sparcclSystemError;
  res = comm->transport->allgather(comm->transport, nonce, all, sizeof(nonce));
  *id = sparcclHash64(SPARCCL_HASH_SEED, all, sizeof(nonce) * (size_t)comm->nranks) | 1u;
  free(all);
  return res;
}

/* The whole file in memory; b->failed on allocation failure. */
static void buildFile(sparcclComm_t comm, uint64_t saveId, Buffer* b) {
  FileHeader fh;
  size_t i, j;
  uint64_t checksum;
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
  fh.saveId = saveId;
  put(b, &fh, sizeof(fh));
  put(b, comm->lossHistory, historyBytes(comm));
  for (i = 0; i < comm->nsets; i++) {
    const sparcclLayerSet_t* s = comm->sets[i];
    SetHeader sh;
    sh.fingerprint = s->fingerprint;
    sh.count = s->count;
    sh.nlayers = s->nlayers;
    sh.steps = s->steps;
    sh.calls = s->calls;
    sh.normCount = s->normCount;
    sh.stateFloats = s->stateFloats;
    put(b, &sh, sizeof(sh));
    put(b, s->normHistory, historyBytes(comm));
    for (j = 0; j < s->nlayers; j++) {
      LayerHeader lh;
      lh.id = s->layers[j].id;
      lh.step = s->layers[j].step;
      lh.havePrevGrad = (uint64_t)s->layers[j].havePrevGrad;
      put(b, &lh, sizeof(lh));
    }
    if (s->stateFloats) put(b, s->stateMemory, s->stateFloats * sizeof(float));
  }
  checksum = sparcclHash64(SPARCCL_HASH_SEED, b->data, b->size);
  put(b, &checksum, sizeof(checksum));
}

static sparcclResult_t writeFile(const char* tmp, const Buffer* b) {
  FILE* f = fopen(tmp, "wb");
  int ok = f != NULL && fwrite(b->data, 1, b->size, f) == b->size;
  if (f != NULL && fflush(f) != 0) ok = 0;
  if (f != NULL && fsync(fileno(f)) != 0) ok = 0;
  if (f != NULL && fclose(f) != 0) ok = 0;
  if (!ok) {
    WARN("sparcclSaveState: cannot write %s: %s", tmp, strerror(errno));
    remove(tmp);
    return sparcclSystemError;
  }
  return sparcclSuccess;
}

SPARCCL_API sparcclResult_t sparcclSaveState(sparcclComm_t comm, const char* path) {
  Buffer b = {NULL, 0, 0, 0};
  uint64_t saveId = 0;
  size_t i;
  char tmp[4096], previous[4096];
  int havePrevious = 0, renamed = 0;
  sparcclResult_t res = sparcclSuccess;
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclSaveState"));
  if (path == NULL || strlen(path) + 24 > sizeof(tmp)) {
    WARN("sparcclSaveState: path is NULL or too long");
    return sparcclInvalidArgument;
  }
  snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, comm->rank);
  snprintf(previous, sizeof(previous), "%s.previous%d", path, comm->rank);
  for (i = 0; i < comm->nsets && res == sparcclSuccess; i++)
    res = comm->backend->pullState(comm, comm->sets[i]);
  SPARCCLCHECK(agreeSaveId(comm, &saveId));
  if (res == sparcclSuccess) {
    buildFile(comm, saveId, &b);
    if (b.failed) WARN("sparcclSaveState: out of memory");
    res = b.failed ? sparcclSystemError : writeFile(tmp, &b);
  }
  free(b.data);
  /* Replace the old files only if every rank has written its new one. */
  res = sparcclAgreeStatus(comm, res, sparcclRemoteError, "sparcclSaveState", "write its state file");
  if (res != sparcclSuccess) {
    remove(tmp);
    return res;
  }
  remove(previous);
  havePrevious = link(path, previous) == 0; /* the old file, to restore if a rename fails */
  renamed = rename(tmp, path) == 0;
  if (!renamed) {
    WARN("sparcclSaveState: cannot rename %s to %s: %s", tmp, path, strerror(errno));
    res = sparcclSystemError;
  }
  res = sparcclAgreeStatus(comm, res, sparcclRemoteError, "sparcclSaveState", "replace its state file");
  if (res != sparcclSuccess) {
    /* No mixed set: every rank goes back to its file of the previous save (if any). */
    if (renamed && havePrevious) rename(previous, path);
    else if (renamed) remove(path);
    remove(tmp);
    return res;
  }
  if (havePrevious) remove(previous);
  INFO("sparcclSaveState: %zu layer sets, save %016llx, to %s", comm->nsets,
       (unsigned long long)saveId, path);
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

/* What every rank's file must agree on: its save and the replicated state (the counters,
 * the restart histories and, for ef21, H), which are identical on every rank. */
typedef struct { uint64_t saveId, replicas; } FileSummary;

/* A set's layers as saved: consecutive ids below nextLayerId, not overlapping another
 * set's (ids are assigned a set at a time), flags 0 or 1 where the layer keeps a
 * previous gradient and 0 elsewhere. */
static int layersValid(const sparcclComm_t comm, const sparcclLayerSet_t* s, const uint8_t* headers,
                       uint64_t nextLayerId, uint64_t* firstIds, size_t set) {
  size_t j, other;
  LayerHeader first;
  memcpy(&first, headers, sizeof(first));
  if (first.id + s->nlayers > nextLayerId || first.id + s->nlayers < first.id) return 0;
  for (other = 0; other < set; other++) {
    const sparcclLayerSet_t* o = comm->sets[other];
    if (first.id < firstIds[other] + o->nlayers && firstIds[other] < first.id + s->nlayers) return 0;
  }
  firstIds[set] = first.id;
  for (j = 0; j < s->nlayers; j++) {
    LayerHeader lh;
    memcpy(&lh, headers + j * sizeof(lh), sizeof(lh));
    if (lh.id != first.id + j) return 0;
    if (lh.havePrevGrad > 1 || (lh.havePrevGrad && s->layers[j].prevGrad == NULL)) return 0;
  }
  return 1;
}

/* The file's frame: long enough, the magic, the checksum over everything before it. */
static sparcclResult_t checkFrame(const uint8_t* data, size_t size, const char* path) {
  uint64_t checksum;
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
  return sparcclSuccess;
}

/* The file header against this comm: format, rank, config, number of sets and layers. */
static sparcclResult_t checkHeader(sparcclComm_t comm, const FileHeader* fh, const char* path) {
  if (fh->format != FILE_FORMAT) {
    WARN("sparcclLoadState: %s has format %u; this library reads %u", path, fh->format, FILE_FORMAT);
    return sparcclInvalidUsage;
  }
  if (fh->nranks != comm->nranks || fh->rank != comm->rank) {
    WARN("sparcclLoadState: %s was saved by rank %d of %d; this is rank %d of %d", path,
         fh->rank, fh->nranks, comm->rank, comm->nranks);
    return sparcclInvalidUsage;
  }
  if (fh->configFingerprint != sparcclConfigFingerprint(&comm->config) ||
      fh->lag != (uint64_t)comm->config.restartLag) {
    WARN("sparcclLoadState: %s was saved under another config (or library version %u)", path,
         fh->library);
    return sparcclInvalidUsage;
  }
  if (fh->nsets != comm->nsets) {
    WARN("sparcclLoadState: %s holds %llu layer sets; this comm has %zu (register the layouts "
         "in the same order before loading)", path, (unsigned long long)fh->nsets, comm->nsets);
    return sparcclInvalidUsage;
  }
  if (fh->nextLayerId > UINT32_MAX) {
    WARN("sparcclLoadState: %s numbers %llu layers; at most 2^32-1", path,
         (unsigned long long)fh->nextLayerId);
    return sparcclInvalidUsage;
  }
  return sparcclSuccess;
}

static sparcclResult_t truncatedFile(const char* path) {
  WARN("sparcclLoadState: %s is truncated", path);
  return sparcclInvalidUsage;
}

/* Layer set i's record: its layout, layer headers and state; what replicas share is hashed. */
static sparcclResult_t validateSet(sparcclComm_t comm, Reader* r, size_t i, uint64_t nextLayerId,
                                   uint64_t* firstIds, const char* path, FileSummary* summary) {
  const sparcclLayerSet_t* s = comm->sets[i];
  const uint8_t* headers;
  const float* state;
  const void* p;
  SetHeader sh;
  size_t j;
  if ((p = take(r, sizeof(SetHeader))) == NULL) return truncatedFile(path);
  memcpy(&sh, p, sizeof(sh));
  if (sh.fingerprint != s->fingerprint || sh.count != s->count || sh.nlayers != s->nlayers ||
      sh.stateFloats != s->stateFloats) {
    WARN("sparcclLoadState: %s: layer set %zu has another layout or node topology (%llu "
         "elements in %llu layers; here %zu in %zu)", path, i, (unsigned long long)sh.count,
         (unsigned long long)sh.nlayers, s->count, s->nlayers);
    return sparcclInvalidUsage;
  }
  summary->replicas = sparcclHash64(summary->replicas, &sh.steps, sizeof(sh.steps));
  summary->replicas = sparcclHash64(summary->replicas, &sh.calls, sizeof(sh.calls));
  summary->replicas = sparcclHash64(summary->replicas, &sh.normCount, sizeof(sh.normCount));
  if ((p = take(r, historyBytes(comm))) == NULL) return truncatedFile(path);
  summary->replicas = sparcclHash64(summary->replicas, p, historyBytes(comm));
  if ((headers = (const uint8_t*)take(r, s->nlayers * sizeof(LayerHeader))) == NULL)
    return truncatedFile(path);
  if (!layersValid(comm, s, headers, nextLayerId, firstIds, i)) {
    WARN("sparcclLoadState: %s: layer set %zu has layer ids or flags this comm cannot hold",
         path, i);
    return sparcclInvalidUsage;
  }
  summary->replicas = sparcclHash64(summary->replicas, headers, s->nlayers * sizeof(LayerHeader));
  if ((state = (const float*)take(r, s->stateFloats * sizeof(float))) == NULL && s->stateFloats)
    return truncatedFile(path);
  for (j = 0; j < s->nlayers; j++) /* H sits where the live set keeps it; a shard's only in its column */
    if (s->layers[j].H != NULL && !sparccl_exchange_sharded(comm->config.exchange))
      summary->replicas = sparcclHash64(summary->replicas, state + (s->layers[j].H - s->stateMemory),
                                        s->layers[j].count * sizeof(float));
  return sparcclSuccess;
}

/* Validate everything; on success r is positioned for apply(). */
static sparcclResult_t validate(sparcclComm_t comm, const uint8_t* data, size_t size,
                                const char* path, FileSummary* summary) {
  Reader r = {data, size, 0};
  FileHeader fh;
  uint64_t* firstIds;
  sparcclResult_t res;
  size_t i;
  const void* p;
  SPARCCLCHECK(checkFrame(data, size, path));
  r.size = size - sizeof(uint64_t);
  memcpy(&fh, take(&r, sizeof(fh)), sizeof(fh));
  SPARCCLCHECK(checkHeader(comm, &fh, path));
  summary->saveId = fh.saveId;
  summary->replicas = sparcclHash64(SPARCCL_HASH_SEED, &fh.nextLayerId, sizeof(fh.nextLayerId));
  summary->replicas = sparcclHash64(summary->replicas, &fh.lossCount, sizeof(fh.lossCount));
  if ((p = take(&r, historyBytes(comm))) == NULL) return truncatedFile(path);
  summary->replicas = sparcclHash64(summary->replicas, p, historyBytes(comm));
  firstIds = (uint64_t*)malloc(sizeof(uint64_t) * (comm->nsets ? comm->nsets : 1));
  if (firstIds == NULL) return sparcclSystemError;
  for (i = 0, res = sparcclSuccess; i < comm->nsets && res == sparcclSuccess; i++)
    res = validateSet(comm, &r, i, fh.nextLayerId, firstIds, path, summary);
  free(firstIds);
  if (res != sparcclSuccess) return res;
  if (r.pos != r.size) {
    WARN("sparcclLoadState: %s has %zu unexpected trailing bytes", path, r.size - r.pos);
    return sparcclInvalidUsage;
  }
  return sparcclSuccess;
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
    s->calls = sh.calls;
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

/* The whole of a regular file; never blocks on a FIFO or a device. */
static sparcclResult_t readFile(const char* path, uint8_t** data, size_t* size) {
  struct stat st;
  size_t got = 0;
  int fd = open(path, O_RDONLY | O_NONBLOCK);
  *data = NULL;
  if (fd < 0) {
    WARN("sparcclLoadState: cannot open %s: %s", path, strerror(errno));
    return sparcclSystemError;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    WARN("sparcclLoadState: %s is not a regular file", path);
    close(fd);
    return sparcclInvalidUsage;
  }
  *size = (size_t)st.st_size;
  *data = (uint8_t*)malloc(*size ? *size : 1);
  while (*data != NULL && got < *size) {
    ssize_t n = read(fd, *data + got, *size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fd);
  if (*data == NULL || got != *size) {
    WARN("sparcclLoadState: cannot read %s", path);
    free(*data);
    *data = NULL;
    return sparcclSystemError;
  }
  return sparcclSuccess;
}

/* Every rank's file passed, is of one save and agrees on the replicated state. */
static sparcclResult_t agreeFiles(sparcclComm_t comm, sparcclResult_t own,
                                  const FileSummary* mine) {
  typedef struct { int64_t status; FileSummary summary; } Vote;
  Vote me, *all = (Vote*)malloc(sizeof(Vote) * (size_t)comm->nranks);
  sparcclResult_t res;
  int r;
  if (all == NULL) return sparcclSystemError;
  memset(&me, 0, sizeof(me));
  me.status = own;
  if (own == sparcclSuccess) me.summary = *mine;
  res = comm->transport->allgather(comm->transport, &me, all, sizeof(Vote));
  for (r = 0; res == sparcclSuccess && r < comm->nranks; r++) {
    if (all[r].status != sparcclSuccess) {
      if (own == sparcclSuccess) WARN("sparcclLoadState: rank %d could not load its file; nothing loaded", r);
      res = own != sparcclSuccess ? own : sparcclInvalidUsage;
    } else if (own == sparcclSuccess && all[r].summary.saveId != mine->saveId) {
      WARN("sparcclLoadState: rank %d's file is of save %016llx, this rank's of save %016llx: "
           "files of different saves; nothing loaded", r,
           (unsigned long long)all[r].summary.saveId, (unsigned long long)mine->saveId);
      res = sparcclInvalidUsage;
    } else if (own == sparcclSuccess && all[r].summary.replicas != mine->replicas) {
      WARN("sparcclLoadState: rank %d's file disagrees with this rank's on the replicated state "
           "(step counters, restart histories, layer ids, H); nothing loaded", r);
      res = sparcclInvalidUsage;
    }
  }
  if (res == sparcclSuccess) res = own;
  free(all);
  return res;
}

SPARCCL_API sparcclResult_t sparcclLoadState(sparcclComm_t comm, const char* path) {
  uint8_t* data = NULL;
  size_t size = 0, i;
  FileSummary summary;
  sparcclResult_t own;
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclLoadState"));
  if (path == NULL) {
    WARN("sparcclLoadState: path is NULL");
    return sparcclInvalidArgument;
  }
  memset(&summary, 0, sizeof(summary));
  own = readFile(path, &data, &size);
  if (own == sparcclSuccess) own = validate(comm, data, size, path, &summary);
  /* All ranks apply, or none: the replicas (H, counters) must not diverge. */
  own = agreeFiles(comm, own, &summary);
  if (own == sparcclSuccess) {
    apply(comm, data);
    for (i = 0; i < comm->nsets; i++)
      if (comm->backend->pushState(comm, comm->sets[i]) != sparcclSuccess) own = sparcclUnhandledCudaError;
    INFO("sparcclLoadState: %zu layer sets of save %016llx from %s", comm->nsets,
         (unsigned long long)summary.saveId, path);
  }
  free(data);
  return own;
}
