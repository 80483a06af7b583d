"""Build the Cython kernels in kernels/ as extensions of fastrnn.kernels.

Environment:
  FASTRNN_CYTHON_DEBUG=1   bounds checking, wraparound and initialised-memoryview
                           checks back on, -O0 -g (the CI's second test pass).
  FASTRNN_NO_OPENMP=1      build the serial version even if the compiler has OpenMP.

Each cell's module is compiled once per instruction-set level of
fastrnn/_isa.py (on x86-64: AVX2/FMA, AVX-512, AVX-512 with BF16/VNNI; the
compiler's baseline elsewhere), as fastrnn.kernels.{cell}_cython_{level}, and
the level is chosen at run time from what the CPU reports: a wheel built
here runs on any machine of the architecture (x86-64: with AVX2).
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
# built for this CPU.  So each cell's module is built per level, with that
# level's flags (those the compiler takes), never -march=native: the build
# must not depend on the machine it runs on.
HERE = os.path.dirname(os.path.abspath(__file__))
LEVELS = {name: flags for name, flags in
          runpy.run_path(os.path.join(HERE, "fastrnn", "_isa.py"))["levels_for"]().items()
          if compiler_accepts(list(flags))}
if not LEVELS:
    LEVELS = {"portable": ()}

# -fno-trapping-math changes no value (NaN and Inf still propagate); it only
# lets gcc ignore floating-point exception flags, without which it refused to
# vectorise the activation loops ("control flow in loop").
# The gate loops of the LSTM and GRU write five or six arrays; gcc vectorises
# such a loop only behind a runtime check that no two of them overlap, and by
# default gives up beyond 10 pairs to check.  (The cells' loops now declare
# the arrays they write restrict, kernels/_common.pxi's floating_out, which
# spares the checks; the limit stays for the loops that do not.)
compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math"]
if not DEBUG and compiler_accepts(["--param", "vect-max-version-for-alias-checks=64"]):
    compile_args += ["--param", "vect-max-version-for-alias-checks=64"]
link_args = []
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
print(f"fastrnn build: openmp={OPENMP} debug={DEBUG} levels={','.join(LEVELS)}",
      file=sys.stderr)

# One extension per cell and level, named by the cell spec (a leaf module: read
# without importing fastrnn), and two shared ones, built for the baseline:
# _build (how the kernels were built, what the CPU runs) and _matmul
# (fastrnn.training.Linear's products on fastrnn's threads).
CELLS = runpy.run_path(os.path.join(HERE, "fastrnn", "_spec.py"))["CELLS"]
CELL_MODULES = [f"{cell}_cython" for cell in CELLS] + ["cell_cython"]  # + user cells
MODULES = ["_build", "_matmul", *CELL_MODULES]
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
          ("FASTRNN_DEBUG_BUILD", int(DEBUG)), ("FASTRNN_ISA_LEVELS", '"%s"' % ",".join(LEVELS))]


def _newer_than(target, sources):
    return os.path.exists(target) and all(
        os.path.getmtime(s) <= os.path.getmtime(target) for s in sources)


def _record_config():
    """A file that changes (and so is newer than every module) only when the
    compiler, its flags, Python or NumPy change: a dependency of every module.
    One for every build, so that a debug build after a release one (or the
    reverse) rebuilds the modules in place."""
    path = os.path.join("build", "config.txt")
    config = repr((os.environ.get("CC", "cc"), compile_args, link_args, MACROS, LEVELS,
                   sys.version, numpy.__version__)) + "\n"
    os.makedirs("build", exist_ok=True)
    if not os.path.exists(path) or open(path).read() != config:
        with open(path, "w") as f:
            f.write(config)
    return path


def _write_if_changed(path, text):
    """Write ``text`` unless ``path`` holds it already (its time then stays, so
    that what depends on it is not rebuilt)."""
    if os.path.exists(path) and open(path).read() == text:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _per_level(ext):
    """The cell module ``ext`` (its C made by cythonize) as one extension per
    level: a small C file per level renames the module's init function and
    includes the one generated C, compiled with that level's flags."""
    c_source = os.path.abspath(ext.sources[0])
    base = ext.name.rsplit(".", 1)[1]
    out = []
    for level, flags in LEVELS.items():
        wrapper = os.path.join(BUILD_DIR, "levels", f"{base}_{level}.c")
        _write_if_changed(wrapper, f"/* Generated by setup.py: {base} for the {level} level. */\n"
                                   f"#define PyInit_{base} PyInit_{base}_{level}\n"
                                   f'#include "{c_source}"\n')
        out.append(Extension(f"{ext.name}_{level}", [wrapper], define_macros=ext.define_macros,
                             include_dirs=ext.include_dirs,
                             extra_compile_args=[*ext.extra_compile_args, *flags],
                             extra_link_args=ext.extra_link_args,
                             depends=[c_source, *ext.depends]))
    return out


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


translated = cythonize(extensions, compiler_directives=directives, nthreads=JOBS,
                       shared_utility_qualified_name=SHARED, build_dir=BUILD_DIR)
setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[built for ext in translated
                 for built in (_per_level(ext) if ext.name.rsplit(".", 1)[1] in CELL_MODULES
                               else [ext])],
)
