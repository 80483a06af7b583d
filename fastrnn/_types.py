"""The objects that pass between a forward and its backward: cache and gradients."""
from typing import NamedTuple, Optional

import numpy as np


class RNNGrads(NamedTuple):
    """Gradients of an Elman RNN.  A bias that was None has a None gradient."""

    dx: np.ndarray  # (T, B, I)
    dh0: np.ndarray  # (B, H)
    dW_ih: np.ndarray  # (H, I)
    dW_hh: np.ndarray  # (H, H)
    db_ih: Optional[np.ndarray]  # (H,) or None
    db_hh: Optional[np.ndarray]  # (H,) or None

    @classmethod
    def from_cache(cls, cache, dx, dh0, dW_ih, dW_hh, db):
        """``db`` is the gradient of b_ih and of b_hh alike: each bias the
        forward had gets its own array, a bias it did not have gets None."""
        return cls(dx=dx, dh0=dh0, dW_ih=dW_ih, dW_hh=dW_hh,
                   db_ih=db.copy() if cache.has_b_ih else None,
                   db_hh=db if cache.has_b_hh else None)


class ForwardCache:
    """What a training-mode forward saves for its backward.

    Every array in it is owned by the cache (copied from the caller's inputs,
    or produced by the forward), so changing an input after the forward
    cannot change the gradients.  ``out`` is the forward's own output; it is
    handed to the caller read-only for the same reason.

    The fields are the same whichever backend produced them, so any backend's
    backward accepts any backend's cache.
    """

    __slots__ = ("cell", "backend", "nonlinearity", "x", "h0", "W_ih", "W_hh",
                 "has_b_ih", "has_b_hh", "lengths", "out")

    def __init__(self, *, cell, backend, nonlinearity, x, h0, W_ih, W_hh,
                 has_b_ih, has_b_hh, lengths, out):
        self.cell = cell  # "rnn" (Elman); LSTM and GRU add their own
        self.backend = backend  # the backend whose forward made this cache
        self.nonlinearity = nonlinearity
        self.x = x  # (T, B, I), C-contiguous
        self.h0 = h0  # (B, H)
        self.W_ih = W_ih  # (G*H, I), C-contiguous
        self.W_hh = W_hh  # (G*H, H), C-contiguous
        self.has_b_ih = has_b_ih
        self.has_b_hh = has_b_hh
        self.lengths = lengths  # (B,) int64, or None for "every sequence has T steps"
        self.out = out  # (T, B, H): h_t, zero past each sequence's length

    def read_only_out(self):
        """``out`` as handed to the caller: a read-only view, since the cache holds it."""
        out = self.out.view()
        out.flags.writeable = False
        return out

    def __repr__(self):
        T, B, _ = self.x.shape
        return (f"ForwardCache(cell={self.cell!r}, backend={self.backend!r}, T={T}, B={B}, "
                f"H={self.W_hh.shape[1]}, dtype={self.x.dtype})")
