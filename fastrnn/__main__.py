"""``python -m fastrnn``: the library at a glance.

Versions, the backends that work here (and why any does not), every backend
checked against the reference, the thread pools the kernels use, and a small
speed table whose rows are timed interleaved (best of short rounds) while the
machine's load and speed are watched, so that a busy machine is reported as
such rather than shown as a slow backend.
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
from fastrnn._timing import BUSY_CORES, SLOW_PROBE, Load, interleaved_times, speed_probe, steady

# (T, B, H) with I = H, every cell: a tiny one, and two at the sizes people
# train, with T short enough that the NumPy reference's rows stay quick.
SPEED_SHAPES = [(128, 1, 64), (32, 16, 256), (8, 64, 512)]
ROUNDS = 5  # interleaved rounds per row (more while a best is unsteady)
ROUND_S = 0.01  # about this long per backend per round (calls repeated to fill it)
MORE_ROUNDS = 2  # a row's rounds are run up to this many times again while unsteady
RETRIES = 2  # times a row timed while something was wrong is timed again
# OpenBLAS's worker threads spin for 2**28 cycles (about 0.1 s here) after
# each multi-threaded call before they sleep; the backend timed next then
# shares the cores with them (interleaved: the Cython engine at RNN (32, 16,
# 256) ran 4x slower, Numba 1.7x).  2**20 cycles (0.4 ms) ends that and left
# the reference's own speed unchanged.  OpenBLAS reads it only when it loads,
# so the table's run starts a fresh interpreter with it set.
BLAS_SPIN = ("OPENBLAS_THREAD_TIMEOUT", "20")


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _isa_in_use():
    try:
        level = fastrnn.get_isa_level()
    except fastrnn.IsaError as exc:
        return f"none ({exc})"
    forced = os.environ.get("FASTRNN_ISA", "").strip()
    return level + (f" (FASTRNN_ISA={forced})" if forced else " (the best this CPU has)")


def print_environment():
    print(f"fastrnn {fastrnn.__version__}  python {platform.python_version()}  "
          f"numpy {np.__version__}  scipy {_version('scipy')}  numba {_version('numba')}")
    try:
        from fastrnn.kernels._build import build_info

        info = build_info()
        print(f"cython kernels: built, openmp {'on' if info['openmp'] else 'off'}, "
              f"debug {'on' if info['debug'] else 'off'}"
              + ("  (DEBUG BUILD: bounds checks on, slow)" if info["debug"] else ""))
        print(f"instruction sets: built {', '.join(info['levels'])}; this CPU runs "
              f"{', '.join(fastrnn.cpu_isa_levels()) or 'none of them'}; "
              f"running {_isa_in_use()}")
    except ImportError:
        pass
    forced = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    if forced:
        print(f"note: {forced} is set; OpenBLAS may run slower kernels than this CPU allows")
    print()
    print("backends:")
    unavailable = fastrnn.unavailable_backends()
    default = fastrnn.get_default_backend()
    for name in fastrnn.BACKENDS:
        state = f"unavailable: {unavailable[name]}" if name in unavailable else "available"
        print(f"  {name:7s} {state}{'  (default)' if name == default else ''}")
    return [b for b in fastrnn.BACKENDS if b not in unavailable]


def _compare(gots, wants, bound):
    """(every array within ``bound`` of its own scale, as the tests hold them;
    the table cell: the worst error and ok/FAIL)."""
    errors = [scaled_error(got[k], want[k]) for got, want in zip(gots, wants)
              for k in want if want[k] is not None]
    good = all(e <= bound * scale for e, scale in errors)
    return good, f"{max(e for e, _ in errors):>13.1e} {'ok' if good else 'FAIL':>4s}"


def _label(cell, kwargs):
    """A check row's name: the cell, each named option's value ("rnn relu"),
    each flag option that is not its default as key=value."""
    words = [cell]
    for key, value in kwargs.items():
        if isinstance(value, str):
            words.append(value)
        elif value != CELLS[cell].defaults[key]:
            words.append(f"{key}={value}")
    return " ".join(words)


def check_backends(backends):
    """Forward and backward of every cell in every backend against the float64
    reference; returns True when all agree.  (This also loads every thread pool
    the kernels use, so that print_pools lists them all.)"""
    print()
    print("check against the float64 reference (T=7, B=5, I=6, H=9, lengths with 0 and T):")
    # each cell's options, then each of its extra weights alone (a projection to P=4)
    cases = [(cell, kwargs, _label(cell, kwargs), (), None)
             for cell in CELLS for kwargs in variants(cell)]
    cases += [(cell, {}, f"{cell} {name}" + (" (P=4)" if name == spec.proj else ""), (name,),
               4 if name == spec.proj else None)
              for cell, spec in CELLS.items() for name in spec.extras]
    width = max(len(label) for _, _, label, _, _ in cases)
    print(f"  {'cell':{width}s} {'dtype':8s}" + "".join(f"{b:>18s}" for b in backends))
    ok = True
    for dtype in (np.float32, np.float64):
        for cell, kwargs, label, extras, P in cases:
            problem = random_problem(7, 5, 6, 9, dtype, cell=cell, lengths=[7, 0, 3, 7, 1],
                                     extras=extras, P=P)
            ups = random_upstream(cell, 7, 5, 9, dtype, P=P)
            as64 = as_float64({**problem, **ups})
            r_outs, r_cache = forward(cell, {k: as64[k] for k in problem}, **kwargs)
            r_grads = backward(cell, {k: as64[k] for k in ups}, r_cache, reference)
            row = ""
            for backend in backends:
                outs, cache = forward(cell, problem, backend, **kwargs)
                grads = backward(cell, ups, cache)
                good, text = _compare((outs, grads), (r_outs, r_grads), TOLERANCE[np.dtype(dtype)])
                ok &= good
                row += text
            print(f"  {label:{width}s} {np.dtype(dtype).name:8s}{row}")
    return ok


# The kernels' bf16 mode against the reference's (the same rounding: only the
# order of float32 sums differs), and against float64: bf16's 2^-8 per
# rounding, accumulated (2.5e-2 seen here, relative to the largest gradient).
BF16_VS_REFERENCE = 1e-5
BF16_VS_FLOAT64 = 5e-2


def check_bf16(backends):
    """compute_dtype="bfloat16" (the Cython engine at the running level),
    forward and backward, against the reference's bf16 mode and against
    float64; True when both are within bounds (or the backend is absent)."""
    if "cython" not in backends:
        return True
    print()
    print(f"bfloat16 compute (compute_dtype='bfloat16'; {_isa_in_use()}), same problem:")
    print(f"  {'cell':9s} {'vs bf16 reference':>18s} {'vs float64':>11s}")
    ok = True
    for cell in CELLS:
        problem = random_problem(7, 5, 6, 9, np.float32, cell=cell, lengths=[7, 0, 3, 7, 1])
        ups = random_upstream(cell, 7, 5, 9, np.float32)
        outs, cache = forward(cell, problem, "cython", compute_dtype="bfloat16")
        grads = backward(cell, ups, cache)
        r_outs, r_cache = forward(cell, problem, compute_dtype="bfloat16")
        r_grads = backward(cell, ups, cache, reference)  # the reference's backward, same cache
        as64 = as_float64({**problem, **ups})
        e_outs, e_cache = forward(cell, {k: as64[k] for k in problem})
        e_grads = backward(cell, {k: as64[k] for k in ups}, e_cache, reference)
        row = ""
        for wants, bound in (((r_outs, r_grads), BF16_VS_REFERENCE),
                             ((e_outs, e_grads), BF16_VS_FLOAT64)):
            good, text = _compare((outs, grads), wants, bound)
            ok &= good
            row += text
        print(f"  {cell:9s}{row}")
    return ok


# The kernels' int8 mode against the reference's (the same integer products;
# an h_t on a quantization boundary can round one step apart: 2e-2 at most,
# tests/test_int8.py), and against float64 (docs/precision.md: 2.5e-2 at most).
INT8_VS_REFERENCE = 2e-2
INT8_VS_FLOAT64 = 5e-2


def _int8_path(cell):
    """Where the running level's int8 products run."""
    from fastrnn._backends import kernels

    module = kernels("cython", cell)
    return "AMX" if module._amx() else "vpdpbusd" if module._has_vnni() else "vpmaddwd"


def check_int8(backends):
    """compute_dtype="int8" (inference; the Cython engine at the running
    level), against the reference's int8 mode and against float64; True
    when both are within bounds (or the backend is absent)."""
    if "cython" not in backends:
        return True
    print()
    print(f"int8 compute (compute_dtype='int8', inference; {_isa_in_use()}, products on "
          f"{_int8_path('lstm')}), same problem:")
    print(f"  {'cell':9s} {'vs int8 reference':>18s} {'vs float64':>11s}")
    ok = True
    for cell in CELLS:
        problem = random_problem(7, 5, 6, 9, np.float32, cell=cell, lengths=[7, 0, 3, 7, 1])
        outs, _ = forward(cell, problem, "cython", compute_dtype="int8", training=False)
        r_outs, _ = forward(cell, problem, compute_dtype="int8", training=False)
        e_outs, _ = forward(cell, as_float64(problem), training=False)
        row = ""
        for wants, bound in ((r_outs, INT8_VS_REFERENCE), (e_outs, INT8_VS_FLOAT64)):
            good, text = _compare((outs,), (wants,), bound)
            ok &= good
            row += text
        print(f"  {cell:9s}{row}")
    return ok


def _owner(path):
    """The package that shipped a pool's library (numpy's and SciPy's OpenBLAS
    are two libraries; SciPy's does the Cython kernels' BLAS), else "system"."""
    parts = os.path.normpath(path).split(os.sep)
    return next((p for p in ("numpy", "scipy", "torch") if p in parts or p + ".libs" in parts),
                "system")


def print_pools():
    print()
    print(f"threads: {fastrnn.get_num_threads()} (fastrnn.set_num_threads), given to every "
          f"pool the kernels use (the Cython engine's threads are OpenMP's):")
    try:
        import threadpoolctl
    except ImportError:
        return
    for pool in threadpoolctl.threadpool_info():
        name = " ".join(str(pool[k]) for k in ("internal_api", "version", "architecture")
                        if pool.get(k))
        print(f"  {_owner(pool['filepath']):6s} {pool['user_api']:6s} {name}, "
              f"{pool['num_threads']} threads ({os.path.basename(pool['filepath'])})")


def _per_call(fn, calls):
    """A run for interleaved_times: seconds per call of fn over ``calls`` calls."""
    def run():
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls
    return run


def _row(cell, T, B, H, label, backends, rounds, probes):
    """(rates, why) for one row: {backend: steps x batch per second}, the
    backends interleaved, best of ``rounds`` rounds (up to MORE_ROUNDS times
    as many more while some backend's best is not steady and no other process
    keeps the machine busy), and what made the timing unreliable, if
    anything: other processes busy, the machine's speed changing while it ran
    (the speed probes before and after it, the last two of ``probes``,
    disagree), or a best not seen twice (fastrnn._timing.steady).

    A machine that stays slow through a row slows its backends alike (they
    are interleaved), so its ratios hold; one whose speed changes halfway
    may have given one backend its best in a fast moment and another not.
    (Here the probe took 37 or 54 us, in spells; in the slow ones the
    reference ran 1.47x slower, the Cython engine at (32, 16, 256) 1.16x.)"""
    p = random_problem(T, B, H, H, np.float32, cell=cell)
    ups = {"d_out": np.ones((T, B, H), np.float32)}
    runs = {}
    for backend in backends:
        if label == "inference":
            def fn(backend=backend):
                forward(cell, p, backend, training=False)
        else:
            def fn(backend=backend):
                backward(cell, ups, forward(cell, p, backend)[1])
        start = time.perf_counter()
        fn()  # warm-up (first-touch allocations), and how many calls fill a round
        calls = max(1, min(1000, round(ROUND_S / (time.perf_counter() - start))))
        runs[backend] = _per_call(fn, calls)
    load = Load()
    times = interleaved_times(runs, rounds, warm_up=False)
    for _ in range(MORE_ROUNDS):
        if all(steady(t) for t in times.values()) or (load.other_cores() or 0) > BUSY_CORES:
            break  # steady, or another process's load, which more rounds will not outlast
        interleaved_times(runs, rounds, warm_up=False, times=times)
    probes.append(speed_probe())
    why = ["busy"] if (load.other_cores() or 0) > BUSY_CORES else []
    why += ["changed"] if max(probes[-2:]) > SLOW_PROBE * min(probes[-2:]) else []
    why += [] if all(steady(t) for t in times.values()) else ["unsteady"]
    return {b: T * B / min(t) for b, t in times.items()}, why


REASONS = {"busy": "other processes busy", "changed": "machine's speed changed",
           "unsteady": "unsteady"}


def speed_table(backends, rounds):
    """Prints the table; returns (other processes' cores over the table, the
    slowest probe over the fastest, the reasons of each marked row, rows timed
    again).  A row
    timed while its speed changed or unsteadily is timed again, up to RETRIES
    times (not while other processes are busy: that does not pass in a
    moment); it is marked only when its last timing is no better off."""
    print()
    print(f"speed, float32, {fastrnn.get_num_threads()} threads: steps x batch per second "
          f"(speed-up over the numpy reference), best of {rounds}+ interleaved rounds")
    if os.environ.get(BLAS_SPIN[0]) == BLAS_SPIN[1]:
        print(f"({BLAS_SPIN[0]}={BLAS_SPIN[1]}: OpenBLAS's threads sleep after 2**20 cycles rather "
              f"than spin 2**28 into the next backend's time; docs/threads.md)")
    print(f"  {'cell':5s} {'T':>4s} {'B':>3s} {'H':>4s}  {'pass':9s}"
          + "".join(f"{b:>18s}" for b in backends))
    whole, probes, marked, again = Load(), [speed_probe()], [], 0
    for cell in CELLS:
        for T, B, H in SPEED_SHAPES:
            for label in ("inference", "training"):
                rates, why = _row(cell, T, B, H, label, backends, rounds, probes)
                for _ in range(RETRIES):
                    if not why or "busy" in why:  # another process's load: it will not pass
                        break
                    again += 1
                    rates, why = _row(cell, T, B, H, label, backends, rounds, probes)
                if why:
                    marked.append(why)
                base = rates.get("numpy")
                row = "".join(f"{rates[b]:>10.3g} ({rates[b] / base:4.1f}x)" if base
                              else f"{rates[b]:>18.3g}" for b in backends)
                print(f"  {cell:5s} {T:4d} {B:3d} {H:4d}  {label:9s}{row}"
                      + (f"  * {', '.join(REASONS[r] for r in why)}" if why else ""))
    return whole.other_cores(), max(probes) / min(probes), marked, again


def report_noise(other, spread, marked, again):
    """Says whether the table can be trusted, why not, and what to do; returns
    True when it can.  ``marked``: the reasons of each marked row."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = "unknown (no /proc/stat)" if other is None else f"{other:.2f} of {cores} cores"
    retimed = f"; {again} timings of a row repeated after a bad moment" if again else ""
    reasons = {reason for why in marked for reason in why}
    if not marked:
        print(f"timings: reliable (every best seen twice, the machine's speed steady through "
              f"each row; other processes kept {load} busy; between rows the speed probe ran "
              f"up to {spread - 1:.0%} over its fastest{retimed})")
        return True
    print(f"TIMINGS UNRELIABLE in {len(marked)} rows (marked *){retimed}:")
    if "busy" in reasons:
        print(f"- other processes busy: they kept {load} busy (over {BUSY_CORES} cores counts); "
              f"rerun when they are done, or with --threads 1 if one core stays busy")
    if "changed" in reasons:
        print(f"- machine's speed changed: the speed probe, a fixed NumPy loop timed between "
              f"rows, differed by more than {SLOW_PROBE - 1:.0%} before and after the row (at "
              f"worst {spread - 1:.0%} over its fastest)"
              + ("" if "busy" in reasons else ", with no other process to blame: the host of a "
                 "shared machine slows it down at times; rerun to check the marked rows"))
    if "unsteady" in reasons:
        print(f"- unsteady: no two rounds of some backend agreed within {SLOW_PROBE - 1:.0%}"
              + ("" if "busy" in reasons else
                 f", even after {MORE_ROUNDS + 1} times the rounds"))
    print("The unmarked rows were timed clean; a marked row's ratios may be far off, "
          "even inverted.")
    return False


# Not __doc__: python -OO drops docstrings, and the first line has markup.
DESCRIPTION = ("fastrnn at a glance: versions, the backends that work here, every backend "
               "checked against the reference, the thread pools, and a small speed table "
               "that says when the machine was too busy to trust it.")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastrnn", description=DESCRIPTION)
    parser.add_argument("--threads", type=int, help="thread count (default: all cores)")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"interleaved rounds per speed-table row (default {ROUNDS})")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed table")
    args = parser.parse_args(argv)
    for name in ("threads", "rounds"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.no_speed and BLAS_SPIN[0] not in os.environ and __name__ == "__main__":
        argv = getattr(sys, "orig_argv", [sys.executable, "-m", "fastrnn", *sys.argv[1:]])
        os.execve(sys.executable, [sys.executable, *argv[1:]],
                  {**os.environ, BLAS_SPIN[0]: BLAS_SPIN[1]})
    if args.threads:
        fastrnn.set_num_threads(args.threads)
    start = time.perf_counter()
    backends = print_environment()
    ok = check_backends(backends)
    ok &= check_bf16(backends)
    ok &= check_int8(backends)
    print_pools()
    timings = ""
    if not args.no_speed:
        reliable = report_noise(*speed_table(backends, args.rounds))
        timings = "; timings reliable" if reliable else "; timings UNRELIABLE (see above)"
    print(f"\n{'all backends agree with the reference' if ok else 'SOME BACKENDS DISAGREE'}"
          f"{timings} ({time.perf_counter() - start:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
