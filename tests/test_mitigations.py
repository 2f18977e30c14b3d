"""Mitigations: run identities without one, each term against a hand computation, strength 0
against no mitigation, replica invariance with each on, and the anchor trained once."""

import dataclasses
import io

import numpy as np
import pytest
import torch

from irrepro import anchors, tracking
from irrepro.config import ConfigError, MitigationConfig, config_hash, group_key, run_params
from irrepro.data import make_dataset
from irrepro.job import anchor_for, run_job
from irrepro.mitigations import Objective, others_mean, seed_predictions
from irrepro.training import train_replicas
from tests.cli import store_uri
from tests.conftest import make_config
from tests.test_replicas import assert_replicas_match_single_runs

# The default run's identity from before mitigations existed (`python train.py`).
DEFAULT_HASH, DEFAULT_GROUP = "f392301a8cf940d0", "23069ef4867e4d1c"
STRENGTH_ZERO = {
    "min_entropy": {"mitigation.weight": 0.0},
    "codistill": {"mitigation.weight": 0.0},
    "anchor": {"mitigation.weight": 0.0},
    "ema": {"mitigation.decay": 0.0},
}
ON = {
    "min_entropy": {"mitigation.weight": 0.3},
    "codistill": {"mitigation.weight": 0.5, "mitigation.burn_in": 5},
    "anchor": {"mitigation.weight": 0.5},
    "ema": {"mitigation.decay": 0.9},
    "weight_decay": {"optimizer.weight_decay": 0.01},
    "ensemble": {"mitigation.members": 3},
}
MULTICLASS = {"data.name": "sklearn", "data.dataset": "iris", "model.name": "mlp",
              "model.width": 5, "model.depth": 1, "activation.name": "gelu"}
USER_MODULE = {"model.name": "module", "model.target": "examples.mlp.mlp",
               "model.kwargs": {"hidden": 5}}


def with_mitigation(name, **overrides):
    if name == "weight_decay":
        return make_config(**overrides)
    return make_config(**{"mitigation.name": name, **overrides})


def trained(config, seeds):
    """`train_replicas` of the seeds, toward the stored-free anchor of `config` if it has one."""
    data = make_dataset(config.data)
    anchor = None
    if config.mitigation.name == "anchor":
        base = anchors.anchor_config(config)
        anchor = train_replicas(base, [base.seed], data)[0].train_predictions
    return train_replicas(config, seeds, data, anchor)


def test_runs_without_a_mitigation_keep_their_identities():
    from hydra import compose, initialize

    from irrepro.config import register_configs, to_config

    register_configs()
    with initialize(config_path="../conf", version_base="1.3"):
        config = to_config(compose("config"))
    assert config.mitigation.name == "none"
    assert (config_hash(config), group_key(config)) == (DEFAULT_HASH, DEFAULT_GROUP)
    assert "mitigation" not in run_params(config)
    assert "weight_decay" not in run_params(config)["optimizer"]


def test_a_mitigation_keeps_only_the_keys_it_reads():
    params = run_params(make_config(**{"mitigation.name": "ema", "mitigation.decay": 0.9}))
    assert params["mitigation"] == {"name": "ema", "decay": 0.9}
    params = run_params(make_config(**{"mitigation.name": "codistill"}))
    assert set(params["mitigation"]) == {"name", "weight", "members", "burn_in"}
    weak, strong = (make_config(**{"mitigation.name": "anchor", "mitigation.weight": w})
                    for w in (0.2, 0.4))
    assert group_key(weak) != group_key(strong)
    assert anchors.anchor_key(weak) == anchors.anchor_key(strong)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"mitigation.name": "anchor", "mitigation.weight": 1.5},
     r"mitigation.weight=1.5 must be <= 1"),
    ({"mitigation.name": "ema", "mitigation.decay": 1.0}, r"mitigation.decay=1.0 must be < 1"),
    ({"mitigation.name": "min_entropy", "mitigation.weight": -0.1},
     r"mitigation.weight=-0.1 must be >= 0"),
    ({"mitigation.name": "codistill", "mitigation.members": 1},
     r"mitigation.members=1 must be >= 2"),
    ({"mitigation.name": "codistill", "mitigation.burn_in": 32},
     r"mitigation.burn_in=32 must be < the run's 32 updates"),
    ({"mitigation.name": "dropout"}, r"mitigation.name='dropout' is not one of"),
    ({"optimizer.weight_decay": -1.0}, r"optimizer.weight_decay=-1.0 must be >= 0"),
])
def test_bad_mitigation_values_fail_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**overrides)


def test_min_entropy_adds_the_mean_entropy_of_the_real_rows():
    logits = torch.tensor([[0.3, -1.2, 2.0, 5.0], [1.5, 0.0, -0.7, -3.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    objective = Objective(MitigationConfig("min_entropy", weight=0.25))
    losses = objective(logits, labels, torch.zeros(2, 4, dtype=torch.long), rows=3, step=0)
    p = 1 / (1 + np.exp(-logits.double().numpy()))
    bce = -(labels.numpy() * np.log(p) + (1 - labels.numpy()) * np.log(1 - p))
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    expected = bce[:, :3].mean(1) + 0.25 * entropy[:, :3].mean(1)
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-6)


def test_min_entropy_over_classes_uses_the_entropy_of_the_distribution():
    logits = torch.tensor([[[1.0, 0.0, -1.0], [0.2, 0.2, 3.0]]])
    labels = torch.tensor([[0, 2]])
    losses = Objective(MitigationConfig("min_entropy", weight=2.0))(
        logits, labels, torch.zeros(1, 2, dtype=torch.long), rows=2, step=0)
    q = np.exp(logits.double().numpy())
    q /= q.sum(-1, keepdims=True)
    ce = -np.log(q[0, [0, 1], [0, 2]])
    entropy = -(q * np.log(q)).sum(-1)[0]
    np.testing.assert_allclose(losses.numpy(), [ce.mean() + 2.0 * entropy.mean()], rtol=1e-6)


def test_anchor_distills_toward_a_mixture_of_anchor_and_label():
    anchor = torch.tensor([0.9, 0.2, 0.6, 0.5])  # training-set predictions of the anchor
    indices = torch.tensor([[2, 0, 1, 0]])
    logits = torch.tensor([[0.4, -0.3, 1.1, 9.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    losses = Objective(MitigationConfig("anchor", weight=0.3), anchor)(
        logits, labels, indices, rows=3, step=0)
    p = 1 / (1 + np.exp(-logits.double().numpy()[0, :3]))
    target = 0.3 * anchor.double().numpy()[[2, 0, 1]] + 0.7 * labels.numpy()[0, :3]
    expected = -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean()
    np.testing.assert_allclose(losses.numpy(), [expected], rtol=1e-6)


@pytest.mark.parametrize("members", [2, 3])
def test_codistill_adds_the_cross_entropy_to_the_other_members_mean(members):
    generator = torch.Generator().manual_seed(members)
    logits = torch.randn(2 * members, 5, generator=generator)  # two seeds, seed-major
    labels = torch.randint(2, (2 * members, 5), generator=generator).float()
    config = MitigationConfig("codistill", weight=0.7, members=members, burn_in=3)
    objective = Objective(config)
    index = torch.zeros(2 * members, 5, dtype=torch.long)
    z = logits.double().numpy()
    p, y = 1 / (1 + np.exp(-z)), labels.numpy()
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))[:, :4].mean(1)
    # before the burn-in ends, the plain loss
    np.testing.assert_allclose(objective(logits, labels, index, 4, step=2).numpy(), bce,
                               rtol=1e-6)
    grouped = p.reshape(2, members, 5)
    others = ((grouped.sum(1, keepdims=True) - grouped) / (members - 1)).reshape(-1, 5)
    distill = -(others * np.log(p) + (1 - others) * np.log(1 - p))[:, :4].mean(1)
    np.testing.assert_allclose(objective(logits, labels, index, 4, step=3).numpy(),
                               bce + 0.7 * distill, rtol=1e-6)


def test_the_other_member_of_two_is_exactly_itself_and_carries_no_gradient():
    probs = torch.rand(6, 7, requires_grad=True)
    others = others_mean(probs, 2)
    assert torch.equal(others, probs.detach()[[1, 0, 3, 2, 5, 4]])
    assert not others.requires_grad


def test_ema_predicts_from_the_moving_average_of_the_weights():
    from irrepro.mitigations import weight_average

    model = torch.nn.Linear(3, 1)
    start = [p.detach().clone() for p in model.parameters()]
    average = weight_average(model, MitigationConfig("ema", decay=0.8))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update_parameters(model)
    for averaged, before, now in zip(average.module.parameters(), start, model.parameters(),
                                     strict=True):
        torch.testing.assert_close(averaged, 0.8 * before + 0.2 * now)


@pytest.mark.parametrize("name", sorted(STRENGTH_ZERO))
@pytest.mark.parametrize("shape", [{}, MULTICLASS, USER_MODULE],
                         ids=["binary", "multiclass", "user-module"])
def test_each_mitigation_at_strength_zero_predicts_exactly_as_none(name, shape):
    plain = trained(make_config(**shape), [3, 8])
    zero = trained(with_mitigation(name, **shape, **STRENGTH_ZERO[name]), [3, 8])
    for a, b in zip(plain, zero, strict=True):
        assert a.failure is None and b.failure is None
        assert np.array_equal(a.predictions, b.predictions), f"seed {a.seed}"
        assert a.curve == b.curve


@pytest.mark.parametrize("name", sorted(ON))
def test_each_mitigation_at_strength_changes_the_predictions(name):
    plain = trained(make_config(), [3])[0]
    mitigated = trained(with_mitigation(name, **ON[name]), [3])[0]
    assert mitigated.failure is None
    assert not np.array_equal(plain.predictions, mitigated.predictions)


def test_an_ensemble_predicts_the_mean_of_its_members_and_codistill_its_first():
    members = np.arange(12, dtype=np.float32).reshape(6, 2)  # two seeds of three members
    ensemble = seed_predictions(members, MitigationConfig("ensemble", members=3))
    np.testing.assert_array_equal(ensemble, [[2, 3], [8, 9]])
    codistill = seed_predictions(members, MitigationConfig("codistill", members=3))
    np.testing.assert_array_equal(codistill, members[[0, 3]])


def test_codistill_weight_zero_leaves_member_zero_the_independent_run():
    config = with_mitigation("codistill", **{"mitigation.weight": 0.0, "mitigation.members": 3,
                                             "randomness.name": "perturb"})
    [alone] = trained(make_config(**{"randomness.name": "perturb"}), [5])
    [member_zero] = trained(config, [5])
    assert np.array_equal(alone.predictions, member_zero.predictions)


# Stacks of 2 and 7 (and single runs, K = 1) at an awkward shape: a partial last batch, odd
# widths, checkpoints.
STACKS = ((9, 4), (0, 4, 1, 13, 2, 3, 9))
AWKWARD = {
    "data.n_train": 203, "data.n_test": 101, "data.dim": 7, "train.batch_size": 32,
    "train.passes": 1, "train.log_every": 2, "train.checkpoints": 3, "model.name": "mlp",
    "model.depth": 2, "model.width": 5, "activation.name": "swish",
}


@pytest.mark.parametrize("name", sorted(ON))
@pytest.mark.parametrize("shape", [
    AWKWARD, {**AWKWARD, **MULTICLASS}, USER_MODULE,
    {**USER_MODULE, "model.kwargs": {"hidden": 16}},  # aligned slabs: stacked under vmap
], ids=["awkward", "multiclass", "user-module", "user-module-vmap"])
def test_replicas_with_a_mitigation_are_bit_identical_to_single_runs(name, shape):
    config = with_mitigation(name, **shape, **ON[name])
    if name == "codistill":
        config = with_mitigation(name, **shape, **{**ON[name], "mitigation.burn_in": 2})
    anchor = None
    if name == "anchor":
        data = make_dataset(config.data)
        base = anchors.anchor_config(config)
        anchor = train_replicas(base, [base.seed], data)[0].train_predictions
    assert_replicas_match_single_runs(config, stacks=STACKS, anchor=anchor)


def test_the_anchor_is_trained_once_per_configuration_and_stored(tmp_path, caplog):
    tracker = tracking.Tracker(store_uri(tmp_path), "anchored")
    weak = with_mitigation("anchor", **{"mitigation.weight": 0.2})
    data = make_dataset(weak.data)
    caplog.set_level("INFO", logger="irrepro.job")
    for config, seeds in ((weak, [0, 1]), (weak, [2, 3]),
                          (with_mitigation("anchor", **{"mitigation.weight": 0.6}), [0])):
        run_job(dataclasses.replace(config, seeds=seeds), tracker, data)
    trainings = [r for r in caplog.records if r.getMessage().startswith("training the anchor")]
    assert len(trainings) == 1
    stored = tracker.search(f"tags.{anchors.ROLE_TAG} = 'anchor'")
    assert len(stored) == 1 and stored[0].info.status == "FINISHED"
    assert "group_key" not in stored[0].data.tags  # never analysed as a training run
    base = anchors.anchor_config(weak)
    [fresh] = train_replicas(base, [base.seed], data)
    assert np.array_equal(anchor_for(weak, data, tracker), fresh.train_predictions)
    test_predictions = np.load(io.BytesIO(tracker.read_artifact(stored[0], tracking.PREDICTIONS)))
    assert np.array_equal(test_predictions, fresh.predictions)
