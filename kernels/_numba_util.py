"""What every Numba kernel shares: the decorator, the activations, the steps
every cell takes the same way (the input projection, the per-step recurrent
product, the weight gradients after the loop), and the chunks of steps the
kernels run in so that Ctrl-C lands (``in_chunks``).

Kernels compile on first call for the dtypes actually used (no eager
signature lists, so importing costs nothing).  ``cache=True`` keeps compiled
code across processes; Numba stores it beside the source, or in
``NUMBA_CACHE_DIR`` / the user cache folder when the install directory is
read-only.  When no location is writable Numba refuses ``cache=True`` at
decoration time, and we fall back to compiling in memory rather than failing
to import.  A cache file that cannot be read back (truncated, overwritten,
from a crashed write) is a cache miss, not an error: the kernel compiles
again and writes a fresh index (``_tolerate_bad_cache_files``); an edit of
this file makes the cells' cached kernels, which inline its helpers, a miss
too (``_key_on_this_file``).  No kernel here uses ``parallel=True`` (those must not be cached);
threads come from BLAS.

``error_model="numpy"``: division follows IEEE (x/0 is inf or NaN) instead of
raising ZeroDivisionError, which is both the semantics the reference has and
what lets LLVM vectorise loops that divide (fast_tanh).
"""
import hashlib
import time

import numba
import numpy as np
from numba import types
from numba.extending import overload


def jit(func, fastmath=False):
    options = dict(nogil=True, error_model="numpy", fastmath=fastmath)
    try:
        dispatcher = numba.njit(cache=True, **options)(func)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, **options)(func)
    _key_on_this_file(dispatcher)
    _tolerate_bad_cache_files(dispatcher)
    return dispatcher


def jit_sums(func):
    """``jit`` for the kernels' row reductions (the LayerNorm cells' means and
    variances): LLVM may reassociate their sums, which lets it vectorise
    them (summed in order they run one add's latency a value).  Only
    reassociation: contracting a * b - c into one FMA would leave, for
    instance, a row of one value a nonzero gradient where it has none."""
    return jit(func, fastmath={"reassoc"})


# The digest of this file's text.  Numba keys a cached kernel on its own
# source file's time stamp and size only, but a kernel's machine code also
# holds what it inlined from here (fast_tanh, the products): after an edit
# of this file the cells' cached kernels would be stale.
with open(__file__, "rb") as _f:
    _THIS_FILE = hashlib.sha256(_f.read()).hexdigest()


def _key_on_this_file(dispatcher):
    """Make the dispatcher's cache index carry this file's digest beside
    its own file's stamp: an index written under another digest is a miss."""
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if cache_file is not None and hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = (cache_file._source_stamp, _THIS_FILE)


def _tolerate_bad_cache_files(dispatcher):
    """Make a cache file Numba cannot unpickle a miss.  Numba raises
    (UnpicklingError, EOFError, ...) on every call of the kernel for good;
    here the index is emptied (so the next save writes a sound one) and the
    kernel compiles as if nothing were cached."""
    cache = getattr(dispatcher, "_cache", None)
    if cache is None or not hasattr(cache, "load_overload"):
        return
    load = cache.load_overload

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception:
            try:
                cache._cache_file.flush()
            except Exception:  # read-only or gone: the miss is enough
                pass
            return None

    cache.load_overload = load_overload


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


def sigmoid(x):
    """1 / (1 + exp(-x)), written as (1 + tanh(x / 2)) / 2: no overflow for any x."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


@overload(sigmoid)
def _sigmoid(x):
    half = np.float32(0.5) if isinstance(x, types.Float) and x.bitwidth == 32 else 0.5
    return lambda x: half + half * fast_tanh(half * x)


# --- steps in chunks, so that Ctrl-C lands --------------------------------------------

# A compiled call runs to its end before Python looks at signals again, so the
# kernels run their steps in chunks of about this many seconds each, in a
# Python loop (in_chunks): Ctrl-C raises KeyboardInterrupt between two chunks.
CHUNK_SECONDS = 0.05
# The first chunk's size, before a rate is measured: steps of about this many
# multiply-adds (5-50 ms where Numba's loops run at 2-20 GFLOP/s).  Most calls
# fit in one chunk and pay nothing for the chunking.
FIRST_CHUNK_FLOPS = 1e8


def in_chunks(run, x2d, W_hh, out, reverse=False):
    """Call ``run(t0, t1)`` for consecutive chunks of the steps 0 .. T-1 of a
    pass (T steps of out (T, B, H)), from the first (or, ``reverse``, from
    the last), each sized to take about CHUNK_SECONDS at the rate the chunk
    before it ran."""
    T, B, H = out.shape
    step_flops = B * W_hh.shape[0] * (x2d.shape[1] + H)
    n = max(1, int(FIRST_CHUNK_FLOPS / max(step_flops, 1)))
    if n >= T:
        run(0, T)
        return
    done = 0
    while done < T:
        k = min(n, T - done)
        t0, t1 = (T - done - k, T - done) if reverse else (done, done + k)
        start = time.perf_counter()
        run(t0, t1)
        took = time.perf_counter() - start
        done += k
        n = max(1, min(4 * k, int(k * CHUNK_SECONDS / max(took, 1e-9))))


@jit
def project_inputs(x2d, W_ih, bias, xw2d, r0, r1):
    """Rows r0 .. r1-1 of xw2d (T*B, G*H) = x2d (T*B, I) @ W_ih^T + bias: the
    input terms of a run of steps in one GEMM."""
    np.dot(x2d[r0:r1], W_ih.T, xw2d[r0:r1])
    for r in range(r0, r1):
        for j in range(xw2d.shape[1]):
            xw2d[r, j] += bias[j]


@jit
def transposed_for_loops(W_hh, use_blas):
    """W_hh^T (H, G*H), C-contiguous, for the hand loops (which run along its rows);
    BLAS reads W_hh as it is, so it gets an empty array and no copy."""
    return np.ascontiguousarray(W_hh.T) if not use_blas else W_hh[:0, :0].copy()


@jit
def matmul_rows(A, M, lengths, t, C):
    """C[b] = A[b] @ M for the rows b still running at step t.  A (B, K), M (K, N), C (B, N).

    The hand loop runs over M's contiguous rows (axpy form), so it vectorises
    without reassociating sums.
    """
    B, K = A.shape
    N = M.shape[1]
    for b in range(B):
        if t < lengths[b]:
            for n in range(N):
                C[b, n] = 0
            for k in range(K):
                a = A[b, k]
                for n in range(N):
                    C[b, n] += a * M[k, n]


@jit
def recurrent_product(h, W_hh, W_hhT, lengths, t, use_blas, work):
    """work (B, G*H) = h (B, H) @ W_hh^T: BLAS for every row, or the hand loops
    over W_hhT for the running rows (frozen rows are ignored by the callers)."""
    if use_blas:
        np.dot(h, W_hh.T, work)
    else:
        matmul_rows(h, W_hhT, lengths, t, work)


@jit
def backward_product(da_t, W_hh, lengths, t, use_blas, work):
    """work (B, H) = da_t (B, G*H) @ W_hh: the one sequential product of BPTT."""
    if use_blas:
        np.dot(da_t, W_hh, work)
    else:
        matmul_rows(da_t, W_hh, lengths, t, work)


@jit
def weight_gradients(x2d, W_ih, h0, out, da_x, da_h, dx2d, dW_ih, dW_hh, db_ih, db_hh):
    """Everything of BPTT that is not sequential, each one GEMM over all T*B rows.

    da_x (T, B, G*H) is the gradient of the input term x_t W_ih^T + b_ih, da_h
    that of the recurrent term h_{t-1} W_hh^T + b_hh (the same array except in
    the GRU).  Rows past a sequence's length are zero.  The single-bias cells
    pass one array as db_ih and db_hh (it gets the same sum twice).
    """
    T, B, GH = da_x.shape
    H = out.shape[2]
    DX = da_x.reshape(T * B, GH)
    DH = da_h.reshape(T * B, GH)
    np.dot(DX.T, x2d, dW_ih)
    np.dot(DX, W_ih, dx2d)
    # h_{t-1} is h0 for t = 0 and out[t-1] after.
    np.dot(da_h[0].T, h0, dW_hh)
    if T > 1:
        dW_hh += np.dot(DH[B:].T, out.reshape(T * B, H)[: (T - 1) * B])
    _column_sums(DX, db_ih)
    _column_sums(DH, db_hh)


@jit
def _column_sums(A, s):
    for j in range(A.shape[1]):
        s[j] = 0
    for r in range(A.shape[0]):
        for j in range(A.shape[1]):
            s[j] += A[r, j]
