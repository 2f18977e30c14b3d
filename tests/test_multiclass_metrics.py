"""Multiclass predictions [R, N, C]: disagreement against brute-force all-pairs references,
run metrics against scikit-learn, and two classes giving exactly the binary numbers."""

import itertools

import numpy as np
import pytest

from irrepro import metrics


@pytest.fixture
def P():
    """[6, 40, 4] float32 probabilities with repeated runs, zero classes and top-1 ties."""
    rng = np.random.default_rng(7)
    P = rng.dirichlet(np.full(4, 0.7), size=(6, 40)).astype(np.float32)
    P[1, :10] = P[0, :10]
    P[:, 10, :] = [0.5, 0.5, 0.0, 0.0]  # a two-way tie, and classes no run predicts
    P[:3, 11, 2:] = 0.0
    P[:3, 11, :2] = [0.25, 0.75]
    return P


@pytest.fixture
def y():
    return np.random.default_rng(8).integers(0, 4, 40)


def _pairs(R):
    return list(itertools.combinations(range(R), 2))


def _pair_values(P, per_pair):
    """[pairs, N] values of per_pair(p_i, p_j) over all run pairs, in float64."""
    Q = P.astype(np.float64)
    return np.array([per_pair(Q[i], Q[j]) for i, j in _pairs(len(Q))])


def _total_variation(a, b):
    return np.abs(a - b).sum(axis=-1) / 2


def _relative(a, b):
    terms = [abs(x - z) / ((x + z) / 2) if x + z > 0 else 0.0
             for x, z in zip(a.ravel(), b.ravel(), strict=True)]
    return np.array(terms).reshape(a.shape).sum(axis=-1) / 2


def test_pd_is_the_mean_total_variation_over_pairs(P):
    expected = _pair_values(P, _total_variation)
    np.testing.assert_allclose(metrics.per_example_pd(P), expected.mean(axis=0), atol=1e-12)
    assert metrics.pd_l1(P) == pytest.approx(expected.mean(), abs=1e-12)
    assert metrics.pd_l1_naive(P) == pytest.approx(expected.mean(), abs=1e-12)
    assert metrics.per_example_pd(P)[:10].min() > 0 and metrics.per_example_pd(P).shape == (40,)


def test_relative_and_l2_pd_match_their_pairwise_definitions(P):
    relative = _pair_values(P, _relative).mean()
    for chunk in (1, 50, metrics.CHUNK_ELEMENTS):  # chunks of one pair up to all pairs
        assert metrics.pd_relative(P, chunk_elements=chunk) == pytest.approx(relative, abs=1e-12)
    squares = _pair_values(P, lambda a, b: ((a - b) ** 2).sum(axis=-1) / 2)
    assert metrics.pd_l2(P) == pytest.approx(np.sqrt(squares.mean()), abs=1e-12)


def test_churn_is_top1_disagreement_and_std_averages_classes(P):
    labels = P.argmax(axis=2)
    expected = np.mean([labels[i] != labels[j] for i, j in _pairs(6)])
    assert metrics.churn(P) == pytest.approx(expected, abs=1e-12)
    assert labels[:, 10].tolist() == [0] * 6  # ties go to the lowest class
    std = np.array([[np.std(P[:, n, c].astype(np.float64)) for c in range(4)]
                    for n in range(40)]).mean(axis=1)
    np.testing.assert_allclose(metrics.per_example_std(P), std, atol=1e-12)
    summary = metrics.disagreement(P)
    assert summary["pd"] == metrics.pd_l1(P) and summary["churn"] == metrics.churn(P)
    assert summary["std_mean"] == pytest.approx(std.mean(), abs=1e-12)


def test_identical_runs_do_not_disagree(P):
    same = np.repeat(P[:1], 4, axis=0)
    assert all(value == 0 for value in metrics.disagreement(same).values())


def test_run_metrics_match_scikit_learn(P, y):
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.metrics import log_loss as sklearn_log_loss

    p = P[2].astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)  # float32 rows sum to 1 only within rounding
    result = metrics.run_metrics(p, y)
    assert set(result) == {"log_loss", "accuracy", "auc"}
    assert result["log_loss"] == pytest.approx(sklearn_log_loss(y, p), rel=1e-9)
    assert result["accuracy"] == accuracy_score(y, p.argmax(axis=1))
    assert result["auc"] == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    teacher = metrics.run_metrics(p, y, p_star=P[3])
    assert teacher["excess_log_loss"] == pytest.approx(
        result["log_loss"] - metrics.log_loss(P[3], y))


def test_auc_averages_the_classes_present(P, y):
    present = np.where(y == 3, 1, y)  # classes 0, 1 and 2 only: class 3 has no AUC
    present[:5] = 0
    expected = np.mean([metrics.auc(P[0, :, c], present == c) for c in (0, 1, 2)])
    assert metrics.auc(P[0], present) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="at least two classes"):
        metrics.auc(P[0], np.full(40, 2))


@pytest.mark.parametrize("labels, message", [(np.arange(40) % 5, "class indices 0..3"),
                                             (np.zeros(39, int), "equal N")])
def test_bad_labels_raise(P, labels, message):
    with pytest.raises(ValueError, match=message):
        metrics.log_loss(P[0], labels)


def test_a_stack_needs_two_runs_and_two_classes(P):
    for bad in (P[:1], P[..., :1]):
        with pytest.raises(ValueError, match=r"\[R, N, C\]"):
            metrics.pd_l1(bad)


def test_ensembles_take_multiclass_stacks(P, y):
    k1, k2 = metrics.ensemble_disagreement(P, y)
    assert (k1["k"], k2["k"], k2["n_ensembles"]) == (1, 2, 3)
    assert k1["pd"] == pytest.approx(metrics.pd_l1(P), abs=1e-12)
    pairs = P.astype(np.float64).reshape(3, 2, 40, 4).mean(axis=1)
    assert k2["pd"] == pytest.approx(metrics.pd_l1(pairs), abs=1e-12)
    assert k2["accuracy"] == pytest.approx(np.mean([metrics.accuracy(e, y) for e in pairs]))


def test_two_classes_give_exactly_the_binary_numbers():
    rng = np.random.default_rng(11)
    binary = rng.random((5, 30)).astype(np.float32)
    binary[:, 0] = 0.5
    two = np.stack([1 - binary, binary], axis=-1)
    labels = (rng.random(30) < 0.5).astype(np.int64)
    assert metrics.disagreement(two) == metrics.disagreement(binary)
    np.testing.assert_array_equal(metrics.per_example_pd(two), metrics.per_example_pd(binary))
    assert metrics.ensemble_disagreement(two, labels) == metrics.ensemble_disagreement(
        binary, labels)
    assert metrics.run_metrics(two[0], labels) == metrics.run_metrics(binary[0], labels)
    # and the total variation of the two columns is the binary PD
    tv = _pair_values(two, _total_variation).mean()
    assert tv == pytest.approx(metrics.pd_l1(binary), abs=1e-9)
