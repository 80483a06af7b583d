"""What the four examples share: a linear read-out, softmax cross-entropy and Adam.

Deliberately small: enough to train the examples' models on top of fastrnn's
layers and cells.  (fastrnn's layers give their parameters and gradients as
dicts of NumPy arrays; these helpers work on such dicts.)
"""
import numpy as np


class Linear:
    """y = x W^T + b over the last axis, with its backward."""

    def __init__(self, n_in, n_out, rng, dtype=np.float32):
        k = 1 / np.sqrt(n_in)
        self.params = {"weight": rng.uniform(-k, k, (n_out, n_in)).astype(dtype),
                       "bias": np.zeros(n_out, dtype)}
        self.grads = {}

    def __call__(self, x):
        self._x = x
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, dy):
        x2 = self._x.reshape(-1, self._x.shape[-1])
        dy2 = dy.reshape(-1, dy.shape[-1])
        self.grads = {"weight": dy2.T @ x2, "bias": dy2.sum(axis=0)}
        return dy @ self.params["weight"]


def softmax_cross_entropy(logits, targets, mask=None):
    """Mean cross-entropy over the positions where mask is true, and d loss / d logits.

    logits (..., C), targets (...) integer classes, mask (...) bool or None.
    """
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    mask = np.ones(targets.shape, bool) if mask is None else mask
    n = max(int(mask.sum()), 1)
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    loss = -float((picked * mask).sum()) / n
    grad = np.exp(logp)
    np.put_along_axis(grad, targets[..., None], np.take_along_axis(grad, targets[..., None], -1) - 1,
                      axis=-1)
    return loss, (grad * mask[..., None] / n).astype(logits.dtype)


class Adam:
    """Adam over named parameter arrays, updated in place."""

    def __init__(self, params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        for k, g in grads.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1 ** self.t)
            v_hat = self.v[k] / (1 - b2 ** self.t)
            self.params[k] -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(
                self.params[k].dtype)


def one_hot(indices, n, dtype=np.float32):
    return np.eye(n, dtype=dtype)[indices]
