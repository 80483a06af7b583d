"""Layer files and state dicts that are not what they should be: every bad
file is a ValueError naming the file and what is wrong; values are never
cast silently; the layer is unchanged after a refused load."""
import json
import zipfile

import numpy as np
import pytest

import fastrnn

CLASSES = [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU, fastrnn.RNNCell, fastrnn.LSTMCell,
           fastrnn.GRUCell]
IDS = [c.__name__ for c in CLASSES]


def make(cls):
    return cls(3, 4, seed=0) if "Cell" in cls.__name__ else cls(3, 4, num_layers=2, seed=0)


def saved(cls, tmp_path):
    path = tmp_path / "layer.npz"
    make(cls).save(path)
    return path


def rewrite(path, edit):
    """Rewrite the .npz with edit(config, arrays) -> (config, arrays)."""
    with np.load(path) as f:
        config = json.loads(str(f["__config__"]))
        arrays = {k: f[k] for k in f.files if k != "__config__"}
    config, arrays = edit(config, arrays)
    extra = {} if config is None else {"__config__": np.array(json.dumps(config))}
    np.savez(path, **extra, **arrays)


def first(arrays):
    return next(iter(arrays))


DAMAGE = {
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "text": lambda p: p.write_text("weight_ih_l0 = 1, 2, 3\n"),
    "npy": lambda p: np.save(open(p, "wb"), np.ones(3)),
    "zip-without-config": lambda p: zipfile.ZipFile(p, "w").writestr("a.txt", "hello"),
    "no-config": lambda p: rewrite(p, lambda c, a: (None, a)),
    "config-not-json": lambda p: np.savez(p, __config__=np.array("{not json")),
    "config-a-list": lambda p: rewrite(p, lambda c, a: ([1, 2], a)),
    "other-class": lambda p: rewrite(p, lambda c, a: ({**c, "class": "Linear"}, a)),
    "no-class": lambda p: rewrite(p, lambda c, a: ({k: v for k, v in c.items() if k != "class"},
                                                   a)),
    "config-key-missing": lambda p: rewrite(p, lambda c, a: (
        {k: v for k, v in c.items() if k != "hidden_size"}, a)),
    "config-key-extra": lambda p: rewrite(p, lambda c, a: ({**c, "colour": "red"}, a)),
    "config-bad-value": lambda p: rewrite(p, lambda c, a: ({**c, "hidden_size": -4}, a)),
    "array-missing": lambda p: rewrite(p, lambda c, a: (c, {k: v for k, v in a.items()
                                                            if k != first(a)})),
    "array-extra": lambda p: rewrite(p, lambda c, a: (c, {**a, "weight_xx": np.ones(2)})),
    "array-wrong-shape": lambda p: rewrite(p, lambda c, a: (c, {**a, first(a): np.ones(2)})),
    "array-complex": lambda p: rewrite(p, lambda c, a: (c, {**a, first(a): a[first(a)] + 1j})),
    "array-strings": lambda p: rewrite(p, lambda c, a: (c, {**a, first(a): a[first(a)].astype(
        str)})),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_bad_file_is_a_value_error_naming_it(cls, damage, tmp_path):
    path = saved(cls, tmp_path)
    DAMAGE[damage](path)
    with pytest.raises(ValueError) as info:
        cls.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.RNNCell])
def test_a_file_without_the_nonlinearity_is_refused(cls, tmp_path):
    layer = cls(3, 4, nonlinearity="relu", seed=0)
    path = tmp_path / "relu.npz"
    layer.save(path)
    rewrite(path, lambda c, a: ({k: v for k, v in c.items() if k != "nonlinearity"}, a))
    with pytest.raises(ValueError, match="nonlinearity"):
        cls.load(path)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastrnn.GRU.load(tmp_path / "nothing.npz")


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_good_file_round_trips(cls, tmp_path):
    layer = make(cls)
    path = saved(cls, tmp_path)
    back = cls.load(path)
    for (n, a), (m, b) in zip(layer.named_parameters(), back.named_parameters()):
        assert n == m and np.array_equal(a, b)


BAD_VALUES = [
    (lambda a: a + 1j, TypeError, "real numbers"),
    (lambda a: a.astype(str), TypeError, "real numbers"),
    (lambda a: np.zeros(a.shape, "datetime64[s]"), TypeError, "real numbers"),
    (lambda a: a > 0, TypeError, "real numbers"),
    (lambda a: np.full(a.shape, 1e300), ValueError, "beyond float32's range"),
]


@pytest.mark.parametrize("change, exc, match", BAD_VALUES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_load_state_dict_never_casts_silently(cls, change, exc, match):
    layer = make(cls)
    state = layer.state_dict()
    name = next(iter(state))
    before = layer.state_dict()
    with pytest.raises(exc, match=match):
        layer.load_state_dict({**state, name: change(state[name].astype(np.float64))})
    for k, v in layer.state_dict().items():
        assert np.array_equal(v, before[k])


def test_load_state_dict_takes_integers_and_wider_floats():
    layer = fastrnn.GRU(3, 4)
    state = {k: np.ones(v.shape, np.int64) for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)
    assert all(v.dtype == np.float32 and (v == 1).all() for v in layer.state_dict().values())
    layer.load_state_dict({k: v.astype(np.float64) / 3 for k, v in state.items()})
    assert all(v.dtype == np.float32 for v in layer.state_dict().values())


def test_num_layers_is_bounded():
    with pytest.raises(ValueError, match="num_layers must be at most"):
        fastrnn.LSTM(3, 4, num_layers=10 ** 8)
