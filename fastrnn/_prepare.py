"""What every cell's public functions do between checking and calling a kernel.

The kernels take C-contiguous arrays of one dtype, one summed bias, lengths as
int64, and the two tuning choices; these helpers make them.
"""
import numpy as np

from . import _tuning
from ._threads import get_num_threads


def owned(arr, copy):
    """A C-contiguous version of arr; a private copy when ``copy`` (the cache must own it)."""
    return np.array(arr, order="C", copy=True) if copy else np.ascontiguousarray(arr)


def state(arr, B, H, dtype, copy):
    """An initial state as the kernels take it: zeros for None."""
    return np.zeros((B, H), dtype) if arr is None else owned(arr, copy)


def upstream(arr, shape, dtype):
    """An upstream gradient as the kernels take it: zeros for None."""
    return np.zeros(shape, dtype) if arr is None else np.ascontiguousarray(arr)


def bias_sum(b_ih, b_hh, GH, dtype):
    """b_ih + b_hh, the one bias the kernels add (zeros when neither is given)."""
    if b_ih is None and b_hh is None:
        return np.zeros(GH, dtype)
    if b_ih is None or b_hh is None:
        return np.ascontiguousarray(b_hh if b_ih is None else b_ih)
    return b_ih + b_hh


def steps(lengths, T, B):
    """lengths as the kernels take it: int64 (B,), every sequence T steps when None."""
    if lengths is not None:
        return lengths
    out = np.empty(B, np.int64)
    out.fill(T)
    return out


def tuning(backend, B, GH, H):
    """(use_blas, num_threads) for ``backend``'s per-step product (B, H) @ (H, GH): see _tuning."""
    return _tuning.use_blas(backend, B, GH, H), _tuning.row_threads(B, GH, get_num_threads())
