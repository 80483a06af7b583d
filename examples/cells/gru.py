"""The built-in GRU written as a user cell (fastrnn.cells), checked equal to
fastrnn.gru_forward / gru_backward.  Run: python examples/cells/gru.py"""
import numpy as np

from fastrnn.cells import Cell, sigmoid, tanh


def forward(x, r, s, p):
    # x, r: the input and recurrent terms of gates r, z, n; s: (h_{t-1},)
    reset = sigmoid(x[0] + r[0])
    z = sigmoid(x[1] + r[1])
    n = tanh(x[2] + reset * r[2])
    return ((1 - z) * n + z * s[0],)


def backward(x, r, s, p, d):
    reset = sigmoid(x[0] + r[0])
    z = sigmoid(x[1] + r[1])
    n = tanh(x[2] + reset * r[2])
    dn = d[0] * (1 - z) * (1 - n * n)
    dz = d[0] * (s[0] - n) * z * (1 - z)
    dreset = dn * r[2] * reset * (1 - reset)
    # (dx, dr, ds, dp): r[2] reaches n through the reset gate, x[2] directly
    return (dreset, dz, dn), (dreset, dz, dn * reset), (d[0] * z,), ()


GRU = Cell("gru", gates=("r", "z", "n"), forward=forward, backward=backward)


def main(T=50, B=8, I=16, H=32, seed=0, verbose=True):
    """The largest difference from the built-in GRU, forward and every gradient."""
    import fastrnn

    GRU.check_gradients()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    W_ih, W_hh = 0.3 * rng.standard_normal((3 * H, I)), 0.3 * rng.standard_normal((3 * H, H))
    b_ih, b_hh = 0.1 * rng.standard_normal(3 * H), 0.1 * rng.standard_normal(3 * H)
    d_out = rng.standard_normal((T, B, H))
    out, h_n, cache = GRU.forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    grads = GRU.backward(d_out, None, cache=cache)
    ref_out, ref_h_n, ref_cache = fastrnn.gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    ref = fastrnn.gru_backward(d_out, None, ref_cache)
    diffs = {"out": np.abs(out - ref_out).max(), "h_n": np.abs(h_n - ref_h_n).max()}
    diffs.update((name, np.abs(getattr(grads, name) - getattr(ref, name)).max())
                 for name in ref._fields)
    if verbose:
        print("user GRU vs fastrnn.gru_*: largest difference (float64)")
        for name, value in diffs.items():
            print(f"  {name:6s} {value:.2e}")
    return diffs


if __name__ == "__main__":
    main()
