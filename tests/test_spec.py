"""The cell spec (fastrnn/_spec.py) is the one declaration of each kernel's
arguments and of what a cache holds: the kernels and the caches agree with it."""
import copy
import inspect

import numpy as np
import pytest

import fastrnn
from fastrnn import _backends
from fastrnn._spec import CELLS
from fastrnn._testing import forward, random_problem
from conftest import backend_or_skip


def _parameters(fn):
    fn = getattr(fn, "py_func", fn)  # a Numba dispatcher: its Python function
    return tuple(inspect.signature(fn).parameters)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("pass_", ["forward", "backward"])
def test_kernel_signature_is_the_spec(cell, backend, pass_):
    backend_or_skip(backend)
    module = _backends.kernels(backend, cell)  # Cython: the module of the level that runs
    assert _parameters(getattr(module, pass_)) == getattr(CELLS[cell], pass_).args


@pytest.mark.parametrize("cell", CELLS)
def test_cache_holds_what_the_spec_says(cell, backend):
    """Every backend's cache (the reference's too) holds exactly the arrays
    and options the spec lists, so any backend's backward can read it."""
    spec = CELLS[cell]
    _, cache = forward(cell, random_problem(3, 2, 4, 5, cell=cell), backend)
    assert set(cache.arrays) == set(spec.cached)
    assert cache.options.keys() == spec.options.keys()
    assert all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in cache.arrays.values())


@pytest.mark.parametrize("cell", CELLS)
def test_public_names_follow_the_spec(cell):
    """The functions, layers and gradient tuple of each cell are named from its entry."""
    spec = CELLS[cell]
    forward_fn = getattr(fastrnn, f"{cell}_forward")
    params = tuple(inspect.signature(forward_fn).parameters)
    assert params[:len(spec.inputs)] == spec.inputs
    assert all(option in params for option in spec.options)
    backward_fn = getattr(fastrnn, f"{cell}_backward")
    assert tuple(inspect.signature(backward_fn).parameters) == (*spec.upstream, "cache")
    assert getattr(fastrnn, spec.layer + "Grads")._fields == spec.grads
    assert getattr(fastrnn, spec.layer)._cell == cell
    assert getattr(fastrnn, spec.layer + "Cell")._cell == cell


def test_driver_refuses_a_kernel_argument_it_cannot_supply():
    """A spec entry whose kernel takes an argument the driver has no value
    for fails when fastrnn loads, naming it (not at the first call)."""
    from fastrnn import _driver
    from fastrnn._spec import Kernel

    spec = copy.copy(CELLS["rnn"])
    spec.forward = Kernel("forward", "x2d W_ih bias W_hh h0 mystery lengths relu use_blas "
                          "num_threads  work out h_n", {"work": ("B", "GH")})
    with pytest.raises(ImportError, match="mystery"):
        _driver._fill(spec, "forward")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pass_", ["forward", "backward"])
def test_driver_source_calls_the_kernel_with_the_spec_arguments(cell, pass_):
    from fastrnn import _driver

    source = _driver.source(cell, pass_)
    args = ["steps" if a == "lengths" else a for a in getattr(CELLS[cell], pass_).args]
    call = source[source.index(f'"{cell}").{pass_}('):]
    assert " ".join(call.split()).startswith(f'"{cell}").{pass_}({", ".join(args)})')
