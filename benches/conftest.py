"""Options, parametrisation and shared state of the benchmark suite.

    pytest benches/ --benchmark-only                         quick grid (CI size)
    pytest benches/ --benchmark-only --bench-grid=full       the full grid (~10 min a cell here)
    pytest benches/ --benchmark-disable                      every case once, as a test

Options: --bench-grid=quick|full, --bench-cells=rnn,lstm,gru (default all),
--bench-dtype=float32|float64|both,
--bench-threads=N or N,M (default: all cores), --bench-time=SECONDS per case,
--bench-ref-cap=MACS (the numpy reference's T*B*G*H*H limit).
"""
import collections
import os
import sys
from importlib import metadata

import pytest

from benches import grid
from benches.cells import CELLS
import fastrnn
from fastrnn._timing import Load


def pytest_addoption(parser):
    group = parser.getgroup("fastrnn benchmarks")
    group.addoption("--bench-grid", choices=sorted(grid.T_GRID), default="quick",
                    help="quick: T in {16, 256}, (B, H) in {(1, 64), (16, 256)} (default); "
                         "full: T in {16, ..., 4096}, (B, H) up to (64, 1024)")
    group.addoption("--bench-cells", default=",".join(CELLS), metavar="CELL[,CELL...]",
                    help=f"the cells to measure (default: all, {','.join(CELLS)})")
    group.addoption("--bench-dtype", choices=sorted(grid.DTYPES), default="float32",
                    help="dtype of the throughput cases (default float32)")
    group.addoption("--bench-threads", default=None, metavar="N[,M...]",
                    help="threads for fastrnn (set_num_threads: BLAS, OpenMP, Numba) and torch; "
                         "a list runs every case at each count (default: all cores)")
    group.addoption("--bench-time", type=float, default=None, metavar="SECONDS",
                    help="time each case aims to spend in timed rounds, at least one round "
                         f"(default {grid.TARGET_TIME['quick']} quick, {grid.TARGET_TIME['full']} full)")
    group.addoption("--bench-ref-cap", type=float, default=grid.REFERENCE_MAX_MACS, metavar="MACS",
                    help="skip the numpy reference where T*B*G*H*H exceeds this "
                         f"(default {grid.power_of_two(grid.REFERENCE_MAX_MACS)})")


def pytest_generate_tests(metafunc):
    options = grid.Options.from_config(metafunc.config)
    several = len(options.threads) > 1
    if "case" in metafunc.fixturenames:
        params = [pytest.param(case, id=case.id(several),
                               marks=[pytest.mark.skip(reason=reason)] if reason else [])
                  for case, reason in grid.cases(options, options.cells)]
        metafunc.parametrize("case", params)
    if "gemm_case" in metafunc.fixturenames:
        params = [pytest.param((dtype, n), id=f"{dtype}" + (f"-t{n}" if several else ""))
                  for dtype in options.dtypes for n in options.threads]
        metafunc.parametrize("gemm_case", params)


class BenchState:
    """What the cases of one session share: options, threads, data and reference results."""

    def __init__(self, options):
        self.options = options
        self._threads = None
        # Problems and float64 reference outputs of the latest workloads.  Cases
        # run group by group, so two entries suffice (the timed T and the error
        # check's shorter T), and at (64, 1024) one problem is gigabytes.
        self._problems = collections.OrderedDict()
        self._references = collections.OrderedDict()

    def set_threads(self, n):
        """n threads for fastrnn's pools and, once a torch case has imported it, torch's."""
        if n != self._threads:
            import fastrnn

            fastrnn.set_num_threads(n)
            self._threads = n
        torch = sys.modules.get("torch")
        if torch is not None and torch.get_num_threads() != n:
            torch.set_num_threads(n)

    @staticmethod
    def _lookup(cache, key, make, size=2):
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        while len(cache) >= size:  # free the oldest before making the next one
            cache.popitem(last=False)
        cache[key] = value = make()
        return value

    def problem(self, case, T):
        cell = CELLS[case.cell]
        key = (case.cell, case.dtype, T, case.B, case.I, case.H)
        return self._lookup(self._problems, key,
                            lambda: cell.make_problem(T, case.B, case.I, case.H, case.dtype))

    def reference(self, case, T):
        """The float64 reference's outputs on the first T steps of the case's data."""
        import numpy as np

        cell = CELLS[case.cell]

        def make():
            p64 = {k: v.astype(np.float64) for k, v in self.problem(case, T).items() if k != "d_out"}
            run, collect = cell.fastrnn_runner(p64, grid.REFERENCE, case.training)
            return collect(run())

        key = (case.cell, case.training, case.dtype, T, case.B, case.I, case.H)
        return self._lookup(self._references, key, make)

    def clear(self):
        self._problems.clear()
        self._references.clear()


@pytest.fixture(scope="session")
def bench(request):
    state = BenchState(grid.Options.from_config(request.config))
    yield state
    state.clear()


_session_load = []


def pytest_sessionstart(session):
    _session_load.append(Load())


def _load():
    """How many cores other processes kept busy while the suite ran: a shared
    machine makes timings, above all multi-threaded ones, unreliable."""
    if not _session_load or _session_load[0].other_cores() is None:
        return None
    load = _session_load[0]
    return {"wall_s": load.wall_seconds(), "own_cores": load.own_cores(),
            "other_cores": load.other_cores()}


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def pytest_benchmark_update_machine_info(config, machine_info):
    """Everything a reader of a saved run needs to trust or reproduce its numbers."""
    import fastrnn

    info = {
        "versions": {d: _version(d) for d in ("fastrnn", "numpy", "scipy", "numba", "torch",
                                               "threadpoolctl", "pytest-benchmark")},
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "available_backends": fastrnn.available_backends(),
        "unavailable_backends": fastrnn.unavailable_backends(),
        "default_backend": fastrnn.get_default_backend(),
        # Set, these make OpenBLAS pick slower kernels on this CPU: comparable
        # numbers are taken with both unset, and the report says which held.
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                               "OPENBLAS_THREAD_TIMEOUT",
                                               "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                               "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                                               "FASTRNN_BACKEND")},
    }
    try:
        options = grid.Options.from_config(config)
        info["options"] = {"grid": options.grid, "dtypes": list(options.dtypes),
                           "threads": list(options.threads), "target_time_s": options.target_time,
                           "reference_max_macs": options.reference_max_macs}
    except ValueError:  # no bench options (pytest run on another folder)
        pass
    try:
        from fastrnn.kernels._build import build_info

        info["cython_build"] = {**build_info(), "cpu_levels": list(fastrnn.cpu_isa_levels()),
                                 "level": fastrnn.get_isa_level()}
    except (ImportError, ValueError):
        info["cython_build"] = None
    try:
        import threadpoolctl

        info["thread_pools"] = [
            {k: pool.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                      "threading_layer")}
            | {"library": os.path.basename(pool["filepath"])}
            for pool in threadpoolctl.threadpool_info()]
    except ImportError:
        pass
    info["load"] = _load()
    machine_info["fastrnn"] = info
