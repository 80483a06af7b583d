"""A forward's cache is read-only, and a backward refuses one built or altered
by hand (every backend) with a ValueError before any kernel reads it."""
import copy
import pickle

import numpy as np
import pytest

import fastrnn
from fastrnn._spec import CELLS
from fastrnn._testing import backward, forward, random_problem, random_upstream
from fastrnn._types import ForwardCache

T, B, I, H = 5, 3, 4, 6


def made(cell, backend):
    p = random_problem(T, B, I, H, cell=cell, lengths=[5, 0, 2])
    _, cache = forward(cell, p, backend)
    return cache


def rebuilt(cache, **change):
    fields = dict(lengths=cache.lengths, has_b_ih=cache.has_b_ih, has_b_hh=cache.has_b_hh,
                  options=dict(cache.options), arrays=dict(cache.arrays))
    arrays = change.pop("arrays", None)
    if arrays is not None:
        fields["arrays"] = arrays(dict(cache.arrays))
    fields.update(change)
    return ForwardCache(change.pop("cell", cache.cell), change.pop("backend", cache.backend),
                        **{k: v for k, v in fields.items() if k not in ("cell", "backend")})


def first_saved(cell):
    return CELLS[cell].saved[-1]


DAMAGE = {
    "x-and-out-swapped": dict(arrays=lambda a: {**a, "x": a["out"], "out": a["x"]}),
    "saved-steps-cut": lambda cell: dict(arrays=lambda a: {**a, first_saved(cell):
                                                           a[first_saved(cell)][:2].copy()}),
    "saved-other-dtype": lambda cell: dict(arrays=lambda a: {**a, first_saved(cell):
                                                             a[first_saved(cell)].astype(
                                                                 np.float32)}),
    "saved-fortran": lambda cell: dict(arrays=lambda a: {**a, first_saved(cell): np.asfortranarray(
        a[first_saved(cell)])}),
    "W_ih-a-column-short": dict(arrays=lambda a: {**a, "W_ih": a["W_ih"][:, :-1].copy()}),
    "h0-missing": dict(arrays=lambda a: {k: v for k, v in a.items() if k != "h0"}),
    "array-extra": dict(arrays=lambda a: {**a, "extra": a["x"]}),
    "a-list": dict(arrays=lambda a: {**a, "out": a["out"].tolist()}),
    "lengths-past-T": dict(lengths=np.array([T + 1, 0, 2])),
    "lengths-negative": dict(lengths=np.array([5, -1, 2])),
    "lengths-int32": dict(lengths=np.array([5, 0, 2], np.int32)),
    "lengths-short": dict(lengths=np.array([5, 0])),
    "flag-not-bool": dict(has_b_ih="yes"),
    "backend-unknown": dict(backend="fortran"),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
@pytest.mark.parametrize("cell", CELLS)
def test_a_damaged_cache_is_refused(cell, backend, damage):
    if backend not in fastrnn.available_backends():
        pytest.skip(f"{backend} unavailable")
    cache = made(cell, backend)
    change = DAMAGE[damage]
    change = change(cell) if callable(change) else change
    bad = rebuilt(cache, **change)
    with pytest.raises(ValueError, match="cache"):
        backward(cell, random_upstream(cell, T, B, H), bad)
    backward(cell, random_upstream(cell, T, B, H), cache)  # the sound one still works


def test_options_of_another_cell_are_refused():
    cache = made("gru", "numpy")
    with pytest.raises(ValueError, match="options"):
        backward("gru", random_upstream("gru", T, B, H),
                 rebuilt(cache, options={"nonlinearity": "tanh"}))
    cache = made("rnn", "numpy")
    with pytest.raises(ValueError, match="nonlinearity"):
        backward("rnn", random_upstream("rnn", T, B, H),
                 rebuilt(cache, options={"nonlinearity": "sigmoid"}))


def test_a_cache_is_read_only_and_pickles():
    cache = made("lstm", "numpy")
    with pytest.raises(AttributeError, match="read-only"):
        cache.lengths = None
    with pytest.raises(AttributeError, match="read-only"):
        del cache.arrays
    with pytest.raises(TypeError):
        cache.arrays["x"] = np.zeros(1)
    with pytest.raises(TypeError):
        cache.options["nonlinearity"] = "relu"
    ups = random_upstream("lstm", T, B, H)
    expected = backward("lstm", ups, cache)
    for other in (pickle.loads(pickle.dumps(cache)), copy.deepcopy(cache)):
        got = backward("lstm", ups, other)
        for name, value in expected.items():
            assert (value is None and got[name] is None) or np.array_equal(value, got[name])


def test_the_cache_check_knows_every_backend():
    from fastrnn import _backends, _validation

    assert tuple(_validation.BACKENDS) == tuple(_backends.BACKENDS)
