/* SPEC 4's call check on the device (the host's is src/callcheck.c): the check written and
 * the receive slots zeroed before the exchange, every block's check and received index
 * verified after it; a refused call writes no output and changes no state, and counts in
 * refusedCalls (docs/DEVICE.md, "The call check on the device"). */
#include "device_set.cuh"

/* One block, before the compress: the check of this call (callSequenceOf: the comm's
 * sequence, kept in device memory so that graph replays count, or a phase call's key's
 * call count) in each of `copies` send chunks (a dense call's ring sends one a rank), and
 * zeroed receive slots. */
__global__ void callCheckWriteKernel(KernelArgs a, uint32_t copies) {
  for (uint32_t q = threadIdx.x; q < copies; q += blockDim.x) {
    sparcclCallCheck_t* mine = sparccl_wire_check(&a.wire, sparccl_wire_block(&a.wire, a.sendBlock, q));
    mine->sequence = callSequenceOf(a);
    mine->fingerprint = a.checkFingerprint;
  }
  if (threadIdx.x == 0) a.counters->callRefused = 0;
  for (uint32_t r = threadIdx.x; a.recvBlocks != NULL && r < a.nranks; r += blockDim.x) {
    sparcclCallCheck_t* slot = sparccl_wire_check(&a.wire, sparccl_wire_block(&a.wire, a.recvBlocks, r));
    slot->sequence = 0;
    slot->fingerprint = 0;
  }
}

/* One thread per rank's check and per wire position: reads only at positions this rank's
 * layout gives, so whatever a peer sent is read safely; nothing is written but the flag. */
__global__ void callCheckVerifyKernel(KernelArgs a) {
  const size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  unsigned bad = 0;
  if (p < a.nranks) {
    const sparcclCallCheck_t* check = sparccl_wire_check(&a.wire, sparccl_wire_block(&a.wire, a.recvBlocks, p));
    bad |= check->sequence != callSequenceOf(a) || check->fingerprint != a.checkFingerprint;
  }
  if (p < a.valueCount) {
    const DeviceLayer L = a.layers[layerOfPosition(a, p)];
    const uint32_t t = (uint32_t)(p - L.valuePos);
    for (uint32_t r = 0; r < a.nranks && !L.sharedSet; r++) {
      const uint32_t* indices =
          sparccl_wire_indices(&a.wire, sparccl_wire_block(&a.wire, a.recvBlocks, r)) + L.indexPos;
      bad |= indices[t] >= L.count || (t > 0 && indices[t] <= indices[t - 1]);
    }
  }
  if (bad) atomicOr(&a.counters->callRefused, 1u);
}

static unsigned gridOf(size_t n) { return (unsigned)((n + SPARCCL_THREADS - 1) / SPARCCL_THREADS); }

cudaError_t sparcclLaunchCallCheckWrite(const KernelArgs& a, cudaStream_t stream, uint32_t copies) {
  SPARCCL_LAUNCH(1, 32, stream, callCheckWriteKernel)(a, copies);
  return cudaGetLastError();
}

cudaError_t sparcclLaunchCallCheckVerify(const KernelArgs& a, cudaStream_t stream) {
  const size_t n = a.valueCount > a.nranks ? a.valueCount : a.nranks;
  SPARCCL_LAUNCH(gridOf(n), SPARCCL_THREADS, stream, callCheckVerifyKernel)(a);
  return cudaGetLastError();
}
