"""Fixtures shared by every test: dtypes, backends, kernel paths, and problems."""
import numpy as np
import pytest

import fastrnn
from fastrnn import _backends, _isa, _tuning
from fastrnn._testing import engine_layout

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


@pytest.fixture(params=["serial", "parallel", "batch-shares"])
def kernel_path(request, monkeypatch):
    """Force every path, whatever the size: "serial" runs the Numba kernels'
    own loops and the Cython engine on one thread; "parallel" sends Numba's
    per-step products to BLAS and runs the engine on three threads (more
    than this machine's cores, so items change hands between threads), each
    a share of every step's units; "batch-shares" the engine's three threads
    each a share of the batch's rows through the forward (Numba: as
    "parallel")."""
    monkeypatch.setattr(_tuning, "use_blas", lambda backend, B, GH, H: request.param != "serial")
    threads, split = {"serial": (1, -1), "parallel": (3, 0), "batch-shares": (3, 1)}[request.param]
    with engine_layout(threads, split):
        yield request.param


@pytest.fixture
def fresh_backends(monkeypatch):
    """Backend state as in a new process, restored afterwards."""
    monkeypatch.setattr(_backends, "_loaded", {})
    monkeypatch.setattr(_backends, "_failed", {})
    monkeypatch.setattr(_backends, "_warned_fallback", False)
    monkeypatch.setattr(_backends, "_default", None)
    return _backends


try:
    BUILT_LEVELS, CPU_LEVELS = fastrnn.built_isa_levels(), fastrnn.cpu_isa_levels()
except ImportError:  # the Cython kernels are not built
    BUILT_LEVELS = CPU_LEVELS = ()


@pytest.fixture
def restore_level():
    """The instruction-set level in use, restored after the test."""
    saved = _isa._chosen
    yield
    _isa._chosen = saved


@pytest.fixture(params=BUILT_LEVELS or ["not built"])
def level(request, restore_level):
    """Every instruction-set level this build compiled, forced; one this CPU
    lacks skips, naming it."""
    if not BUILT_LEVELS:
        pytest.skip("the Cython kernels are not built")
    if request.param not in CPU_LEVELS:
        pytest.skip(f"this CPU lacks {request.param} (it has {', '.join(CPU_LEVELS)})")
    fastrnn.set_isa_level(request.param)
    return request.param
