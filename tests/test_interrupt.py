"""Ctrl-C during a long call raises KeyboardInterrupt promptly, in both fast
backends: the Cython engine looks for signals every 5 ms from its calling
thread, the Numba kernels run their steps in chunks of about 50 ms with
Python (which runs the signal handlers) between them.

Each case runs in a fresh interpreter, since a signal is process state.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import backend_or_skip

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix",
                                reason="POSIX signals")

FAST = ["cython", "numba"]


def interrupted_after(script):
    """Run script; it prints "interrupted"/"finished", the seconds the call
    took, and the seconds the whole call takes."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    what, seconds, whole = done.stdout.split()
    assert what == "interrupted", done.stdout
    return float(seconds), float(whole)


@pytest.mark.parametrize("backend", FAST)
def test_ctrl_c_interrupts_a_long_forward(backend):
    """The issue's case: SIGINT 0.5 s into an Elman inference (B=4, H=512)
    that takes several seconds."""
    backend_or_skip(backend)
    seconds, whole = interrupted_after(f"""
        import os, signal, threading, time
        import numpy as np
        import fastrnn
        B, I, H = 4, 512, 512
        x = np.ones((200, B, I), np.float32)
        W_ih = np.full((H, I), 0.001, np.float32)
        W_hh = np.full((H, H), 0.001, np.float32)
        run = lambda x: fastrnn.rnn_forward(x, None, W_ih, W_hh, backend="{backend}",
                                            training=False)
        t0 = time.perf_counter()
        run(x)
        # long enough for 5 s, at least 20000 steps
        x = np.ones((max(20000, int(1000 * 5 / (time.perf_counter() - t0))), B, I), np.float32)
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.perf_counter()
        try:
            run(x)
            print("finished", time.perf_counter() - t0, 0)
        except KeyboardInterrupt:
            print("interrupted", time.perf_counter() - t0, 0)
    """)
    # 0.5 s until the signal; then 5 ms (Cython) or a chunk (Numba) until it
    # is seen, with room for a loaded machine.
    assert seconds < 0.5 + 1.0


@pytest.mark.parametrize("backend", FAST)
def test_ctrl_c_interrupts_a_long_backward(backend):
    """SIGINT a quarter of the way into a long backward (its chunks of steps
    and, in the Cython engine, their weight-gradient phases)."""
    backend_or_skip(backend)
    seconds, whole = interrupted_after(f"""
        import os, signal, threading, time
        import numpy as np
        import fastrnn
        T, B, I, H = 40000, 2, 32, 128
        x = np.ones((T, B, I), np.float32)
        W_ih = np.full((4 * H, I), 0.01, np.float32)
        W_hh = np.full((4 * H, H), 0.01, np.float32)
        out = fastrnn.lstm_forward(x, None, None, W_ih, W_hh, backend="{backend}")
        d_out = np.ones_like(out[0])
        fastrnn.lstm_backward(d_out, None, None, out[-1])  # compiled (or loaded) first
        t0 = time.perf_counter()
        fastrnn.lstm_backward(d_out, None, None, out[-1])
        whole = time.perf_counter() - t0
        threading.Timer(whole / 4, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.perf_counter()
        try:
            fastrnn.lstm_backward(d_out, None, None, out[-1])
            print("finished", time.perf_counter() - t0, whole)
        except KeyboardInterrupt:
            print("interrupted", time.perf_counter() - t0, whole)
    """)
    assert seconds < whole / 4 + 0.5


@pytest.mark.parametrize("reverse", [False, True])
def test_numba_chunks_cover_every_step_once_in_order_and_stay_short(reverse):
    """in_chunks: the chunks tile 0 .. T-1 exactly, in the pass's order, and
    once a rate is measured each takes about CHUNK_SECONDS (here a step
    takes 20 us; the first chunk's size comes from the flop count)."""
    pytest.importorskip("numba")
    import numpy as np

    from fastrnn.kernels import _numba_util as U
    T, B, H, GH = 20000, 1, 8, 100000  # 1.2 MFLOP a step: a first chunk of 83 steps
    x2d, W_hh, out = np.empty((0, 4)), np.empty((GH, 0)), np.empty((T, B, H))
    chunks, took = [], []

    def run(t0, t1):
        start = time.perf_counter()
        while time.perf_counter() - start < 20e-6 * (t1 - t0):
            pass
        chunks.append((t0, t1))
        took.append(time.perf_counter() - start)

    U.in_chunks(run, x2d, W_hh, out, reverse=reverse)
    in_time_order = chunks[::-1] if reverse else chunks
    assert [t for t0, t1 in in_time_order for t in range(t0, t1)] == list(range(T))
    assert len(chunks) > 4, chunks
    # after the first: about CHUNK_SECONDS each (at most 4x the chunk before)
    assert max(took[1:-1]) < 4 * U.CHUNK_SECONDS, took
    # a call whose steps fit the first chunk is one call
    chunks.clear()
    U.in_chunks(run, x2d, W_hh, out[:40], reverse=reverse)
    assert chunks == [(0, 40)]


@pytest.mark.parametrize("pass_", ["forward", "backward"])
@pytest.mark.parametrize("backend", FAST)
def test_ctrl_c_interrupts_the_gru_that_resets_before(backend, pass_):
    """reset_after=False runs its own loops in the Cython backend (rows
    shared between threads, signals looked for between regions of steps)."""
    backend_or_skip(backend)
    seconds, whole = interrupted_after(f"""
        import os, signal, threading, time
        import numpy as np
        import fastrnn
        T, B, I, H = 20000, 4, 64, 256
        x = np.ones((T, B, I), np.float32)
        W_ih = np.full((3 * H, I), 0.01, np.float32)
        W_hh = np.full((3 * H, H), 0.01, np.float32)
        def forward():
            return fastrnn.gru_forward(x, None, W_ih, W_hh, reset_after=False,
                                       backend="{backend}")
        run = forward
        if "{pass_}" == "backward":
            out, _, cache = forward()
            d_out = np.ones_like(out)
            run = lambda: fastrnn.gru_backward(d_out, None, cache)
        run()  # the first call also faults in its fresh memory
        t0 = time.perf_counter()
        run()
        whole = time.perf_counter() - t0
        threading.Timer(whole / 4, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.perf_counter()
        try:
            run()
            print("finished", time.perf_counter() - t0, whole)
        except KeyboardInterrupt:
            print("interrupted", time.perf_counter() - t0, whole)
    """)
    assert seconds < whole / 4 + 0.5
