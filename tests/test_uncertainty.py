"""Intervals over seeds and examples, and comparisons, against a population whose truth is
known: predictions sigmoid(z_x + a_s + b_s h_x + e_sx) with example effects (z, h), a
seed-level random effect (a, b) and seed-by-example noise e."""

import numpy as np
import pytest

from irrepro import metrics, uncertainty

SEED_EFFECTS = {"seed_sd": 0.6, "slope_sd": 0.5, "noise_sd": 0.5}


def predictions(rng, R, N, seed_sd, slope_sd, noise_sd, examples=None, seeds=None):
    """R runs' predictions on N examples; `examples` and `seeds` reuse drawn effects."""
    z, h = examples if examples is not None else (rng.normal(0, 2, N), rng.normal(0, 1, N))
    a, b = seeds if seeds is not None else (rng.normal(0, 1, (R, 1)), rng.normal(0, 1, (R, 1)))
    logit = z + seed_sd * a + slope_sd * b * h + rng.normal(0, noise_sd, (R, N))
    return 1 / (1 + np.exp(-logit))


def true_pd(seed_sd, slope_sd, noise_sd, draws=2_000_000):
    """E|p_s(x) - p_t(x)| over independent seeds s, t and examples x, by simulation
    (standard error below 0.1% of the value)."""
    rng = np.random.default_rng(12345)
    examples = rng.normal(0, 2, draws), rng.normal(0, 1, draws)
    pair = predictions(rng, 2, draws, seed_sd, slope_sd, noise_sd, examples,
                       (rng.normal(0, 1, (2, draws)), rng.normal(0, 1, (2, draws))))
    return float(np.abs(pair[0] - pair[1]).mean())


def coverage(R, N, studies, truth, rng, population=SEED_EFFECTS):
    """Fraction of simulated studies whose interval (over seeds and examples, and over
    examples alone) covers the truth."""
    covered = np.zeros(2)
    for _ in range(studies):
        sample = uncertainty.sample(uncertainty.pair_values(predictions(rng, R, N, **population),
                                                            "pd"))
        for k, (low, high) in enumerate((sample.interval(), sample.examples_interval())):
            covered[k] += low <= truth <= high
    return covered / studies


@pytest.fixture(scope="module")
def truth():
    return true_pd(**SEED_EFFECTS)


@pytest.mark.parametrize("R", [3, 5, 10, 20])
@pytest.mark.parametrize("N", [200, 5000])
def test_interval_over_seeds_and_examples_covers_the_population_pd(R, N, truth):
    both, examples_only = coverage(R, N, 500, truth, np.random.default_rng(R * 7919 + N))
    if R >= 5:
        assert 0.92 <= both <= 0.98, both
    else:  # three seeds: the examples' whole variance stands in for their main effect
        assert 0.90 <= both <= 0.995, both
    assert examples_only < 0.9, examples_only  # the examples alone: far too narrow


def test_interval_covers_where_the_examples_dominate():
    population = {"seed_sd": 0.05, "slope_sd": 0.05, "noise_sd": 0.5}
    both, _ = coverage(10, 2000, 300, true_pd(**population), np.random.default_rng(3),
                       population)
    assert 0.92 <= both <= 0.98, both


def test_estimates_equal_the_metrics_and_a_run_metric_interval_covers():
    rng = np.random.default_rng(0)
    P = predictions(rng, 6, 300, **SEED_EFFECTS)
    for name, statistic in (("pd", metrics.pd_l1), ("pd_relative", metrics.pd_relative),
                            ("churn", metrics.churn)):
        assert uncertainty.sample(uncertainty.pair_values(P, name)).estimate == pytest.approx(
            statistic(P), rel=1e-12)
    l2 = uncertainty.sample(uncertainty.pair_values(P, "pd_l2")).estimate
    assert np.sqrt(l2) == pytest.approx(metrics.pd_l2(P), rel=1e-12)


def test_run_metric_interval_covers_the_population_accuracy():
    """Labels from the teacher sigmoid(z): a run's accuracy varies with its seed and with the
    test examples drawn."""
    rng = np.random.default_rng(2)
    draws = 2_000_000
    z, h = rng.normal(0, 2, draws), rng.normal(0, 1, draws)
    one = predictions(rng, 1, draws, **SEED_EFFECTS, examples=(z, h),
                      seeds=(rng.normal(0, 1, draws), rng.normal(0, 1, draws)))[0]
    truth = np.mean((one >= 0.5) == (rng.random(draws) < 1 / (1 + np.exp(-z))))
    covered = 0
    for _ in range(300):
        z, h = rng.normal(0, 2, 400), rng.normal(0, 1, 400)
        P = predictions(rng, 5, 400, **SEED_EFFECTS, examples=(z, h))
        correct = (P >= 0.5) == (rng.random(400) < 1 / (1 + np.exp(-z)))
        low, high = uncertainty.sample(uncertainty.run_values(correct), pairs=False).interval()
        covered += low <= truth <= high
    assert 0.92 <= covered / 300 <= 0.98, covered / 300


def test_too_few_seeds_give_no_interval_and_the_seeds_needed_shrink_with_the_variance():
    rng = np.random.default_rng(1)
    two = uncertainty.sample(uncertainty.pair_values(predictions(rng, 2, 100, **SEED_EFFECTS),
                                                     "pd"))
    assert np.isnan(two.interval()).all() and np.isfinite(two.examples_interval()).all()
    noisy = uncertainty.sample(uncertainty.pair_values(
        predictions(rng, 10, 2000, **SEED_EFFECTS), "pd"))
    calm = uncertainty.sample(uncertainty.pair_values(
        predictions(rng, 10, 2000, 0.05, 0.05, 0.5), "pd"))
    assert calm.seeds_needed() < noisy.seeds_needed() < np.inf
    # at the seeds it names, the projected half-width is within the target
    R = noisy.seeds_needed()
    variance = noisy.seeds_variance() * noisy.n_seeds / R + noisy.main_effect_variance()
    assert 1.96 * np.sqrt(variance) <= 0.1 * noisy.estimate
    identical = np.repeat(predictions(rng, 1, 50, **SEED_EFFECTS), 4, axis=0)
    zero = uncertainty.sample(uncertainty.pair_values(identical, "pd"))
    assert zero.interval() == (0.0, 0.0) and np.isnan(zero.seeds_needed())


def paired_arms(rng, R, N, scale_b=1.0):
    """Two arms on the same seeds and examples: the seed effects are shared, arm b's scaled."""
    examples = rng.normal(0, 2, N), rng.normal(0, 1, N)
    seeds = rng.normal(0, 1, (R, 1)), rng.normal(0, 1, (R, 1))
    a = predictions(rng, R, N, **SEED_EFFECTS, examples=examples, seeds=seeds)
    b = predictions(rng, R, N, *(scale_b * v for v in SEED_EFFECTS.values()), examples,
                    seeds)
    return a, b


def compare(a, b, paired):
    if paired:
        A, B = (list(uncertainty.pair_values(arm, "pd")) for arm in (a, b))
        return uncertainty.compare(uncertainty.sample(A), uncertainty.sample(B), paired=True,
                                   cross_same=uncertainty.cross_products(A, B))
    return uncertainty.compare(uncertainty.sample(uncertainty.pair_values(a, "pd")),
                               uncertainty.sample(uncertainty.pair_values(b, "pd")),
                               paired=False)


def alike_arms(rng, paired):
    """Two arms of 10 seeds on 500 shared test examples, drawn alike: paired arms share
    their seeds' effects, unpaired ones only the examples'."""
    if paired:
        return paired_arms(rng, 10, 500)
    examples = rng.normal(0, 2, 500), rng.normal(0, 1, 500)
    return tuple(predictions(rng, 10, 500, **SEED_EFFECTS, examples=examples)
                 for _ in range(2))


@pytest.mark.parametrize("paired", [True, False])
def test_equal_pd_gives_uniform_p_values(paired):
    rng = np.random.default_rng(11 + paired)
    p_values, inside = [], 0
    for _ in range(400):
        a, b = alike_arms(rng, paired)
        result = compare(a, b, paired)
        p_values.append(result.p_value)
        inside += result.ratio_low <= 1 <= result.ratio_high
        assert (result.ratio_low <= 1 <= result.ratio_high) == (result.p_value >= 0.05)
    p_values = np.array(p_values)
    assert 0.03 <= np.mean(p_values < 0.05) <= 0.07
    # uniform: each quarter of [0, 1] holds about a quarter of the p-values
    assert (np.abs(np.histogram(p_values, bins=4, range=(0, 1))[0] / 400 - 0.25) < 0.07).all()


@pytest.mark.parametrize("paired", [True, False])
def test_a_run_metric_difference_covers_the_truth_and_keeps_its_false_positive_rate(paired):
    # the mean log loss of two arms drawn alike (the truth: no difference), on the same test
    # examples and labels; paired arms share their seeds' effects
    rng = np.random.default_rng(21 + paired)
    inside = 0
    for _ in range(400):
        a, b = alike_arms(rng, paired)
        y = (rng.random(500) < 0.5).astype(np.float32)  # labels that favour neither arm
        losses = [np.stack([metrics.example_log_loss(p, y) for p in arm]) for arm in (a, b)]
        result = uncertainty.compare_runs(*losses, paired=paired)
        inside += result.difference_low <= 0 <= result.difference_high
    assert 0.92 <= inside / 400 <= 0.98


def test_pairing_by_seed_finds_a_twofold_pd_at_ten_seeds():
    rng = np.random.default_rng(5)
    found = {True: 0, False: 0}
    for _ in range(100):
        a, b = paired_arms(rng, 10, 1000, scale_b=0.5)
        for paired in (True, False):
            result = compare(a, b, paired)
            assert 1.6 < result.ratio < 2.6
            found[paired] += result.p_value < 0.05 and result.ratio_low > 1
    assert found[True] >= 95 and found[True] >= found[False]


def test_intervals_contain_the_estimate_narrow_with_examples_and_check_the_level():
    rng = np.random.default_rng(4)
    small, large = (uncertainty.sample(uncertainty.pair_values(
        predictions(rng, 10, N, 0.05, 0.05, 0.5), "pd")) for N in (200, 5000))
    for s in (small, large):
        low, high = s.examples_interval()
        assert low < s.estimate < high
    width = [np.diff(s.examples_interval())[0] for s in (small, large)]
    assert width[1] < 0.5 * width[0]
    narrow, wide = (large.spread().interval(large.estimate, level) for level in (0.5, 0.99))
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    with pytest.raises(ValueError, match="level"):
        large.interval(level=1.5)
    with pytest.raises(ValueError, match="unknown pair statistic"):
        next(uncertainty.pair_values(np.full((3, 4), 0.5), "kl"))


def test_multiclass_and_two_class_stacks():
    rng = np.random.default_rng(8)
    P = rng.dirichlet(np.ones(4), size=(6, 40))
    for name, statistic in (("pd", metrics.pd_l1), ("churn", metrics.churn),
                            ("pd_relative", metrics.pd_relative)):
        assert uncertainty.sample(uncertainty.pair_values(P, name)).estimate == pytest.approx(
            statistic(P), rel=1e-12)
    binary = rng.random((5, 30))
    two = np.stack([1 - binary, binary], axis=-1)
    for name in uncertainty.PAIR_STATISTICS:
        a, b = (uncertainty.sample(uncertainty.pair_values(Q, name)) for Q in (two, binary))
        assert a.interval() == pytest.approx(b.interval(), rel=1e-9)


def test_holm_adjustment():
    adjusted = uncertainty.holm(np.array([0.01, 0.04, np.nan, 0.03, 0.5]))
    np.testing.assert_allclose(adjusted[[0, 1, 3, 4]], [0.04, 0.09, 0.09, 0.5])
    assert np.isnan(adjusted[2])
