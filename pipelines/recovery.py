"""Runs whose process died: found, ended FAILED in Dagster and MLflow, their pool slots freed.

A run launched on this machine (Dagster's default run launcher) runs in a
process whose pid its event log records ("Started process for run (pid: N)").
When that process is gone (kill -9, an out-of-memory kill, a power cut) the
run would stay STARTED for ever, its MLflow runs RUNNING, and the `gpu` pool
slot it claimed would block every later training step. Dagster's run
monitoring cannot see this with the default launcher, so this module does:
the `fail_dead_runs` sensor every 30 s while the daemon runs, and `make run`
before it submits anything. The daemon then frees the slots of ended runs
(`free_slots_after_run_end_seconds` in the generated dagster.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from pipelines.resources.tracking import MlflowTracking
from pipelines.services import process_alive

UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    pid: int
    partition: str | None
    mlflow_runs: tuple[str, ...]

    def describe(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        closed = f"; MLflow runs {', '.join(self.mlflow_runs)} ended FAILED" if self.mlflow_runs else ""
        return f"run {self.run_id}{where}: its process {self.pid} is gone; marked FAILED{closed}"


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of a run's process, from the engine event its launcher wrote when it started."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.event_specific_data.metadata if entry.dagster_event.event_specific_data else {}
        pid = metadata.get("pid")
        if pid is not None and "Started process for run" in (entry.dagster_event.message or ""):
            return int(pid.value)
    return None


def find_dead_runs(instance: dg.DagsterInstance) -> list[tuple[dg.DagsterRun, int]]:
    """Unfinished runs of this instance whose recorded process no longer exists on this machine."""
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []  # runs launched elsewhere (a cluster): their pids mean nothing here
    dead = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)):
        pid = run_pid(instance, run.run_id)
        if pid is None or process_alive(pid):
            continue
        # The run may have ended between the listing and the liveness check: a run's process writes its
        # success and then exits. Read once more now that the process is gone (it can write nothing
        # more), so that a run which just succeeded is not marked FAILED.
        latest = instance.get_run_by_id(run.run_id)
        if latest is not None and latest.status in UNFINISHED:
            dead.append((latest, pid))
    return dead


def fail_dead_runs(instance: dg.DagsterInstance, tracking: MlflowTracking) -> list[DeadRun]:
    """End every dead run FAILED (Dagster and its MLflow runs); returns what was done."""
    ended = []
    for run, pid in find_dead_runs(instance):
        instance.report_run_failed(run, f"the run's process ({pid}) is gone: killed, or its machine stopped")
        closed = tracking.close_orphaned_runs(run.run_id)
        ended.append(DeadRun(run.run_id, pid, run.tags.get("dagster/partition"), tuple(closed)))
    return ended
