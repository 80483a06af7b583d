"""Settings that come from outside a call: the FASTRNN_BACKEND variable, a
kernel module that fails to load, ``python -OO``, and the thread count."""
import subprocess
import sys

import pytest

import fastrnn
from fastrnn import _backends


def python(code, *flags, **env):
    import os

    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


@pytest.mark.parametrize("value, default", [
    ("numba", "numba"), ("NUMBA", "numba"), (" numpy ", "numpy"), ("", None),
    ("garbage", None), ("numba,cython", None)])
def test_fastrnn_backend_variable(value, default):
    """Any case and spaces are fine; a value naming no backend warns (naming
    the variable and its values) and leaves the automatic choice; importing
    never fails."""
    result = python("import warnings, fastrnn\n"
                    "print(fastrnn._backends._default)", FASTRNN_BACKEND=value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(default)
    if default is None and value:
        assert "FASTRNN_BACKEND" in result.stderr and "numpy, numba, cython" in result.stderr
    else:
        assert "FASTRNN_BACKEND" not in result.stderr


@pytest.mark.parametrize("make_error, says", [
    (lambda name: ModuleNotFoundError(f"No module named {name!r}", name=name), "not built"),
    (lambda name: ImportError("libgomp.so.1: failed to map segment from shared object"),
     "is built but failed to load"),
    (lambda name: ModuleNotFoundError("No module named 'scipy'", name="scipy"),
     "is built but failed to load")])
def test_a_cython_module_that_fails_to_load_says_why(fresh_backends, monkeypatch, make_error,
                                                     says):
    real = _backends.importlib.import_module
    raised = []

    def import_module(name):
        if name.startswith("fastrnn.kernels.rnn_cython"):
            raised.append(make_error(name))
            raise raised[-1]
        return real(name)

    monkeypatch.setattr(_backends.importlib, "import_module", import_module)
    with pytest.raises(fastrnn.BackendUnavailableError, match=says):
        fresh_backends.kernels("cython", "rnn")
    reason = fresh_backends._failed["cython"]
    assert says in reason and str(raised[-1]) in reason


def test_help_works_under_python_OO():
    result = python("import sys; sys.argv = ['fastrnn', '--help']\n"
                    "import runpy; runpy.run_module('fastrnn', run_name='__main__')", "-OO")
    assert result.returncode == 0, result.stderr
    assert "usage: python -m fastrnn" in result.stdout and "``" not in result.stdout


@pytest.mark.parametrize("n", [10 ** 5, 2 ** 31, 10 ** 30])
def test_set_num_threads_bounds_the_count_and_keeps_the_old_one(n):
    before = fastrnn.get_num_threads()
    with pytest.raises(ValueError, match=f"n must be .* at most {fastrnn._threads.MAX_THREADS}"):
        fastrnn.set_num_threads(n)
    assert fastrnn.get_num_threads() == before


def test_set_num_threads_records_a_count_only_once_applied(monkeypatch):
    """A pool that refuses the count (here: threadpoolctl raising) leaves the
    recorded count as it was, and the error says what failed."""
    import threadpoolctl

    before = fastrnn.get_num_threads()

    def refuse(*args, **kwargs):
        raise OSError("cannot set the thread count (test)")

    monkeypatch.setattr(threadpoolctl, "threadpool_limits", refuse)
    with pytest.raises(ValueError, match="could not apply n=3 .*cannot set the thread count"):
        fastrnn.set_num_threads(3)
    assert fastrnn.get_num_threads() == before
