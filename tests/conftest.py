import pytest
from omegaconf import OmegaConf

from irrepro.config import to_config

TINY = {
    "data.n_train": 512, "data.n_test": 128, "data.dim": 8,
    "train.batch_size": 32, "train.passes": 2, "train.progress": False, "train.log_every": 4,
}


def make_config(**overrides):
    """A validated tiny config with dotted-key overrides."""
    base = OmegaConf.create({})
    for key, value in {**TINY, **overrides}.items():
        OmegaConf.update(base, key, value)
    return to_config(base)


@pytest.fixture
def tiny():
    return make_config
