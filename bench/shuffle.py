"""Time the vectorized shuffle buffer on 1e6 indices against a step-by-step buffer.

    python bench/shuffle.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from irrepro.shuffle import shuffle_order, shuffle_order_stepwise


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
        slow = shuffle_order_stepwise(n, window, np.random.default_rng(0))
        loop = time.perf_counter() - start
        assert np.array_equal(fast, slow)
        print(f"n={n} window={window:>7}: vectorized {vectorized * 1e3:7.1f} ms, "
              f"step-by-step {loop * 1e3:7.1f} ms, {loop / vectorized:5.1f}x")


if __name__ == "__main__":
    main()
