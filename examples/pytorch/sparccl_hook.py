"""The documented three lines, from this directory: a thin re-export of the sparccl package.

    from sparccl_hook import SparcclOptions, SparcclState, sparccl_hook
    state = SparcclState(options=SparcclOptions(density=0.01))
    ddp_model.register_comm_hook(state, sparccl_hook)

The hook itself is python/sparccl (`pip install ./python` installs it); without an
installed package this module takes it from the repository's python/ folder.
"""
import os
import sys

try:
    import sparccl  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "python"))

from sparccl import SparcclOptions, SparcclState, sparccl_hook  # noqa: E402

__all__ = ["SparcclOptions", "SparcclState", "sparccl_hook"]
