"""The MLflow UI links and the saved view behind them (a real sqlite store; the browser check is
tests/test_browser.py)."""

import json

from mlflow import MlflowClient

from avasr.sweep.mlflow_ui import LOCAL_UI_URL, VIEW_TAG_PREFIX, save_sweep_view, sweep_links, ui_url


def test_the_links_name_the_saved_view_and_the_model_training_workflow():
    links = sweep_links("http://ui:5000", "7", "abc123")
    assert links.runs == "http://ui:5000/#/experiments/7/runs?viewStateShareKey=abc123&workflowType=machine_learning"
    assert links.charts == links.runs + "&compareRunsMode=CHART"
    assert links.model == "http://ui:5000/#/models/avasr?workflowType=machine_learning"
    assert "searchFilter" not in links.runs  # any search setting in the link makes the UI ignore the saved view


def test_the_ui_is_the_tracking_server_or_mlflow_ui_for_a_sqlite_store():
    assert ui_url("sqlite:////tmp/mlflow.db") == LOCAL_UI_URL
    assert ui_url("http://tracking:5000/") == "http://tracking:5000"
    assert ui_url("sqlite:////tmp/mlflow.db", "http://gateway/mlflow/") == "http://gateway/mlflow"


def test_the_saved_view_shows_the_sweep_s_children_best_first_with_their_fusion(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.create_experiment("e")
    assert save_sweep_view(client, experiment_id, "parent42", "smoke-1") == "parent42"
    saved = json.loads(client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + "parent42"])
    state = json.loads(saved["state"])
    assert saved["name"] == "sweep smoke-1"
    assert state["searchFilter"] == "tags.`mlflow.parentRunId` = 'parent42'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`val_wer`", True)
    assert {"params.`fusion`", "metrics.`val_wer`", "metrics.`cpu_latency_ms_p50`"} <= set(state["selectedColumns"])
    assert len(client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + "parent42"]) < 20_000  # MLflow's limit
