import numpy as np
import pytest

from irrepro.config import ACTIVATIONS, MODELS
from irrepro.data import make_dataset
from irrepro.training import build_model, train_replicas
from tests.conftest import make_config


def predictions(config, seeds):
    results = train_replicas(config, seeds, make_dataset(config.data))
    assert all(r.failure is None for r in results), [r.failure for r in results]
    return [r.predictions for r in results]


def test_with_every_source_fixed_runs_are_bit_identical(tiny):
    config = tiny(**{"randomness.name": "none", "randomness.window": 16})
    first, second = predictions(config, [0])[0], predictions(config, [1])[0]
    assert np.array_equal(first, second)


@pytest.mark.parametrize("mode", ["init", "shuffle", "all", "perturb"])
@pytest.mark.parametrize("model", ["two_units", "mlp"])
def test_each_random_source_makes_seeds_disagree(tiny, mode, model):
    config = tiny(**{"randomness.name": mode, "randomness.window": 64, "model.name": model})
    first, second = predictions(config, [0]), predictions(config, [1])
    assert not np.array_equal(first[0], second[0])


def test_perturb_moves_exactly_one_weight_by_one_ulp(tiny):
    fixed = build_model(tiny(**{"randomness.name": "none"}), [3])
    moved = build_model(tiny(**{"randomness.name": "perturb"}), [3])
    changed = []
    for name, tensor in fixed.params.items():
        other = moved.params[name]
        diff = (tensor != other).nonzero()
        for index in diff:
            a, b = tensor[tuple(index)].item(), other[tuple(index)].item()
            changed.append((a, b))
    assert len(changed) == 1
    a, b = np.float32(changed[0][0]), np.float32(changed[0][1])
    assert b in (np.nextafter(a, np.float32(np.inf)), np.nextafter(a, np.float32(-np.inf)))


def test_a_diverging_replica_fails_with_a_reason(tiny):
    config = tiny(**{"optimizer.lr": 1e12})
    results = train_replicas(config, [0, 1], make_dataset(config.data))
    assert all(r.predictions is None for r in results)
    assert all("diverged" in r.failure for r in results)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_and_predicts_probabilities(tiny, model):
    config = tiny(**{"model.name": model, "model.width": 4, "model.depth": 2,
                     "model.buckets": 4, "model.embedding_dim": 3})
    p = predictions(config, [0])[0]
    assert p.shape == (128,) and p.dtype == np.float32
    assert ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize("activation", ["relu", "smelu", "leaky_relu", "identity"])
@pytest.mark.parametrize("model", ["logistic", "two_units", "mlp", "embedding"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam"])
def test_replica_i_is_bit_identical_to_the_single_run_of_its_seed(
    tiny, model, optimizer, activation
):
    config = tiny(**{"model.name": model, "optimizer.name": optimizer, "model.depth": 2,
                     "model.width": 8, "randomness.window": 64, "activation.name": activation})
    stacked = predictions(config, [5, 6, 7])
    for replica, seed in zip(stacked, [5, 6, 7], strict=True):
        assert np.array_equal(replica, predictions(config, [seed])[0])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_replicas_match_single_runs_for_every_activation(tiny, activation):
    # Exponential-based activations can round their last bit differently inside a
    # vectorized kernel than in its scalar tail, so some agree to float32 rounding only.
    config = tiny(**{"activation.name": activation, "model.name": "mlp", "model.width": 8})
    stacked = predictions(config, [0, 1, 2])
    singles = [predictions(config, [seed])[0] for seed in (0, 1, 2)]
    assert np.abs(np.array(stacked) - np.array(singles)).max() < 1e-5


def test_an_exp_based_activation_agrees_to_float_rounding_after_a_full_default_run():
    config = make_config(**{"activation.name": "softplus", "data.n_train": 20000,
                            "data.n_test": 5000, "data.dim": 20, "train.batch_size": 64})
    stacked = predictions(config, [0, 1, 2])
    singles = [predictions(config, [seed])[0] for seed in (0, 1, 2)]
    assert np.abs(np.array(stacked) - np.array(singles)).max() < 1e-6


def test_a_replicated_job_is_bit_reproducible(tiny):
    config = tiny(**{"activation.name": "swish", "model.name": "mlp"})
    assert np.array_equal(predictions(config, [0, 1, 2]), predictions(config, [0, 1, 2]))


def test_under_no_randomness_all_replicas_are_identical(tiny):
    config = tiny(**{"randomness.name": "none", "activation.name": "gelu"})
    stacked = predictions(config, [0, 1, 2, 3])
    assert all(np.array_equal(stacked[0], other) for other in stacked[1:])


@pytest.mark.parametrize("mode", ["init", "shuffle", "all", "perturb"])
def test_replicas_of_distinct_seeds_differ(tiny, mode):
    config = tiny(**{"randomness.name": mode, "randomness.window": 64, "model.name": "mlp"})
    stacked = predictions(config, [0, 1, 2])
    assert not np.array_equal(stacked[0], stacked[1])
    assert not np.array_equal(stacked[1], stacked[2])
