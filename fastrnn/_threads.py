"""One thread count for the Numba, OpenMP and BLAS pools alike.

``set_num_threads(n)`` records n and applies it to every pool that is loaded;
pools loaded later (a backend imported after the call) get it when they load,
through ``apply_to_loaded_pools``.  The kernels also receive n explicitly
(OpenMP's own setting is per calling thread, so it is not relied on).
"""
import operator
import os
import sys

def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_num_threads = None  # None: never set; every pool keeps its own default (all cores)
_all_cores = cpu_count()  # read once: every call asks for the thread count
# More threads than this only oversubscribe the cores, and far more fail
# inside the runtimes (10**5 OpenMP threads crashed a kernel; 1000 under a
# 4 GB address-space limit killed the process in libgomp).
MAX_THREADS = 8 * _all_cores


def get_num_threads():
    """The thread count fastrnn uses: the last ``set_num_threads``, else all cores."""
    return _all_cores if _num_threads is None else _num_threads


def set_num_threads(n):
    """Use ``n`` threads in the Numba, OpenMP and BLAS pools (default: all cores).

    ``1 <= n <= MAX_THREADS`` (8 times the cores this process may use).  The
    count is recorded only once every loaded pool has taken it.

    Raises
    ------
    TypeError
        If n is not an integer.
    ValueError
        If n is out of range, or a pool refused it (the count stays as it was).
    """
    global _num_threads
    if isinstance(n, bool):
        raise TypeError("n must be an integer number of threads, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer number of threads, got {type(n).__name__}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n must be >= 1 and at most {MAX_THREADS} (8 x the {_all_cores} cores "
                         f"available), got {n}")
    try:
        _apply(n)
    except Exception as exc:
        if _num_threads is not None:
            try:
                _apply(_num_threads)
            except Exception:
                pass
        raise ValueError(f"could not apply n={n} to the thread pools: {exc}") from exc
    _num_threads = n


def apply_to_loaded_pools():
    """Apply the recorded thread count to BLAS, OpenMP and Numba if loaded."""
    if _num_threads is not None:
        _apply(_num_threads)


def _apply(n):
    from threadpoolctl import threadpool_limits  # only when asked: it scans the loaded libraries

    threadpool_limits(limits=n)  # every BLAS (numpy's and scipy's) and OpenMP runtime loaded now
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
