"""Tests for irrepro.metrics against naive direct computations and hand-computed cases."""

import itertools
import math

import numpy as np
import pytest

from irrepro import metrics


@pytest.fixture
def P():
    """Small [7, 50] float32 prediction matrix with ties, exact 0.5 values and zeros."""
    rng = np.random.default_rng(123)
    P = rng.random((7, 50)).astype(np.float32)
    P[:, :5] = 0.5
    P[2, 10:20] = P[3, 10:20]
    P[1:4, 20:25] = 0.5
    P[:, 25] = 0.0
    P[0, 26] = 0.0
    P[4, 27:30] = P[5, 27:30] = 0.25
    return P


def _pairs(R):
    return list(itertools.combinations(range(R), 2))


def _naive_per_example_pd(P):
    Q = P.astype(np.float64)
    return np.array(
        [np.mean([abs(Q[i, n] - Q[j, n]) for i, j in _pairs(len(Q))]) for n in range(Q.shape[1])]
    )


def _naive_auc(p, y):
    pos, neg = p[y == 1], p[y == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_pd_l1_matches_naive(P):
    expected = _naive_per_example_pd(P).mean()
    assert metrics.pd_l1(P) == pytest.approx(expected, abs=1e-12)
    assert metrics.pd_l1_naive(P) == pytest.approx(expected, abs=1e-12)
    assert isinstance(metrics.pd_l1(P), float)


def test_per_example_pd_matches_naive(P):
    result = metrics.per_example_pd(P)
    assert result.shape == (50,)
    np.testing.assert_allclose(result, _naive_per_example_pd(P), rtol=0, atol=1e-12)
    assert result[0] == 0.0


def test_pd_l2_matches_naive(P):
    Q = P.astype(np.float64)
    squares = [(Q[i] - Q[j]) ** 2 for i, j in _pairs(7)]
    assert metrics.pd_l2(P) == pytest.approx(math.sqrt(np.mean(squares)), abs=1e-12)


def test_pd_l2_identical_runs_is_zero():
    assert metrics.pd_l2(np.full((5, 3), 0.1, dtype=np.float32)) == pytest.approx(0.0, abs=1e-12)


def test_pd_relative_matches_naive(P):
    Q = P.astype(np.float64)
    values = []
    for i, j in _pairs(7):
        for a, b in zip(Q[i], Q[j], strict=True):
            values.append(0.0 if a + b == 0 else abs(a - b) / ((a + b) / 2))
    expected = np.mean(values)
    assert metrics.pd_relative(P) == pytest.approx(expected, abs=1e-12)
    # one pair per chunk, and chunks that do not divide the 21 pairs evenly
    assert metrics.pd_relative(P, chunk_elements=1) == pytest.approx(expected, abs=1e-12)
    assert metrics.pd_relative(P, chunk_elements=200) == pytest.approx(expected, abs=1e-12)


def test_pd_relative_zero_pair_and_one_sided_zero():
    P = np.array([[0.0, 0.0], [0.0, 0.4]])
    assert metrics.pd_relative(P) == pytest.approx((0.0 + 2.0) / 2)


def test_pd_relative_weighs_a_difference_by_the_pair_mean_probability():
    P = np.array([[0.1, 0.8], [0.2, 0.9]])  # the same difference, low and high probability
    assert metrics.pd_relative(P) == pytest.approx((0.1 / 0.15 + 0.1 / 0.85) / 2)
    # C classes: between 0 and C, reached when no class has probability in both runs
    assert metrics.pd_relative(np.array([[[1.0, 0.0, 0.0]], [[0.0, 0.5, 0.5]]])) == 3.0


def test_the_label_frequencies_log_loss_is_that_of_predicting_them():
    y = np.array([0, 1, 1, 1], dtype=np.float32)
    assert metrics.frequency_log_loss(y) == pytest.approx(metrics.log_loss(np.full(4, 0.75), y))
    classes = np.array([0, 2, 2, 1, 2, 0])
    predicted = np.tile(np.bincount(classes) / classes.size, (classes.size, 1))
    assert metrics.frequency_log_loss(classes) == pytest.approx(metrics.log_loss(predicted,
                                                                                 classes))
    assert metrics.frequency_log_loss(np.ones(5)) == 0.0


def test_churn_matches_naive(P):
    labels = P >= 0.5
    expected = np.mean([labels[i] != labels[j] for i, j in _pairs(7)])
    assert metrics.churn(P) == pytest.approx(expected, abs=1e-12)
    assert 0 < metrics.churn(P) < 1


def test_churn_threshold_is_inclusive():
    assert metrics.churn(np.array([[0.5], [0.4999]])) == 1.0
    assert metrics.churn(np.array([[0.5], [0.7]])) == 0.0


def test_per_example_std_and_disagreement(P):
    Q = P.astype(np.float64)
    std = np.sqrt(((Q - Q.mean(axis=0)) ** 2).mean(axis=0))
    np.testing.assert_allclose(metrics.per_example_std(P), std, rtol=0, atol=1e-12)
    result = metrics.disagreement(P)
    assert set(result) == {"pd", "pd_relative", "pd_l2", "churn", "std_mean", "std_p50",
                           "std_p90", "std_p99"}
    assert all(isinstance(v, float) for v in result.values())
    assert result["pd"] == metrics.pd_l1(P)
    assert result["std_mean"] == pytest.approx(std.mean(), abs=1e-12)
    sorted_std = np.sort(std)
    assert result["std_p50"] == pytest.approx(np.median(std), abs=1e-12)
    assert sorted_std[0] <= result["std_p50"] <= result["std_p90"] <= result["std_p99"]
    assert result["std_p99"] <= sorted_std[-1]


@pytest.mark.parametrize(
    "fn",
    [
        metrics.pd_l1,
        metrics.pd_l1_naive,
        metrics.pd_l2,
        metrics.pd_relative,
        metrics.churn,
        metrics.per_example_pd,
        metrics.per_example_std,
        metrics.disagreement,
    ],
)
def test_fewer_than_two_runs_raises(fn):
    with pytest.raises(ValueError, match="R >= 2"):
        fn(np.full((1, 10), 0.3))
    with pytest.raises(ValueError):
        fn(np.full(10, 0.3))


def test_log_loss_hand_computed():
    expected = -(math.log(0.9) + math.log(0.8)) / 2
    assert metrics.log_loss(np.array([0.9, 0.2]), np.array([1, 0])) == pytest.approx(expected)
    clipped = metrics.log_loss(np.array([0.0, 1.0], dtype=np.float32), np.array([1, 0]))
    assert clipped == pytest.approx(-math.log(1e-7), rel=1e-9)
    assert metrics.log_loss(np.array([1.0, 0.0]), np.array([1, 0])) == pytest.approx(1e-7)


def test_accuracy_hand_computed():
    p = np.array([0.5, 0.49, 0.8, 0.1])
    assert metrics.accuracy(p, np.array([1, 1, 0, 0])) == 0.5
    assert metrics.accuracy(p, np.array([1, 0, 1, 0])) == 1.0


def test_auc_hand_computed_with_ties():
    p = np.array([0.1, 0.4, 0.4, 0.8])
    assert metrics.auc(p, np.array([0, 0, 1, 1])) == pytest.approx(3.5 / 4)
    assert metrics.auc(np.full(4, 0.3), np.array([0, 1, 0, 1])) == pytest.approx(0.5)


def test_auc_perfect_and_reversed_ranking():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    assert metrics.auc(p, y) == 1.0
    assert metrics.auc(1 - p, y) == 0.0


def test_auc_matches_pair_counting():
    rng = np.random.default_rng(7)
    p = np.round(rng.random(200), 1)  # many ties
    y = (rng.random(200) < 0.4).astype(int)
    assert metrics.auc(p, y) == pytest.approx(_naive_auc(p, y), abs=1e-12)


def test_auc_one_class_raises():
    with pytest.raises(ValueError, match="both classes"):
        metrics.auc(np.array([0.2, 0.9]), np.array([1, 1]))


@pytest.mark.parametrize("p, y", [
    (np.array([0.2, 0.9, 0.6]), np.ones(3)),
    (np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]), np.array([2, 2])),
])
def test_a_run_on_a_test_set_of_one_class_has_no_auc_and_its_other_metrics(p, y):
    result = metrics.run_metrics(p, y)
    assert math.isnan(result["auc"])
    assert result["log_loss"] == pytest.approx(metrics.log_loss(p, y)) and result["accuracy"] > 0


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="equal length"):
        metrics.log_loss(np.array([0.2, 0.9]), np.array([1, 0, 1]))


def test_run_metrics():
    p = np.array([0.9, 0.2, 0.6, 0.4])
    p_star = np.array([0.95, 0.1, 0.7, 0.3])
    y = np.array([1, 0, 1, 0])
    result = metrics.run_metrics(p, y, p_star)
    assert set(result) == {"log_loss", "teacher_log_loss", "excess_log_loss", "accuracy", "auc"}
    assert all(isinstance(v, float) for v in result.values())
    assert result["excess_log_loss"] == pytest.approx(
        metrics.log_loss(p, y) - metrics.log_loss(p_star, y)
    )
    assert result["excess_log_loss"] > 0
    assert result["accuracy"] == 1.0 and result["auc"] == 1.0


def test_ensembles_k1_equals_runs(P):
    y = (np.random.default_rng(1).random(50) < 0.5).astype(int)
    results = metrics.ensemble_disagreement(P, y)
    assert [r["k"] for r in results] == [1, 2]
    assert results[0]["n_ensembles"] == 7
    assert results[0]["pd"] == pytest.approx(metrics.pd_l1(P), abs=1e-12)
    assert results[0]["accuracy"] == pytest.approx(np.mean([metrics.accuracy(p, y) for p in P]))
    assert results[0]["log_loss"] == pytest.approx(np.mean([metrics.log_loss(p, y) for p in P]))


def test_ensembles_group_consecutive_runs(P):
    y = np.zeros(50)
    (result,) = metrics.ensemble_disagreement(P, y, sizes=[3])
    Q = P.astype(np.float64)
    E = np.stack([Q[0:3].mean(axis=0), Q[3:6].mean(axis=0)])
    assert result["n_ensembles"] == 2
    assert result["pd"] == pytest.approx(metrics.pd_l1_naive(E), abs=1e-12)
    assert result["log_loss"] == pytest.approx(np.mean([metrics.log_loss(e, y) for e in E]))


def test_ensembles_reduce_disagreement():
    rng = np.random.default_rng(3)
    P = np.clip(0.5 + 0.2 * rng.standard_normal((16, 400)), 0, 1)
    pds = [r["pd"] for r in metrics.ensemble_disagreement(P, np.ones(400))]
    assert len(pds) == 4
    assert np.all(np.diff(pds) < 0)


def test_ensembles_too_large_raises(P):
    with pytest.raises(ValueError, match="at least 2 ensembles"):
        metrics.ensemble_disagreement(P, np.zeros(50), sizes=[4])

