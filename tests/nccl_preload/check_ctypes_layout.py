"""check_ctypes_layout.py CONFIG_LAYOUT_OUTPUT: the ctypes mirror of sparccl.h
(python/sparccl/bindings.py) against the C compiler's view (config_layout.c).

Every field of sparcclConfig_t and sparcclStats_t: same name, order, offset and size; the
structs' sizes; SPARCCL_CONFIG_INITIALIZER's sentinels equal to config_initializer()'s
values; the enum values the hook passes.  Imports no torch.
"""
import ctypes
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
import sparccl.bindings as sc  # noqa: E402

assert "torch" not in sys.modules, "sparccl and sparccl.bindings must not import torch"

fields = {"config": [], "stats": []}
sizes, consts = {}, {}
with open(sys.argv[1]) as f:
    for line in f:
        parts = line.split()
        if parts[0] == "field":
            fields[parts[1]].append((parts[2], int(parts[3]), int(parts[4]), parts[5]))
        elif parts[0] == "sizeof":
            sizes[parts[1]] = int(parts[2])
        elif parts[0] == "const":
            consts[parts[1]] = int(parts[2])

failures = 0


def check(ok, what):
    global failures
    if not ok:
        failures += 1
        print("FAIL: " + what)


def same_value(c_text, py_value, ctype):
    if ctype in (ctypes.c_double, ctypes.c_float):
        # bitwise, through the exact text C printed with %.17g
        return struct.pack("<d", float(c_text)) == struct.pack("<d", float(py_value))
    return int(c_text) == int(py_value)


init = sc.config_initializer()
for kind, structure in (("config", sc.SparcclConfig), ("stats", sc.SparcclStats)):
    py = structure._fields_
    c = fields[kind]
    check(len(py) == len(c), "%s: %d ctypes fields, %d C fields" % (kind, len(py), len(c)))
    for (name, ctype), (cname, offset, size, value) in zip(py, c):
        desc = getattr(structure, name)
        check(name == cname, "%s: ctypes field %s where C has %s" % (kind, name, cname))
        check(desc.offset == offset,
              "%s.%s: ctypes offset %d, C offset %d" % (kind, name, desc.offset, offset))
        check(desc.size == size, "%s.%s: ctypes size %d, C size %d" % (kind, name, desc.size, size))
        if kind == "config":
            check(same_value(value, getattr(init, name), ctype),
                  "config.%s: initializer %s in C, %r in Python" % (name, value, getattr(init, name)))
    check(ctypes.sizeof(structure) == sizes[kind],
          "sizeof %s: ctypes %d, C %d" % (kind, ctypes.sizeof(structure), sizes[kind]))

check(consts["version"] == sc.SPARCCL_VERSION_CODE, "SPARCCL_VERSION_CODE")
check(consts["magic"] == sc.SPARCCL_CONFIG_MAGIC, "SPARCCL_CONFIG_MAGIC")
check((consts["float16"], consts["float32"], consts["bfloat16"]) == (sc.FLOAT16, sc.FLOAT32, sc.BFLOAT16),
      "datatype values")
check((consts["sum"], consts["avg"]) == (sc.SUM, sc.AVG), "op values")
check(consts["impk_random"] == sc.COMPRESSORS["impk_random"], "compressor values")
check(consts["scam"] == sc.FEEDBACKS["scam"], "feedback values")
check(consts["online"] == sc.IMPORTANCES["online"], "importance values")
check(consts["not_supported"] == sc.NOT_SUPPORTED, "result values")

# The dataclass sets what it is given and leaves the rest at the sentinels.
cfg = sc.SparcclOptions(density=0.01, compressor="randk", feedback="ef21", wire="bf16",
                        seed=7, restart_on_loss=True).to_struct()
check(cfg.density == 0.01 and cfg.compressor == 1 and cfg.feedback == 2 and cfg.wireType == 9
      and cfg.seed == 7 and cfg.restartOnLoss == 1, "SparcclOptions: the given fields")
check(cfg.importance == sc.UNDEF_INT and cfg.minSparseCount == sc.UNDEF_SIZE
      and cfg.importanceGamma == sc.UNDEF_DOUBLE and cfg.restartEvery == sc.UNDEF_LONG
      and cfg.size == sizes["config"] and cfg.magic == sc.SPARCCL_CONFIG_MAGIC,
      "SparcclOptions: the fields left to SPARCCL_*")
check(ctypes.sizeof(sc.NcclUniqueId) == 128, "ncclUniqueId is 128 bytes")

if failures:
    print("%d layout check(s) failed" % failures)
    sys.exit(1)
print("   ok: sparcclConfig_t (%d fields, %d bytes) and sparcclStats_t (%d fields, %d bytes): "
      "ctypes offsets, sizes and initializer sentinels equal C's"
      % (len(fields["config"]), sizes["config"], len(fields["stats"]), sizes["stats"]))
