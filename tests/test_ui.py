"""The experiment tags that open MLflow's UI on irrepro's view of the runs table, and its URL."""

import json

from irrepro.tracking import Tracker, runs_url, ui_tags
from tests.cli import store_uri

VIEW_TAG = "mlflow.sharedViewState.irrepro"


def test_the_view_tag_holds_irrepros_columns_and_order():
    view = json.loads(ui_tags()[VIEW_TAG])
    assert view["name"] == "irrepro" and isinstance(view["createdAt"], int)
    state = json.loads(view["state"])
    assert state["orderByKey"] == "tags.`mlflow.runName`" and state["orderByAsc"] is True
    assert state["selectedColumns"] == state["columnOrder"] == [
        "metrics.`excess_log_loss`", "metrics.`log_loss`", "metrics.`accuracy`",
        "metrics.`converged`", "params.`seed`"]


def test_an_experiment_made_before_the_tags_gets_them_when_written_to(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(tmp_path))
    experiment_id = client.create_experiment("old")
    Tracker(store_uri(tmp_path), "old", create=False)  # a reader leaves it as it is
    assert VIEW_TAG not in client.get_experiment(experiment_id).tags
    Tracker(store_uri(tmp_path), "old")
    tags = client.get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert json.loads(tags[VIEW_TAG])["state"] == json.loads(ui_tags()[VIEW_TAG])["state"]


def test_the_view_is_in_the_url_only_where_the_experiment_holds_it():
    base = "http://h:5000/"
    assert runs_url(base, "7", ui_tags()) == (
        "http://h:5000/#/experiments/7/runs?workflowType=machine_learning"
        "&viewStateShareKey=irrepro")
    assert runs_url(base, "7", {}) == (
        "http://h:5000/#/experiments/7/runs?workflowType=machine_learning")
