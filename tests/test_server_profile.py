"""Training partitions launched together on a fresh store, through a running Dagster (webserver and daemon).

Six training runs are launched at the same moment through the webserver's
GraphQL API, as six users pressing "Materialize" would; the run queue lets
them all start together (CONVLAB_MAX_CONCURRENT_RUNS=7, and on a CPU the
`gpu` pool takes one fewer: six). Every one must end SUCCESS in Dagster and FINISHED in
MLflow, and neither store may complain of a lock or of a schema made twice.
The server profile runs on PostgreSQL and an MLflow tracking server started
here from scratch (`make services`); the SQLite profile on its embedded files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import TINY_MNIST, TINY_TRAINING, subprocess_env, tracking_client

pytestmark = pytest.mark.slow

PARALLEL_EXPERIMENTS = ("seed_cnn.plain.s0", "seed_cnn.plain.s1", "seed_cnn.plain.s2",
                        "mlp.plain.s0", "mlp.plain.s1", "mlp.plain.s2")
# On a CPU the `gpu` pool takes one run fewer than the queue: one more run lets all six train together.
RUNS_AT_ONCE = str(len(PARALLEL_EXPERIMENTS) + 1)
DONE = {"SUCCESS", "FAILURE", "CANCELED"}
# What Dagster or MLflow says when concurrent writers or a schema made twice trip it.
STORE_COMPLAINTS = ("database is locked", "UniqueViolation", "DuplicateTable", "RESOURCE_ALREADY_EXISTS")
# PostgreSQL's own log: not "duplicate key value" (nor its "Key (...) already exists" detail),
# which it logs for every insert Dagster or MLflow makes expecting a conflict it then handles
# (tags, daemon heartbeats, a metric re-logged for the logged model). A migration race shows as
# a relation or type created twice.
POSTGRES_COMPLAINTS = ("deadlock detected", "FATAL", "PANIC", "ERROR:  relation", "ERROR:  type")
# Generous: six torch processes on a small shared machine take minutes; an idle 2-core one, about two.
RUN_TIMEOUT_SECONDS = 900


@pytest.fixture
def fresh_home(monkeypatch):
    """An empty CONVLAB_HOME that PostgreSQL, run as its own OS user when we are root, can enter
    (pytest's own temporary folders are closed to other users)."""
    home = Path(tempfile.mkdtemp(prefix="convlab-parallel-"))
    home.chmod(0o755)
    (home / "dagster").mkdir()
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "CONVLAB_MLFLOW_UI_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVLAB_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("CONVLAB_MAX_CONCURRENT_RUNS", RUNS_AT_ONCE)
    monkeypatch.setenv("CONVLAB_EXPERIMENTS", ",".join(PARALLEL_EXPERIMENTS))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def _wait(api, run_ids: list[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = {r.run_id: r for r in api.runs() if r.run_id in run_ids}
        if len(runs) == len(run_ids) and all(r.status in DONE for r in runs.values()):
            return runs
        time.sleep(2)
    raise AssertionError(f"runs not done within {timeout:.0f} s: "
                         f"{ {r.run_id[:8]: r.status for r in api.runs() if r.run_id in run_ids} }")


def _launch_together(api, experiments, run_config) -> list[str]:
    """One run of trained_model per partition, each request sent from its own thread at the same moment."""
    start = threading.Barrier(len(experiments))
    launched: dict[str, str] = {}
    errors: list[BaseException] = []

    def launch(key):
        start.wait()
        try:
            launched[key] = api.launch_assets_run(["trained_model"], partition=key, run_config=run_config)
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=launch, args=(key,)) for key in experiments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return list(launched.values())


def _peak_overlap(runs) -> int:
    """The most runs in progress at one moment."""
    moments = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs],
                     key=lambda moment: (moment[0], moment[1]))
    now = peak = 0
    for _, change in moments:
        now += change
        peak = max(peak, now)
    return peak


def _complaints(log: Path, complaints) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if any(c in line for c in complaints)]


def _six_in_parallel(home: Path, env: dict, mlflow_client, mlflow_log: Path | None = None,
                     postgres_log: Path | None = None) -> None:
    from pipelines.services import LocalDagster

    started = time.monotonic()
    dagster_log = home / "logs" / "dagster.log"
    dagster_log.parent.mkdir(parents=True, exist_ok=True)
    with LocalDagster(env=env, log_path=dagster_log) as dagster:
        data_run = dagster.api.launch_assets_run(["mnist"], run_config={"ops": {"mnist": {"config": TINY_MNIST}}})
        assert _wait(dagster.api, [data_run], RUN_TIMEOUT_SECONDS)[data_run].status == "SUCCESS"
        training_config = {"ops": {"trained_model": {"config": TINY_TRAINING}}}
        launched_at = time.monotonic()
        run_ids = _launch_together(dagster.api, PARALLEL_EXPERIMENTS, training_config)
        runs = _wait(dagster.api, run_ids, RUN_TIMEOUT_SECONDS)
        failures = {r.partition: dagster.api.failure_reasons(r.run_id) for r in runs.values() if r.status != "SUCCESS"}
        parallel_seconds = time.monotonic() - launched_at

    statuses = sorted(r.status for r in runs.values())
    assert sorted(r.partition for r in runs.values()) == sorted(PARALLEL_EXPERIMENTS)
    assert statuses == ["SUCCESS"] * len(PARALLEL_EXPERIMENTS), failures
    experiment = mlflow_client.get_experiment_by_name("convlab")
    mlflow_runs = mlflow_client.search_runs([experiment.experiment_id], max_results=100)
    by_status = {status: sorted(r.data.tags["dagster.partition"] for r in mlflow_runs if r.info.status == status)
                 for status in ("FINISHED", "FAILED", "RUNNING")}
    assert by_status == {"FINISHED": sorted(PARALLEL_EXPERIMENTS), "FAILED": [], "RUNNING": []}
    for log in filter(None, [dagster_log, mlflow_log]):
        assert not _complaints(log, STORE_COMPLAINTS), log
    if postgres_log:
        assert not _complaints(postgres_log, POSTGRES_COMPLAINTS), postgres_log
    peak = _peak_overlap(runs.values())
    assert peak >= 2, "the runs did not overlap"
    print(f"\n{env.get('CONVLAB_PROFILE', 'sqlite')} profile: {statuses.count('SUCCESS')} Dagster runs SUCCESS; "
          f"MLflow FINISHED {len(by_status['FINISHED'])}, FAILED {len(by_status['FAILED'])}, "
          f"RUNNING {len(by_status['RUNNING'])}; up to {peak} runs at once; the six took {parallel_seconds:.0f} s, "
          f"the whole test {time.monotonic() - started:.0f} s")


def test_six_partitions_at_once_on_the_server_profile(fresh_home, monkeypatch):
    from mlflow import MlflowClient

    from pipelines import server_profile

    if server_profile.postgres_bin() is None:
        pytest.skip("PostgreSQL's server programs are not installed (Debian: apt-get install postgresql)")
    monkeypatch.setenv("CONVLAB_PROFILE", "server")
    state = server_profile.start_services()
    try:
        assert not any((fresh_home / "dagster").glob("*.db")), "Dagster must keep nothing in SQLite here"
        env = subprocess_env(fresh_home, CONVLAB_PROFILE="server", CONVLAB_MAX_CONCURRENT_RUNS=RUNS_AT_ONCE,
                             CONVLAB_EXPERIMENTS=",".join(PARALLEL_EXPERIMENTS),
                             **server_profile.profile_environment(state))
        _six_in_parallel(fresh_home, env, MlflowClient(tracking_uri=state["mlflow"]["url"]),
                         mlflow_log=Path(state["mlflow"]["log"]), postgres_log=server_profile.postgres_dir() / "postgres.log")
    finally:
        server_profile.stop_services(state)
    assert not os.path.exists(server_profile.state_path())


def test_six_partitions_at_once_on_the_sqlite_profile(fresh_home):
    from pipelines.resources.paths import ensure_dagster_home

    ensure_dagster_home()
    env = subprocess_env(fresh_home, CONVLAB_MAX_CONCURRENT_RUNS=RUNS_AT_ONCE,
                         CONVLAB_EXPERIMENTS=",".join(PARALLEL_EXPERIMENTS))
    env.pop("CONVLAB_PROFILE", None)
    _six_in_parallel(fresh_home, env, tracking_client(fresh_home))
