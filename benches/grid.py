"""What the suite measures: the grids, the cases, and the caps that keep a full run short.

A case is one workload (cell, pass, dtype, T, B, H, with I = H) run by one
implementation at one thread count.  The workload is the pytest-benchmark
group; the implementations are its members, so the group table compares them.
"""
import dataclasses
import importlib.util
import math

from fastrnn._spec import CELLS

# Steps and (batch, hidden) sizes.  The quick grid is what CI runs (with
# --benchmark-disable, each case once); the full grid is for committed reports.
T_GRID = {"quick": (16, 256), "full": (16, 64, 256, 1024, 4096)}
BH_GRID = {"quick": ((1, 64), (16, 256)), "full": ((1, 64), (16, 256), (64, 1024))}
PASSES = ("inference", "training")
# The reference first: it is the baseline of every speed-up.  "-bf16": the
# same implementation with bfloat16 products (fastrnn's compute_dtype, torch
# under torch.autocast("cpu", dtype=torch.bfloat16)), float32 cases only.
IMPLEMENTATIONS = ("numpy", "numba", "cython", "cython-bf16", "torch", "torch-bf16")
REFERENCE = "numpy"
BF16 = "-bf16"
DTYPES = {"float32": ("float32",), "float64": ("float64",), "both": ("float32", "float64")}

# Seconds each case aims to spend in timed rounds (at least one round).
# Small cases run many rounds, large ones one.
TARGET_TIME = {"quick": 0.25, "full": 1.0}
MAX_ROUNDS = 1000
# Below this estimated time per call a case gets one untimed call at its
# full size before timing (besides the JIT warm-up at a short T).  Above it
# the call is long enough that nothing left to warm matters, and skipping
# the extra call keeps a full run near ten minutes.
FULL_WARMUP_MAX_S = 2.0

# The numpy reference runs only while T*B*G*H*H (multiply-adds of the
# recurrent products of one forward) stays within this cap.  2**36 keeps the
# Elman (64, 1024) up to T=1024 (the largest training-size row) and drops its T=4096
# (about 10 s per inference call and 30 s per training call on the 2-core
# development machine, longer than the rest of its row together).
REFERENCE_MAX_MACS = 2 ** 36
# The max error against the float64 reference is computed on the first
# err_T steps of the same data, err_T the largest T of the full grid (not
# above the case's T) with T*B*H*H within this budget: the whole sequence
# for (1, 64) and (16, 256), T=64 for (64, 1024).
ERROR_MAX_MACS = 2 ** 32
# Skip a case whose arrays would need more than this share of the memory
# available when it starts (float64 training at T=4096, (64, 1024) needs ~17 GB).
MEMORY_SHARE = 0.7

# Relative error (max |got - ref| / max |ref|, worst array) above which a
# case fails after recording its numbers: a wrong kernel should not go
# unnoticed in a speed table.  Loose: float32 accuracy, not bit equality;
# bf16 products: bf16's 8 bits accumulated (docs/precision.md).
TOLERANCE = {"float32": 1e-3, "float64": 1e-9, "bfloat16": 3e-2}


@dataclasses.dataclass(frozen=True)
class Case:
    cell: str
    pass_: str  # "inference" or "training"
    dtype: str  # "float32" or "float64"
    T: int
    B: int
    I: int  # noqa: E741 (the shape letter)
    H: int
    impl: str  # "numpy" (the reference), "numba", "cython", "torch", or one of those + "-bf16"
    threads: int

    @property
    def training(self):
        return self.pass_ == "training"

    @property
    def group(self):
        """The workload: never the implementation (that is what the group compares)."""
        return f"{self.cell}-{self.pass_}-{self.dtype}-T{self.T}-B{self.B}-H{self.H}"

    def id(self, several_thread_counts):
        suffix = f"-t{self.threads}" if several_thread_counts else ""
        return f"{self.group}-{self.impl}{suffix}"

    @property
    def base(self):
        """The implementation without its precision: "cython" for "cython-bf16"."""
        return self.impl.removesuffix(BF16)

    @property
    def bf16(self):
        return self.impl.endswith(BF16)

    @property
    def tolerance(self):
        return TOLERANCE["bfloat16" if self.bf16 else self.dtype]

    @property
    def recurrent_macs(self):
        return self.T * self.B * CELLS[self.cell].G * self.H * self.H


@dataclasses.dataclass(frozen=True)
class Options:
    grid: str
    cells: tuple
    dtypes: tuple
    threads: tuple
    target_time: float
    reference_max_macs: float

    @classmethod
    def from_config(cls, config):
        from fastrnn import get_num_threads

        grid = config.getoption("bench_grid")
        threads = config.getoption("bench_threads")
        threads = (get_num_threads(),) if not threads else tuple(
            int(n) for n in str(threads).split(",") if n.strip())
        if not threads or min(threads) < 1:
            raise ValueError(f"--bench-threads wants N or N,M,... with N >= 1, got {threads}")
        target = config.getoption("bench_time")
        cells = tuple(c.strip() for c in config.getoption("bench_cells").split(",") if c.strip())
        unknown = set(cells) - set(CELLS)
        if not cells or unknown:
            raise ValueError(f"--bench-cells wants names from {', '.join(CELLS)}, "
                             f"got {config.getoption('bench_cells')!r}")
        return cls(grid=grid, cells=cells, dtypes=DTYPES[config.getoption("bench_dtype")], threads=threads,
                   target_time=TARGET_TIME[grid] if target is None else float(target),
                   reference_max_macs=config.getoption("bench_ref_cap"))


def cases(options, cell_names):
    """Every case of the grid, ordered so a group's members run one after another.

    Yields ``(case, skip_reason_or_None)``; what can only be known at run
    time (a backend that does not load, memory) is checked by the test.
    """
    torch_missing = importlib.util.find_spec("torch") is None
    for cell in cell_names:
        for dtype in options.dtypes:
            for B, H in BH_GRID[options.grid]:
                for T in T_GRID[options.grid]:
                    for pass_ in PASSES:
                        for impl in IMPLEMENTATIONS:
                            for threads in options.threads:
                                case = Case(cell, pass_, dtype, T, B, H, H, impl, threads)
                                yield case, skip_reason(case, options, torch_missing)


def skip_reason(case, options, torch_missing):
    if case.bf16 and case.dtype != "float32":
        return "bfloat16 products take float32 arrays"
    if case.base == "torch" and torch_missing:
        return "torch is not installed: no nn.RNN to compare with (pip install torch)"
    if case.impl == REFERENCE and case.recurrent_macs > options.reference_max_macs:
        return (f"numpy reference capped to keep a full run near ten minutes: T*B*G*H*H = "
                f"{power_of_two(case.recurrent_macs)} multiply-adds > --bench-ref-cap="
                f"{power_of_two(options.reference_max_macs)}")
    return None


def power_of_two(x):
    """2^n when x is one, else x to 4 digits."""
    n = math.log2(x) if x > 0 else 0.5
    return f"2^{int(n)}" if n == int(n) else f"{x:.4g}"


def error_steps(case):
    """The T on which the case's max error against the float64 reference is measured."""
    candidates = {case.T, *(T for T in T_GRID["full"] if T < case.T)}
    fits = [T for T in candidates if T * case.B * case.H * case.H <= ERROR_MAX_MACS]
    return max(fits, default=min(candidates))
