"""Intervals over seeds and test examples, comparisons between groups, and the seeds needed.

A group's PD is a mean over pairs of its R seeds and over its N test examples, and both are
samples: the seeds of the training procedure, the examples of the data distribution. Its
variance has two parts, estimated separately and added:

- the seeds: a jackknife over seeds (leave one seed out, recompute on the same examples),
  which also holds the seed-by-example interaction;
- the examples: the variance of the examples' main effect, E[d | x], estimated without bias
  from products of terms on the same and on different examples that share no seed (so the
  interaction, already in the jackknife, is not counted twice). With R = 3 no two pairs of
  seeds are disjoint, and the examples' whole variance is used instead (conservative).

The interval is log-symmetric for the disagreement statistics (they are positive and scale
like a spread), estimate * exp(+- t se / estimate), and symmetric for run metrics, with t
from Satterthwaite's degrees of freedom of the two parts (R - 1 and N - 1). A pair statistic
needs R >= 3 seeds, a per-run metric R >= 2. Comparisons of two groups trained on the same
seeds jackknife the seeds jointly (the multi-bootstrap idea); groups of different seeds add
their variances, less the covariance of the test examples they share.
tests/test_uncertainty.py shows the coverage on a population whose PD is known.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from irrepro.metrics import as_runs

LEVEL = 0.95
# Examples per chunk of [examples, R, R] pair values: about this many values at a time.
CHUNK_VALUES = 2**18
PAIR_STATISTICS = ("pd", "pd_relative", "pd_l2", "churn")
# The seeds a seed-level interval needs: a pair statistic, a per-run one.
MIN_SEEDS = {True: 3, False: 2}
# The half-width, relative to the estimate, that seeds_needed aims at.
TARGET = 0.10


def pair_values(P: np.ndarray, statistic: str) -> Iterator[np.ndarray]:
    """Per-example disagreement of every ordered pair of runs of P ([R, N] binary, [R, N, C];
    two classes are binary),
    as chunks [n, R, R] over the examples, zero on the diagonal: |p_i - p_j| ("pd"; the total
    variation for C classes), its relative form ("pd_relative"), the squared difference
    ("pd_l2": its mean is the square of L2 PD) or different predicted labels ("churn")."""
    if statistic not in PAIR_STATISTICS:
        raise ValueError(f"unknown pair statistic {statistic!r}; one of {PAIR_STATISTICS}")
    P = as_runs(P)
    R, N = P.shape[:2]
    step = max(1, CHUNK_VALUES // (R * R * P[0, 0].size))
    for start in range(0, N, step):
        chunk = np.ascontiguousarray(np.moveaxis(P[:, start : start + step], 0, 1),
                                     dtype=np.float64)  # [n, R, ...]
        if statistic == "churn":
            labels = chunk >= 0.5 if chunk.ndim == 2 else chunk.argmax(axis=2)
            yield (labels[:, :, None] != labels[:, None, :]).astype(np.float64)
            continue
        a, b = chunk[:, :, None], chunk[:, None, :]
        diff = a - b
        if statistic == "pd":
            values = np.abs(diff)
        elif statistic == "pd_l2":
            values = diff * diff
        else:
            total = a + b
            values = np.divide(2 * np.abs(diff), total, out=np.zeros_like(diff), where=total > 0)
        yield values if chunk.ndim == 2 else values.sum(axis=3) / 2


def run_values(values: np.ndarray) -> Iterator[np.ndarray]:
    """Per-run, per-example values [R, N] (a loss, a correct label) as one chunk [N, R]."""
    yield np.asarray(values, dtype=np.float64).T


@dataclass(frozen=True)
class Spread:
    """A variance estimate with its degrees of freedom."""

    variance: float
    dof: float

    @classmethod
    def of_parts(cls, *parts: tuple[float, float]) -> Spread:
        """The sum of (variance, dof) parts, with Satterthwaite's degrees of freedom."""
        total = float(sum(v for v, _ in parts))
        denominator = sum(v * v / d for v, d in parts if v > 0)
        return cls(total, total * total / denominator if denominator > 0 else np.inf)

    @property
    def se(self) -> float:
        return float(np.sqrt(self.variance))

    def quantile(self, level: float = LEVEL) -> float:
        """The two-sided t quantile at this level and these degrees of freedom."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        return float(special.stdtrit(self.dof, (1 + level) / 2)) if self.dof > 0 else np.nan

    def interval(self, estimate: float, level: float = LEVEL, log: bool = False
                 ) -> tuple[float, float]:
        """estimate +- t se, or estimate * exp(+- t se / estimate) on the log scale (0 for an
        estimate of 0 with no spread); NaN where the variance is unknown."""
        if not np.isfinite(self.variance):
            return np.nan, np.nan
        reach = self.quantile(level) * self.se
        if not log:
            return estimate - reach, estimate + reach
        if estimate <= 0:
            return (0.0, 0.0) if reach == 0 else (0.0, np.inf)
        factor = np.exp(reach / estimate)
        return estimate / factor, estimate * factor

    def p_value(self, estimate: float) -> float:
        """Two-sided p-value of the hypothesis that the estimated quantity is 0."""
        if not np.isfinite(self.variance):
            return np.nan
        if self.variance == 0:
            return 0.0 if estimate != 0 else 1.0
        return float(2 * special.stdtr(self.dof, -abs(estimate) / self.se))


@dataclass(frozen=True)
class Sample:
    """What the intervals need of one statistic of one group: its R x R seed-pair means over
    the examples (pairs) or R per-run means, its N per-example means, and the example
    products of terms on the same example that share no seed (see `_disjoint`)."""

    seed_means: np.ndarray
    example_means: np.ndarray
    disjoint_same: float
    pairs: bool

    @property
    def n_seeds(self) -> int:
        return self.seed_means.shape[0]

    @property
    def n_examples(self) -> int:
        return self.example_means.size

    @property
    def estimate(self) -> float:
        return float(self.example_means.mean())

    @property
    def leave_one_out(self) -> np.ndarray:
        """The estimate without each seed, on the same examples, [R]."""
        return _leave_one_out(self.seed_means, self.pairs)

    def examples_spread(self) -> Spread:
        """The variance over test examples alone, the seeds held fixed: what resampling the
        examples of these runs measures."""
        return Spread(float(np.var(self.example_means, ddof=1)) / self.n_examples,
                      self.n_examples - 1)

    def main_effect_variance(self) -> float:
        """The variance from the examples' main effect, without the seed-by-example
        interaction: unbiased from terms that share no seed where the group has them."""
        if self.pairs and self.n_seeds < 4:
            return self.examples_spread().variance
        return max(_main_effect(self.disjoint_same, self.seed_means, self.seed_means,
                                self.n_examples, self.pairs), 0.0)

    def seeds_variance(self) -> float:
        return _jackknife(self.leave_one_out)

    def spread(self) -> Spread:
        """The variance over seeds and examples; NaN with too few seeds."""
        if self.n_seeds < MIN_SEEDS[self.pairs] or self.n_examples < 2:
            return Spread(np.nan, np.nan)
        return Spread.of_parts((self.seeds_variance(), self.n_seeds - 1),
                               (self.main_effect_variance(), self.n_examples - 1))

    def interval(self, level: float = LEVEL, log: bool | None = None) -> tuple[float, float]:
        """The interval over seeds and examples (log-symmetric for pair statistics)."""
        return self.spread().interval(self.estimate, level, self.pairs if log is None else log)

    def examples_interval(self, level: float = LEVEL, log: bool | None = None
                          ) -> tuple[float, float]:
        """The interval over test examples alone."""
        return self.examples_spread().interval(self.estimate, level,
                                               self.pairs if log is None else log)

    def seeds_needed(self, target: float = TARGET, level: float = LEVEL) -> float:
        """Seeds at which the interval's half-width would be `target` of the estimate: the
        seeds' variance scaled as 1 / R, the examples' held; inf where the test examples
        alone exceed it, NaN where unknown or the estimate is 0."""
        spread = self.spread()
        if not np.isfinite(spread.variance) or self.estimate == 0:
            return np.nan
        allowed = (target * abs(self.estimate) / stats.norm.ppf((1 + level) / 2)) ** 2
        room = allowed - self.main_effect_variance()
        if room <= 0:
            return np.inf
        return float(max(MIN_SEEDS[self.pairs], np.ceil(self.n_seeds * self.seeds_variance()
                                                          / room)))


def _leave_one_out(seed_means: np.ndarray, pairs: bool) -> np.ndarray:
    R = seed_means.shape[0]
    if pairs:
        return (seed_means.sum() - 2 * seed_means.sum(axis=1)) / ((R - 1) * (R - 2))
    return (seed_means.sum() - seed_means) / (R - 1)


def _jackknife(values: np.ndarray) -> float:
    """The jackknife variance from leave-one-out values."""
    R = values.size
    return float((R - 1) / R * np.sum((values - values.mean()) ** 2))


def _disjoint(X: np.ndarray, Y: np.ndarray, pairs: bool) -> float:
    """The sum of X_t Y_t' over ordered term pairs (t, t') that share no seed, summed over the
    leading axis, for [n, R] per-run values or [n, R, R] pair values with zero diagonals."""
    if pairs:
        rows_x = X.sum(axis=2)
        rows_y = rows_x if Y is X else Y.sum(axis=2)
        totals = np.dot(rows_x.sum(axis=1), rows_y.sum(axis=1))
        return float(totals - 4 * np.vdot(rows_x, rows_y) + 2 * np.vdot(X, Y))
    return float(np.dot(X.sum(axis=1), Y.sum(axis=1)) - np.vdot(X, Y))


def _disjoint_count(R: int, pairs: bool) -> int:
    return R * (R - 1) * (R - 2) * (R - 3) if pairs else R * (R - 1)


def _main_effect(same: float, sums_x: np.ndarray, sums_y: np.ndarray, N: int,
                 pairs: bool) -> float:
    """Cov(E[x | example], E[y | example]) / N, from `same`, the disjoint-seed products on the
    same examples, and the seed means: mean products on the same example less those on
    different examples (both unbiased)."""
    count = _disjoint_count(sums_x.shape[0], pairs)
    if count == 0 or N < 2:
        return np.nan
    any_example = _disjoint(sums_x[None] * N, sums_y[None] * N, pairs)
    same_mean = same / (count * N)
    other_mean = (any_example - same) / (count * N * (N - 1))
    return float(same_mean - other_mean) / N


def sample(chunks: Iterable[np.ndarray], pairs: bool = True) -> Sample:
    """The Sample of a statistic from its chunks over the examples: [n, R, R] pair values
    (pairs) or [n, R] per-run values."""
    same, sums, means = 0.0, 0.0, []
    for X in chunks:
        same += _disjoint(X, X, pairs)
        sums = sums + X.sum(axis=0)
        R = X.shape[1]
        means.append(X.reshape(len(X), -1).sum(axis=1) / (R * (R - 1) if pairs else R))
    means = np.concatenate(means)
    return Sample(sums / means.size, means, same, pairs)


def cross_products(A: Iterable[np.ndarray], B: Iterable[np.ndarray], pairs: bool = True
                   ) -> float:
    """The products of terms of two statistics on the same seeds and examples that share no
    seed, on the same examples (what `compare` needs of paired groups), from their chunks."""
    return sum(_disjoint(X, Y, pairs) for X, Y in zip(A, B, strict=True))


@dataclass(frozen=True)
class Comparison:
    """Two groups' statistic compared: ratio a / b and difference a - b, each with its
    interval, and the two-sided p-value of equal values."""

    a: float
    b: float
    ratio: float
    ratio_low: float
    ratio_high: float
    difference: float
    difference_low: float
    difference_high: float
    p_value: float
    paired: bool


def compare(a: Sample, b: Sample, *, paired: bool, cross_same: float | None = None,
            shared_examples: bool = True, level: float = LEVEL) -> Comparison:
    """Compare statistic a with b. Paired (the same seeds, in the same order, on the same
    examples; `cross_same` their `cross_products`): the seeds are
    left out jointly. Unpaired: the variances add, less the covariance of the examples'
    means where both groups were tested on the same examples.

    The p-value tests log(a / b) = 0 and the ratio's interval is log-symmetric, so 1 lies
    in the interval exactly when p >= 1 - level; where a or b is 0 both come from the
    difference instead.
    """
    if min(a.n_seeds, b.n_seeds) < MIN_SEEDS[a.pairs]:
        raise ValueError("a comparison needs at least "
                         f"{MIN_SEEDS[a.pairs]} seeds in each group")
    N = a.n_examples
    if paired:
        if a.n_seeds != b.n_seeds or N != b.n_examples or cross_same is None:
            raise ValueError("paired groups need the same seeds and examples")
        if a.pairs and a.n_seeds < 4:
            cross = _example_covariance(a, b)
        else:
            cross = _main_effect(cross_same, a.seed_means, b.seed_means, N, a.pairs)
    else:
        cross = _example_covariance(a, b) if shared_examples and N == b.n_examples else 0.0
    main_a, main_b = a.main_effect_variance(), b.main_effect_variance()
    dof_examples = N - 1

    def spread(weight_a: float, weight_b: float, seeds_a: np.ndarray, seeds_b: np.ndarray
               ) -> Spread:
        examples = max(weight_a**2 * main_a + weight_b**2 * main_b
                       - 2 * weight_a * weight_b * cross, 0.0)
        if paired:
            return Spread.of_parts((_jackknife(seeds_a - seeds_b), a.n_seeds - 1),
                                   (examples, dof_examples))
        return Spread.of_parts((_jackknife(seeds_a), a.n_seeds - 1),
                               (_jackknife(seeds_b), b.n_seeds - 1), (examples, dof_examples))

    difference = a.estimate - b.estimate
    difference_spread = spread(1.0, 1.0, a.leave_one_out, b.leave_one_out)
    d_low, d_high = difference_spread.interval(difference, level)
    if a.estimate > 0 and b.estimate > 0:
        log_ratio = np.log(a.estimate / b.estimate)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_spread = spread(1 / a.estimate, 1 / b.estimate,
                                  np.log(a.leave_one_out), np.log(b.leave_one_out))
        low, high = ratio_spread.interval(log_ratio, level)
        ratio, ratio_low, ratio_high = np.exp([log_ratio, low, high])
        p_value = ratio_spread.p_value(log_ratio)
    else:
        ratio = a.estimate / b.estimate if b.estimate > 0 else np.inf if a.estimate else np.nan
        ratio_low = ratio_high = np.nan
        p_value = difference_spread.p_value(difference)
    return Comparison(a.estimate, b.estimate, float(ratio), float(ratio_low),
                      float(ratio_high), difference, d_low, d_high, p_value, paired)


def compare_runs(a: np.ndarray, b: np.ndarray, paired: bool) -> Comparison:
    """Compare the mean of a per-run, per-example value (a loss) of runs a [R, N] with runs
    b on the same examples: paired when row i of both is the same seed, else unpaired."""
    A, B = list(run_values(a)), list(run_values(b))
    return compare(sample(A, pairs=False), sample(B, pairs=False), paired=paired,
                   cross_same=cross_products(A, B, pairs=False) if paired else None)


def _example_covariance(a: Sample, b: Sample) -> float:
    """Covariance of the two groups' per-example means over N, for groups tested on the same
    examples whose seeds are independent (or too few to separate the interaction)."""
    return float(np.cov(a.example_means, b.example_means)[0, 1]) / a.n_examples


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of p-values (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    known = np.flatnonzero(np.isfinite(p))
    order = known[np.argsort(p[known], kind="stable")]
    m = order.size
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted
