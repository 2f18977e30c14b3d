import pytest
from omegaconf import OmegaConf

from irrepro.config import ConfigError, config_hash, group_key, run_params, to_config


def config(**overrides):
    base = OmegaConf.create({})
    for key, value in overrides.items():
        OmegaConf.update(base, key, value)
    return to_config(base)


@pytest.mark.parametrize(
    "key, value",
    [
        ("randomness.window", 0),
        ("optimizer.lr", 0.0),
        ("optimizer.lr", -1.0),
        ("activation.beta", 0.0),
        ("data.dim", 0),
        ("activation.name", "relu6"),
        ("replicas", 0),
    ],
)
def test_out_of_range_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config(**{key: value})


def test_wrong_type_is_refused_naming_the_key():
    with pytest.raises(Exception, match=r"data\.dim"):
        config(**{"data.dim": "abc"})


def test_unknown_key_is_refused():
    with pytest.raises(Exception, match="widht"):
        config(**{"model.widht": 3})


def test_runs_differing_only_in_seed_share_a_group():
    a, b = config(seed=0), config(seed=7)
    assert group_key(a) == group_key(b)
    assert config_hash(a) != config_hash(b)


def test_execution_settings_do_not_change_identity():
    plain = config()
    moved = config(**{"replicas": 8, "force": True, "tracking.uri": "sqlite:///elsewhere.db",
                      "tracking.experiment": "other", "train.progress": False})
    assert config_hash(plain) == config_hash(moved)


@pytest.mark.parametrize(
    "key, value",
    [("activation.name", "smelu"), ("randomness.window", 4), ("data.seed", 9),
     ("model.name", "mlp"), ("optimizer.name", "adam")],
)
def test_anything_else_changes_the_group(key, value):
    assert group_key(config()) != group_key(config(**{key: value}))


def test_keys_the_options_ignore_split_no_group():
    assert group_key(config(**{"activation.beta": 2.0})) == group_key(config())  # relu
    smelu = {"activation.name": "smelu"}
    assert group_key(config(**smelu, **{"activation.beta": 2.0})) != group_key(config(**smelu))
    two_units = config(**{"model.name": "two_units", "model.width": 7})
    assert group_key(two_units) == group_key(config(**{"model.name": "two_units"}))
    assert "beta" not in run_params(config())["activation"]
