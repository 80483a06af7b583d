"""What every Numba kernel shares: the decorator, and a float32 tanh that vectorises.

Kernels compile on first call for the dtypes actually used (no eager
signature lists, so importing costs nothing).  ``cache=True`` keeps compiled
code across processes; Numba stores it beside the source, or in
``NUMBA_CACHE_DIR`` / the user cache folder when the install directory is
read-only.  When no location is writable Numba refuses ``cache=True`` at
decoration time, and we fall back to compiling in memory rather than failing
to import.  No kernel here uses ``parallel=True`` (those must not be cached);
threads come from BLAS.

``error_model="numpy"``: division follows IEEE (x/0 is inf or NaN) instead of
raising ZeroDivisionError, which is both the semantics the reference has and
what lets LLVM vectorise loops that divide (fast_tanh).
"""
import numba
import numpy as np
from numba import types
from numba.extending import overload


def jit(func):
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(func)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, nogil=True, error_model="numpy")(func)


# Eigen's rational tanh for float32; see kernels/fast_tanh.h (the same
# coefficients, for the Cython kernels) for its accuracy and why.  np.float32
# globals are frozen as float32 constants, so the arithmetic stays float32.
_CLAMP = np.float32(7.90531110763549805)
_TINY = np.float32(0.0004)
_P = [np.float32(v) for v in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                              5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                              4.89352455891786e-03)]
_Q = [np.float32(v) for v in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                              4.89352518554385e-03)]
P0, P1, P2, P3, P4, P5, P6 = _P
Q0, Q1, Q2, Q3 = _Q


def fast_tanh(x):
    """tanh: the rational approximation for float32, np.tanh for float64."""
    return np.tanh(x)


@overload(fast_tanh)
def _fast_tanh(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def tanh32(x):
            # NaN fails both comparisons and passes through; +-inf clamp to +-1.
            xc = _CLAMP if x > _CLAMP else x
            xc = -_CLAMP if xc < -_CLAMP else xc
            x2 = xc * xc
            p = ((((((P0 * x2 + P1) * x2 + P2) * x2 + P3) * x2 + P4) * x2 + P5) * x2 + P6) * xc
            q = ((Q0 * x2 + Q1) * x2 + Q2) * x2 + Q3
            return x if abs(x) < _TINY else p / q
        return tanh32
    return lambda x: np.tanh(x)
