import dataclasses

import numpy as np
import pytest

from irrepro.config import DataConfig
from irrepro.data import DataError, make_dataset
from irrepro.seeds import numpy_generator, seed_sequence


def test_data_depend_on_the_data_config_only():
    a = make_dataset(DataConfig(n_train=100, n_test=50))
    b = make_dataset(DataConfig(n_train=100, n_test=50))
    c = make_dataset(DataConfig(n_train=100, n_test=50, seed=99))
    assert a.digest == b.digest
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.digest != c.digest


def test_teacher_probabilities_are_calibrated():
    data = make_dataset(DataConfig(n_train=10, n_test=20000, name="quadratic",
                                   quadratic_scale=2.0))
    # labels are drawn from the teacher: mean label equals mean probability
    assert abs(data.y_test.mean() - data.p_test.mean()) < 0.02
    assert data.x_test.dtype == np.float32 and data.y_test.dtype == np.float32


def test_quadratic_and_linear_data_differ():
    linear = make_dataset(DataConfig(n_train=10, n_test=100))
    quadratic = make_dataset(dataclasses.replace(DataConfig(n_train=10, n_test=100),
                                                 name="quadratic", quadratic_scale=1.0))
    assert linear.digest != quadratic.digest


def test_a_fixed_source_ignores_the_seed():
    first = numpy_generator("shuffle", 1, "init").integers(1 << 30, size=4)
    second = numpy_generator("shuffle", 2, "init").integers(1 << 30, size=4)
    np.testing.assert_array_equal(first, second)


def test_switching_one_source_on_leaves_the_others_alone():
    for source in ("init", "shuffle", "perturb"):
        random_state = seed_sequence(source, 5, "all").generate_state(2)
        fixed_state = seed_sequence(source, 5, "none").generate_state(2)
        # "all" randomizes init and shuffle only: perturb stays fixed
        assert (random_state == fixed_state).all() == (source == "perturb")
    init_under_all = seed_sequence("init", 5, "all").generate_state(2)
    init_alone = seed_sequence("init", 5, "init").generate_state(2)
    assert (init_under_all == init_alone).all()


def test_the_default_data_keep_their_hash():
    """Runs are compared by data hash: the default synthetic data must keep theirs."""
    assert make_dataset(DataConfig()).digest == "e89d6bd9abae92eb"


@pytest.mark.parametrize("overrides, name, label", [
    ({"bias": 20.0}, "training", 1), ({"bias": -20.0}, "training", 0),
    ({"n_test": 3, "scale": 0.5, "bias": 6.0}, "test", 1),
])
def test_a_teacher_that_labels_a_whole_set_alike_is_refused_naming_its_keys(overrides, name,
                                                                            label):
    with pytest.raises(DataError, match=rf"^data\.bias=.*, data\.scale=.*: the teacher labels "
                                        rf"all \d+ {name} examples {label}, a single class$"):
        make_dataset(DataConfig(**overrides))
