"""Are the PD intervals of irrepro.uncertainty calibrated on real training? Measured, not assumed.

    python bench/calibration.py [--seeds 240] [--passes 8] [--group-sizes 5 10] [--device cpu]

Trains `--seeds` seeds of each configuration below as one replica job (nothing is logged) and
takes the PD of all of them as the truth. It then splits the seeds into disjoint groups of R
and prints, per configuration and R: the groups, how many of their 95% intervals cover the
truth (over seeds and examples, `Sample.interval`; over the examples alone,
`Sample.examples_interval`), the median width of each and the range of the group PDs; then
the coverage pooled over configurations. The truth shares the test set with every group, so
coverage is judged conditional on that test set; it is itself an estimate (its own interval
is printed), and each group's seeds are R of the seeds it is computed from.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from omegaconf import OmegaConf

from irrepro import uncertainty
from irrepro.config import to_config
from irrepro.data import make_dataset
from irrepro.training import train_replicas

TWO_UNITS = {"name": "two_units", "depth": 1, "width": 2}
MLP = {"name": "mlp", "depth": 2, "width": 16}
# name, model, randomness (the window as in conf/randomness/<name>.yaml)
CONFIGS = [
    ("two_units init", TWO_UNITS, {"name": "init", "window": 1}),
    ("two_units shuffle", TWO_UNITS, {"name": "shuffle", "window": 1024}),
    ("mlp(2x16) all", MLP, {"name": "all", "window": 1024}),
]
KINDS = ("seeds+examples", "examples only")


def predictions(model, randomness, seeds, passes, device) -> np.ndarray:
    """Test predictions [seeds, N] of one replica job on the default linear data."""
    config = to_config(OmegaConf.create({
        "model": model, "randomness": randomness,
        "train": {"passes": passes, "device": device, "progress": False}}))
    results = train_replicas(config, list(range(seeds)), make_dataset(config.data))
    failed = [r.seed for r in results if r.failure]
    if failed:
        raise RuntimeError(f"seeds {failed} failed: {results[failed[0]].failure}")
    return np.stack([r.predictions for r in results])


def pd_sample(P: np.ndarray) -> uncertainty.Sample:
    return uncertainty.sample(uncertainty.pair_values(P, "pd"))


def groups(P: np.ndarray, truth: float, R: int) -> dict:
    """Per disjoint group of R seeds: its PD, whether each interval covers the truth, and
    each interval's width."""
    rows = []
    for start in range(0, P.shape[0] - R + 1, R):
        group = pd_sample(P[start : start + R])
        intervals = (group.interval(), group.examples_interval())
        rows.append((group.estimate, *(low <= truth <= high for low, high in intervals),
                     *(high - low for low, high in intervals)))
    estimate, *rest = np.array(rows, dtype=np.float64).T
    return {"estimate": estimate, "covers": rest[:2], "widths": rest[2:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=240)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"{args.seeds} seeds per config, train.passes={args.passes}, data=linear (defaults), "
          f"95% intervals")
    print("truth = PD of all seeds on the same test set: coverage is conditional on that test "
          "set, and the truth has its own seed error (interval shown)\n")
    found = {}
    for name, model, randomness in CONFIGS:
        started = time.perf_counter()
        P = predictions(model, randomness, args.seeds, args.passes, args.device)
        everyone = pd_sample(P)
        low, high = everyone.interval()
        print(f"{name}: trained {args.seeds} seeds in {time.perf_counter() - started:.1f} s, "
              f"truth PD {everyone.estimate:.5f} [{low:.5f}, {high:.5f}] "
              f"on {P.shape[1]} test examples", flush=True)
        for R in args.group_sizes:
            found[name, R] = groups(P, everyone.estimate, R)

    print(f"\n{'config':<18} {'R':>3} {'groups':>6} {'covered':>8} {'covered':>8} "
          f"{'width':>8} {'width':>8}  group PD range")
    print(f"{'':<18} {'':>3} {'':>6} {'seed+ex':>8} {'ex only':>8} {'seed+ex':>8} "
          f"{'ex only':>8}")
    for (name, R), g in found.items():
        n = g["estimate"].size
        covered = [f"{int(c.sum())}/{n}" for c in g["covers"]]
        widths = [f"{np.median(w):.5f}" for w in g["widths"]]
        print(f"{name:<18} {R:>3} {n:>6} {covered[0]:>8} {covered[1]:>8} {widths[0]:>8} "
              f"{widths[1]:>8}  {g['estimate'].min():.5f}-{g['estimate'].max():.5f}")

    print("\npooled over configs")
    for R in args.group_sizes:
        covers = np.concatenate([g["covers"] for (_, r), g in found.items() if r == R], axis=1)
        cells = ", ".join(f"{kind} {int(c.sum())}/{c.size} = {c.mean():.2f}"
                          for kind, c in zip(KINDS, covers, strict=True))
        print(f"R={R:<3} {cells}")


if __name__ == "__main__":
    main()
