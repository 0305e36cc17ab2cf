"""End to end through the real programs: `dagster asset materialize`, several
of them at once against one MLflow SQLite store, and `dagster-webserver`.

Each test starts subprocesses against temporary stores (CONVLAB_HOME and
DAGSTER_HOME in a temporary folder), exactly as a user's shell would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import dagster as dg
import pytest

from conftest import REPO, TINY_MNIST, TINY_TRAINING, experiment_runs, free_port, subprocess_env

DAGSTER = str(REPO / ".venv" / "bin" / "dagster")
WEBSERVER = str(REPO / ".venv" / "bin" / "dagster-webserver")
# Three partitions trained at once: both models on the plain digits, the CNN on the shifted ones.
CONCURRENT_PARTITIONS = ("seed_cnn.plain.s0", "mlp.plain.s0", "seed_cnn.shifted.s0")


def _materialize(home, selection: str, config: dict, partition: str | None = None) -> list[str]:
    command = [DAGSTER, "asset", "materialize", "-m", "pipelines.definitions", "--select", selection,
               "--config-json", json.dumps(config)]
    return command + (["--partition", partition] if partition else [])


def _instance(home) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home / "dagster"))


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory):
    """A temporary home in which the CLI has materialised mnist and parameter_counts."""
    home = tmp_path_factory.mktemp("cli")
    done = subprocess.run(_materialize(home, "mnist,parameter_counts",
                                       {"ops": {"mnist": {"config": TINY_MNIST}}}),
                          cwd=REPO, env=subprocess_env(home), capture_output=True, text=True, timeout=500)
    return home, done


@pytest.mark.slow
def test_dagster_asset_materialize_stores_the_assets(cli_home):
    home, done = cli_home
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert (home / "storage" / "mnist" / "value.pt").is_file()
    assert (home / "storage" / "parameter_counts" / "value.pt").is_file()
    with _instance(home) as instance:
        for name in ("mnist", "parameter_counts"):
            event = instance.get_latest_materialization_event(dg.AssetKey(name))
            assert event is not None, name
            assert event.asset_materialization.metadata["stored_at"].path.startswith(str(home / "storage"))


@pytest.mark.slow
def test_training_partitions_run_concurrently_against_one_mlflow_store(cli_home):
    """Three Dagster runs at once, one per partition, all writing the same SQLite store.

    A Dagster run covers at most one partition, so concurrent partitions are
    concurrent runs (what a backfill, the UI's "materialise all" or several
    CLI calls produce). Each run's steps execute in its own process (the
    definitions' executor), so the writers are three processes, which is what
    SQLite's locking is about.
    """
    home, materialised = cli_home
    if materialised.returncode != 0:
        pytest.fail("mnist was not materialised by the CLI (see the test before)")
    config = {"ops": {"trained_model": {"config": TINY_TRAINING}}}
    processes = {
        partition: subprocess.Popen(
            _materialize(home, "trained_model", config, partition),
            cwd=REPO, env=subprocess_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        for partition in CONCURRENT_PARTITIONS
    }
    outputs = {}
    try:
        for partition, process in processes.items():
            outputs[partition] = process.communicate(timeout=500)[0]
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    for partition, process in processes.items():
        assert process.returncode == 0, f"{partition}:\n{outputs[partition][-5000:]}"
        assert "RUN_SUCCESS" in outputs[partition]
        assert "Executing steps in process" in outputs[partition]
        assert "database is locked" not in outputs[partition]

    runs = experiment_runs(home)
    assert sorted(run.data.tags["dagster.partition"] for run in runs) == sorted(CONCURRENT_PARTITIONS)
    assert [run.info.status for run in runs] == ["FINISHED"] * len(CONCURRENT_PARTITIONS)
    for run in runs:
        assert "test_accuracy" in run.data.metrics
        assert run.data.params["data_source"] == "sample"
    with _instance(home) as instance:
        stored = instance.get_materialized_partitions(dg.AssetKey("trained_model"))
    assert stored == set(CONCURRENT_PARTITIONS)


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(url, data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _stop_group(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the server's process group (it, and its code server), then SIGKILL what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.mark.slow
def test_webserver_serves_the_asset_graph(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "webserver.log", "w+")
    server = subprocess.Popen([WEBSERVER, "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)], cwd=REPO,
                              env=subprocess_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        info = None
        while info is None:
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"webserver not up (exit {server.returncode}):\n{log.read()[-5000:]}")
            try:
                info = json.loads(_get(f"{base}/server_info"))
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        assert info["dagster_version"] == dg.__version__

        # The code location loads in its own process after the server is up.
        names: set[str] = set()
        while not names:
            answer = _graphql(f"{base}/graphql", "{ assetNodes { assetKey { path } } }")
            assert "errors" not in answer, answer
            names = {"/".join(node["assetKey"]["path"]) for node in answer["data"]["assetNodes"]}
            if not names:
                assert time.monotonic() < deadline, "the code location did not load"
                time.sleep(1)
        assert {"mnist", "trained_model", "run_comparison"} <= names

        jobs = _graphql(f"{base}/graphql", "{ repositoriesOrError { ... on RepositoryConnection "
                                           "{ nodes { jobs { name } schedules { name } sensors { name } } } } }")
        (repository,) = jobs["data"]["repositoriesOrError"]["nodes"]
        assert {"full_pipeline", "train_models"} <= {job["name"] for job in repository["jobs"]}
        assert repository["schedules"] == []  # the weekly rebuild is an automation sensor
        assert sorted(s["name"] for s in repository["sensors"]) == ["fail_dead_runs", "report_failed_runs",
                                                                    "weekly_full_pipeline"]
    finally:
        _stop_group(server)
        log.close()
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)


def test_make_ui_serves_both_uis_over_the_project_stores(convlab_home):
    from pipelines.resources.tracking import MlflowTracking
    from pipelines.ui import commands, parse_args

    tracking = MlflowTracking()
    started = commands(parse_args([]), tracking)
    assert started["dagster"][1:] == ["-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", "3000"]
    assert started["dagster-daemon"][1:] == ["-m", "pipelines.daemon", "run", "-w", str(REPO / "workspace.yaml")]
    mlflow = started["mlflow"]
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == tracking.resolved_uri()
    assert tracking.resolved_uri() == f"sqlite:///{convlab_home / 'mlflow' / 'mlflow.db'}"
    assert mlflow[mlflow.index("--default-artifact-root") + 1] == tracking.artifact_location()
    assert mlflow[mlflow.index("--port") + 1] == "5000"

    remote = commands(parse_args(["--dagster-port", "3100"]), MlflowTracking(tracking_uri="http://mlflow:5000"))
    assert list(remote) == ["dagster", "dagster-daemon"] and remote["dagster"][-1] == "3100"
