"""Hot loops only (installed as ``fastrnn.kernels``).

Nothing here validates its inputs; ``fastrnn`` checks them once and calls in.
The Numba modules (``*_numba``) import numba on first use; the Cython
extensions (``*_cython``) are built by setup.py.
"""
