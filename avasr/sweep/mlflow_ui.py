"""Links into MLflow's UI (3.17) that open a sweep ready to compare: its trials, best val WER first, with their
fusion, val WER and latency as columns and a chart section, in the "Model training" workflow.

What the UI needs (read from its bundle, mlflow/server/js/build, and checked in Chromium by tests/test_browser.py):
- `workflowType=machine_learning` in the link: 3.17 picks GenAI or "Model training" from that query parameter
  (then from the browser's local storage, default GenAI), not from the experiment's kind tag; without it the
  experiment opens on the GenAI "Overview" page. The kind tag is set all the same (avasr.sweep.tracking).
- Columns and charts cannot be put in a URL: they are UI state. The sweep saves them as a shared view, the
  experiment tag `mlflow.sharedViewState.<key>` (listed under "Views"), and the link names it. A link that also
  carries a search setting (searchFilter, orderByKey, ...) makes the UI ignore the view, so it carries none.
- Ordering by a metric lists child runs flat (their parent is not fetched); under the default order the parent is
  shown collapsed and hides the trials.
- Hash routing: the query goes after `#/experiments/...`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from mlflow import MlflowClient

from avasr.ship.registry import REGISTERED_MODEL_NAME
from avasr.sweep.tracking import PARENT_TAG, sqlite_path

LOCAL_UI_URL = "http://127.0.0.1:5000"  # where `mlflow ui` serves a sqlite store by default
WORKFLOW = "workflowType=machine_learning"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # + key: a saved view of the runs page (the UI keeps at most 40)
SECTION = "avasr-sweep"  # the view's chart section
VIEW_PARAMS = ("fusion", "dropout", "lr", "seed", "configuration")
# Trials grouped by configuration (the seeds of one), each group's row showing its metrics averaged over seeds
GROUP_BY = {"aggregateFunction": "average", "groupByKeys": [{"mode": "param", "groupByData": "configuration"}]}
VIEW_METRICS = ("val_wer", "test_wer", "val_cer", "cpu_latency_ms_p50", "param_count", "val_wer_snr0_babble")
# The chart section's fixed fields; "runsCountToCompare" is how many runs a chart may draw.
CHART = {"metricSectionId": SECTION, "deleted": False, "isGenerated": False, "runsCountToCompare": 100}


@dataclass(frozen=True)
class SweepLinks:
    runs: str  # the trials as a table
    charts: str  # the same trials in the chart view
    model: str  # the registered model (avasr) and its versions, the champion alias among them


def column(group: str, key: str) -> str:
    """The UI's column id: params.`fusion`, metrics.`val_wer`, attributes.`Run Name`."""
    return f"{group}.`{key}`"


def sweep_view_state(parent_run_id: str) -> dict:
    """The runs page's state: the sweep's child runs grouped by configuration (metrics averaged over its seeds),
    best val WER first, fusion and val WER leftmost, and a chart section (parallel coordinates fusion/dropout/lr ->
    val WER, val WER bars, val WER against CPU latency)."""
    return {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        "orderByKey": column("metrics", "val_wer"),
        "orderByAsc": True,
        "selectedColumns": [column("params", p) for p in VIEW_PARAMS] + [column("metrics", m) for m in VIEW_METRICS],
        "columnOrder": [column("attributes", "Run Name"), column("params", "fusion"), column("metrics", "val_wer")],
        "runsHiddenMode": "SHOW_ALL",  # the default draws only the first 10 runs in charts
        "groupBy": GROUP_BY,
        "isAccordionReordered": True,  # keeps the sweep's section first (else sections are sorted by name)
        "compareRunSections": [{"uuid": SECTION, "name": "Sweep", "display": True, "isReordered": False}],
        "compareRunCharts": [
            {
                **CHART,
                "uuid": f"{SECTION}-parallel",
                "type": "PARALLEL",
                "displayName": "fusion, dropout, lr → val_wer",
                "selectedParams": ["fusion", "dropout", "lr"],
                "selectedMetrics": ["val_wer"],
                "showAllRuns": True,
            },
            {**CHART, "uuid": f"{SECTION}-wer", "type": "BAR", "metricKey": "val_wer", "displayName": "val_wer"},
            {
                **CHART,
                "uuid": f"{SECTION}-latency",
                "type": "SCATTER",
                "displayName": "val_wer against cpu_latency_ms_p50",
                "xaxis": {"key": "cpu_latency_ms_p50", "type": "METRIC"},
                "yaxis": {"key": "val_wer", "type": "METRIC"},
            },
        ],
    }


def save_sweep_view(client: MlflowClient, experiment_id: str, parent_run_id: str, sweep_name: str) -> str:
    """Save the sweep's view on its experiment (about 2 kB of the tag's 20 kB); returns its key (the parent run's
    id), which the links name."""
    now = int(time.time() * 1000)
    value = {
        "name": f"sweep {sweep_name}",
        "createdAt": now,
        "updatedAt": now,
        "state": json.dumps(sweep_view_state(parent_run_id)),
    }
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + parent_run_id, json.dumps(value))
    return parent_run_id


def ui_url(tracking_uri: str, given: str | None = None) -> str:
    """Where people open the UI: `given`, else the tracking server itself, else `mlflow ui`'s default address."""
    if given:
        return given.rstrip("/")
    return LOCAL_UI_URL if sqlite_path(tracking_uri) else tracking_uri.rstrip("/")


def sweep_links(base_url: str, experiment_id: str, view_key: str) -> SweepLinks:
    runs = f"{base_url}/#/experiments/{experiment_id}/runs?viewStateShareKey={view_key}&{WORKFLOW}"
    return SweepLinks(
        runs=runs,
        charts=runs + "&compareRunsMode=CHART",
        model=f"{base_url}/#/models/{REGISTERED_MODEL_NAME}?{WORKFLOW}",
    )
