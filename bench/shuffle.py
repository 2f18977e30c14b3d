"""Time the vectorized shuffle buffer on 1e6 indices against a step-by-step buffer.

    python bench/shuffle.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from irrepro.shuffle import shuffle_order


def buffer_loop(n: int, window: int, rng: np.random.Generator) -> list[int]:
    """The buffer one element at a time, as a streaming shuffle is usually written."""
    buffer, order = list(range(window)), []
    for step, slot in enumerate(rng.integers(0, window, size=n - window).tolist()):
        order.append(buffer[slot])
        buffer[slot] = window + step
    return order + rng.permutation(buffer).tolist()


def timed(fn, n: int, window: int) -> float:
    start = time.perf_counter()
    fn(n, window, np.random.default_rng(0))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    n = parser.parse_args().n
    shuffle_order(n, 2, np.random.default_rng(0))  # warm-up: first-touch page faults
    for window in (2, 1024, 65536, n):
        vectorized = min(timed(shuffle_order, n, window) for _ in range(3))
        fast = shuffle_order(n, window, np.random.default_rng(0))
        start = time.perf_counter()
        slow = buffer_loop(n, window, np.random.default_rng(0))
        loop = time.perf_counter() - start
        assert np.array_equal(fast, slow)
        print(f"n={n} window={window:>7}: vectorized {vectorized * 1e3:7.1f} ms, "
              f"step-by-step {loop * 1e3:7.1f} ms, {loop / vectorized:5.1f}x")


if __name__ == "__main__":
    main()
