"""Build the Cython kernels in kernels/ as extensions of fastrnn.kernels.

Environment:
  FASTRNN_CYTHON_DEBUG=1   bounds checking, wraparound and initialised-memoryview
                           checks back on, -O0 -g (the CI's second test pass).
  FASTRNN_NO_OPENMP=1      build the serial version even if the compiler has OpenMP.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTRNN_CYTHON_DEBUG", "") not in ("", "0")


def compiler_has_openmp():
    """True when the C compiler builds and links a program with -fopenmp."""
    if os.environ.get("FASTRNN_NO_OPENMP", "") not in ("", "0"):
        return False
    cc = os.environ.get("CC", "cc")
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        cmd = [cc, "-fopenmp", src, "-o", os.path.join(tmp, "t")]
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OPENMP = compiler_has_openmp()
compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
link_args = []
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
print(f"fastrnn build: openmp={OPENMP} debug={DEBUG}", file=sys.stderr)

extensions = [
    Extension(
        f"fastrnn.kernels.{name}",
        [f"kernels/{name}.pyx"],
        include_dirs=[numpy.get_include(), "kernels"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in ["_openmp", "elman_cython"]
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
