"""Fixtures shared by every test: dtypes, backends, kernel paths, and problems."""
import numpy as np
import pytest

import fastrnn
from fastrnn import _tuning

DTYPES = [np.float32, np.float64]


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


def backend_or_skip(name):
    reason = fastrnn.unavailable_backends().get(name)
    if reason is not None:
        pytest.skip(f"backend {name} unavailable: {reason}")
    return name


@pytest.fixture(params=fastrnn.BACKENDS)
def backend(request):
    """Every backend, the reference included; an unavailable one skips with its reason."""
    return backend_or_skip(request.param)


@pytest.fixture(params=["numba", "cython"])
def fast_backend(request):
    return backend_or_skip(request.param)


@pytest.fixture(params=["loops", "blas"])
def kernel_path(request, monkeypatch):
    """Force the per-step products through the hand loops (spread over OpenMP
    threads when the Cython build has them) or through BLAS, whatever the size."""
    blas = request.param == "blas"
    monkeypatch.setattr(_tuning, "use_blas", lambda backend, B, GH, H: blas)
    monkeypatch.setattr(_tuning, "row_threads", lambda B, GH, n: n)
    return request.param
