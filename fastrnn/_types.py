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


class LSTMGrads(NamedTuple):
    """Gradients of an LSTM (gate blocks i, f, g, o).  A bias that was None has a None gradient."""

    dx: np.ndarray  # (T, B, I)
    dh0: np.ndarray  # (B, H)
    dc0: np.ndarray  # (B, H)
    dW_ih: np.ndarray  # (4H, I)
    dW_hh: np.ndarray  # (4H, H)
    db_ih: Optional[np.ndarray]  # (4H,) or None
    db_hh: Optional[np.ndarray]  # (4H,) or None


class GRUGrads(NamedTuple):
    """Gradients of a GRU (gate blocks r, z, n).  A bias that was None has a None gradient.

    Unlike the other cells, db_ih and db_hh differ: b_hn sits inside the reset
    product, so its gradient is r times that of b_in."""

    dx: np.ndarray  # (T, B, I)
    dh0: np.ndarray  # (B, H)
    dW_ih: np.ndarray  # (3H, I)
    dW_hh: np.ndarray  # (3H, H)
    db_ih: Optional[np.ndarray]  # (3H,) or None
    db_hh: Optional[np.ndarray]  # (3H,) or None


def make_grads(cls, cache, *arrays, db_ih, db_hh):
    """``cls(*arrays, db_ih, db_hh)`` with the bias gradients as handed back: a
    bias the forward had gets its array (its own copy when the kernel computed
    one array for both, as the Elman and LSTM cells do), one it did not have
    gets None."""
    if cache.has_b_ih and cache.has_b_hh and db_ih is db_hh:
        db_ih = db_ih.copy()
    return cls(*arrays, db_ih if cache.has_b_ih else None, db_hh if cache.has_b_hh else None)


class ForwardCache:
    """What a training-mode forward saves for its backward.

    Every array in it is owned by the cache (copied from the caller's inputs,
    or produced by the forward), so changing an input after the forward
    cannot change the gradients.  ``out`` is the forward's own output; it is
    handed to the caller read-only for the same reason.

    The fields are the same whichever backend produced them, so any backend's
    backward accepts any backend's cache.
    """

    __slots__ = ("cell", "backend", "nonlinearity", "x", "h0", "c0", "W_ih", "W_hh",
                 "has_b_ih", "has_b_hh", "lengths", "out", "gates", "c", "hn")

    def __init__(self, *, cell, backend, x, h0, W_ih, W_hh, has_b_ih, has_b_hh, lengths, out,
                 nonlinearity=None, c0=None, gates=None, c=None, hn=None):
        self.cell = cell  # "rnn" (Elman), "lstm" or "gru"
        self.backend = backend  # the backend whose forward made this cache
        self.nonlinearity = nonlinearity  # Elman: "tanh" or "relu"; None for the gated cells
        self.x = x  # (T, B, I), C-contiguous
        self.h0 = h0  # (B, H)
        self.c0 = c0  # LSTM: (B, H)
        self.W_ih = W_ih  # (G*H, I), C-contiguous
        self.W_hh = W_hh  # (G*H, H), C-contiguous
        self.has_b_ih = has_b_ih
        self.has_b_hh = has_b_hh
        self.lengths = lengths  # (B,) int64, or None for "every sequence has T steps"
        self.out = out  # (T, B, H): h_t, zero past each sequence's length
        # What the gated cells' backward needs, per step (values past a sequence's
        # length are never read):
        self.gates = gates  # (T, B, G*H): the activated gates, LSTM i f g o, GRU r z n
        self.c = c  # LSTM: (T, B, H), the cell state c_t
        self.hn = hn  # GRU: (T, B, H), W_hn h_{t-1} + b_hn (what r multiplies)

    def read_only_out(self):
        """``out`` as handed to the caller: a read-only view, since the cache holds it."""
        out = self.out.view()
        out.flags.writeable = False
        return out

    def __repr__(self):
        T, B, _ = self.x.shape
        return (f"ForwardCache(cell={self.cell!r}, backend={self.backend!r}, T={T}, B={B}, "
                f"H={self.W_hh.shape[1]}, dtype={self.x.dtype})")
