"""sparccl as a PyTorch DDP communication hook.

Each gradient bucket DDP hands the hook (bucket.buffer(), a flat CUDA tensor) is averaged
with sparcclAllReduceTagged on a sparccl device comm instead of a dense allreduce: every
parameter of the bucket is one layer, sparsified to SPARCCL_DENSITY (1% by default) with
error feedback kept on the GPU, and the sparse pairs of all ranks travel in one
ncclAllGather.  The three lines a training script adds (after init_process_group and
torch.cuda.set_device, before the first step):

    from sparccl_hook import SparcclOptions, SparcclState, sparccl_hook
    state = SparcclState(options=SparcclOptions(density=0.01))
    ddp_model.register_comm_hook(state, sparccl_hook)

The library is build/lib/libsparccl_cuda.so of this repository (`make cuda`), or the path in
$SPARCCL_LIB.  Options left at None come from the SPARCCL_* environment (README.md).

How it works
  - SparcclState bootstraps one sparccl comm per process group: rank 0 of the group calls
    sparcclGetUniqueId, the 128-byte ncclUniqueId goes to every rank with
    torch.distributed.broadcast, and every rank calls sparcclCommInitRank (the sparccl comm
    owns its own NCCL communicator, beside the process group's).
  - Bucket i is key (tag) tag_base + i.  At its first call the hook declares the bucket's
    layers from bucket.parameters() with sparcclRegisterLayoutTagged (collective, and it
    checks that every rank declared the same layout).  DDP rebuilds its buckets after the
    first iteration (and whenever it re-buckets): when bucket i's parameter sizes change,
    the hook releases the old key (sparcclReleaseTagged), says so in the log, and
    registers the new layout under the same tag.
  - The call is enqueued on torch.cuda.current_stream(); the hook returns a completed
    torch.futures.Future holding the (averaged, in place) buffer, with the stream's work
    recorded so that DDP's later use of it waits for the kernels.
  - Buckets sparccl cannot take (a dtype other than float32/float16/bfloat16, a CPU
    buffer) and calls sparccl refuses on every rank alike (an argument or usage error,
    e.g. ranks that declared different layouts) fall back to the plain dense average with
    a warning; any other failure (CUDA, NCCL, memory) raises, as a dense allreduce failure
    would (one rank going dense while another runs sparccl's allgather would hang).
"""

import logging
import os
import socket
import threading

import torch
import torch.distributed as dist

from sparccl_ctypes import (AVG, BFLOAT16, FLOAT16, FLOAT32, INVALID_ARGUMENT, INVALID_USAGE,
                            NOT_SUPPORTED, NCCL_UNIQUE_ID_BYTES, SparcclError, SparcclOptions,
                            load_library)

__all__ = ["SparcclOptions", "SparcclState", "sparccl_hook"]

log = logging.getLogger("sparccl")

_DTYPES = {torch.float32: FLOAT32, torch.float16: FLOAT16, torch.bfloat16: BFLOAT16}
_REFUSALS = (INVALID_ARGUMENT, INVALID_USAGE, NOT_SUPPORTED)


def _setup_logging():
    """SPARCCL_DEBUG=INFO (or TRACE) shows the hook's INFO lines on stderr, in the C format."""
    level = os.environ.get("SPARCCL_DEBUG", "").upper()
    if level in ("INFO", "TRACE") and not log.handlers:
        handler = logging.StreamHandler()

        class _Format(logging.Formatter):
            def format(self, record):
                return "%s:%d:%d SPARCCL %s hook: %s" % (
                    socket.gethostname(), os.getpid(), threading.get_native_id()
                    if hasattr(threading, "get_native_id") else 0,
                    "WARN" if record.levelno == logging.WARNING else record.levelname,
                    record.getMessage())

        handler.setFormatter(_Format())
        log.addHandler(handler)
        log.setLevel(logging.INFO)


class SparcclState:
    """The hook's state: one sparccl comm for a process group and the layout of each bucket.

    Create it on every rank of the group (it is collective), after the process group and
    the CUDA device are set, and pass it to DDP.register_comm_hook with sparccl_hook.
    """

    def __init__(self, process_group=None, options=None, lib_path=None, tag_base=0):
        _setup_logging()
        if not dist.is_initialized():
            raise RuntimeError("SparcclState: call torch.distributed.init_process_group first")
        self.group = process_group if process_group is not None else dist.group.WORLD
        self.world = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.lib = load_library(lib_path)
        self.options = options if options is not None else SparcclOptions()
        self.tag_base = int(tag_base)
        self.layouts = {}  # bucket index -> tuple of layer sizes
        self.refused = set()  # bucket indices whose refusal was logged
        self.comm = None

        # Bootstrap: rank 0's ncclUniqueId to every rank, over the process group itself.
        backend = str(dist.get_backend(self.group))
        where = self.device if "nccl" in backend else torch.device("cpu")
        uid = torch.zeros(NCCL_UNIQUE_ID_BYTES, dtype=torch.uint8, device=where)
        if self.rank == 0:
            uid.copy_(torch.tensor(list(self.lib.get_unique_id()), dtype=torch.uint8))
        dist.broadcast(uid, src=self._global_rank(0), group=self.group)
        uid_bytes = bytes(uid.cpu().tolist())
        self.comm = self.lib.comm_init_rank(self.world, uid_bytes, self.rank,
                                            self.options.to_struct())
        log.info("sparccl comm 0x%x for process group rank %d of %d on %s (library %s)",
                 self.comm, self.rank, self.world, self.device, self.lib.path)

    def _global_rank(self, group_rank):
        if self.group is dist.group.WORLD:
            return group_rank
        if hasattr(dist, "get_global_rank"):
            return dist.get_global_rank(self.group, group_rank)
        return dist.distributed_c10d._get_global_rank(self.group, group_rank)

    def stats(self):
        """sparcclCommGetStats as a dict (synchronises with the GPU)."""
        s = self.lib.stats(self.comm)
        return {name: getattr(s, name) for name, _ in s._fields_}

    def close(self):
        """Destroy the sparccl comm (and its NCCL communicator).  Idempotent."""
        if self.comm is not None:
            self.lib.comm_destroy(self.comm)
            self.comm = None

    # ---------------------------------------------------------------- internals
    def _dense(self, buf):
        """The default DDP hook: average by an allreduce of buf / world."""
        buf.div_(self.world)
        fut = dist.all_reduce(buf, group=self.group, async_op=True).get_future()
        return fut.then(lambda f: f.value()[0])

    def _declare(self, index, sizes):
        """Bucket index has these layer sizes: register them, re-registering on a change."""
        tag = self.tag_base + index
        old = self.layouts.get(index)
        if old == sizes:
            return tag
        if old is not None:
            self.lib.release_tagged(self.comm, tag)
            del self.layouts[index]
            log.info("bucket %d changed its layout (DDP rebuilt its buckets): %d layers / %d "
                     "elements -> %d layers / %d elements; released tag %d and registered "
                     "the new layout", index, len(old), sum(old), len(sizes), sum(sizes), tag)
        self.lib.register_layout_tagged(self.comm, tag, sizes)
        self.layouts[index] = sizes
        if old is None:
            log.info("bucket %d: tag %d, %d layers, %d elements", index, tag, len(sizes),
                     sum(sizes))
        return tag


def _layer_sizes(bucket, numel):
    """One layer per parameter of the bucket, in bucket order (empty ones left out)."""
    try:
        sizes = tuple(int(p.numel()) for p in bucket.parameters())
    except AttributeError:  # very old torch: GradBucket.get_per_parameter_tensors()
        sizes = tuple(int(t.numel()) for t in bucket.gradients())
    sizes = tuple(n for n in sizes if n > 0)
    if sum(sizes) != numel:
        log.warning("bucket %d: parameter sizes sum to %d, the buffer holds %d: one layer",
                    bucket.index(), sum(sizes), numel)
        sizes = (numel,)
    return sizes


def _completed(buf):
    try:
        fut = torch.futures.Future(devices=[buf.device])
    except TypeError:  # torch without CUDA-aware futures
        fut = torch.futures.Future()
    fut.set_result(buf)
    return fut


def sparccl_hook(state, bucket):
    """DDP communication hook: bucket.buffer() <- the sparccl average over the group."""
    buf = bucket.buffer()
    dtype = _DTYPES.get(buf.dtype)
    if dtype is None or not buf.is_cuda or buf.numel() == 0 or state.comm is None:
        return state._dense(buf)
    index = bucket.index()
    try:
        tag = state._declare(index, _layer_sizes(bucket, buf.numel()))
        stream = torch.cuda.current_stream(buf.device).cuda_stream
        state.lib.all_reduce_tagged(buf.data_ptr(), buf.data_ptr(), buf.numel(), dtype, AVG,
                                    tag, state.comm, stream)
    except SparcclError as e:
        if e.code not in _REFUSALS:
            raise
        # Refused on every rank alike (SPEC 2): all of them take the dense path together.
        if index not in state.refused:
            state.refused.add(index)
            log.warning("bucket %d: %s; this bucket is averaged dense", index, e)
        return state._dense(buf)
    return _completed(buf)
