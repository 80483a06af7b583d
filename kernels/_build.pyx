"""How the Cython extensions were built (OpenMP, debug checks, the
instruction-set levels compiled) and which levels this CPU runs.

setup.py passes the debug flag and the levels as macros; OpenMP is known from
``_OPENMP`` (see _build.h).  ``python -m fastrnn`` prints these; fastrnn/_isa.py
chooses the level from them.
"""

cdef extern from "_build.h" nogil:
    # Macros; declared as values so Cython reads them as such.
    int FASTRNN_HAS_OPENMP
    int FASTRNN_DEBUG_BUILD
    const char* FASTRNN_ISA_LEVELS
    int fastrnn_cpu_has(const char* level)


def build_info():
    """``{"openmp": bool, "debug": bool, "levels": (name, ...)}`` for the compiled
    kernels; the levels lowest first."""
    levels = FASTRNN_ISA_LEVELS.decode()
    return {"openmp": FASTRNN_HAS_OPENMP != 0, "debug": FASTRNN_DEBUG_BUILD != 0,
            "levels": tuple(levels.split(",")) if levels else ()}


def cpu_has(str level):
    """True when this CPU runs the kernels compiled for ``level``."""
    return fastrnn_cpu_has(level.encode()) != 0
