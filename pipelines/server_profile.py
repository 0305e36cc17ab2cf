"""The server profile's services: PostgreSQL and an MLflow tracking server on 127.0.0.1 (`make services`).

With `CONVLAB_PROFILE=server`, Dagster keeps its run, event and schedule
storage in PostgreSQL (dagster-postgres; the generated dagster.yaml reads the
credentials from CONVLAB_PG_* variables) and every MLflow write goes through
`mlflow server` (itself backed by PostgreSQL, artifacts served by it). Both
stores take concurrent writers, so runs may overlap freely; the embedded
SQLite files of the default profile take one writer at a time.

`make services` starts both, from Debian's `postgresql` package (a cluster of
its own under CONVLAB_HOME/postgres, on a free port, nothing system-wide) and
this venv's MLflow, and records their addresses in CONVLAB_HOME/services.json;
`make ui`, `make run` (and the tests) read that file when the profile is on.
`make services-stop` stops both; the data stays for the next start.

PostgreSQL refuses to run as root. Run as root (a container, CI), the cluster
belongs to the `postgres` OS user that Debian's package creates (else
`nobody`), and initdb and pg_ctl run as that user through `runuser`; so every
folder above CONVLAB_HOME must be open to it (o+x), which a home folder under
/root or a pytest temporary folder is not.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipelines.resources.paths import (POSTGRES_VARIABLES, PROFILE_VARIABLE, convlab_home, ensure_dagster_home,
                                       profile)
from pipelines.services import BIN, free_port, process_alive, start, stop

STATE_FILE = "services.json"
DAGSTER_DATABASE = "dagster"
MLFLOW_DATABASE = "mlflow"
DEFAULT_USER = "convlab"
# Where Debian's `postgresql` package puts the server's programs; CONVLAB_PG_BIN names another folder.
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
MLFLOW_WORKERS = 2  # uvicorn workers: a few writers at once is all the lab makes
START_TIMEOUT_SECONDS = 120


class ServicesError(RuntimeError):
    """A service would not start, or the profile asks for services that are not running."""


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl (the newest Debian version), or None when PostgreSQL is not installed."""
    if os.environ.get("CONVLAB_PG_BIN"):
        return Path(os.environ["CONVLAB_PG_BIN"])
    found = sorted(glob.glob(POSTGRES_BIN_GLOB), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    found = [p for p in found if Path(p, "initdb").exists() and Path(p, "pg_ctl").exists()]
    return Path(found[-1]) if found else None


def postgres_os_user() -> str | None:
    """Who runs the cluster: this user, unless that is root (which PostgreSQL refuses)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServicesError("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")


def _as_cluster_owner(command: list[str]) -> list[str]:
    user = postgres_os_user()
    return ["runuser", "-u", user, "--", *command] if user else command


def state_path() -> Path:
    return convlab_home() / STATE_FILE


def read_state() -> dict | None:
    try:
        return json.loads(state_path().read_text())
    except (OSError, ValueError):
        return None


def _write_state(state: dict) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)  # it holds the database password
    path.write_text(json.dumps(state, indent=2))


def postgres_dir() -> Path:
    return convlab_home() / "postgres"


def _give_to_cluster_owner(path: Path) -> None:
    user = postgres_os_user()
    if user:
        record = pwd.getpwnam(user)
        os.chown(path, record.pw_uid, record.pw_gid)
        blocked = [p for p in path.parents if not os.stat(p).st_mode & 0o001]
        if blocked:
            raise ServicesError(f"PostgreSQL runs as `{user}` here (not as root), and it cannot enter {blocked[0]} "
                                f"(no o+x): put CONVLAB_HOME elsewhere or `chmod o+x {blocked[0]}`")


def _initialise_cluster(bin_dir: Path, data: Path, user: str, password: str) -> None:
    """initdb: a cluster with one password-protected superuser, UTF-8, nothing else."""
    data.parent.mkdir(parents=True, exist_ok=True)
    _give_to_cluster_owner(data.parent)
    password_file = data.parent / "initdb-password"
    password_file.write_text(password)
    _give_to_cluster_owner(password_file)
    try:
        subprocess.run(_as_cluster_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", user,
                                          f"--pwfile={password_file}", "--auth=scram-sha-256", "-E", "UTF8",
                                          "--no-instructions"]),
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        raise ServicesError(f"initdb failed: {error.stderr.strip() or error.stdout.strip()}") from error
    finally:
        password_file.unlink(missing_ok=True)


def _pg_ctl(bin_dir: Path, data: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(_as_cluster_owner([str(bin_dir / "pg_ctl"), "-D", str(data), *arguments]),
                          capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS)


def start_postgres(host: str = "127.0.0.1") -> dict:
    """The lab's cluster started on a free TCP port of `host` (no Unix socket: nothing system-wide);
    initialised first if new. Returns its connection settings."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise ServicesError("PostgreSQL is not installed (Debian: apt-get install postgresql; "
                            f"looked in {POSTGRES_BIN_GLOB}, CONVLAB_PG_BIN names another folder)")
    data = postgres_dir() / "data"
    if not (data / "PG_VERSION").exists():
        _initialise_cluster(bin_dir, data, *_new_credentials())
    user, password = _cluster_credentials()
    port = free_port()
    options = f"-c listen_addresses={host} -c port={port} -c unix_socket_directories=''"
    started = _pg_ctl(bin_dir, data, "-l", str(postgres_dir() / "postgres.log"), "-o", options, "-w", "start")
    if started.returncode != 0:
        raise ServicesError(f"PostgreSQL did not start ({started.stderr.strip() or started.stdout.strip()}); "
                            f"its log: {postgres_dir() / 'postgres.log'}")
    settings = {"host": host, "port": port, "user": user, "password": password, "data": str(data),
                "bin": str(bin_dir)}
    try:
        for database in (DAGSTER_DATABASE, MLFLOW_DATABASE):
            _create_database(settings, database)
    except BaseException:
        stop_postgres(settings)
        raise
    return settings


def _credentials_path() -> Path:
    return postgres_dir() / "credentials.json"


def _new_credentials() -> tuple[str, str]:
    """The superuser of a new cluster: CONVLAB_PG_USER / CONVLAB_PG_PASSWORD if set, else `convlab` and a
    random password; kept beside the cluster (readable by this user only) for every later start."""
    user = os.environ.get(POSTGRES_VARIABLES["username"]) or DEFAULT_USER
    password = os.environ.get(POSTGRES_VARIABLES["password"]) or secrets.token_urlsafe(18)
    path = _credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps({"user": user, "password": password}))
    return user, password


def _cluster_credentials() -> tuple[str, str]:
    try:
        saved = json.loads(_credentials_path().read_text())
    except (OSError, ValueError) as error:
        raise ServicesError(f"the cluster in {postgres_dir()} has no readable {_credentials_path().name}: "
                            "remove that folder to start a new one") from error
    return saved["user"], saved["password"]


def _create_database(settings: dict, name: str) -> None:
    import psycopg2

    connection = psycopg2.connect(host=settings["host"], port=settings["port"], user=settings["user"],
                                  password=settings["password"], dbname="postgres")
    connection.autocommit = True  # CREATE DATABASE refuses to run inside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def stop_postgres(settings: dict) -> None:
    data = Path(settings["data"])
    if (data / "postmaster.pid").exists():
        _pg_ctl(Path(settings["bin"]), data, "-m", "fast", "-w", "stop")


def profile_environment(state: dict) -> dict[str, str]:
    """The variables that point Dagster (dagster.yaml's `env:` fields) and MLflow at the running services."""
    postgres = state["postgres"]
    values = {"username": postgres["user"], "password": postgres["password"], "hostname": postgres["host"],
              "port": str(postgres["port"]), "db_name": DAGSTER_DATABASE}
    environment = {POSTGRES_VARIABLES[field]: value for field, value in values.items()}
    environment.update(MLFLOW_TRACKING_URI=state["mlflow"]["url"], CONVLAB_MLFLOW_UI_URL=state["mlflow"]["url"])
    return environment


def mlflow_server_command(postgres: dict, host: str, port: int) -> list[str]:
    # The password reaches the server through PGPASSWORD (libpq reads it), not its command line.
    # psycopg2 named: SQLAlchemy 2.1 would pick psycopg 3 (not installed) for a plain postgresql:// URL.
    backend = f"postgresql+psycopg2://{postgres['user']}@{postgres['host']}:{postgres['port']}/{MLFLOW_DATABASE}"
    artifacts = (convlab_home() / "mlflow" / "server-artifacts").resolve()
    return [str(BIN / "mlflow"), "server", "--backend-store-uri", backend, "--serve-artifacts",
            "--artifacts-destination", artifacts.as_uri(), "--default-artifact-root", "mlflow-artifacts:/",
            "--host", host, "--port", str(port), "--workers", str(MLFLOW_WORKERS)]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_mlflow(postgres: dict, host: str = "127.0.0.1") -> dict:
    """`mlflow server` over the lab's PostgreSQL database, serving artifacts; its schema is made (or
    migrated) before it listens, by the one server process, so no run ever races to make it."""
    port = free_port()
    url = f"http://{host}:{port}"
    log = convlab_home() / "logs" / "mlflow-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PGPASSWORD": postgres["password"],
           # MLflow's job runner (huey workers for GenAI jobs) is of no use here and costs a few processes.
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = start(mlflow_server_command(postgres, host, port), env=env, log_path=log)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop({"mlflow": process})
            raise ServicesError(f"the MLflow server did not come up; its log: {log}")
        time.sleep(0.5)
    return {"url": url, "group": process.pid, "log": str(log)}


def _prepare_stores(state: dict) -> None:
    """Dagster's tables and the lab's MLflow experiment, made once here before any run can start,
    so that runs launched together on a fresh store never race to make them."""
    import dagster as dg

    from pipelines.resources.tracking import MlflowTracking

    with _environment(profile_environment(state) | {PROFILE_VARIABLE: "server"}):
        ensure_dagster_home()
        with dg.DagsterInstance.get():  # dagster-postgres creates its schema when the instance loads
            pass
        MlflowTracking().experiment_id()


class _environment:
    """These variables set for the block, the previous values back after it."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self):
        self.saved = {name: os.environ.get(name) for name in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def services_running(state: dict | None) -> bool:
    return bool(state) and process_alive(state["mlflow"]["group"]) and _answers(state["mlflow"]["url"])


def start_services() -> dict:
    """PostgreSQL and the MLflow server, started (or found running); their state recorded and returned."""
    state = read_state()
    if services_running(state):
        return state
    if state:  # left from a machine restart or a kill: stop what is left before starting afresh
        stop_services(state)
    postgres = start_postgres()
    try:
        state = {"postgres": postgres, "mlflow": start_mlflow(postgres)}
        _write_state(state)
        _prepare_stores(state)
    except BaseException:
        stop_services({"postgres": postgres, **({"mlflow": state["mlflow"]} if state and "mlflow" in state else {})})
        raise
    return state


def stop_services(state: dict | None = None) -> bool:
    """Stop the MLflow server and PostgreSQL of the state file (or of `state`); whether there was anything."""
    state = state if state is not None else read_state()
    if not state:
        return False
    mlflow = state.get("mlflow")
    if mlflow and process_alive(mlflow["group"]):
        stop({"mlflow": _Group(mlflow["group"])}, grace=5)
    if state.get("postgres"):
        stop_postgres(state["postgres"])
    state_path().unlink(missing_ok=True)
    return True


class _Group:
    """A process group started by an earlier command, stopped with `services.stop` like a child."""

    def __init__(self, pid: int):
        self.pid = pid

    def poll(self):
        return None if process_alive(self.pid) else 0

    def wait(self, timeout=None):
        deadline = time.monotonic() + (timeout or 10)
        while process_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.2)


def use_profile() -> None:
    """For `make run` and `make ui`: under the server profile, point this process and its children at the
    running services (an error saying `make services` when they are not up). The SQLite profile needs nothing."""
    if profile() != "server":
        return
    state = read_state()
    if not services_running(state):
        raise SystemExit(f"{PROFILE_VARIABLE}=server needs its services: run `make services` first "
                         f"(no running ones recorded in {state_path()})")
    os.environ.update(profile_environment(state))


def describe(state: dict) -> str:
    postgres = state["postgres"]
    return (f"PostgreSQL: {postgres['host']}:{postgres['port']} (databases {DAGSTER_DATABASE}, {MLFLOW_DATABASE}; "
            f"user {postgres['user']}; data {postgres['data']})\n"
            f"MLflow:     {state['mlflow']['url']} (tracking server and UI; log {state['mlflow']['log']})\n"
            f"recorded in {state_path()}; `make run PROFILE=server` and `make ui PROFILE=server` use them")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            print(describe(start_services()), flush=True)
        elif args.action == "stop":
            print("stopped PostgreSQL and the MLflow server" if stop_services() else "no services were recorded")
        else:
            state = read_state()
            print(describe(state) if services_running(state) else "not running")
    except ServicesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
