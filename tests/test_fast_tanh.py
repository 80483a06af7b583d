"""The float32 tanh of the fast kernels (a rational approximation, kernels/fast_tanh.h).

Seen through a one-step forward of one hidden unit over a batch of one value
per sequence, with W_ih = 1, W_hh = 0 and no bias: out = tanh(x) exactly as
the kernel computes it, and no value meets another in a product.
"""
import numpy as np
import pytest

import fastrnn

# kernels/fast_tanh.h: 3.8e-7 measured over every 7th float32 in [0, 12].
MAX_ABS_ERROR = 4e-7


def kernel_tanh(values, backend):
    values = np.asarray(values)
    one = np.ones((1, 1), values.dtype)
    out, _, _ = fastrnn.rnn_forward(values.reshape(1, -1, 1), None, one, 0 * one,
                                    backend=backend, training=False)
    return out.reshape(-1)


def test_float32_tanh_is_within_float32_accuracy(fast_backend):
    x = np.concatenate([np.linspace(-12, 12, 4001), np.geomspace(1e-6, 12, 2000),
                        -np.geomspace(1e-6, 12, 2000), [0.0004, -0.0004, 7.9, 8.0, 30.0]])
    x = x.astype(np.float32)
    got = kernel_tanh(x, fast_backend)
    assert got.dtype == np.float32
    err = np.abs(got - np.tanh(x.astype(np.float64)))
    assert err.max() <= MAX_ABS_ERROR, f"max error {err.max():.3g} at x={x[err.argmax()]}"
    assert np.all(np.abs(got) <= 1)


def test_float32_tanh_special_values(fast_backend):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 1e-30, -1e-30, 1e30, -1e30], np.float32)
    got = kernel_tanh(x, fast_backend)
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], np.array([1, -1, 0, 1e-30, -1e-30, 1, -1], np.float32))


@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_float64_keeps_the_c_library_tanh(backend):
    if backend in fastrnn.unavailable_backends():
        pytest.skip(f"{backend} unavailable")
    x = np.linspace(-12, 12, 1001)
    np.testing.assert_allclose(kernel_tanh(x, backend), np.tanh(x), rtol=1e-15, atol=1e-16)
