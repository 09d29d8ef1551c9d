/* sparccl: sparsified, error-compensated allreduce of gradients, a drop-in replacement for
 * ncclAllReduce / MPI_Allreduce: each layer sparsified to k = ceil(density * d) coordinates
 * (TopK, RandK, ImpK), feedback state kept next to the data, the pairs of all ranks
 * exchanged in one allgather.  The contract is ../shared/SPEC.md (this header: section 8).
 * C99, nothing heavier than stddef.h; host comms: sparccl_mpi.h, device: sparccl_nccl.h. */
#ifndef SPARCCL_H_
#define SPARCCL_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPARCCL_MAJOR 0
#define SPARCCL_MINOR 1
#define SPARCCL_PATCH 0
#define SPARCCL_VERSION_CODE (SPARCCL_MAJOR * 10000 + SPARCCL_MINOR * 100 + SPARCCL_PATCH)

typedef struct sparcclComm* sparcclComm_t;

typedef enum {
  sparcclSuccess = 0,
  sparcclUnhandledCudaError = 1,
  sparcclSystemError = 2,
  sparcclInternalError = 3,
  sparcclInvalidArgument = 4,
  sparcclInvalidUsage = 5,
  sparcclRemoteError = 6,
  sparcclInProgress = 7,
  sparcclNotSupported = 8, /* sparccl's own: a combination this build does not support */
  sparcclNumResults
} sparcclResult_t;

/* Values as NCCL's ncclDataType_t and ncclRedOp_t, so the two can be cast. */
typedef enum { sparcclFloat16 = 6, sparcclFloat32 = 7, sparcclBfloat16 = 9 } sparcclDataType_t;
typedef enum { sparcclSum = 0, sparcclAvg = 4 } sparcclRedOp_t;

typedef enum {
  sparcclTopK,       /* key |x|,            value x             */
  sparcclRandK,      /* key Philox word,    value (d/k) x       */
  sparcclImpK,       /* key |w x|,          value w x           */
  sparcclImpKSelect, /* key w,              value x             */
  sparcclImpKRandom  /* key log(u)/w,       value x             */
} sparcclCompressor_t;

typedef enum {
  sparcclFeedbackNone, /* DCGD: compress g                          */
  sparcclFeedbackEF,   /* error feedback: compress e + g            */
  sparcclFeedbackEF21, /* EF21: compress g - h, H replicates mean h */
  sparcclFeedbackSCAM, /* select on e + g, send g                   */
  sparcclFeedbackDGC   /* DGC: momentum u kept per layer, EF on u    */
} sparcclFeedback_t;

typedef enum {
  sparcclImportanceNone,    /* w stays 1 until the trainer runs the solver (cube steps) */
  sparcclImportanceCube,    /* projected gradient step on [low, high]^d, eq. (13)        */
  sparcclImportanceSimplex, /* mirror step on d * simplex, eq. (12)                      */
  sparcclImportanceOnline   /* one cube step per call from consecutive gradients          */
} sparcclImportance_t;

/* A device comm's kernels: the optimised ones, or the plain ones kept beside them as the
 * fallback and the baseline (docs/DEVICE.md); the same results bit for bit. */
typedef enum { sparcclDeviceKernelsOptimised, sparcclDeviceKernelsPlain } sparcclDeviceKernels_t;

/* How the ranks' selections meet (docs/EXCHANGES.md 11): one allgather of every rank's
 * pairs, or hierarchical (dense inside a node, each shard compressed once per node). */
typedef enum { sparcclExchangeAllgather, sparcclExchangeHierarchical, sparcclExchangeSplit } sparcclExchange_t;

/*
 * Configuration.  Start from SPARCCL_CONFIG_INITIALIZER and set what you want; every
 * field left at its "undefined" sentinel is filled from the SPARCCL_* environment
 * variable of the same meaning, then from the default (README.md lists both).
 */
typedef struct {
  size_t size;      /* sizeof(sparcclConfig_t) */
  unsigned magic;   /* SPARCCL_CONFIG_MAGIC */
  unsigned version; /* SPARCCL_VERSION_CODE */
  double density;               /* fraction of each layer sent, in (0, 1]; SPARCCL_DENSITY */
  int compressor;               /* sparcclCompressor_t; SPARCCL_COMPRESSOR */
  int feedback;                 /* sparcclFeedback_t; SPARCCL_FEEDBACK */
  int wireType;                 /* sparcclDataType_t of the values on the wire; SPARCCL_WIRE */
  size_t minSparseCount;        /* layers smaller than this are sent dense; SPARCCL_MIN_SPARSE */
  unsigned long long seed;      /* Philox key; SPARCCL_SEED */
  int sharedRandomness;         /* 1: every rank draws the same RandK set; SPARCCL_SHARED_RANDOMNESS */
  int importance;               /* sparcclImportance_t; SPARCCL_IMPORTANCE */
  double importanceGamma;       /* gamma of eq. (11): the probe step; SPARCCL_IMP_GAMMA */
  double importanceEta;         /* eta of eqs. (12), (13): the solver step; SPARCCL_IMP_ETA */
  double importanceLow;         /* cube bounds [low, high]; SPARCCL_IMP_LOW */
  double importanceHigh;        /* SPARCCL_IMP_HIGH */
  long long restartEvery;       /* restart a key every N of its steps, 0 = off; SPARCCL_RESTART_EVERY */
  double restartRatio;          /* restart when |out_t| / |out_t-lag| > ratio, 0 = off; SPARCCL_RESTART_RATIO */
  int restartLag;               /* the lag p of the two criteria above; SPARCCL_RESTART_LAG */
  int restartOnLoss;            /* restart when the reported loss rises; SPARCCL_RESTART_ON_LOSS */
  size_t warmupSteps;           /* the first N calls on a key are dense (SPEC 9); SPARCCL_WARMUP_STEPS */
  double momentum;              /* dgc's momentum, in [0, 1); SPARCCL_MOMENTUM */
  int deviceKernels;            /* sparcclDeviceKernels_t (device comms); SPARCCL_DEVICE_KERNELS */
  int checkSizes;               /* device comms: agree every exchange's size first; SPARCCL_CHECK_SIZES */
  int errorBuffers;             /* device comms: e in 2 buffers or 1; SPARCCL_ERROR_BUFFERS */
  size_t pipelineBytes;         /* host calls: wire bytes per pipelined group, 0 = one block; SPARCCL_PIPELINE_BYTES */
  int exchange;                 /* sparcclExchange_t; SPARCCL_EXCHANGE */
  int ranksPerNode;             /* > 0: ranks r / ranksPerNode form a node; 0: from the comm; SPARCCL_RANKS_PER_NODE */
  double splitSlack;            /* split exchange: pairs per owner C = ceil(splitSlack k / n), >= 1; SPARCCL_SPLIT_SLACK */
} sparcclConfig_t;

#define SPARCCL_CONFIG_MAGIC 0x5a5cc1u
#define SPARCCL_CONFIG_UNDEF_INT (-2147483647 - 1)
#define SPARCCL_CONFIG_UNDEF_LONG (-9223372036854775807LL - 1)
#define SPARCCL_CONFIG_UNDEF_SIZE ((size_t)-1)
#define SPARCCL_CONFIG_UNDEF_SEED (~0ULL) /* so seed 2^64-1 cannot be chosen */
#define SPARCCL_CONFIG_UNDEF_DOUBLE (-1.7976931348623157e308)

#define SPARCCL_CONFIG_INITIALIZER                                                        \
  {                                                                                       \
    sizeof(sparcclConfig_t), SPARCCL_CONFIG_MAGIC, SPARCCL_VERSION_CODE,                  \
        SPARCCL_CONFIG_UNDEF_DOUBLE, SPARCCL_CONFIG_UNDEF_INT, SPARCCL_CONFIG_UNDEF_INT,  \
        SPARCCL_CONFIG_UNDEF_INT, SPARCCL_CONFIG_UNDEF_SIZE, SPARCCL_CONFIG_UNDEF_SEED,   \
        SPARCCL_CONFIG_UNDEF_INT, SPARCCL_CONFIG_UNDEF_INT, SPARCCL_CONFIG_UNDEF_DOUBLE,  \
        SPARCCL_CONFIG_UNDEF_DOUBLE, SPARCCL_CONFIG_UNDEF_DOUBLE,                         \
        SPARCCL_CONFIG_UNDEF_DOUBLE, SPARCCL_CONFIG_UNDEF_LONG,                           \
        SPARCCL_CONFIG_UNDEF_DOUBLE, SPARCCL_CONFIG_UNDEF_INT, SPARCCL_CONFIG_UNDEF_INT,  \
        SPARCCL_CONFIG_UNDEF_SIZE, SPARCCL_CONFIG_UNDEF_DOUBLE, SPARCCL_CONFIG_UNDEF_INT, \
        SPARCCL_CONFIG_UNDEF_INT, SPARCCL_CONFIG_UNDEF_INT, SPARCCL_CONFIG_UNDEF_SIZE,    \
        SPARCCL_CONFIG_UNDEF_INT, SPARCCL_CONFIG_UNDEF_INT, SPARCCL_CONFIG_UNDEF_DOUBLE  \
  }

/* Per-comm counters (SPEC.md section 5). */
typedef struct {
  unsigned long long calls;          /* completed sparcclAllReduce calls */
  unsigned long long layerSets;      /* live keys */
  unsigned long long layersSparse;   /* live layers sent sparse */
  unsigned long long layersDense;    /* live layers sent dense (d < minSparseCount) */
  unsigned long long bytesSent;      /* this rank's wire bytes, summed over calls */
  unsigned long long bytesDense;     /* what the dense allreduce input would have been */
  unsigned long long skippedSteps;   /* layer steps skipped for non-finite values */
  unsigned long long restarts;       /* layer-set restarts, explicit and automatic */
  unsigned long long stateBytes;     /* memory held for e, h, H, w and scratch */
  double compressSeconds;            /* time in selection and packing */
  double exchangeSeconds;            /* time in the allgather */
  double decompressSeconds;          /* time in the state update and the rank-ordered sum */
  unsigned long long refusedCalls;   /* calls refused because the ranks disagreed (SPEC 4) */
  unsigned long long pairsReceived;  /* split exchange: pairs received from other ranks (counts, not padding) */
} sparcclStats_t;

const char* sparcclGetErrorString(sparcclResult_t result);
sparcclResult_t sparcclGetVersion(int* version);
/* The comm's effective configuration (environment and defaults applied). */
sparcclResult_t sparcclCommGetConfig(sparcclComm_t comm, sparcclConfig_t* config);
sparcclResult_t sparcclCommCount(sparcclComm_t comm, int* count);
sparcclResult_t sparcclCommUserRank(sparcclComm_t comm, int* rank);

/* ncclAllReduce's signature and meaning; in place when sendbuff == recvbuff.  State is
 * found by the key (sendbuff, count).  stream: a cudaStream_t, or NULL on a host comm. */
sparcclResult_t sparcclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                 sparcclDataType_t datatype, sparcclRedOp_t op,
                                 sparcclComm_t comm, void* stream);
/* The same with an explicit key, for buffers that move between steps. */
sparcclResult_t sparcclAllReduceTagged(const void* sendbuff, void* recvbuff, size_t count,
                                       sparcclDataType_t datatype, sparcclRedOp_t op,
                                       unsigned long long tag, sparcclComm_t comm, void* stream);

/* Declare that the buffer is nlayers consecutive layers (collective: creates the state and
 * checks that every rank declared the same).  Re-declaring the same layout is a no-op. */
sparcclResult_t sparcclRegisterLayout(sparcclComm_t comm, const void* buff, size_t nlayers,
                                      const size_t* counts);
sparcclResult_t sparcclRegisterLayoutTagged(sparcclComm_t comm, unsigned long long tag,
                                            size_t nlayers, const size_t* counts);
/* Free a key's state (a trainer that frees a buffer releases its key). */
sparcclResult_t sparcclRelease(sparcclComm_t comm, const void* buff, size_t count);
sparcclResult_t sparcclReleaseTagged(sparcclComm_t comm, unsigned long long tag);

/* Importance weights (SPEC.md section 7).  Probe: probe = params - gamma * (w * grad).
 * Update: one solver step from the gradient at the probe.  Both find the layers by the
 * key (grad, count), the key of sparcclAllReduce(grad, ...). */
sparcclResult_t sparcclImportanceProbe(const void* params, const void* grad, void* probe,
                                       size_t count, sparcclDataType_t datatype,
                                       sparcclComm_t comm, void* stream);
sparcclResult_t sparcclImportanceProbeTagged(const void* params, const void* grad, void* probe,
                                             size_t count, sparcclDataType_t datatype,
                                             unsigned long long tag, sparcclComm_t comm,
                                             void* stream);
sparcclResult_t sparcclImportanceUpdate(const void* gradAtProbe, const void* grad, size_t count,
                                        sparcclDataType_t datatype, sparcclComm_t comm,
                                        void* stream);
sparcclResult_t sparcclImportanceUpdateTagged(const void* gradAtProbe, const void* grad,
                                              size_t count, sparcclDataType_t datatype,
                                              unsigned long long tag, sparcclComm_t comm,
                                              void* stream);
/* w <- 1 on every layer of the key (the thesis restarts the solver from TopK each epoch). */
sparcclResult_t sparcclImportanceReset(sparcclComm_t comm, const void* grad, size_t count);
sparcclResult_t sparcclImportanceResetTagged(sparcclComm_t comm, unsigned long long tag);

/* Restarts: e, h, H <- 0 and w <- 1 on every layer of the comm, from the next call. */
sparcclResult_t sparcclRestart(sparcclComm_t comm);
/* The trainer's (validation) loss, for the restart-on-loss policy.  Collective: the
 * library averages it over ranks, and restarts every key when it rose over the lag. */
sparcclResult_t sparcclReportLoss(sparcclComm_t comm, double loss);

/* Multiply e, h and H of every layer by factor (the trainer's loss scale changed). */
sparcclResult_t sparcclScaleState(sparcclComm_t comm, float factor);

sparcclResult_t sparcclCommGetStats(sparcclComm_t comm, sparcclStats_t* stats);

/* All state of the comm to a file and back (collective; each rank its own path).  Load
 * matches layer sets by creation order and layout, so register the layouts first; it
 * applies nothing unless every rank's file is valid. */
sparcclResult_t sparcclSaveState(sparcclComm_t comm, const char* path);
sparcclResult_t sparcclLoadState(sparcclComm_t comm, const char* path);

sparcclResult_t sparcclCommDestroy(sparcclComm_t comm);

/* The phase API (SPEC 10): sparcclAllReduceTagged in two halves around an exchange the
 * caller makes.  Compress writes this rank's block (BlockBytesTagged bytes, the same on
 * every rank; the key must exist: registered or called before) and changes no state; the
 * caller gathers every rank's block in rank order (an allgather of that many bytes, by any
 * means, asynchronously if it likes); Decompress finishes the call (state update,
 * rank-ordered sums, output), bitwise as sparcclAllReduceTagged.  Several keys may be
 * between their halves, each at most once (a second compress is sparcclInvalidUsage);
 * Abandon drops a pending half (after a failed exchange), leaving the state as before the
 * compress.  A decompress whose blocks fail the call check (SPEC 4) writes nothing: on a
 * host comm it returns sparcclInvalidUsage and stays pending; on a device comm (blocks and
 * buffers in device memory, work on `stream`) it cannot wait to know, so the key's half is
 * done and the refusal counts in the stats' refusedCalls.  A one-call sparcclAllReduce on
 * a key between its halves is refused. */
sparcclResult_t sparcclBlockBytesTagged(sparcclComm_t comm, unsigned long long tag, size_t* bytes);
sparcclResult_t sparcclCompressTagged(const void* sendbuff, size_t count, sparcclDataType_t datatype,
                                      unsigned long long tag, sparcclComm_t comm, void* block,
                                      void* stream);
sparcclResult_t sparcclDecompressTagged(const void* blocks, void* recvbuff, size_t count,
                                        sparcclDataType_t datatype, sparcclRedOp_t op,
                                        unsigned long long tag, sparcclComm_t comm, void* stream);
sparcclResult_t sparcclAbandonTagged(sparcclComm_t comm, unsigned long long tag);

/* A host comm whose exchanges are the caller's (SPEC 10), for hosts without MPI: every
 * rank's `bytes` from `send`, gathered in rank order into `recv` (nranks * bytes); 0 on
 * success, and the same return on every rank.  Collective, like every call on the comm.
 * A failing allgather fails the call with sparcclRemoteError and leaves the state as it
 * was.  As on MPI, every exchange first agrees its size (an 8-byte allgather through the
 * callback), so ranks whose calls disagree are refused on every rank before the callback
 * sees blocks of different sizes; the rest is each block's call check (SPEC 4). */
typedef int (*sparcclAllgatherFn_t)(const void* send, void* recv, size_t bytes, void* user);
sparcclResult_t sparcclCommInitCallback(sparcclComm_t* comm, int nranks, int rank,
                                        sparcclAllgatherFn_t allgather, void* user,
                                        const sparcclConfig_t* config);

#ifdef __cplusplus
}
#endif

#endif /* SPARCCL_H_ */
