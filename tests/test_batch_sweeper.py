"""The batching sweeper: the job plan of seed sweeps, and a real multirun against the basic
sweeper's."""

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydra_plugins.irrepro_batch_sweeper import plan as plan_module
from hydra_plugins.irrepro_batch_sweeper import sweeper as sweeper_module
from hydra_plugins.irrepro_batch_sweeper.plan import (
    chunk,
    seed_values,
    worker_count,
)
from irrepro.config import config_hash, group_key, run_params
from irrepro.job import job_seeds, replica_config
from tests.cli import ROOT, client, environment, runs, train_args


def batch_sweeper(**options):
    """A BatchSweeper of the sweeper module as it is now: Hydra's plugin scan, run by any
    earlier test of this process, executes plugin modules again, and an instance of the
    class defined before fails in the basic sweeper's super(). Errors are looked up in
    `plan_module` at the time of the test for the same reason."""
    return sweeper_module.BatchSweeper(**options)


def parse(*overrides):
    return OverridesParser.create().parse_overrides(list(overrides))


class FakeLoader:
    """Composes `replicas` only: 2 for the `model=mlp` configuration, else `replicas`."""

    def __init__(self, replicas=1):
        self.replicas = replicas

    def load_sweep_config(self, master, overrides):
        return OmegaConf.create({"replicas": 2 if "model=mlp" in overrides else self.replicas})


def sweeper(launcher=None, replicas=1, **options):
    """A batching sweeper set up as Hydra would, with a launcher config and a loader."""
    batch = batch_sweeper(**{"max_batch_size": None, **options})
    batch.config = OmegaConf.create({"hydra": {"launcher": launcher or {}}})
    batch.hydra_context = SimpleNamespace(config_loader=FakeLoader(replicas))
    return batch


def jobs_of(batch, *overrides, max_batch_size=None):
    return batch.split_arguments(parse(*overrides), max_batch_size)


def seeds_by_config(jobs):
    """{other axes' overrides: [seeds of each job]} of a plan."""
    plan = {}
    for job in jobs:
        *config, seed, seeds = job
        values = OmegaConf.from_dotlist([seeds]).seeds
        assert seed == f"seed={values[0]}"
        plan.setdefault(" ".join(config), []).append(list(values))
    return plan


def test_without_seed_axis_it_is_the_basic_sweeper():
    overrides = ("activation=relu,smelu", "model=one_unit,two_units", "seed=5", "replicas=10")
    for max_batch_size in (None, 3):
        assert jobs_of(sweeper(), *overrides, max_batch_size=max_batch_size) == (
            BasicSweeper.split_arguments(parse(*overrides), max_batch_size)
        )


def test_a_seed_axis_becomes_one_job_per_configuration():
    [jobs] = jobs_of(sweeper(), "activation=relu,smelu,swish", "seed=range(10)", "force=true")
    assert seeds_by_config(jobs) == {
        f"activation={name} force=True": [list(range(10))] for name in ("relu", "smelu", "swish")
    }


def test_the_last_seed_override_decides_as_in_the_basic_sweeper():
    [jobs] = jobs_of(sweeper(), "seed=range(4)", "seed=7")
    assert jobs == [["seed=7"]]
    [jobs] = jobs_of(sweeper(), "seed=7", "seed=1,2")
    assert seeds_by_config(jobs) == {"": [[1, 2]]}


def test_non_contiguous_seeds_each_once_in_order():
    assert seed_values(parse("seed=8,0,3,7,3")[0]) == [0, 3, 7, 8]
    [jobs] = jobs_of(sweeper({"n_jobs": 2}), "seed=8,0,3,7,3")
    assert seeds_by_config(jobs) == {"": [[0, 3], [7, 8]]}


def test_chunks_give_every_worker_a_job():
    plan = seeds_by_config(jobs_of(sweeper({"n_jobs": 2}), "seed=range(10)")[0])
    assert plan == {"": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]}
    # Three configurations already busy two workers; seven would want seven chunks of 3.
    plan = seeds_by_config(jobs_of(sweeper({"n_jobs": 2}), "activation=relu,smelu,swish",
                                   "seed=range(10)")[0])
    assert [len(parts) for parts in plan.values()] == [1, 1, 1]
    plan = seeds_by_config(jobs_of(sweeper({"array_parallelism": 64}), "seed=range(3)")[0])
    assert plan == {"": [[0], [1], [2]]}
    assert chunk(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]


def test_max_replicas_caps_a_job():
    plan = seeds_by_config(jobs_of(sweeper(max_replicas=32), "seed=range(100)")[0])
    assert [len(part) for part in plan[""]] == [25, 25, 25, 25]
    assert sum(plan[""], []) == list(range(100))
    plan = seeds_by_config(jobs_of(sweeper(max_replicas=None), "seed=range(100)")[0])
    assert plan == {"": [list(range(100))]}


def test_max_batch_size_splits_the_planned_jobs():
    batches = jobs_of(sweeper(max_replicas=2), "activation=relu,smelu", "seed=range(4)",
                      max_batch_size=3)
    assert [len(batch) for batch in batches] == [3, 1]


def test_replicas_widen_each_swept_seed():
    """Swept seed s with replicas=K stands for s .. s+K-1, as in a job of its own; overlaps
    train once. The replicas come from each configuration's composed config."""
    [jobs] = jobs_of(sweeper(replicas=3), "seed=0,10,11")
    assert seeds_by_config(jobs) == {"": [[0, 1, 2, 10, 11, 12, 13]]}
    [jobs] = jobs_of(sweeper(), "model=one_unit,mlp", "seed=range(3)")
    assert seeds_by_config(jobs) == {"model=one_unit": [[0, 1, 2]], "model=mlp": [[0, 1, 2, 3]]}


def test_worker_count_of_each_launcher():
    assert worker_count({"n_jobs": 2}) == 2
    assert worker_count({"n_jobs": -1}) == os.cpu_count()
    assert worker_count({"array_parallelism": 64, "timeout_min": 60}) == 64
    assert worker_count({"timeout_min": 60}) == 1  # submitit_local
    assert worker_count({}) == 1  # basic


@pytest.mark.parametrize("overrides, message", [
    (("seed=interval(0,4)",), "seed=interval(0,4): a seed sweep is a list, range or choice"),
    (("seed=a,b",), "seed=a,b: 'a' is not an integer >= 0"),
    (("seed=3,-1",), "seed=3,-1: -1 is not an integer >= 0"),
    (("seed=range(3)", "seeds=[5]"), "seed=range(3) and seeds= both given"),
])
def test_bad_seed_sweeps_fail_naming_the_key(overrides, message):
    with pytest.raises(plan_module.SeedSweepError) as error:
        jobs_of(sweeper(), *overrides)
    assert str(error.value).startswith(message)


def test_max_replicas_must_be_positive():
    with pytest.raises(plan_module.SeedSweepError,
                       match=r"hydra\.sweeper\.max_replicas=0 must be >= 1"):
        batch_sweeper(max_batch_size=None, max_replicas=0)


def test_job_seeds_and_replica_configs(tiny):
    config = tiny(seed=4, replicas=3)
    assert job_seeds(config) == [4, 5, 6]
    listed = tiny(seed=4, replicas=3, seeds=[9, 2, 9, 5])
    assert job_seeds(listed) == [9, 2, 5]
    single = replica_config(listed, 2)
    assert (single.seed, single.replicas, single.seeds) == (2, 1, [])
    # `seeds` says how a job executes, not what a run computes.
    assert run_params(single) == run_params(replica_config(config, 2))
    assert group_key(listed) == group_key(config)
    assert config_hash(single) == config_hash(tiny(seed=2))


def test_default_sweeper_and_what_overrides_it():
    """irrepro_batch by default; the command line and an experiment pick another."""
    from hydra import compose, initialize_config_dir

    from irrepro.config import register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        def sweeper_and_launcher(*overrides):
            hydra = compose("config", list(overrides), return_hydra_config=True).hydra
            return hydra.sweeper._target_.rsplit(".", 1)[-1], hydra.launcher

        name, launcher = sweeper_and_launcher("hydra/launcher=local_parallel")
        assert (name, worker_count(launcher)) == ("BatchSweeper", 2)
        assert sweeper_and_launcher("hydra/sweeper=basic")[0] == "BasicSweeper"
        assert sweeper_and_launcher("+experiment=tune")[0] == "OptunaSweeper"
        assert sweeper_and_launcher("+experiment=single_units")[0] == "BatchSweeper"


# A real multirun, once with the batching sweeper and once with the basic one.

SWEEP = ["-m", "activation=relu,smelu", "seed=range(3)", "train.progress=false"]


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    """The same seed sweep trained into two stores, both commands running at once."""
    stores = {name: tmp_path_factory.mktemp(name) for name in ("batch", "basic")}
    extra = {"batch": [], "basic": ["hydra/sweeper=basic"]}
    processes = {
        name: subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *train_args(SWEEP + extra[name], cwd)],
            cwd=cwd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        for name, cwd in stores.items()
    }
    for name, process in processes.items():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"{name} sweep failed:\n{output}"
        stores[name] = (stores[name], output)
    return stores


IDS = {"sweep_id", "job_id", "mlflow.parentRunId", "irrepro.pid"}


def children_by_seed(cwd):
    """{(group_key, seed): run} of the children, after checking there is one parent."""
    every = runs(cwd)
    parents = [run for run in every if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1
    [parent] = parents
    children = [run for run in every if run is not parent]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
        assert run.info.status == "FINISHED"
    keyed = {(run.data.tags["group_key"], int(run.data.tags["seed"])): run for run in children}
    assert len(keyed) == len(children)
    return keyed


def test_batched_sweep_logs_what_one_job_per_seed_logs(two_stores):
    (batch, batch_log), (basic, basic_log) = two_stores["batch"], two_stores["basic"]
    assert "2 configurations as 2 replica jobs" in batch_log
    assert "Launching 2 jobs" in batch_log and "Launching 6 jobs" in basic_log
    batched, single = children_by_seed(batch), children_by_seed(basic)
    assert sorted(batched) == sorted(single)
    assert {seed for _, seed in batched} == {0, 1, 2} and len(batched) == 6
    sweep = next(iter(batched.values())).data.tags["sweep_id"]
    assert {run.data.tags["job_id"] for run in batched.values()} == {f"{sweep}-0", f"{sweep}-1"}
    for key, run in batched.items():
        other = single[key]
        assert run.data.params == other.data.params
        tags = {k: v for k, v in run.data.tags.items() if k not in IDS}
        assert tags == {k: v for k, v in other.data.tags.items() if k not in IDS}
        assert "seeds" not in run.data.params and "replicas" not in run.data.params


def test_batched_predictions_equal_single_runs_bit_for_bit(two_stores):
    (batch, _), (basic, _) = two_stores["batch"], two_stores["basic"]
    batched, single = children_by_seed(batch), children_by_seed(basic)
    for key, run in batched.items():
        ours = np.load(client(batch).download_artifacts(
            run.info.run_id, "predictions.npy", str(batch)))
        theirs = np.load(client(basic).download_artifacts(
            single[key].info.run_id, "predictions.npy", str(basic)))
        assert ours.dtype == theirs.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs, err_msg=f"group, seed {key}")


@pytest.mark.parametrize("overrides, message", [
    (["seed=range(0)"], "seed=range(0): no seeds to train"),
    (["seed=1.5,2"], "seed=1.5,2: 1.5 is not an integer >= 0"),
    (["seed=0,1", "data.bias=20"], "activation=relu: data.bias=20.0, data.scale=3.0: the teacher"),
    (["model=two_units,nonexistent"], "model=nonexistent activation=relu: In 'config': Could "
     "not find 'model/nonexistent' (options: embedding, logistic, mlp, module, one_unit, "
     "two_units)"),
])
def test_a_bad_sweep_stops_before_any_parent_run(tmp_path, capsys, overrides, message):
    """The sweep callback checks the seeds, that each swept option exists, and the
    configurations' data as their jobs would, before it makes the store and the parent
    run."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from irrepro.config import register_configs
    from irrepro.hydra_app import MlflowSweepCallback

    register_configs()
    store = tmp_path / "mlflow.db"
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        config = GlobalHydra.instance().hydra.compose_config(
            "config", [*overrides, "activation=relu,smelu", f"tracking.uri=sqlite:///{store}"],
            run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        with pytest.raises(SystemExit) as stopped:
            MlflowSweepCallback().on_multirun_start(config)
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"train.py: error: {message}")
    assert not store.exists()


class CountingLoader(FakeLoader):
    """A FakeLoader that records what it composed."""

    def __init__(self):
        super().__init__()
        self.composed = []

    def load_sweep_config(self, master_config, sweep_overrides):
        self.composed.append(list(sweep_overrides))
        return super().load_sweep_config(master_config, sweep_overrides)


def test_a_batch_is_checked_by_composing_a_job_per_new_swept_value():
    """The basic sweeper composes each job of a batch before launching it, in series; this one
    composes only the jobs that bring a swept value no earlier job had."""
    batch = sweeper()
    batch.hydra_context = SimpleNamespace(config_loader=CountingLoader())
    [jobs] = jobs_of(batch, "activation=relu,smelu,swish", "model=mlp,two_units")
    batch.validate_batch_is_legal(jobs)
    assert batch.hydra_context.config_loader.composed == [
        ["activation=relu", "model=mlp"], ["activation=relu", "model=two_units"],
        ["activation=smelu", "model=mlp"], ["activation=swish", "model=mlp"]]
    assert len(jobs) == 6


def test_a_seed_sweep_composes_each_configuration_once():
    """Planning composes every configuration to read its replicas; the check before launching
    composes nothing more."""
    batch = sweeper()
    batch.hydra_context = SimpleNamespace(config_loader=CountingLoader())
    [jobs] = jobs_of(batch, "activation=relu,smelu,swish", "model=mlp,two_units", "seed=0,1")
    batch.validate_batch_is_legal(jobs)
    composed = batch.hydra_context.config_loader.composed
    assert sorted(map(tuple, composed)) == sorted({tuple(job[:2]) for job in jobs})
    assert len(composed) == 6
