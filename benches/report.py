"""Tables and a plot from a saved run of the benchmark suite.

    python -m benches.report RUN.json [--out DIR] [--no-plot]

RUN.json is what ``pytest benches/ --benchmark-only --benchmark-json=RUN.json``
writes, or a run saved with ``--benchmark-save=NAME`` (give its path under
``.benchmarks/``, or just NAME or its number to look it up there).  Writes
into DIR (default: benches/results/):

  report.md        throughput per implementation with speed-ups over the
                   reference and over PyTorch; the fit time = overhead +
                   T x per-step cost; GEMM calibration and the share of it
                   reached; throughput at the longest T against the best T;
                   cold start; the cases timed while the machine was slow
  throughput.png   throughput against T, one line per implementation, one
                   panel per (cell, pass, B, H); needs matplotlib
                   (``pip install -e ".[bench]"``), skipped with a note without it

Every time is the fastest round of its case (pytest-benchmark's ``min``).
"""
import argparse
import collections
import dataclasses
import glob
import json
import math
import os
import sys

import numpy as np

from fastrnn._timing import BUSY_CORES, SLOW_PROBE

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REFERENCE = "numpy"
TORCH = "torch"
IMPL_ORDER = ("numpy", "numba", "cython", "cython-bf16", "torch", "torch-bf16")
TORCH_MODULES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}  # PyTorch's module of each cell
FLAT_WITHIN = 0.10  # flat: at T=4096 within 10% of the best T
NOISE = "noise"  # in a table, where a value is impossible (a negative fit, over 100% of GEMM)
PLOT_HINT = 'pip install -e ".[bench]"'


@dataclasses.dataclass(frozen=True)
class Row:
    """One throughput case of a run."""

    cell: str
    pass_: str
    dtype: str
    T: int
    B: int
    I: int  # noqa: E741
    H: int
    backend: str
    threads: int
    label: str  # the implementation as the tables name it
    time_s: float  # fastest round
    rounds: int
    flop: float
    max_rel_err: float
    err_T: int
    probe_us: tuple  # the machine-speed probe before and after the timed rounds

    @property
    def rate(self):
        """Steps x batch per second."""
        return self.T * self.B / self.time_s

    @property
    def gflops(self):
        return self.flop / self.time_s / 1e9

    @property
    def workload(self):
        return (self.cell, self.pass_, self.dtype, self.B, self.H, self.T)


# --- reading ----------------------------------------------------------------


def find_run(name):
    """A path to a run: ``name`` itself, or a run saved under .benchmarks/ matching it."""
    if os.path.isfile(name):
        return name
    matches = sorted(set(glob.glob(os.path.join(".benchmarks", "*", f"{name}*.json"))
                         + glob.glob(os.path.join(".benchmarks", "*", f"*_{name}.json"))))
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise SystemExit(f"{name!r} matches several saved runs: {', '.join(matches)}")
    raise SystemExit(f"no run {name!r}: give the JSON of --benchmark-json=FILE, or the path, "
                     "name or number of a run saved with --benchmark-save (under .benchmarks/)")


def load(path):
    with open(path) as f:
        run = json.load(f)
    if "benchmarks" not in run:
        raise SystemExit(f"{path} is not a pytest-benchmark JSON (no 'benchmarks')")
    return run


def _kind(bench, kind):
    return [b for b in bench if b.get("extra_info", {}).get("kind") == kind]


def throughput_rows(run):
    raw = _kind(run["benchmarks"], "throughput")
    several = len({b["extra_info"]["threads"] for b in raw}) > 1
    rows = []
    for b in raw:
        e, s = b["extra_info"], b["stats"]
        label = e["backend"] + (f" ({e['threads']}t)" if several else "")
        rows.append(Row(cell=e["cell"], pass_=e["pass_"], dtype=e["dtype"], T=e["T"], B=e["B"],
                        I=e["I"], H=e["H"], backend=e["backend"], threads=e["threads"],
                        label=label, time_s=s["min"], rounds=s["rounds"], flop=e["flop"],
                        max_rel_err=e.get("max_rel_err", float("nan")),
                        err_T=e.get("err_T", e["T"]), probe_us=tuple(e.get("probe_us", ()))))
    return rows


def _impl_key(label):
    backend = label.split(" ")[0]
    order = IMPL_ORDER.index(backend) if backend in IMPL_ORDER else len(IMPL_ORDER)
    return (order, label)


# --- formatting -------------------------------------------------------------


def fmt_rate(x):
    """3 significant digits, 1.23e5 rather than 1.23e+05."""
    if x is None or not math.isfinite(x):
        return "—"
    text = f"{x:.3g}"
    if "e" in text:
        mantissa, exp = text.split("e")
        text = f"{mantissa}e{int(exp)}"
    return text


def fmt_ratio(x):
    return "—" if x is None or not math.isfinite(x) else f"{x:.3g}x"


def fmt_num(x):
    return fmt_rate(x)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- (a) throughput and speed-ups -------------------------------------------


def _best(rows, backend):
    """The fastest row of ``backend`` among ``rows`` (its best thread count)."""
    candidates = [r for r in rows if r.backend == backend]
    return max(candidates, key=lambda r: r.rate) if candidates else None


def throughput_section(rows):
    out = ["## Throughput", "",
           "Steps x batch per second (T*B / fastest round). \"vs ref\": speed-up over the "
           "numpy reference; \"vs torch\": over PyTorch's module of the same cell (nn.RNN, "
           "nn.LSTM or nn.GRU, named in each heading) with the same weights, at its best "
           "thread count where several ran. — : not run (skipped or capped)."]
    by_table = collections.defaultdict(list)
    for r in rows:
        by_table[(r.cell, r.pass_, r.dtype)].append(r)
    for (cell, pass_, dtype), trows in sorted(by_table.items()):
        labels = sorted({r.label for r in trows}, key=_impl_key)
        vs_ref = [lab for lab in labels if not lab.startswith(REFERENCE)]
        vs_torch = [lab for lab in labels if not lab.startswith(TORCH)]
        threads = sorted({r.threads for r in trows})
        header = (["B", "H", "T"] + labels + [f"{lab} vs ref" for lab in vs_ref]
                  + [f"{lab} vs torch" for lab in vs_torch])
        body = []
        workloads = collections.defaultdict(dict)
        for r in trows:
            workloads[(r.B, r.H, r.T)][r.label] = r
        for (B, H, T), members in sorted(workloads.items()):
            ref = _best(members.values(), REFERENCE)
            torch = _best(members.values(), TORCH)
            line = [B, H, T] + [fmt_rate(members[lab].rate) if lab in members else "—"
                                for lab in labels]
            line += [fmt_ratio(members[lab].rate / ref.rate) if lab in members and ref else "—"
                     for lab in vs_ref]
            line += [fmt_ratio(members[lab].rate / torch.rate) if lab in members and torch else "—"
                     for lab in vs_torch]
            body.append(line)
        torch_module = f"; torch: nn.{TORCH_MODULES[cell]}" if vs_torch != labels else ""
        out += ["", f"### {cell}, {pass_}, {dtype}, threads {', '.join(map(str, threads))}"
                    f"{torch_module}", "", table(header, body)]
    worst = max(rows, key=lambda r: r.max_rel_err if math.isfinite(r.max_rel_err) else -1)
    out += ["", f"Largest error against the float64 reference: {worst.max_rel_err:.2g} "
                f"(relative to the largest value; {worst.label}, {worst.cell} {worst.pass_} "
                f"{worst.dtype}, B={worst.B} H={worst.H}, on the first {worst.err_T} steps)."]
    return "\n".join(out)


# --- (b) time = overhead + T * per_step -------------------------------------


@dataclasses.dataclass(frozen=True)
class Fit:
    key: tuple  # (cell, pass, dtype, B, H, label)
    n: int
    overhead_us: float
    per_step_us: float
    max_residual: float  # worst |fit - time| / time over the points


def fit_line(T, t):
    """Least squares of t = a + b*T in relative terms (each point weighted by 1/t).

    Plain least squares would let the longest T decide everything and leave
    the intercept (the per-call overhead, microseconds) lost in the noise of
    a multi-millisecond point; relative residuals give every T its say.
    """
    T, t = np.asarray(T, float), np.asarray(t, float)
    A = np.stack([np.ones_like(T), T], axis=1) / t[:, None]
    (a, b), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    residual = float(np.max(np.abs((a + b * T) - t) / t))
    return float(a), float(b), residual


def fits(rows):
    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r.cell, r.pass_, r.dtype, r.B, r.H, r.label)].append(r)
    result = []
    for key, grows in groups.items():
        points = sorted({r.T: r.time_s for r in grows}.items())
        if len(points) < 2:
            continue
        a, b, res = fit_line([p[0] for p in points], [p[1] * 1e6 for p in points])
        result.append(Fit(key=key, n=len(points), overhead_us=a, per_step_us=b, max_residual=res))
    return sorted(result, key=lambda f: (f.key[:5], _impl_key(f.key[5])))


def fit_section(rows):
    out = ["## Per-call overhead and per-step cost", "",
           "Least-squares fit of time = overhead + T x per step (microseconds, fastest rounds; "
           "residuals weighted relative to each time so short T counts as much as long T). "
           "Steps x batch per second at long T tends to B / per step. With only two T "
           "the line goes through both points."]
    body = [[*f.key, f.n, fmt_num(f.overhead_us) if f.overhead_us >= 0 else NOISE,
             fmt_num(f.per_step_us) if f.per_step_us > 0 else NOISE,
             fmt_rate(f.key[3] / f.per_step_us * 1e6) if f.per_step_us > 0 else "—",
             f"{f.max_residual:.1%}"] for f in fits(rows)]
    if not body:
        return "\n".join(out + ["", "(needs at least two T per shape)"])
    noisy = sum(NOISE in line for line in body)
    if noisy:
        out += ["", f"{NOISE}: a negative overhead or per-step cost, which no kernel has: the "
                    f"times of that line's T do not lie on a line (timing noise, a per-step cost "
                    f"that grows with T as the saved states outgrow the caches, or a kernel "
                    f"that changes strategy with T), so its fit says nothing ({noisy} of "
                    f"{len(body)} lines)."]
    out += ["", table(["cell", "pass", "dtype", "B", "H", "implementation", "T points",
                       "overhead (µs)", "per step (µs)", "steps x batch / s at long T",
                       "worst residual"], body)]
    return "\n".join(out)


# --- GEMM calibration, flatness, cold start ---------------------------------


def gemm_rates(run):
    """{(dtype, threads): (GFLOP/s from the fastest round, rounds, N)}."""
    rates = {}
    for b in _kind(run["benchmarks"], "gemm"):
        e = b["extra_info"]
        rates[(e["dtype"], e["threads"])] = (e["flop"] / b["stats"]["min"] / 1e9,
                                             b["stats"]["rounds"], e["N"])
    return rates


def gemm_section(run, rows):
    rates = gemm_rates(run)
    out = ["## GEMM calibration", ""]
    if not rates:
        return "\n".join(out + ["No GEMM case in this run (benches/test_throughput.py::test_gemm)."])
    for (dtype, threads), (rate, rounds, N) in sorted(rates.items()):
        out.append(f"- numpy.matmul {N}^3 {dtype}, {threads} threads: **{rate:.1f} GFLOP/s** "
                   f"(fastest of {rounds} rounds)")
    shapes = sorted({(r.B, r.H) for r in rows}, key=lambda s: s[0] * s[1] * s[1])
    if not shapes:
        return "\n".join(out)
    target = (64, 1024)
    shape = target if target in shapes else shapes[-1]
    note = "" if shape == target else f" ((64, 1024) is not in this run; its largest shape instead)"
    out += ["", f"Share of the GEMM rate reached at (B, H) = {shape}{note}, GFLOP/s of the case "
                "(training counts 3x the forward's FLOPs) over the GEMM rate of the same dtype "
                "and threads. A recurrent kernel near the GEMM rate reaches 60% or more at (64, 1024).", ""]
    srows = [r for r in rows if (r.B, r.H) == shape and (r.dtype, r.threads) in rates]
    Ts = sorted({r.T for r in srows})
    body, over = [], 0
    for (pass_, dtype, label) in sorted({(r.pass_, r.dtype, r.label) for r in srows},
                                        key=lambda k: (k[0], k[1], _impl_key(k[2]))):
        cells = []
        for T in Ts:
            match = [r for r in srows if (r.pass_, r.dtype, r.label, r.T) == (pass_, dtype, label, T)]
            if match:
                r = match[0]
                share = r.gflops / rates[(r.dtype, r.threads)][0]
                cells.append(f"{share:.0%} ({r.gflops:.3g})" if share <= 1
                             else f"{NOISE} ({r.gflops:.3g})")
                over += share > 1
            else:
                cells.append("—")
        body.append([pass_, dtype, label] + cells)
    out.append(table(["pass", "dtype", "implementation"] + [f"T={T}" for T in Ts], body))
    if over:
        out += ["", f"{NOISE}: over 100% of the GEMM rate, which a recurrent kernel (GEMMs of "
                    f"one step's rows, plus its gates) cannot reach: the calibration GEMM ran in "
                    f"a slower moment than that case ({over} cells; GFLOP/s in brackets as "
                    f"measured)."]
    return "\n".join(out)


def flatness_section(rows):
    out = ["## Throughput at the longest T against the best T", ""]
    groups = collections.defaultdict(dict)
    for r in rows:
        groups[(r.cell, r.pass_, r.dtype, r.B, r.H, r.label)][r.T] = r
    longest_overall = max((r.T for r in rows), default=None)
    out.append(f"Steps x batch per second at T={longest_overall} (the run's longest) over the "
               f"best over T; a flat line stays at or above {1 - FLAT_WITHIN:.0%} at T=4096 "
               "for every backend and shape.")
    body = []
    for key, by_T in sorted(groups.items(), key=lambda kv: (kv[0][:5], _impl_key(kv[0][5]))):
        if len(by_T) < 2:
            continue
        longest = max(by_T)
        best = max(by_T.values(), key=lambda r: r.rate)
        ratio = by_T[longest].rate / best.rate
        body.append([*key, longest, fmt_rate(by_T[longest].rate), best.T, fmt_rate(best.rate),
                     f"{ratio:.2f}", "yes" if ratio >= 1 - FLAT_WITHIN else "**no**"])
    if not body:
        return "\n".join(out + ["", "(needs at least two T per shape)"])
    out += ["", table(["cell", "pass", "dtype", "B", "H", "implementation", "longest T",
                       "rate there", "best T", "best rate", "ratio",
                       f"within {FLAT_WITHIN:.0%}"], body)]
    return "\n".join(out)


def noise_section(rows):
    probes = [p for r in rows for p in r.probe_us]
    if not probes:
        return ""
    fastest = min(probes)
    slow = [r for r in rows if r.probe_us and max(r.probe_us) > SLOW_PROBE * fastest]
    out = ["## Measurement noise", "",
           f"Each throughput case runs a fixed single-threaded NumPy loop before and after its "
           f"timed rounds (fastest in this run: {fastest:.0f} µs). On a shared host the same "
           f"code can run much slower for seconds with nothing visible inside the machine. "
           f"{len(slow)} of {len(rows)} cases saw the probe over {SLOW_PROBE}x the fastest"
           + (": their times may be inflated; rerun them (`-k`) before trusting a ratio."
              if slow else ".")]
    if slow:
        body = [[r.cell, r.pass_, r.dtype, r.B, r.H, r.T, r.label,
                 " / ".join(f"{p / fastest:.2f}x" for p in r.probe_us)]
                for r in sorted(slow, key=lambda r: (r.workload, _impl_key(r.label)))]
        out += ["", table(["cell", "pass", "dtype", "B", "H", "T", "implementation",
                           "probe before / after"], body)]
    return "\n".join(out)


def _seconds(values, pick=min):
    values = [v for v in (values or []) if v is not None]
    return f"{pick(values):.3f}" if values else "—"


def coldstart_section(run):
    cases = _kind(run["benchmarks"], "coldstart")
    out = ["## Cold start", ""]
    if not cases:
        return "\n".join(out + ["No cold-start case in this run (benches/test_coldstart.py)."])
    out.append("Each round a fresh process. Wall: the whole process (interpreter start-up and "
               "exit included), fastest round; import and first call: measured inside the "
               "child, fastest round. Aimed for: import + first rnn_forward with the "
               "default backend under 1 s, and `import fastrnn` not importing numba.")
    body = []
    for b in sorted(cases, key=lambda b: (b["group"], b["extra_info"]["case"])):
        e = b["extra_info"]
        numba = e.get("numba_imported_by_import")
        body.append([b["group"], e["case"], e.get("measures", ""), e.get("backend", "—"),
                     b["stats"]["rounds"], f"{b['stats']['min']:.3f}",
                     _seconds(e.get("import_s")), _seconds(e.get("first_call_s")),
                     "—" if numba is None else ("**yes**" if numba else "no")])
    out += ["", table(["group", "case", "measures", "backend", "rounds", "wall (s)", "import (s)",
                       "first call (s)", "numba imported by `import fastrnn`"], body)]
    return "\n".join(out)


def torch_model_section(run):
    """The PyTorch model before and after fastrnn.torch.convert (benches/test_torch_model.py)."""
    cases = _kind(run["benchmarks"], "torch_model")
    if not cases:
        return ""
    out = ["## PyTorch models", "",
           "A model of embedding, recurrent layer (I = H) and linear read-out: its training step "
           "(forward, cross-entropy, backward, Adam) and its inference, with `torch.nn`'s layer "
           "and after `fastrnn.torch.convert`; milliseconds per call (fastest round, best thread "
           "count of the run), and torch.nn's time over the converted model's."]
    best = collections.defaultdict(dict)
    for b in cases:
        e = b["extra_info"]
        key = (e["cell"], e["pass_"], e["B"], e["H"], e["T"])
        ms = 1e3 * b["stats"]["min"]
        if ms < best[key].get(e["member"], (float("inf"),))[0]:
            best[key][e["member"]] = (ms, e["threads"])
    body = []
    for (cell, pass_, B, H, T), members in sorted(best.items()):
        theirs, ours = members.get("torch.nn"), members.get("fastrnn.torch")
        body.append([cell, pass_, f"{B}, {H}", T,
                     "—" if theirs is None else f"{theirs[0]:.3g} ({theirs[1]}t)",
                     "—" if ours is None else f"{ours[0]:.3g} ({ours[1]}t)",
                     "—" if not (theirs and ours) else f"{theirs[0] / ours[0]:.2f}x"])
    out += ["", table(["cell", "pass", "B, H", "T", "torch.nn (ms)", "fastrnn.torch (ms)",
                       "converted vs torch.nn"], body)]
    return "\n".join(out)


def header_section(run, path):
    m = run.get("machine_info", {})
    f = m.get("fastrnn", {})
    versions = f.get("versions", {})
    cpu = m.get("cpu", {}).get("brand_raw") or m.get("processor") or "unknown CPU"
    lines = ["# fastrnn benchmark report", "",
             f"Run: `{os.path.basename(path)}`, {run.get('datetime', '?')}; {cpu}, "
             f"{f.get('cpu_count', '?')} cores; python {m.get('python_version', '?')}."]
    if versions:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".")
    options = f.get("options")
    if options:
        lines.append(f"Grid {options['grid']}, dtypes {', '.join(options['dtypes'])}, threads "
                     f"{', '.join(map(str, options['threads']))}, about {options['target_time_s']} s "
                     "of timed rounds per case.")
    build = f.get("cython_build") or {}
    if build.get("level"):
        lines.append(f"Cython kernels at the {build['level']} instruction-set level (this CPU runs "
                     f"{', '.join(build.get('cpu_levels', []))}; built "
                     f"{', '.join(build.get('levels', []))}).")
    pools = f.get("thread_pools")
    if pools:
        lines.append("Thread pools: " + "; ".join(
            " ".join(str(p[k]) for k in ("internal_api", "version", "architecture") if p.get(k))
            + f" ({p.get('library')}, {p.get('num_threads')} threads)" for p in pools) + ".")
    load = f.get("load")
    if load:
        lines.append(f"Load: other processes kept {load['other_cores']:.2f} of "
                     f"{f.get('cpu_count', '?')} cores busy on average during the run "
                     f"({load['wall_s']:.0f} s).")
        if load["other_cores"] > BUSY_CORES:
            lines.append("**Warning: the machine was shared while this ran; timings, above all "
                         "multi-threaded ones, are not reliable. Rerun on a quiet machine.**")
    env = {k: v for k, v in f.get("env", {}).items() if v is not None}
    forced = {k: env[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in env}
    if forced:
        lines.append(f"**Note: {forced} was set**: OpenBLAS may have run slower kernels than this "
                     "CPU has; comparisons with other runs want both unset.")
    elif f:
        lines.append("OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE were unset.")
    other = {k: v for k, v in env.items() if k not in forced}
    if other:
        lines.append("Environment: " + ", ".join(f"{k}={v}" for k, v in other.items()) + ".")
    return "\n".join(lines)


# --- (c) the plot -----------------------------------------------------------


def plot(rows, path, title):
    """throughput against T, one panel per (cell, pass, B, H); raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels_rows = sorted({(r.cell, r.pass_) for r in rows})
    panels_cols = sorted({(r.B, r.H) for r in rows}, key=lambda s: s[0] * s[1] * s[1])
    dtypes = sorted({r.dtype for r in rows})
    labels = sorted({r.label for r in rows}, key=_impl_key)
    colors = {lab: f"C{i}" for i, lab in enumerate(labels)}
    styles = {dt: s for dt, s in zip(dtypes, ("-", "--", ":", "-."))}
    lines = collections.defaultdict(list)  # (cell, pass, B, H, dtype, label) -> [(T, rate)]
    for r in rows:
        lines[(r.cell, r.pass_, r.B, r.H, r.dtype, r.label)].append((r.T, r.rate))
    all_T = sorted({r.T for r in rows})
    nr, nc = len(panels_rows), len(panels_cols)
    fig, axes = plt.subplots(nr, nc, figsize=(4.3 * nc, 3.4 * nr + 0.6), squeeze=False)
    for i, (cell, pass_) in enumerate(panels_rows):
        for j, (B, H) in enumerate(panels_cols):
            ax = axes[i][j]
            for dtype in dtypes:
                for label in labels:
                    pts = sorted(lines.get((cell, pass_, B, H, dtype, label), []))
                    if not pts:
                        continue
                    name = label if len(dtypes) == 1 else f"{label} {dtype}"
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[dtype], marker="o",
                            markersize=4, color=colors[label], label=name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(all_T, [str(T) for T in all_T])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_title(f"{cell} {pass_}, B={B}, H={H}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if i == nr - 1:
                ax.set_xlabel("sequence length T")
            if j == 0:
                ax.set_ylabel("steps x batch / s")
            if not ax.lines:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                continue
            # At least a decade of y, so a panel whose lines are close does not
            # zoom in until a 1.4x difference looks like a chasm.
            low, high = ax.get_ylim()
            if high / low < 10:
                centre = math.sqrt(low * high)
                ax.set_ylim(centre / math.sqrt(10), centre * math.sqrt(10))
    handles, names = {}, []
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in handles:
                handles[n] = h
                names.append(n)
    fig.legend([handles[n] for n in names], names, loc="upper center", ncol=max(1, len(names)),
               bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.text(0.5, 0.005, title, ha="center", va="bottom", fontsize=8)
    height = 3.4 * nr + 0.6
    fig.tight_layout(rect=(0, 0.25 / height, 1, 1 - 0.4 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- main -------------------------------------------------------------------


def make_report(run, path, out_dir, want_plot=True):
    """Write report.md (and throughput.png) into out_dir; return (markdown, files written)."""
    os.makedirs(out_dir, exist_ok=True)
    rows = throughput_rows(run)
    parts = [header_section(run, path)]
    written = []
    if rows:
        plot_path = os.path.join(out_dir, "throughput.png")
        if want_plot:
            m = run.get("machine_info", {})
            title = (f"fastrnn {m.get('fastrnn', {}).get('versions', {}).get('fastrnn', '')}, "
                     f"{', '.join(sorted({r.dtype for r in rows}))}, threads "
                     f"{', '.join(map(str, sorted({r.threads for r in rows})))}; "
                     f"{m.get('cpu', {}).get('brand_raw', '')}; {run.get('datetime', '')[:16]}")
            try:
                written.append(plot(rows, plot_path, title))
                parts.append("![throughput against T](throughput.png)")
            except ImportError:
                parts.append(f"**Plot skipped: matplotlib is not installed.** Install it with "
                             f"`{PLOT_HINT}` and run the report again.")
        parts += [throughput_section(rows), fit_section(rows)]
    else:
        parts.append("No throughput case in this run.")
    parts += [gemm_section(run, rows), flatness_section(rows) if rows else "",
              coldstart_section(run), torch_model_section(run), noise_section(rows)]
    markdown = "\n\n".join(p for p in parts if p) + "\n"
    md_path = os.path.join(out_dir, "report.md")
    with open(md_path, "w") as f:
        f.write(markdown)
    return markdown, [md_path] + written


def summary(markdown):
    """What the terminal gets: the header's facts (load, environment), and every
    note on values marked as noise or timed in a slow window."""
    lines = markdown.split("\n\n")[1].splitlines()
    return lines + [line for line in markdown.splitlines()
                    if line.startswith((f"{NOISE}:", "Each throughput case runs", "**Plot"))]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benches.report",
                                     description=__doc__ and __doc__.splitlines()[0])
    parser.add_argument("run", help="pytest-benchmark JSON (--benchmark-json=FILE), or the path, "
                                    "name or number of a run saved with --benchmark-save")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"folder for report.md and throughput.png (default {DEFAULT_OUT})")
    parser.add_argument("--no-plot", action="store_true", help="tables only")
    parser.add_argument("--print", action="store_true", help="also print report.md")
    args = parser.parse_args(argv)
    path = find_run(args.run)
    markdown, written = make_report(load(path), path, args.out, want_plot=not args.no_plot)
    if args.print:
        print(markdown)
    else:  # the run's facts and what looks wrong in it; the tables are in the file
        print("\n".join(summary(markdown)))
    if not args.no_plot and not any(w.endswith(".png") for w in written):
        print(f"plot skipped: matplotlib is not installed ({PLOT_HINT})", file=sys.stderr)
    print("wrote " + ", ".join(written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
