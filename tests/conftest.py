import gc

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


# The slowest test files first (from --durations), so that the workers of `pytest -n`,
# which take a file at a time in this order (the Makefile keeps xdist from reordering the
# files by their number of tests), finish together.
SLOWEST_FIRST = (
    "test_scaleout.py", "test_study.py", "test_studies.py", "test_postgres.py",
    "test_pipeline.py", "test_slurm.py", "test_services.py", "test_uncertainty.py",
    "test_user_models.py", "test_store.py", "test_tuning.py", "test_ui.py",
    "test_batch_sweeper.py", "test_optuna_sweeper.py", "test_figures.py", "test_replicas.py",
    "test_mitigations.py", "test_analysis.py", "test_over_training.py", "test_sources.py",
)


def pytest_collection_finish(session):
    """Freeze what the test modules' imports made (torch, MLflow, Hydra): it lives as long as
    the worker, and collections would walk it in vain (irrepro.gc_policy does the same)."""
    gc.freeze()


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: a file's tests keep their order
