"""`make ui`: the Dagster UI and the MLflow UI over this checkout's stores, stopped together.

Beside them a small file route serves the storage folder's figures and
reports over http (`--files-port`, 3001): the figures the Dagster UI shows
inline and the report it links are loaded from there.

Dagster (its webserver, and its daemon with backfills looked at every few
seconds: `pipelines.daemon`) reads DAGSTER_HOME;
MLflow (`mlflow ui`) reads the SQLite store the training runs write, the same
URI `MlflowTracking` resolves. Each server runs in its own process group, so
Ctrl-C (or SIGTERM/SIGHUP to this script) stops all and everything they
started; if one dies, the others are stopped too.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from urllib.parse import urlsplit

from pipelines.resources.paths import ensure_dagster_home, files_url, storage_dir
from pipelines.resources.tracking import UI_VIEW_QUERY, MlflowTracking
from pipelines.server_profile import use_profile
from pipelines.services import (BIN, REPO, daemon_command, record_ui, serve_files, stop, ui_state_path,
                                webserver_command)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--dagster-port", type=int, default=3000)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--files-port", type=int, default=None,
                        help="port of the figures and reports route (default: that of $CONVLAB_FILES_URL, 3001)")
    return parser.parse_args(argv)


def commands(args: argparse.Namespace, tracking: MlflowTracking) -> dict[str, list[str]]:
    dagster = {"dagster": webserver_command(args.host, args.dagster_port), "dagster-daemon": daemon_command()}
    if tracking.resolved_uri().startswith(("http://", "https://", "databricks")):
        return dagster  # a tracking server has its own UI
    mlflow = [str(BIN / "mlflow"), "ui", "--backend-store-uri", tracking.resolved_uri(),
              "--host", args.host, "--port", str(args.mlflow_port)]
    artifacts = tracking.artifact_location()
    if artifacts:  # experiments made in the UI keep their artifacts beside the store, not in the cwd
        mlflow += ["--default-artifact-root", artifacts, "--no-serve-artifacts"]
    return {**dagster, "mlflow": mlflow}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    use_profile()  # CONVLAB_PROFILE=server: the stores of `make services`, whose MLflow server is the MLflow UI
    home = ensure_dagster_home()  # with its dagster.yaml: the pool limit that keeps one GPU to one step
    tracking = MlflowTracking()
    tracking.experiment_id()  # the store and the experiment exist before the UI first opens them
    to_start = commands(args, tracking)
    mlflow_url = f"http://{args.host}:{args.mlflow_port}" if "mlflow" in to_start else tracking.resolved_ui_url()
    processes: dict[str, subprocess.Popen] = {}
    # SIGINT too: started in the background it may be ignored, and an ignored
    # SIGINT is inherited, which would make Dagster's servers ignore SIGTERM as well
    # (they map SIGTERM to their SIGINT handler).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    # MLflow's job runner (huey workers for GenAI jobs) is of no use here and costs a few processes.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    files_port = args.files_port or urlsplit(files_url()).port or 3001
    # Runs launched from this Dagster link their figures and report to the route served here.
    env["CONVLAB_FILES_URL"] = f"http://{args.host}:{files_port}"
    files = None
    try:
        files = serve_files(storage_dir(), args.host, files_port)
        for name, command in to_start.items():
            # A new session: the terminal's Ctrl-C reaches this script only, which then stops each group whole.
            processes[name] = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True)
        record_ui(home, f"http://{args.host}:{args.dagster_port}")  # `make run` submits here while we run
        print(f"Dagster UI: http://{args.host}:{args.dagster_port}  (DAGSTER_HOME={os.environ['DAGSTER_HOME']})\n"
              f"MLflow UI:  {mlflow_url}/#/experiments/{tracking.experiment_id()}/runs{UI_VIEW_QUERY}"
              f"  ({tracking.resolved_uri()})\n"
              f"figures and reports: {env['CONVLAB_FILES_URL']}  ({storage_dir()})\n"
              "Ctrl-C stops them all.", flush=True)
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with status {process.returncode}; stopping the others", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping the UIs", flush=True)
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C must not cut the cleanup short
            signal.signal(signum, signal.SIG_IGN)
        stop(processes)
        if files is not None:
            files.shutdown()
        ui_state_path(home).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
