"""Users' PyTorch modules on users' tables, binary and multiclass, through the whole pipeline:
train.py multiruns with replicas, MLflow artifacts, analyze.py, and one-line errors for bad
input before any training."""

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from irrepro.config import register_configs
from irrepro.data import make_dataset
from irrepro.hydra_app import train_from_hydra
from irrepro.training import build_model, model_for, train_replicas
from tests import cli
from tests.conftest import make_config

FACTORIES = textwrap.dedent("""
    from torch import nn

    def net(in_features, out_features, hidden=8, activation=None):
        return nn.Sequential(nn.Linear(in_features, hidden), activation or nn.ReLU(),
                             nn.Linear(hidden, out_features))

    def not_a_module(in_features, out_features):
        return "a string"

    def wrong_width(in_features, out_features):
        return nn.Linear(in_features, out_features + 1)

    def dropout(in_features, out_features):
        return nn.Sequential(nn.Linear(in_features, 4), nn.Dropout(0.5),
                             nn.Linear(4, out_features))

    CONSTANT = 3
""")
MODULE = "user_nets"
# The user module; cli adds 1 pass of batches of 32 (6 over a table's 192 training rows).
TRAIN = ["data.label=kind", "model=module", f"model.target={MODULE}.net",
         "+model.kwargs.hidden=8", "train.checkpoints=3", "tracking.experiment=user"]


def table(rows, classes, seed):
    """Three numeric features, a text column, and a label that depends on the features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    score = x @ np.array([1.5, -1.0, 0.5]) + rng.normal(scale=0.5, size=rows)
    cuts = np.quantile(score, np.linspace(0, 1, len(classes) + 1)[1:-1])
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1] * 10, "c": x[:, 2] + 3,
                         "city": rng.choice(["Oslo", "Lima"], rows),
                         "kind": np.array(classes)[np.searchsorted(cuts, score)]})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder outside the package with a factory module, a binary CSV file and a
    three-class Parquet file."""
    path = tmp_path_factory.mktemp("user_models")
    (path / f"{MODULE}.py").write_text(FACTORIES)
    table(240, ["no", "yes"], 0).to_csv(path / "binary.csv", index=False)
    table(240, ["cat", "dog", "eel"], 1).to_parquet(path / "three.parquet")
    return path


@pytest.fixture(scope="module")
def pipeline(folder):
    """Into one experiment, the user module on the CSV file and on iris (a multirun of 2 data
    sets x 2 activations x 3 seeds) and on the Parquet file (a multirun over both files, of 3
    replicas each); then analyze.py over all of it."""
    env = {"PYTHONPATH": str(folder)}
    cli.train(["-m", *TRAIN, "data=table,sklearn", f"data.path={folder / 'binary.csv'}",
               "data.dataset=iris", "activation=relu,smelu", "seed=range(3)"], folder, env=env)
    # A sweep of the table itself: the CSV file's runs are there already, and are skipped.
    tables = f"data.path={folder / 'binary.csv'},{folder / 'three.parquet'}"
    cli.train(["-m", *TRAIN, "data=table", tables, "data.dataset=iris", "activation=smelu",
               "replicas=3"], folder, env=env)
    cli.run_script("analyze.py", ["--experiment", "user", "--tracking-uri",
                                  f"sqlite:///{folder}/mlflow.db"], folder, env=env)
    return folder


def artifact(folder, run, name):
    return Path(cli.client(folder).download_artifacts(run.info.run_id, name,
                                                      str(folder / "downloads" / run.info.run_id)))


def test_every_seed_of_every_table_is_a_finished_run_with_its_classes(pipeline):
    runs = cli.runs(pipeline, "user", "tags.group_key LIKE '%'")
    assert len(runs) == 15 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        path = run.data.params.get("data.path", "iris")
        classes = json.loads(artifact(pipeline, run, "classes.json").read_text())["classes"]
        predictions = np.load(artifact(pipeline, run, "predictions.npy"))
        assert predictions.dtype == np.float32 and np.isfinite(predictions).all()
        assert "excess_log_loss" not in run.data.metrics and "log_loss" in run.data.metrics
        if path.endswith(".csv"):
            assert classes == ["no", "yes"] and predictions.shape == (48,)
        else:
            assert len(classes) == 3 and predictions.shape[1] == 3
            np.testing.assert_allclose(predictions.sum(axis=1), 1, atol=1e-6)
        if path == "iris":
            assert classes == [0, 1, 2] and predictions.shape == (30, 3)


def test_analysis_never_imports_what_a_stored_param_names(pipeline, tmp_path, monkeypatch):
    import shutil
    import sqlite3

    from irrepro.report import analyze
    from irrepro.tracking import Tracker

    # a module that leaves a mark when imported, where the analysis could import it
    marker = tmp_path / "imported"
    (tmp_path / "planted.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef net(**kwargs):\n    raise SystemExit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    shutil.copyfile(pipeline / "mlflow.db", tmp_path / "mlflow.db")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        edited = db.execute("UPDATE params SET value = 'planted.net' "
                            "WHERE key = 'model.target'").rowcount
    assert edited == 15
    summary = analyze(Tracker(f"sqlite:///{tmp_path}/mlflow.db", "user", create=False),
                      "user", tmp_path / "reports", tmp_path / "figures", log_run=False).summary
    assert not marker.exists()
    assert summary["n_params"].notna().all()  # as the runs logged them


def test_the_summary_has_pd_and_churn_but_no_excess_loss(pipeline):
    summary = pd.read_csv(pipeline / "reports" / "user" / "summary.csv")
    assert len(summary) == 5 and set(summary["n_runs"]) == {3}
    assert not any("excess" in column for column in summary.columns)
    assert (summary["pd"] > 0).all() and summary["churn"].between(0, 1).all()
    assert (summary["pd_low"] <= summary["pd"]).all() and summary["log_loss_mean"].notna().all()
    # parameter counts from the module itself: 3 features -> 8 hidden -> 1 or 3 logits
    assert sorted(set(summary["n_params"])) == [3 * 8 + 8 + 8 + 1, 3 * 8 + 8 + 8 * 3 + 3,
                                                4 * 8 + 8 + 8 * 3 + 3]  # iris: 4 features
    text = (pipeline / "reports" / "user" / "summary.md").read_text()
    assert "log loss" in text and "excess" not in text
    by_step = pd.read_csv(pipeline / "reports" / "user" / "by_step.csv")
    # checkpoints at the initialization, step 1 and the last step (6 for the tables, 4 for iris)
    assert set(by_step["step"]) == {0, 1, 4, 6} and not any("excess" in c for c in by_step)
    drawn = {path.name for path in (pipeline / "figures" / "user").glob("*.png")}
    assert {"pd_by_activation.png", "tradeoff.png", "pd_by_teacher_probability.png",
            "pd_over_training.png"} <= drawn


def test_a_logged_replica_of_a_user_module_is_its_single_run_in_this_process(pipeline,
                                                                             monkeypatch):
    """Seed 1 trained as replica 1 of 3 in another process, and alone here: bit for bit."""
    monkeypatch.syspath_prepend(str(pipeline))
    config = make_config(**{
        "data.name": "table", "data.path": str(pipeline / "three.parquet"), "data.label": "kind",
        "model.name": "module", "model.target": f"{MODULE}.net", "model.kwargs": {"hidden": 8},
        "activation.name": "smelu", "train.passes": 1, "seed": 1})
    alone = train_replicas(config, [1], make_dataset(config.data))[0].predictions
    run, = cli.runs(pipeline, "user", "params.`data.path` LIKE '%parquet' and tags.seed = '1' "
                                      "and params.`activation.name` = 'smelu'")
    assert np.array_equal(np.load(artifact(pipeline, run, "predictions.npy")), alone)


def test_the_confidence_figure_says_what_it_bins_by(pipeline, monkeypatch):
    from matplotlib.figure import Figure

    from irrepro import figures

    seen = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *args, **kwargs: (
        seen.append((fig._suptitle.get_text(), fig.axes[0].get_xlabel())),
        save(fig, *args, **kwargs)))
    summary = pd.read_csv(pipeline / "reports" / "user" / "summary.csv")
    rng = np.random.default_rng(0)
    per_example = {key: (rng.uniform(0.3, 1, 50), rng.uniform(0, 0.1, 50))
                   for key in summary["group_key"]}
    figures.pd_by_teacher_probability(summary, per_example, pipeline / "c.png",
                                      basis="confidence")
    assert "mean confidence" in seen[0][0] and "mean confidence" in seen[0][1]


# Replicas of a user module against its single runs, in one process.
WATCHED = (4, 9, 13)
STACKS = ((9, 4), (13, 4, 9), (0, 4, 1, 13, 2, 3, 9))


def largest_replica_difference(config):
    """The largest difference between a watched seed's predictions as a replica (at the
    first, a middle and the last place of stacks of 2, 3 and 7) and alone; training curves
    must match wherever predictions do."""
    data = make_dataset(config.data)
    singles = {seed: train_replicas(config, [seed], data)[0] for seed in WATCHED}
    largest = 0.0
    for stack in STACKS:
        for result in train_replicas(config, list(stack), data):
            if result.seed in singles:
                alone = singles[result.seed]
                difference = float(np.abs(result.predictions - alone.predictions).max())
                assert difference or result.curve == alone.curve
                largest = max(largest, difference)
    return largest


def user_config(folder, monkeypatch, dataset="digits", **overrides):
    monkeypatch.syspath_prepend(str(folder))
    return make_config(**{"data.name": "sklearn", "data.dataset": dataset,
                          "model.name": "module", "model.target": f"{MODULE}.net",
                          "train.passes": 1, "activation.name": "swish", **overrides})


def test_replicas_of_a_user_module_with_aligned_parameters_are_bit_identical(folder,
                                                                             monkeypatch):
    # every weight matrix holds a multiple of 4 floats: [16, 64] and [10, 16]
    config = user_config(folder, monkeypatch, **{"model.kwargs": {"hidden": 16}})
    assert largest_replica_difference(config) == 0.0


def test_a_single_replica_of_a_binary_user_module_under_vmap_is_bit_identical(folder,
                                                                          monkeypatch):
    # one logit: a stack of one would go to gemv, which rounds unlike the batched product
    config = user_config(folder, monkeypatch, dataset="breast_cancer",
                         **{"model.kwargs": {"hidden": 16}})
    assert largest_replica_difference(config) == 0.0


def test_replicas_of_a_user_module_with_odd_parameters_are_bit_identical(folder, monkeypatch):
    # [10, 5] weights: a replica's gradient slab would start off a 16-byte boundary at odd
    # places, where MKL's batched gemm rounds differently; such modules train replica by replica
    config = user_config(folder, monkeypatch, **{"model.kwargs": {"hidden": 5}})
    assert largest_replica_difference(config) == 0.0


def test_randomness_modes_move_a_user_modules_initialization(folder, monkeypatch):
    def parameters(mode, seeds):
        config = user_config(folder, monkeypatch, "iris", **{"randomness.name": mode})
        model = model_for(config, seeds, make_dataset(config.data))
        return torch.cat([p.detach().flatten(1) for p in model.parameters()], dim=1)

    shuffled, initialized = parameters("shuffle", [0, 1]), parameters("init", [0, 1])
    assert torch.equal(shuffled[0], shuffled[1]) and not torch.equal(*initialized)
    assert torch.equal(shuffled[0], parameters("none", [5])[0])
    moved = parameters("perturb", [0, 1])
    for row in moved:
        changed = (row != shuffled[0]).nonzero().flatten()
        assert changed.numel() == 1
        before, after = shuffled[0, changed].numpy(), row[changed].numpy()
        assert after in (np.nextafter(before, np.float32(np.inf)),
                         np.nextafter(before, np.float32(-np.inf)))


def test_built_in_models_get_a_logit_per_class(folder, monkeypatch):
    config = user_config(folder, monkeypatch, "wine", **{"model.name": "mlp", "model.width": 5})
    data = make_dataset(config.data)
    model = model_for(config, [0, 1], data)
    assert model.params["weight1"].shape == (2, 5, 3)
    results = train_replicas(config, [0, 1], data)
    assert results[0].predictions.shape == (36, 3) and results[0].checkpoints is None
    np.testing.assert_allclose(results[0].predictions.sum(axis=1), 1, atol=1e-6)
    binary = build_model(make_config(**{"model.name": "mlp", "model.width": 5}), [0])
    assert binary.params["weight1"].shape == (1, 5, 1)


# Bad input: one line on stderr, exit status 2, and no store opened.
@pytest.fixture(scope="module")
def bad_table(folder):
    frame = table(60, ["no", "yes"], 2)
    frame.loc[[4, 7], "b"] = np.nan
    frame.to_csv(folder / "gaps.csv", index=False)
    table(60, ["yes"], 3).to_csv(folder / "single.csv", index=False)
    return folder


@pytest.mark.parametrize("overrides, message", [
    (["model.target=no_such_module_here.net"], r"cannot import 'no_such_module_here'"),
    ([f"model.target={MODULE}.CONSTANT"], "'CONSTANT' is a int, not callable"),
    ([f"model.target={MODULE}.not_a_module"], "returned a str, not a torch.nn.Module"),
    ([f"model.target={MODULE}.wrong_width"], r"to \[2, 2\], not to float logits \[2, 1\]"),
    ([f"model.target={MODULE}.dropout"], r"torch\.vmap cannot batch this module"),
    (["data.path=missing.csv"], r"data\.path=.*missing\.csv: no such file"),
    (["data.label=nope"], r"data\.label: no column 'nope'"),
    (["data.features=[a,city]"], r"column 'city' of .* is not numeric"),
    (["data.path=gaps.csv"], r"column 'b' of .*gaps\.csv has 2 missing values"),
    (["data.path=single.csv"], r"holds a single class \('yes'\)"),
    (["train.checkpoints=50"], r"train\.checkpoints=50 must be 0 or between 2 and the 7"),
])
def test_bad_input_fails_in_one_line_before_any_training(bad_table, monkeypatch, capsys,
                                                         overrides, message):
    monkeypatch.chdir(bad_table)
    monkeypatch.syspath_prepend(str(bad_table))
    register_configs()
    defaults = ["data=table", "data.path=binary.csv", "data.label=kind", "model=module",
                f"model.target={MODULE}.net", "train.batch_size=32", "train.passes=1",
                f"tracking.uri=sqlite:///{bad_table}/bad.db"]
    given = {override.split("=")[0] for override in overrides}
    chosen = [d for d in defaults if d.split("=")[0] not in given] + overrides
    with initialize_config_dir(config_dir=str(cli.ROOT / "conf"), version_base="1.3"):
        config = compose(config_name="config", overrides=chosen)
    with pytest.raises(SystemExit) as exit_status:
        train_from_hydra(config)
    assert exit_status.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("train.py: error: ") and error.count("\n") == 1, error
    assert re.search(message, error), error
    assert not (bad_table / "bad.db").exists()


def test_train_py_answers_a_bad_target_in_one_line(folder):
    result = cli.train(["model=module", "model.target=no_such_module_here.net"], folder,
                       check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "train.py: error: model.target=no_such_module_here.net: cannot import "
        "'no_such_module_here' (ModuleNotFoundError: No module named 'no_such_module_here')"]
