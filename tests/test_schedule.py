"""Learning-rate schedules, checkpoint steps, checkpointed predictions and the convergence rule."""

import math

import numpy as np
import pytest

from irrepro import job, metrics
from irrepro.config import to_config
from irrepro.data import make_dataset
from irrepro.schedule import (
    checkpoint_steps,
    convergence,
    convergence_step,
    last_tenth_updates,
    loss_change,
    lr_factor,
)
from irrepro.training import make_optimizer, total_steps, train_replicas


@pytest.mark.parametrize("total", [1, 2, 7, 16, 626, 10**6])
@pytest.mark.parametrize("count", [2, 3, 8, 25])
def test_checkpoint_steps_run_from_the_initialization_to_the_last_step(count, total):
    if count > total + 1:
        with pytest.raises(ValueError, match="train.checkpoints"):
            checkpoint_steps(count, total)
        return
    steps = checkpoint_steps(count, total)
    assert steps.dtype == np.int64 and steps.shape == (count,)
    assert steps[0] == 0 and steps[-1] == total
    assert (np.diff(steps) > 0).all()


def test_checkpoint_steps_are_log_spaced():
    steps = checkpoint_steps(7, 10**6)
    assert steps.tolist() == [0, 1, 16, 251, 3981, 63096, 10**6]


@pytest.mark.parametrize("count", [1, -1])
def test_one_checkpoint_is_refused(count):
    with pytest.raises(ValueError, match="must be 0 or between 2"):
        checkpoint_steps(count, 100)
    assert checkpoint_steps(0, 100).size == 0


def test_schedules_start_at_the_base_rate_and_decay_to_zero():
    for name in ("constant", "cosine", "linear"):
        assert lr_factor(name, 100)(0) == 1.0
    assert lr_factor("constant", 100)(100) == 1.0
    assert lr_factor("cosine", 100)(50) == pytest.approx(0.5)
    assert lr_factor("cosine", 100)(100) == pytest.approx(0.0)
    assert lr_factor("linear", 100)(25) == pytest.approx(0.75)
    assert lr_factor("linear", 100)(100) == 0.0


def test_the_optimizer_follows_its_schedule(tiny):
    config = tiny(**{"optimizer.schedule": "linear", "optimizer.lr": 0.2})
    import torch

    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer, schedule = make_optimizer(config.optimizer, [parameter], 4)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([0.2, 0.15, 0.1, 0.05])


def test_the_convergence_rule():
    assert loss_change(0.5, 0.495) == pytest.approx(0.01)
    assert convergence(0.009, 20, 0.3, 0.69) == (True, "loss settled: change 0.90% < 1%")
    assert convergence(-0.009, 500, 0.3, 0.69)[0]
    assert convergence(0.021, 20, 0.3, 0.69) == (False, "loss still changing: change 2.10% >= 1%")
    assert not convergence(math.nan, 20, 0.3, 0.69)[0]


def test_too_few_updates_or_a_loss_no_better_than_the_label_frequencies_never_converge():
    assert convergence(0.003, 19, 0.3, 0.69) == (
        False, "too few updates in the last tenth: 19 < 20")
    assert convergence(0.003, 63, 0.6931, 0.6931) == (
        False, "no better than the label frequencies: 0.693 >= 0.693")
    assert convergence(0.003, 2, 0.676, 0.660) == (
        False, "too few updates in the last tenth: 2 < 20; "
               "no better than the label frequencies: 0.676 >= 0.660")


def train(config, seeds):
    results = train_replicas(config, seeds, make_dataset(config.data))
    assert all(r.failure is None for r in results), [r.failure for r in results]
    return results


@pytest.mark.parametrize("n_train", [512, 500])  # whole and partial last batches
def test_checkpoints_hold_predictions_from_step_0_to_the_final_ones(tiny, n_train):
    config = tiny(**{"train.checkpoints": 6, "data.n_train": n_train, "model.name": "mlp"})
    for result in train(config, [0, 1]):
        assert result.checkpoint_steps.tolist() == checkpoint_steps(6, total_steps(config)).tolist()
        assert result.checkpoints.shape == (6, 128) and result.checkpoints.dtype == np.float32
        assert np.array_equal(result.checkpoints[-1], result.predictions)
        assert not np.array_equal(result.checkpoints[0], result.checkpoints[-1])


def test_without_checkpoints_the_final_predictions_are_the_same(tiny):
    with_checkpoints = train(tiny(**{"train.checkpoints": 5}), [0])[0]
    without = train(tiny(), [0])[0]
    assert without.checkpoints is None
    assert np.array_equal(with_checkpoints.predictions, without.predictions)


@pytest.mark.parametrize("mode", ["none", "shuffle"])
def test_with_a_fixed_initialization_step_0_predictions_are_equal(tiny, mode):
    results = train(tiny(**{"train.checkpoints": 3, "randomness.name": mode,
                            "randomness.window": 64}), [0, 1, 2])
    assert all(np.array_equal(results[0].checkpoints[0], r.checkpoints[0]) for r in results)


@pytest.mark.parametrize("mode", ["init", "all"])
def test_with_a_random_initialization_step_0_predictions_differ(tiny, mode):
    results = train(tiny(**{"train.checkpoints": 3, "randomness.name": mode}), [0, 1])
    assert not np.array_equal(results[0].checkpoints[0], results[1].checkpoints[0])


def test_each_run_measures_its_loss_change_over_the_last_tenth(tiny):
    configs = [tiny(**{"train.passes": passes, "optimizer.lr": 0.5}) for passes in (1, 40)]
    short, long = (train(config, [0])[0] for config in configs)
    assert short.loss_change > long.loss_change >= -0.01
    dataset = make_dataset(configs[0].data)
    assert job.convergence(configs[1], long, dataset) == (
        True, f"loss settled: change {abs(long.loss_change):.2%} < 1%")


def test_a_run_of_16_steps_has_not_converged_however_little_its_loss_changed(tiny):
    config = tiny(**{"train.passes": 1})
    (result,) = train(config, [0])
    # 2 updates in the last tenth barely move the loss, still near the label frequencies'
    assert total_steps(config) == 16 and abs(result.loss_change) < 0.01
    assert job.convergence(config, result, make_dataset(config.data)) == (
        False, "too few updates in the last tenth: 2 < 20")


def test_a_run_no_better_than_the_label_frequencies_has_not_converged(tiny):
    # Labels mostly 1, and a rate too small to move the loss off the initialization's.
    config = tiny(**{"train.passes": 20, "optimizer.lr": 1e-6, "data.bias": 3.0})
    (result,) = train(config, [0])
    dataset = make_dataset(config.data)
    frequencies = metrics.frequency_log_loss(dataset.y_train)
    assert result.train_loss >= frequencies and abs(result.loss_change) < 0.01
    assert job.convergence(config, result, dataset) == (
        False, f"no better than the label frequencies: {result.train_loss:.3f} >= "
               f"{frequencies:.3f}")


def test_the_default_run_still_converges():
    config = to_config({"train": {"progress": False}})
    (result,) = train(config, [0])
    assert last_tenth_updates(total_steps(config), "constant") == 63
    assert job.convergence(config, result, make_dataset(config.data)) == (
        True, f"loss settled: change {abs(result.loss_change):.2%} < 1%")


def test_the_last_tenth_is_measured_in_learning_rate_time():
    assert convergence_step(1000, "constant") == 900
    # Under cosine the last tenth of the summed step sizes starts at about 60% of the steps,
    # under linear decay at 1 - sqrt(0.1) = 68%.
    assert convergence_step(1000, "cosine") == pytest.approx(596, abs=2)
    assert convergence_step(1000, "linear") == pytest.approx(684, abs=2)
    assert convergence_step(1, "cosine") == 0


@pytest.mark.parametrize("count", [1, 34])
def test_impossible_checkpoints_fail_before_training_naming_the_key(count):
    from irrepro.config import ConfigError
    from tests.conftest import make_config

    with pytest.raises(ConfigError, match=f"train.checkpoints={count} must be 0 or between 2"):
        make_config(**{"train.checkpoints": count})  # 16 batches x 2 passes: 33 steps at most
    assert make_config(**{"train.checkpoints": 33}).train.checkpoints == 33
