/* One rank's wire block (SPEC 4): where its sections lie, computed once from the layout and
 * the config, and the accessors every reader and writer of a block uses, host and device.
 * The same struct describes the dense calls' blocks and ring chunks (src/dense.c). */
#ifndef SPARCCL_WIRE_H_
#define SPARCCL_WIRE_H_

#include <stdint.h>
#include <stddef.h>
#include "sparccl_math.h"

/* Byte offsets within a block: indices, values, whole layers' floats, flags, the call check;
 * blockBytes, the block's size (the stride between ranks' blocks). */
typedef struct {
  size_t indices, values, dense, flags, check, blockBytes;
  size_t valueSize; /* bytes of one value: the wire type's */
} sparcclWire_t;

/* The call check that ends every block: a call sequence number (the comm's; a phase-API
 * call's is its key's) and a fingerprint of the call, odd so that a zeroed one never matches. */
typedef struct { uint64_t sequence, fingerprint; } sparcclCallCheck_t;
#define SPARCCL_CALL_CHECK_BYTES 16

SPARCCL_HD size_t sparccl_align16(size_t bytes) { return (bytes + 15) & ~(size_t)15; }

/* Sections in this order, each padded to 16 bytes, then the check. */
SPARCCL_HD sparcclWire_t sparccl_wire_layout(size_t indexCount, size_t valueCount, size_t valueSize,
                                             size_t denseCount, size_t nflags) {
  sparcclWire_t w;
  w.valueSize = valueSize;
  w.indices = 0;
  w.values = sparccl_align16(indexCount * sizeof(uint32_t));
  w.dense = w.values + sparccl_align16(valueCount * valueSize);
  w.flags = w.dense + sparccl_align16(denseCount * sizeof(float));
  w.check = w.flags + sparccl_align16(nflags * sizeof(uint32_t));
  w.blockBytes = w.check + SPARCCL_CALL_CHECK_BYTES;
  return w;
}

/* A block of floats only (the dense calls): `floats` of them, the flags, the check. */
SPARCCL_HD sparcclWire_t sparccl_wire_floats(size_t floats, size_t nflags) {
  return sparccl_wire_layout(0, 0, sizeof(float), floats, nflags);
}

SPARCCL_HD size_t sparccl_wire_flag_bytes(const sparcclWire_t* w) { return w->check - w->flags; }

/* Rank r's block of nranks laid end to end. */
SPARCCL_HD uint8_t* sparccl_wire_block(const sparcclWire_t* w, const uint8_t* blocks, size_t r) {
  return (uint8_t*)blocks + r * w->blockBytes;
}
SPARCCL_HD uint32_t* sparccl_wire_indices(const sparcclWire_t* w, const uint8_t* block) {
  return (uint32_t*)(block + w->indices);
}
/* The values of a layer whose first wire position is valuePos. */
SPARCCL_HD uint8_t* sparccl_wire_values(const sparcclWire_t* w, const uint8_t* block, size_t valuePos) {
  return (uint8_t*)block + w->values + valuePos * w->valueSize;
}
SPARCCL_HD float* sparccl_wire_dense(const sparcclWire_t* w, const uint8_t* block) {
  return (float*)(block + w->dense);
}
SPARCCL_HD uint32_t* sparccl_wire_flags(const sparcclWire_t* w, const uint8_t* block) {
  return (uint32_t*)(block + w->flags);
}
SPARCCL_HD sparcclCallCheck_t* sparccl_wire_check(const sparcclWire_t* w, const uint8_t* block) {
  return (sparcclCallCheck_t*)(block + w->check);
}

/* A layer's selected indices: on the wire at indexPos, or (shared sets, SPEC 3) only in
 * `shared`, at valuePos. */
SPARCCL_HD uint32_t* sparccl_wire_layer_indices(const sparcclWire_t* w, const uint8_t* block,
                                                int sharedSet, size_t indexPos, uint32_t* shared,
                                                size_t valuePos) {
  return sharedSet ? shared + valuePos : sparccl_wire_indices(w, block) + indexPos;
}

/* The skip rule (SPEC 2): a flagged layer whose x held a NaN or Inf on any rank. */
SPARCCL_HD uint32_t sparccl_wire_any_flag(const sparcclWire_t* w, const uint8_t* blocks,
                                          uint32_t nranks, size_t flagPos) {
  uint32_t skip = 0, r;
  for (r = 0; r < nranks; r++) skip |= sparccl_wire_flags(w, sparccl_wire_block(w, blocks, r))[flagPos];
  return skip;
}

#endif /* SPARCCL_WIRE_H_ */
