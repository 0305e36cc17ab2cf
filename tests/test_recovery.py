"""Finding runs whose process died, on a real Dagster instance in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData

JOB = "__ASSET_JOB"


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def a_gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def started_run(instance: dg.DagsterInstance, pid: int) -> dg.DagsterRun:
    """A STARTED run whose launcher recorded `pid` as its process, as the default launcher does."""
    run = instance.add_run(dg.DagsterRun(job_name=JOB, status=dg.DagsterRunStatus.STARTED))
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run,
                                 EngineEventData(metadata={"pid": dg.MetadataValue.text(str(pid))}))
    return run


def report_success(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """What a run's process writes as its last word before it exits."""
    event = DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=JOB,
                         message=f'Finished execution of run for "{JOB}".')
    instance.report_dagster_event(event, run.run_id)


def test_a_run_whose_process_is_gone_is_found(instance):
    from pipelines.recovery import find_dead_runs

    assert isinstance(instance.run_launcher, dg.DefaultRunLauncher)
    pid = a_gone_pid()
    run = started_run(instance, pid)
    alive = started_run(instance, os.getpid())
    dead = find_dead_runs(instance)
    assert [(r.run_id, p) for r, p in dead] == [(run.run_id, pid)]
    assert alive.run_id not in {r.run_id for r, _ in dead}


def test_a_run_that_succeeds_just_before_its_process_exits_is_not_failed(instance, monkeypatch):
    """The listing sees the run STARTED; its process then writes its success and exits before the liveness
    check. The run must stay a success (this race once turned a finished make run partition into a failure)."""
    import pipelines.recovery as recovery

    run = started_run(instance, a_gone_pid())

    def the_run_ends_meanwhile(pid: int) -> bool:
        report_success(instance, run)
        return False

    monkeypatch.setattr(recovery, "process_alive", the_run_ends_meanwhile)
    assert recovery.find_dead_runs(instance) == []
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
