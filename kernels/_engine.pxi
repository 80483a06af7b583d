# The recurrent engine: one parallel region runs a whole sequence, forward or
# backward, for every cell.  Included by each cell's .pyx after ``_common.pxi``
# and after the cell's gate functions, which are the only per-cell part:
#
#   _cell_forward(running, nu, H, u, acc, g, h_prev, h_next, out, state, saved, extra, flag)
#       one row's units j0 .. j0+nu-1 at step t: ``acc`` holds h_{t-1} W_hh^T for
#       them (gate k of unit jj at acc[k*u + jj]), ``g`` the row's input term
#       x_t W_ih^T + bias (gate k at g[k*H]); the function writes the
#       activated gates back into ``g``, h_t into ``out`` and ``h_next``, and the
#       cell's own state and saved values.  ``running`` false: a step past the
#       sequence's length (h passes through).
#   _cell_infer(the same arguments)
#       _cell_forward for an inference that keeps no gates (int8 compute): it
#       need not write ``g`` or the saved values, only h_t and the state.
#   _cell_backward(running, nu, H, g, saved, prev, d_out, dh, dc, da_x, da_h, extra,
#                  d_extra, flag)
#       the elementwise BPTT of the same units: the gradients of the gates'
#       pre-activations (da_x of the input term, da_h of the recurrent term)
#       from dh = dL/dh_t, which it replaces by the part of dL/dh_{t-1} that
#       does not go through W_hh (zero but in the GRU); the engine then adds
#       da_h W_hh.  ``extra`` is the forward's; the cell adds the gradient of
#       weights of its own that are per unit (the LSTM's peepholes) into
#       ``d_extra``: a unit's items belong to one thread in a step, and the
#       steps are ordered, so the sums need no lock and come out the same
#       whichever thread takes a unit.
#
# Pointers passed to them are already offset to unit j0 of their row; NULL
# for the arrays a cell does not have.  No array they write overlaps another
# they read or write (but where a cell says so: the Elman cell's ``g`` is its
# ``out``), so a cell may declare those arrays ``floating_out`` (restrict,
# _common.pxi) and its loop vectorises without run-time overlap checks.
#
# How the work is split (kernels/engine.h has the details).  W_ih^T and W_hh^T
# are packed into panels of u units holding every gate of those units; the
# forward's work items are (panel, all rows): the input projection of a chunk
# of steps, then each step's product h_{t-1} W_hh^T with the gate arithmetic
# right after it, while the tile of sums is still in L1.  The backward's items
# are (panel of units, all rows): dh_t += da_h[t+1] W_hh for those units, then
# the elementwise backward of step t.  A step starts when the one before is
# complete; in it each thread claims its own share of the items first (the
# same share every step: its panels stay in its core's L2), then what a late
# partner has not started, so one that loses its core delays the others by
# one item, not a step.  The backward goes in chunks of steps (the last
# first): each chunk's steps, then a phase in which the same threads share
# dW_ih, dW_hh, dx and the bias sums of its rows as BLAS GEMMs (_common.pxi's
# _weight_gradients_part), so that it keeps only a chunk of da.
from cython.view cimport array as cvarray
import os as _os

import numpy as np
from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t
from libc.stdlib cimport calloc


# The int8 inference's cell, called through a pointer rather than inlined
# into _forward_worker: inlined, its vector code left gcc too few registers
# for the row loop's dozen pointers, which it kept on the stack and updated
# there; called, the cell has the registers to itself.  Measured, AMD EPYC
# Zen 5, 2 threads, int8 inference, 8 alternations of the two builds, best
# call within 0.4 s each, old / new: (1, 64, 1024) LSTM 1.12-1.16x, GRU
# 1.05-1.14x, Elman 1.02-1.10x faster; (16, 256) and (64, 1024) level
# (medians 0.99-1.03x).  A pointer, because Cython has no noinline: gcc
# cannot see through a variable set when the module is imported.
ctypedef void (*_cell_infer_fn)(bint, Py_ssize_t, Py_ssize_t, Py_ssize_t, const float*,
                                float*, const float*, float*, float*, float*, float*,
                                const float*, int) noexcept nogil


cdef void _cell_infer_f32(bint running, Py_ssize_t nu, Py_ssize_t H, Py_ssize_t u,
                          const float* acc, float* g, const float* h_prev, float* h_next,
                          float* out, float* state, float* saved, const float* extra,
                          int flag) noexcept nogil:
    _cell_infer(running, nu, H, u, acc, g, h_prev, h_next, out, state, saved, extra, flag)


cdef _cell_infer_fn _cell_infer_called = _cell_infer_f32


cdef extern from "<stdlib.h>" nogil:
    void* aligned_alloc(size_t alignment, size_t size)
from libc.string cimport memcpy, memset

cdef extern from "Python.h":
    # Declared without an exception value: the exception it sets stays
    # pending until the kernel returns (see _raise_pending).
    int _check_signals "PyErr_CheckSignals" ()

cdef extern from "engine.h" nogil:
    ctypedef struct fastrnn_steps:
        int done
        int abort
        int solo
    void fastrnn_steps_init(fastrnn_steps* s, long per_phase, long* claims)
    int fastrnn_steps_wait(fastrnn_steps* s, long phase)
    int fastrnn_steps_claim(fastrnn_steps* s, long i, long phase)
    void fastrnn_steps_done(fastrnn_steps* s)
    void fastrnn_steps_abort(fastrnn_steps* s)
    int fastrnn_steps_aborted(fastrnn_steps* s)
    ctypedef struct fastrnn_groups:
        long* next
        int* held
        long n
        long end
        long most
    void fastrnn_groups_release(fastrnn_groups* g, long lo, long n, long phase)
    long fastrnn_groups_take(fastrnn_groups* g, long prefer, int team, long* lo, long* phase,
                             const int* abort)
    long fastrnn_l2_bytes()
    double fastrnn_now()
    int fastrnn_lanes_f32()
    int fastrnn_lanes_f64()
    int fastrnn_tile_rows(int nv)
    int fastrnn_tile_split(long left, int most)
    void fastrnn_pack_panel_f32(const float* src, long sk, long sn, long K, long G, long H,
                                long u, long p, float* P)
    void fastrnn_pack_panel_f64(const double* src, long sk, long sn, long K, long G, long H,
                                long u, long p, double* P)
    void fastrnn_tile_f32(const float* A, long lda, int mr, const float* P, long K, int nv,
                          float* C, int add)
    void fastrnn_tile_f64(const double* A, long lda, int mr, const double* P, long K, int nv,
                          double* C, int add)
    void fastrnn_to_bf16(const float* src, long n, uint16_t* dst)
    void fastrnn_round_bf16(const float* src, long n, float* dst)
    int fastrnn_has_dpbf16()
    void fastrnn_pack_panel_bf16(const float* src, long sk, long sn, long K, long G, long H,
                                 long u, long p, uint16_t* P)
    void fastrnn_tile_bf16(const uint16_t* A, long lda, int mr, const uint16_t* P, long K,
                           int nv, float* C, long ldc, int add)
    void fastrnn_pack_rows_bf16(const float* src, long ld, long K, long N, long n0, long NR,
                                uint16_t* P, float* sums)
    void fastrnn_transpose_bf16(const float* src, long ld, long rows, long cols, uint16_t* dst,
                                long ldd)
    void fastrnn_transpose_f32(const float* src, long ld, long rows, long cols, float* dst,
                               long ldd)
    void fastrnn_gemm_bf16(long M, long N, long K2, const uint16_t* A, long lda,
                           const uint16_t* Bp, int nv, float* C, long ldc, int add)
    int fastrnn_has_vnni()
    float fastrnn_quantize_u8(const float* src, long n, long n4, uint8_t* dst)
    void fastrnn_pack_panel_s8(const int8_t* W, const float* s, long K, long K4, long G, long H,
                               long u, long p, int8_t* P, int32_t* init, float* sw)
    ctypedef struct fastrnn_s8_scaled:
        const float* sa
        const float* sw
        const float* bias
        float* dst
        long ldd
        long voff[4]
    void fastrnn_tile_s8(const uint8_t* A, long lda, int mr, const int8_t* P, long K4, int nv,
                         const int32_t* init, int32_t* C, long ldc, int add,
                         const fastrnn_s8_scaled* e)
    void fastrnn_rescale_s8(const int32_t* S, long rows, long NR, const int32_t* add,
                            const float* sa, const float* sw, float* C)
    void fastrnn_rescale_s8_gates(const int32_t* S, long rows, long G, long u, long nu,
                                  const int32_t* add, const float* sa, const float* sw,
                                  const float* bias, long H, float* dst, long ldd)
    int fastrnn_amx_usable()
    void fastrnn_amx_begin()
    void fastrnn_amx_end()
    void fastrnn_product_s8_amx(const uint8_t* A, long lda, long rows, const int8_t* P, long K4,
                                long NR, int32_t* S)

# How often the calling thread looks for Ctrl-C (and other signals) while the
# engine runs.
cdef double _SIGNAL_INTERVAL = 0.005
# Rows of the input projection per work item (a chunk of steps is about this
# many rows); fastrnn/_tuning.py (CHUNK_ROWS) sizes inference buffers by it.
cdef Py_ssize_t _CHUNK_ROWS = 512
# Rows of a product done at once, and the bytes of a panel's block of k that
# stays in L1 while every one of them passes over it (half of a 48 KB L1;
# measured LSTM (16, 256) float32: 64 KB panels read from L2 ran at 37% of
# the sgemm rate).
DEF ROW_BLOCK = 64
# int8 products run on AMX tiles (where usable) for batches of at least this
# many rows (_engine_forward_int8).
DEF _AMX_MIN_BATCH = 8
cdef Py_ssize_t _PANEL_BLOCK_BYTES = 24 * 1024
# int8 under the batch split: the steps a thread runs its row groups before
# handing them back (engine.h, "row groups"; where the input terms come in
# chunks, a chunk), and the most groups it takes at once (0: its share of
# those left).  Measured, 2 threads, LSTM (16, 256, 256), medians of 230
# calls alternating (paired ratios to 8 steps, a share): 16 steps 1.01x,
# 32 1.02x; one group a claim 1.07x (4 steps 1.08x; GRU 1.09x): the rows'
# states then change cores every few steps.  Fixed halves: 1.035x, GRU 1.006x.
cdef Py_ssize_t _GROUP_STEPS = 8
cdef long _GROUP_MOST = 0


def _set_groups(Py_ssize_t steps, long most):
    """Testing and measuring: the row groups' steps a claim (1: a phase, in
    chunks too) and most groups a claim (0: a share)."""
    global _GROUP_STEPS, _GROUP_MOST
    _GROUP_STEPS, _GROUP_MOST = steps, most


cdef int _interrupted() noexcept with gil:
    """Run Python's signal handlers; 1 if one raised (the exception stays set)."""
    return _check_signals() != 0


cdef int _raise_pending() except -1:
    # Returns the exception value with the handler's exception already set.
    return -1


cdef inline int _lanes(floating* dummy) noexcept nogil:
    if floating is float:
        return fastrnn_lanes_f32()
    else:
        return fastrnn_lanes_f64()


cdef inline void _pack_panel(const floating* src, long sk, long sn, long K, long G, long H,
                             long u, long p, floating* P) noexcept nogil:
    if floating is float:
        fastrnn_pack_panel_f32(src, sk, sn, K, G, H, u, p, P)
    else:
        fastrnn_pack_panel_f64(src, sk, sn, K, G, H, u, p, P)


cdef inline void _tile(const floating* A, long lda, int mr, const floating* P, long K, int nv,
                       floating* C, int add) noexcept nogil:
    if floating is float:
        fastrnn_tile_f32(A, lda, mr, P, K, nv, C, add)
    else:
        fastrnn_tile_f64(A, lda, mr, P, K, nv, C, add)


cdef inline void _product(const floating* A, Py_ssize_t lda, Py_ssize_t rows,
                          const floating* panel, Py_ssize_t K, int nv, Py_ssize_t NR,
                          floating* C) noexcept nogil:
    """C (rows, NR) = A (rows, K) @ panel (K, NR), rows <= ROW_BLOCK: k in blocks
    whose slice of the panel stays in L1 while every tile of rows passes over it."""
    cdef Py_ssize_t kc = max(8, _PANEL_BLOCK_BYTES // (NR * <Py_ssize_t>sizeof(floating)))
    cdef Py_ssize_t kb = 0, k_len, r0
    cdef int mr, mr_max = fastrnn_tile_rows(nv)
    while kb < K:
        k_len = min(kc, K - kb)
        r0 = 0
        while r0 < rows:
            mr = fastrnn_tile_split(rows - r0, mr_max)
            _tile(A + r0 * lda + kb, lda, mr, panel + kb * NR, k_len, nv, C + r0 * NR, kb > 0)
            r0 += mr
        kb += k_len


cdef inline void _product_bf16(const uint16_t* A, Py_ssize_t lda, Py_ssize_t rows,
                               const uint16_t* panel, Py_ssize_t K2, int nv, Py_ssize_t NR,
                               float* C) noexcept nogil:
    """_product for bf16 compute: A (rows, 2*K2) bf16 (row stride lda, even), the
    panel in K2 pairs of rows (engine.h, "bfloat16 products"), C float32."""
    cdef Py_ssize_t kc = max(4, _PANEL_BLOCK_BYTES // (NR * 4))  # pairs of k per block
    cdef Py_ssize_t kb = 0, k_len, r0
    cdef int mr, mr_max = fastrnn_tile_rows(nv)
    while kb < K2:
        k_len = min(kc, K2 - kb)
        r0 = 0
        while r0 < rows:
            mr = fastrnn_tile_split(rows - r0, mr_max)
            fastrnn_tile_bf16(A + r0 * lda + 2 * kb, lda, mr, panel + 2 * kb * NR, k_len, nv,
                              C + r0 * NR, NR, kb > 0)
            r0 += mr
        kb += k_len


cdef inline void _operand_product(const floating* A, const uint16_t* Ab, Py_ssize_t lda,
                                  Py_ssize_t rows, const floating* panel,
                                  const uint16_t* panel_b, Py_ssize_t K, int nv, Py_ssize_t NR,
                                  floating* C) noexcept nogil:
    """C (rows, NR) = A (rows, K) @ panel (K, NR) in the pass's precision:
    bf16 pairs when ``Ab`` is not NULL (Ab, panel_b; lda and K counted in bf16
    values, even), else ``A`` and ``panel`` (float32 or float64, or float32
    holding rounded values)."""
    if floating is float:
        if Ab != NULL:
            _product_bf16(Ab, lda, rows, panel_b, K // 2, nv, NR, C)
            return
    _product(A, lda, rows, panel, K, nv, NR, C)


cdef struct _Int8:
    # int8 compute (_engine_forward_int8): the weights' packed panels (K in
    # groups of four: K4 bytes a column, K4 = K rounded up to 4), each
    # panel's column corrections and scales (engine.h, "int8 products";
    # _int8_panels), x's rows quantized (T*B rows of I4 bytes) and their
    # scales, and each thread's quantized h_{t-1} (B rows of H4 bytes, B
    # scales a thread, HQ rows apart).  amx: the products run on AMX tiles
    # (I4, H4 multiples of 64; 16 rows readable past the last of xq and of
    # each thread's hq).
    const int8_t* P_ih
    const int8_t* P_hh
    const int32_t* init_ih
    const int32_t* init_hh
    const float* sw_ih
    const float* sw_hh
    uint8_t* xq
    float* xs
    uint8_t* hq
    float* hs
    Py_ssize_t I4, H4, HQ
    bint amx
    bint per_step  # each step computes its own input term (no chunk phases)
    # Under the batch split: the groups of rows the threads claim a span of
    # phases at a time (engine.h, "row groups"), group i rows
    # i*B//groups.n .. (i+1)*B//groups.n - 1.
    fastrnn_groups* groups
    Py_ssize_t span


cdef inline const int32_t* _sums_s8(const uint8_t* A, Py_ssize_t lda, Py_ssize_t rows,
                                    const int8_t* panel, const int32_t* init, Py_ssize_t K4,
                                    int nv, Py_ssize_t NR, int32_t* S, bint amx,
                                    fastrnn_s8_scaled* e=NULL) noexcept nogil:
    """S (rows rounded up to 16, NR) int32 = the integer product of the
    quantized rows A (rows of K4 groups of four bytes) and a panel (K4
    groups, NR columns; init its corrections), rows <= ROW_BLOCK: on AMX
    tiles (``amx``), or VNNI tiles with k in blocks as in _product.  Returns
    the correction the rescaling must still add (AMX: init), or NULL.  With
    ``e`` the VNNI tiles rescale their last block's sums into e's dst
    themselves (fastrnn_s8_scaled; e's sa and dst at row 0, moved along the
    rows here and left as they were); AMX ignores it.
    (e is moved in place, not copied: gcc copied it as one 64-byte load of
    the fields the caller had just written one by one, which store
    forwarding cannot serve.)"""
    # Groups of k per block (the division only where the panel outgrows one).
    cdef Py_ssize_t kc = (K4 if K4 * NR * 4 <= _PANEL_BLOCK_BYTES
                          else max(4, _PANEL_BLOCK_BYTES // (NR * 4)))
    cdef Py_ssize_t kb = 0, k_len, r0
    cdef int mr, mr_max = fastrnn_tile_rows(nv)
    cdef const float* sa0 = NULL
    cdef float* dst0 = NULL
    cdef fastrnn_s8_scaled* last
    if amx:
        fastrnn_product_s8_amx(A, lda, rows, panel, K4, NR, S)
        return init
    if e != NULL:
        sa0, dst0 = e.sa, e.dst
    while kb < K4:
        k_len = min(kc, K4 - kb)
        last = e if e != NULL and kb + k_len == K4 else NULL
        r0 = 0
        while r0 < rows:
            mr = fastrnn_tile_split(rows - r0, mr_max)
            if last != NULL:
                last.sa = sa0 + r0
                last.dst = dst0 + r0 * last.ldd
            fastrnn_tile_s8(A + r0 * lda + 4 * kb, lda, mr, panel + 4 * kb * NR, k_len, nv, init,
                            S + r0 * NR, NR, kb > 0, last)
            r0 += mr
        kb += k_len
    if e != NULL:
        e.sa, e.dst = sa0, dst0
    return NULL


cdef inline void _scaled_columns(fastrnn_s8_scaled* e, Py_ssize_t G, Py_ssize_t u, Py_ssize_t H,
                                 int nv) noexcept nogil:
    """e.voff for a panel's tile columns (vector v: columns v*L .., column
    c = k*u + jj gate k's unit jj) written into a row of G gate blocks of H."""
    cdef Py_ssize_t L = fastrnn_lanes_f32(), v
    for v in range(nv):
        e.voff[v] = (v * L // u) * H + (v * L) % u


cdef inline void _input_s8(_Int8* q8, Py_ssize_t row, Py_ssize_t mr, Py_ssize_t p, Py_ssize_t G,
                           Py_ssize_t u, Py_ssize_t nu, int nv, Py_ssize_t NR, Py_ssize_t H,
                           Py_ssize_t j0, const void* bias, void* gates,
                           int32_t* S) noexcept nogil:
    """int8 compute's input term of x's rows row .. row+mr-1 for panel p's
    units (j0 ..), rescaled and added to the bias straight into their
    gates (rows of G*H from ``gates``): by the tiles where they are VNNI's
    and the panel is whole, else a pass over the sums."""
    cdef fastrnn_s8_scaled e
    if not q8.amx and nu == u:
        e.sa, e.sw, e.bias = q8.xs + row, q8.sw_ih + p * NR, <const float*>bias + j0
        e.dst, e.ldd = <float*>gates + j0, G * H
        _scaled_columns(&e, G, u, H, nv)
        _sums_s8(q8.xq + row * q8.I4, q8.I4, mr, q8.P_ih + p * q8.I4 * NR, q8.init_ih + p * NR,
                 q8.I4 // 4, nv, NR, S, False, &e)
        return
    fastrnn_rescale_s8_gates(
        S, mr, G, u, nu,
        _sums_s8(q8.xq + row * q8.I4, q8.I4, mr, q8.P_ih + p * q8.I4 * NR, q8.init_ih + p * NR,
                 q8.I4 // 4, nv, NR, S, q8.amx),
        q8.xs + row, q8.sw_ih + p * NR, <const float*>bias + j0, H, <float*>gates + j0, G * H)


cdef inline void _product_s8(const uint8_t* A, Py_ssize_t lda, Py_ssize_t rows, const float* sa,
                             const int8_t* panel, const int32_t* init, const float* sw,
                             Py_ssize_t K4, int nv, Py_ssize_t NR, int32_t* S,
                             float* C, bint amx) noexcept nogil:
    """C (rows, NR) float32 = the int8 product of the quantized rows A (scales
    sa) and a panel (init, sw its corrections and scales): _sums_s8, rescaled
    (by VNNI's tiles themselves)."""
    cdef fastrnn_s8_scaled e
    if not amx:
        e.sa, e.sw, e.bias, e.dst, e.ldd = sa, sw, NULL, C, NR
        _scaled_columns(&e, 1, NR, NR, nv)  # the tile's own layout: one block of NR
        _sums_s8(A, lda, rows, panel, init, K4, nv, NR, S, False, &e)
        return
    fastrnn_rescale_s8(S, rows, NR, _sums_s8(A, lda, rows, panel, init, K4, nv, NR, S, amx),
                       sa, sw, C)


cdef inline floating* _offset(floating* p, Py_ssize_t i) noexcept nogil:
    return NULL if p == NULL else p + i


cdef inline uint16_t* _offset16(uint16_t* p, Py_ssize_t i) noexcept nogil:
    return NULL if p == NULL else p + i


cdef struct _SignalClock:
    double next_check  # when to run the signal handlers next
    int stride         # phases between two readings of the clock
    int countdown      # phases left until the next reading


cdef inline bint _check_now(_SignalClock* s) noexcept nogil:
    """True when the calling thread should look for signals now.

    Reading the clock costs about 20 ns, a short step under 1 us (measured
    2% of an LSTM (1, 64) inference), so the clock is read every ``stride``
    phases: the stride doubles (up to 1024) while a reading comes within a
    tenth of the interval of the last look, and halves when a reading comes
    a whole interval late, so looks stay between about a tenth of the
    interval and twice it whatever a phase costs."""
    cdef double now
    s.countdown -= 1
    if s.countdown > 0:
        return False
    now = fastrnn_now()
    if now < s.next_check:
        if s.next_check - now > 0.9 * _SIGNAL_INTERVAL and s.stride < 1024:
            s.stride *= 2
        s.countdown = s.stride
        return False
    if now > s.next_check + _SIGNAL_INTERVAL and s.stride > 1:
        s.stride //= 2
    s.countdown = s.stride
    s.next_check = now + _SIGNAL_INTERVAL
    return True


# Short sequences skip the packing and go to BLAS's products directly
# (``_forward_unpacked``): packing W_ih and W_hh costs 0.3-1.5 ns an element,
# which a few steps or few rows do not win back.  Measured, LSTM float32,
# 2 threads, ms a forward, packed / BLAS a step at a time:
#   T=1 B=64 H=512 4.6 / 1.9    T=3 B=64 H=512 6.5 / 4.1    T=8 B=64 H=512 15.0 / 15.3
#   T=64 B=1 H=512 9.2 / 5.0    T=256 B=1 H=512 21.0 / 19.1  T=32 B=8 H=512 10.7 / 16.8
#   T=2 B=16 H=256 0.36 / 0.35  T=4 B=16 H=256 0.59 / 0.61   T=16 B=16 H=256 1.9 / 3.0
# So: at most 4 steps, or at most 64 rows (T*B), take BLAS's products.
DEF _UNPACKED_MAX_STEPS = 4
DEF _UNPACKED_MAX_ROWS = 64
# A short sequence's products run on the calling thread with OpenBLAS kept to
# it (_blas_local(1)) when the engine would run on one thread (small steps,
# fastrnn/_tuning.py) or a step's product (B x G*H x max(I, H)) is below this
# many multiply-adds: OpenBLAS's pool, once woken, spins on the cores for a
# while after the call, and beside another pool (PyTorch's, in fastrnn.torch)
# that cost an LSTM (1, 64) T=64 and its read-out 4 ms instead of 0.1 ms.
DEF _SOLO_MADDS = 1 << 20


cdef object _get_num_threads = None


cdef int _pool_threads() except -1:
    """fastrnn's thread count (``fastrnn.set_num_threads``, which it gives every
    BLAS pool): what OpenBLAS's count is set back to after products kept to
    one thread, whatever share of it a call's team is."""
    global _get_num_threads
    if _get_num_threads is None:
        from fastrnn._threads import get_num_threads
        _get_num_threads = get_num_threads
    return _get_num_threads()


cdef inline bint _solo(Py_ssize_t B, Py_ssize_t GH, Py_ssize_t K, int num_threads,
                       int pool) noexcept nogil:
    return pool > 1 and _blas_local != NULL and (num_threads == 1 or B * GH * K < _SOLO_MADDS)


cdef int _forward_unpacked(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                           const floating[:, ::1] W_hh, const floating[::1] bias,
                           const floating[:, ::1] h0, const int64_t[::1] lengths,
                           floating* gates, Py_ssize_t ring, floating* out, floating* state,
                           floating* saved, const floating* extra, int flag,
                           floating[:, ::1] h_n, int num_threads, int pool) except -1:
    """_engine_forward for a few steps: BLAS products (its own threads, or only
    the calling thread for small steps: _solo), the cell's gate arithmetic on
    whole rows (the gate stride of ``acc`` is H)."""
    cdef Py_ssize_t B = h0.shape[0], H = h0.shape[1], I = x2d.shape[1]
    cdef Py_ssize_t T = x2d.shape[0] // B, GH = W_hh.shape[0], t, b, j, row
    cdef floating* work = <floating*>malloc((B * GH + 2 * B * H) * sizeof(floating))
    cdef floating* h_prev
    cdef floating* h_next
    cdef bint solo = _solo(B, GH, max(I, H), num_threads, pool)
    if work == NULL:
        raise MemoryError()
    try:
        with nogil:
            if solo:
                _blas_local(1)
            h_prev = work + B * GH
            h_next = h_prev + B * H
            memcpy(h_prev, &h0[0, 0], B * H * sizeof(floating))
            if ring == T:
                # Every step's input term in one product (W_ih read once).
                _gemm(False, True, <int>(T * B), <int>GH, <int>I, 1, &x2d[0, 0], <int>I,
                      &W_ih[0, 0], <int>I, 0, gates, <int>GH)
                for row in range(T * B):
                    for j in range(GH):
                        gates[row * GH + j] += bias[j]
            for t in range(T):
                if ring < T:
                    # The input term into the ring's row for this step.
                    _gemm(False, True, <int>B, <int>GH, <int>I, 1, &x2d[t * B, 0], <int>I,
                          &W_ih[0, 0], <int>I, 0, gates + (t % ring) * B * GH, <int>GH)
                    for b in range(B):
                        row = ((t % ring) * B + b) * GH
                        for j in range(GH):
                            gates[row + j] += bias[j]
                # The recurrent term.
                _gemm(False, True, <int>B, <int>GH, <int>H, 1, h_prev, <int>H, &W_hh[0, 0],
                      <int>H, 0, work, <int>GH)
                for b in range(B):
                    _cell_forward(t < lengths[b], H, H, H, work + b * GH,
                                  gates + ((t % ring) * B + b) * GH, h_prev + b * H,
                                  h_next + b * H, out + (t * B + b) * H,
                                  _offset(state, b * H), _offset(saved, ((t % ring) * B + b) * H),
                                  extra, flag)
                h_prev, h_next = h_next, h_prev
            memcpy(&h_n[0, 0], h_prev, B * H * sizeof(floating))
    finally:
        if solo:
            _blas_local(pool)  # fastrnn's count, as in _weight_gradients
        free(work)
    return 0


cdef int _backward_unpacked(const floating[:, ::1] W_hh, const int64_t[::1] lengths,
                            const floating* g_seq, const floating* saved,
                            const floating* prev_seq, const floating* prev0,
                            const floating[:, :, ::1] d_out, floating[:, ::1] dh, floating* dc,
                            floating* da_x, floating* da_h, Py_ssize_t ring,
                            Py_ssize_t t0, Py_ssize_t t1, const floating* extra,
                            floating* d_extra, int flag) except -1:
    """Steps t1-1 down to t0 of _engine_backward, with BLAS's product (see
    _forward_unpacked): a short sequence."""
    cdef Py_ssize_t B = d_out.shape[1], H = d_out.shape[2]
    cdef Py_ssize_t GH = W_hh.shape[0], t, b, j, tb, sb
    cdef floating* work = <floating*>malloc(B * H * sizeof(floating))
    if work == NULL:
        raise MemoryError()
    try:
        with nogil:
            for t in range(t1 - 1, t0 - 1, -1):
                for b in range(B):
                    tb = t * B + b
                    sb = (t % ring) * B + b
                    _cell_backward(t < lengths[b], H, H, g_seq + tb * GH, _offset(<floating*>saved, tb * H),
                                   (_offset(<floating*>prev_seq, (tb - B) * H) if t > 0
                                    else _offset(<floating*>prev0, b * H)),
                                   &d_out[t, b, 0], &dh[b, 0], _offset(dc, b * H),
                                   da_x + sb * GH, da_h + sb * GH, extra, d_extra, flag)
                # dh_{t-1} += da_h[t] W_hh for the rows still running at t.
                _gemm(False, False, <int>B, <int>H, <int>GH, 1, da_h + (t % ring) * B * GH, <int>GH,
                      &W_hh[0, 0], <int>H, 0, work, <int>H)
                for b in range(B):
                    if t < lengths[b]:
                        for j in range(H):
                            dh[b, j] += work[b * H + j]
    finally:
        free(work)
    return 0


# ---- forward -----------------------------------------------------------------

cdef void _forward_worker(fastrnn_steps* steps, int tid, Py_ssize_t n_phases,
                          Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t G,
                          Py_ssize_t u, int nv, Py_ssize_t per_item, Py_ssize_t chunk,
                          Py_ssize_t ring,
                          const floating* x2d, const floating* W_ih, const floating* W_hh,
                          const floating* bias, const int64_t* lengths,
                          floating* P_ih, floating* P_hh, floating* gates, floating* hbuf,
                          floating* out, floating* state, floating* saved,
                          const floating* extra, int flag, uint16_t* xb, uint16_t* hb,
                          Py_ssize_t I2, Py_ssize_t H2, floating* xr,
                          floating* hr, bint split, _Int8* q8) noexcept nogil:
    """One thread's share of a forward: items until the counter runs out.

    Phase 0 packs the panels; then each chunk of ``chunk`` steps is a phase
    projecting the chunk's inputs into ``gates``, followed by one phase per
    step.  Step t's gates and saved values are row t % ring of theirs.

    Tried: each step computing its own input term right before its
    recurrent product, into a tile still in L1, so that the input terms
    never go through memory (the profile of a bf16 LSTM (16, 256) step
    showed the gate loop waiting on their loads): 0.95-1.05x the chunked
    projection at B >= 8 and 0.77-0.86x at B = 1 (2 threads, float32 and
    bf16, interleaved), so not kept.

    bf16 compute on the pair tiles (vdpbf16ps) when ``hb`` is not NULL: P_ih
    and P_hh then hold bf16 pair panels (cast to uint16_t*), phase 0 also
    rounds x into xb (T*B, I2), and each step rounds its h_t into hb's other
    half (two (B, H2) halves), the A operands of the products; I2, H2 are I,
    H rounded up to even.  bf16 compute on float32 tiles when ``hr`` is not
    NULL (a level without vdpbf16ps): the panels' values are rounded in
    place, x into xr (T*B, I), each h_t into hr's other half (two (B, H)).

    int8 compute when ``q8`` is not NULL (float32; W_ih, W_hh unused): phase
    0 quantizes x's rows into q8.xq; each step starts with the thread
    quantizing the rows of h_{t-1} it runs (all of them unless ``split``: a
    row's scale needs the whole row, which the threads of a step write in
    parts) into its own q8.hq.  With q8.per_step each step computes each
    tile's input term right before its recurrent term (the chunk phases do
    nothing): see _engine_forward_int8.

    ``split``: after phase 0 (packed by the team together) each thread runs
    its own rows of the batch through every later phase alone, on a counter
    of its own: no barrier between steps (_engine_forward, _split_batch).
    """
    cdef Py_ssize_t GH = G * H, NR = G * u, n_panels = (H + u - 1) // u
    cdef Py_ssize_t n_items = (n_panels + per_item - 1) // per_item
    cdef int team = fastrnn_team_size()
    cdef bint main_thread = tid == 0
    cdef Py_ssize_t own = tid * n_items // team, mine = (tid + 1) * n_items // team - own
    # The rows this thread runs from phase 1 on: all of them, or its share.
    cdef Py_ssize_t b0 = tid * B // team if split else 0
    cdef Py_ssize_t b1 = (tid + 1) * B // team if split else B
    cdef Py_ssize_t seg, n_seg, seg_rows, start
    cdef fastrnn_steps alone
    cdef long alone_claim
    cdef fastrnn_steps* shared = steps
    # int8 under the batch split: row groups (engine.h), g_n of them from
    # g_lo held for the phases up to ``end``.
    cdef bint grouped = split and q8 != NULL and q8.groups != NULL
    cdef long g_lo = 0, g_n = 0, g_phase = 0
    cdef long g_pref = tid * q8.groups.n // team if grouped else 0
    cdef Py_ssize_t end = 1 if grouped else n_phases
    cdef Py_ssize_t k_item, phase, item, p, j0, nu, t, b, r0, r, k, jj, row, rows, first, mr
    cdef floating acc[ROW_BLOCK * 64]  # rows of up to 4 vectors of 16 lanes
    cdef int32_t sums[(ROW_BLOCK + 16) * 64]  # int8 compute's integer sums
    cdef uint8_t* hq = NULL  # int8: this thread's quantized h_{t-1} and its scales
    cdef float* hs = NULL
    cdef floating* h_prev
    cdef floating* h_next
    cdef floating* g
    cdef _SignalClock clock = [0, 1, 1]
    cdef bint pairs = hb != NULL, rounded = hr != NULL
    # The products' operands and panels in the forward's precision (the
    # NULL/float ones unused): x rows of lda_x values, K_x of them read.
    cdef const floating* x_op = xr if rounded else x2d
    cdef Py_ssize_t lda_x = I2 if pairs else I, lda_h = H2 if pairs else H
    cdef floating* h_ops = hr if rounded else hbuf  # two (B, lda_h) halves
    cdef uint16_t* Pb_ih = <uint16_t*>P_ih if pairs else NULL
    cdef uint16_t* Pb_hh = <uint16_t*>P_hh if pairs else NULL
    if q8 != NULL:
        hq = q8.hq + tid * q8.HQ * q8.H4
        hs = q8.hs + tid * q8.HQ
        if q8.amx:
            fastrnn_amx_begin()
    if team == 1:  # no partner: the counter needs no locked instructions
        steps.solo = 1
    phase = 0
    while True:
        if split and phase == 1 and steps == shared:
            # Every panel packed: from here on this thread's rows, alone.
            if not fastrnn_steps_wait(shared, 1):
                break
            fastrnn_steps_init(&alone, 1, &alone_claim)
            alone.done = 1  # phase 0, done together
            alone.solo = 1  # this thread's own counter
            steps = &alone
            per_item = n_panels
            n_items, own, mine = 1, 0, 1
        if phase == end:
            if not grouped:
                break
            # Row groups: a span of phases done (or none yet): hand the
            # groups back and take the next ones, wherever they stand.
            if g_n:
                fastrnn_groups_release(q8.groups, g_lo, g_n, phase)
            g_n = fastrnn_groups_take(q8.groups, g_pref, team, &g_lo, &g_phase, &shared.abort)
            if g_n == 0:
                break
            g_pref, phase = g_lo, g_phase
            end = min(n_phases, phase + q8.span)
            b0, b1 = g_lo * B // q8.groups.n, (g_lo + g_n) * B // q8.groups.n
            alone.done, alone_claim = <int>phase, phase - 1  # its counter at the span's start
        if split and fastrnn_steps_aborted(shared):
            break
        if not fastrnn_steps_wait(steps, phase):
            break
        if q8 != NULL and phase > 0 and (phase - 1) % (chunk + 1) != 0:
            t = ((phase - 1) // (chunk + 1)) * chunk + (phase - 1) % (chunk + 1) - 1
            if t < T:
                for b in range(b0, b1):
                    hs[b] = fastrnn_quantize_u8(<float*>hbuf + (t % 2) * B * H + b * H, H, q8.H4,
                                                hq + b * q8.H4)
        for k_item in range(n_items):
            # Own items first, then the partners' from the far end.
            item = (own + k_item if k_item < mine
                    else (own - 1 - (k_item - mine) + n_items) % n_items)
            if not fastrnn_steps_claim(steps, item, phase):
                continue
            for p in range(item * per_item, min((item + 1) * per_item, n_panels)):
                j0 = p * u
                nu = min(u, H - j0)
                if phase == 0:
                    # W_ih^T (I, G*H) and W_hh^T (H, G*H), this panel of each,
                    # and in bf16 this panel's share of x's rows, rounded
                    # (in int8, quantized).
                    if floating is float:
                        if q8 != NULL:  # the panels are packed already (_int8_panels)
                            for row in range(p * T * B // n_panels, (p + 1) * T * B // n_panels):
                                q8.xs[row] = fastrnn_quantize_u8(<float*>x2d + row * I, I, q8.I4,
                                                                 q8.xq + row * q8.I4)
                            continue
                        if pairs:
                            fastrnn_pack_panel_bf16(W_ih, 1, I, I, G, H, u, p, Pb_ih + p * I2 * NR)
                            fastrnn_pack_panel_bf16(W_hh, 1, H, H, G, H, u, p, Pb_hh + p * H2 * NR)
                            for row in range(p * T * B // n_panels, (p + 1) * T * B // n_panels):
                                fastrnn_to_bf16(x2d + row * I, I, xb + row * I2)
                            continue
                    _pack_panel(W_ih, 1, I, I, G, H, u, p, P_ih + p * I * NR)
                    _pack_panel(W_hh, 1, H, H, G, H, u, p, P_hh + p * H * NR)
                    if floating is float:
                        if rounded:
                            fastrnn_round_bf16(P_ih + p * I * NR, I * NR, P_ih + p * I * NR)
                            fastrnn_round_bf16(P_hh + p * H * NR, H * NR, P_hh + p * H * NR)
                            for row in range(p * T * B // n_panels, (p + 1) * T * B // n_panels):
                                fastrnn_round_bf16(x2d + row * I, I, xr + row * I)
                elif (phase - 1) % (chunk + 1) == 0:
                    if q8 != NULL and q8.per_step:
                        continue  # each step's own, below
                    # The input term of the chunk's steps, for this panel's units
                    # and this thread's rows: one run of rows (every step's
                    # whole batch), or a run per step.
                    first = ((phase - 1) // (chunk + 1)) * chunk
                    rows = (min(first + chunk, T) - first) * B
                    n_seg, seg_rows = 1, rows
                    if b1 - b0 < B:
                        n_seg, seg_rows = rows // B, b1 - b0
                    for seg in range(n_seg):
                        start = seg * B + b0  # row of the chunk
                        r0 = 0
                        while r0 < seg_rows:
                            mr = min(ROW_BLOCK, seg_rows - r0)
                            row = first * B + start + r0
                            if q8 != NULL:  # rescaled straight into the gates, with the bias
                                _input_s8(q8, row, mr, p, G, u, nu, nv, NR, H, j0, bias,
                                          gates + ((first % ring) * B + start + r0) * GH, sums)
                                r0 += mr
                                continue
                            _operand_product(x_op + row * lda_x, _offset16(xb, row * lda_x),
                                             lda_x, mr, P_ih + p * I * NR,
                                             _offset16(Pb_ih, p * I2 * NR), lda_x, nv, NR, acc)
                            for r in range(mr):
                                row = (first % ring) * B + start + r0 + r
                                for k in range(G):
                                    for jj in range(nu):
                                        gates[row * GH + k * H + j0 + jj] = (
                                            acc[r * NR + k * u + jj] + bias[k * H + j0 + jj])
                            r0 += mr
                else:
                    t = ((phase - 1) // (chunk + 1)) * chunk + (phase - 1) % (chunk + 1) - 1
                    if t >= T:
                        continue
                    h_prev = hbuf + (t % 2) * B * H
                    h_next = hbuf + ((t + 1) % 2) * B * H
                    r0 = b0
                    while r0 < b1:
                        mr = min(ROW_BLOCK, b1 - r0)
                        if q8 != NULL:
                            if q8.per_step:
                                # The input term of these rows into their gates (still
                                # in L1 when the cell reads them), then the recurrent term.
                                _input_s8(q8, t * B + r0, mr, p, G, u, nu, nv, NR, H, j0, bias,
                                          gates + ((t % ring) * B + r0) * GH, sums)
                            _product_s8(hq + r0 * q8.H4, q8.H4, mr, hs + r0,
                                        q8.P_hh + p * q8.H4 * NR, q8.init_hh + p * NR,
                                        q8.sw_hh + p * NR, q8.H4 // 4, nv, NR, sums, <float*>acc,
                                        q8.amx)
                        else:
                            _operand_product(h_ops + (t % 2) * B * lda_h + r0 * lda_h,
                                             _offset16(hb, (t % 2) * B * lda_h + r0 * lda_h),
                                             lda_h, mr, P_hh + p * H * NR,
                                             _offset16(Pb_hh, p * H2 * NR), lda_h, nv, NR, acc)
                        if q8 != NULL:
                            # An inference's gate arithmetic, which keeps no gates
                            # (fewer divisions: the cells' _cell_infer).
                            for r in range(mr):
                                b = r0 + r
                                if floating is float:  # (int8 compute is float32 only)
                                    _cell_infer_called(
                                        t < lengths[b], nu, H, u, acc + r * NR,
                                        gates + ((t % ring) * B + b) * GH + j0,
                                        h_prev + b * H + j0, h_next + b * H + j0,
                                        out + (t * B + b) * H + j0, _offset(state, b * H + j0),
                                        _offset(saved, ((t % ring) * B + b) * H + j0),
                                        _offset(<floating*>extra, j0), flag)
                            r0 += mr
                            continue
                        for r in range(mr):
                            b = r0 + r
                            g = gates + ((t % ring) * B + b) * GH + j0
                            _cell_forward(t < lengths[b], nu, H, u, acc + r * NR, g,
                                          h_prev + b * H + j0, h_next + b * H + j0,
                                          out + (t * B + b) * H + j0, _offset(state, b * H + j0),
                                          _offset(saved, ((t % ring) * B + b) * H + j0),
                                          _offset(<floating*>extra, j0), flag)
                            if floating is float:
                                if pairs:
                                    fastrnn_to_bf16(h_next + b * H + j0, nu,
                                                    hb + ((t + 1) % 2) * B * H2 + b * H2 + j0)
                                elif rounded:
                                    fastrnn_round_bf16(h_next + b * H + j0, nu,
                                                       hr + ((t + 1) % 2) * B * H + b * H + j0)
                        r0 += mr
            fastrnn_steps_done(steps)
        if main_thread and _check_now(&clock) and _interrupted():
            fastrnn_steps_abort(shared)
            break
        phase += 1
    if q8 != NULL and q8.amx:
        fastrnn_amx_end()


# Testing and measuring: 1 forces the batch split on (where B allows it), 0
# off, -1 chooses (_split_batch); 2 forces it on in fixed shares (int8
# without its row groups).
cdef int _split_override = -1


def _set_split(int mode):
    global _split_override
    _split_override = mode


cdef inline bint _split_batch(Py_ssize_t B, Py_ssize_t GH, Py_ssize_t H, int num_threads,
                              Py_ssize_t value_bytes) noexcept nogil:
    """Whether the forward's threads each take a share of the batch's rows
    through every step (never waiting for each other after the packing)
    rather than a share of the units of every step (a barrier per step).

    Each thread then reads all of W_hh's panels every step rather than its
    share: the split is kept from the one case where that costs, W_hh
    outgrowing the L2 that its share fits, unless a thread's rows are many
    enough to spread the reads.  Measured (split / units, 2 threads, best
    of interleaved inferences; bf16 unless said):
      LSTM (16, 256) 1.03-1.05, float32 1.03; (64, 256) 1.17; (8, 256) 1.04;
      (4, 256) 0.90 (2 rows a thread); (16, 512) and (32, 512) 0.95-0.96
      (W_hh 2 MB, a share 1 MB), float32 1.02-1.03; (64, 1024) 1.00
      GRU (16, 256) 1.03, float32 1.02; (64, 1024) 1.02; (32, 512) 0.96
      Elman (16, 256) 1.17, float32 1.07; (32, 256) 1.60; (64, 256) 1.74;
      (64, 1024) 1.16 (W_hh 2 MB, 32 rows a thread)
      training's forward, (16, 256): LSTM 1.03, GRU 1.10, Elman 1.13.
    int8 (value_bytes 1) keeps to the units where W_hh outgrows L2, however
    many the rows: each thread streaming all of it every step cost more
    than the barrier (Intel Xeon, VNNI, 2 threads, units / split, medians
    of 6 interleaved: LSTM (64, 1024) 0.92-0.96, (32, 1024) 0.89; GRU
    (64, 1024) 0.85-0.97; LSTM (64, 512), W_hh 1 MB, 0.98: split kept)."""
    cdef Py_ssize_t w = H * GH * value_bytes, l2 = fastrnn_l2_bytes()
    if num_threads < 2 or B < num_threads:
        return False
    if _split_override >= 0:
        return _split_override >= 1
    return B >= 4 * num_threads and (w <= l2 or w > num_threads * l2
                                     or B >= 32 * num_threads and value_bytes > 1)


cdef int _engine_forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                         const floating[:, ::1] W_hh, const floating[::1] bias,
                         const floating[:, ::1] h0, const int64_t[::1] lengths,
                         int num_threads, floating* gates, Py_ssize_t ring, floating* out,
                         floating* state, floating* saved, const floating* extra, int flag,
                         floating[:, ::1] h_n, bint bf16=False) except -1:
    """The forward of one sequence.  gates (ring, B, G*H): the input terms,
    then the activated gates; out (T, B, H); state (B, H) the cell's second
    state, updated in place, or NULL; saved (ring, B, H) or NULL; extra (H,)
    or NULL.  ring = T keeps every step's gates and saved values (training);
    ring < T keeps the last ``ring`` steps' (inference: the memory the
    forward needs does not grow with T).

    bf16 (float32 only): the products read bf16 weights, x and h_{t-1}
    (rounded to nearest even) and accumulate in float32; the rest is as in
    float32.  Always on the packed path, whatever T: the short sequences'
    BLAS products have no bf16 operands."""
    cdef Py_ssize_t B = h0.shape[0], H = h0.shape[1], I = x2d.shape[1]
    cdef Py_ssize_t T = x2d.shape[0] // B, G = W_hh.shape[0] // H
    # Vectors of columns per tile: every gate of u units.  The Elman cell's
    # one gate takes 2 (u = 32 at AVX-512), or 4 where a step is one tile of
    # a few rows (half the tile and cell calls a step; f32 inference, one
    # thread, min of 6 interleaved runs: (1, 64) 0.222 -> 0.216 ms, medians
    # 0.259 -> 0.237; (4, 64) 0.600 -> 0.544; with 16 rows its training
    # forward ran 7-10% slower).
    cdef int nv = G if G >= 3 else 4 if B < 8 and _lanes(<floating*>NULL) == 16 else 2
    cdef Py_ssize_t u = _lanes(<floating*>NULL) * (nv // G)
    cdef Py_ssize_t n_panels = (H + u - 1) // u
    # One thread takes a whole phase at once; several take a panel at a time.
    cdef Py_ssize_t per_item = n_panels if num_threads == 1 else 1
    cdef Py_ssize_t chunk = ring if ring < T else max(1, min(T, _CHUNK_ROWS // B))
    cdef Py_ssize_t n_chunks = (T + chunk - 1) // chunk
    cdef Py_ssize_t n_items = (n_panels + per_item - 1) // per_item
    cdef bint split
    cdef fastrnn_steps steps
    cdef floating* P_ih = NULL
    cdef floating* P_hh = NULL
    cdef floating* hbuf = NULL
    cdef long* claims = NULL
    # bf16: x and the two halves of h as bf16 rows of even length (an odd
    # one's last pair padded with a zero, which calloc leaves in place).
    cdef Py_ssize_t I2 = I + I % 2, H2 = H + H % 2
    cdef uint16_t* xb = NULL
    cdef uint16_t* hb = NULL
    cdef floating* xr = NULL
    cdef floating* hr = NULL
    # bf16 on the pair tiles where the level has vdpbf16ps, else on float32
    # tiles of rounded values (engine.h, "bfloat16 products").
    cdef bint pairs = bf16 and fastrnn_has_dpbf16()
    cdef Py_ssize_t b
    if floating is double:
        bf16 = pairs = False
    split = _split_batch(B, G * H, H, num_threads, 2 if pairs else sizeof(floating))
    if not bf16 and (T <= _UNPACKED_MAX_STEPS or T * B <= _UNPACKED_MAX_ROWS):
        return _forward_unpacked(x2d, W_ih, W_hh, bias, h0, lengths, gates, ring, out, state,
                                 saved, extra, flag, h_n, num_threads, _pool_threads())
    if pairs:
        P_ih = <floating*>malloc(n_panels * I2 * G * u * sizeof(uint16_t))
        P_hh = <floating*>malloc(n_panels * H2 * G * u * sizeof(uint16_t))
        xb = <uint16_t*>calloc(T * B * I2, sizeof(uint16_t))
        hb = <uint16_t*>calloc(2 * B * H2, sizeof(uint16_t))
    else:
        P_ih = <floating*>malloc(n_panels * I * G * u * sizeof(floating))
        P_hh = <floating*>malloc(n_panels * H * G * u * sizeof(floating))
        if bf16:
            xr = <floating*>malloc(T * B * I * sizeof(floating))
            hr = <floating*>malloc(2 * B * H * sizeof(floating))
    hbuf = <floating*>malloc(2 * B * H * sizeof(floating))
    claims = <long*>malloc(n_items * sizeof(long))
    try:
        if (P_ih == NULL or P_hh == NULL or hbuf == NULL or claims == NULL
                or pairs and (xb == NULL or hb == NULL)
                or bf16 and not pairs and (xr == NULL or hr == NULL)):
            raise MemoryError()
        with nogil:
            memcpy(hbuf, &h0[0, 0], B * H * sizeof(floating))
            if floating is float:
                if pairs:
                    for b in range(B):
                        fastrnn_to_bf16(&h0[b, 0], H, hb + b * H2)
                elif bf16:
                    fastrnn_round_bf16(&h0[0, 0], B * H, hr)
            fastrnn_steps_init(&steps, n_items, claims)
            with parallel(num_threads=num_threads):
                _forward_worker(&steps, threadid(), 1 + n_chunks * (chunk + 1),
                                T, B, I, H, G, u, nv, per_item, chunk, ring,
                                &x2d[0, 0], &W_ih[0, 0], &W_hh[0, 0], &bias[0], &lengths[0],
                                P_ih, P_hh, gates, hbuf, out, state, saved, extra, flag,
                                xb, hb, I2, H2, xr, hr, split, NULL)
            memcpy(&h_n[0, 0], hbuf + (T % 2) * B * H, B * H * sizeof(floating))
        if steps.abort:
            _raise_pending()
    finally:
        free(P_ih)
        free(P_hh)
        free(hbuf)
        free(claims)
        free(xb)
        free(hb)
        free(xr)
        free(hr)
    return 0


cdef int _engine_forward_int8(const float[:, ::1] x2d, object W_ih, object W_hh,
                              const float[::1] bias, const float[:, ::1] h0,
                              const int64_t[::1] lengths, int num_threads, float* gates,
                              Py_ssize_t ring, float* out, float* state, float* saved,
                              const float* extra, int flag, float[:, ::1] h_n) except -1:
    """_engine_forward in int8 compute (inference): W_ih (G*H, I) and W_hh
    (G*H, H) are fastrnn.quantization.QuantizedWeights (int8 rows and their
    scales); x's rows and each step's h_{t-1} are quantized per row; the
    products summed in int32 (engine.h, "int8 products") and rescaled to
    float32 before the cell's gate arithmetic, in float32 (the cells'
    _cell_infer: no gates kept, fewer divisions).  Always on the packed path.

    ring 1: each step computes its input term right before its recurrent
    term, into gates still in L1 (fastrnn._tuning.int8_kept_steps chooses
    it where the weights fit the L2 cache and a step has 8 rows or more:
    writing a chunk's input terms out and reading them back took 20% of an
    LSTM (16, 256) inference's profile); otherwise chunks of ring steps as
    in _engine_forward, of about 8 rows where the weights outgrow L2
    (larger chunks measured slower) and 64 where a step's few rows made
    tiles of one or two (int8_kept_steps)."""
    cdef Py_ssize_t B = h0.shape[0], H = h0.shape[1], I = x2d.shape[1]
    cdef Py_ssize_t T = x2d.shape[0] // B, G = W_hh.shape[0] // H
    # Four vectors of columns for the Elman cell too at AVX-512 (u = 64
    # units a panel, not 32): half the tile and cell calls a step (Elman
    # int8, one thread, min of 8 interleaved runs: (1, 64) 0.168 -> 0.139
    # ms, (16, 256) 2.39 -> 2.29).  AVX2's 16 registers hold 3 rows of such
    # tiles (fastrnn_tile_rows): 2 there.
    cdef int nv = G if G >= 3 else 4 if fastrnn_lanes_f32() == 16 else 2
    cdef Py_ssize_t u = fastrnn_lanes_f32() * (nv // G), NR = G * u
    cdef Py_ssize_t n_panels = (H + u - 1) // u
    cdef Py_ssize_t per_item = n_panels if num_threads == 1 else 1
    cdef Py_ssize_t chunk = ring if ring < T else max(1, min(T, _CHUNK_ROWS // B))
    cdef Py_ssize_t n_chunks
    cdef Py_ssize_t n_items = (n_panels + per_item - 1) // per_item
    cdef bint split = _split_batch(B, G * H, H, num_threads, 1)
    cdef fastrnn_steps steps
    cdef _Int8 q8
    cdef fastrnn_groups groups = [NULL, NULL, 0, 0, _GROUP_MOST]
    cdef Py_ssize_t b
    cdef float* hbuf = <float*>malloc(2 * B * H * sizeof(float))
    cdef long* claims = <long*>malloc(n_items * sizeof(long))
    cdef _Int8Panels pih, phh
    # AMX's tiles hold 16 rows: below 8 rows a product wastes most of one,
    # and vpdpbusd was as fast or faster (LSTM, AMX over vpdpbusd: B = 1
    # 1.27-1.30x the time, B = 2 1.02-1.07x, B = 4 0.96-1.08x, B = 8
    # 0.93x, B = 16 0.65-0.82x; 2 threads, interleaved).
    q8.amx = _use_amx() and B >= _AMX_MIN_BATCH
    q8.per_step = ring == 1
    if q8.per_step:
        chunk = T
    n_chunks = (T + chunk - 1) // chunk
    pih, phh = _int8_panels(W_ih, G, u, q8.amx), _int8_panels(W_hh, G, u, q8.amx)
    q8.P_ih, q8.init_ih, q8.sw_ih, q8.I4 = pih.P_, pih.init_, pih.sw_, pih.K4
    q8.P_hh, q8.init_hh, q8.sw_hh, q8.H4 = phh.P_, phh.init_, phh.sw_, phh.K4
    q8.HQ = B + 16
    # Under the batch split, groups of about 4 rows (a tile's), a whole
    # number of them per thread; spans of a chunk, or of _GROUP_STEPS steps
    # where each step computes its own input term.
    q8.groups = NULL
    if split and _split_override != 2:
        groups.n = num_threads * max(1, B // (4 * num_threads))
        groups.end = 1 + n_chunks * (chunk + 1)
        groups.next = <long*>malloc(groups.n * sizeof(long))
        groups.held = <int*>calloc(groups.n, sizeof(int))
        if groups.next != NULL:
            for b in range(groups.n):
                groups.next[b] = 1
        q8.groups = &groups
    q8.span = _GROUP_STEPS if q8.per_step or _GROUP_STEPS == 1 else chunk + 1
    # Zeroed: a tile of 16 rows reads rows that no step has written.
    q8.xq = _zeroed64((T * B + 16) * q8.I4)
    q8.xs = <float*>malloc(T * B * sizeof(float))
    q8.hq = _zeroed64(num_threads * q8.HQ * q8.H4)
    q8.hs = <float*>malloc(num_threads * q8.HQ * sizeof(float))
    try:
        if (hbuf == NULL or claims == NULL or q8.xq == NULL or q8.xs == NULL or q8.hq == NULL
                or q8.hs == NULL or q8.groups != NULL and (groups.next == NULL
                                                           or groups.held == NULL)):
            raise MemoryError()
        with nogil:
            memcpy(hbuf, &h0[0, 0], B * H * sizeof(float))
            fastrnn_steps_init(&steps, n_items, claims)
            with parallel(num_threads=num_threads):
                _forward_worker(&steps, threadid(), 1 + n_chunks * (chunk + 1),
                                T, B, I, H, G, u, nv, per_item, chunk, ring,
                                &x2d[0, 0], NULL, NULL, &bias[0], &lengths[0],
                                NULL, NULL, gates, hbuf, out, state, saved, extra, flag,
                                NULL, NULL, I, H, NULL, NULL, split, &q8)
            memcpy(&h_n[0, 0], hbuf + (T % 2) * B * H, B * H * sizeof(float))
        if steps.abort:
            _raise_pending()
    finally:
        free(hbuf)
        free(claims)
        free(q8.xq)
        free(q8.xs)
        free(q8.hq)
        free(q8.hs)
        free(groups.next)
        free(groups.held)
    return 0


cdef uint8_t* _zeroed64(size_t n) noexcept nogil:
    """n zeroed bytes at a 64-byte boundary (free with free()), or NULL.
    The int8 operands and panels are read a cache line at a time by the
    tiles: measured, AMX read panels 16 or 32 bytes off a line at a third to
    a half of its rate (an LSTM (16, 256) inference 7.2 ms against 5.2)."""
    cdef uint8_t* p = <uint8_t*>aligned_alloc(64, (n + 63) // 64 * 64)
    if p != NULL:
        memset(p, 0, n)
    return p


def _empty64(Py_ssize_t n, dtype):
    """np.empty((n,), dtype) starting at a 64-byte boundary (see _zeroed64)."""
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + n * dtype.itemsize].view(dtype)


cdef class _Int8Panels:
    """A QuantizedWeight's panels for one layout (_int8_panels): the arrays
    (P int8, init int32, sw float32, flat, read-only), K4 (bytes of a
    column), and the arrays' data as pointers, which the engine takes
    without acquiring a memoryview of each every call (the six of an int8
    forward, and the two of the weight before the lookup, took about 2 us
    of a T = 1 call's 4 us in the kernel)."""
    cdef readonly object P, init, sw
    cdef readonly Py_ssize_t K4
    cdef const int8_t* P_
    cdef const int32_t* init_
    cdef const float* sw_


cdef _Int8Panels _int8_panels(object W, Py_ssize_t G, Py_ssize_t u, bint amx):
    """The panels of the QuantizedWeight W (G*H rows of K) for units of ``u``
    and G gates, with each panel's column corrections and scales (engine.h,
    fastrnn_pack_panel_s8): an _Int8Panels.  K in groups of four, rounded
    up to 64 bytes for AMX tiles.  Packed once and kept on W (whose arrays
    cannot change), per layout and per module (each ISA level's build has
    its own _Int8Panels type)."""
    cdef Py_ssize_t quantum = 64 if amx else 4
    key = (G, u, quantum, _Int8Panels)
    found = W._panels.get(key)
    if found is not None:
        return found
    cdef const int8_t[:, ::1] q = W.q
    cdef const float[::1] s = W.scale
    cdef Py_ssize_t K = q.shape[1], H = q.shape[0] // G, NR = G * u
    cdef Py_ssize_t K4 = (K + quantum - 1) // quantum * quantum // 4
    cdef Py_ssize_t n_panels = (H + u - 1) // u, p
    P = _empty64(max(1, n_panels * 4 * K4 * NR), np.int8)
    init = np.empty(max(1, n_panels * NR), np.int32)
    sw = np.empty(max(1, n_panels * NR), np.float32)
    cdef int8_t[::1] P_ = P
    cdef int32_t[::1] init_ = init
    cdef float[::1] sw_ = sw
    with nogil:
        for p in range(n_panels):
            fastrnn_pack_panel_s8(&q[0, 0], &s[0], K, K4, G, H, u, p, &P_[p * 4 * K4 * NR],
                                  &init_[p * NR], &sw_[p * NR])
    for a in (P, init, sw):
        a.flags.writeable = False
    cdef _Int8Panels made = _Int8Panels.__new__(_Int8Panels)
    made.P, made.init, made.sw, made.K4 = P, init, sw, 4 * K4
    made.P_, made.init_, made.sw_ = &P_[0], &init_[0], &sw_[0]
    W._panels[key] = made
    return made


def _int8_product(const float[:, ::1] a, W):
    """``a @ W.T`` (W a QuantizedWeight) in int8 compute, through the engine's
    quantization, panels, tiles (AMX where _amx() says so) and rescaling:
    for the tests, which hold it to fastrnn.quantization.int8_matmul bit for
    bit.  Returns float32 (rows, W rows)."""
    cdef Py_ssize_t rows = a.shape[0], K = a.shape[1], N = W.shape[0]
    cdef bint amx = _use_amx()
    cdef Py_ssize_t u = fastrnn_lanes_f32(), NR = u, p, r0, mr, r, c, K4
    cdef _Int8Panels panels = _int8_panels(W, 1, u, amx)
    K4 = panels.K4  # bytes of a column
    cdef uint8_t* aq = _zeroed64((rows + 16) * K4)
    cdef float* sa = <float*>malloc((rows + 1) * sizeof(float))
    cdef int32_t sums[(ROW_BLOCK + 16) * 64]
    cdef float acc[ROW_BLOCK * 64]
    result = np.empty((rows, N), np.float32)
    cdef float[:, ::1] C = result
    try:
        if aq == NULL or sa == NULL:
            raise MemoryError()
        with nogil:
            if amx:
                fastrnn_amx_begin()
            for r in range(rows):
                sa[r] = fastrnn_quantize_u8(&a[r, 0], K, K4, aq + r * K4)
            for p in range((N + u - 1) // u):
                r0 = 0
                while r0 < rows:
                    mr = min(ROW_BLOCK, rows - r0)
                    _product_s8(aq + r0 * K4, K4, mr, sa + r0, panels.P_ + p * K4 * NR,
                                panels.init_ + p * NR, panels.sw_ + p * NR, K4 // 4, 1, NR, sums, acc, amx)
                    for r in range(mr):
                        for c in range(min(u, N - p * u)):
                            C[r0 + r, p * u + c] = acc[r * NR + c]
                    r0 += mr
            if amx:
                fastrnn_amx_end()
    finally:
        free(aq)
        free(sa)
    return result


# Testing and measuring: 0 keeps the int8 products off AMX, -1 (the default)
# uses it where the CPU and the OS allow (``FASTRNN_AMX=0`` in the
# environment sets 0 at import).
cdef int _amx_override = 0 if _os.environ.get("FASTRNN_AMX", "") == "0" else -1


def _set_amx(int mode):
    global _amx_override
    _amx_override = mode


cdef bint _use_amx() noexcept:
    return _amx_override != 0 and fastrnn_amx_usable() != 0


def _amx():
    """Whether the int8 products run on AMX tiles here (for batches of
    _amx_min_batch() rows or more)."""
    return _use_amx()


def _amx_min_batch():
    """The smallest batch whose int8 products run on AMX tiles."""
    return _AMX_MIN_BATCH


def _int8_rate(bint amx, double seconds=0.05):
    """One thread's int8 multiply-adds per second on the tiles this level
    runs (AMX's if ``amx`` and usable, else VNNI's or the portable ones),
    16 rows by 256 k by four vectors of columns (64 at AVX-512, 32 at AVX2)
    with everything in L1: the machine's int8 peak as the engine's products
    reach it (the benchmarks' reference)."""
    cdef Py_ssize_t rows = 16, K4 = 64, NR = 4 * fastrnn_lanes_f32(), n = 0
    cdef uint8_t* A = _zeroed64((rows + 16) * 4 * K4)
    cdef int8_t* P = <int8_t*>_zeroed64(4 * K4 * NR)
    cdef int32_t init[64]
    cdef int32_t sums[(ROW_BLOCK + 16) * 64]
    cdef double t0, elapsed = 0
    amx = amx and _use_amx()
    if A == NULL or P == NULL:
        free(A)
        free(P)
        raise MemoryError()
    memset(init, 0, sizeof(init))
    with nogil:
        if amx:
            fastrnn_amx_begin()
        t0 = fastrnn_now()
        while elapsed < seconds:
            for _ in range(64):
                _sums_s8(A, 4 * K4, rows, P, init, K4, 4, NR, sums, amx)
            n += 64
            elapsed = fastrnn_now() - t0
        if amx:
            fastrnn_amx_end()
    free(A)
    free(P)
    return n * rows * 4 * K4 * NR / elapsed


def _l2_bytes():
    """A core's L2 cache in bytes, as the engine sizes its work by it."""
    return fastrnn_l2_bytes()


def _has_vnni():
    """Whether this level's int8 tiles run on AVX512_VNNI (vpdpbusd)."""
    return fastrnn_has_vnni() != 0


# ---- backward ----------------------------------------------------------------

cdef struct _Bf16Backward:
    # The backward's bf16 operands (_engine_backward).  Below the avx512_bf16
    # level (float32 products of rounded values): da_xr, da_hr, rounded copies
    # of the da workspace (ring, B, G*H) for OpenBLAS's GEMMs.  At it (pairs,
    # vdpbf16ps): da_hb, da_xb, the same da as bf16 rows of even length GH2
    # (one array when da is one), and the operands of the weight gradients'
    # own bf16 GEMMs (_weight_gradients_bf16): aT, X^T above H_prev^T over a
    # chunk's rows, as bf16 rows (I + H, R2) (R2: the rows of a chunk rounded
    # up to even; each chunk's own, so that a chunk's pages are reused);
    # w_ih, W_ih's pair panels over k = G*H; panels, a chunk's panels of da_x
    # (then of da_h); dWt (I + H, G*H), dW_ih^T above dW_hh^T.
    float* da_xr
    float* da_hr
    uint16_t* da_hb
    uint16_t* da_xb
    uint16_t* aT
    Py_ssize_t R2
    uint16_t* w_ih
    uint16_t* panels
    float* dWt


# Vectors of columns per panel of the backward's bf16 GEMMs (6 x 4 tiles).
cdef int _GEMM_NV = 4


cdef void _bf16_chunk_operands(_Bf16Backward* q, const float* x2d, const float* h0,
                               const float* out, Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t B,
                               Py_ssize_t I, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                               Py_ssize_t p, Py_ssize_t n_panels) noexcept nogil:
    """Panel p's share of the A operand of chunk (t0, t1)'s bf16 GEMMs
    (_weight_gradients_bf16), done with panel p's item in the chunk's first
    step: in aT, X^T's rows p*I/n_panels .. (p+1)*I/n_panels - 1 and H_prev^T's
    rows of units j0..j1-1, over the chunk's rows (H_prev's row r is h0's row
    r for r < B, out's row r - B after)."""
    cdef Py_ssize_t r0 = t0 * B, nr = (t1 - t0) * B, ld = q.R2, m
    cdef Py_ssize_t a0 = I * p // n_panels, a1 = I * (p + 1) // n_panels
    cdef uint16_t* dst = q.aT + (I + j0) * ld
    if a1 > a0:
        fastrnn_transpose_bf16(x2d + r0 * I + a0, I, nr, a1 - a0, q.aT + a0 * ld, ld)
    if t0 == 0:
        fastrnn_transpose_bf16(h0 + j0, H, B, j1 - j0, dst, ld)
        if nr > B:
            fastrnn_transpose_bf16(out + j0, H, nr - B, j1 - j0, dst + B, ld)
    else:
        fastrnn_transpose_bf16(out + (r0 - B) * H + j0, H, nr, j1 - j0, dst, ld)
    if nr % 2:  # the last pair's second value, which meets a zero: not NaN garbage
        for m in range(a0, a1):
            q.aT[m * ld + nr] = 0
        for m in range(I + j0, I + j1):
            q.aT[m * ld + nr] = 0


cdef void _weight_gradients_bf16(_Bf16Backward* q, const float* da_x, const float* da_h,
                                 Py_ssize_t chunk, Py_ssize_t n_chunks, Py_ssize_t t0,
                                 Py_ssize_t t1, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                                 Py_ssize_t GH, float* dx2d, float* dW_ih, float* dW_hh,
                                 float* db_ih, float* db_hh, int part, int parts) noexcept nogil:
    """_weight_gradients_part where the level has vdpbf16ps: share ``part``
    of ``parts`` of chunk ``chunk``'s products as bf16 GEMMs with float32 sums
    (engine.h's fastrnn_gemm_bf16; OpenBLAS has none).  Turned so that only
    da is packed here (X and H_prev were transposed in the chunk's first
    step, into aT: _bf16_chunk_operands):
    dW_ih^T (+)= X^T DX and dW_hh^T (+)= H_prev^T DH, one product of I + H
    rows when DX is DH, over this share's panels of the G*H columns, into dWt;
    those columns' bias sums (of the float32 da, as it is packed); in chunk
    0, the last, those rows of dW_ih and dW_hh from dWt; and this share's rows
    of dx2d = DX W_ih."""
    cdef Py_ssize_t rows = (t1 - t0) * B, K2 = (rows + 1) // 2, GH2 = GH + GH % 2
    cdef int nv = _GEMM_NV
    cdef Py_ssize_t NR = nv * fastrnn_lanes_f32(), n_p = (GH + NR - 1) // NR, p
    cdef Py_ssize_t p0 = n_p * part // parts, p1 = n_p * (part + 1) // parts
    cdef Py_ssize_t n0 = p0 * NR, n1 = min(p1 * NR, GH), size = K2 * 2 * NR
    cdef Py_ssize_t r0 = rows * part // parts, r1 = rows * (part + 1) // parts, ld = q.R2
    cdef bint two = da_x != da_h, add = chunk < n_chunks - 1
    cdef const uint16_t* A = q.aT
    cdef uint16_t* px = q.panels
    cdef uint16_t* ph = q.panels + n_p * size
    if n1 > n0:
        if not add:
            memset(db_ih + n0, 0, (n1 - n0) * sizeof(float))
            memset(db_hh + n0, 0, (n1 - n0) * sizeof(float))
        for p in range(p0, p1):
            # the bias sums (of the float32 da) in the same pass
            fastrnn_pack_rows_bf16(da_x, GH, rows, GH, p * NR, NR, px + p * size, db_ih + p * NR)
            if two:
                fastrnn_pack_rows_bf16(da_h, GH, rows, GH, p * NR, NR, ph + p * size,
                                       db_hh + p * NR if db_hh != db_ih else NULL)
        if two:
            fastrnn_gemm_bf16(I, n1 - n0, K2, A, ld, px + p0 * size, nv, q.dWt + n0, GH, add)
            fastrnn_gemm_bf16(H, n1 - n0, K2, A + I * ld, ld, ph + p0 * size, nv,
                              q.dWt + I * GH + n0, GH, add)
        else:
            fastrnn_gemm_bf16(I + H, n1 - n0, K2, A, ld, px + p0 * size, nv, q.dWt + n0, GH,
                              add)
        if chunk == 0:
            fastrnn_transpose_f32(q.dWt + n0, GH, I, n1 - n0, dW_ih + n0 * I, I)
            fastrnn_transpose_f32(q.dWt + I * GH + n0, GH, H, n1 - n0, dW_hh + n0 * H, H)
    if r1 > r0:
        fastrnn_gemm_bf16(r1 - r0, I, GH2 // 2, q.da_xb + r0 * GH2, GH2, q.w_ih, nv,
                          dx2d + (t0 * B + r0) * I, I, 0)


cdef void _backward_worker(fastrnn_steps* steps, int tid, Py_ssize_t ring, bint share_blas,
                           Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t G,
                           Py_ssize_t u, int nv, Py_ssize_t per_item, const floating* W_hh,
                           const int64_t* lengths,
                           floating* P, const floating* g_seq, const floating* saved,
                           const floating* prev_seq, const floating* prev0,
                           const floating* d_out, floating* dh, floating* dc,
                           floating* da_x, floating* da_h, const floating* extra,
                           floating* d_extra, int flag,
                           const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                           const floating[:, ::1] h0, const floating[:, :, ::1] out,
                           floating[:, ::1] dx2d, floating[:, ::1] dW_ih,
                           floating[:, ::1] dW_hh, floating* db_ih,
                           floating* db_hh, _Bf16Backward* q) noexcept nogil:
    """One thread's share of a backward.  Phase 0 packs W_hh's panels (and
    for bf16 GEMMs W_ih's); then
    for each chunk of ``ring`` steps, the last chunk first, a phase per step
    t from the chunk's last step down to its first (and in chunk 0 on to
    t = -1): dh += da_h[t+1] W_hh (t + 1 < T), then the elementwise backward
    of step t (t >= 0), for one panel's units; step t's da rows are row
    t % ring of theirs.  Then a phase for the chunk's weight gradients, in
    which threads 0..parts-1 each run their share of the GEMMs (and count
    their own items done): every thread of the team when ``share_blas``
    (each with OpenBLAS kept to its own thread, as in _weight_gradients; a
    team of one too), else thread 0 with BLAS's own threads.

    bf16 compute when ``q`` is not NULL (_Bf16Backward): the products read
    bf16 operands, as in _forward_worker (pair panels of W_hh and a bf16 copy
    of each step's da_h where the level has vdpbf16ps, else a float32 panel
    and copies of rounded values); the weight gradients' GEMMs read the
    rounded da and the rounded x2d, W_ih, h0, out that the caller passes
    (those four are read by nothing else here), the bias sums the float32 da."""
    cdef Py_ssize_t GH = G * H, n_panels = (H + u - 1) // u
    cdef Py_ssize_t n_items = (n_panels + per_item - 1) // per_item
    cdef Py_ssize_t n_chunks = (T + ring - 1) // ring, chunk, t0, t1, t_stop
    cdef int team = fastrnn_team_size()
    cdef bint main_thread = tid == 0
    cdef Py_ssize_t own = tid * n_items // team, mine = (tid + 1) * n_items // team - own
    cdef Py_ssize_t k_item, phase = 0, item, p, j0, nu, t, b, r0, r, jj, tb, sb, mr, k, row
    cdef floating acc[ROW_BLOCK * 64]
    cdef const floating* panel
    cdef const floating* prev
    cdef _SignalClock clock = [0, 1, 1]
    cdef int parts = <int>min(team, n_items) if share_blas else 1
    cdef bint bf16 = q != NULL, pairs = bf16 and q.da_hb != NULL
    cdef Py_ssize_t GH2 = GH + GH % 2, kk
    cdef Py_ssize_t lda = GH2 if pairs else GH  # of da's rows as the products read them
    cdef Py_ssize_t I = x2d.shape[1], NRg = _GEMM_NV * _lanes(<floating*>NULL)
    cdef Py_ssize_t n_wp = (I + NRg - 1) // NRg  # W_ih's panels (bf16 pairs)
    cdef uint16_t* Pb = <uint16_t*>P if pairs else NULL
    cdef uint16_t* da_hb = q.da_hb if pairs else NULL
    cdef floating* da_xr = da_x
    cdef floating* da_hr = da_h
    if floating is float:
        if bf16 and not pairs:
            da_xr, da_hr = q.da_xr, q.da_hr
        if pairs:
            parts = <int>min(team, n_items)  # the bf16 GEMMs are the engine's own
    if share_blas:
        _blas_local(1)
    # Phase 0: W_hh (G*H, H) as it is, one block of H columns, into panels.
    if not fastrnn_steps_wait(steps, phase):
        return
    for item in range(n_items):
        if fastrnn_steps_claim(steps, item, phase):
            for p in range(item * per_item, min((item + 1) * per_item, n_panels)):
                if floating is float:
                    if pairs:
                        fastrnn_pack_panel_bf16(W_hh, H, 1, GH, 1, H, u, p, Pb + p * GH2 * u)
                        # and a share of W_ih's panels, for dx's GEMM
                        for k in range(n_wp * p // n_panels, n_wp * (p + 1) // n_panels):
                            fastrnn_pack_rows_bf16(&W_ih[0, 0], I, GH, I, k * NRg, NRg,
                                                   q.w_ih + k * GH2 * NRg, NULL)
                        continue
                _pack_panel(W_hh, H, 1, GH, 1, H, u, p, P + p * GH * u)
                if floating is float:
                    if bf16:
                        fastrnn_round_bf16(P + p * GH * u, GH * u, P + p * GH * u)
            fastrnn_steps_done(steps)
    for chunk in range(n_chunks - 1, -1, -1):
        t0 = chunk * ring
        t1 = min(T, t0 + ring)
        t_stop = t0 - 1 if chunk > 0 else -2
        for t in range(t1 - 1, t_stop, -1):
            phase += 1
            if not fastrnn_steps_wait(steps, phase):
                return
            for k_item in range(n_items):
                # Own items first, then the partners' from the far end.
                item = (own + k_item if k_item < mine
                        else (own - 1 - (k_item - mine) + n_items) % n_items)
                if not fastrnn_steps_claim(steps, item, phase):
                    continue
                for p in range(item * per_item, min((item + 1) * per_item, n_panels)):
                    j0 = p * u
                    nu = min(u, H - j0)
                    panel = P + p * GH * u
                    if t + 1 < T:
                        # dh_t += da_h[t+1] W_hh for this panel's units; rows that had
                        # stopped at step t+1 keep dh as it is.
                        r0 = 0
                        while r0 < B:
                            mr = min(ROW_BLOCK, B - r0)
                            row = ((t + 1) % ring) * B + r0
                            _operand_product(da_hr + row * lda, _offset16(da_hb, row * lda), lda,
                                             mr, panel, _offset16(Pb, p * GH2 * u), lda, nv, u,
                                             acc)
                            for r in range(mr):
                                b = r0 + r
                                if t + 1 < lengths[b]:
                                    for jj in range(nu):
                                        dh[b * H + j0 + jj] += acc[r * u + jj]
                            r0 += mr
                    if floating is float:
                        if pairs and t == t1 - 1:
                            _bf16_chunk_operands(q, &x2d[0, 0], &h0[0, 0], &out[0, 0, 0], t0, t1,
                                                 B, I, H, j0, j0 + nu, p, n_panels)
                    if t >= 0:
                        for b in range(B):
                            tb = t * B + b
                            prev = (_offset(<floating*>prev_seq, (tb - B) * H + j0) if t > 0 else
                                    _offset(<floating*>prev0, b * H + j0))
                            sb = (t % ring) * B + b
                            _cell_backward(t < lengths[b], nu, H, g_seq + tb * GH + j0,
                                           _offset(<floating*>saved, tb * H + j0), prev,
                                           d_out + tb * H + j0, dh + b * H + j0,
                                           _offset(dc, b * H + j0), da_x + sb * GH + j0,
                                           da_h + sb * GH + j0, _offset(<floating*>extra, j0),
                                           _offset(d_extra, j0), flag)
                            if floating is float:
                                if bf16:
                                    # the products' operands: this step's da in bf16
                                    # (pairs) or rounded
                                    for kk in range(G):
                                        k = sb * GH + kk * H + j0
                                        jj = sb * GH2 + kk * H + j0
                                        if pairs:
                                            fastrnn_to_bf16(da_h + k, nu, da_hb + jj)
                                            if da_x != da_h:
                                                fastrnn_to_bf16(da_x + k, nu, q.da_xb + jj)
                                            continue
                                        fastrnn_round_bf16(da_h + k, nu, da_hr + k)
                                        if da_x != da_h:
                                            fastrnn_round_bf16(da_x + k, nu, da_xr + k)
                fastrnn_steps_done(steps)
            if main_thread and _check_now(&clock) and _interrupted():
                fastrnn_steps_abort(steps)
                return
        # The chunk's weight gradients: thread k < parts takes share k, and
        # counts items k*n_items//parts .. (k+1)*n_items//parts - 1 done.
        phase += 1
        if not fastrnn_steps_wait(steps, phase):
            return
        if tid < parts:
            if floating is float:
                if pairs:
                    _weight_gradients_bf16(q, da_x, da_h, chunk, n_chunks, t0, t1, B, I, H, GH,
                                           &dx2d[0, 0], &dW_ih[0, 0], &dW_hh[0, 0], db_ih,
                                           db_hh, tid, parts)
            if not pairs:
                # (in bf16, x2d, W_ih, h0 and out are the caller's rounded copies)
                _weight_gradients_part(x2d, W_ih, h0, out, da_xr, da_hr, t0, t1,
                                       chunk < n_chunks - 1, dx2d, dW_ih, dW_hh, db_ih, db_hh,
                                       tid, parts, da_x, da_h)
            for k in range(tid * n_items // parts, (tid + 1) * n_items // parts):
                fastrnn_steps_done(steps)
        if main_thread and _check_now(&clock) and _interrupted():
            fastrnn_steps_abort(steps)
            return


cdef int _engine_backward(const floating[:, ::1] W_hh, const int64_t[::1] lengths,
                          int num_threads, const floating* g_seq,
                          const floating* saved, const floating* prev_seq,
                          const floating* prev0, const floating[:, :, ::1] d_out,
                          floating[:, ::1] dh, floating* dc, floating[:, :, ::1] da_x,
                          floating[:, :, ::1] da_h, const floating* extra, floating* d_extra,
                          int flag,
                          const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                          const floating[:, ::1] h0, const floating[:, :, ::1] out,
                          floating[:, ::1] dx2d, floating[:, ::1] dW_ih, floating[:, ::1] dW_hh,
                          floating* db_ih, floating* db_hh, bint bf16=False) except -1:
    """One BPTT.  On entry dh (B, H) holds dL/dh_n and dc (or NULL) dL/dc_n;
    on exit dL/dh0, dL/dc0, and dx2d, dW_ih, dW_hh, db_ih, db_hh (see
    _weight_gradients; db_hh is db_ih for the single-bias cells); extra
    (the forward's) or NULL, and d_extra, zeroed by the caller, into which
    the cell's backward adds its gradient (or NULL).
    g_seq (T, B, G*H): the saved gates (the Elman cell passes out); saved
    (T, B, H) or NULL; prev_seq (T, B, H) and prev0 (B, H): the state whose
    previous value the cell's backward reads.  da_x, da_h (S, B, G*H), the
    workspace of the gradients of the input and recurrent terms (one array
    but in the GRU), hold S <= T steps: the steps go in chunks of S (the last
    chunk first), each chunk's recurrence then its share of the weight
    gradients, so that the workspace does not grow with T.

    Why chunks: a (T, B, G*H) workspace is new memory on every call, and
    the first touch of a page costs (LSTM (16, 256) T=1024 float32 training,
    2 threads: 3.9% of the time went to clearing da's pages, perf record);
    a chunk is reused, and its rows are still in cache for the GEMMs.
    Measured, that backward alone, best of 12 interleaved calls: 119 ms with
    all of da, 104-106 ms with chunks of 512-2048 rows (LSTM (64, 1024)
    T=128: 941 to 814 ms; GRU (16, 256) 92 to 85 ms).

    One parallel region for the whole backward, the GEMMs as phases in it:
    with a region per chunk (its recurrence, then its GEMMs in a region of
    their own) the engine's threads parted and met again twice a chunk, and
    with another process keeping one core busy 2 threads took 1.26-1.40x
    the time of 1 thread (LSTM (16, 256) training, benches/busy_machine.py,
    medians); in one region, 1.05-1.09x.

    bf16 (float32 only): every product reads bf16 operands (da, W_hh, W_ih,
    x and h_{t-1} rounded to nearest even) and accumulates in float32; the
    elementwise BPTT and the bias sums stay float32 (fastrnn.reference's
    bf16 mode).  Always on the packed path, as the forward."""
    cdef Py_ssize_t T = d_out.shape[0], B = d_out.shape[1], H = d_out.shape[2]
    cdef Py_ssize_t G = W_hh.shape[0] // H, ring = da_x.shape[0]
    cdef int nv = 2
    cdef Py_ssize_t u = _lanes(<floating*>NULL) * nv
    cdef Py_ssize_t n_panels = (H + u - 1) // u
    cdef Py_ssize_t per_item = n_panels if num_threads == 1 else 1
    cdef Py_ssize_t n_items = (n_panels + per_item - 1) // per_item
    cdef Py_ssize_t n_chunks = (T + ring - 1) // ring, chunk, t0, t1
    # The engine's threads share each chunk's GEMMs, each with OpenBLAS kept to
    # it; a team of one too when fastrnn's count is more (OpenBLAS's pool not woken).
    cdef int pool = _pool_threads()
    cdef bint share_blas = _blas_local != NULL and (num_threads > 1 or pool > 1), solo
    cdef fastrnn_steps steps
    cdef floating* P = NULL
    cdef long* claims = NULL
    cdef _Bf16Backward q
    cdef _Bf16Backward* bf = NULL
    cdef bint pairs = False, one, failed = False
    cdef Py_ssize_t GH2 = G * H + (G * H) % 2, n_da = ring * B * G * H, I = x2d.shape[1]
    cdef Py_ssize_t NRg = _GEMM_NV * _lanes(<floating*>NULL)
    if floating is double:
        bf16 = False
    if not bf16 and (T <= _UNPACKED_MAX_STEPS or T * B <= _UNPACKED_MAX_ROWS):
        solo = _solo(B, G * H, max(x2d.shape[1], H), num_threads, pool)
        if solo:
            _blas_local(1)
        try:
            for chunk in range(n_chunks - 1, -1, -1):
                t0 = chunk * ring
                t1 = min(T, t0 + ring)
                _backward_unpacked(W_hh, lengths, g_seq, saved, prev_seq, prev0, d_out, dh, dc,
                                   &da_x[0, 0, 0], &da_h[0, 0, 0], ring, t0, t1, extra, d_extra,
                                   flag)
                with nogil:
                    _weight_gradients(x2d, W_ih, h0, out, &da_x[0, 0, 0], &da_h[0, 0, 0],
                                      t0, t1, chunk < n_chunks - 1, dx2d, dW_ih, dW_hh, db_ih,
                                      db_hh, 1 if solo else num_threads, pool)
        finally:
            if solo:
                _blas_local(pool)
        return 0
    memset(&q, 0, sizeof(q))
    if floating is float:
        if bf16:
            bf = &q
            pairs = fastrnn_has_dpbf16()
            one = &da_x[0, 0, 0] == &da_h[0, 0, 0]
            if pairs:
                q.da_hb = <uint16_t*>calloc(ring * B * GH2, sizeof(uint16_t))
                q.da_xb = q.da_hb if one else <uint16_t*>calloc(ring * B * GH2, sizeof(uint16_t))
                q.R2 = ring * B + (ring * B) % 2
                q.aT = <uint16_t*>malloc((I + H) * q.R2 * sizeof(uint16_t))
                q.w_ih = <uint16_t*>malloc(((I + NRg - 1) // NRg) * GH2 * NRg * sizeof(uint16_t))
                q.panels = <uint16_t*>malloc(2 * ((G * H + NRg - 1) // NRg) * q.R2 * NRg
                                             * sizeof(uint16_t))
                q.dWt = <float*>malloc((I + H) * G * H * sizeof(float))
                failed = (q.da_hb == NULL or q.da_xb == NULL or q.aT == NULL or q.w_ih == NULL
                          or q.panels == NULL or q.dWt == NULL)
            else:
                # The weight gradients' operands, rounded (the worker reads these
                # four only there), and rounded copies of da.
                x2d = _rounded(&x2d[0, 0], (x2d.shape[0], x2d.shape[1]))
                W_ih = _rounded(&W_ih[0, 0], (W_ih.shape[0], W_ih.shape[1]))
                h0 = _rounded(&h0[0, 0], (B, H))
                out = _rounded(&out[0, 0, 0], (T, B, H))
                q.da_hr = <float*>malloc(n_da * sizeof(float))
                q.da_xr = q.da_hr if one else <float*>malloc(n_da * sizeof(float))
                failed = q.da_hr == NULL or q.da_xr == NULL
    if pairs:
        P = <floating*>malloc(n_panels * GH2 * u * sizeof(uint16_t))
    else:
        P = <floating*>malloc(n_panels * G * H * u * sizeof(floating))
    claims = <long*>malloc(n_items * sizeof(long))
    try:
        if P == NULL or claims == NULL or failed:
            raise MemoryError()
        with nogil:
            fastrnn_steps_init(&steps, n_items, claims)
            with parallel(num_threads=num_threads):
                _backward_worker(&steps, threadid(), ring, share_blas, T, B, H, G, u, nv, per_item,
                                 &W_hh[0, 0], &lengths[0], P, g_seq, saved, prev_seq, prev0,
                                 &d_out[0, 0, 0], &dh[0, 0], dc, &da_x[0, 0, 0],
                                 &da_h[0, 0, 0], extra, d_extra, flag, x2d, W_ih, h0, out, dx2d,
                                 dW_ih, dW_hh,
                                 db_ih, db_hh, bf)
            if share_blas:
                _blas_local(pool)  # fastrnn's count, as in _weight_gradients
        if steps.abort:
            _raise_pending()
    finally:
        free(P)
        free(claims)
        if q.da_xr != q.da_hr:
            free(q.da_xr)
        free(q.da_hr)
        if q.da_xb != q.da_hb:
            free(q.da_xb)
        free(q.da_hb)
        free(q.aT)
        free(q.w_ih)
        free(q.panels)
        free(q.dWt)
    return 0


cdef object _rounded(const float* a, tuple shape):
    """A new array (cython.view.array) of ``shape`` holding a's values rounded
    to bfloat16 (nearest even)."""
    cdef cvarray r = cvarray(shape=shape, itemsize=sizeof(float), format="f")
    cdef Py_ssize_t n = 1, d
    for d in shape:
        n *= d
    with nogil:
        fastrnn_round_bf16(a, n, <float*>r.data)
    return r


# ---- products for kernels that split the batch between threads ------------------
#
# Where a step has two products with elementwise work between them (the GRU
# with the reset before its product, the LSTM with a projection), the batch
# is split instead of the units: rows never meet within a step, so groups of
# rows each run every step of a chunk on their own, with no barrier, reading
# the weights from panels packed once for _product (_packed,
# _packed_product).  The groups go to the team's threads as they come free
# (_row_groups), so that a thread whose core is shared takes fewer; the
# calling thread looks for Ctrl-C between its steps and stops every group
# (_keep_going).  The GEMMs over many rows (input terms, weight gradients)
# are shared by the team (_team_gemm).


cdef inline Py_ssize_t _row_groups(Py_ssize_t B, int team) noexcept nogil:
    """Groups of rows to share out: one a thread at least, then groups of 8
    rows or more (a tile's height: fewer rows per group read the panels more
    often for the same work; measured one thread (16, 1024, 256), 8 rows a
    group ran at the rate of 64), up to 4 a thread; one for a team of one."""
    if team == 1:
        return 1
    return max(min(<Py_ssize_t>team, B), min(B // 8, 4 * <Py_ssize_t>team))


cdef inline bint _keep_going(fastrnn_steps* shared, bint main_thread,
                             _SignalClock* clock) noexcept nogil:
    """False once the work is aborted; the calling thread (``main_thread``)
    runs the signal handlers every few milliseconds and aborts it for all
    when one raised (the exception stays set for _raise_pending)."""
    if fastrnn_steps_aborted(shared):
        return False
    if main_thread and _check_now(clock) and _interrupted():
        fastrnn_steps_abort(shared)
        return False
    return True

# Vectors of columns per tile, as the engine's one-gate products.
DEF _ROWS_NV = 2


cdef floating* _packed(const floating* src, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K,
                       Py_ssize_t N, Py_ssize_t u) noexcept nogil:
    """M (K, N), element (k, n) at src[k*sk + n*sn], as panels of u columns
    for _product (K*u values each, the last padded with zeros); NULL when
    out of memory.  The caller frees it."""
    cdef Py_ssize_t p, n_panels = (N + u - 1) // u
    cdef floating* P = <floating*>malloc(n_panels * K * u * sizeof(floating))
    if P != NULL:
        for p in range(n_panels):
            _pack_panel(src, sk, sn, K, 1, N, u, p, P + p * K * u)
    return P


cdef inline void _packed_product(const floating* A, Py_ssize_t lda, Py_ssize_t rows,
                                 const floating* P, Py_ssize_t K, Py_ssize_t N, Py_ssize_t u,
                                 floating* C, Py_ssize_t ldc, bint add,
                                 floating* acc) noexcept nogil:
    """C (rows, N) (+)= A (rows, K) @ M, M's panels in P (_packed): a block of
    rows at a time, each panel over it while the block stays in cache.  acc
    holds ROW_BLOCK * u values.  u: _ROWS_NV vectors of columns, or up to 4
    (the tiles' widest: fewer rows a tile, more columns per value of A)."""
    cdef Py_ssize_t r0 = 0, mr, p, j0, nu, r, jj
    cdef int nv = <int>(u // _lanes(<floating*>NULL))
    while r0 < rows:
        mr = min(ROW_BLOCK, rows - r0)
        for p in range((N + u - 1) // u):
            j0 = p * u
            nu = min(u, N - j0)
            _product(A + r0 * lda, lda, mr, P + p * K * u, K, nv, u, acc)
            for r in range(mr):
                if add:
                    for jj in range(nu):
                        C[(r0 + r) * ldc + j0 + jj] += acc[r * u + jj]
                else:
                    for jj in range(nu):
                        C[(r0 + r) * ldc + j0 + jj] = acc[r * u + jj]
        r0 += mr


cdef void _team_gemm(bint transA, int M, int N, int K, const floating* A, int lda,
                     const floating* Bm, int ldb, floating beta, floating* C, int ldc,
                     int team, int pool) noexcept nogil:
    """C (M, N) = op(A) op(Bm) + beta C, where op transposes A when ``transA``
    and Bm when not (the two products here: X W_ih^T and DN^T RH), its M rows
    shared by the rows' team of threads, each running OpenBLAS on itself
    alone, so that OpenBLAS's own pool never wakes: its workers spin
    for a while after a call, and beside the team that took a core from it
    (measured GRU (16, 256): 64-140 ms an inference against 33 on one thread).
    One call where the team is one thread or OpenBLAS's per-thread count is
    missing."""
    cdef int tid, m0, m1
    if team == 1 or _blas_local == NULL:
        _gemm(transA, not transA, M, N, K, 1, A, lda, Bm, ldb, beta, C, ldc)
        return
    with parallel(num_threads=team):
        _blas_local(1)
        tid = threadid()
        m0 = M * tid // fastrnn_team_size()
        m1 = M * (tid + 1) // fastrnn_team_size()
        if m1 > m0:
            _gemm(transA, not transA, m1 - m0, N, K, 1, A + (m0 if transA else m0 * lda), lda,
                  Bm, ldb, beta, C + m0 * ldc, ldc)
    _blas_local(pool)


# ---- the layer-normalised cells' shared steps (each cell's .pyx: layernorm_*) ------
#
# Their LayerNorms need whole rows, so their kernels split the batch as the
# projection's do (above); what every such cell does the same way is here:
# the input products of a chunk normalised (_ln_inputs), and after the
# backward's loop the input LayerNorm's gradients and the weight gradients
# (_ln_after_the_loop).


cdef void _ln_inputs(const floating* x2d, const floating* W_ih, Py_ssize_t rows,
                     Py_ssize_t I, Py_ssize_t GH, double eps, floating* i_hat, floating* rstd_i,
                     int team, int pool) noexcept nogil:
    """rows of x2d (rows, I) through W_ih^T, normalised: i_hat (rows, GH), rstd_i (rows,)."""
    cdef Py_ssize_t r
    _team_gemm(False, <int>rows, <int>GH, <int>I, x2d, <int>I, W_ih, <int>I, 0, i_hat,
               <int>GH, team, pool)
    for r in prange(rows, num_threads=team, schedule="static"):
        rstd_i[r] = _norm_row(i_hat + r * GH, GH, eps)


cdef void _ln_param_sums(const floating* dy, const floating* a_hat, Py_ssize_t rows,
                         Py_ssize_t n, Py_ssize_t j0, Py_ssize_t j1, floating* dgamma,
                         floating* dbeta) noexcept nogil:
    """Columns j0..j1-1 of a LayerNorm's gain and bias gradients over rows
    (rows, n) of dy and a_hat: the sums of dy * a_hat and of dy."""
    cdef Py_ssize_t r, j
    for r in range(rows):
        for j in range(j0, j1):
            dgamma[j] += dy[r * n + j] * a_hat[r * n + j]
            dbeta[j] += dy[r * n + j]


# Testing and measuring: 1 has the layer-normalised cells' teams share each
# step's product by columns wherever they may, 0 never, -1 chooses.
cdef int _ln_columns_override = -1


def _set_ln_columns(int mode):
    global _ln_columns_override
    _ln_columns_override = mode


cdef inline bint _ln_share_columns(Py_ssize_t B, Py_ssize_t GH, Py_ssize_t H, int team,
                                   Py_ssize_t value_bytes) noexcept nogil:
    """Whether a team's steps split each product by columns (_ln_forward_shared)
    rather than run groups of rows alone: where W_hh outgrows a core's L2,
    so that the rows' split would stream all of it through every thread
    every step, and the batch has rows enough to share out after it."""
    if team < 2 or B < 4 * team:
        return False
    if _ln_columns_override >= 0:
        return _ln_columns_override == 1
    return GH * H * value_bytes > fastrnn_l2_bytes()


cdef void _ln_after_the_loop(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                             const floating[:, ::1] h0, const floating[:, :, ::1] out,
                             const floating* gamma_i, const floating* i_hat,
                             const floating* rstd_i, floating* da, const floating* dah,
                             floating[:, ::1] dx2d, floating[:, ::1] dW_ih,
                             floating[:, ::1] dW_hh, floating* dgamma_i, floating* dbeta_i,
                             floating* scratch, int wide, int pool) noexcept nogil:
    """Everything of a layer-normalised cell's BPTT that is not sequential,
    over all T*B rows: da (T*B, GH), the gradient of the input LayerNorm's
    output, gives that LayerNorm's gain and bias gradients (dgamma_i,
    dbeta_i, zeroed first) and then, in place, the gradient of the input
    product; with dah (that of the recurrent product) the three weight
    GEMMs (_weight_gradients).  scratch holds 2 * GH values (the bias sums
    that _weight_gradients makes, unused here)."""
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], GH = W_ih.shape[0], R = T * B, k, r
    for k in range(GH):
        dgamma_i[k] = 0
        dbeta_i[k] = 0
    for k in prange((GH + 63) // 64, num_threads=wide, schedule="static"):
        _ln_param_sums(da, i_hat, R, GH, k * 64, min(GH, k * 64 + 64), dgamma_i, dbeta_i)
    for r in prange(R, num_threads=wide, schedule="static"):
        _norm_row_backward(da + r * GH, gamma_i, i_hat + r * GH, rstd_i[r], da + r * GH, GH)
    _weight_gradients(x2d, W_ih, h0, out, da, dah, 0, T, False, dx2d, dW_ih, dW_hh, scratch,
                      scratch + GH, wide, pool)
