"""The kernels of a user's cell (``fastrnn.cells.Cell``), Cython backend: the
engine of the built-in cells (``_engine.pxi``: packed weights, one parallel
region a sequence, the backward's chunks and GEMMs) with the gate arithmetic
of each tile of units handed to the user's functions, compiled by Numba as
C functions (``numba.cfunc``, generated per cell in ``kernels/cell_numba.py``).

The engine calls ``_cell_forward`` / ``_cell_backward`` below for one row's
tile of units at a time, as it does the GRU's (read beside
``kernels/gru_cython.pyx``); here they pass the tile on to the cell's
C functions through a call's slot (the engine's ``flag``), which holds the
functions and the arrays that are the cell's own:

    forward(running, nu, u, tb, j0, acc, g, h_prev, h_next, *arrays, dims)
        arrays: out (T, B, H), R (T, B, G*H) the recurrent terms with b_hh
        (training; where the backward reads them), run (S-1, B, H) the states
        after h, seq (S-1, T, B, H) their value after each step (training),
        b_hh (G*H,), the parameters (P, H);  dims: T, B, H.  Two functions:
        training's, which saves R and seq, and inference's
    backward(running, nu, tb, j0, g, d_out, dh, da_x, da_h, *arrays, dims)
        arrays: R, seq, out, h0, s0 (S-1, B, H) the states after h at t = 0,
        ds (S-1, B, H) their running gradient, the parameters (P, H), dP (P, H)
        the parameters' gradient (a unit's sums belong to one thread in a
        step, as the LSTM's peepholes'); dims: T, B, H

``tb`` = t * B + b is the tile's row and ``j0`` its first unit, found from
the offset of ``out`` (or ``d_out``) that the engine passes; the engine's
own arrays (the input terms in ``g``, the tile's sums ``acc`` with gate k of
unit j at acc[k * u + j], h) come as it passes them to every cell.  The
cell leaves ``g`` as it is (the input terms, which its backward reads) and
keeps no saved array of the engine's.
"""
include "_common.pxi"

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t

ctypedef void (*_forward_tile)(int64_t, int64_t, int64_t, int64_t, int64_t, const void*, void*,
                               const void*, void*, void*, void*, void*, void*, void*, void*,
                               const int64_t*) noexcept nogil
ctypedef void (*_backward_tile)(int64_t, int64_t, int64_t, int64_t, const void*, const void*,
                                void*, void*, void*, void*, void*, void*, void*, void*, void*,
                                void*, void*, const int64_t*) noexcept nogil


cdef struct _Call:
    _forward_tile forward
    _backward_tile backward
    const char* base  # out (forward) or d_out (backward): a tile's row from its offset
    void** a  # the cell's arrays, in the order the tile function takes them
    const int64_t* dims


# The calls running now, by slot (the engine's ``flag``): several Python
# threads may run cells at once, each call in a slot of its own.
cdef enum:
    _SLOTS = 64
cdef _Call _calls[_SLOTS]
cdef bint _busy[_SLOTS]


cdef int _take_slot() except -1:
    """A free slot (the GIL is held: no two calls take the same)."""
    cdef int i
    for i in range(_SLOTS):
        if not _busy[i]:
            _busy[i] = True
            return i
    raise RuntimeError(f"more than {_SLOTS} user-cell calls at once")


cdef inline void _cell_forward(bint running, Py_ssize_t nu, Py_ssize_t H, Py_ssize_t u,
                               const floating* acc, floating* g, const floating* h_prev,
                               floating* h_next, floating* out, floating* state,
                               floating* saved, const floating* extra, int flag) noexcept nogil:
    cdef _Call* c = &_calls[flag]
    cdef Py_ssize_t at = (<const char*>out - c.base) // sizeof(floating)
    c.forward(running, nu, u, at // H, at % H, acc, g, h_prev, h_next,
              c.a[0], c.a[1], c.a[2], c.a[3], c.a[4], c.a[5], c.dims)


cdef inline void _cell_infer(bint running, Py_ssize_t nu, Py_ssize_t H, Py_ssize_t u,
                             const floating* acc, floating* g, const floating* h_prev,
                             floating* h_next, floating* out, floating* state,
                             floating* saved, const floating* extra, int flag) noexcept nogil:
    """The engine's inference cell (int8 compute): _cell_forward's arithmetic."""
    _cell_forward(running, nu, H, u, acc, g, h_prev, h_next, out, state, saved, extra, flag)


cdef inline void _cell_backward(bint running, Py_ssize_t nu, Py_ssize_t H, const floating* g,
                                const floating* saved, const floating* prev,
                                const floating* d_out, floating* dh, floating* dc,
                                floating* da_x, floating* da_h, const floating* extra,
                                floating* d_extra, int flag) noexcept nogil:
    cdef _Call* c = &_calls[flag]
    cdef Py_ssize_t at = (<const char*>d_out - c.base) // sizeof(floating)
    c.backward(running, nu, at // H, at % H, g, d_out, dh, da_x, da_h,
               c.a[0], c.a[1], c.a[2], c.a[3], c.a[4], c.a[5], c.a[6], c.a[7], c.dims)


include "_engine.pxi"


cdef int _addresses(tuple arrays, void** into, Py_ssize_t n) except -1:
    """Each of the n C-contiguous arrays' data address (an array's memory
    stays where it is for as long as the caller holds it)."""
    cdef Py_buffer view
    cdef Py_ssize_t i
    if len(arrays) != n:
        raise ValueError(f"{n} arrays expected, got {len(arrays)}")
    for i in range(n):
        PyObject_GetBuffer(arrays[i], &view, PyBUF_SIMPLE)
        into[i] = view.buf
        PyBuffer_Release(&view)
    return 0


def forward(size_t function, tuple arrays, const int64_t[::1] dims,
            const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
            const floating[::1] b_ih, const floating[:, ::1] W_hh,
            const floating[:, ::1] h0, const int64_t[::1] lengths, int num_threads,
            floating[:, :, ::1] gates, floating[:, :, ::1] out, floating[:, ::1] h_n):
    """A user cell's forward over a sequence: ``function`` the address of
    its forward tile function, ``arrays`` its arrays (see above, each
    C-contiguous), gates (S, B, G*H) the input terms of the last S steps (all T
    in training), out (T, B, H), h_n (B, H)."""
    cdef void* a[6]
    _addresses(arrays, a, 6)
    cdef int slot = _take_slot()
    try:
        _calls[slot].forward = <_forward_tile>function
        _calls[slot].base = <const char*>&out[0, 0, 0]
        _calls[slot].a = a
        _calls[slot].dims = &dims[0]
        _engine_forward(x2d, W_ih, W_hh, b_ih, h0, lengths, num_threads, &gates[0, 0, 0],
                        gates.shape[0], &out[0, 0, 0], NULL, NULL, NULL, slot, h_n)
    finally:
        _busy[slot] = False


def backward(size_t function, tuple arrays, const int64_t[::1] dims,
             const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
             const floating[:, ::1] W_hh, const floating[:, ::1] h0,
             const floating[:, :, ::1] out, const floating[:, :, ::1] gates,
             const floating[:, :, ::1] d_out, const int64_t[::1] lengths, int num_threads,
             floating[:, :, ::1] da_x, floating[:, :, ::1] da_h, floating[:, ::1] dh0,
             floating[:, ::1] dx2d, floating[:, ::1] dW_ih, floating[:, ::1] dW_hh,
             floating[::1] db_ih, floating[::1] db_hh):
    """A user cell's BPTT: ``function`` the address of its backward tile
    function, gates (T, B, G*H) the forward's input terms; da_x, da_h
    (S, B, G*H) the engine's chunk of gradients of the input and recurrent
    terms; dh0 (B, H) holds dL/dh_n on entry, dL/dh0 on exit; the rest as
    the built-in cells' backward."""
    cdef void* a[8]
    _addresses(arrays, a, 8)
    cdef int slot = _take_slot()
    try:
        _calls[slot].backward = <_backward_tile>function
        _calls[slot].base = <const char*>&d_out[0, 0, 0]
        _calls[slot].a = a
        _calls[slot].dims = &dims[0]
        _engine_backward(W_hh, lengths, num_threads, &gates[0, 0, 0], NULL, &out[0, 0, 0],
                         &h0[0, 0], d_out, dh0, NULL, da_x, da_h, NULL, NULL, slot,
                         x2d, W_ih, h0, out, dx2d, dW_ih, dW_hh, &db_ih[0], &db_hh[0])
    finally:
        _busy[slot] = False
