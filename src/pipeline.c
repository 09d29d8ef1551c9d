/* The host call pipelined over groups of consecutive layers (SPEC 4; docs/ARCHITECTURE.md,
 * "The pipelined call"): compress group j + 1 while group j travels, verify each group as it
 * arrives, and write state and outputs only once every group of the call has passed. */
#include <stdlib.h>
#include <string.h>
#include "core.h"

/* ------------------------------------------------------------ groups (set creation) */

/* What a run of layers puts in each section of a block. */
typedef struct { size_t indices, values, dense, sparse, denseFlags; } GroupCounts;

static void countLayer(GroupCounts* n, const sparcclLayer_t* l) {
  if (l->sparse) {
    if (!l->sharedSet) n->indices += l->k;
    n->values += l->k;
    n->sparse++;
  } else {
    n->dense += l->count;
    if (l->flagged) n->denseFlags++;
  }
}

static sparcclWire_t countsWire(const sparcclConfig_t* c, const GroupCounts* n) {
  return sparccl_wire_layout(n->indices, n->values, sparccl_dtype_size(c->wireType), n->dense,
                             n->sparse + n->denseFlags);
}

/* The group that starts at layer `first`, after the layers counted in *before (which it then
 * joins): the longest run whose block stays within pipelineBytes, one layer at least. */
static sparcclGroup_t groupAt(const sparcclConfig_t* c, sparcclLayerSet_t* set, size_t first,
                              GroupCounts* before) {
  sparcclGroup_t g;
  GroupCounts n = {0, 0, 0, 0, 0};
  size_t i;
  memset(&g, 0, sizeof(g));
  for (i = first; i < set->nlayers; i++) {
    GroupCounts grown = n;
    countLayer(&grown, &set->layers[i]);
    if (i > first && countsWire(c, &grown).blockBytes > c->pipelineBytes) break;
    n = grown;
  }
  g.layers = &set->layers[first];
  g.nlayers = i - first;
  g.indexBase = before->indices;
  g.valueBase = before->values;
  g.denseBase = before->dense;
  g.sparseFlagBase = before->sparse;
  g.denseFlagBase = set->nsparse + before->denseFlags; /* dgc's dense flags follow the sparse */
  g.nsparse = n.sparse;
  g.wire = countsWire(c, &n);
  before->indices += n.indices; before->values += n.values; before->dense += n.dense;
  before->sparse += n.sparse; before->denseFlags += n.denseFlags;
  return g;
}

/* The whole set as one group, and its pipeline groups where pipelineBytes splits it (two
 * groups or more; otherwise ngroups = 1 and the call is today's one block). */
sparcclResult_t sparcclLayOutGroups(const sparcclConfig_t* c, sparcclLayerSet_t* set) {
  GroupCounts before = {0, 0, 0, 0, 0};
  size_t first, n = 0, offset = 0;
  set->whole = groupAt(c, set, 0, &before);
  set->whole.nlayers = set->nlayers;
  set->whole.nsparse = set->nsparse;
  set->whole.wire = set->wire;
  set->ngroups = 1;
  if (c->pipelineBytes == 0 || set->wire.blockBytes <= c->pipelineBytes) return sparcclSuccess;
  memset(&before, 0, sizeof(before));
  for (first = 0; first < set->nlayers; n++) first += groupAt(c, set, first, &before).nlayers;
  if (n < 2) return sparcclSuccess;
  set->groups = (sparcclGroup_t*)malloc(n * sizeof(sparcclGroup_t));
  if (set->groups == NULL) return sparcclSystemError;
  memset(&before, 0, sizeof(before));
  for (first = 0, n = 0; first < set->nlayers; n++) {
    set->groups[n] = groupAt(c, set, first, &before);
    set->groups[n].sendOffset = offset;
    offset += set->groups[n].wire.blockBytes;
    first += set->groups[n].nlayers;
  }
  set->ngroups = n;
  set->pipelineBytes = offset;
  return sparcclSuccess;
}

/* ------------------------------------------------------------ the pipelined call */

typedef struct {
  sparcclComm_t comm;
  sparcclLayerSet_t* set;
  const void* send;
  int dtype;
  sparcclCallCheck_t check; /* the call's, before the group index is folded in */
  const char* caller;
  sparcclResult_t verdict;  /* the first refusal; later groups then travel poisoned */
  sparcclRequest_t requests[2];
  double compressSeconds, exchangeSeconds, verifySeconds;
} Pipeline;

/* Group j's check: the call's, with j and the number of groups folded in, odd. */
static sparcclCallCheck_t groupCheck(sparcclCallCheck_t check, size_t j, size_t ngroups) {
  uint64_t at[2];
  at[0] = (uint64_t)j;
  at[1] = (uint64_t)ngroups;
  check.fingerprint = sparcclHash64(check.fingerprint, at, sizeof(at)) | 1u;
  return check;
}

static uint8_t* groupSend(const Pipeline* p, size_t j) {
  return p->comm->sendBlock + p->set->groups[j].sendOffset;
}
static uint8_t* groupRecv(const Pipeline* p, size_t j) {
  return p->comm->recvBlocks + (size_t)p->comm->nranks * p->set->groups[j].sendOffset;
}

/* Every rank's groups before any data moves (SPEC 4's size agreement, once per call): the
 * total bytes, the number of groups and a hash of their sizes, 24 bytes (no block's size, a
 * multiple of 16); a rank whose groups differ is refused on every rank. */
static sparcclResult_t agreeGroups(const Pipeline* p) {
  const sparcclLayerSet_t* set = p->set;
  uint64_t mine[3], *all = (uint64_t*)p->comm->recvBlocks; /* free until group 0 travels */
  size_t j;
  int r;
  sparcclResult_t res;
  mine[0] = (uint64_t)set->pipelineBytes;
  mine[1] = (uint64_t)set->ngroups;
  mine[2] = SPARCCL_HASH_SEED;
  for (j = 0; j < set->ngroups; j++)
    mine[2] = sparcclHash64(mine[2], &set->groups[j].wire.blockBytes, sizeof(size_t));
  res = p->comm->transport->allgather(p->comm->transport, mine, all, sizeof(mine));
  for (r = 0; res == sparcclSuccess && r < p->comm->nranks; r++)
    if (memcmp(all + 3 * r, mine, sizeof(mine)) != 0) {
      WARN("%s: rank %d pipelines %llu bytes in %llu groups, this rank %llu bytes in %llu (another "
           "key, layout or pipelineBytes); refused on every rank, nothing written", p->caller, r,
           (unsigned long long)all[3 * r], (unsigned long long)all[3 * r + 1],
           (unsigned long long)mine[0], (unsigned long long)mine[1]);
      res = sparcclInvalidUsage;
    }
  return res;
}

/* Group j's block, layer by layer, letting group j - 1's exchange progress in between. */
static sparcclResult_t compressGroup(Pipeline* p, size_t j) {
  const sparcclGroup_t* g = &p->set->groups[j];
  sparcclTransport_t* t = p->comm->transport;
  size_t i;
  int poke = j > 0 && t->iallgather != NULL && t->progress != NULL;
  sparcclBeginBlock(g, groupCheck(p->check, j, p->set->ngroups), groupSend(p, j));
  for (i = 0; i < g->nlayers; i++) {
    sparcclCompressGroupLayer(p->comm, g, i, p->send, p->dtype, groupSend(p, j));
    if (poke) SPARCCLCHECK(t->progress(t, &p->requests[(j - 1) % 2]));
  }
  return sparcclSuccess;
}

/* Compress group j into its block (a zeroed block once the call is refused, so that every
 * rank refuses it too) and start its exchange; a transport without iallgather sends it now. */
static sparcclResult_t startGroup(Pipeline* p, size_t j) {
  const sparcclGroup_t* g = &p->set->groups[j];
  sparcclTransport_t* t = p->comm->transport;
  double t0 = sparcclSeconds(), t1;
  sparcclResult_t res = sparcclSuccess;
  if (p->verdict == sparcclSuccess)
    res = compressGroup(p, j);
  else
    memset(groupSend(p, j), 0, g->wire.blockBytes);
  if (res != sparcclSuccess) return res;
  sparcclClearChecks(p->comm, g, groupRecv(p, j));
  t1 = sparcclSeconds();
  if (t->iallgather != NULL)
    res = t->iallgather(t, groupSend(p, j), groupRecv(p, j), g->wire.blockBytes, &p->requests[j % 2]);
  else
    res = t->allgather(t, groupSend(p, j), groupRecv(p, j), g->wire.blockBytes);
  p->compressSeconds += t1 - t0;
  p->exchangeSeconds += sparcclSeconds() - t1;
  return res;
}

/* Wait for group j, then verify its n checks and its indices (nothing is written). */
static sparcclResult_t finishGroup(Pipeline* p, size_t j) {
  sparcclTransport_t* t = p->comm->transport;
  double t0 = sparcclSeconds(), t1;
  sparcclResult_t res = t->iallgather != NULL ? t->wait(t, &p->requests[j % 2]) : sparcclSuccess;
  t1 = sparcclSeconds();
  p->exchangeSeconds += t1 - t0;
  if (res != sparcclSuccess) return res;
  if (p->verdict == sparcclSuccess)
    p->verdict = sparcclVerifyBlocks(p->comm, &p->set->groups[j], groupRecv(p, j),
                                     groupCheck(p->check, j, p->set->ngroups), p->caller);
  p->verifySeconds += sparcclSeconds() - t1;
  return sparcclSuccess;
}

/* Every group started and waited for, group j + 1 compressed while j travels; a transport
 * failure returns at once, with nothing left in flight. */
static sparcclResult_t runGroups(Pipeline* p) {
  size_t j, ngroups = p->set->ngroups;
  sparcclResult_t started, waited;
  for (j = 0; j < ngroups; j++) {
    started = startGroup(p, j);
    waited = j > 0 ? finishGroup(p, j - 1) : sparcclSuccess;
    if (started != sparcclSuccess) return started;
    if (waited != sparcclSuccess) {
      (void)finishGroup(p, j);
      return waited;
    }
  }
  return finishGroup(p, ngroups - 1);
}

sparcclResult_t sparcclPipelinedAllReduce(sparcclComm_t comm, sparcclLayerSet_t* set,
                                          const void* send, void* recv, int dtype, int op,
                                          const char* caller) {
  Pipeline p;
  double t0 = sparcclSeconds(), t1;
  sparcclResult_t res;
  memset(&p, 0, sizeof(p));
  p.comm = comm; p.set = set; p.send = send; p.dtype = dtype; p.caller = caller;
  p.check = sparcclCallCheck(comm, set, dtype, op, SPARCCL_CALL_SPARSE);
  res = agreeGroups(&p);
  p.exchangeSeconds = sparcclSeconds() - t0;
  if (res == sparcclSuccess) res = runGroups(&p);
  if (res == sparcclSuccess) res = p.verdict;
  if (res != sparcclSuccess) {
    if (res == sparcclInvalidUsage) comm->stats.refusedCalls++;
    WARN("%s: the pipelined exchange of %zu bytes in %zu groups failed or was refused; state "
         "unchanged, nothing written", caller, set->pipelineBytes, set->ngroups);
    return res;
  }
  t1 = sparcclSeconds();
  sparcclApplyCall(comm, set, set->groups, set->ngroups, send, recv, dtype, op, comm->sendBlock,
                   comm->recvBlocks, set->pipelineBytes, caller);
  comm->callSequence++;
  comm->stats.compressSeconds += p.compressSeconds;
  comm->stats.exchangeSeconds += p.exchangeSeconds;
  comm->stats.decompressSeconds += p.verifySeconds + (sparcclSeconds() - t1);
  return sparcclSuccess;
}
