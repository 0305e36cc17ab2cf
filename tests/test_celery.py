"""Steps on Celery workers: the data asset and one training partition, through Redis, on two workers.

Redis (Debian's redis-server) on a free port of 127.0.0.1, two `dagster-celery`
workers, and one run of `pipelines.cluster:celery_defs` started with
`dagster asset materialize`: each step is a Celery task, and the run's event
log names the worker that executed it.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import yaml

from conftest import REPO, TINY_MNIST, TINY_TRAINING, VENV_BIN, experiment_runs, free_port, subprocess_env

pytestmark = pytest.mark.slow

WORKERS = ("convlab-worker-1", "convlab-worker-2")
PARTITION = "seed_cnn.plain.s0"
START_TIMEOUT_SECONDS = 180


def _wait_for_workers(broker: str, count: int) -> list[str]:
    from celery import Celery

    app = Celery(broker=broker, backend=broker)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        answered = [name for reply in app.control.ping(timeout=2) for name in reply]
        if len(answered) >= count:
            return sorted(answered)
        time.sleep(1)
    raise AssertionError(f"{count} Celery workers did not answer within {START_TIMEOUT_SECONDS} s")


def _celery_worker_of_each_step(run_id: str) -> dict[str, str]:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    workers = {}
    for event in events:
        metadata = event.dagster_event.engine_event_data.metadata or {}
        if "Celery worker" in metadata:
            workers[event.step_key] = metadata["Celery worker"].value
    return workers


def test_the_data_asset_and_a_training_partition_run_on_celery_workers(convlab_home, tmp_path):
    from pipelines.services import start, stop

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    broker = f"redis://127.0.0.1:{free_port()}/0"
    port = broker.rsplit(":", 1)[1].split("/")[0]
    env = subprocess_env(convlab_home, CONVLAB_CELERY_BROKER=broker)
    worker_config = tmp_path / "celery.yaml"
    worker_config.write_text(yaml.safe_dump({"execution": {"config": {"broker": broker, "backend": broker}}}))
    run_config = tmp_path / "run.yaml"
    run_config.write_text(yaml.safe_dump({"ops": {"mnist": {"config": TINY_MNIST},
                                                  "trained_model": {"config": TINY_TRAINING}}}))
    logs = tmp_path / "logs"
    logs.mkdir()
    import dagster as dg

    # The instance's SQLite tables made once, first: two workers starting together on a fresh
    # DAGSTER_HOME would both make them (alembic then finds two heads and every later start fails).
    with dg.DagsterInstance.get():
        pass
    processes = {"redis": start(["redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "",
                                 "--appendonly", "no"], log_path=logs / "redis.log")}
    try:
        for name in WORKERS:
            processes[name] = start([str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                                     "-y", str(worker_config), "-n", name, "--", "--concurrency=1"],
                                    env=env, log_path=logs / f"{name}.log")
        answered = _wait_for_workers(broker, len(WORKERS))
        materialize = subprocess.run(
            [str(VENV_BIN / "dagster"), "asset", "materialize", "-m", "pipelines.cluster", "-a", "celery_defs",
             "--select", "mnist,trained_model", "--partition", PARTITION, "-c", str(run_config)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS)
    finally:
        stop(processes, grace=10)
    assert materialize.returncode == 0, materialize.stdout[-3000:] + materialize.stderr[-3000:]

    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == PARTITION
    workers = _celery_worker_of_each_step(run.run_id)
    assert set(workers) == {"mnist", "trained_model"}
    assert set(workers.values()) <= set(answered), (workers, answered)
    assert {name.split("@")[0] for name in answered} == set(WORKERS)
    print(f"\nsteps on Celery workers: {workers}")
    (mlflow_run,) = experiment_runs(convlab_home)
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.tags["dagster.partition"] == PARTITION
