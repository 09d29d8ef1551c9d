"""Builds the sparccl package with libsparccl inside it (pyproject.toml has the metadata).

Where the library comes from, in order:
  SPARCCL_LIB=/path/libsparccl.so     that file (and libsparccl_cuda.so beside it, if any)
  the repository around this folder   `make lib` (SPARCCL_BUILD_CUDA=1: `make lib cuda`),
                                       then build/lib/libsparccl.so (and libsparccl_cuda.so
                                       when it is there: it serves the CUDA path)
Without either the build fails and says so.  At run time sparccl.bindings looks in the
package first, then in the repository's build/lib, and $SPARCCL_LIB overrides both.
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NAMES = ("libsparccl.so", "libsparccl_cuda.so")


def libraries():
    """The library files to install, building them from the repository if need be."""
    given = os.environ.get("SPARCCL_LIB")
    if given:
        folder = os.path.dirname(os.path.abspath(given))
        found = [given] + [os.path.join(folder, n) for n in NAMES
                           if os.path.join(folder, n) != os.path.abspath(given)]
        return [f for f in found if os.path.exists(f)]
    if not os.path.exists(os.path.join(REPO, "Makefile")):
        raise SystemExit("sparccl: no repository Makefile at %s and no SPARCCL_LIB: cannot "
                         "build or find libsparccl" % REPO)
    targets = ["lib"] + (["cuda"] if os.environ.get("SPARCCL_BUILD_CUDA") == "1" else [])
    print("sparccl: make -C %s %s" % (REPO, " ".join(targets)))
    subprocess.check_call(["make", "-C", REPO, "--no-print-directory"] + targets)
    built = [os.path.join(REPO, "build", "lib", n) for n in NAMES]
    return [f for f in built if os.path.exists(f)]


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        found = libraries()
        if not found:
            raise SystemExit("sparccl: libsparccl.so was not built")
        target = os.path.join(self.build_lib, "sparccl")
        os.makedirs(target, exist_ok=True)
        for path in found:
            print("sparccl: installing %s" % path)
            shutil.copy2(path, os.path.join(target, os.path.basename(path)))


class BinaryDistribution(Distribution):
    """A wheel for this platform: it carries a shared library."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
