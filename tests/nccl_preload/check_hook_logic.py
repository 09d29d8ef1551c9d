"""check_hook_logic.py: the DDP hook's bookkeeping (examples/pytorch/sparccl_hook.py) with
stand-ins for torch, torch.distributed and the sparccl library -- no torch, no GPU.

Checks: the bootstrap (rank 0's unique id broadcast, sparcclCommInitRank with the options'
struct), one layout registration per bucket index with one layer per parameter, the
sparcclAllReduceTagged arguments (in place, avg, the bucket's tag, the current stream), a
rebuilt bucket releasing its old key and registering the new layout (and saying so in the
log), unsupported buckets and refusals going dense, runtime errors raising.
"""
import logging
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "pytorch"))

calls = []  # what the fakes saw, in order


# ------------------------------------------------------------------ a stand-in torch
class DType:
    def __init__(self, name):
        self.name = name


class Device:
    def __init__(self, kind, index=None):
        self.type, self.index = kind, index

    def __repr__(self):
        return "%s:%s" % (self.type, self.index)


class Tensor:
    _next = 0x10000

    def __init__(self, n, dtype, cuda=True, values=None):
        self.n, self.dtype, self.is_cuda = n, dtype, cuda
        self.device = Device("cuda", 0) if cuda else Device("cpu")
        self.values = list(values) if values is not None else [0] * n
        Tensor._next += 0x1000
        self.ptr = Tensor._next

    def numel(self):
        return self.n

    def data_ptr(self):
        return self.ptr

    def div_(self, x):
        calls.append(("div_", x))
        return self

    def copy_(self, other):
        self.values = list(other.values)
        return self

    def cpu(self):
        return self

    def tolist(self):
        return list(self.values)


class Future:
    def __init__(self, devices=None):
        self.devices, self.result = devices, None

    def set_result(self, r):
        self.result = r

    def value(self):
        return self.result

    def then(self, fn):
        f = Future()
        f.set_result(fn(self))
        return f


torch = types.ModuleType("torch")
torch.float32, torch.float16, torch.bfloat16 = DType("float32"), DType("float16"), DType("bfloat16")
torch.float64, torch.uint8 = DType("float64"), DType("uint8")
torch.device = Device
torch.zeros = lambda n, dtype=None, device=None: Tensor(n, dtype, cuda=device.type == "cuda")
torch.tensor = lambda values, dtype=None: Tensor(len(values), dtype, values=values)
torch.cuda = types.SimpleNamespace(
    current_device=lambda: 0,
    current_stream=lambda device=None: types.SimpleNamespace(cuda_stream=0xABC))
torch.futures = types.SimpleNamespace(Future=Future)

dist = types.ModuleType("torch.distributed")
dist.group = types.SimpleNamespace(WORLD=object())
dist.is_initialized = lambda: True
dist.get_world_size = lambda group=None: 4
dist.get_rank = lambda group=None: 0
dist.get_backend = lambda group=None: "nccl"


def _broadcast(t, src, group=None):
    calls.append(("broadcast", src, len(t.values), bytes(t.values)[:4]))


def _all_reduce(t, group=None, async_op=False):
    calls.append(("dense all_reduce", t.n))
    fut = Future()
    fut.set_result([t])
    return types.SimpleNamespace(get_future=lambda: fut)


dist.broadcast, dist.all_reduce = _broadcast, _all_reduce
torch.distributed = dist
sys.modules["torch"], sys.modules["torch.distributed"] = torch, dist

import sparccl_ctypes as sc  # noqa: E402
import sparccl_hook as hook  # noqa: E402


# ------------------------------------------------------------------ a stand-in library
class FakeLib:
    path = "fake"

    def __init__(self):
        self.fail_register = None  # (code) to raise on the next register

    def get_unique_id(self):
        return b"UID!" + bytes(124)

    def comm_init_rank(self, nranks, uid, rank, cfg):
        calls.append(("init", nranks, uid[:4], rank, cfg.density, cfg.compressor))
        return 0xC0

    def register_layout_tagged(self, comm, tag, sizes):
        if self.fail_register is not None:
            code, self.fail_register = self.fail_register, None
            raise sc.SparcclError("sparcclRegisterLayoutTagged", code, "refused")
        calls.append(("register", tag, tuple(sizes)))

    def all_reduce_tagged(self, send, recv, count, dtype, op, tag, comm, stream):
        calls.append(("allreduce", send == recv, count, dtype, op, tag, comm, stream))

    def release_tagged(self, comm, tag):
        calls.append(("release", tag))

    def comm_destroy(self, comm):
        calls.append(("destroy", comm))


hook.load_library = lambda path=None: FakeLib()


class Param:
    def __init__(self, n):
        self.n = n

    def numel(self):
        return self.n


class Bucket:
    def __init__(self, index, sizes, dtype=None, cuda=True):
        self._index, self._params = index, [Param(n) for n in sizes]
        self._buf = Tensor(sum(sizes), dtype or torch.float32, cuda=cuda)

    def index(self):
        return self._index

    def buffer(self):
        return self._buf

    def parameters(self):
        return self._params


failures = 0


def check(ok, what):
    global failures
    print("   %s: %s" % ("ok" if ok else "FAIL", what))
    failures += 0 if ok else 1


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append((record.levelname, record.getMessage()))


cap = Capture()
hook.log.addHandler(cap)
hook.log.setLevel(logging.INFO)

state = hook.SparcclState(options=hook.SparcclOptions(density=0.05, compressor="randk"))
check(calls[:2] == [("broadcast", 0, 128, b"UID!"), ("init", 4, b"UID!", 0, 0.05, 1)],
      "bootstrap: rank 0's 128-byte id broadcast, sparcclCommInitRank with the options")

del calls[:]
b0 = Bucket(0, [10, 20, 0, 5])
fut = hook.sparccl_hook(state, b0)
fut2 = hook.sparccl_hook(state, b0)
check(calls == [("register", 0, (10, 20, 5)),
                ("allreduce", True, 35, sc.FLOAT32, sc.AVG, 0, 0xC0, 0xABC),
                ("allreduce", True, 35, sc.FLOAT32, sc.AVG, 0, 0xC0, 0xABC)],
      "bucket 0: one registration (a layer per non-empty parameter), in-place avg on the "
      "current stream, twice")
check(fut.value() is b0.buffer() and fut.devices is not None and fut2.value() is b0.buffer(),
      "the hook returns a completed, CUDA-aware future holding the bucket buffer")

del calls[:]
b1 = Bucket(1, [7, 9], dtype=torch.bfloat16)
hook.sparccl_hook(state, b1)
check(calls == [("register", 1, (7, 9)),
                ("allreduce", True, 16, sc.BFLOAT16, sc.AVG, 1, 0xC0, 0xABC)],
      "bucket 1 (bfloat16): its own tag")

del calls[:]
cap.records.clear()
rebuilt = Bucket(0, [20, 10, 5, 1])
hook.sparccl_hook(state, rebuilt)
check(calls == [("release", 0), ("register", 0, (20, 10, 5, 1)),
                ("allreduce", True, 36, sc.FLOAT32, sc.AVG, 0, 0xC0, 0xABC)],
      "bucket 0 rebuilt by DDP: old key released, new layout registered under the same tag")
check(any("bucket 0 changed its layout" in m and "released tag 0" in m for _, m in cap.records),
      "the rebuild is logged")

del calls[:]
hook.sparccl_hook(state, Bucket(2, [8], dtype=torch.float64))
hook.sparccl_hook(state, Bucket(3, [8], cuda=False))
check(calls == [("div_", 4), ("dense all_reduce", 8), ("div_", 4), ("dense all_reduce", 8)],
      "float64 and CPU buckets: the dense average")

del calls[:]
cap.records.clear()
state.lib.fail_register = sc.INVALID_USAGE
fut = hook.sparccl_hook(state, Bucket(4, [3, 3]))
check(calls == [("div_", 4), ("dense all_reduce", 6)] and fut.value().n == 6
      and any(level == "WARNING" and "bucket 4" in m for level, m in cap.records),
      "a refusal (sparcclInvalidUsage, alike on every rank) goes dense with a warning")
del calls[:]
hook.sparccl_hook(state, Bucket(4, [3, 3]))
check(calls[0] == ("register", 4, (3, 3)), "the refused bucket is tried again at its next call")

state.lib.fail_register = sc.UNHANDLED_CUDA_ERROR
try:
    hook.sparccl_hook(state, Bucket(5, [3]))
    check(False, "a runtime error raises")
except sc.SparcclError as e:
    check(e.code == sc.UNHANDLED_CUDA_ERROR, "a runtime error (CUDA) raises, it is not hidden")

del calls[:]
state.close()
state.close()
check(calls == [("destroy", 0xC0)], "close() destroys the comm once")

if failures:
    print("%d hook check(s) failed" % failures)
    sys.exit(1)
