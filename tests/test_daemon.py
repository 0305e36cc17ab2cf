"""The daemon `make run` starts: Dagster's own, its backfill daemon looking every few seconds."""

from __future__ import annotations

import logging
import threading

import pytest


class _Sleep(threading.Event):
    """A shutdown event that records how long the loop would sleep, and sleeps not at all."""

    def __init__(self):
        super().__init__()
        self.asked: list[float] = []

    def wait(self, timeout=None):
        self.asked.append(timeout)
        return False


def _first_sleep_of_the_backfill_loop() -> float:
    from dagster._daemon.backfill import execute_backfill_iteration_loop

    sleep = _Sleep()
    # No workspace: the iteration fails (the loop reports it and carries on), then the loop sleeps.
    for item in execute_backfill_iteration_loop(None, logging.getLogger("test"), sleep):
        if sleep.asked:
            break
    return sleep.asked[0]


def test_the_backfill_daemon_looks_as_often_as_set(monkeypatch):
    from dagster._daemon import controller

    from pipelines.daemon import set_backfill_look

    assert _first_sleep_of_the_backfill_loop() > 20  # Dagster's own: every 30 s
    monkeypatch.setattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS", controller.DEFAULT_DAEMON_INTERVAL_SECONDS)
    assert set_backfill_look(2)
    assert _first_sleep_of_the_backfill_loop() <= 2


@pytest.mark.parametrize("raw, message", [("soon", "whole number"), ("0", "at least 1")])
def test_a_bad_look_interval_is_refused_with_a_reason(monkeypatch, raw, message):
    from pipelines.daemon import LOOK_VARIABLE, look_seconds

    monkeypatch.setenv(LOOK_VARIABLE, raw)
    with pytest.raises(SystemExit, match=message):
        look_seconds()
