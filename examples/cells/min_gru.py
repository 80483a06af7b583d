"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a GRU whose gate and
candidate see only x_t, so a step has no product with h_{t-1}
(``recurrent=False``):  z = sigmoid(W_z x_t), h~ = W_h x_t,
h_t = (1 - z) h_{t-1} + z h~.  Trained here to follow an exponential moving
average of its input, which it can represent exactly (z = 0.1, h~ = x).  Run: python examples/cells/min_gru.py"""
import numpy as np

from fastrnn.cells import Cell, sigmoid


def forward(x, r, s, p):
    z = sigmoid(x[0])
    return ((1 - z) * s[0] + z * x[1],)


def backward(x, r, s, p, d):
    z = sigmoid(x[0])
    dz = d[0] * (x[1] - s[0]) * z * (1 - z)
    return (dz, d[0] * z), (), (d[0] * (1 - z),), ()


MIN_GRU = Cell("min_gru", gates=("z", "h"), forward=forward, backward=backward,
               recurrent=False)


def main(T=20, B=32, H=8, steps=300, lr=0.5, seed=0, verbose=True):
    """Fit minGRU + a linear readout to y_t = 0.9 y_{t-1} + 0.1 x_t by plain
    SGD; returns the last batch's mean squared error (predicting 0 scores
    the variance of y, about 0.017)."""
    MIN_GRU.check_gradients()
    rng = np.random.default_rng(seed)
    layer = MIN_GRU.layer(1, H, dtype=np.float64, seed=seed)  # a fastrnn.GRU-like layer
    w_out, b_out = 0.1 * rng.standard_normal(H), 0.0
    for step in range(steps):
        x = rng.uniform(-1, 1, (T, B, 1))
        y = np.zeros((T, B))
        for t in range(T):
            y[t] = 0.9 * y[t - 1] + 0.1 * x[t, :, 0] if t else 0.1 * x[0, :, 0]
        out, _ = layer.forward(x)
        err = out @ w_out + b_out - y
        loss = float(np.mean(err ** 2))
        d_pred = 2 * err / err.size
        layer.backward(d_pred[..., None] * w_out)       # gradients into layer.grads
        w_out -= lr * np.einsum("tb,tbh->h", d_pred, out)
        b_out -= lr * d_pred.sum()
        for name, p in layer.named_parameters():       # the layer's own arrays
            p -= lr * layer.grads[name]
        if verbose and step % 50 == 0:
            print(f"step {step:4d}  mse {loss:.4f}")
    if verbose:
        print(f"final mse {loss:.4f}")
    return loss


if __name__ == "__main__":
    main()
