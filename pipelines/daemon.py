"""`dagster-daemon`, with its backfill daemon looking every few seconds instead of every 30.

    python -m pipelines.daemon run -w workspace.yaml

Dagster 1.13's backfill daemon launches the runs of a graph level only at its
next look, and it looks every 30 s (a constant, not a setting). A backfill of
the lab's graph crosses two levels after its first (data, then the training
partitions, then the analyses), so a run of a few minutes spent up to a
minute waiting for looks. Each look on a backfill that has nothing new to
launch costs a few database reads: looking every second
(CONVLAB_BACKFILL_LOOK_SECONDS, default 1) left the summed training time of
a sample `make run` where it was at every 3 s (80-85 s), and cut the wait
for the next graph level to the run queue's own second. Everything else is
`dagster-daemon` as installed.
"""

from __future__ import annotations

import os
import sys

LOOK_VARIABLE = "CONVLAB_BACKFILL_LOOK_SECONDS"
DEFAULT_LOOK_SECONDS = 1


def look_seconds() -> int:
    raw = os.environ.get(LOOK_VARIABLE) or str(DEFAULT_LOOK_SECONDS)
    try:
        seconds = int(raw)
    except ValueError:
        raise SystemExit(f"{LOOK_VARIABLE}={raw!r}: expected a whole number of seconds") from None
    if seconds < 1:
        raise SystemExit(f"{LOOK_VARIABLE}={raw!r}: at least 1 second")
    return seconds


def set_backfill_look(seconds: int) -> bool:
    """Whether the backfill daemon of the installed Dagster will look every `seconds`: it reads the
    controller's interval afresh at each look. Another Dagster, without that constant, keeps its own."""
    from dagster._daemon import controller

    if not hasattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS"):
        return False
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = seconds
    return True


def main() -> None:
    from dagster._daemon.cli import main as dagster_daemon

    from pipelines.interrupts import take_interrupts

    take_interrupts()  # before Dagster maps SIGTERM to SIGINT's handler

    seconds = look_seconds()
    if not set_backfill_look(seconds):
        print(f"this Dagster has no backfill look interval to set: {LOOK_VARIABLE} ignored", file=sys.stderr)
    sys.argv[0] = "dagster-daemon"
    sys.exit(dagster_daemon())


if __name__ == "__main__":
    main()
