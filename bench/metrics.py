"""Benchmark pd_l1 (sorting trick) against the all-pairs reference, and disagreement() overall.

Run as ``python bench/metrics.py [--runs 200] [--examples 10000]`` from the repository root.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from irrepro.metrics import disagreement, pd_l1, pd_l1_naive  # noqa: E402


def timed(fn, *args, repeat=1):
    """Return (result, best seconds) of repeat calls fn(*args)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def main() -> None:
    """Time the metrics on random predictions and check the two pd_l1 versions agree."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--examples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="report the best of this many")
    args = parser.parse_args()

    P = np.random.default_rng(args.seed).random((args.runs, args.examples), dtype=np.float32)
    fast, t_fast = timed(pd_l1, P, repeat=args.repeat)
    naive, t_naive = timed(pd_l1_naive, P, repeat=args.repeat)
    if abs(fast - naive) > 1e-9 * abs(naive):
        raise SystemExit(f"pd_l1 mismatch: fast={fast!r} naive={naive!r}")
    print(
        f"R={args.runs} N={args.examples} pd_l1={fast:.10f} fast={t_fast:.4f}s "
        f"naive={t_naive:.4f}s ratio(naive/fast)={t_naive / t_fast:.1f}x"
    )
    _, t_all = timed(disagreement, P, repeat=args.repeat)
    print(f"disagreement(P) total={t_all:.4f}s")


if __name__ == "__main__":
    main()
