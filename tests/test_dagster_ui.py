"""The graph run the ways users run it: through a running Dagster webserver and daemon.

One Dagster as `make run` starts it (its code server, which forks runs warm,
the webserver and the daemon) on free ports of 127.0.0.1 over temporary
stores, driven through the webserver's GraphQL API, the API the UI calls: (b) `make run`, which submits one backfill of every
asset over every partition (the UI's own request for a backfill), (a)
"Materialize all" with one training partition selected, (c) the weekly
rebuild, tick by tick. Each is judged on the
instance: which (asset, partition) pairs were materialised and which checks
were evaluated, in that way's own runs. Tiny data: the four experiments of the tests
(tests/conftest.py), 400 digits, 3 epochs.
"""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from conftest import TINY_MNIST, TINY_TRAINING, experiment_runs, free_port, subprocess_env

pytestmark = pytest.mark.slow

TINY_CONFIG = {"ops": {"mnist": {"config": TINY_MNIST}, "trained_model": {"config": TINY_TRAINING},
                       "infinite_mnist": {"config": {"statistics_count": 500}},
                       "hallucinations": {"config": {"steps": 10, "class_steps": 10}},
                       "semantic_segmentation": {"config": {"scenes": 32, "heldout_scenes": 16, "epochs": 1}}}}
WAIT_SECONDS = 600


@pytest.fixture(scope="module")
def lab(module_home):
    from pipelines.resources.paths import ensure_dagster_home
    from pipelines.services import LocalDagster

    ensure_dagster_home()
    log = module_home / "dagster.log"
    # The address the runs write into their figures' inline links (make ui's file route), on a free port here.
    files = f"http://127.0.0.1:{free_port()}"
    with LocalDagster(env=subprocess_env(module_home, CONVLAB_FILES_URL=files), log_path=log) as dagster:
        with dg.DagsterInstance.get() as instance:
            yield {"api": dagster.api, "instance": instance, "home": module_home, "log": log, "results": {},
                   "files_url": files}


def _defs():
    from pipelines.definitions import defs

    return defs


def everything() -> set[tuple[str, str | None]]:
    """Every (asset, partition) of the graph: unpartitioned assets once, partitioned ones per partition."""
    graph = _defs().resolve_asset_graph()
    pairs = set()
    for key in graph.materializable_asset_keys:
        partitions = graph.get(key).partitions_def
        for partition in (partitions.get_partition_keys() if partitions else [None]):
            pairs.add((key.to_user_string(), partition))
    return pairs


def every_check() -> set[str]:
    return {f"{key.asset_key.to_user_string()}:{key.name}" for key in _defs().resolve_asset_graph().asset_check_keys}


def wait_for_runs(api, run_ids: list[str], timeout: float = WAIT_SECONDS) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = {run_id: api.run_status(run_id) for run_id in run_ids}
        if all(status in ("SUCCESS", "FAILURE", "CANCELED") for status in statuses.values()):
            return statuses
        time.sleep(2)
    raise AssertionError(f"runs not finished within {timeout} s: {statuses}")


def wait_for_backfill(api, backfill_id: str, done: set[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while (status := api.backfill_status(backfill_id)) not in done and time.monotonic() < deadline:
        time.sleep(2)
    return status


def produced(instance: dg.DagsterInstance, run_ids: list[str]) -> tuple[set, set]:
    """(asset, partition) pairs materialised and `asset:check` names evaluated (with their outcome) in these runs."""
    materialised, checks = set(), {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            event = entry.dagster_event
            materialised.add((event.asset_key.to_user_string(), event.partition))
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.event_specific_data
            name = f"{evaluation.asset_check_key.asset_key.to_user_string()}:{evaluation.check_name}"
            checks.setdefault(name, []).append(evaluation.passed)
    return materialised, checks


# `make run`'s options for the tiny config (what it does not offer keeps its default).
MAKE_RUN_ARGS = ["--source", "sample", "--train-limit", str(TINY_MNIST["train_limit"]),
                 "--test-limit", str(TINY_MNIST["test_limit"]), "--epochs", str(TINY_TRAINING["epochs"]),
                 "--batch-size", str(TINY_TRAINING["batch_size"]), "--lr", str(TINY_TRAINING["lr"]), "--quick-analyses"]


def test_make_run_submits_one_backfill_over_every_partition_that_materialises_everything(lab, capsys):
    """(b) `make run` against the running Dagster (as with `make ui`): one backfill, the UI's own request."""
    from pipelines import run as make_run
    from pipelines.dagster_api import BACKFILL_DONE, BACKFILL_TAG
    from pipelines.services import record_ui

    api, instance = lab["api"], lab["instance"]
    record_ui(lab["home"] / "dagster", api.url)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        make_run.main(MAKE_RUN_ARGS)
    finally:
        for signum, handler in handlers.items():  # make run turns SIGTERM into Ctrl-C for itself
            signal.signal(signum, handler)
    printed = capsys.readouterr().out
    assert f"submitting to the running Dagster of make ui: {api.url}" in printed
    backfill_id = re.search(r"backfill (\w+): every asset over 4 experiment partition", printed).group(1)
    # make run ends when the outcome is decided; the daemon records it at its next look
    status = wait_for_backfill(api, backfill_id, BACKFILL_DONE)
    runs = api.runs(tags={BACKFILL_TAG: backfill_id})
    partitions = [key for asset, key in everything() if asset == "trained_model"]
    assert status == "COMPLETED_SUCCESS", (status, [(r.run_id, r.status) for r in runs], lab["log"])
    assert all(r.status == "SUCCESS" for r in runs)
    materialised, checks = produced(instance, [r.run_id for r in runs])
    assert materialised == everything()
    assert set(checks) == every_check()
    # One run per training partition (its own MLflow run), one per group of unpartitioned assets.
    assert sorted(r.partition for r in runs if r.partition) == sorted(partitions)
    for run in runs:  # make run printed each run as it finished
        assert f"(run {run.run_id[:8]})" in printed
    assert "lecture report (" in printed and "claims hold)" in printed
    assert_console_reads_well(printed)
    # the first make run here had no total to go by; the next one like it is told this one's time
    from pipelines.run_history import estimate_total, past_runs, this_machine

    assert "estimated total: known once one make run of these experiments has finished" in printed
    [kept] = past_runs(lab["home"])
    assert sorted(kept.experiments) == sorted(partitions) and kept.machine == this_machine()
    assert kept.settings["source"] == "sample" and kept.settings["quick_analyses"] is True
    finished_in = float(re.search(r"finished in (\d+) s", printed).group(1))
    assert abs(kept.wall_s - finished_in) < 30 and kept.training_estimate_s > 0
    assert 0 < kept.training_wall_s < kept.wall_s  # its trainings, as the results table summed them
    assert estimate_total(lab["home"], kept.machine, kept.experiments, kept.settings,
                          kept.training_estimate_s).seconds == kept.wall_s
    lab["results"]["backfill"] = {"id": backfill_id, "runs": [r.run_id for r in runs], "materialised": materialised}


def assert_console_reads_well(printed: str) -> None:
    """What a teacher sees of make run: no Dagster banner, the sample said once, results in reading order."""
    assert "Telemetry" not in printed and "Welcome to Dagster" not in printed
    assert printed.lower().count("5,000-digit") == 1, printed
    assert "URLError" not in printed and "\x1b[K" not in printed  # not a terminal: no live line drawn
    results = printed.split("=== results ===\n", 1)[1]
    data_line, header, *rows = results.split("\n\n", 1)[0].splitlines()
    assert data_line.startswith("data: the 5,000-digit MNIST sample (")
    assert header.split()[0] == "partition"
    partitions = [row.split()[0] for row in rows]
    in_order = sorted(partitions, key=lambda key: (key.split(".")[0], key.split(".")[1], int(key.split(".")[2][1:])))
    assert partitions == in_order and len(partitions) == 4, partitions


def test_materialize_all_with_one_partition_selected_loads_the_other_partitions_from_storage(lab):
    """The UI's "Materialize all" with one training partition selected: one run over every asset."""
    api, instance = lab["api"], lab["instance"]
    assert "backfill" in lab["results"], "needs the partitions the backfill stored"
    chosen = "seed_cnn.shifted.s0"
    run_id = api.launch_assets_run(sorted({asset for asset, _ in everything()}), partition=chosen,
                                   run_config=TINY_CONFIG)
    statuses = wait_for_runs(api, [run_id])
    assert statuses[run_id] == "SUCCESS", api.failure_reasons(run_id)
    materialised, checks = produced(instance, [run_id])
    expected = {(asset, partition) for asset, partition in everything() if partition in (None, chosen)}
    assert materialised == expected
    assert set(checks) == every_check()
    # The analyses read the other partitions' stored values: the report names the backfill's runs for them.
    report = _defs().load_asset_value("lecture_report", instance=instance)
    runs = {row["partition"]: row["mlflow_run_id"] for row in report["runs"]}
    mlflow = {run.data.tags["dagster.partition"]: run for run in experiment_runs(lab["home"])
              if run.info.run_id in runs.values()}
    assert set(runs) == {p for a, p in everything() if a == "trained_model"}
    assert mlflow[chosen].data.tags["dagster.run_id"] == run_id
    assert mlflow["seed_cnn.plain.s0"].data.tags["dagster.run_id"] in lab["results"]["backfill"]["runs"]
    lab["results"]["materialize_all"] = {"id": run_id, "materialised": materialised}


def _requested(result) -> dict[str, set]:
    """What one automation evaluation requested: asset name -> partitions (None for unpartitioned)."""
    requested = {}
    for asset_result in result.results:
        subset = asset_result.true_subset
        if not subset.size or not isinstance(asset_result.key, dg.AssetKey):
            continue
        partitions = subset.expensively_compute_partition_keys() if subset.is_partitioned else {None}
        requested[asset_result.key.to_user_string()] = set(partitions)
    return requested


def test_one_weekly_tick_rebuilds_every_asset_once_in_dependency_order(lab):
    """The weekly rebuild's conditions evaluated on this instance at a cron tick (simulated time), and
    what they request launched through the webserver, round after round, until nothing more is asked."""
    api, instance = lab["api"], lab["instance"]
    defs = _defs()
    now = datetime(2027, 1, 4, 2, 59, tzinfo=timezone.utc)  # a Monday, one minute before the tick
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now)
    assert result.total_requested == 0
    run_ids, rounds = [], []
    for _ in range(10):
        now += timedelta(minutes=2)
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now,
                                                   cursor=result.cursor)
        requested = _requested(result)
        if not requested:
            break
        rounds.append(sorted(requested))
        unpartitioned = sorted(asset for asset, parts in requested.items() if parts == {None})
        by_partition: dict[str, list[str]] = {}
        for asset, parts in requested.items():
            for partition in parts - {None}:
                by_partition.setdefault(partition, []).append(asset)
        launched = ([api.launch_assets_run(unpartitioned, run_config=TINY_CONFIG)] if unpartitioned else [])
        launched += [api.launch_assets_run(sorted(assets), partition=partition, run_config=TINY_CONFIG,
                                           tags={"convlab/trigger": "weekly"})
                     for partition, assets in sorted(by_partition.items())]
        statuses = wait_for_runs(api, launched)
        assert set(statuses.values()) == {"SUCCESS"}, {r: api.failure_reasons(r) for r in launched}
        run_ids += launched
    materialised, checks = produced(instance, run_ids)
    assert materialised == everything() == lab["results"]["backfill"]["materialised"]
    assert set(checks) == every_check()
    assert rounds[0] == ["mnist", "parameter_counts"] and rounds[-1] == ["lecture_report"], rounds
    # Each asset partition exactly once: no asset was rebuilt twice for one tick.
    assert sum(len(instance.all_logs(r, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)) for r in run_ids) \
        == len(everything())
    lab["results"]["weekly"] = {"rounds": rounds, "runs": run_ids}


def test_the_report_names_the_runs_it_read_and_embeds_every_figure(lab):
    from conv_core.report import REPORT_FIGURES

    report = _defs().load_asset_value("lecture_report", instance=lab["instance"])
    html = Path(report["path"]).read_text()
    assert report["figures_missing"] == []
    assert "Figure not available" not in html
    assert html.count("data:image/png;base64,") >= len(REPORT_FIGURES)
    mlflow_runs = {run.info.run_id: run for run in experiment_runs(lab["home"])}
    for row in report["runs"]:
        assert row["partition"] in html and row["mlflow_run_id"] in html
        run = mlflow_runs[row["mlflow_run_id"]]
        assert run.data.tags["dagster.partition"] == row["partition"]
        assert run.info.run_name == row["partition"].replace(".", "/")
        assert run.info.status == "FINISHED"


def test_the_asset_page_shows_figures_inline_and_embedded_in_a_browser(lab):
    """filter_figures' page in Chromium: a figure drawn in place (loaded from the file route make ui serves),
    and the same figure embedded as a PNG (data: URL) at a readable width behind its [Show Markdown] button."""
    from test_report_browser import CHROMEDRIVER, CHROMIUM, start_chromium

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("no /usr/bin/chromium or /usr/bin/chromedriver: apt-get install -y chromium chromium-driver")
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from pipelines.resources.paths import storage_dir
    from pipelines.services import serve_files

    assert "backfill" in lab["results"], "needs the figures the backfill made"
    files = serve_files(storage_dir(), "127.0.0.1", int(lab["files_url"].rsplit(":", 1)[1]))
    browser = start_chromium(lab["home"] / "chromium-profile", page_load_timeout=120)
    try:
        browser.get(f"{lab['api'].url}/assets/filter_figures?view=events")
        inline = f"img[src^='{lab['files_url']}/figures/filter_figures/']"
        width = "return arguments[0].complete ? arguments[0].naturalWidth : 0"
        drawn = WebDriverWait(browser, 120, poll_frequency=1).until(lambda b: [
            b.execute_script(width, image) for image in b.find_elements(By.CSS_SELECTOR, inline)
            if b.execute_script(width, image)])
        # Readable sizes: the thumbnails these replace were 40 dpi, under 200 pixels for the filter grids.
        assert len(drawn) >= 2 and max(drawn) >= 400, drawn
        # Clicked from script: the UI may lay a dialog's backdrop over the page (the element is there all the same).
        browser.execute_script("arguments[0].click()", browser.find_elements(By.XPATH, "//*[text()='[Show Markdown]']")[0])
        embedded = WebDriverWait(browser, 30, poll_frequency=0.5).until(lambda b: [
            b.execute_script(width, image)
            for image in b.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png;base64,']")
            if b.execute_script(width, image)])
        assert max(embedded) >= 250, embedded
    finally:
        browser.quit()
        files.shutdown()


def test_a_failed_step_reports_its_exception_class_and_message(lab):
    from pipelines.jobs import failure_reasons

    api, instance = lab["api"], lab["instance"]
    bad = {"ops": {**TINY_CONFIG["ops"], "trained_model": {"config": {**TINY_TRAINING, "lr": -1.0}}}}
    run_id = api.launch_assets_run(["trained_model"], partition="seed_cnn.plain.s0", run_config=bad)
    assert wait_for_runs(api, [run_id])[run_id] == "FAILURE"
    expected = "trained_model: ValueError: TrainConfig.lr must be positive, got -1.0"
    assert api.failure_reasons(run_id) == [expected]  # what make run prints
    events = [e.dagster_event for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]
    assert failure_reasons(events) == [expected]  # what the failure sensor logs


def _epochs_logged(home, run_id: str) -> int:
    from conftest import tracking_client

    return len(tracking_client(home).get_metric_history(run_id, "train_loss"))


def test_a_run_killed_mid_training_is_ended_and_the_rerun_resumes_from_its_checkpoint(lab):
    """kill -9 of a training run's process: within a bounded time the daemon ends it FAILED (its MLflow run too)
    and frees its `gpu` pool slot, so the rerun, queued behind it, trains, resuming after the last saved epoch."""
    from pipelines.recovery import run_pid

    api, instance, home = lab["api"], lab["instance"], lab["home"]
    partition = "mlp.plain.s0"
    long = {"ops": {**TINY_CONFIG["ops"], "trained_model": {"config": {**TINY_TRAINING, "epochs": 100}}}}
    killed = api.launch_assets_run(["trained_model"], partition=partition, run_config=long)
    deadline = time.monotonic() + 180
    mlflow_run = None
    while mlflow_run is None or _epochs_logged(home, mlflow_run.info.run_id) < 3:
        assert time.monotonic() < deadline, "the long run never got to its third epoch"
        assert api.run_status(killed) in ("QUEUED", "STARTING", "STARTED")
        mlflow_run = next((r for r in experiment_runs(home) if r.data.tags.get("dagster.run_id") == killed), None)
        time.sleep(0.5)
    os.kill(run_pid(instance, killed), signal.SIGKILL)
    killed_at, killed_wall = time.monotonic(), time.time()
    rerun = api.launch_assets_run(["trained_model"], partition=partition, run_config=long)

    while api.run_status(killed) != "FAILURE":
        assert time.monotonic() - killed_at < 120, "the killed run was not ended within 120 s"
        time.sleep(1)
    # What make run prints for it: no step failed, so the run's own failure, which names its process.
    reasons = api.failure_reasons(killed)
    assert reasons and all("process" in reason for reason in reasons), reasons
    statuses = wait_for_runs(api, [rerun])
    assert statuses[rerun] == "SUCCESS", api.failure_reasons(rerun)
    # Its MLflow run is ended by whichever comes first: the dead-run sensor, or (when the code server saw its
    # child die and failed the run itself) the run-failure sensor. Both tick every 30 s.
    while (killed_mlflow := next(r for r in experiment_runs(home) if r.info.run_id == mlflow_run.info.run_id)) \
            .info.status == "RUNNING":
        assert time.monotonic() - killed_at < 120, "the killed run's MLflow run was not ended within 120 s"
        time.sleep(2)
    assert killed_mlflow.info.status == "FAILED"
    logs = [e.user_message for e in instance.all_logs(rerun) if "resuming" in (e.user_message or "")]
    assert logs and "after epoch" in logs[0], "the rerun started over instead of resuming"
    epochs = [e.timestamp for e in instance.all_logs(rerun) if re.match(r"epoch \d+/", e.user_message or "")]
    seconds = min(epochs) - killed_wall
    lab["results"]["kill"] = {"killed": killed, "rerun": rerun, "kill_to_rerun_first_epoch_s": seconds}
    print(f"\nkill -9 -> the rerun's first epoch: {seconds:.0f} s; killed run {killed}: FAILURE in Dagster "
          f"({reasons[0]}), {killed_mlflow.info.status} in MLflow")


def test_the_ways_of_running_the_graph_agree(lab):
    """The same (asset, partition) set from make run's backfill and the weekly tick; "Materialize all" over one
    partition gives that partition's share of it. Printed for the record (pytest -s)."""
    results = lab["results"]
    assert {"backfill", "materialize_all", "weekly"} <= set(results), "the three ways must have run first"
    assert results["backfill"]["materialised"] == set(everything())
    assert results["materialize_all"]["materialised"] <= results["backfill"]["materialised"]
    print(f"\nmake run backfill {results['backfill']['id']}: runs {', '.join(r[:8] for r in results['backfill']['runs'])}"
          f"\nMaterialize all [seed_cnn.shifted.s0]: run {results['materialize_all']['id'][:8]}, "
          f"{len(results['materialize_all']['materialised'])} materialisations"
          f"\nweekly tick: rounds {results['weekly']['rounds']}; runs "
          f"{', '.join(r[:8] for r in results['weekly']['runs'])}"
          f"\nboth whole-graph ways: the same {len(everything())} (asset, partition) materialisations")
