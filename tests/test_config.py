import dataclasses
import math
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from irrepro.config import Config, ConfigError, config_hash, group_key, run_params, to_config


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


# group_key and config_hash of the default config before learning-rate schedules, real data
# and user modules existed: keys a config does not use must not change them, so that older
# runs are still resumed and grouped with new ones.
DEFAULT_GROUP_KEY = "23069ef4867e4d1c"
DEFAULT_CONFIG_HASH = "f392301a8cf940d0"
TABLE = {"data.name": "table", "data.path": "rows.csv", "data.label": "y"}
MODULE = {"model.name": "module", "model.target": "examples.mlp.mlp"}


def test_new_keys_leave_existing_identities_unchanged():
    assert group_key(config()) == DEFAULT_GROUP_KEY
    assert config_hash(config()) == DEFAULT_CONFIG_HASH
    params = run_params(config())
    assert set(params["data"]) == {
        "name", "dim", "n_train", "n_test", "scale", "bias", "seed"}
    assert set(params["model"]) == {"name"}


@pytest.mark.parametrize(
    "overrides, key",
    [({"data.name": "table", "data.label": "y"}, "data.path"),
     ({"data.name": "table", "data.path": "rows.csv"}, "data.label"),
     ({"model.name": "module"}, "model.target"),
     ({"data.test_fraction": 1.0}, "data.test_fraction"),
     ({"data.test_fraction": 0.0}, "data.test_fraction"),
     ({"data.dataset": "mnist"}, "data.dataset"),
     ({**TABLE, "data.features": []}, "data.features"),
     ({**MODULE, "model.kwargs": {"in_features": 3}}, "model.kwargs.in_features")],
)
def test_options_missing_what_they_need_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config(**overrides)


def test_keys_real_data_and_modules_ignore_split_no_group():
    table = config(**TABLE)
    assert group_key(config(**TABLE, **{"data.n_train": 7, "data.dim": 3})) == group_key(table)
    assert group_key(config(**TABLE, **{"data.dataset": "iris"})) == group_key(table)
    assert group_key(config(**{**TABLE, "data.label": "z"})) != group_key(table)
    with_test_file = config(**TABLE, **{"data.test_path": "test.csv"})
    assert group_key(config(**TABLE, **{"data.test_path": "test.csv", "data.seed": 5,
                                        "data.test_fraction": 0.5})) == group_key(with_test_file)
    sklearn = config(**{"data.name": "sklearn", "data.dataset": "wine"})
    assert group_key(config(**{"data.name": "sklearn", "data.dataset": "wine",
                               "data.label": "y"})) == group_key(sklearn)
    assert group_key(config(**{"data.name": "sklearn"})) != group_key(sklearn)
    module = config(**MODULE)
    assert group_key(config(**MODULE, **{"model.depth": 4, "model.width": 9})) == group_key(module)
    assert group_key(config(**MODULE, **{"model.kwargs": {"hidden": 8}})) != group_key(module)
    assert group_key(config(**{"model.target": "elsewhere.f"})) == group_key(config())


def test_new_config_options_compose_with_hydra():
    from hydra import compose, initialize_config_dir

    from irrepro.config import register_configs

    root = Path(__file__).resolve().parents[1]
    register_configs()
    with initialize_config_dir(str(root / "conf"), version_base="1.3"):
        composed = compose("config", [
            "data=table", "data.path=rows.parquet", "data.label=kind", "data.features=[a,b]",
            "model=module", "model.target=examples.mlp.mlp", "+model.kwargs.hidden=32",
        ])
        typed = to_config(composed)
        assert typed.data.features == ["a", "b"] and typed.model.kwargs == {"hidden": 32}
        assert run_params(typed)["model"] == {
            "name": "module", "target": "examples.mlp.mlp", "kwargs": {"hidden": 32}}
        digits = to_config(compose("config", ["data=sklearn", "data.dataset=digits"]))
        assert (digits.data.name, digits.data.dataset) == ("sklearn", "digits")
        with pytest.raises(ConfigError, match=r"data\.path"):
            to_config(compose("config", ["data=table", "data.label=kind"]))


def test_a_schedule_other_than_constant_is_part_of_a_run_identity():
    cosine = config(**{"optimizer.schedule": "cosine"})
    assert run_params(cosine)["optimizer"]["schedule"] == "cosine"
    assert "schedule" not in run_params(config())["optimizer"]
    assert group_key(cosine) != group_key(config())


def test_negative_seeds_fail_naming_the_key():
    with pytest.raises(ConfigError, match=r"seeds=\[3, -1\] must hold integers >= 0"):
        config(seeds=[3, -1])


def float_keys(node, prefix=""):
    """Every float key of a config, dotted (the schema's annotations are strings)."""
    for spec in dataclasses.fields(node):
        value = getattr(node, spec.name)
        if dataclasses.is_dataclass(value):
            yield from float_keys(value, f"{prefix}{spec.name}.")
        elif spec.type.startswith("float"):
            yield f"{prefix}{spec.name}"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_float_key_that_is_not_finite_is_refused_naming_it(value):
    keys = list(float_keys(Config()))
    assert {"data.scale", "data.bias", "optimizer.lr", "randomness.subsample"} <= set(keys)
    for key in keys:
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.* must be a finite number$"):
            config(**{key: value})


def test_the_limit_on_classes_is_a_key_of_real_data_runs_unless_at_its_default():
    # the analysis rebuilds a run's data from its params: a raised limit must be among them
    assert "max_classes" not in run_params(config(**TABLE))["data"]
    assert run_params(config(**TABLE, **{"data.max_classes": 500}))["data"]["max_classes"] == 500
    assert group_key(config(**{"data.max_classes": 500})) == group_key(config())  # synthetic
    with pytest.raises(ConfigError, match=r"data\.max_classes=1 must be >= 2"):
        config(**{"data.max_classes": 1})
