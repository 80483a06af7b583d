"""Build the Cython kernels in kernels/ as extensions of fastrnn.kernels.

Environment:
  FASTRNN_CYTHON_DEBUG=1   bounds checking, wraparound and initialised-memoryview
                           checks back on, -O0 -g (the CI's second test pass).
  FASTRNN_NO_OPENMP=1      build the serial version even if the compiler has OpenMP.
  FASTRNN_PORTABLE=1       compile for the baseline of the architecture instead of
                           this machine's CPU (-march=native); use it to build a
                           wheel that will run on other machines.
"""
import os
import runpy
import shutil
import subprocess
import sys
import tempfile

import Cython
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def compiler_accepts(flags, source="int main(void){return 0;}\n"):
    """True when the C compiler builds and links ``source`` with ``flags``."""
    cc = os.environ.get("CC", "cc")
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write(source)
        cmd = [cc, *flags, src, "-o", os.path.join(tmp, "t")]
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


DEBUG = _flag("FASTRNN_CYTHON_DEBUG")
OPENMP = not _flag("FASTRNN_NO_OPENMP") and compiler_accepts(
    ["-fopenmp"], "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
# The kernels' own loops are written to vectorise; for the baseline x86-64 target
# gcc only has 4-wide SSE2, which measured 1.3-1.6x slower than the same loops
# built for this CPU (Numba always compiles for the host CPU).
NATIVE = not _flag("FASTRNN_PORTABLE") and compiler_accepts(["-march=native"])

# -fno-trapping-math changes no value (NaN and Inf still propagate); it only
# lets gcc ignore floating-point exception flags, without which it refused to
# vectorise the activation loops ("control flow in loop").
# The gate loops of the LSTM and GRU write five or six arrays; gcc vectorises
# such a loop only behind a runtime check that no two of them overlap, and by
# default gives up beyond 10 pairs to check.
compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math"]
if not DEBUG and compiler_accepts(["--param", "vect-max-version-for-alias-checks=64"]):
    compile_args += ["--param", "vect-max-version-for-alias-checks=64"]
link_args = []
if NATIVE:
    compile_args.append("-march=native")
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
print(f"fastrnn build: openmp={OPENMP} native={NATIVE} debug={DEBUG}", file=sys.stderr)

# One extension per cell, named by the cell spec (a leaf module: read without
# importing fastrnn), and two shared ones: _build (how the kernels were built)
# and _matmul (fastrnn.training.Linear's products on fastrnn's threads).
HERE = os.path.dirname(os.path.abspath(__file__))
CELLS = runpy.run_path(os.path.join(HERE, "fastrnn", "_spec.py"))["CELLS"]
MODULES = ["_build", "_matmul", *(f"{cell}_cython" for cell in CELLS)]
# Cython's memoryview code, about a third of each kernel module's compile time,
# is generated once into this shared module instead of into every module.
SHARED = "fastrnn.kernels._cyutility"
# Debug and release C differ; separate folders keep either from being mistaken
# for the other.
BUILD_DIR = os.path.join("build", "cython-debug" if DEBUG else "cython-release")
# What the kernels' C and objects are made from besides their .pyx.
DEPENDS = ["setup.py", "kernels/fast_tanh.h", "kernels/engine.h", "kernels/_build.h",
           "kernels/_common.pxi", "kernels/_engine.pxi", "kernels/_gemm.pxi"]
MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
          ("FASTRNN_DEBUG_BUILD", int(DEBUG)), ("FASTRNN_NATIVE_BUILD", int(NATIVE))]


def _newer_than(target, sources):
    return os.path.exists(target) and all(
        os.path.getmtime(s) <= os.path.getmtime(target) for s in sources)


def _record_config():
    """A file that changes (and so is newer than every module) only when the
    compiler, its flags, Python or NumPy change: a dependency of every module.
    One for every build, so that a debug build after a release one (or the
    reverse) rebuilds the modules in place."""
    path = os.path.join("build", "config.txt")
    config = repr((os.environ.get("CC", "cc"), compile_args, link_args, MACROS,
                   sys.version, numpy.__version__)) + "\n"
    os.makedirs("build", exist_ok=True)
    if not os.path.exists(path) or open(path).read() != config:
        with open(path, "w") as f:
            f.write(config)
    return path


def _source(name):
    """The module's .pyx, or its C where that is newer than everything of this
    project it came from.  cythonize alone would also redo the C when only the
    SciPy .pxd it cimports is newer, as it is in each new isolated build
    environment of pip (so adding an extra rebuilt every kernel)."""
    pyx, c = f"kernels/{name}.pyx", os.path.join(BUILD_DIR, "kernels", f"{name}.c")
    if _newer_than(c, [pyx, *DEPENDS]):
        with open(c) as f:
            if f.readline().startswith(f"/* Generated by Cython {Cython.__version__} "):
                return c
    return pyx


CONFIG = _record_config()
common = dict(include_dirs=[numpy.get_include(), "kernels"], extra_compile_args=compile_args,
              extra_link_args=link_args, depends=[*DEPENDS, CONFIG])
extensions = [Extension(SHARED, [os.path.join("kernels", SHARED.split(".")[-1] + ".c")], **common)]
extensions += [Extension(f"fastrnn.kernels.{name}", [_source(name)], define_macros=MACROS, **common)
               for name in MODULES]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}
JOBS = os.cpu_count() or 1


class BuildExt(build_ext):
    """Compile the modules on every core (``-j``), and take a module already
    built in place when it is newer than its sources and the build's settings:
    pip builds into a new folder each time, so without this ``pip install -e
    ".[extra]"`` recompiled every kernel just to add a package."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = JOBS

    def build_extension(self, ext):
        target = self.get_ext_fullpath(ext.name)
        in_place = os.path.join("kernels", os.path.basename(target))
        if (not self.force and os.path.abspath(target) != os.path.abspath(in_place)
                and _newer_than(in_place, [*ext.sources, *ext.depends])):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(in_place, target)
            return
        super().build_extension(ext)


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=cythonize(extensions, compiler_directives=directives, nthreads=JOBS,
                          shared_utility_qualified_name=SHARED, build_dir=BUILD_DIR),
)
