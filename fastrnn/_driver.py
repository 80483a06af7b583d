"""The one path from a checked call to a kernel, for every cell.

Forward: resolve the backend, make the arrays the kernel takes (C-contiguous,
one dtype; private copies where the cache must own them), allocate the
buffers the cell's spec declares, call the kernel, and build the cache.
Backward: the same from a cache.  The kernels trust what they get, and
nothing reaches them any other way.

The public functions check their arguments (``_validation``) and call
``forward`` / ``backward`` here; the layers check a call once, not once per
layer and direction, and call them for each.

Every kernel takes its arguments in the order the spec's module docstring
gives (``fastrnn/_spec.py``); :class:`_Pass` checks each cell's declared list
against that order when this module loads, so the calls below can build the
argument list by position.  (Built by name through a dict, the list cost
1.5-2 us more per call, a fifth of a small forward.)
"""
from itertools import repeat
from operator import itemgetter

import numpy as np

from . import _tuning, reference
from ._backends import kernels, resolve
from ._spec import CELLS, LETTERS
from ._threads import get_num_threads
from ._types import ForwardCache, make_grads


def _picker(names, among):
    """A function returning, as a tuple, the items of a sequence laid out as
    ``among`` that ``names`` names."""
    index = [among.index(name) for name in names]
    if len(index) == 1:
        i = index[0]
        return lambda seq: (seq[i],)
    return itemgetter(*index)


class _Pass:
    """One kernel of a cell: its argument list checked against the common
    order (``head`` is everything before the buffers), and its buffers' shapes
    for given sizes, remembered (a model calls with the same sizes again and
    again)."""

    def __init__(self, spec, kernel, head):
        if kernel.args[:len(head)] != head or kernel.args[len(head):] != kernel.buffers:
            raise ImportError(f"the {spec.name} kernel arguments {kernel.args} do not follow "
                              f"the common order {head} + buffers (see fastrnn/_spec.py)")
        self.buffers = kernel.buffers
        self._dims = [itemgetter(*(LETTERS.index(letter) for letter in kernel.shapes[name]))
                      for name in kernel.buffers]
        self._shapes = {}

    def shapes(self, sizes):
        """The buffers' shapes for sizes (T, B, I, H, G*H, T*B)."""
        shapes = self._shapes.get(sizes)
        if shapes is None:
            if len(self._shapes) > 64:
                self._shapes.clear()
            shapes = self._shapes[sizes] = [dims(sizes) for dims in self._dims]
        return shapes


class _Plan:
    """A cell's spec turned into what a call needs at hand."""

    def __init__(self, spec):
        self.spec = spec
        self.reference = (getattr(reference, spec.name + "_forward"),
                          getattr(reference, spec.name + "_backward"))
        # (k, whether b_hh's block k goes to the kernels apart) for each gate block
        self.bias_blocks = [(k, gate in spec.bias_apart) for k, gate in enumerate(spec.gates)]
        self.options = [(key, choices) for key, (choices, _) in spec.options.items()]
        option_args = tuple(arg for _, arg in spec.options.values())
        tail = ("lengths", *option_args, "use_blas", "num_threads")
        self.forward = _Pass(spec, spec.forward, (
            "x2d", "W_ih", "bias", *("b_h" + gate for gate in spec.bias_apart), "W_hh", *spec.initial,
            *tail))
        self.backward = _Pass(spec, spec.backward, (
            "x2d", "W_ih", "W_hh", *spec.initial, *spec.saved, *spec.upstream, *tail))
        buffers = self.forward.buffers
        self.results = _picker(("out", *spec.finals), buffers)  # what the forward returns
        self.saved = _picker(spec.saved, buffers)
        self.cached_inputs = itemgetter(*spec.initial, *spec.saved)  # from cache.arrays
        buffers = self.backward.buffers
        self.grads = _picker(("dx2d", *spec.state_grads, "dW_ih", "dW_hh", *spec.bias_grads),
                             buffers)


_PLANS = {name: _Plan(spec) for name, spec in CELLS.items()}


def _owned(arr, copy):
    """A C-contiguous version of arr; a private copy when ``copy`` (the cache must own it)."""
    return np.array(arr, order="C", copy=True) if copy else np.ascontiguousarray(arr)


_every_step = {}  # (T, B) -> lengths all T, for the kernels, which only read it


def _steps(lengths, T, B):
    """lengths as the kernels take it: int64 (B,), every sequence T steps when None."""
    if lengths is not None:
        return lengths
    steps = _every_step.get((T, B))
    if steps is None:
        if len(_every_step) > 64:
            _every_step.clear()
        steps = _every_step[T, B] = np.full(B, T, np.int64)
    return steps


def _biases(plan, b_ih, b_hh, H, dtype):
    """The kernels' bias arguments: ``bias`` (G*H,) = b_ih + b_hh (zeros where
    neither is given), except on the gate blocks of the spec's ``bias_apart``,
    which follow as ``b_h{gate}`` (H,) on their own."""
    if not plan.spec.bias_apart:
        if b_ih is not None and b_hh is not None:
            return (b_ih + b_hh,)
        b = b_hh if b_ih is None else b_ih
        return (np.zeros(plan.spec.G * H, dtype) if b is None else np.ascontiguousarray(b),)
    bias = np.zeros(plan.spec.G * H, dtype) if b_ih is None else np.array(b_ih, dtype, order="C")
    apart = []
    for k, is_apart in plan.bias_blocks:
        block = slice(k * H, (k + 1) * H)
        if is_apart:
            apart.append(np.zeros(H, dtype) if b_hh is None else np.array(b_hh[block], order="C"))
        elif b_hh is not None:
            bias[block] += b_hh[block]
    return (bias, *apart)


def _call(kernel, fn, arrays, plan, lengths, options, backend, T, B, I, H, dtype):  # noqa: E741
    """Call the kernel ``fn`` with ``arrays`` (the arguments before lengths),
    then lengths, the options as the kernels take them (each choice's index),
    the tuning choices, and the buffers it writes, allocated here and returned."""
    GH = plan.spec.G * H
    args = [*arrays, _steps(lengths, T, B)]
    for key, choices in plan.options:
        args.append(choices.index(options[key]))
    args.append(_tuning.use_blas(backend, B, GH, H))
    args.append(_tuning.row_threads(B, GH, get_num_threads()))
    shapes = kernel.shapes((T, B, I, H, GH, T * B))
    buffers = [*map(np.empty, shapes, repeat(dtype, len(shapes)))]  # the kernels overwrite them
    fn(*args, *buffers)
    return buffers


def forward(p, training, backend, copy_x=True):
    """``{cell}_forward`` for checked arguments ``p`` (a ``_validation.Checked``):
    returns ``(out, *finals, cache)``.  ``backend``: a name, or None for the default.

    ``copy_x=False``: x is the caller's own array that nobody changes (a layer's
    output passed to the next layer), so the cache may keep it as it is.
    """
    cell, x, states, W_ih, W_hh, b_ih, b_hh, lengths, options, T, B, I, H, _, dtype = p  # noqa
    plan = _PLANS[cell]
    backend = resolve(backend)
    if backend == "numpy":
        return plan.reference[0](x, *states, W_ih, W_hh, b_ih, b_hh, lengths=lengths,
                                 training=training, **options)
    x = _owned(x, training and copy_x)
    W_ih = _owned(W_ih, training)
    W_hh = _owned(W_hh, training)
    initial = []
    for s in states:
        initial.append(np.zeros((B, H), dtype) if s is None else _owned(s, training))
    buffers = _call(plan.forward, kernels(backend, cell).forward,
                    (x.reshape(T * B, I), W_ih, *_biases(plan, b_ih, b_hh, H, dtype), W_hh,
                     *initial), plan, lengths, options, backend, T, B, I, H, dtype)
    results = plan.results(buffers)  # out, h_n[, c_n]
    if not training:
        return (*results, None)
    cache = ForwardCache(
        cell, backend, lengths=lengths, has_b_ih=b_ih is not None, has_b_hh=b_hh is not None,
        options=options,
        arrays=dict(zip(plan.spec.cached, (x, *initial, W_ih, W_hh, *plan.saved(buffers)))))
    return (cache.read_only_out(), *results[1:], cache)


def backward(cell, upstream, cache):
    """``{cell}_backward`` for checked upstream gradients (d_out, d_h_n[, d_c_n];
    any layout) and a cache of ``cell``: returns the gradients, computed by
    the backend whose forward made the cache."""
    plan = _PLANS[cell]
    if cache.backend == "numpy":
        return plan.reference[1](*upstream, cache)
    arrays = cache.arrays
    x, W_ih, W_hh = arrays["x"], arrays["W_ih"], arrays["W_hh"]
    T, B, I = x.shape  # noqa: E741
    H = W_hh.shape[1]
    dtype = x.dtype
    head = [x.reshape(T * B, I), W_ih, W_hh, *plan.cached_inputs(arrays)]
    for d, shape in zip(upstream, ((T, B, H), (B, H), (B, H))):
        head.append(np.zeros(shape, dtype) if d is None else np.ascontiguousarray(d))
    buffers = _call(plan.backward, kernels(cache.backend, cell).backward, head,
                    plan, cache.lengths, cache.options, cache.backend, T, B, I, H, dtype)
    dx2d, *grads, db_ih, db_hh = plan.grads(buffers)
    return make_grads(cache, dx2d.reshape(T, B, I), *grads, db_ih=db_ih, db_hh=db_hh)
