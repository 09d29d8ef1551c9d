"""sparccl as a PyTorch DDP communication hook, on CPU (gloo, any backend) and CUDA (nccl).

The three lines a training script adds (after init_process_group, and on GPUs after
torch.cuda.set_device, before the first step):

    from sparccl import SparcclOptions, SparcclState, sparccl_hook
    state = SparcclState(options=SparcclOptions(density=0.01))
    ddp_model.register_comm_hook(state, sparccl_hook)

How a bucket travels (SPEC 10, the phase API):
  - Every parameter is its own sparccl key (tag tag_base + i, i in the order parameters
    first appear in the buckets), one layer each.  Keys do not follow DDP's buckets, so
    DDP's rebuild of its buckets after the first step, or any re-bucketing, leaves every
    parameter's error feedback where it is; and a checkpoint restores the same keys
    whatever the buckets of the resumed run.
  - In the hook: a parameter seen for the first time gets its key registered
    (sparcclRegisterLayoutTagged, collective); then every parameter of the bucket is
    compressed (sparcclCompressTagged, its block size asked anew each call:
    sparcclBlockBytesTagged, since warm-up calls are dense and bigger) into one uint8
    block, and that block goes to every rank by torch.distributed's own asynchronous
    all_gather_into_tensor on the process group.  The hook returns at once, so the
    exchange overlaps the rest of the backward pass as DDP's default hook does.
  - In the future's callback: sparcclDecompressTagged of each parameter from the gathered
    blocks, in place into the bucket's buffer; the future's value is the buffer.
  - Collective order: every collective (layout registration, the block exchange, the
    dense fallback, a deferred state load) is issued by the hook itself, which DDP calls
    per bucket in the same order on every rank.  The callbacks issue none: they may run
    in any order, on any thread.  Library calls are serialised by a lock (a sparccl comm
    runs one call at a time), and before a registration (a collective inside the library)
    the hook waits for the buckets already in flight, so that no callback waits on the
    lock while the registration's exchange waits for a worker.
  - The comm: on a CPU process group a callback comm (sparcclCommInitCallback, from
    libsparccl.so) whose exchanges, used for registration and save/load agreement, are
    synchronous all_gathers on the group.  With the nccl backend and CUDA a device comm
    (sparcclCommInitRank, rank 0's ncclUniqueId broadcast over the group, from
    libsparccl_cuda.so); compress and decompress run on the current stream, the exchange
    is torch's NCCL all_gather.  The device path is written but has not run on a GPU.
  - Fallbacks: a bucket sparccl cannot take (float64, a CUDA bucket on a host comm or the
    reverse) and a call sparccl refuses in the hook (an argument or usage error, e.g. ranks
    that declared different layouts: refused on every rank alike) are averaged dense by
    the process group's all_reduce, with one warning.  A decompress refused by the call
    check (ranks whose calls disagreed, SPEC 4) cannot fall back without a collective in a
    callback: its keys are abandoned (state as before) and the future fails, on every rank
    alike, so DDP raises.  Other failures raise.
  - Importance weights (SPEC 7): SparcclState.importance_step(model, closure) runs the
    thesis' solve (reset w = 1, then probe / gradient at the probe / update per solver
    step) on every key with this rank's own gradients; each gradient is a backward through
    DDP in which the hook only records its buckets (and registers new keys, in bucket
    order) and exchanges nothing.
  - Checkpoints: state_dict() / load_state_dict() (and pickling) carry the error-feedback
    state (sparcclSaveState's file) and the keys; both are collective (every rank, its own
    dict).  A load is applied at the first hook call of the resumed run, before anything
    is compressed, once the saved keys are registered in their saved order.
"""

import ctypes
import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import threading

import torch
import torch.distributed as dist

from .bindings import (ALLGATHER_FN, AVG, BFLOAT16, FLOAT16, FLOAT32, INVALID_ARGUMENT,
                       INVALID_USAGE, NCCL_UNIQUE_ID_BYTES, NOT_SUPPORTED, SparcclError,
                       SparcclOptions, load_library)

__all__ = ["SparcclOptions", "SparcclState", "sparccl_hook", "importance_pilot"]

log = logging.getLogger("sparccl")

_DTYPES = {torch.float32: FLOAT32, torch.float16: FLOAT16, torch.bfloat16: BFLOAT16}
_REFUSALS = (INVALID_ARGUMENT, INVALID_USAGE, NOT_SUPPORTED)
STATE_DICT_VERSION = 1
_WEIGHTED = (2, 3, 4)  # compressors with importance weights: impk, impk_select, impk_random


def _setup_logging():
    """SPARCCL_DEBUG=INFO (or TRACE) shows the hook's INFO lines on stderr, in the C format."""
    level = os.environ.get("SPARCCL_DEBUG", "").upper()
    if level in ("INFO", "TRACE") and not log.handlers:
        handler = logging.StreamHandler()

        class _Format(logging.Formatter):
            def format(self, record):
                return "%s:%d:%d SPARCCL %s hook: %s" % (
                    socket.gethostname(), os.getpid(), threading.get_native_id(),
                    "WARN" if record.levelno == logging.WARNING else record.levelname,
                    record.getMessage())

        handler.setFormatter(_Format())
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def _host_view(address, nbytes):
    """A uint8 CPU tensor over nbytes of memory at address (no copy)."""
    return torch.frombuffer((ctypes.c_uint8 * nbytes).from_address(address), dtype=torch.uint8)


class SparcclState:
    """The hook's state: one sparccl comm for a process group and a key per parameter.

    Create it on every rank of the group (it is collective), after init_process_group (and
    torch.cuda.set_device on GPUs), and pass it to DDP.register_comm_hook with sparccl_hook.
    device: "cpu" or "cuda"; by default "cuda" when the group's backend is nccl.
    """

    def __init__(self, process_group=None, options=None, lib_path=None, tag_base=0,
                 device=None):
        _setup_logging()
        if not dist.is_initialized():
            raise RuntimeError("SparcclState: call torch.distributed.init_process_group first")
        self.group = process_group if process_group is not None else dist.group.WORLD
        self.world = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        backend = str(dist.get_backend(self.group))
        if device is None:
            device = "cuda" if "nccl" in backend and torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.options = options if options is not None else SparcclOptions()
        self.lib_path = lib_path
        self.tag_base = int(tag_base)
        self.lib = load_library(lib_path, device=self.device.type == "cuda")
        self.lock = threading.Lock()  # a sparccl comm runs one call at a time (SPEC 2)
        self.tags = {}       # parameter -> its tag
        self.counts = []     # element count of tag tag_base + i, in registration order
        self.inflight = []   # futures of this step's buckets, waited for before registering
        self.refused = set()  # bucket indices whose fallback was logged
        self.pending_load = None  # a state_dict to apply at the next hook call
        self.recording = None  # {parameter: gradient} while importance_step's passes run
        self.comm = None
        self._allgather_fn = None
        # where the bootstrap's and the callback comm's exchanges travel: nccl takes CUDA
        # tensors only
        self._wire = torch.device("cuda", torch.cuda.current_device()) if "nccl" in backend \
            else torch.device("cpu")
        self.comm = self._create_comm()
        log.info("sparccl comm 0x%x (%s) for process group rank %d of %d (library %s)",
                 self.comm, "device" if self.device.type == "cuda" else "callback",
                 self.rank, self.world, self.lib.path)

    # ---------------------------------------------------------------- the comm
    def _create_comm(self):
        config = self.options.to_struct()
        if self.device.type == "cuda":
            uid = torch.zeros(NCCL_UNIQUE_ID_BYTES, dtype=torch.uint8, device=self._wire)
            if self.rank == 0:
                uid.copy_(torch.tensor(list(self.lib.get_unique_id()), dtype=torch.uint8))
            dist.broadcast(uid, src=self._global_rank(0), group=self.group)
            return self.lib.comm_init_rank(self.world, bytes(uid.cpu().tolist()), self.rank,
                                           config)
        self._allgather_fn = ALLGATHER_FN(self._allgather)
        return self.lib.comm_init_callback(self.world, self.rank, self._allgather_fn, config)

    def _allgather(self, send, recv, nbytes, user):
        """The callback comm's exchange: a synchronous all_gather on the group.

        The sizes are agreed first (the callback contract: a refusal must be the same on
        every rank, and gloo cannot gather blocks of different sizes).  Never raises (an
        exception cannot cross C): a failure is a nonzero return.
        """
        try:
            sizes = torch.empty(self.world, dtype=torch.int64, device=self._wire)
            mine = torch.tensor([nbytes], dtype=torch.int64, device=self._wire)
            dist.all_gather_into_tensor(sizes, mine, group=self.group)
            if bool((sizes != nbytes).any()):
                log.warning("exchange of %d bytes against %s on other ranks: refused", nbytes,
                            sizes.tolist())
                return 1
            if nbytes == 0:
                return 0
            if self._wire.type == "cpu":
                dist.all_gather_into_tensor(_host_view(recv, nbytes * self.world),
                                            _host_view(send, nbytes), group=self.group)
            else:  # a host comm on an nccl group: through the GPU
                out = torch.empty(nbytes * self.world, dtype=torch.uint8, device=self._wire)
                dist.all_gather_into_tensor(out, _host_view(send, nbytes).to(self._wire),
                                            group=self.group)
                _host_view(recv, nbytes * self.world).copy_(out.cpu())
            return 0
        except Exception as e:  # noqa: BLE001 -- reported to sparccl as a failed exchange
            log.warning("exchange of %d bytes failed: %s", nbytes, e)
            return 1

    def _global_rank(self, group_rank):
        if self.group is dist.group.WORLD:
            return group_rank
        return dist.get_global_rank(self.group, group_rank)

    def stats(self):
        """sparcclCommGetStats as a dict (on a device comm it synchronises with the GPU)."""
        with self.lock:
            s = self.lib.stats(self.comm)
        return {name: getattr(s, name) for name, _ in s._fields_}

    def close(self):
        """Destroy the sparccl comm (and a device comm's NCCL communicator).  Idempotent."""
        self._drain()
        if self.comm is not None:
            with self.lock:
                self.lib.comm_destroy(self.comm)
            self.comm = None

    # ---------------------------------------------------------------- importance weights
    def importance_step(self, model, closure, steps=3, reset=True):
        """The thesis' importance solve (SPEC 7) on every key of model, e.g. at the start of
        every epoch, before that step's forward:

            opt.zero_grad()
            if first_step_of_epoch:
                state.importance_step(ddp_model, lambda: loss_fn(ddp_model(x), y))
            loss_fn(ddp_model(x), y).backward()      # the hook compresses with the new w
            opt.step()

        model: the DDP model whose hook is sparccl_hook with this state; closure(): this
        rank's loss on this step's batch through model (a forward only; the step calls
        backward).  Collective (every rank, the same steps): as train.c does, with this
        rank's own (local, not averaged) gradient g at the parameters x and q at each probe:
        reset w = 1 (if reset), then `steps` times: probe p = x - gamma * (w * g)
        (sparcclImportanceProbeTagged) written into the parameters, q = the gradient of
        closure() there, x put back bitwise, sparcclImportanceUpdateTagged(q, g).  Gamma,
        eta, the cube [low, high] or the simplex are the options' (importance="cube" for the
        thesis' impk_c; importance_pilot() is train.c's rule for gamma and eta).

        Each gradient is one backward of closure() through DDP in which sparccl_hook only
        records each bucket's local gradient (exactly what the hook compresses in a step on
        the same batch) and registers new keys in bucket order, as a normal step would; no
        gradient is exchanged.  Every pass starts from the caller's random state (dropout
        draws the masks of the step that follows), restored after.  The parameters' .grad
        (zero during the passes), the module's buffers (BatchNorm statistics) and the
        parameters are as before the call, bitwise; nothing of the error feedback or the
        warm-up counts changes.  Parameters whose
        bucket sparccl does not take (float64, dense fallbacks) are left out.  Returns the
        losses: [at x, at probe 1, ..., at probe `steps`].
        """
        with self.lock:
            compressor = self.lib.comm_get_config(self.comm).compressor
        if compressor not in _WEIGHTED:
            raise ValueError("SparcclState.importance_step: compressor %d has no importance "
                             "weights (use compressor=\"impk\")" % compressor)
        params = [p for p in model.parameters() if p.requires_grad]
        losses = []
        grads = self._local_gradients(model, params, closure, losses)
        keys = sorted(((self.tags[p], p, g) for p, g in grads.items()), key=lambda k: k[0])
        for _, p, _ in keys:
            if not p.is_contiguous() or p.device.type != self.device.type:
                raise ValueError("SparcclState.importance_step: a parameter of %s on %s: "
                                 "contiguous parameters on %s only"
                                 % (tuple(p.shape), p.device, self.device))
        stream = torch.cuda.current_stream().cuda_stream if self.device.type == "cuda" else 0
        if reset:
            with self.lock:
                for tag, _, _ in keys:
                    self.lib.importance_reset_tagged(self.comm, tag)
        for _ in range(steps):
            x = [p.detach().clone() for _, p, _ in keys]
            probes = [torch.empty_like(g) for _, _, g in keys]
            with self.lock:
                for (tag, p, g), xi, pi in zip(keys, x, probes):
                    self.lib.importance_probe_tagged(xi.data_ptr(), g.data_ptr(), pi.data_ptr(),
                                                     g.numel(), _DTYPES[g.dtype], tag, self.comm,
                                                     stream)
            try:
                with torch.no_grad():
                    for (_, p, _), pi in zip(keys, probes):
                        p.copy_(pi.view_as(p))
                at_probe = self._local_gradients(model, params, closure, losses)
            finally:
                with torch.no_grad():
                    for (_, p, _), xi in zip(keys, x):
                        p.copy_(xi)
            with self.lock:
                for tag, p, g in keys:
                    q = at_probe[p]
                    self.lib.importance_update_tagged(q.data_ptr(), g.data_ptr(), g.numel(),
                                                      _DTYPES[g.dtype], tag, self.comm, stream)
        return losses

    def importance_reset(self):
        """w <- 1 on every key (sparcclImportanceResetTagged): the weights of TopK."""
        self._drain()
        with self.lock:
            for i in range(len(self.counts)):
                self.lib.importance_reset_tagged(self.comm, self.tag_base + i)

    def _local_gradients(self, model, params, closure, losses):
        """{parameter: this rank's gradient of closure()} from one backward through model,
        the hook recording (see importance_step); .grad and the buffers restored after."""
        grads = [p.grad for p in params]
        saved = [None if g is None else g.detach().clone() for g in grads]
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self._drain()
        self.recording = {}
        devices = [torch.cuda.current_device()] if self.device.type == "cuda" else []
        try:
            with torch.no_grad():
                for g in grads:
                    if g is not None:
                        g.zero_()
            # every pass from the caller's random state (dropout draws the step's masks),
            # which is as before afterwards
            with torch.random.fork_rng(devices=devices):
                loss = closure()
                loss.backward()
            losses.append(float(loss.detach()))
            recorded = self.recording
        finally:
            self.recording = None
            with torch.no_grad():
                for p, g, s in zip(params, grads, saved):
                    if s is None:
                        p.grad = None
                    elif p.grad is g:
                        g.copy_(s)
                    else:
                        p.grad = g
                        g.copy_(s)
                for b, s in buffers:
                    b.copy_(s)
        return recorded

    def _record(self, bucket, buf):
        """importance_step's pass: keys registered as the hook does, the bucket's local
        gradients kept, nothing exchanged; the future holds the bucket as it is."""
        if buf.dtype in _DTYPES and buf.numel() and buf.device.type == self.device.type:
            try:
                if self.pending_load is not None:
                    self._apply_pending_load()
                layers = _bucket_layers(bucket, buf)
                self._keys([p for p, _ in layers])
                for p, g in layers:
                    self.recording[p] = g.detach().clone()
            except SparcclError as e:
                if e.code not in _REFUSALS:
                    raise
                # refused on every rank alike: these parameters get no importance step
        fut = torch.futures.Future(devices=[buf.device] if buf.is_cuda else None)
        fut.set_result(buf)
        return fut

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self):
        """The hook's state, error feedback included, as a dict of plain values and tensors.

        Collective: call it on every rank (each rank's dict holds its own error feedback;
        save each rank's, e.g. in its own checkpoint file).  Between steps.
        """
        self._drain()
        if self.pending_load is not None and not self.counts:
            return dict(self.pending_load)  # loaded, not applied yet: still the same state
        blob = b""
        if self.counts:
            folder = tempfile.mkdtemp(prefix="sparccl_state_")
            try:
                path = os.path.join(folder, "rank%d.state" % self.rank)
                with self.lock:
                    self.lib.save_state(self.comm, path)
                with open(path, "rb") as f:
                    blob = f.read()
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        return {
            "version": STATE_DICT_VERSION,
            "world_size": self.world,
            "rank": self.rank,
            "tag_base": self.tag_base,
            "options": dataclasses.asdict(self.options),
            "counts": list(self.counts),
            "sparccl_state": torch.frombuffer(bytearray(blob), dtype=torch.uint8)
            if blob else torch.zeros(0, dtype=torch.uint8),
        }

    def load_state_dict(self, state_dict):
        """Resume from state_dict() of the same rank of a run with the same model and world.

        Collective.  On a fresh state the load is applied at the first hook call (the saved
        keys are registered in their saved order, then sparcclLoadState); on a state whose
        keys equal the saved ones it is applied now.
        """
        if state_dict.get("version") != STATE_DICT_VERSION:
            raise ValueError("SparcclState.load_state_dict: version %r, this is version %d"
                             % (state_dict.get("version"), STATE_DICT_VERSION))
        if state_dict["world_size"] != self.world or state_dict["rank"] != self.rank:
            raise ValueError("SparcclState.load_state_dict: saved by rank %d of %d, loaded on "
                             "rank %d of %d" % (state_dict["rank"], state_dict["world_size"],
                                                self.rank, self.world))
        self._drain()
        saved = dict(state_dict)
        saved["counts"] = [int(n) for n in saved["counts"]]
        if self.counts:
            if self.counts != saved["counts"]:
                raise ValueError("SparcclState.load_state_dict: this state's keys (%d) are "
                                 "not the saved ones (%d); load into a fresh SparcclState"
                                 % (len(self.counts), len(saved["counts"])))
            self._apply_load(saved)
        else:
            self.pending_load = saved
            self.tag_base = int(saved["tag_base"])

    def __getstate__(self):
        """Pickling (torch.save(state)): options and state_dict(); collective."""
        return {"options": self.options, "lib_path": self.lib_path, "device": str(self.device),
                "state_dict": self.state_dict()}

    def __setstate__(self, pickled):
        """Unpickling creates a comm on the default process group (collective), as
        PowerSGDState does, and loads the state."""
        device = pickled["device"]
        if device.startswith("cuda"):
            device = "cuda"
        self.__init__(options=pickled["options"], lib_path=pickled["lib_path"],
                      tag_base=pickled["state_dict"]["tag_base"], device=device)
        self.load_state_dict(pickled["state_dict"])

    def _apply_load(self, saved):
        blob = saved["sparccl_state"]
        if blob.numel():
            folder = tempfile.mkdtemp(prefix="sparccl_state_")
            try:
                path = os.path.join(folder, "rank%d.state" % self.rank)
                blob = blob.contiguous().cpu()
                with open(path, "wb") as f:
                    f.write(ctypes.string_at(blob.data_ptr(), blob.numel()))
                with self.lock:
                    self.lib.load_state(self.comm, path)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        self.pending_load = None
        log.info("loaded the state of %d keys", len(self.counts))

    # ---------------------------------------------------------------- internals
    def _drain(self):
        """Wait for the buckets in flight (their callbacks take the lock)."""
        inflight, self.inflight = self.inflight, []
        for fut in inflight:
            try:
                fut.wait()
            except Exception:  # noqa: BLE001 -- DDP raises it where it waits for the bucket
                pass

    def _dense(self, buf):
        """The default DDP hook: average by an allreduce of buf / world."""
        buf.div_(self.world)
        fut = dist.all_reduce(buf, group=self.group, async_op=True).get_future()
        return fut.then(lambda f: f.value()[0])

    def _register(self, count):
        """The next key: tag tag_base + len(counts), one layer of count elements."""
        tag = self.tag_base + len(self.counts)
        with self.lock:
            self.lib.register_layout_tagged(self.comm, tag, [count])
        self.counts.append(count)
        return tag

    def _apply_pending_load(self):
        """The first hook call after load_state_dict: the saved keys, then their state.

        A refused load (a checkpoint of another config, layout or rank count, a damaged
        file: refused on every rank alike) raises, so that DDP's backward fails everywhere,
        rather than training on from zero as if it had resumed."""
        saved, self.pending_load = self.pending_load, None
        self._drain()
        try:
            for count in saved["counts"][len(self.counts):]:
                self._register(count)
            self._apply_load(saved)
        except SparcclError as e:
            raise RuntimeError("sparccl: resuming from the checkpoint failed (another config, "
                               "model or world size?): %s" % e) from e

    def _keys(self, params):
        """The tag of each parameter of a bucket, registering the ones seen first now."""
        tags = []
        for p in params:
            tag = self.tags.get(p)
            if tag is None:
                index = len(self.tags)
                count = int(p.numel())
                if index < len(self.counts):  # registered by a load: it must fit
                    if self.counts[index] != count:
                        raise ValueError(
                            "sparccl: parameter %d of the resumed run has %d elements, the "
                            "checkpoint's key %d has %d: resume with the same model and "
                            "bucket_cap_mb" % (index, count, index, self.counts[index]))
                    tag = self.tag_base + index
                else:
                    self._drain()
                    tag = self._register(count)
                    log.info("tag %d: a parameter of %d elements", tag, count)
                self.tags[p] = tag
            tags.append(tag)
        return tags


def _bucket_layers(bucket, buf):
    """(parameter, its gradient view in buf) for the bucket's non-empty parameters."""
    layers = [(p, g) for p, g in zip(bucket.parameters(), bucket.gradients()) if g.numel() > 0]
    start, end = buf.data_ptr(), buf.data_ptr() + buf.numel() * buf.element_size()
    for _, g in layers:
        if g.dtype != buf.dtype or not g.is_contiguous() or g.data_ptr() < start or \
                g.data_ptr() + g.numel() * g.element_size() > end:
            raise ValueError("sparccl: a gradient of bucket %d is not a view of its buffer"
                             % bucket.index())
    return layers


class _Call:
    """One bucket between its two halves: keys compressed, blocks in flight."""

    def __init__(self, state, index, buf, dtype, layers, tags):
        self.state, self.index, self.buf, self.dtype = state, index, buf, dtype
        self.layers, self.tags = layers, tags
        self.sizes, self.compressed = [], []
        self.block = None

    def stream(self):
        """The current stream (in a CUDA future's callback, the one torch synchronised with
        the exchange), or NULL on a host comm."""
        return torch.cuda.current_stream(self.buf.device).cuda_stream if self.buf.is_cuda else 0

    def compress(self):
        """This rank's block: every key's block, one after the other."""
        st = self.state
        with st.lock:
            self.sizes = [st.lib.block_bytes_tagged(st.comm, tag) for tag in self.tags]
            block = torch.empty(sum(self.sizes), dtype=torch.uint8, device=self.buf.device)
            stream, offset = self.stream(), 0
            try:
                for (_, g), tag, size in zip(self.layers, self.tags, self.sizes):
                    st.lib.compress_tagged(g.data_ptr(), g.numel(), self.dtype, tag, st.comm,
                                           block.data_ptr() + offset, stream)
                    self.compressed.append(tag)
                    offset += size
            except SparcclError:
                self._abandon_locked()
                raise
        self.block = block  # alive until the exchange is done
        return block

    def abandon(self):
        with self.state.lock:
            self._abandon_locked()

    def _abandon_locked(self):
        for tag in self.compressed:
            self.state.lib.abandon_tagged(self.state.comm, tag)
        self.compressed = []

    def decompress(self, gathered):
        """Each key from every rank's block (rank r's at r * total + offset)."""
        st = self.state
        rows = gathered.view(st.world, -1)
        stream, offset = self.stream(), 0
        with st.lock:
            try:
                for (_, g), tag, size in zip(self.layers, self.tags, self.sizes):
                    blocks = rows[:, offset:offset + size].contiguous()
                    st.lib.decompress_tagged(blocks.data_ptr(), g.data_ptr(), g.numel(),
                                             self.dtype, AVG, tag, st.comm, stream)
                    self.compressed.remove(tag)
                    offset += size
            finally:
                self._abandon_locked()  # what a failure left between its halves
                self.block = None
        return self.buf


def sparccl_hook(state, bucket):
    """DDP communication hook: bucket.buffer() <- the sparccl average over the group."""
    buf = bucket.buffer()
    if state.recording is not None:  # inside SparcclState.importance_step
        return state._record(bucket, buf)
    dtype = _DTYPES.get(buf.dtype)
    index = bucket.index()
    if dtype is None or buf.numel() == 0 or state.comm is None or \
            buf.device.type != state.device.type:
        if index not in state.refused:
            state.refused.add(index)
            log.warning("bucket %d (%s on %s): not for this sparccl comm; averaged dense",
                        index, buf.dtype, buf.device)
        return state._dense(buf)
    state.inflight = [f for f in state.inflight if not f.done()]
    try:
        if state.pending_load is not None:
            state._apply_pending_load()
        layers = _bucket_layers(bucket, buf)
        call = _Call(state, index, buf, dtype, layers, state._keys([p for p, _ in layers]))
        block = call.compress()
    except SparcclError as e:
        if e.code not in _REFUSALS:
            raise
        # Refused on every rank alike (SPEC 2): all of them take the dense path together.
        if index not in state.refused:
            state.refused.add(index)
            log.warning("bucket %d: %s; this bucket is averaged dense", index, e)
        return state._dense(buf)
    gathered = torch.empty(block.numel() * state.world, dtype=torch.uint8, device=buf.device)
    try:
        work = dist.all_gather_into_tensor(gathered, block, group=state.group, async_op=True)
    except Exception:
        call.abandon()
        raise

    def finish(fut):
        try:
            fut.value()
        except Exception:
            call.abandon()  # the exchange failed: every key as before its compress
            raise
        return call.decompress(gathered)

    fut = work.get_future().then(finish)
    state.inflight.append(fut)
    return fut


def importance_pilot(grads, lr, importance="cube", sgd=True):
    """(gamma, eta) by the pilot rule of examples/fashion_mnist/train.c, from a pilot
    gradient (a list of tensors: e.g. rank 0's gradient on its first batch; broadcast the
    pair so that every rank's options agree).  gamma, how far the probe looks ahead: about
    one optimiser step, lr for SGD (lr / rms(g) for Adam-like optimisers, sgd=False); eta:
    one cube step moves a typical weight by about 0.1 (eta * gamma = 0.1 / mean(g^2)), or
    one simplex step changes a weight ratio by at most e (eta * gamma = 1 / max(g^2))."""
    flat = torch.cat([g.detach().reshape(-1).double().cpu() for g in grads])
    squares = flat * flat
    mean_square = float(squares.mean()) if flat.numel() else 0.0
    largest = float(squares.max()) if flat.numel() else 0.0
    gamma = lr if sgd else lr / (mean_square if mean_square > 0 else 1.0) ** 0.5
    if str(importance).lower() in ("simplex", "2"):
        c = 1.0 / (largest if largest > 0 else 1.0)
    else:
        c = 0.1 / (mean_square if mean_square > 0 else 1.0)
    return gamma, c / gamma
