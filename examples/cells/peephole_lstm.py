"""The peephole LSTM (Gers and Schmidhuber 2000; ONNX's LSTM with P) as a user
cell: the gates i, f see c_{t-1} and o sees c_t, each through a weight per
unit.  Checked equal to fastrnn.lstm_forward(..., W_ch=...).
Run: python examples/cells/peephole_lstm.py"""
import numpy as np

from fastrnn.cells import Cell, sigmoid, tanh


def forward(x, r, s, p):
    h, c = s
    i = sigmoid(x[0] + r[0] + p[0] * c)
    f = sigmoid(x[1] + r[1] + p[1] * c)
    g = tanh(x[2] + r[2])
    c_new = f * c + i * g
    o = sigmoid(x[3] + r[3] + p[2] * c_new)
    return o * tanh(c_new), c_new


def backward(x, r, s, p, d):
    h, c = s
    i = sigmoid(x[0] + r[0] + p[0] * c)
    f = sigmoid(x[1] + r[1] + p[1] * c)
    g = tanh(x[2] + r[2])
    c_new = f * c + i * g
    o = sigmoid(x[3] + r[3] + p[2] * c_new)
    tc = tanh(c_new)
    dh, dc = d
    do = dh * tc * o * (1 - o)
    dc_new = dc + dh * o * (1 - tc * tc) + do * p[2]
    di = dc_new * g * i * (1 - i)
    df = dc_new * c * f * (1 - f)
    dg = dc_new * i * (1 - g * g)
    gates = (di, df, dg, do)
    # h_{t-1} reaches the step only through W_hh: its direct gradient is 0
    return gates, gates, (0.0, dc_new * f + di * p[0] + df * p[1]), (di * c, df * c, do * c_new)


PEEPHOLE_LSTM = Cell("peephole_lstm", gates=("i", "f", "g", "o"), states=("h", "c"),
                     params=("p_i", "p_f", "p_o"), forward=forward, backward=backward)


def main(T=50, B=8, I=16, H=32, seed=0, verbose=True):
    """The largest difference from fastrnn's built-in peephole LSTM."""
    import fastrnn

    PEEPHOLE_LSTM.check_gradients()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    W_ih, W_hh = 0.3 * rng.standard_normal((4 * H, I)), 0.3 * rng.standard_normal((4 * H, H))
    b_ih, b_hh = 0.1 * rng.standard_normal(4 * H), 0.1 * rng.standard_normal(4 * H)
    p_i, p_f, p_o = 0.5 * rng.standard_normal((3, H))
    d_out = rng.standard_normal((T, B, H))
    out, h_n, c_n, cache = PEEPHOLE_LSTM.forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh, p_i, p_f, p_o)
    grads = PEEPHOLE_LSTM.backward(d_out, None, None, cache=cache)
    W_ch = np.concatenate([p_i, p_f, p_o])
    ref_out, ref_h_n, ref_c_n, ref_cache = fastrnn.lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh,
                                                                W_ch=W_ch)
    ref = fastrnn.lstm_backward(d_out, None, None, ref_cache)
    diffs = {"out": np.abs(out - ref_out).max(), "c_n": np.abs(c_n - ref_c_n).max()}
    diffs.update((name, np.abs(getattr(grads, name) - getattr(ref, name)).max())
                 for name in ("dx", "dh0", "dc0", "dW_ih", "dW_hh", "db_ih", "db_hh"))
    dW_ch = np.concatenate([grads.dp_i, grads.dp_f, grads.dp_o])
    diffs["dW_ch"] = np.abs(dW_ch - ref.dW_ch).max()
    if verbose:
        print("user peephole LSTM vs fastrnn.lstm_*(W_ch=...): largest difference (float64)")
        for name, value in diffs.items():
            print(f"  {name:6s} {value:.2e}")
    return diffs


if __name__ == "__main__":
    main()
