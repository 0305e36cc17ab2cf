"""Dagster's code server (`dagster api grpc`), its runs started from a warm process.

    python -c "from pipelines.code_server import main; main()" -h 127.0.0.1 -p PORT \
        -m pipelines.definitions -a defs --location-name pipelines.definitions

(`command()` builds that line; `pipelines.services.LocalDagster` starts it.)

A Dagster run launched on this machine is a process the code server starts
with multiprocessing's "spawn": a fresh interpreter that imports torch,
Dagster, MLflow and the lab before its first step, 3-4 s of CPU here, 24
times in a default `make run` on two cores. This server starts them with
"forkserver" instead: one helper process imports the lab once, as the
server starts (and what its steps would import on first use,
`pipelines.run_imports`), and every run is a fork of it, its imports done.
Everything else is Dagster's own server: the same runs, events, cancellation and
process per run (its pid is the one the run's events record, so
`pipelines.recovery` finds a killed run as before).

The helper never computes (a fork of a process whose OpenMP threads had
started could hang in its first parallel loop); each run reseeds NumPy's
global generator, which a fork would otherwise hand every run in the same
state. `dagster api grpc` cannot reload code in place: restart the server
to pick up changes (`make ui` keeps Dagster's own reloadable code server).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys

LOCATION_NAME = "pipelines.definitions"  # the name workspace.yaml's python_module location gets
# Everything a run imports before its first step; this module first, for its fork hook.
WARM_MODULES = ["pipelines.code_server", "pipelines.definitions", "pipelines.run_imports"]


def _reseed_numpy() -> None:
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # fresh entropy, as a spawned interpreter would have


os.register_at_fork(after_in_child=_reseed_numpy)  # Python's `random` reseeds itself after a fork; NumPy does not


def warm_context(modules: list[str] = WARM_MODULES) -> multiprocessing.context.BaseContext:
    """The forkserver context, its helper started now with `modules` imported."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(modules)
    from multiprocessing import forkserver

    forkserver.ensure_running()  # import while the server loads, not at the first run
    return context


def use_warm_runs(context: multiprocessing.context.BaseContext) -> bool:
    """Make every DagsterApiServer created from now on start runs from `context`. False (and nothing
    changed) where the installed Dagster keeps its run processes' context elsewhere."""
    from dagster._grpc import server

    original = server.DagsterApiServer.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if getattr(self, "_mp_ctx", None) is None:  # another Dagster: its own way, cold
            logging.getLogger("dagster.code_server").warning("no run process context to replace: runs start cold")
            return
        self._mp_ctx = context

    if not hasattr(server.DagsterApiServer, "StartRun"):
        return False
    server.DagsterApiServer.__init__ = __init__
    return True


def command(host: str, port: int) -> list[str]:
    """This server on host:port, serving the lab's Definitions under workspace.yaml's location name."""
    # -c, not -m: a run's fork would otherwise re-run this module as its __main__ (multiprocessing's rule
    # for a main module imported by name), on top of the copy the helper imported.
    return [sys.executable, "-c", "from pipelines.code_server import main; main()", "-h", host, "-p", str(port),
            "-m", "pipelines.definitions", "-a", "defs", "-d", os.getcwd(), "--location-name", LOCATION_NAME]


def workspace_yaml(host: str, port: int) -> str:
    """A workspace file that points the webserver and the daemon at this server."""
    return (f"load_from:\n  - grpc_server:\n      host: {host}\n      port: {port}\n"
            f"      location_name: {LOCATION_NAME}\n")


def main() -> None:
    from dagster._cli import main as dagster

    from pipelines.interrupts import take_interrupts

    take_interrupts()  # before Dagster maps SIGTERM to SIGINT's handler
    if not use_warm_runs(warm_context()):
        print("this Dagster's code server cannot take a forkserver: runs start cold", file=sys.stderr)
    sys.argv = ["dagster", "api", "grpc", *sys.argv[1:]]
    try:
        dagster()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    finally:
        stop_helpers()
    # Python's own teardown of a process that holds torch, Dagster and gRPC took over a second here, on
    # every stop; nothing of this server needs it once its helpers are stopped and its output is out.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def stop_helpers() -> None:
    """Stop the forkserver helper and multiprocessing's resource tracker and reap them. Left to end by
    themselves once this process is gone, they linger as zombies of its process group until init reaps
    them, and whoever waits for the group to end waits for that. The helper holds nothing but imports:
    it is killed rather than left to tear them down."""
    from multiprocessing import forkserver, resource_tracker

    with contextlib.suppress(Exception):  # private attributes: a Python without them leaves the helper be
        if forkserver._forkserver._forkserver_pid is not None:
            os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
    for helper in (forkserver._forkserver, resource_tracker._resource_tracker):
        with contextlib.suppress(Exception):  # private stop methods, as above
            helper._stop()


if __name__ == "__main__":
    main()
