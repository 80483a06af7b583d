"""The one path from a checked call to a kernel, for every cell.

Forward: resolve the backend, make the arrays the kernel takes (C-contiguous,
one dtype; private copies where the cache must own them), allocate the
buffers the cell's spec declares, call the kernel, and build the cache.
Backward: the same from a cache.  The kernels trust what they get, and
nothing reaches them any other way.

The public functions check their arguments (``_validation``) and call
``forward`` / ``backward`` here; the layers check a call once, not once per
layer and direction, and call them for each.

The two paths are written once, below, as templates; at import each cell's
spec fills them in (its states, bias arguments, options, buffers and the
kernel's argument list, by name) and the result is compiled, as
``collections.namedtuple`` compiles its classes.  ``source(cell, pass_)``
shows what was compiled.  Written as generic Python instead (argument lists
built by name or by position, buffers allocated in a loop), a call cost
1.5-2 us more: a quarter of the smallest call, and more than the old
per-cell wrappers, which this replaces.
"""
import textwrap

import numpy as np

from . import _tuning, reference
from ._backends import kernels, resolve
from ._spec import CELLS
from ._threads import get_num_threads
from ._types import ForwardCache, make_grads
from ._validation import check_bool

# Arrays the kernels only read, made once per shape: "every sequence runs all
# T steps", and the zero states and upstream gradients that None stands for
# (each np.full / np.zeros costs 0.2-0.4 us of a 6-10 us call).  Writable, as
# the Numba kernels are compiled for writable arrays, and never handed to a
# caller: a cache keeps arrays of its own.
_constants = {}


def _constant(shape, value, dtype):
    key = (shape, value, dtype)
    arr = _constants.get(key)
    if arr is None:
        if len(_constants) > 256:
            _constants.clear()
        arr = _constants[key] = np.full(shape, value, dtype)
    return arr


def _biases(spec, b_ih, b_hh, H, dtype):
    """The kernels' bias arguments: ``bias`` (G*H,) = b_ih + b_hh (zeros where
    neither is given), then, for each gate block of the spec's ``bias_apart``,
    that block of b_hh (H,) on its own (and not in ``bias``)."""
    if not spec.bias_apart:
        if b_ih is not None and b_hh is not None:
            return (b_ih + b_hh,)
        b = b_hh if b_ih is None else b_ih
        return (np.zeros(spec.G * H, dtype) if b is None else np.ascontiguousarray(b),)
    bias = np.zeros(spec.G * H, dtype) if b_ih is None else np.array(b_ih, dtype, order="C")
    apart = []
    for k, gate in enumerate(spec.gates):
        block = slice(k * H, (k + 1) * H)
        if gate in spec.bias_apart:
            apart.append(np.zeros(H, dtype) if b_hh is None else np.array(b_hh[block], order="C"))
        elif b_hh is not None:
            bias[block] += b_hh[block]
    return (bias, *apart)


_FORWARD = '''
def forward(p, training, backend, copy_x, compute):
    _, x, states, W_ih, W_hh, b_ih, b_hh, extras, lengths, options, T, B, I, H, G, dtype, P = p
    backend = resolve(backend)
    if backend == "numpy":
        return reference_forward(x, *states, W_ih, W_hh, b_ih, b_hh, lengths=lengths,
                                 training=training, compute_dtype=compute,
                                 **options{extra_kwargs})
    if compute is not None and backend != "cython":
        raise ValueError(f"compute_dtype={{compute!r}} runs on the cython backend (and the "
                         f"reference, backend='numpy'), not on {{backend!r}}")
    bf16, int8 = compute == "bfloat16", compute == "int8"
    {initial} = states
{extras_in}
    if training:  # the cache's own copies
        x = np.array(x, order="C", copy=True) if copy_x else np.ascontiguousarray(x)
        W_ih = np.array(W_ih, order="C", copy=True)
        W_hh = np.array(W_hh, order="C", copy=True)
{own_states}
{own_extras}
    elif int8:  # W_ih, W_hh are QuantizedWeights, which the kernel takes as they are
        x = np.ascontiguousarray(x)
{read_states}
{read_extras}
    else:
        x = np.ascontiguousarray(x)
        W_ih = np.ascontiguousarray(W_ih)
        W_hh = np.ascontiguousarray(W_hh)
{read_states}
{read_extras}
    {bias_args} = _biases(spec, b_ih, b_hh, H, dtype)
{option_args}
    GH = G * H
    use_blas = _tuning.use_blas(backend, B, GH, H)
    num_threads = _tuning.engine_threads(backend, B, I, H, GH, get_num_threads())
    TS = (_tuning.int8_kept_steps(T, B, I, H, G) if int8
          else _tuning.kept_steps(backend, training, T, B))
    steps = _constant(B, T, np.int64) if lengths is None else lengths
    x2d = x.reshape(T * B, I)
{buffers}
    if int8:
        {call_int8}
    else:
        {call}
    if not training:
        return out, {finals}, None
    arrays = {cached}
{cache_extras}
    cache = ForwardCache("{cell}", backend, lengths=lengths, has_b_ih=b_ih is not None,
                         has_b_hh=b_hh is not None, options=options,
                         compute=compute, arrays=arrays)
    return cache.read_only_out(), {finals}, cache
'''

_BACKWARD = '''
def backward(upstream, cache):
    if cache.backend == "numpy":
        return reference_backward(*upstream, cache)
    arrays = cache.arrays
    x, W_ih, W_hh = arrays["x"], arrays["W_ih"], arrays["W_hh"]
{from_cache}
    T, B, I = x.shape
    H, P = W_hh.shape[0] // {G}, W_hh.shape[1]
    dtype = x.dtype
{extras_from_cache}
    {upstream} = upstream
{read_upstream}
{option_args}
    GH = {G} * H
    bf16 = cache.compute == "bfloat16"
    use_blas = _tuning.use_blas(cache.backend, B, GH, H)
    num_threads = _tuning.engine_threads(cache.backend, B, I, H, GH, get_num_threads())
    TS = _tuning.workspace_steps(cache.backend, T, B)
    steps = _constant(B, T, np.int64) if cache.lengths is None else cache.lengths
    x2d = x.reshape(T * B, I)
{buffers}
    {call}
    return make_grads(cache, dx2d.reshape(T, B, I), {grads}, dW_ih, dW_hh,
                      db_ih={db_ih}, db_hh={db_hh}, extras=({d_extras}))
'''

def int8_args(args):
    """A forward kernel's arguments, as its int8 twin ``forward_int8`` takes
    them: the same but bf16 and use_blas (W_ih and W_hh are QuantizedWeights)."""
    return [a for a in args if a not in ("bf16", "use_blas")]


_SIZES = {"T": "T", "B": "B", "I": "I", "H": "H", "P": "P", "GH": "GH", "H3": "3 * H",
          "TB": "T * B", "TS": "TS"}


def _lines(lines, indent):
    return "\n".join(" " * indent + line for line in lines)


def _call(fn, args, indent=4):
    """``fn(args)`` wrapped at 100 columns, its first line at ``indent``."""
    text = textwrap.fill(f"{fn}({', '.join(args)})", 100 - indent,
                         subsequent_indent=" " * (len(fn) + 1), break_long_words=False,
                         break_on_hyphens=False)
    return textwrap.indent(text, " " * indent).lstrip()


def _shape(shape, sizes=_SIZES):
    dims = [sizes[s] for s in shape]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _fill(spec, pass_):
    """The source of ``pass_`` ("forward" or "backward") for the cell ``spec``."""
    kernel = getattr(spec, pass_)
    known = {"x2d", "W_ih", "W_hh", *spec.initial, "lengths", "bf16", "use_blas", "num_threads",
             *(arg for _, arg in spec.options.values()), *kernel.shapes,
             *spec.extras, *(flag for _, flag in spec.extras.values())}
    known |= ({"bias", *("b_h" + g for g in spec.bias_apart)} if pass_ == "forward"
              else {*spec.saved, *spec.upstream})
    if not known.issuperset(kernel.args):
        raise ImportError(f"the {spec.name} {pass_} kernel takes arguments the driver does not "
                          f"have: {sorted(set(kernel.args) - known)} (see fastrnn/_spec.py)")
    options = "options" if pass_ == "forward" else "cache.options"
    backend = "backend" if pass_ == "forward" else "cache.backend"
    # The kernels call the lengths they read "lengths"; here they are "steps".
    args = ["steps" if a == "lengths" else a for a in kernel.args]
    shapes = dict(kernel.shapes)
    if pass_ == "forward":
        # What the forward saves for the backward (but the output) has one row
        # per step in training; in inference the kernels may keep only the
        # last TS steps' (_tuning.kept_steps).
        shapes.update({name: ("TS",) + shape[1:] for name, shape in shapes.items()
                       if name in spec.saved and name != "out" and shape[0] == "T"})
    common = dict(
        buffers=_lines([f"{name} = np.empty({_shape(shape)}, dtype)"
                        for name, shape in shapes.items()], 4),
        option_args=_lines([f'{arg} = {choices!r}.index({options}["{key}"])'
                            for key, (choices, arg) in spec.options.items()], 4),
        call=_call(f'kernels({backend}, "{spec.name}").{pass_}', args))
    if pass_ == "forward":
        common["call_int8"] = _call(f'kernels("cython", "{spec.name}").forward_int8',
                                    int8_args(args), 8)
    extras = spec.extras
    # An absent extra: zeros of its shape, with no rows in P (nothing to project)
    zeros = {name: f"_constant({_shape(shape, {**_SIZES, 'P': '0'})}, 0, dtype)"
             for name, (shape, _) in extras.items()}
    # The states' shapes: h is (B, P), the others (B, H)
    states = ["(B, P)"] + ["(B, H)"] * (len(spec.initial) - 1)
    if pass_ == "forward":
        source = _FORWARD.format(
            extra_kwargs="".join(f", {name}=extras[{k}]" for k, name in enumerate(extras)),
            extras_in=_lines([", ".join(extras) + ", = extras"]
                             + [f"{flag} = {name} is not None"
                                for name, (_, flag) in extras.items()], 4) if extras else "",
            own_extras=_lines([f"{name} = {zeros[name]} if {name} is None "
                               f'else np.array({name}, order="C", copy=True)'
                               for name in extras], 8),
            read_extras=_lines([f"{name} = {zeros[name]} if {name} is None "
                                f"else np.ascontiguousarray({name})" for name in extras], 8),
            cache_extras=_lines([line for name, (_, flag) in extras.items()
                                 for line in (f"if {flag}:", f'    arrays["{name}"] = {name}')],
                                4),
            **common, cell=spec.name, initial=", ".join(spec.initial) + ",",
            own_states=_lines([f"{s} = np.zeros({shape}, dtype) if {s} is None "
                               f'else np.array({s}, order="C", copy=True)'
                               for s, shape in zip(spec.initial, states)], 8),
            read_states=_lines([f"{s} = _constant({shape}, 0, dtype) if {s} is None "
                                f"else np.ascontiguousarray({s})"
                                for s, shape in zip(spec.initial, states)], 8),
            bias_args=", ".join(("bias", *("b_h" + g for g in spec.bias_apart))) + ",",
            finals=", ".join(spec.finals),
            cached=_call("dict", [f"{n}={n}" for n in spec.cached], 13))
    else:
        shapes = ["(T, B, P)"] + states
        source = _BACKWARD.format(
            **common, G=spec.G,
            extras_from_cache=_lines([line for name, (_, flag) in extras.items()
                                      for line in (f'{flag} = "{name}" in arrays',
                                                   f'{name} = arrays["{name}"] if {flag} '
                                                   f"else {zeros[name]}")], 4),
            d_extras="".join(f"d{name}, " for name in extras),
            from_cache=_lines([f'{name} = arrays["{name}"]'
                               for name in spec.initial + spec.saved], 4),
            upstream=", ".join(spec.upstream) + ",",
            read_upstream=_lines([f"{u} = _constant({shape}, 0, dtype) if {u} is None "
                                  f"else np.ascontiguousarray({u})"
                                  for u, shape in zip(spec.upstream, shapes)], 4),
            grads=", ".join(spec.state_grads),
            db_ih=spec.bias_grads[0], db_hh=spec.bias_grads[1])
    return "\n".join(line for line in source.splitlines() if line.strip())  # empty parts


def _compile(spec, pass_):
    namespace = dict(np=np, _tuning=_tuning, kernels=kernels, resolve=resolve,
                     get_num_threads=get_num_threads, ForwardCache=ForwardCache,
                     make_grads=make_grads, _biases=_biases, _constant=_constant, spec=spec,
                     reference_forward=getattr(reference, spec.name + "_forward"),
                     reference_backward=getattr(reference, spec.name + "_backward"))
    code = compile(_fill(spec, pass_), f"<fastrnn._driver: {spec.name} {pass_}>", "exec")
    exec(code, namespace)
    return namespace[pass_]


_FORWARDS = {name: _compile(spec, "forward") for name, spec in CELLS.items()}
_BACKWARDS = {name: _compile(spec, "backward") for name, spec in CELLS.items()}


def source(cell, pass_):
    """The compiled source of ``cell``'s ``pass_`` ("forward" or "backward")."""
    return _fill(CELLS[cell], pass_)


def forward(p, training, backend, copy_x=True, compute=None):
    """``{cell}_forward`` for checked arguments ``p`` (a ``_validation.Checked``):
    returns ``(out, *finals, cache)``.  ``backend``: a name, or None for the default.

    ``copy_x=False``: x is the caller's own array that nobody changes (a layer's
    output passed to the next layer), so the cache may keep it as it is.
    """
    if training is not True and training is not False:
        training = check_bool(training, "training")
    if p.T == 0 or p.B == 0:
        # No steps or no sequences: the reference's loops do nothing and its
        # products have no rows, so no kernel is called on empty work (its
        # cache sends the backward there too).
        backend = "numpy"
    return _FORWARDS[p.cell](p, training, backend, copy_x, compute)


def backward(cell, upstream, cache):
    """``{cell}_backward`` for checked upstream gradients (d_out, d_h_n[, d_c_n];
    any layout) and a cache of ``cell``: returns the gradients, computed by
    the backend whose forward made the cache."""
    return _BACKWARDS[cell](upstream, cache)
