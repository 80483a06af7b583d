"""The objects that pass between a forward and its backward: cache and gradients.

Both are built from the cell's entry in ``_spec``: the cache holds the arrays
``spec.cached`` names, the gradient tuple has the fields ``spec.grads``.
"""
from collections import namedtuple
from types import MappingProxyType

from ._spec import CELLS


def _grads_type(spec):
    cls = namedtuple(spec.layer + "Grads", spec.grads, module=__name__)
    cls.__doc__ = (f"Gradients of the {spec.title}, as ``{spec.name}_backward`` returns them: "
                   f"{', '.join(spec.grads)}, each shaped like the array it is the gradient "
                   "of.  A bias (or an optional weight, such as the LSTM's W_ch) that was "
                   "None has a None gradient.")
    return cls


GRADS = {name: _grads_type(spec) for name, spec in CELLS.items()}
# The public names (fastrnn.RNNGrads, ...); pickling finds the classes under them.
RNNGrads, LSTMGrads, GRUGrads = GRADS["rnn"], GRADS["lstm"], GRADS["gru"]


def make_grads(cache, *arrays, db_ih, db_hh, extras=()):
    """The gradient tuple of ``cache``'s cell: ``arrays`` are its fields up to
    dW_hh, in order; a bias the forward had gets its gradient (its own copy
    when the kernel computed one array for both, as the Elman and LSTM cells
    do), one it did not have gets None.  ``extras``: the gradients of the
    spec's extra weights, in order; one the forward did not have (not in the
    cache) gets None."""
    if cache.has_b_ih and cache.has_b_hh and db_ih is db_hh:
        db_ih = db_ih.copy()
    extras = extras or [None] * len(CELLS[cache.cell].extras)
    return GRADS[cache.cell](*arrays, db_ih if cache.has_b_ih else None,
                             db_hh if cache.has_b_hh else None,
                             *[d if name in cache.arrays else None
                               for name, d in zip(CELLS[cache.cell].extras, extras)])


class ForwardCache:
    """What a training-mode forward saves for its backward.

    ``cell`` (the spec name), ``backend`` (whose forward made it),
    ``lengths`` ((B,) int64, or None for "every sequence has T steps"),
    ``has_b_ih`` / ``has_b_hh``, ``options`` (e.g. the Elman cell's
    nonlinearity), and ``arrays``: those the cell's spec lists in ``cached``,
    x (T, B, I), the initial states (B, H), W_ih, W_hh, and what the forward
    saved: out (T, B, H), and for the gated cells the activated gates
    (T, B, G*H) and the LSTM's c_t or the GRU's W_hn h_{t-1} + b_hn, each
    (T, B, H).  Options and arrays also read as attributes (``cache.out``,
    ``cache.nonlinearity``).  ``compute``: None, or "bfloat16" when the
    forward's products ran in bfloat16 (its backward's do too).

    Every array in it is owned by the cache (copied from the caller's inputs,
    or produced by the forward), so changing an input after the forward
    cannot change the gradients.  ``out`` is the forward's own output; it is
    handed to the caller read-only for the same reason.

    The fields are the same whichever backend produced them, so any backend's
    backward accepts any backend's cache.
    """

    __slots__ = ("cell", "backend", "lengths", "has_b_ih", "has_b_hh", "options", "arrays",
                 "compute")

    def __init__(self, cell, backend, *, lengths, has_b_ih, has_b_hh, options, arrays,
                 compute=None):
        # Read-only once made (its mappings too): a backward trusts what it
        # holds, so an edited cache is refused rather than read out of bounds
        # (and _validation.check_backward checks it again before any kernel).
        for name, value in (("cell", cell), ("backend", backend), ("lengths", lengths),
                            ("has_b_ih", has_b_ih), ("has_b_hh", has_b_hh),
                            ("options", MappingProxyType(dict(options))),
                            ("arrays", MappingProxyType(dict(arrays))), ("compute", compute)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"a ForwardCache is read-only (setting {name!r}): run the forward "
                             "again rather than editing its cache")

    def __delattr__(self, name):
        raise AttributeError(f"a ForwardCache is read-only (deleting {name!r})")

    def __reduce__(self):  # pickle and copy: the mappings as plain dicts
        return (_rebuild, (self.cell, self.backend, self.lengths, self.has_b_ih, self.has_b_hh,
                           dict(self.options), dict(self.arrays), self.compute))

    def read_only_out(self):
        """``out`` as handed to the caller: a read-only view, since the cache holds it."""
        out = self.arrays["out"].view()
        out.flags.writeable = False
        return out

    def __repr__(self):
        T, B, _ = self.x.shape
        return (f"ForwardCache(cell={self.cell!r}, backend={self.backend!r}, T={T}, B={B}, "
                f"H={self.W_hh.shape[1]}, dtype={self.x.dtype})")


def _rebuild(cell, backend, lengths, has_b_ih, has_b_hh, options, arrays, compute=None):
    return ForwardCache(cell, backend, lengths=lengths, has_b_ih=has_b_ih, has_b_hh=has_b_hh,
                        options=options, arrays=arrays, compute=compute)


def _field(name):
    def get(self):
        where = self.arrays if name in self.arrays else self.options
        if name not in where:
            raise AttributeError(f"a {self.cell} cache has no {name!r}")
        return where[name]
    return property(get, doc=f"``{name}`` of the cells that have it")


# cache.x, cache.out, cache.nonlinearity, ...: every array and option of any cell.
for _name in sorted({n for spec in CELLS.values()
                     for n in (*spec.cached, *spec.options, *spec.extras)}):
    setattr(ForwardCache, _name, _field(_name))
