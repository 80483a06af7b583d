"""Throughput of every cell, pass and implementation over the grid, and the GEMM calibration.

Each case, before anything is timed:
  1. runs the implementation on the first err_T steps of its data (this also
     compiles the JIT code and warms torch) and records the max error against
     the float64 reference on the same data;
  2. estimates the time of one call and, when that is under
     ``grid.FULL_WARMUP_MAX_S``, makes one untimed call at the full size;
then times ``run()`` alone in ``benchmark.pedantic`` with as many rounds as
fit ``--bench-time`` (at least one), between two runs of ``speed_probe``.
Throughput uses the fastest round (``stats.min``): the machine is shared,
and the minimum is the least disturbed measurement.
"""
import functools
import time

import numpy as np
import pytest

import fastrnn
from benches import grid
from benches.cells import CELLS, compare, runner, torch_autocast_error
from fastrnn._spec import CELLS as SPECS
from fastrnn._timing import speed_probe


def _available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _require(case):
    """Skip, with the reason, a case that cannot run here."""
    if case.base == "torch":
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            pytest.skip(f"torch is not importable: {exc}")
        reason = case.bf16 and torch_autocast_error(SPECS[case.cell].layer)
        if reason:
            pytest.skip(f"torch's own {SPECS[case.cell].layer} does not run under autocast on "
                        f"this CPU: {reason}")
    else:
        reason = fastrnn.unavailable_backends().get(case.base)
        if reason is not None:
            pytest.skip(f"backend {case.base} unavailable: {reason}")
    cell = CELLS[case.cell]
    need = cell.memory_bytes(case.T, case.B, case.I, case.H, np.dtype(case.dtype).itemsize,
                             case.training)
    have = _available_memory()
    if have is not None and need > grid.MEMORY_SHARE * have:
        pytest.skip(f"needs about {need / 2**30:.1f} GiB, more than {grid.MEMORY_SHARE:.0%} "
                    f"of the {have / 2**30:.1f} GiB available")


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _discard(run):
    """run() without keeping its result alive into the next round."""
    def timed():
        run()
    return timed


def test_throughput(case, benchmark, bench):
    _require(case)
    cell = CELLS[case.cell]
    bench.set_threads(case.threads)
    benchmark.group = case.group
    info = benchmark.extra_info
    info.update(kind="throughput", cell=case.cell, pass_=case.pass_, backend=case.impl,
                reference=case.impl == grid.REFERENCE, threads=case.threads, dtype=case.dtype,
                T=case.T, B=case.B, I=case.I, H=case.H, nonlinearity="tanh",
                compute_dtype="bfloat16" if case.bf16 else case.dtype)
    if case.base == "torch":
        import torch

        info.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
                    torch_module=cell.torch_name)

    # 1. Error against the float64 reference (and the JIT / torch warm-up).
    err_T = grid.error_steps(case)
    run_err, collect = runner(cell, case.impl, bench.problem(case, err_T), case.training)
    abs_err, rel_err, names = compare(collect(run_err()), bench.reference(case, err_T))
    info.update(err_T=err_T, max_abs_err=abs_err, max_rel_err=rel_err, err_arrays=names,
                err_against="fastrnn.reference in float64 on the same data (first err_T steps)")

    # 2. Size the rounds, warm up at full size when that is cheap, time.
    run, _ = runner(cell, case.impl, bench.problem(case, case.T), case.training)
    rounds = 1
    if benchmark.enabled:
        estimate = _timed(run_err) * case.T / err_T
        if err_T != case.T and estimate <= grid.FULL_WARMUP_MAX_S:
            estimate = _timed(run)
        target = bench.options.target_time
        rounds = max(1, min(grid.MAX_ROUNDS, int(target / max(estimate, 1e-9))))
    del run_err
    probe_before = speed_probe()
    benchmark.pedantic(_discard(run), rounds=rounds, iterations=1)
    info.update(probe_us=[probe_before, speed_probe()])

    if benchmark.stats:
        stats = benchmark.stats.stats
        flops = cell.flops(case.T, case.B, case.I, case.H, case.training)
        info.update(stat="min", time_s=stats.min, rounds=rounds,
                    steps_per_s=case.T * case.B / stats.min,
                    steps_per_s_mean=case.T * case.B / stats.mean,
                    us_per_step=1e6 * stats.min / case.T,
                    flop=flops, gflop_per_s=flops / stats.min / 1e9,
                    gflop_per_s_mean=flops / stats.mean / 1e9)

    if case.impl == "torch-bf16":
        return  # a peer's own precision, recorded above, is not ours to hold to a bound
    tolerance = case.tolerance
    assert rel_err <= tolerance, (
        f"{case.impl} differs from the float64 reference by {rel_err:.3g} (relative, worst of "
        f"{names}; max abs {abs_err:.3g}) on T={err_T}, tolerance {tolerance:g}")


GEMM_N = 2048


def test_gemm(gemm_case, benchmark, bench):
    """numpy.matmul of two 2048 x 2048 matrices: the GEMM rate the recurrences are held to.

    At (64, 1024) every backend's per-step work is BLAS-sized, so the report
    gives the share of this rate each backend reaches there.
    """
    dtype, threads = gemm_case
    bench.set_threads(threads)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((GEMM_N, GEMM_N), dtype=np.dtype(dtype))
    b = rng.standard_normal((GEMM_N, GEMM_N), dtype=np.dtype(dtype))
    c = np.empty_like(a)
    matmul = functools.partial(np.matmul, a, b, out=c)
    benchmark.group = f"gemm-{dtype}-{GEMM_N}"
    flops = 2 * GEMM_N ** 3
    info = benchmark.extra_info
    info.update(kind="gemm", impl="numpy.matmul", dtype=dtype, threads=threads, N=GEMM_N,
                flop=flops, numpy_version=np.__version__)
    rounds = 1
    if benchmark.enabled:
        estimate = _timed(matmul)  # also the warm-up (BLAS threads, buffers)
        rounds = max(3, min(100, int(bench.options.target_time / estimate)))
    benchmark.pedantic(matmul, rounds=rounds, iterations=1)
    if benchmark.stats:
        stats = benchmark.stats.stats
        info.update(stat="min", time_s=stats.min, rounds=rounds,
                    gflop_per_s=flops / stats.min / 1e9, gflop_per_s_mean=flops / stats.mean / 1e9)
    assert np.allclose(c[:4, :4], a[:4] @ b[:, :4], rtol=1e-3, atol=1e-2)

