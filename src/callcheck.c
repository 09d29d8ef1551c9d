/* Never trust the wire (SPEC 2, 4): every block ends with a call check, verified for all n
 * blocks before any received index is read, and every received index is bounds-checked, so
 * that ranks whose calls disagree (a live key against a new one, sum against avg, another
 * dtype on the same tag) get sparcclInvalidUsage instead of a write outside a buffer. */
#include <stdlib.h>
#include <string.h>
#include "core.h"

sparcclCallCheck_t sparcclCallCheck(sparcclComm_t comm, const sparcclLayerSet_t* set, int dtype,
                                    int op, int kind) {
  sparcclCallCheck_t check;
  /* Pointer keys differ between processes; the set's creation number does not. */
  uint64_t fields[6];
  fields[0] = set->fingerprint;
  fields[1] = set->serial;
  fields[2] = set->tagged ? set->key : 0;
  fields[3] = (uint64_t)dtype;
  fields[4] = (uint64_t)op;
  fields[5] = (uint64_t)kind;
  check.sequence = (kind == SPARCCL_CALL_PHASE || kind == SPARCCL_CALL_PHASE_DENSE)
                       ? set->phaseCalls : comm->callSequence;
  check.fingerprint = sparcclHash64(SPARCCL_HASH_SEED, fields, sizeof(fields)) | 1u;
  return check;
}

void sparcclClearChecks(sparcclComm_t comm, const sparcclGroup_t* group, uint8_t* blocks) {
  const sparcclWire_t* w = &group->wire;
  int r;
  for (r = 0; r < comm->nranks; r++)
    memset(sparccl_wire_check(w, sparccl_wire_block(w, blocks, (size_t)r)), 0,
           SPARCCL_CALL_CHECK_BYTES);
}

int sparcclIndicesValid(const uint32_t* indices, size_t k, size_t low, size_t high) {
  size_t t;
  uint32_t previous = 0;
  for (t = 0; t < k; t++) {
    if (indices[t] < low || indices[t] >= high || (t > 0 && indices[t] <= previous)) return 0;
    previous = indices[t];
  }
  return 1;
}

sparcclResult_t sparcclVerifyChecks(sparcclComm_t comm, const uint8_t* blocks,
                                    const sparcclWire_t* wire, sparcclCallCheck_t expected,
                                    const char* caller) {
  return sparcclVerifyChecksOf(comm, comm->nranks, blocks, wire, expected, "", caller);
}

sparcclResult_t sparcclVerifyChecksOf(sparcclComm_t comm, int nblocks, const uint8_t* blocks,
                                      const sparcclWire_t* wire, sparcclCallCheck_t expected,
                                      const char* over, const char* caller) {
  int r;
  for (r = 0; r < nblocks; r++) {
    sparcclCallCheck_t got;
    memcpy(&got, sparccl_wire_check(wire, sparccl_wire_block(wire, blocks, (size_t)r)), sizeof(got));
    if (got.sequence != expected.sequence || got.fingerprint != expected.fingerprint) {
      WARN("%s: %srank %d's block is not of this call: rank %d made call %llu with fingerprint "
           "%016llx, rank %d call %llu with fingerprint %016llx (a different key, layout, "
           "dtype, op, wire type or call kind, or a call missed); refused, nothing written",
           caller, over, r, comm->rank, (unsigned long long)expected.sequence,
           (unsigned long long)expected.fingerprint, r, (unsigned long long)got.sequence,
           (unsigned long long)got.fingerprint);
      return sparcclInvalidUsage;
    }
  }
  return sparcclSuccess;
}

sparcclResult_t sparcclVerifyBlocks(sparcclComm_t comm, const sparcclGroup_t* group,
                                    const uint8_t* blocks, sparcclCallCheck_t expected,
                                    const char* caller) {
  int r;
  size_t i;
  SPARCCLCHECK(sparcclVerifyChecks(comm, blocks, &group->wire, expected, caller));
  for (r = 0; r < comm->nranks; r++) {
    const uint8_t* block = sparccl_wire_block(&group->wire, blocks, (size_t)r);
    for (i = 0; i < group->nlayers; i++) {
      const sparcclLayer_t* l = &group->layers[i];
      if (!l->sparse || l->sharedSet) continue;
      if (!sparcclIndicesValid(sparcclLayerIndices(comm, group, l, block), l->k, 0, l->count)) {
        WARN("%s: rank %d sent an index outside layer %u (%zu elements) or out of order; "
             "refused, nothing written", caller, r, l->id, l->count);
        return sparcclInvalidUsage;
      }
    }
  }
  return sparcclSuccess;
}

sparcclResult_t sparcclTransportAgree(sparcclTransport_t* transport, sparcclResult_t mine,
                                     sparcclResult_t remote, const char* caller,
                                     const char* what) {
  int32_t local = (int32_t)mine, few[256];
  int nranks = transport->nranks;
  int32_t* all = nranks <= 256 ? few : (int32_t*)malloc(sizeof(int32_t) * (size_t)nranks);
  sparcclResult_t res;
  int r;
  if (all == NULL) {
    WARN("%s: out of memory", caller);
    return sparcclSystemError;
  }
  res = transport->allgather(transport, &local, all, sizeof(local));
  if (res != sparcclSuccess) {
    WARN("%s: the exchange of every rank's status (%s) failed", caller, what);
  } else {
    res = mine;
    for (r = 0; r < nranks && res == sparcclSuccess; r++)
      if (all[r] != sparcclSuccess) {
        WARN("%s: rank %d could not %s; refused on every rank", caller, r, what);
        res = remote;
      }
  }
  if (all != few) free(all);
  return res;
}

sparcclResult_t sparcclAgreeStatus(sparcclComm_t comm, sparcclResult_t mine,
                                   sparcclResult_t remote, const char* caller, const char* what) {
  return sparcclTransportAgree(comm->transport, mine, remote, caller, what);
}

sparcclResult_t sparcclAgreeSize(int nranks, size_t bytes, int alltoall, sparcclRawGather_t gather,
                                 void* ctx) {
  /* the collective is part of what is agreed: an alltoall never meets an allgather */
  uint64_t mine = (uint64_t)bytes | ((uint64_t)(alltoall != 0) << 63), few[64], *all;
  sparcclResult_t res;
  int r;
  all = nranks <= 64 ? few : (uint64_t*)malloc(sizeof(uint64_t) * (size_t)nranks);
  if (all == NULL) return sparcclSystemError;
  res = gather(ctx, &mine, all, sizeof(mine));
  for (r = 0; res == sparcclSuccess && r < nranks; r++)
    if (all[r] != mine) {
      WARN("exchange refused: rank %d exchanges %llu bytes%s, this rank %llu%s (the ranks' calls "
           "disagree: another key, layout or call)", r,
           (unsigned long long)(all[r] & ~(1ull << 63)), all[r] >> 63 ? " by alltoall" : "",
           (unsigned long long)bytes, alltoall ? " by alltoall" : "");
      res = sparcclInvalidUsage;
    }
  if (all != few) free(all);
  return res;
}
