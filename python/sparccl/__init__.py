"""sparccl for PyTorch: sparse gradient averaging with error feedback as a DDP hook.

    from sparccl import SparcclOptions, SparcclState, sparccl_hook
    state = SparcclState(options=SparcclOptions(density=0.01))
    ddp_model.register_comm_hook(state, sparccl_hook)

sparccl.bindings (the ctypes mirror of include/sparccl.h) needs no torch; the hook
(sparccl.hook) is imported on first use of SparcclState or sparccl_hook.
"""
from .bindings import SparcclError, SparcclOptions, load_library

__all__ = ["SparcclOptions", "SparcclState", "sparccl_hook", "importance_pilot", "SparcclError",
           "load_library"]


def __getattr__(name):
    if name in ("SparcclState", "sparccl_hook", "importance_pilot"):
        from . import hook
        return getattr(hook, name)
    raise AttributeError("module 'sparccl' has no attribute %r" % name)
