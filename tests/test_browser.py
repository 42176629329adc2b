"""The MLflow UI link a sweep prints opens that sweep's trials ready to compare, checked in a real browser: a tiny
real sweep (local Ray, sqlite store), then a real `mlflow server` on 127.0.0.1 over its store and headless Chromium
(tests/browser.py). Screenshots are kept in outputs/test-artifacts/browser/ (the test's artifacts in CI)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from mlflow import MlflowClient

from avasr.sweep import tracking
from avasr.sweep.mlflow_ui import column
from tests.browser import chromium, screenshot, wait_for
from tests.servers import MlflowServer
from tests.sweeps import assert_all_cpus_come_back, options, write_space

PROJECT = Path(__file__).resolve().parents[1]
SCREENSHOTS = PROJECT / "outputs" / "test-artifacts" / "browser"
SWEEP_TIMEOUT_S = 600


# --- browser checks ----------------------------------------------------------------------------------------------
GRID_JS = """
const rows = {};
for (const row of document.querySelectorAll('.ag-row[row-id]')) {
  const id = row.getAttribute('row-id');
  const cells = rows[id] = rows[id] || {};
  const link = row.querySelector('a[href*="/runs/"]');  // a run's name links to its page (a group's row has none)
  if (link) cells.name = link.innerText.trim();
  for (const cell of row.querySelectorAll('[col-id]')) cells[cell.getAttribute('col-id')] = cell.innerText.trim();
}
return rows;
"""  # {row id: {"name": run name, column id: text}}; a row's pinned and scrolled parts share its row-id. Column
# ids: params.`fusion`, metrics.`val_wer` in the table (the chart view's run list numbers its columns instead)


def grid_by_run_name(driver) -> dict[str, dict[str, str]]:
    rows = driver.execute_script(GRID_JS) or {}
    return {cells["name"]: cells for cells in rows.values() if cells.get("name")}


def body_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def check_sweep_page(driver, link: str, trial_run_names, fusions, val_wers, shot: str | None = None) -> None:
    """Open `link` and wait until it lists exactly these trials. Table view (no compareRunsMode=CHART in the link):
    the trials grouped by configuration (the seeds of one), each trial's row with its fusion and val_wer. Chart view:
    the run list has every trial, and the charts show every fusion and val_wer (bar values are rounded there: exact
    values are checked in the table)."""
    expected = {
        name: (fusion, float(wer)) for name, fusion, wer in zip(trial_run_names, fusions, val_wers, strict=True)
    }
    charts = "compareRunsMode=CHART" in link
    mode = "chart" if charts else "table"
    driver.get("about:blank")  # a fresh page load, as a pasted link gets: no DOM or UI state left from the last page
    driver.get(link)

    def trials_listed(driver):
        rows = grid_by_run_name(driver)
        assert set(rows) == set(expected), f"runs listed: {sorted(rows)}, expected {sorted(expected)}"
        assert f"{len(expected)} matching runs" in body_text(driver), "no '<N> matching runs' with N = the trials"
        if charts:
            return True
        assert "Group by: configuration" in body_text(driver), "the trials are not grouped by configuration"
        for name, (fusion, wer) in expected.items():
            cells = rows[name]
            got_fusion, got_wer = cells.get(column("params", "fusion")), cells.get(column("metrics", "val_wer"))
            assert got_fusion == fusion, f"{name}: fusion cell {got_fusion!r}, expected {fusion!r}"
            assert got_wer and math.isclose(float(got_wer), wer, rel_tol=1e-6, abs_tol=1e-9), (
                f"{name}: val_wer cell {got_wer!r}, expected {wer!r}"
            )
        return True

    wait_for(driver, trials_listed, f"the {len(expected)} trials in the runs {mode} view", shot=f"failed-{mode}")
    if charts:

        def charts_drawn(driver):
            """The grouped charts: one series per configuration, named by its label, and val_wer drawn."""
            texts = set(
                driver.execute_script(
                    "return Array.from(document.querySelectorAll('svg text'), t => t.textContent.trim())"
                )
            )
            missing = sorted({f"fusion={fusion}" for fusion in fusions} - set(body_text(driver).splitlines()))
            assert not missing, f"chart series missing: {missing}"
            assert "val_wer" in texts, "no val_wer axis drawn"
            return True

        wait_for(driver, charts_drawn, "the sweep's charts (val_wer per configuration)", shot="failed-chart-labels")
    screenshot(driver, shot or f"sweep-{mode}")


def check_registered_model(
    driver, link: str, name: str = "avasr", alias: str = "champion", version: str | None = None
) -> None:
    """The registered model's page lists a version carrying `alias` (and that version when given)."""
    driver.get("about:blank")
    driver.get(link)

    def model_shown(driver):
        lines = [line.strip() for line in body_text(driver).splitlines()]
        assert name in lines, f"no {name!r} heading"
        assert any(line.lstrip("@ ").strip() == alias for line in lines), f"no alias {alias!r} in the versions"
        if version is not None:
            assert f"Version {version}" in lines, f"no 'Version {version}'"
        return True

    wait_for(driver, model_shown, f"registered model {name!r} with alias {alias!r}", shot="failed-model")
    screenshot(driver, f"model-{name}")


# --- the test ----------------------------------------------------------------------------------------------------
def printed_link(stdout: str, label: str) -> str:
    found = re.search(rf"^\s*{label}:\s+(http\S+)$", stdout, re.MULTILINE)
    assert found, f"the sweep printed no {label!r} link:\n{stdout[-3000:]}"
    return found.group(1)


@pytest.mark.slow
def test_the_link_a_sweep_prints_opens_its_trials_and_champion_in_a_real_browser(tmp_path, corpus, local_ray):
    server = MlflowServer(tmp_path / "mlflow")  # its port, for the links; started once the sweep has ended
    space = write_space(tmp_path, fusion='["simple", "attention"]', epochs=2)
    opts = options(tmp_path, corpus, space, mlflow_uri=f"sqlite:///{server.folder / 'mlflow.db'}")
    command = [
        sys.executable,
        str(PROJECT / "experiments" / "sweep_fusion.py"),
        "--space",
        opts.space,
        "--train-manifest",
        opts.train_manifest,
        "--val-manifest",
        opts.val_manifest,
        "--storage-path",
        opts.storage_path,
        "--mlflow-uri",
        opts.mlflow_uri,
        "--cache-dir",
        opts.cache_dir,
        "--scheduler",
        "fifo",
        "--name",
        "browser-sweep",
        "--mlflow-ui-url",
        server.uri,
        "--address",
        ray.get_runtime_context().gcs_address,
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_all_cpus_come_back()
    runs_link, charts_link, model_link = (
        printed_link(done.stdout, label) for label in ("the trials", "as charts", "the model")
    )

    client = MlflowClient(opts.mlflow_uri)
    experiment = client.get_experiment_by_name(opts.experiment)
    parent = client.search_runs([experiment.experiment_id], "tags.`avasr.kind` = 'sweep'")[0]
    trials = tracking.child_runs(client, experiment.experiment_id, parent.info.run_id)
    names = [r.info.run_name for r in trials]
    fusions = [r.data.params["fusion"] for r in trials]
    wers = [r.data.metrics["val_wer"] for r in trials]
    version = client.get_model_version_by_alias("avasr", "champion").version

    server.start()
    try:
        with chromium(SCREENSHOTS) as driver:
            check_sweep_page(driver, runs_link, names, fusions, wers, shot="sweep-trials")
            check_sweep_page(driver, charts_link, names, fusions, wers, shot="sweep-charts")
            check_registered_model(driver, model_link, version=str(version))
    finally:
        server.stop()
