"""fastrnn's bf16 compute over its own float32 at every instruction-set level
this machine runs, for docs/precision.md's "Speed, by instruction-set level".

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/bf16_levels.py [ROUNDS]

Every cell at (B, H), T = (16, 256), 256; (64, 1024), 32; (1, 64), 1024 (I = H),
inference and training (forward + backward), at fastrnn's default thread
count.  For each row the calls are interleaved, one round visiting every level
in both precisions, and each keeps its best of ROUNDS (7) rounds; the table
gives float32's time over bf16's at each level (above 1: bf16 faster).
"""
import sys
import time

import numpy as np

import fastrnn

SHAPES = [(16, 256, 256), (64, 1024, 32), (1, 64, 1024)]
CELLS = {"lstm": ("LSTM", 4, 2), "gru": ("GRU", 3, 1), "rnn": ("Elman", 1, 1)}


def calls(cell, B, H, T):
    """{pass: f(compute_dtype)} for one problem."""
    _, G, states = CELLS[cell]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    bound = 1 / np.sqrt(H)
    W = [rng.uniform(-bound, bound, s).astype(np.float32)
         for s in [(G * H, H), (G * H, H), (G * H,), (G * H,)]]
    forward = getattr(fastrnn, cell + "_forward")
    backward = getattr(fastrnn, cell + "_backward")
    none = [None] * states

    def inference(dtype):
        forward(x, *none, *W, compute_dtype=dtype, training=False)

    def training(dtype):
        res = forward(x, *none, *W, compute_dtype=dtype)
        backward(np.ones_like(res[0]), *none, res[-1])

    return {"inference": inference, "training": training}


def main(rounds):
    levels = fastrnn.cpu_isa_levels()[::-1]  # the best first
    print(f"levels: {', '.join(levels)}; {fastrnn.get_num_threads()} threads; best of {rounds}")
    print("\n| cell | (B, H), T | pass | " + " | ".join(f"`{lv}`" for lv in levels) + " |")
    print("|---|---|---|" + "---|" * len(levels))
    start = fastrnn.get_isa_level()
    try:
        for cell, (name, _, _) in CELLS.items():
            for B, H, T in SHAPES:
                for what, f in calls(cell, B, H, T).items():
                    best = {}
                    for _ in range(rounds):
                        for level in levels:
                            fastrnn.set_isa_level(level)
                            for dtype in ("float32", "bfloat16"):
                                t = time.perf_counter()
                                f(dtype)
                                t = time.perf_counter() - t
                                best[level, dtype] = min(best.get((level, dtype), t), t)
                    ratios = [best[lv, "float32"] / best[lv, "bfloat16"] for lv in levels]
                    print(f"| {name} | ({B}, {H}), {T} | {what} | "
                          + " | ".join(f"{r:.2f}x" for r in ratios) + " |", flush=True)
    finally:
        fastrnn.set_isa_level(start)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
