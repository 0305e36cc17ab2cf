"""The Dagster `make run` starts for itself: the webserver first, the daemon once the backfill is in.

The daemon looks for backfills when it starts and every few seconds after
(Dagster's own every 30 s), so the order decides how long the first runs wait. What must hold: before
`start_daemon()` nothing but the code server and the webserver run (no daemon heartbeat), after
it the daemon beats, and stopping ends every process of the three groups.
"""

from __future__ import annotations

import re
import time

from conftest import subprocess_env

DAEMON_STATUSES = """{ instance { daemonHealth { allDaemonStatuses { daemonType healthy lastHeartbeatTime } } } }"""


def _beating(api) -> set[str]:
    statuses = api.query(DAEMON_STATUSES)["instance"]["daemonHealth"]["allDaemonStatuses"]
    return {s["daemonType"] for s in statuses if s["lastHeartbeatTime"]}


def test_the_daemon_starts_when_asked_and_stops_with_the_webserver(tmp_path, monkeypatch):
    from pipelines.resources.paths import ensure_dagster_home
    from pipelines.services import LocalDagster, group_alive

    env = subprocess_env(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    monkeypatch.setenv("CONVLAB_HOME", env["CONVLAB_HOME"])
    ensure_dagster_home()
    recorded = []  # what make run writes down for the next one, each time a process starts
    dagster = LocalDagster(env=env, log_path=tmp_path / "dagster.log", daemon_later=True, on_start=recorded.append)
    with dagster:
        assert len(dagster.groups) == 2
        assert "BACKFILL" not in _beating(dagster.api)  # the code server and the webserver alone
        dagster.start_daemon()
        groups = dagster.groups
        assert len(groups) == 3
        assert recorded == [groups[:1], groups[:2], groups]
        deadline = time.monotonic() + 120
        while "BACKFILL" not in _beating(dagster.api):
            assert time.monotonic() < deadline, (tmp_path / "dagster.log").read_text()[-3000:]
            time.sleep(1)
    assert not any(group_alive(group) for group in groups)


def test_servers_started_with_sigint_ignored_still_stop_on_it(tmp_path, monkeypatch, capfd):
    """A make run in a script's background starts with SIGINT ignored and passes that on; the code server and
    the daemon take it back, so that stopping ends them with SIGINT rather than by killing them."""
    import signal

    from pipelines.resources.paths import ensure_dagster_home
    from pipelines.services import LocalDagster

    env = subprocess_env(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    monkeypatch.setenv("CONVLAB_HOME", env["CONVLAB_HOME"])
    ensure_dagster_home()
    dagster = LocalDagster(env=env, log_path=tmp_path / "dagster.log")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what its processes inherit
    try:
        with dagster:
            servers = {"code server": dagster.code_server, "daemon": dagster.daemon}
            status = open(f"/proc/{dagster.code_server.pid}/status").read()
            ignored = int(re.search(r"^SigIgn:\s*([0-9a-f]+)", status, re.M).group(1), 16)
            assert ignored & (1 << (signal.SIGINT - 1)) == 0, "the code server still ignores SIGINT"
    finally:
        signal.signal(signal.SIGINT, previous)
    ended = {name: process.returncode for name, process in servers.items()}
    assert all(code is not None and code >= 0 for code in ended.values()), (ended, capfd.readouterr().err)
    assert "did not stop" not in capfd.readouterr().err
