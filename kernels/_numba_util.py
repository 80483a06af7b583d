"""One decorator for every Numba kernel: lazy, cached where the cache can live.

Kernels compile on first call for the dtypes actually used (no eager
signature lists, so importing costs nothing).  ``cache=True`` keeps compiled
code across processes; Numba stores it beside the source, or in
``NUMBA_CACHE_DIR`` / the user cache folder when the install directory is
read-only.  When no location is writable Numba refuses ``cache=True`` at
decoration time, and we fall back to compiling in memory rather than failing
to import.  No kernel here uses ``parallel=True`` (those must not be cached);
threads come from BLAS.
"""
import numba


def jit(func):
    try:
        return numba.njit(cache=True, nogil=True)(func)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, nogil=True)(func)
