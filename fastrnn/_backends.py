"""Which backends work here, which one a call uses, and loading their kernels.

A backend is loaded (and, for Numba, numba imported) on its first use, so
``import fastrnn`` stays cheap.  Naming a backend that cannot load raises
``BackendUnavailableError`` with the reason; choosing automatically falls
back to the next fastest and warns once.
"""
import importlib
import os
import warnings

from . import _isa, _threads
from ._spec import CELLS

BACKENDS = ("numpy", "numba", "cython")
# Fastest first, as measured on the functional benchmarks (README, "Backends").
PREFERENCE = ("cython", "numba", "numpy")
# The cell whose kernels are loaded to find out whether a backend works.
_PROBE = next(iter(CELLS))


class BackendUnavailableError(ImportError):
    """A backend was named that cannot be loaded here; the message says why."""


_loaded = {}  # (backend, cell) -> kernel module; (cython, cell, level) for Cython
_failed = {}  # backend -> reason
_warned_fallback = False
_default = None  # None: the fastest available


def _check_name(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None (the fastest available), "
                         f"got {backend!r}")


def kernels(backend, cell):
    """The kernel module of ``cell`` in ``backend`` (the reference for "numpy")."""
    # (_isa._chosen is None only before the first Cython call, which misses anyway)
    key = (backend, cell, _isa._chosen) if backend == "cython" else (backend, cell)
    module = _loaded.get(key)
    if module is not None:
        return module
    if backend in _failed:
        raise BackendUnavailableError(f"the {backend} backend is unavailable: {_failed[backend]}")
    if backend == "numpy":
        name = "fastrnn.reference"
    elif backend == "cython":
        level = _cython_level()
        name = f"fastrnn.kernels.{cell}_cython_{level}"
        key = (backend, cell, level)
    else:
        name = f"fastrnn.kernels.{cell}_{backend}"
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        if backend == "cython" and isinstance(exc, ModuleNotFoundError) and exc.name == name:
            reason = (f"the Cython extensions are not built ({exc}); "
                      f"build them with `python -m pip install -e .`")
        elif backend == "cython":
            reason = (f"{name} is built but failed to load ({exc}); reinstall with "
                      f"`python -m pip install -e .`, or see whether the process may map it "
                      f"(memory limits)")
        else:
            reason = f"importing {name} failed: {exc}"
        _failed[backend] = reason
        raise BackendUnavailableError(f"the {backend} backend is unavailable: {reason}") from exc
    _threads.apply_to_loaded_pools()  # a newly loaded BLAS or Numba pool gets the thread count
    _loaded[key] = module
    return module


def _cython_level():
    """The instruction-set level the Cython kernels run at (fastrnn._isa).  A
    level asked for that this CPU lacks is not remembered as a failure of the
    backend: set_isa_level can still choose another."""
    try:
        return _isa.get_isa_level()
    except _isa.IsaError as exc:
        raise BackendUnavailableError(f"the cython backend is unavailable: {exc}") from None
    except ImportError:
        return "none"  # not built: importing the kernels fails with the reason below


def unavailable_backends():
    """``{name: reason}`` for each backend that cannot load here."""
    for backend in BACKENDS:
        try:
            kernels(backend, _PROBE)
        except BackendUnavailableError:
            pass
    return dict(_failed)


def available_backends():
    """The backends that work here, fastest first.  Loads each one to find out."""
    failed = unavailable_backends()
    return [b for b in PREFERENCE if b not in failed]


def set_default_backend(backend):
    """Make ``backend`` the one used when a call passes ``backend=None``.

    ``None`` restores the automatic choice (the fastest available).  The
    environment variable ``FASTRNN_BACKEND`` sets the initial default.
    """
    global _default
    if backend is not None:
        _check_name(backend)
        kernels(backend, _PROBE)  # fail now, with the reason, rather than at the next call
    _default = backend


def get_default_backend():
    """The backend a call with ``backend=None`` uses now."""
    return resolve(None)


def resolve(backend):
    """The backend name a call uses: ``backend`` checked, or the default."""
    global _warned_fallback
    if backend is not None:
        _check_name(backend)
        return backend
    if _default is not None:
        return _default
    skipped = []
    for candidate in PREFERENCE:
        try:
            kernels(candidate, _PROBE)
        except BackendUnavailableError as exc:
            skipped.append(str(exc))
            continue
        if skipped and not _warned_fallback:
            _warned_fallback = True
            warnings.warn(f"fastrnn: using the {candidate} backend because "
                          + "; ".join(skipped), RuntimeWarning, stacklevel=3)
        return candidate
    raise AssertionError("the numpy backend always loads")


def _default_from_environment():
    """FASTRNN_BACKEND's backend (any case, spaces around ignored), or None
    (automatic) where it is unset or empty.  Anything else warns, naming the
    variable and its values, and leaves the automatic choice: importing
    fastrnn never fails on it."""
    value = os.environ.get("FASTRNN_BACKEND")
    if value is None or not value.strip():
        return None
    name = value.strip().lower()
    if name in BACKENDS:
        return name
    warnings.warn(f"FASTRNN_BACKEND={value!r} names no backend: it must be one of "
                  f"{', '.join(BACKENDS)} (or unset: the fastest available, which fastrnn "
                  f"uses now)", RuntimeWarning, stacklevel=2)
    return None


_default = _default_from_environment()
