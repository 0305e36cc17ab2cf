"""The code server of `make run`'s Dagster: runs forked from a helper that has imported the lab.

What must hold: a process started from the warm context finds the lab,
and what its steps import on first use, imported without importing them,
two such processes draw different NumPy numbers (a fork copies the
generator's state), and a Dagster code server
built after `use_warm_runs` starts its runs from that context. The runs
themselves (events, cancellation, kill -9, resume) are the end-to-end tests'
(test_dagster_ui.py), whose Dagster is this one.
"""

from __future__ import annotations

import logging
import sys
import threading


def report_state(queue) -> None:
    """What a run's process finds when it starts: the lab and what its steps use imported? a NumPy draw.
    pipelines.run_imports is read from sys.modules, never imported here: importing it would import the rest."""
    preloaded = sys.modules.get("pipelines.run_imports")
    first_use = preloaded.FIRST_USE_MODULES if preloaded else ()
    lab_imported = preloaded is not None and all(
        name in sys.modules for name in ("pipelines.definitions", "torch", *first_use))
    import numpy as np

    queue.put((lab_imported, float(np.random.random())))


def test_a_warm_process_finds_the_lab_and_its_steps_imports_done_and_draws_its_own_numbers():
    from pipelines.code_server import WARM_MODULES, warm_context

    context = warm_context(WARM_MODULES)
    queue = context.Queue()
    processes = [context.Process(target=report_state, args=(queue,)) for _ in range(2)]
    for process in processes:
        process.start()
    reports = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert all(lab_imported for lab_imported, _ in reports), reports
    assert reports[0][1] != reports[1][1], "both forks drew the same NumPy number"


def test_a_code_server_built_after_the_switch_starts_runs_from_the_warm_context(monkeypatch):
    import multiprocessing

    from dagster._grpc import server
    from dagster._core.utils import FuturesAwareThreadPoolExecutor

    from pipelines.code_server import use_warm_runs

    monkeypatch.setattr(server.DagsterApiServer, "__init__", server.DagsterApiServer.__init__)  # undone after
    context = multiprocessing.get_context("forkserver")
    assert use_warm_runs(context)
    api_server = server.DagsterApiServer(server_termination_event=threading.Event(), logger=logging.getLogger(),
                                         server_threadpool_executor=FuturesAwareThreadPoolExecutor(max_workers=2))
    assert api_server._mp_ctx is context
