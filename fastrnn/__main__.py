"""``python -m fastrnn``: the library at a glance.

Versions, the backends that work here (and why any does not), the thread
count, every backend checked against the reference, and a small speed table.
"""
import argparse
import os
import platform
import sys
import time
from importlib import metadata

import numpy as np

import fastrnn
from fastrnn import reference
from fastrnn._spec import CELLS
from fastrnn._testing import (TOLERANCE, as_float64, backward, forward, random_problem,
                              random_upstream, scaled_error, variants)

SPEED_SHAPES = [(256, 1, 64), (64, 16, 256), (16, 64, 1024)]  # (T, B, H), I = H, every cell


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_environment():
    print(f"fastrnn {fastrnn.__version__}  python {platform.python_version()}  "
          f"numpy {np.__version__}  scipy {_version('scipy')}  numba {_version('numba')}")
    try:
        from fastrnn.kernels._build import build_info

        info = build_info()
        print("cython kernels: built, " + ", ".join(
            f"{k} {'on' if v else 'off'}" for k, v in info.items())
            + ("  (DEBUG BUILD: bounds checks on, slow)" if info["debug"] else ""))
    except ImportError:
        pass
    try:
        import threadpoolctl

        for pool in threadpoolctl.threadpool_info():
            print(f"thread pool: {pool['internal_api']} {pool.get('version') or ''} "
                  f"{pool.get('architecture') or ''} ({os.path.basename(pool['filepath'])})")
    except ImportError:
        pass
    forced = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    if forced:
        print(f"note: {forced} is set; OpenBLAS may run slower kernels than this CPU allows")
    print(f"threads: {fastrnn.get_num_threads()} (fastrnn.set_num_threads)")
    print()
    print("backends:")
    unavailable = fastrnn.unavailable_backends()
    default = fastrnn.get_default_backend()
    for name in fastrnn.BACKENDS:
        state = f"unavailable: {unavailable[name]}" if name in unavailable else "available"
        print(f"  {name:7s} {state}{'  (default)' if name == default else ''}")
    return [b for b in fastrnn.BACKENDS if b not in unavailable]


def check_backends(backends):
    """Forward and backward of every cell in every backend against the float64 reference."""
    print()
    print("check against the reference (T=7, B=5, I=6, H=9, lengths with 0 and T, both dtypes):")
    ok = True
    cases = [(cell, kwargs) for cell in CELLS for kwargs in variants(cell)]
    for dtype in (np.float32, np.float64):
        for cell, kwargs in cases:
            problem = random_problem(7, 5, 6, 9, dtype, cell=cell, lengths=[7, 0, 3, 7, 1])
            ups = random_upstream(cell, 7, 5, 9, dtype)
            as64 = as_float64({**problem, **ups})
            r_outs, r_cache = forward(cell, {k: as64[k] for k in problem}, **kwargs)
            r_grads = backward(cell, {k: as64[k] for k in ups}, r_cache, reference)
            for backend in backends:
                outs, cache = forward(cell, problem, backend, **kwargs)
                grads = backward(cell, ups, cache)
                # Every array within the tolerance for its own scale (as the tests hold them).
                errors = [scaled_error(got[k], want[k]) for got, want in
                          ((outs, r_outs), (grads, r_grads)) for k in want if want[k] is not None]
                err = max(e for e, _ in errors)
                good = all(e <= TOLERANCE[np.dtype(dtype)] * scale for e, scale in errors)
                ok &= good
                label = " ".join((cell, *kwargs.values()))
                print(f"  {backend:7s} {np.dtype(dtype).name:8s} {label:9s} "
                      f"max error {err:9.2e}  {'ok' if good else 'FAIL'}")
    return ok


def _time(fn, budget):
    """Best time of fn() over repeats taking about ``budget`` seconds."""
    fn()  # warm-up: JIT compilation and first-touch allocations
    best, spent = float("inf"), 0.0
    while spent < budget:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return best


def speed_table(backends, budget):
    print()
    print(f"speed, float32, {fastrnn.get_num_threads()} threads: steps x batch per second "
          "(speed-up over the numpy reference)")
    header = (f"  {'cell':5s} {'T':>5s} {'B':>4s} {'H':>5s}  {'pass':9s}"
              + "".join(f"{b:>20s}" for b in backends))
    print(header)
    for cell in CELLS:
        for T, B, H in SPEED_SHAPES:
            p = random_problem(T, B, H, H, np.float32, cell=cell)
            ups = {"d_out": np.ones((T, B, H), np.float32)}
            for label in ("inference", "training"):
                rates = {}
                for backend in backends:
                    if label == "inference":
                        def fn():
                            forward(cell, p, backend, training=False)
                    else:
                        def fn():
                            backward(cell, ups, forward(cell, p, backend)[1])
                    rates[backend] = T * B / _time(fn, budget)
                base = rates.get("numpy")
                row = "".join(
                    f"{rates[b]:>12.3g} ({rates[b] / base:4.1f}x)" if base else f"{rates[b]:>20.3g}"
                    for b in backends)
                print(f"  {cell:5s} {T:5d} {B:4d} {H:5d}  {label:9s}{row}")


# Not __doc__: python -OO drops docstrings, and the first line has markup.
DESCRIPTION = ("fastrnn at a glance: versions, the backends that work here, every backend "
               "checked against the reference, and a small speed table.")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastrnn", description=DESCRIPTION)
    parser.add_argument("--threads", type=int, help="thread count (default: all cores)")
    parser.add_argument("--budget", type=float, default=0.25,
                        help="seconds spent timing each table cell (default 0.25)")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed table")
    args = parser.parse_args(argv)
    if args.threads:
        fastrnn.set_num_threads(args.threads)
    start = time.perf_counter()
    backends = print_environment()
    ok = check_backends(backends)
    if not args.no_speed:
        speed_table(backends, args.budget)
    print(f"\n{'all backends agree with the reference' if ok else 'SOME BACKENDS DISAGREE'}"
          f" ({time.perf_counter() - start:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
