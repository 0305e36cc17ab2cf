"""Start and stop the servers of this checkout on 127.0.0.1: Dagster (webserver + daemon) and the MLflow UI.

Each server runs in its own process group (a new session), so stopping one
stops everything it started: what Ctrl-C in a terminal does (SIGINT to the
group), then SIGTERM, then SIGKILL. `make ui`, `make run` (when no `make ui`
is running) and the end-to-end tests all start Dagster this way.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from pipelines import code_server
from pipelines.dagster_api import DagsterApi

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
GRACE_SECONDS = 30
# `make ui` leaves its Dagster address here, so `make run` submits to that one
# instead of starting a second daemon on the same DAGSTER_HOME.
UI_STATE = "convlab-ui.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def webserver_command(host: str, port: int, workspace: Path = REPO / "workspace.yaml") -> list[str]:
    """The webserver alone over `workspace` (by default workspace.yaml: a code server of its own)."""
    return [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)]


def daemon_command(workspace: Path = REPO / "workspace.yaml") -> list[str]:
    """`dagster-daemon run`, its backfill looks every few seconds (pipelines.daemon)."""
    return [sys.executable, "-m", "pipelines.daemon", "run", "-w", str(workspace)]


def wait_for_port(host: str, port: int, process: subprocess.Popen, timeout: float = 240,
                  stopping: threading.Event | None = None) -> None:
    """Until something listens on host:port; raises if `process` exits first, `stopping` is set or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopping is not None and stopping.is_set():
            raise RuntimeError("stopped while starting")
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with status {process.returncode} before it listened")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listened on {host}:{port} within {timeout:.0f} s")


def start(command: list[str], env: dict | None = None, log_path: Path | None = None) -> subprocess.Popen:
    """A server in a session of its own (a terminal's Ctrl-C reaches only our script, which stops it whole).
    If our script is killed outright the server lives on; `stop_orphaned_run_dagster` ends it later."""
    output = open(log_path, "ab") if log_path else None
    try:
        return subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True, stdout=output,
                                stderr=subprocess.STDOUT if output else None)
    finally:
        if output:
            output.close()


def group_alive(group: int) -> bool:
    """Whether any process of this process group is still there (a zombie leader counts until reaped)."""
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def _signal_all(processes: dict[str, subprocess.Popen], signum: int) -> None:
    for process in processes.values():
        if group_alive(process.pid):
            os.killpg(process.pid, signum)


def _wait_all(processes: dict[str, subprocess.Popen], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in processes.values():
            process.poll()  # reap, so a finished group leader no longer counts as alive
        if not any(group_alive(p.pid) for p in processes.values()):
            return True
        time.sleep(0.2)
    return False


def stop(processes: dict[str, subprocess.Popen], grace: float = GRACE_SECONDS) -> None:
    """SIGINT to each group, then SIGTERM, then SIGKILL."""
    for signum, seconds in ((signal.SIGINT, grace), (signal.SIGTERM, 5)):
        _signal_all(processes, signum)
        if _wait_all(processes, seconds):
            return
    for name, process in processes.items():
        if group_alive(process.pid):
            print(f"{name} did not stop: killing it", file=sys.stderr)
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_until_up(api: DagsterApi, process: subprocess.Popen, timeout: float = 240) -> None:
    """Until the webserver answers and the code location has loaded; raises if Dagster exits or times out."""
    deadline = time.monotonic() + timeout
    last_error = "not started"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Dagster exited with status {process.returncode} before it was up")
        if api.is_up():
            try:
                api.repository()
                return
            except Exception as error:  # still loading, or a load error worth showing if it persists
                last_error = str(error)
        time.sleep(0.25)
    raise RuntimeError(f"Dagster was not up within {timeout:.0f} s: {last_error}")


def create_storage(dagster_home: Path) -> None:
    """Create the instance's SQLite storage (a fresh home's schemas) before several processes open it at
    once: two that find it missing both create it, and Dagster then refuses the doubled schema version.
    A dagster.yaml with a `storage:` of its own (the server profile's PostgreSQL) is left alone: its
    tables are made once by `make services`, and its credentials live in the servers' environment."""
    import dagster as dg
    import yaml

    config = Path(dagster_home) / "dagster.yaml"
    if config.exists() and (yaml.safe_load(config.read_text()) or {}).get("storage"):
        return
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)


class LocalDagster:
    """Dagster on a free port of 127.0.0.1 over DAGSTER_HOME, for as long as the `with` block lasts: one
    code server (`pipelines.code_server`: Dagster's, its runs forked from a process that has imported
    the lab), and the webserver and the daemon (`pipelines.daemon`: Dagster's, its backfills looked at
    every few seconds instead of every 30) over it, each in a session of its own.

    `daemon_later`: the webserver alone until `start_daemon()`. The daemon looks for backfills as it
    starts; started once a backfill is submitted, it launches the first runs at that first look.
    """

    def __init__(self, env: dict | None = None, log_path: Path | None = None, port: int | None = None,
                 daemon_later: bool = False, on_start: Callable[[list[int]], None] | None = None):
        self.env = env
        self.on_start = on_start  # called with `groups` after each process starts (to record them)
        self.log_path = log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = DagsterApi(self.url)
        self.daemon_later = daemon_later
        self.process: subprocess.Popen | None = None  # the webserver's process group's leader
        self.daemon: subprocess.Popen | None = None
        self.code_server: subprocess.Popen | None = None
        self.code_port = free_port()
        home = (env or os.environ).get("DAGSTER_HOME")
        self.home = Path(home) if home else None  # None: Dagster's own temporary instance, nothing to create
        # the file that points the webserver and the daemon at the one code server
        self.workspace = Path(home or tempfile.gettempdir()) / f"convlab-workspace-{self.code_port}.yaml"
        self._starting: threading.Thread | None = None
        self._stopping = threading.Event()
        self._start_error: Exception | None = None

    def start(self) -> "LocalDagster":
        """Start it without waiting (the `with` block waits until it answers): other work can overlap its
        start-up. The webserver starts once the code server listens (it loads the code before it does)."""
        if self.code_server is None:
            if self.home is not None:
                create_storage(self.home)
            self.workspace.write_text(code_server.workspace_yaml("127.0.0.1", self.code_port))
            self.code_server = start(code_server.command("127.0.0.1", self.code_port), env=self.env,
                                     log_path=self.log_path)
            self._started()
            self._starting = threading.Thread(target=self._start_webserver, daemon=True)
            self._starting.start()
            if not self.daemon_later:
                self.start_daemon()
        return self

    def _start_webserver(self) -> None:
        try:
            wait_for_port("127.0.0.1", self.code_port, self.code_server, stopping=self._stopping)
        except RuntimeError as error:
            self._start_error = error
        else:
            self.process = start(webserver_command("127.0.0.1", self.port, self.workspace), env=self.env,
                                 log_path=self.log_path)
            self._started()

    def _started(self) -> None:
        if self.on_start is not None:
            self.on_start(self.groups)

    def _webserver(self) -> subprocess.Popen:
        """The webserver's process, once started; raises what kept it from starting."""
        self._starting.join()
        if self.process is None:
            raise RuntimeError(f"Dagster's code server did not start: {self._start_error}")
        return self.process

    def start_daemon(self) -> None:
        """The daemon beside the webserver (once). A session of its own too (a process cannot join a group
        of another session): three groups to stop."""
        if self.daemon is None and self.code_server is not None:
            self._webserver()
            self.daemon = start(daemon_command(self.workspace), env=self.env, log_path=self.log_path)
            self._started()

    @property
    def groups(self) -> list[int]:
        """The process groups it runs in (each started process leads one; runs join the code server's)."""
        return [p.pid for p in (self.code_server, self.process, self.daemon) if p is not None]

    def __enter__(self) -> "LocalDagster":
        self.start()
        try:
            wait_until_up(self.api, self._webserver())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        if self.code_server is not None:
            self._stopping.set()
            self._starting.join()
            # the webserver and the daemon first: both talk to the code server, which lingers while they do
            stop({name: process for name, process in (("dagster", self.process), ("dagster-daemon", self.daemon))
                  if process is not None}, grace)
            stop({"dagster code server": self.code_server}, grace)
            self.process = self.daemon = self.code_server = self._starting = None
            self._stopping.clear()
            self.workspace.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        self.stop()


RUN_STATE = "convlab-run.json"


def record_run_dagster(dagster_home: Path, groups: list[int]) -> None:
    """Which Dagster (its process groups) a `make run` started, so that the next one can stop it if this one
    is killed."""
    (Path(dagster_home) / RUN_STATE).write_text(json.dumps({"pid": os.getpid(), "dagster_groups": groups}))


def stop_orphaned_run_dagster(dagster_home: Path) -> list[int] | None:
    """Stop the Dagster (and the runs it launched) of a `make run` that was killed; its process groups, or None."""
    path = Path(dagster_home) / RUN_STATE
    try:
        state = json.loads(path.read_text())
        owner = int(state["pid"])
        groups = [int(g) for g in state.get("dagster_groups") or [state["dagster_group"]]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    alive = [group for group in groups if group_alive(group)]
    if process_alive(owner) or not alive:
        return None
    for group in alive:
        os.killpg(group, signal.SIGKILL)  # its runs die with it: they are ended FAILED next, and resume later
    deadline = time.monotonic() + 10
    while any(group_alive(group) for group in alive) and time.monotonic() < deadline:
        time.sleep(0.2)
    path.unlink(missing_ok=True)
    return alive


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process (not a zombie) on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/stat")
    try:
        return status.read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def ui_state_path(dagster_home: Path) -> Path:
    return Path(dagster_home) / UI_STATE


def record_ui(dagster_home: Path, url: str) -> None:
    ui_state_path(dagster_home).write_text(json.dumps({"url": url, "pid": os.getpid()}))


def running_ui(dagster_home: Path) -> DagsterApi | None:
    """The Dagster of a `make ui` running over this DAGSTER_HOME, if there is one that answers."""
    path = ui_state_path(dagster_home)
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    api = DagsterApi(state["url"])
    return api if api.is_up() else None


# The storage folder over http: what the figures' inline links and the report link of the Dagster UI open.
SERVED_SUFFIXES = (".png", ".html")


class _StorageFiles(SimpleHTTPRequestHandler):
    """Read-only figures and reports of the storage folder; no listings, nothing else (the pickled values stay)."""

    def send_head(self):
        if not self.path.split("?", 1)[0].endswith(SERVED_SUFFIXES):
            self.send_error(404, "only figures (.png) and reports (.html) are served")
            return None
        return super().send_head()

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")  # a rerun rewrites the report in place
        super().end_headers()

    def log_message(self, format, *args):  # quiet: the UIs' own logs say enough
        pass


def serve_files(root: Path, host: str, port: int) -> ThreadingHTTPServer:
    """Serve `root`'s figures and reports on http://host:port/ from a background thread; `.shutdown()` stops it."""
    root.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((host, port), partial(_StorageFiles, directory=str(root)))
    threading.Thread(target=server.serve_forever, name="storage-files", daemon=True).start()
    return server
