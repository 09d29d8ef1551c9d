/* sparccl internals shared by the host library's files (ARCHITECTURE.md). */
#ifndef SPARCCL_CORE_H_
#define SPARCCL_CORE_H_

#include <stdint.h>
#include <stddef.h>
#include "sparccl.h"
#include "sparccl_math.h"
#include "wire.h"
#include "steps.h"
#include "exchanges.h"

#define SPARCCL_API __attribute__((visibility("default")))

/* ------------------------------------------------------------ logging (debug.c) */
typedef enum { SPARCCL_LOG_NONE = 0, SPARCCL_LOG_WARN = 1, SPARCCL_LOG_INFO = 2,
               SPARCCL_LOG_TRACE = 3 } sparcclLogLevel_t;
void sparcclLog(sparcclLogLevel_t level, const char* func, int line, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));
int sparcclLogEnabled(sparcclLogLevel_t level);
#define WARN(...) sparcclLog(SPARCCL_LOG_WARN, __func__, __LINE__, __VA_ARGS__)
#define INFO(...) sparcclLog(SPARCCL_LOG_INFO, __func__, __LINE__, __VA_ARGS__)
#define TRACE(...) sparcclLog(SPARCCL_LOG_TRACE, __func__, __LINE__, __VA_ARGS__)

/* Checked calls with linear cleanup, as NCCL's checks.h. */
#define SPARCCLCHECK(call)                           \
  do {                                               \
    sparcclResult_t res_ = (call);                   \
    if (res_ != sparcclSuccess) return res_;         \
  } while (0)
#define SPARCCLCHECKGOTO(call, res, label)           \
  do {                                               \
    (res) = (call);                                  \
    if ((res) != sparcclSuccess) goto label;         \
  } while (0)

/* ------------------------------------------------------------ config (config.c) */
/* One row of the parameter table: a config field, its environment variable, its default
 * and its valid range (low/high; open ends where the flags say); enums take names (codes:
 * the values stored, NULL when they are the names' positions). */
typedef enum { PARAM_REAL, PARAM_ENUM, PARAM_INT, PARAM_LONG, PARAM_SIZE, PARAM_SEED } sparcclParamKind_t;
typedef struct {
  sparcclParamKind_t kind;
  const char* field;
  size_t offset;
  const char* env;
  double byDefault; /* an enum's: the position of its name */
  double low, high;
  int openLow, openHigh;
  const char* const* names;
  int nnames;
  const int* codes;
} sparcclParam_t;
const sparcclParam_t* sparcclParams(size_t* count);
/* Fill the unset fields of *out from SPARCCL_* and defaults; validate. */
sparcclResult_t sparcclConfigResolve(const sparcclConfig_t* user, sparcclConfig_t* out);
uint64_t sparcclConfigFingerprint(const sparcclConfig_t* config);
const char* sparcclCompressorName(int compressor);
const char* sparcclFeedbackName(int feedback);

/* ------------------------------------------------------------ transport */
struct sparcclTopology;
/* Compression does not know the transport; the transport knows nothing but bytes. */
/* One exchange in flight: storage the transport fills (mpi.c: an MPI_Request). */
typedef struct sparcclRequest { uint64_t opaque[2]; } sparcclRequest_t;
typedef struct sparcclTransport {
  int rank, nranks;
  const char* name;
  /* Every rank contributes bytes; recv holds nranks blocks in rank order. */
  sparcclResult_t (*allgather)(struct sparcclTransport* self, const void* send, void* recv,
                               size_t bytes);
  /* Optional (NULL: dense calls travel as an allgather of whole vectors): chunk r of send
   * goes to rank r, recv holds every rank's chunk for this rank in rank order. */
  sparcclResult_t (*alltoall)(struct sparcclTransport* self, const void* send, void* recv,
                              size_t chunkBytes);
  void (*destroy)(struct sparcclTransport* self);
  void* impl;
  /* Optional (NULL: a pipelined call sends each group by allgather): start an allgather
   * whose size every rank agreed before (no agreement of its own), then wait for it; send
   * and recv stay untouched until the wait returns.  *request is the transport's own. */
  sparcclResult_t (*iallgather)(struct sparcclTransport* self, const void* send, void* recv,
                                size_t bytes, struct sparcclRequest* request);
  sparcclResult_t (*wait)(struct sparcclTransport* self, struct sparcclRequest* request);
  /* Optional with iallgather: let the exchange progress (MPI moves a nonblocking exchange
   * only inside its calls); a later wait still completes it. */
  sparcclResult_t (*progress)(struct sparcclTransport* self, struct sparcclRequest* request);
  struct sparcclTopology* topology; /* the nodes (hierarchical exchange), or NULL; the transport's */
} sparcclTransport_t;

/* N nodes of L ranks (docs/EXCHANGES.md 11.2): this rank is local index j of node v; the
 * node's L ranks in global rank order, the column's N ranks (local index j) in node order. */
typedef struct sparcclTopology {
  int nodes, perNode;         /* N, L */
  int nodeIndex, localIndex;  /* v, j */
  sparcclTransport_t* node;   /* rank j' of it is local index j' */
  sparcclTransport_t* column; /* rank v' of it is node v' */
} sparcclTopology_t;

/* ------------------------------------------------------------ state */
typedef struct {
  size_t offset;    /* first element in the key's buffer */
  size_t count;     /* d */
  size_t k;         /* elements sent; d for dense layers */
  uint32_t id;      /* the comm-wide layer id of SPEC 3 */
  int sparse;       /* 0: d < minSparseCount, sent dense (no state but dgc's u) */
  int flagged;      /* keeps state, so follows the skip rule: sparse, or any layer under dgc */
  int sharedSet;    /* randk with shared randomness: no indices on the wire */
  uint64_t step;    /* completed (non-skipped) steps */
  int havePrevGrad; /* online importance: prevGrad holds the last call's g */
  float* error;     /* e (ef, scam) */
  float* h;         /* ef21: this rank's h */
  float* H;         /* ef21: the replica of mean h */
  float* importance;/* w (impk family) */
  float* prevGrad;  /* online importance */
  float* momentum;  /* u (dgc, SPEC 9) */
  /* Where this layer's data sit in a rank's wire block (in elements of their section). */
  size_t indexPos, valuePos, densePos, flagPos;
  /* This rank's shard (hierarchical exchange; else the whole layer): elements [shardOffset,
   * shardOffset + shardCount), which its state arrays cover; shardK of them sent, at
   * shardPos of the node's float blocks and shardIndexPos/shardValuePos/shardDensePos of
   * the column's block. */
  size_t shardOffset, shardCount, shardK, shardPos;
  size_t shardIndexPos, shardValuePos, shardDensePos;
  /* Split exchange (11.3): C and K, the layer's positions in the chunk and the final
   * block (a count, then C indices; a count, 16 demand counts, then K indices), and the
   * n + 1 region boundaries (state: in the set's stateMemory). */
  size_t splitC, splitK, chunkIndexPos, chunkValuePos, finalIndexPos, finalValuePos;
  uint32_t* bounds;
} sparcclLayer_t;

/* A run of a set's consecutive layers sent as one block (SPEC 4): the whole set, or one
 * group of a pipelined call.  A layer's position in the group's block is its position in
 * the set's minus the group's base; flags: the group's sparse layers', then dgc's dense. */
typedef struct {
  sparcclLayer_t* layers;  /* the first of them, in the set's array */
  size_t nlayers;
  size_t indexBase, valueBase, denseBase, sparseFlagBase, denseFlagBase, nsparse;
  size_t sendOffset;       /* of its block in the call's send area (nranks times: recv) */
  sparcclWire_t wire;
} sparcclGroup_t;

typedef struct {
  int tagged;              /* key is a tag, not a pointer */
  uint64_t key;            /* the pointer value or the tag */
  size_t count;            /* elements of the buffer */
  size_t nlayers;
  sparcclLayer_t* layers;
  uint64_t fingerprint;    /* of the config and the layer counts */
  uint64_t serial;         /* creation number on the comm: the same on every rank */
  uint64_t steps;          /* calls whose every sparse layer completed */
  uint64_t calls;          /* calls that returned sparcclSuccess: the warm-up's clock (SPEC 9) */
  float* stateMemory;      /* one allocation for every layer's arrays */
  size_t stateFloats;
  double* normHistory;     /* ring of restartLag + 1 output norms */
  uint64_t normCount;
  /* Wire layout of one rank's block (SPEC 4). */
  size_t indexCount, valueCount, denseCount, nsparse;
  size_t nflags;           /* flagged layers: the sparse ones (flags 0..nsparse-1), then dgc's dense ones */
  sparcclWire_t wire;      /* its sections' offsets (wire.h) */
  size_t maxLayer, maxSparseLayer;
  void* device;            /* device comms: the set's device state (cuda/) */
  struct sparcclPending* pending; /* the phase API's half-done call (phase.c), or NULL */
  /* Hierarchical exchange (exchange_hierarchical.c): the node's float blocks (shard chunks
   * of g, and the shards' outputs with the flags) and this rank's column block. */
  sparcclWire_t nodeChunk, nodeGather, column;
  /* Split exchange (exchange_split.c): one alltoall chunk, the final block; the floats of
   * stateMemory (at its end) that hold the boundaries. */
  sparcclWire_t splitChunk, splitFinal;
  size_t splitFloats;
  uint64_t phaseCalls;     /* completed phase-API calls: their check's sequence number */
  /* The blocks a call sends (pipeline.c): the whole set as one (whole), or ngroups > 1
   * pipeline groups of consecutive layers (groups, pipelineBytes in all). */
  sparcclGroup_t whole;
  sparcclGroup_t* groups;
  size_t ngroups, pipelineBytes;
} sparcclLayerSet_t;

#define SPARCCL_COMM_MAGIC 0x5350434fu

struct sparcclBackend;

struct sparcclComm {
  sparcclConfig_t config;
  const struct sparcclBackend* backend; /* host (src/host.c) or device (cuda/) */
  sparcclTransport_t* transport;
  int rank, nranks;
  sparcclLayerSet_t** sets; /* creation order */
  size_t nsets, setsCap;
  uint32_t nextLayerId;
  uint64_t nextSetSerial;
  uint64_t callSequence;    /* exchanges that passed the call check (SPEC 4) */
  uint64_t saveCount;       /* saves, for the save id */
  /* Scratch, grown only when a layer set is created. */
  uint8_t* sendBlock;
  uint8_t* recvBlocks;
  size_t blockCap;
  uint8_t* ringScratch;     /* the dense call's reduce-scatter and allgather (dense.c) */
  size_t ringCap;
  void* keys;               /* uint32 or uint64 keys of the largest sparse layer */
  uint32_t* candidates;
  float* accumulator;       /* float32 sums of the largest layer */
  size_t scratchCap;
  uint32_t* sharedIndices;  /* the selected sets that travel without indices (SPEC 3) */
  size_t sharedCap;
  uint8_t* hierScratch;     /* the hierarchical exchange's blocks (exchange_hierarchical.c) */
  size_t hierCap;
  /* Restart-on-loss history (ring of restartLag + 1 averaged losses). */
  double* lossHistory;
  uint64_t lossCount;
  sparcclStats_t stats;
};

/* comm.c.  Set by the CUDA library when it is loaded (cuda/nccl_comm.cu), so that a host
 * comm can refuse device buffers; NULL in a host-only build, which never touches CUDA. */
extern int (*sparcclIsDevicePointer)(const void* p);
sparcclResult_t sparcclCommCreate(sparcclComm_t* out, sparcclTransport_t* transport,
                                  const sparcclConfig_t* config);
int sparcclCommIsLive(sparcclComm_t comm);
sparcclResult_t sparcclCheckComm(sparcclComm_t comm, const char* caller);
/* Find the layer set of a key; NULL if none. */
sparcclLayerSet_t* sparcclFindSet(sparcclComm_t comm, int tagged, uint64_t key, size_t count);
/* Find or create (collectively: the layout fingerprint is exchanged).  counts may be NULL
 * (one layer of count elements). */
sparcclResult_t sparcclGetSet(sparcclComm_t comm, int tagged, uint64_t key, size_t count,
                              size_t nlayers, const size_t* counts, const char* caller,
                              sparcclLayerSet_t** out);
void sparcclSetResetState(sparcclComm_t comm, sparcclLayerSet_t* set);
/* A layer's state arrays for steps.h's reset and scale (element i of the layer at i). */
static inline sparcclStateArrays_t sparcclLayerState(const sparcclLayer_t* l) {
  sparcclStateArrays_t s;
  s.error = l->error; s.h = l->h; s.H = l->H; s.momentum = l->momentum; s.importance = l->importance;
  return s;
}
/* The Philox counter's rank (SPEC 3; 11.2: the node index under the hierarchical exchange). */
static inline int sparcclRandomRank(sparcclComm_t comm) {
  const sparcclTopology_t* t = comm->transport->topology;
  return comm->config.exchange == SPARCCL_EXCHANGE_HIERARCHICAL && t != NULL ? t->nodeIndex
                                                                         : comm->rank;
}
/* phase.c: free a set's half-done call; whether one awaits its decompress. */
void sparcclFreePending(sparcclLayerSet_t* set);
int sparcclPendingCompress(const sparcclLayerSet_t* set);
uint64_t sparcclHash64(uint64_t h, const void* data, size_t bytes);
#define SPARCCL_HASH_SEED 0xcbf29ce484222325ull

/* allreduce.c: the argument checks shared by the buffer-taking calls; CheckMemory refuses
 * host buffers on a device comm and device buffers on a host comm (SPEC 2). */
sparcclResult_t sparcclCheckMemory(sparcclComm_t comm, const void* a, const void* b,
                                   const char* caller);
sparcclResult_t sparcclCheckBuffers(sparcclComm_t comm, const void* send, const void* recv,
                                    size_t count, int datatype, int op, void* stream,
                                    const char* caller);

/* select.c: the exact top-k of SPEC 1.  Returns the threshold key and how many of the
 * elements equal to it (the lowest indices first) are taken: element i is selected iff
 * key_i > threshold, or key_i == threshold and it is among the first `ties` such. */
typedef struct { uint64_t threshold; size_t ties; } sparcclSelection_t;
sparcclSelection_t sparcclSelect32(const uint32_t* keys, size_t d, size_t k,
                                   const uint32_t* firstHistogram, uint32_t* candidates);
sparcclSelection_t sparcclSelect64(const uint64_t* keys, size_t d, size_t k,
                                   const uint32_t* firstHistogram, uint32_t* candidates);
#define SPARCCL_RADIX_BITS 11
#define SPARCCL_RADIX_BINS (1u << SPARCCL_RADIX_BITS)

/* compress.c: keys, selection and packing of one sparse layer into the wire block;
 * returns 1 if the layer's key/value input holds a NaN or Inf on this rank. */
int sparcclCompressLayer(sparcclComm_t comm, const sparcclGroup_t* group,
                         const sparcclLayer_t* layer, const void* send, int dtype,
                         uint8_t* block);
/* x of every element of a layer sent whole (a dense layer, or any layer in a dense call):
 * g, or dgc's momentum * u + g (SPEC 9), into out; returns 1 if it holds a NaN or Inf. */
int sparcclDenseInput(sparcclComm_t comm, const sparcclLayer_t* layer, const void* send,
                      int dtype, float* out);
int sparcclPackDense(sparcclComm_t comm, const sparcclGroup_t* group, const sparcclLayer_t* layer,
                     const void* send, int dtype, uint8_t* block);

/* decompress.c: after the exchange.  UpdateState may zero `sum` in its pass over e (then
 * returns 1, and ReduceLayer is told so: the output is written once, the memset skipped). */
int sparcclUpdateState(sparcclComm_t comm, const sparcclGroup_t* group, sparcclLayer_t* layer,
                       const void* send, int dtype, const uint8_t* block, float* sum);
void sparcclReduceLayer(sparcclComm_t comm, const sparcclGroup_t* group,
                        const sparcclLayer_t* layer, const uint8_t* blocks, float* sum, int zeroed);

/* importance.c */
float sparcclOnlineWeight(const sparcclCallValues_t* values, const sparcclLayer_t* layer, size_t i,
                          float g);

/* restart.c */
sparcclResult_t sparcclRestartSet(sparcclComm_t comm, sparcclLayerSet_t* set);
void sparcclRestartPolicyAfterCall(sparcclComm_t comm, sparcclLayerSet_t* set, double norm,
                                   int completed);

/* timing */
double sparcclSeconds(void);

/* The phase API's half-done call (phase.c): what the decompress needs; the host backend's
 * copies of g, of this rank's block and of the shared selected sets (the device backend
 * keeps its own). */
typedef struct sparcclPending {
  int pending;             /* a compress awaits its decompress */
  int dense;               /* a warm-up call (SPEC 9): whole vectors in the blocks */
  int dtype;
  sparcclCallCheck_t check;
  void* grad;              /* set->count elements of dtype: g as compressed */
  size_t gradBytes;
  uint8_t* block;          /* this rank's block as sent */
  uint32_t* shared;        /* comm->sharedIndices of this key, valueCount of them */
} sparcclPending_t;

/* ------------------------------------------------------------ the call check (callcheck.c) */
/* PHASE: a call made by the phase API's two halves (its op is not known at the compress,
 * and its sequence is the key's own: keys may finish their halves in any order). */
typedef enum { SPARCCL_CALL_SPARSE = 0, SPARCCL_CALL_DENSE = 1, SPARCCL_CALL_PHASE = 2,
               SPARCCL_CALL_PHASE_DENSE = 3 } sparcclCallKind_t;
/* What this rank expects every block of this call to carry. */
sparcclCallCheck_t sparcclCallCheck(sparcclComm_t comm, const sparcclLayerSet_t* set, int dtype,
                                    int op, int kind);
/* Zero the check of every rank's slot in blocks before an exchange, so that a slot the
 * exchange did not fill never passes. */
void sparcclClearChecks(sparcclComm_t comm, const sparcclGroup_t* group, uint8_t* blocks);
/* After the exchange, before any index is read: every block carries `expected`, and every
 * received index lies inside its layer, ascending.  sparcclInvalidUsage (logged with both
 * ranks' views) otherwise. */
sparcclResult_t sparcclVerifyBlocks(sparcclComm_t comm, const sparcclGroup_t* group,
                                    const uint8_t* blocks, sparcclCallCheck_t expected,
                                    const char* caller);
/* Only the checks: nranks blocks laid out as *wire. */
sparcclResult_t sparcclVerifyChecks(sparcclComm_t comm, const uint8_t* blocks,
                                    const sparcclWire_t* wire, sparcclCallCheck_t expected,
                                    const char* caller);
/* The same for the nblocks blocks of a sub-transport (`over` names it in the log). */
sparcclResult_t sparcclVerifyChecksOf(sparcclComm_t comm, int nblocks, const uint8_t* blocks,
                                      const sparcclWire_t* wire, sparcclCallCheck_t expected,
                                      const char* over, const char* caller);
/* Every received index of a sparse layer in [low, high) and ascending (SPEC 4). */
int sparcclIndicesValid(const uint32_t* indices, size_t k, size_t low, size_t high);
/* "Every rank agrees on a status": mine if it failed, else `remote` if another rank's
 * failed (logged with that rank), else success; a failed exchange is returned as it is. */
sparcclResult_t sparcclAgreeStatus(sparcclComm_t comm, sparcclResult_t mine,
                                   sparcclResult_t remote, const char* caller, const char* what);
/* The same on a transport, before its comm exists (comm creation). */
sparcclResult_t sparcclTransportAgree(sparcclTransport_t* transport, sparcclResult_t mine,
                                     sparcclResult_t remote, const char* caller,
                                     const char* what);
/* Every exchange of a transport first agrees its size (SPEC 4): an 8-byte `gather` of
 * (bytes, collective) on every rank, a mismatch refused on every rank before data moves. */
typedef sparcclResult_t (*sparcclRawGather_t)(void* ctx, const void* send, void* recv,
                                              size_t bytes);
sparcclResult_t sparcclAgreeSize(int nranks, size_t bytes, int alltoall, sparcclRawGather_t gather,
                                 void* ctx);

/* allreduce.c: the two halves of a call around its exchange (also the phase API's).
 * FindOrCreateKey: the key's set, created (collectively) on its first call.  CompressBlock:
 * this rank's block, changing no state.  FinishCall: the blocks verified (SPEC 4), then
 * the state update, the rank-ordered sums, the output, the restart policies and stats;
 * send is the gradient the block was compressed from, ownBlock that block. */
sparcclResult_t sparcclFindOrCreateKey(sparcclComm_t comm, int tagged, uint64_t key,
                                      size_t count, void* stream, const char* caller,
                                      sparcclLayerSet_t** set);
void sparcclCompressBlock(sparcclComm_t comm, const sparcclGroup_t* group, const void* send,
                          int dtype, sparcclCallCheck_t check, uint8_t* block);
/* CompressBlock's two steps: the zeroed block with its check, then layer i of the group. */
void sparcclBeginBlock(const sparcclGroup_t* group, sparcclCallCheck_t check, uint8_t* block);
void sparcclCompressGroupLayer(sparcclComm_t comm, const sparcclGroup_t* group, size_t i,
                               const void* send, int dtype, uint8_t* block);
sparcclResult_t sparcclFinishCall(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                                  void* recv, int dtype, int op, const uint8_t* ownBlock,
                                  const uint8_t* blocks, sparcclCallCheck_t check,
                                  const char* caller);

/* allreduce.c: the state updates and outputs of a call whose blocks were verified, group
 * by group (ownBlocks: this rank's send area; blocks: the recv area, nranks blocks per
 * group), then sparcclEndCall with bytesSent. */
void sparcclApplyCall(sparcclComm_t comm, sparcclLayerSet_t* set, const sparcclGroup_t* groups,
                      size_t ngroups, const void* send, void* recv, int dtype, int op,
                      const uint8_t* ownBlocks, const uint8_t* blocks, size_t bytesSent,
                      const char* caller);

/* allreduce.c: what every call ends with, sparse or dense: the key's counters, the restart
 * policies, the stats (bytesSent: what this call put on the wire for this rank). */
void sparcclEndCall(sparcclComm_t comm, sparcclLayerSet_t* set, int dtype, int completed,
                    double normSquared, size_t bytesSent);
/* A layer's output from its rank-ordered float32 sum (SPEC 1; SPEC 9 in a dense call). */
void sparcclWriteOutput(sparcclComm_t comm, sparcclLayer_t* l, float* sum, void* out, int dtype,
                        int op, int denseCall, sparccl_blocked_sum_t* norm);
/* A flagged layer whose x held a NaN or Inf on some rank: its output all NaN, counted and
 * logged; the caller leaves its state as it was (SPEC 2). */
void sparcclSkipLayer(sparcclComm_t comm, const sparcclLayer_t* l, void* out, int dtype,
                      sparccl_blocked_sum_t* norm, const char* caller);

/* dense.c: the dense calls of warm-up (SPEC 9).  A key's next call is dense while its call
 * count is below warmupSteps.  DenseBlockBytes: a rank's block when the exchange is an
 * allgather (the phase API, transports without alltoall): every element's x, float32, then
 * the flags and the call check.  RingBytes: the scratch the one-call ring path needs. */
int sparcclNextCallDense(sparcclComm_t comm, const sparcclLayerSet_t* set);
/* The ring's layout, which the device's ring (cuda/) shares: each rank's shard of `chunk`
 * elements; a reduce-scatter chunk (the shard's x, the flags, the check) and an allgather
 * block (the shard's sums, the check). */
typedef struct {
  size_t chunk;          /* elements of each rank's shard, a multiple of 4 */
  sparcclWire_t scatter; /* a reduce-scatter chunk: the shard's x, the flags, the check */
  sparcclWire_t gather;  /* an allgather block: the shard's sums, the check */
} sparcclDenseRing_t;
sparcclDenseRing_t sparcclDenseRingOf(sparcclComm_t comm, const sparcclLayerSet_t* set);
sparcclWire_t sparcclDenseBlockWire(const sparcclLayerSet_t* set);
size_t sparcclDenseBlockBytes(const sparcclLayerSet_t* set);
size_t sparcclDenseRingBytes(sparcclComm_t comm, const sparcclLayerSet_t* set);
void sparcclPackDenseBlock(sparcclComm_t comm, const sparcclLayerSet_t* set, const void* send,
                           int dtype, sparcclCallCheck_t check, uint8_t* block);
sparcclResult_t sparcclFinishDenseCall(sparcclComm_t comm, sparcclLayerSet_t* set,
                                       const void* send, void* recv, int dtype, int op,
                                       const uint8_t* blocks, sparcclCallCheck_t check,
                                       const char* caller);
sparcclResult_t sparcclDenseAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set,
                                      const void* send, void* recv, int dtype, int op,
                                      const char* caller);

/* exchange_hierarchical.c (docs/EXCHANGES.md 11.2): a set's shards and blocks, the scratch
 * a call needs, and one call (sparse or warm-up dense). */
void sparcclHierarchicalLayOut(sparcclComm_t comm, sparcclLayerSet_t* set);
size_t sparcclHierarchicalScratch(sparcclComm_t comm, const sparcclLayerSet_t* set);
sparcclResult_t sparcclHierarchicalAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set,
                                             const void* send, void* recv, int dtype, int op,
                                             const char* caller);

/* exchange_split.c (docs/EXCHANGES.md 11.3): the set's chunk and final block, the scratch
 * of a call, the boundaries (handed out of stateMemory; reset to floor(j d / n)), one call. */
sparcclResult_t sparcclSplitCheck(const sparcclTransport_t* transport, const sparcclConfig_t* c);
void sparcclSplitLayOut(sparcclComm_t comm, sparcclLayerSet_t* set);
void sparcclSplitAssign(sparcclComm_t comm, sparcclLayerSet_t* set);
void sparcclSplitReset(sparcclComm_t comm, sparcclLayerSet_t* set);
size_t sparcclSplitScratch(sparcclComm_t comm, const sparcclLayerSet_t* set);
sparcclResult_t sparcclSplitAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set, const void* send,
                                      void* recv, int dtype, int op, const char* caller);

/* Where a layer's selected indices are: on the wire, or (shared sets) only here. */
static inline uint32_t* sparcclLayerIndices(sparcclComm_t comm, const sparcclGroup_t* g,
                                            const sparcclLayer_t* l, const uint8_t* block) {
  return sparccl_wire_layer_indices(&g->wire, block, l->sharedSet, l->indexPos - g->indexBase,
                                    comm->sharedIndices, l->valuePos);
}
/* A layer's values, whole-layer floats and flag in its group's block. */
static inline uint8_t* sparcclLayerValues(const sparcclGroup_t* g, const sparcclLayer_t* l,
                                          const uint8_t* block) {
  return sparccl_wire_values(&g->wire, block, l->valuePos - g->valueBase);
}
static inline float* sparcclLayerDense(const sparcclGroup_t* g, const sparcclLayer_t* l,
                                       const uint8_t* block) {
  return sparccl_wire_dense(&g->wire, block) + (l->densePos - g->denseBase);
}
static inline size_t sparcclLayerFlag(const sparcclGroup_t* g, const sparcclLayer_t* l) {
  return l->sparse ? l->flagPos - g->sparseFlagBase : g->nsparse + (l->flagPos - g->denseFlagBase);
}

/* pipeline.c: a set's groups from the layout and pipelineBytes (set creation); the call
 * pipelined over them (host backend, when ngroups > 1). */
sparcclResult_t sparcclLayOutGroups(const sparcclConfig_t* c, sparcclLayerSet_t* set);
sparcclResult_t sparcclPipelinedAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set,
                                          const void* send, void* recv, int dtype, int op,
                                          const char* caller);

#endif /* SPARCCL_CORE_H_ */
