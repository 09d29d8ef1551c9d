"""ctypes bindings of libsparccl (include/sparccl.h, include/sparccl_nccl.h).

Importable without torch: the DDP hook (sparccl/hook.py) builds on it, and the CI test
(tests/nccl_preload/check_ctypes_layout.py) checks SparcclConfig's layout against the C
struct without a GPU.

    lib = load_library(device=False)           # libsparccl.so: host comms (callback, MPI)
    cfg = SparcclOptions(density=0.01).to_struct()
    comm = lib.comm_init_callback(world, rank, allgather, cfg)   # allgather: ALLGATHER_FN

    lib = load_library(device=True)            # libsparccl_cuda.so: device comms too
    uid = lib.get_unique_id()                  # 128 bytes, on one rank; broadcast them
    comm = lib.comm_init_rank(world, uid, rank, cfg)

Where the library comes from (default_library_path): $SPARCCL_LIB, else the copy installed
beside this module by `pip install`, else build/lib of the repository this file lies in.
"""

import ctypes
import dataclasses
import os
from typing import Optional, Union

# ------------------------------------------------------------------ constants of sparccl.h
SPARCCL_MAJOR, SPARCCL_MINOR, SPARCCL_PATCH = 0, 1, 0
SPARCCL_VERSION_CODE = SPARCCL_MAJOR * 10000 + SPARCCL_MINOR * 100 + SPARCCL_PATCH
SPARCCL_CONFIG_MAGIC = 0x5A5CC1

# The "undefined" sentinels of SPARCCL_CONFIG_INITIALIZER: a field left at one is filled
# from its SPARCCL_* environment variable, then from the default.
UNDEF_INT = -2147483647 - 1
UNDEF_LONG = -9223372036854775807 - 1
UNDEF_SIZE = ctypes.c_size_t(-1).value
UNDEF_SEED = (1 << 64) - 1
UNDEF_DOUBLE = -1.7976931348623157e308

# sparcclResult_t
SUCCESS, UNHANDLED_CUDA_ERROR, SYSTEM_ERROR, INTERNAL_ERROR = 0, 1, 2, 3
INVALID_ARGUMENT, INVALID_USAGE, REMOTE_ERROR, IN_PROGRESS, NOT_SUPPORTED = 4, 5, 6, 7, 8

# sparcclDataType_t and sparcclRedOp_t (NCCL's values)
FLOAT16, FLOAT32, BFLOAT16 = 6, 7, 9
SUM, AVG = 0, 4

# Names as the SPARCCL_* variables spell them (src/config.c).
COMPRESSORS = {"topk": 0, "randk": 1, "impk": 2, "impk_select": 3, "impk_random": 4}
FEEDBACKS = {"none": 0, "ef": 1, "ef21": 2, "scam": 3, "dgc": 4}
IMPORTANCES = {"none": 0, "cube": 1, "simplex": 2, "online": 3}
WIRES = {"fp32": FLOAT32, "fp16": FLOAT16, "bf16": BFLOAT16}
DEVICE_KERNELS = {"optimised": 0, "plain": 1}
EXCHANGES = {"allgather": 0, "hierarchical": 1, "split": 2}

NCCL_UNIQUE_ID_BYTES = 128


# ------------------------------------------------------------------ structures
class SparcclConfig(ctypes.Structure):
    """sparcclConfig_t, field for field (tests/nccl_preload checks offsets and size)."""

    _fields_ = [
        ("size", ctypes.c_size_t),
        ("magic", ctypes.c_uint),
        ("version", ctypes.c_uint),
        ("density", ctypes.c_double),
        ("compressor", ctypes.c_int),
        ("feedback", ctypes.c_int),
        ("wireType", ctypes.c_int),
        ("minSparseCount", ctypes.c_size_t),
        ("seed", ctypes.c_ulonglong),
        ("sharedRandomness", ctypes.c_int),
        ("importance", ctypes.c_int),
        ("importanceGamma", ctypes.c_double),
        ("importanceEta", ctypes.c_double),
        ("importanceLow", ctypes.c_double),
        ("importanceHigh", ctypes.c_double),
        ("restartEvery", ctypes.c_longlong),
        ("restartRatio", ctypes.c_double),
        ("restartLag", ctypes.c_int),
        ("restartOnLoss", ctypes.c_int),
        ("warmupSteps", ctypes.c_size_t),
        ("momentum", ctypes.c_double),
        ("deviceKernels", ctypes.c_int),
        ("checkSizes", ctypes.c_int),
        ("errorBuffers", ctypes.c_int),
        ("pipelineBytes", ctypes.c_size_t),
        ("exchange", ctypes.c_int),
        ("ranksPerNode", ctypes.c_int),
        ("splitSlack", ctypes.c_double),
    ]


# SPARCCL_CONFIG_INITIALIZER, field by field.
CONFIG_INITIALIZER = {
    "size": None,  # sizeof(sparcclConfig_t), filled in by config_initializer()
    "magic": SPARCCL_CONFIG_MAGIC,
    "version": SPARCCL_VERSION_CODE,
    "density": UNDEF_DOUBLE,
    "compressor": UNDEF_INT,
    "feedback": UNDEF_INT,
    "wireType": UNDEF_INT,
    "minSparseCount": UNDEF_SIZE,
    "seed": UNDEF_SEED,
    "sharedRandomness": UNDEF_INT,
    "importance": UNDEF_INT,
    "importanceGamma": UNDEF_DOUBLE,
    "importanceEta": UNDEF_DOUBLE,
    "importanceLow": UNDEF_DOUBLE,
    "importanceHigh": UNDEF_DOUBLE,
    "restartEvery": UNDEF_LONG,
    "restartRatio": UNDEF_DOUBLE,
    "restartLag": UNDEF_INT,
    "restartOnLoss": UNDEF_INT,
    "warmupSteps": UNDEF_SIZE,
    "momentum": UNDEF_DOUBLE,
    "deviceKernels": UNDEF_INT,
    "checkSizes": UNDEF_INT,
    "errorBuffers": UNDEF_INT,
    "pipelineBytes": UNDEF_SIZE,
    "exchange": UNDEF_INT,
    "ranksPerNode": UNDEF_INT,
    "splitSlack": UNDEF_DOUBLE,
}


def config_initializer() -> SparcclConfig:
    """A SparcclConfig equal to SPARCCL_CONFIG_INITIALIZER: every option from SPARCCL_*."""
    cfg = SparcclConfig()
    for name, value in CONFIG_INITIALIZER.items():
        setattr(cfg, name, ctypes.sizeof(SparcclConfig) if value is None else value)
    return cfg


class SparcclStats(ctypes.Structure):
    """sparcclStats_t."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "calls", "layerSets", "layersSparse", "layersDense", "bytesSent", "bytesDense",
        "skippedSteps", "restarts", "stateBytes")] + [
        (name, ctypes.c_double) for name in (
            "compressSeconds", "exchangeSeconds", "decompressSeconds")] + [
        ("refusedCalls", ctypes.c_ulonglong), ("pairsReceived", ctypes.c_ulonglong)]


class NcclUniqueId(ctypes.Structure):
    """ncclUniqueId: 128 opaque bytes (passed by value to sparcclCommInitRank)."""

    _fields_ = [("internal", ctypes.c_char * NCCL_UNIQUE_ID_BYTES)]


def _enum(value, names, what):
    if isinstance(value, str):
        try:
            return names[value.lower()]
        except KeyError:
            raise ValueError("%s %r is not one of %s" % (what, value, ", ".join(names)))
    return int(value)


@dataclasses.dataclass
class SparcclOptions:
    """sparccl's configuration; None leaves a field to its SPARCCL_* variable, then the default.

    Enumerations take the names the environment variables take (compressor="topk",
    feedback="ef", wire="bf16", importance="online") or the C values.
    """

    density: Optional[float] = None
    compressor: Optional[Union[str, int]] = None
    feedback: Optional[Union[str, int]] = None
    wire: Optional[Union[str, int]] = None
    min_sparse: Optional[int] = None
    seed: Optional[int] = None
    shared_randomness: Optional[bool] = None
    importance: Optional[Union[str, int]] = None
    importance_gamma: Optional[float] = None
    importance_eta: Optional[float] = None
    importance_low: Optional[float] = None
    importance_high: Optional[float] = None
    restart_every: Optional[int] = None
    restart_ratio: Optional[float] = None
    restart_lag: Optional[int] = None
    restart_on_loss: Optional[bool] = None
    warmup_steps: Optional[int] = None  # the first N calls on a bucket are dense (SPEC 9)
    momentum: Optional[float] = None    # feedback="dgc": the momentum sparccl keeps
    device_kernels: Optional[str] = None  # "optimised" or "plain" (docs/DEVICE.md)
    check_sizes: Optional[int] = None   # device comms: 1 = agree every exchange's size first
    error_buffers: Optional[int] = None  # device comms: e in 2 buffers (default) or 1
    pipeline_bytes: Optional[int] = None  # host comms: wire bytes per pipelined group, 0 = off
    exchange: Optional[Union[str, int]] = None  # "allgather", "hierarchical" or "split" (docs/EXCHANGES.md)
    ranks_per_node: Optional[int] = None  # hierarchical: ranks r // n form a node; 0 = from MPI
    split_slack: Optional[float] = None  # split: pairs per owner ceil(slack k / n), >= 1

    def to_struct(self) -> SparcclConfig:
        cfg = config_initializer()
        fields = [
            ("density", "density", float),
            ("compressor", "compressor", lambda v: _enum(v, COMPRESSORS, "compressor")),
            ("feedback", "feedback", lambda v: _enum(v, FEEDBACKS, "feedback")),
            ("wire", "wireType", lambda v: _enum(v, WIRES, "wire")),
            ("min_sparse", "minSparseCount", int),
            ("seed", "seed", int),
            ("shared_randomness", "sharedRandomness", int),
            ("importance", "importance", lambda v: _enum(v, IMPORTANCES, "importance")),
            ("importance_gamma", "importanceGamma", float),
            ("importance_eta", "importanceEta", float),
            ("importance_low", "importanceLow", float),
            ("importance_high", "importanceHigh", float),
            ("restart_every", "restartEvery", int),
            ("restart_ratio", "restartRatio", float),
            ("restart_lag", "restartLag", int),
            ("restart_on_loss", "restartOnLoss", int),
            ("warmup_steps", "warmupSteps", int),
            ("momentum", "momentum", float),
            ("device_kernels", "deviceKernels", lambda v: _enum(v, DEVICE_KERNELS, "device_kernels")),
            ("check_sizes", "checkSizes", int),
            ("error_buffers", "errorBuffers", int),
            ("pipeline_bytes", "pipelineBytes", int),
            ("exchange", "exchange", lambda v: _enum(v, EXCHANGES, "exchange")),
            ("ranks_per_node", "ranksPerNode", int),
            ("split_slack", "splitSlack", float),
        ]
        for attr, field, convert in fields:
            value = getattr(self, attr)
            if value is not None:
                setattr(cfg, field, convert(value))
        return cfg


# ------------------------------------------------------------------ the library
class SparcclError(RuntimeError):
    def __init__(self, what, code, text):
        super().__init__("%s failed: %s (sparccl error %d; SPARCCL_DEBUG=WARN says why)"
                         % (what, text, code))
        self.code = code


HOST_LIBRARY, DEVICE_LIBRARY = "libsparccl.so", "libsparccl_cuda.so"


def library_candidates(device: bool = False):
    """Where the library is looked for, in order (the first that exists is taken).

    device=True needs libsparccl_cuda.so (device comms); device=False takes libsparccl.so,
    else libsparccl_cuda.so (it serves host comms too).
    """
    names = [DEVICE_LIBRARY] if device else [HOST_LIBRARY, DEVICE_LIBRARY]
    here = os.path.dirname(os.path.abspath(__file__))
    repo_build = os.path.join(os.path.dirname(os.path.dirname(here)), "build", "lib")
    return [os.path.join(d, n) for d in (here, repo_build) for n in names]


def default_library_path(device: bool = False) -> str:
    """$SPARCCL_LIB, else the package's own copy, else the repository's build/lib."""
    env = os.environ.get("SPARCCL_LIB")
    if env:
        return env
    candidates = library_candidates(device)
    for path in candidates:
        if os.path.exists(path):
            return path
    return candidates[0]


_P = ctypes.c_void_p
# sparcclAllgatherFn_t: int allgather(const void* send, void* recv, size_t bytes, void* user)
ALLGATHER_FN = ctypes.CFUNCTYPE(ctypes.c_int, _P, _P, ctypes.c_size_t, _P)
_SIGNATURES = {
    "sparcclGetErrorString": (ctypes.c_char_p, [ctypes.c_int]),
    "sparcclGetVersion": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int)]),
    "sparcclGetUniqueId": (ctypes.c_int, [ctypes.POINTER(NcclUniqueId)]),
    "sparcclCommInitRank": (ctypes.c_int, [ctypes.POINTER(_P), ctypes.c_int, NcclUniqueId,
                                           ctypes.c_int, ctypes.POINTER(SparcclConfig)]),
    "sparcclCommGetConfig": (ctypes.c_int, [_P, ctypes.POINTER(SparcclConfig)]),
    "sparcclRegisterLayoutTagged": (ctypes.c_int, [_P, ctypes.c_ulonglong, ctypes.c_size_t,
                                                   ctypes.POINTER(ctypes.c_size_t)]),
    "sparcclAllReduceTagged": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.c_int,
                                              ctypes.c_int, ctypes.c_ulonglong, _P, _P]),
    "sparcclReleaseTagged": (ctypes.c_int, [_P, ctypes.c_ulonglong]),
    "sparcclCommGetStats": (ctypes.c_int, [_P, ctypes.POINTER(SparcclStats)]),
    "sparcclCommDestroy": (ctypes.c_int, [_P]),
    "sparcclCommInitCallback": (ctypes.c_int, [ctypes.POINTER(_P), ctypes.c_int, ctypes.c_int,
                                               ALLGATHER_FN, _P, ctypes.POINTER(SparcclConfig)]),
    "sparcclBlockBytesTagged": (ctypes.c_int, [_P, ctypes.c_ulonglong,
                                               ctypes.POINTER(ctypes.c_size_t)]),
    "sparcclCompressTagged": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.c_int,
                                             ctypes.c_ulonglong, _P, _P, _P]),
    "sparcclDecompressTagged": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.c_int,
                                               ctypes.c_int, ctypes.c_ulonglong, _P, _P]),
    "sparcclAbandonTagged": (ctypes.c_int, [_P, ctypes.c_ulonglong]),
    "sparcclSaveState": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "sparcclLoadState": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "sparcclImportanceProbeTagged": (ctypes.c_int, [_P, _P, _P, ctypes.c_size_t, ctypes.c_int,
                                                    ctypes.c_ulonglong, _P, _P]),
    "sparcclImportanceUpdateTagged": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.c_int,
                                                     ctypes.c_ulonglong, _P, _P]),
    "sparcclImportanceResetTagged": (ctypes.c_int, [_P, ctypes.c_ulonglong]),
}



class SparcclLibrary:
    """The library's functions with their C signatures, raising SparcclError on failure."""

    def __init__(self, path: Optional[str] = None, device: bool = False):
        self.path = path or default_library_path(device)
        try:
            self.lib = ctypes.CDLL(self.path)
        except OSError as e:
            raise OSError("cannot load sparccl from %s (build it with `make %s` in the "
                          "repository, or set SPARCCL_LIB): %s"
                          % (self.path, "cuda" if device else "lib", e))
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.restype = restype
            fn.argtypes = argtypes

    def error_string(self, code: int) -> str:
        return self.lib.sparcclGetErrorString(code).decode()

    def check(self, code: int, what: str) -> None:
        if code != SUCCESS:
            raise SparcclError(what, code, self.error_string(code))

    def version(self) -> int:
        v = ctypes.c_int()
        self.check(self.lib.sparcclGetVersion(ctypes.byref(v)), "sparcclGetVersion")
        return v.value

    def get_unique_id(self) -> bytes:
        uid = NcclUniqueId()
        self.check(self.lib.sparcclGetUniqueId(ctypes.byref(uid)), "sparcclGetUniqueId")
        return ctypes.string_at(ctypes.addressof(uid), NCCL_UNIQUE_ID_BYTES)

    def comm_init_rank(self, nranks: int, unique_id: bytes, rank: int,
                       config: Optional[SparcclConfig] = None) -> int:
        if len(unique_id) != NCCL_UNIQUE_ID_BYTES:
            raise ValueError("an ncclUniqueId is %d bytes, got %d"
                             % (NCCL_UNIQUE_ID_BYTES, len(unique_id)))
        uid = NcclUniqueId()
        ctypes.memmove(ctypes.addressof(uid), unique_id, NCCL_UNIQUE_ID_BYTES)
        comm = _P()
        cfg = ctypes.byref(config) if config is not None else None
        self.check(self.lib.sparcclCommInitRank(ctypes.byref(comm), nranks, uid, rank, cfg),
                   "sparcclCommInitRank")
        return comm.value

    def comm_init_callback(self, nranks: int, rank: int, allgather, config=None) -> int:
        """A host comm whose exchanges are allgather (an ALLGATHER_FN; keep it alive)."""
        comm = _P()
        cfg = ctypes.byref(config) if config is not None else None
        self.check(self.lib.sparcclCommInitCallback(ctypes.byref(comm), nranks, rank,
                                                    allgather, None, cfg),
                   "sparcclCommInitCallback")
        return comm.value

    def comm_get_config(self, comm: int) -> SparcclConfig:
        cfg = config_initializer()
        self.check(self.lib.sparcclCommGetConfig(comm, ctypes.byref(cfg)), "sparcclCommGetConfig")
        return cfg

    def register_layout_tagged(self, comm: int, tag: int, counts) -> None:
        arr = (ctypes.c_size_t * len(counts))(*counts)
        self.check(self.lib.sparcclRegisterLayoutTagged(comm, tag, len(counts), arr),
                   "sparcclRegisterLayoutTagged")

    def all_reduce_tagged(self, send: int, recv: int, count: int, dtype: int, op: int,
                          tag: int, comm: int, stream: int) -> None:
        self.check(self.lib.sparcclAllReduceTagged(send, recv, count, dtype, op, tag, comm,
                                                   stream or None),
                   "sparcclAllReduceTagged")

    def block_bytes_tagged(self, comm: int, tag: int) -> int:
        n = ctypes.c_size_t()
        self.check(self.lib.sparcclBlockBytesTagged(comm, tag, ctypes.byref(n)),
                   "sparcclBlockBytesTagged")
        return n.value

    def compress_tagged(self, send: int, count: int, dtype: int, tag: int, comm: int,
                        block: int, stream: int) -> None:
        self.check(self.lib.sparcclCompressTagged(send, count, dtype, tag, comm, block,
                                                  stream or None), "sparcclCompressTagged")

    def decompress_tagged(self, blocks: int, recv: int, count: int, dtype: int, op: int,
                          tag: int, comm: int, stream: int) -> None:
        self.check(self.lib.sparcclDecompressTagged(blocks, recv, count, dtype, op, tag, comm,
                                                    stream or None), "sparcclDecompressTagged")

    def abandon_tagged(self, comm: int, tag: int) -> None:
        self.check(self.lib.sparcclAbandonTagged(comm, tag), "sparcclAbandonTagged")

    def save_state(self, comm: int, path: str) -> None:
        self.check(self.lib.sparcclSaveState(comm, os.fsencode(path)), "sparcclSaveState")

    def load_state(self, comm: int, path: str) -> None:
        self.check(self.lib.sparcclLoadState(comm, os.fsencode(path)), "sparcclLoadState")

    def importance_probe_tagged(self, params: int, grad: int, probe: int, count: int,
                                dtype: int, tag: int, comm: int, stream: int) -> None:
        """probe <- params - gamma * (w * grad) for key tag (SPEC 7)."""
        self.check(self.lib.sparcclImportanceProbeTagged(params, grad, probe, count, dtype, tag,
                                                         comm, stream or None),
                   "sparcclImportanceProbeTagged")

    def importance_update_tagged(self, grad_at_probe: int, grad: int, count: int, dtype: int,
                                 tag: int, comm: int, stream: int) -> None:
        """One solver step of key tag's weights from the gradient at the probe (SPEC 7)."""
        self.check(self.lib.sparcclImportanceUpdateTagged(grad_at_probe, grad, count, dtype, tag,
                                                          comm, stream or None),
                   "sparcclImportanceUpdateTagged")

    def importance_reset_tagged(self, comm: int, tag: int) -> None:
        """w <- 1 on key tag."""
        self.check(self.lib.sparcclImportanceResetTagged(comm, tag),
                   "sparcclImportanceResetTagged")

    def release_tagged(self, comm: int, tag: int) -> None:
        self.check(self.lib.sparcclReleaseTagged(comm, tag), "sparcclReleaseTagged")

    def stats(self, comm: int) -> SparcclStats:
        s = SparcclStats()
        self.check(self.lib.sparcclCommGetStats(comm, ctypes.byref(s)), "sparcclCommGetStats")
        return s

    def comm_destroy(self, comm: int) -> None:
        self.check(self.lib.sparcclCommDestroy(comm), "sparcclCommDestroy")


def load_library(path: Optional[str] = None, device: bool = False) -> SparcclLibrary:
    return SparcclLibrary(path, device)
