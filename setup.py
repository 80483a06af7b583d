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

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


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
CELLS = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "fastrnn", "_spec.py"))["CELLS"]

extensions = [
    Extension(
        f"fastrnn.kernels.{name}",
        [f"kernels/{name}.pyx"],
        include_dirs=[numpy.get_include(), "kernels"],
        # cythonize follows the .pxi includes; the C compiler's header is listed
        # so that editing it rebuilds the extensions.
        depends=["kernels/fast_tanh.h", "kernels/engine.h", "kernels/_build.h",
                 "kernels/_common.pxi", "kernels/_engine.pxi", "kernels/_gemm.pxi"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       ("FASTRNN_DEBUG_BUILD", int(DEBUG)), ("FASTRNN_NATIVE_BUILD", int(NATIVE))],
    )
    for name in ["_build", "_matmul", *(f"{cell}_cython" for cell in CELLS)]
]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        # Debug and release C differ; separate folders keep either from being
        # mistaken for the other by cythonize's timestamp check.
        build_dir="build/cython-debug" if DEBUG else "build/cython-release",
    ),
)
