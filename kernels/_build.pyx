"""How the Cython extensions were built: OpenMP, debug checks, native CPU flags.

setup.py passes the debug and native choices as macros; OpenMP is known from
``_OPENMP`` (see _build.h).  ``python -m fastrnn`` prints these.
"""

cdef extern from "_build.h" nogil:
    # Macros, 0 or 1; declared as ints so Cython reads them as values.
    int FASTRNN_HAS_OPENMP
    int FASTRNN_DEBUG_BUILD
    int FASTRNN_NATIVE_BUILD


def build_info():
    """``{"openmp": bool, "debug": bool, "native": bool}`` for the compiled kernels."""
    return {"openmp": FASTRNN_HAS_OPENMP != 0, "debug": FASTRNN_DEBUG_BUILD != 0,
            "native": FASTRNN_NATIVE_BUILD != 0}
