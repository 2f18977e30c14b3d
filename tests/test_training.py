import time
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import torch

from irrepro.config import MODELS, ConfigError, to_config
from irrepro.data import make_dataset
from irrepro.job import prepare_job
from irrepro.training import build_model, check_memory, job_memory, train_replicas


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
                     "model.buckets": 4, "model.embedding_dim": 3,
                     "model.target": "torch.nn.Linear"})
    p = predictions(config, [0])[0]
    assert p.shape == (128,) and p.dtype == np.float32
    assert ((p > 0) & (p < 1)).all()


def test_a_replicated_job_is_bit_reproducible(tiny):
    config = tiny(**{"activation.name": "swish", "model.name": "mlp"})
    assert np.array_equal(predictions(config, [0, 1, 2]), predictions(config, [0, 1, 2]))


def test_under_no_randomness_all_replicas_are_identical(tiny):
    config = tiny(**{"randomness.name": "none", "activation.name": "gelu"})
    stacked = predictions(config, [0, 1, 2, 3])
    assert all(np.array_equal(stacked[0], other) for other in stacked[1:])


@pytest.mark.parametrize("mode", ["init", "shuffle", "all"])
def test_replicas_of_distinct_seeds_differ(tiny, mode):
    config = tiny(**{"randomness.name": mode, "randomness.window": 64, "model.name": "mlp"})
    stacked = predictions(config, [0, 1, 2])
    assert not np.array_equal(stacked[0], stacked[1])
    assert not np.array_equal(stacked[1], stacked[2])


def test_perturbed_replicas_are_not_all_identical(tiny):
    # A one-ulp move of a weight feeding a dead unit, or one lost in rounding, changes
    # nothing: some pairs of seeds may agree exactly, not all of them.
    config = tiny(**{"randomness.name": "perturb", "model.name": "mlp"})
    stacked = predictions(config, [0, 1, 2, 3, 4])
    assert len({p.tobytes() for p in stacked}) > 1


def test_predictions_do_not_depend_on_the_chunk_size(tiny, monkeypatch):
    import irrepro.models as models

    config = tiny(**{"model.name": "mlp", "data.n_test": 1100, "train.checkpoints": 3})
    by_size = {}
    for rows in (64, 512, 8192):
        monkeypatch.setattr(models, "PREDICT_ROWS", rows)
        [result] = predictions_and_checkpoints(config, [4])
        by_size[rows] = result
    for rows in (64, 8192):  # test predictions, checkpoints, training-set predictions
        for got, expected in zip(by_size[rows], by_size[512], strict=True):
            assert np.array_equal(got, expected)


def predictions_and_checkpoints(config, seeds):
    data = make_dataset(config.data)
    return [(r.predictions, r.checkpoints, r.train_predictions)
            for r in train_replicas(config, seeds, data)]


def test_a_device_this_torch_cannot_use_is_refused_before_training(tiny):
    if torch.cuda.is_available():
        pytest.skip("this torch has a CUDA device")
    with pytest.raises(ConfigError, match=r"^train\.device=cuda: this torch \(.*\) "
                                          r"(is a build without CUDA|finds no CUDA device)$"):
        prepare_job(tiny(**{"train.device": "cuda"}))
    with pytest.raises(ConfigError, match=r"^train\.device='mps' is not one of cpu, cuda$"):
        tiny(**{"train.device": "mps"})


def test_a_million_replicas_are_refused_within_seconds_for_want_of_memory():
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^replicas=1000000: the job would need about "
                                          r"[\d.]+ TB of memory \([\d.]+ MB a seed\), more "
                                          r"than the [\d.]+ [kMGT]B available: train fewer "
                                          r"seeds per job$"):
        prepare_job(to_config({"replicas": 1_000_000}))
    assert time.perf_counter() - started < 5


def test_a_job_is_refused_when_its_memory_estimate_exceeds_what_is_available(tiny, monkeypatch):
    config = tiny(seeds=[3, 5, 8], **{"model.name": "embedding", "train.checkpoints": 4})
    dataset = make_dataset(config.data)
    needed = job_memory(config, dataset, 3)
    assert job_memory(config, dataset, 6) == 2 * needed
    assert needed > job_memory(tiny(seeds=[3, 5, 8]), dataset, 3)  # a larger model
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=needed))
    check_memory(config, dataset, 3)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=needed - 1))
    with pytest.raises(ConfigError, match=r"^seeds \(3 of them\): the job would need"):
        check_memory(config, dataset, 3)
