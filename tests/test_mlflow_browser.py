"""The MLflow UI over a finished training run, seen in Debian's headless Chromium.

One tiny training partition is materialised (400 digits, one epoch), `mlflow
server` is started on a free local port over its SQLite store, and the
experiment's runs table is opened the way the project links to it (in the
machine-learning view). The table must show the run's name with its seed,
the Dataset column filled with the training data, and a metric column once
ticked under "Columns" (MLflow shows none by default; see the README).
Uses /usr/bin/chromium and /usr/bin/chromedriver only; skips when they are absent.
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request

import dagster as dg
import pytest

from conftest import TINY_MNIST, VENV_BIN, free_port, subprocess_env
from test_report_browser import CHROMEDRIVER, CHROMIUM, browser  # noqa: F401 (a fixture)

PARTITION = "seed_cnn.plain.s0"
RUN_NAME = "seed_cnn/plain/s0"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="no /usr/bin/chromium or /usr/bin/chromedriver: apt-get install -y chromium chromium-driver")]
# Seconds for `mlflow server` to answer: about ten on an idle machine, far more on a busy one.
SERVER_START_LIMIT = 120


@pytest.fixture(scope="module")
def finished_run(module_home):
    """The tracking resource over a store holding one finished training run."""
    from pipelines.definitions import defs
    from pipelines.resources.tracking import MlflowTracking

    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("full_pipeline")
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("mnist")],
                                  run_config={"ops": {"mnist": {"config": TINY_MNIST}}}).success
    trained = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("trained_model")], partition_key=PARTITION,
        run_config={"ops": {"trained_model": {"config": {"epochs": 1, "batch_size": 8, "lr": 0.002}}}})
    assert trained.success
    return MlflowTracking()


@pytest.fixture(scope="module")
def mlflow_ui(finished_run, module_home):
    """`mlflow server` on a free 127.0.0.1 port; its base URL."""
    port = free_port()
    log = open(module_home / "mlflow_server.log", "w")
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", finished_run.resolved_uri(),
         "--default-artifact-root", finished_run.artifact_location(), "--no-serve-artifacts",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=subprocess_env(module_home), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_LIMIT
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{(module_home / 'mlflow_server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _text_when(browser, predicate, timeout: float = 40.0) -> str:
    """The page's visible text once `predicate(text)` holds (the UI loads its data after the page)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = browser.find_element("tag name", "body").text
        if predicate(text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"the page never showed what was expected; it showed:\n{text[:3000]}")


def _headers(browser) -> list[str]:
    return [h.text.strip() for h in browser.find_elements("css selector", "[role=columnheader]") if h.text.strip()]


def test_runs_table_shows_run_names_dataset_and_metrics(browser, mlflow_ui, finished_run):  # noqa: F811
    run = finished_run.client().search_runs([finished_run.experiment_id()])[0]
    test_accuracy = run.data.metrics["test_accuracy"]
    tracking = finished_run.model_copy(update={"ui_url": mlflow_ui})
    browser.set_window_size(2600, 900)  # the grid draws only the columns in view
    browser.get(tracking.experiment_url())  # the link the project gives: the machine-learning view
    _text_when(browser, lambda text: RUN_NAME in text and "mnist-sample" in text)
    assert {"Run Name", "Dataset"} <= set(_headers(browser)), _headers(browser)

    # A metric column, ticked the way a reader does it: Columns > Metrics > test_accuracy.
    next(b for b in browser.find_elements("css selector", "button") if b.text.strip() == "Columns").click()
    title = _wait_for(browser, "//span[contains(@class,'tree-title') and normalize-space(text())='test_accuracy']")
    title.find_element("xpath", "./ancestor::*[contains(@class,'tree-treenode')][1]").find_element(
        "css selector", "[class*=tree-checkbox]").click()
    _text_when(browser, lambda text: "test_accuracy" in _headers(browser))

    # The grid splits a row in a pinned part (the name) and the rest: the run's other part holds
    # its dataset, with name and digest, and its test accuracy.
    rows = [row.text for row in browser.find_elements("css selector", "[role=row]") if "mnist-sample" in row.text]
    assert len(rows) == 1, rows
    digest = run.inputs.dataset_inputs[0].dataset.digest
    assert f"mnist-sample ({digest})" in rows[0], rows[0]
    shown = [float(number) for number in re.findall(r"\b0\.\d+\b", rows[0])]
    assert any(abs(number - test_accuracy) < 1e-3 for number in shown), (rows[0], test_accuracy)


def _wait_for(browser, xpath: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = browser.find_elements("xpath", xpath)
        if found:
            return found[-1]
        time.sleep(0.3)
    raise AssertionError(f"nothing at {xpath}")
