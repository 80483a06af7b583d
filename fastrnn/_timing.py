"""Timing on a shared machine: what ``python -m fastrnn`` and the benchmark
suite (``benches/``) both use to measure, and to say when a measurement
cannot be trusted.

Two signs of an unreliable timing, both seen on the 2-core VMs this project
is measured on:

- **load**: other processes keeping cores busy (:class:`Load`, from
  ``/proc/stat``); fastrnn's threads then wait for a core, and a ratio
  between two backends timed a moment apart can invert;
- **a slow window**: the same fixed code running up to 1.7x slower for
  seconds with nothing visible inside the machine (a sibling hardware thread
  or another guest): :func:`speed_probe`, timed before and after, shows it.

Against both, contenders are timed interleaved, the best of several short
rounds (:func:`interleaved_best`): one slow moment costs one round of each,
not the whole of one contender.
"""
import os
import time

import numpy as np

__all__ = ["Load", "interleaved_best", "interleaved_times", "speed_probe", "steady",
           "SLOW_PROBE", "BUSY_CORES"]

SLOW_PROBE = 1.25  # a probe this much slower than the fastest one: a slow window
BUSY_CORES = 0.2  # other processes busier than this many cores: a shared machine


def _busy_seconds():
    """CPU-seconds every process on the machine has spent busy (Linux), or None."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _own_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Load:
    """How many cores other processes kept busy since this was made:
    ``Load().other_cores()``, None where the system does not say (not Linux)."""

    def __init__(self):
        self._wall, self._busy, self._own = time.monotonic(), _busy_seconds(), _own_seconds()

    def wall_seconds(self):
        return time.monotonic() - self._wall

    def own_cores(self):
        return (_own_seconds() - self._own) / max(self.wall_seconds(), 1e-9)

    def other_cores(self):
        busy = _busy_seconds()
        if busy is None or self._busy is None:
            return None
        wall = max(self.wall_seconds(), 1e-9)
        return max(0.0, (busy - self._busy) / wall - self.own_cores())


def speed_probe():
    """Microseconds for a fixed single-threaded NumPy loop: how fast the machine is right now.

    On a shared host the same code can run 1.7x slower for seconds at a time
    with nothing visible inside this machine (measured here: a sibling
    hardware thread or another guest).  Timed before and after a measurement,
    it shows one taken in a slow window.
    """
    x = np.full((1, 64), 0.5, np.float32)
    W = np.full((64, 64), 0.01, np.float32)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(32):
            np.tanh(x @ W)
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def interleaved_times(runs, rounds, pause=0.0, before_round=None, warm_up=True, times=None):
    """{key: the seconds of each of ``rounds`` calls of runs[key]()} (each call
    returns its seconds), after one warm-up call each (unless ``warm_up`` is
    False), the contenders interleaved: one call each per round, a different
    one first each round (the one right after a previous pool's work shares
    the machine with its spinning threads), ``pause`` seconds before each
    call.  ``before_round()`` runs at the start of every round; ``times``
    (such a dict) is extended rather than a new one made."""
    times = {key: [] for key in runs} if times is None else times
    if warm_up:
        for run in runs.values():
            run()
    order = list(runs)
    for round_ in range(rounds):
        if before_round is not None:
            before_round()
        shift = round_ * len(order) // rounds
        for key in order[shift:] + order[:shift]:
            if pause:
                time.sleep(pause)
            times[key].append(runs[key]())
    return times


def interleaved_best(runs, rounds, pause=0.0, before_round=None):
    """{key: the fastest of :func:`interleaved_times`' calls of runs[key]}."""
    times = interleaved_times(runs, rounds, pause, before_round)
    return {key: min(t) for key, t in times.items()}


def steady(times, within=SLOW_PROBE):
    """True when the fastest two of ``times`` agree within ``within``: a best
    the machine gave twice, likely its speed when undisturbed, rather than
    one clean moment among slow ones."""
    fastest = sorted(times)[:2]
    return len(fastest) == 2 and fastest[1] <= within * fastest[0]


def best_within(fn, budget):
    """The fastest of repeated calls of fn() within ``budget`` seconds, after a
    warm-up call, unless that one alone took the budget (then it is the time)."""
    t0 = time.perf_counter()
    fn()
    result = time.perf_counter() - t0
    if result >= budget:
        return result
    start, result = time.perf_counter(), float("inf")
    while time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        fn()
        result = min(result, time.perf_counter() - t0)
    return result
