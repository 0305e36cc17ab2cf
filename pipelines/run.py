"""`make run`: materialise the whole asset graph as one Dagster backfill, then summarise.

A thin client of Dagster's own machinery: it submits one backfill of every
asset over the selected experiment partitions through the webserver's API
(the same request as the UI's "Materialize" over those partitions), prints
each run as it finishes, and reads the results back from storage. The runs
are launched by the daemon, queued and pooled like any other, and stay in
the UI's history. It uses the Dagster of a running `make ui`, else starts
its own (webserver and daemon on a free port) for the duration.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass

from conv_core.datasets import DATASET_NAMES
from conv_core.experiments import DATA_VARIANTS, Experiment
from conv_core.models import MODEL_NAMES
from pipelines import run_history
from pipelines.dagster_api import BACKFILL_DONE, BACKFILL_TAG, RUN_DONE, BackfillProgress, DagsterApi, RunSummary
from pipelines.recovery import fail_dead_runs
from pipelines.resources.partitions import EXPERIMENTS_VARIABLE, experiments
from pipelines.resources.paths import convlab_home, ensure_dagster_home, file_url, storage_dir
from pipelines.resources.tracking import MlflowTracking
from pipelines.server_profile import use_profile
from pipelines.services import LocalDagster, process_alive, record_run_dagster, running_ui, stop_orphaned_run_dagster

POLL_SECONDS = 2
STOP_GRACE_SECONDS = 10  # for make run's own Dagster once the backfill is settled
TRIGGER_TAG = "convlab/trigger"
SUBMITTER_TAG = "convlab/make-run-pid"
TRAINING_POOL = "gpu"
TRAINING_ASSET = "trained_model"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, choices=DATASET_NAMES,
                        help="data set (default mnist): mnist or fashion_mnist")
    parser.add_argument("--source", default=None, choices=["auto", "download", "idx_dir", "sample"],
                        help="MNIST source (default auto)")
    parser.add_argument("--idx-dir", default=None, help="folder with the four MNIST IDX files")
    parser.add_argument("--models", nargs="+", default=None, choices=MODEL_NAMES,
                        help="train only the experiments of these models")
    parser.add_argument("--variants", nargs="+", default=None, choices=DATA_VARIANTS,
                        help="train only the experiments on these data variants")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="train only the experiments with these seeds")
    parser.add_argument("--heldout-idx-dir", default=None,
                        help="also evaluate every model on the t10k-* files of this IDX folder")
    parser.add_argument("--epochs", type=int, default=None, help="override the training epochs")
    parser.add_argument("--budget", type=int, default=None, metavar="IMAGES",
                        help="images each training run sees when --epochs is not given (default: TrainConfig's)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the training batch size")
    parser.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                        help="training arithmetic: auto (default) is bf16 autocast where the device has bf16 "
                             "units (CUDA, AVX-512 BF16 or AMX CPUs), else fp32")
    parser.add_argument("--train-limit", type=int, default=None, help="train on a subset (quick runs)")
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--quick-analyses", action="store_true",
                        help="analyses at a glance, in seconds: fewer hallucination steps, segmentation scenes and "
                             "deformation statistics (the figures are rougher; the claims are still decided)")
    return parser.parse_args(argv)


def selected_experiments(args: argparse.Namespace) -> list[Experiment]:
    """The experiment partitions the filters keep; an error naming what exists when none (or a bad seed) is asked."""
    known = experiments()
    seeds = sorted({e.seed for e in known})
    unknown = sorted(set(args.seeds or []) - set(seeds))
    if unknown:
        raise SystemExit(f"seed(s) {unknown} are not in the experiment set (seeds {seeds}; "
                         f"{EXPERIMENTS_VARIABLE} picks the set)")
    chosen = [e for e in known if (not args.models or e.model in args.models)
              and (not args.variants or e.variant in args.variants) and (not args.seeds or e.seed in args.seeds)]
    if not chosen:
        raise SystemExit("no experiment matches --models/--variants/--seeds; the set is: "
                         + ", ".join(e.key for e in known))
    return chosen


def check_the_rest_is_stored(chosen: list[Experiment]) -> None:
    """The comparison and the report read every training partition: those not chosen must be stored already.
    Said before any training starts, not after."""
    import dagster as dg

    from pipelines.resources.io_manager import ConvlabIOManager

    storage = ConvlabIOManager()
    missing = [e.key for e in experiments() if e not in chosen
               and not storage.has_stored(dg.AssetKey("trained_model"), e.key)]
    if missing:
        raise SystemExit(f"run_comparison and the report read every experiment, and these, not selected, have "
                         f"never been trained here: {', '.join(missing)}. Run `make run` without "
                         "--models/--variants/--seeds first (or select them too).")


# The analyses' settings for `--quick-analyses`: each a fraction of its default's work.
QUICK_ANALYSES = {"infinite_mnist": {"statistics_count": 500}, "hallucinations": {"steps": 20, "class_steps": 20},
                  "semantic_segmentation": {"scenes": 32, "heldout_scenes": 16, "epochs": 1}}


def run_config(args: argparse.Namespace) -> dict:
    """The launchpad config the backfill's runs get (only what was asked; the rest keeps its defaults)."""
    mnist = {"dataset": args.dataset, "source": args.source, "idx_dir": args.idx_dir, "train_limit": args.train_limit,
             "test_limit": args.test_limit}
    training = {"epochs": args.epochs, "budget_images": args.budget, "batch_size": args.batch_size, "lr": args.lr,
                "precision": args.precision}
    ops = {"mnist": {k: v for k, v in mnist.items() if v is not None},
           "trained_model": {k: v for k, v in training.items() if v is not None},
           "model_evaluation": {"heldout_idx_dir": args.heldout_idx_dir} if args.heldout_idx_dir else {}}
    if args.quick_analyses:
        ops.update(QUICK_ANALYSES)
    return {"ops": {name: {"config": config} for name, config in ops.items() if config}}


def training_estimate(args: argparse.Namespace, chosen: list[Experiment]) -> tuple[float, int, str]:
    """Seconds, how many trainings share the machine at once, and the line `estimated training: ...`: the
    budget's (or --epochs') steps of every run times this machine's measured seconds per step, the runs sharing
    it as the run queue lets them; the data's size assumed from the options."""
    from conv_core.data import VALIDATION_FRACTION
    from conv_core.train import (PRECISIONS, TrainConfig, estimate_training_seconds, planned_epochs,
                                 resolve_device, trainings_at_once)

    full_mnist_here = any((convlab_home() / "data" / "MNIST" / "raw").glob("train-images*"))
    sample = args.source == "sample" or (args.dataset in (None, "mnist") and args.source in (None, "auto")
                                         and not args.idx_dir and not full_mnist_here)
    available = 4_000 if sample else 60_000
    images = round(min(available, args.train_limit or available) * (1 - VALIDATION_FRACTION))
    device = resolve_device("auto")
    settings = {k: v for k, v in {"epochs": args.epochs, "budget_images": args.budget, "batch_size": args.batch_size,
                                  "bf16": PRECISIONS[args.precision or "auto"]}.items() if v is not None}
    configs = [TrainConfig(model=e.model, device=device.type, **settings) for e in chosen]
    seconds = estimate_training_seconds(configs, images, device)
    epochs = planned_epochs(configs[0], images)
    at_once = min(len(configs), trainings_at_once(device))
    line = (f"estimated training: {seconds / 60:.1f} min ({len(chosen)} runs x {epochs} epochs of {images:,} "
            f"{'sample ' if sample else ''}images, {at_once} at once, at the steps/s measured on this idle "
            f"{device.type}; evaluation, the analyses and Dagster's scheduling come on top)")
    return seconds, at_once, line


# The options that change what a make run computes (the rest only say how it is shown).
WORK_OPTIONS = ("dataset", "source", "idx_dir", "train_limit", "test_limit", "heldout_idx_dir", "epochs", "budget",
                "batch_size", "lr", "precision", "quick_analyses")


def work_settings(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in WORK_OPTIONS if getattr(args, name) not in (None, False)}


def asset_names() -> list[str]:
    from pipelines.definitions import defs

    return sorted(key.to_user_string() for key in defs.resolve_asset_graph().materializable_asset_keys)


def _describe(run: RunSummary) -> str:
    what = f"[{run.partition}] " if run.partition else ""
    assets = ", ".join(run.assets) if len(run.assets) <= 4 else f"{len(run.assets)} assets"
    took = f" in {run.seconds:.0f} s" if run.seconds else ""
    return f"{run.status.lower():>8}: {what}{assets}{took} (run {run.run_id[:8]})"


# What training logs once per epoch (conv_core.train): "epoch 3/30  train loss 0.1234 acc 96.10%  validation
# loss 0.1500 acc 95.20%  ...". Read back from the run's Dagster events, where every line stays in full.
EPOCH_LINE = re.compile(r"epoch (?P<epoch>\d+)/(?P<epochs>\d+)\s+train loss (?P<loss>[\d.]+) acc (?P<train>[\d.]+)%"
                        r"(?:\s+validation loss [\d.]+ acc (?P<validation>[\d.]+)%)?")
TRAINING_START = re.compile(r"^(training|resuming) ")
BAR_WIDTH = 12


@dataclass
class RunProgress:
    """How far one run's training has got, from its events."""

    started_at: float | None = None  # when its training loop started (or resumed)
    first_epoch: int = 0  # the epoch it resumed after (0: a fresh start)
    epoch: int = 0
    epochs: int = 0
    loss: float | None = None
    accuracy: float | None = None  # validation accuracy if there is a validation split, else training accuracy
    last_epoch_at: float | None = None

    def read(self, message: str, timestamp: float) -> None:
        if TRAINING_START.match(message):
            self.started_at = timestamp
            resumed = re.search(r"after epoch (\d+)", message)
            self.first_epoch = int(resumed.group(1)) if resumed else 0
            return
        epoch = EPOCH_LINE.search(message)
        if epoch:
            self.epoch, self.epochs = int(epoch["epoch"]), int(epoch["epochs"])
            self.loss = float(epoch["loss"])
            self.accuracy = float(epoch["validation"] or epoch["train"]) / 100
            self.last_epoch_at = timestamp

    def eta_seconds(self) -> float | None:
        """The rest of the training at the pace of its epochs so far."""
        done = self.epoch - self.first_epoch
        if not done or self.started_at is None or self.last_epoch_at is None:
            return None
        return (self.last_epoch_at - self.started_at) / done * (self.epochs - self.epoch)

    def line(self) -> str:
        if not self.epochs:
            return "preparing" if self.started_at is None else "training, first epoch"
        filled = round(BAR_WIDTH * self.epoch / self.epochs)
        eta = self.eta_seconds()
        return (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] epoch {self.epoch}/{self.epochs} "
                f"loss {self.loss:.3f} acc {self.accuracy:.1%}" + (f" ETA {_clock(eta)}" if eta is not None else ""))


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}:{seconds:02d}"


RUN_MESSAGES = """query($id: ID!, $after: String) { logsForRun(runId: $id, afterCursor: $after, limit: 1000) {
    __typename ... on EventConnection { cursor hasMore events { __typename ... on MessageEvent { message timestamp } } }
    ... on Error { message } } }"""


class ProgressReader:
    """The training progress of running runs, read incrementally from their Dagster events (the UI's own source)."""

    def __init__(self, api: DagsterApi):
        self.api = api
        self.cursors: dict[str, str | None] = {}
        self.progress: dict[str, RunProgress] = {}

    def update(self, run_id: str) -> RunProgress:
        progress = self.progress.setdefault(run_id, RunProgress())
        while True:
            answer = self.api.query(RUN_MESSAGES, {"id": run_id, "after": self.cursors.get(run_id)})["logsForRun"]
            if answer["__typename"] != "EventConnection":
                return progress
            for event in answer["events"]:
                if event.get("message"):
                    progress.read(event["message"], float(event["timestamp"]) / 1000)
            self.cursors[run_id] = answer["cursor"]
            if not answer["hasMore"]:
                return progress


class Console:
    """Finished runs as lines; on a terminal, one live line below them for the runs still going."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.shown = False

    def say(self, text: str, stream=None) -> None:
        self.clear()
        print(text, file=stream or self.stream, flush=True)

    def status(self, text: str) -> None:
        if not self.live:
            return
        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r\033[K" + (text if len(text) <= width else text[:width - 3] + "..."))
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def running_line(going: list[RunSummary], reader: ProgressReader | None, now: float) -> str:
    """One line for the runs still going: the first training run in full (its progress bar), the rest counted."""
    if not going:
        return "waiting for the daemon to launch the next runs"
    started = [r for r in going if r.status != "QUEUED"]
    training = [r for r in started if TRAINING_ASSET in r.assets]
    if training and reader is not None:
        run = min(training, key=lambda r: r.start_time or now)
        shown = f"[{run.partition}] {reader.update(run.run_id).line()}"
    elif started:
        run = min(started, key=lambda r: r.start_time or now)
        what = f"[{run.partition}]" if run.partition else f"{len(run.assets)} assets"
        shown = f"{what} running {now - (run.start_time or now):.0f} s"
    else:
        return f"{len(going)} run(s) queued"
    others = len(going) - 1
    return shown + (f"  (+{others} more)" if others else "")


def pool_waits(api: DagsterApi, runs: list[RunSummary]) -> str | None:
    """`waiting for the gpu pool: held by run ... [partition]` while a training run of ours waits in the queue."""
    if not any(r.status == "QUEUED" and TRAINING_ASSET in r.assets for r in runs):
        return None
    holders = [r for r in api.runs(statuses=["STARTING", "STARTED", "CANCELING"]) if TRAINING_ASSET in r.assets]
    ours = {r.run_id for r in runs}
    named = [f"{r.run_id[:8]}" + (f" [{r.partition}]" if r.partition else "") + ("" if r.run_id in ours else
                                                                                   " (not of this backfill)")
             for r in holders]
    return f"waiting for the {TRAINING_POOL} pool: held by run {', '.join(named)}" if named else None


def settled_status(progress: BackfillProgress, runs: list[RunSummary]) -> str | None:
    """The backfill's final state once nothing more will run, else None; the caller knows all its runs ended.

    Dagster marks a backfill complete at the daemon's next look after its last run (a few seconds
    later with pipelines.daemon, up to 30 s with Dagster's own). Once the daemon has launched every
    target and every run has ended, the outcome is already decided: the runs' states say it, without
    that wait."""
    if progress.status in BACKFILL_DONE:
        return progress.status
    if progress.status == "REQUESTED" and progress.unlaunched == 0 and runs:
        return "COMPLETED_SUCCESS" if all(r.status == "SUCCESS" for r in runs) else "COMPLETED_FAILED"
    return None


def backfill_outcome(api: DagsterApi, backfill_id: str) -> tuple[str | None, list[RunSummary]]:
    """(The backfill's final state once nothing more will run, else None; its runs.)

    The progress is read before the runs: the daemon counts a target launched only once its run
    exists, so the runs read after a progress that says "all launched" are all of them."""
    progress = api.backfill_progress(backfill_id)
    runs = api.runs(tags={BACKFILL_TAG: backfill_id})
    return (settled_status(progress, runs) if all(r.status in RUN_DONE for r in runs) else None), runs


def follow(api: DagsterApi, backfill_id: str, console: Console | None = None) -> tuple[str, list[RunSummary]]:
    """Print each run of the backfill as it finishes (and why it failed); return the final state and the runs.
    On a terminal a live line shows the runs still going, training ones with a progress bar."""
    console = console or Console()
    reader = ProgressReader(api) if console.live else None
    reported: set[str] = set()
    waiting = None
    while True:
        runs = api.runs(tags={BACKFILL_TAG: backfill_id})
        for run in sorted(runs, key=lambda r: r.end_time or 0):
            if run.status in RUN_DONE and run.run_id not in reported:
                reported.add(run.run_id)
                console.say(_describe(run))
                if run.status == "FAILURE":
                    for reason in api.failure_reasons(run.run_id) or ["no error was logged"]:
                        console.say(f"          {reason}", stream=sys.stderr)
                    console.say(f"          its events: {api.url}/runs/{run.run_id}", stream=sys.stderr)
        if all(r.status in RUN_DONE for r in runs):  # only then can the backfill be over
            status, latest = backfill_outcome(api, backfill_id)
            if status is not None and {r.run_id for r in latest} == {r.run_id for r in runs}:  # all printed
                console.clear()
                return status, runs
        going = [r for r in runs if r.status not in RUN_DONE]
        now_waiting = pool_waits(api, going)
        if now_waiting and now_waiting != waiting:
            console.say(f"          {now_waiting}")
        waiting = now_waiting
        console.status("    now: " + running_line(going, reader, time.time()))
        time.sleep(POLL_SECONDS)


# The results table reads like the experiment names: model, then data variant, then seed.
RESULT_ORDER = ["model", "data_variant", "seed"]


def data_in_brief(instance) -> str | None:
    """What the models were trained on, from the latest `mnist` materialisation: said plainly for the sample."""
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey("mnist"))
    if event is None or event.asset_materialization is None:
        return None
    metadata = event.asset_materialization.metadata
    described = getattr(metadata.get("description"), "value", None) or ""
    is_sample = getattr(metadata.get("is_5000_digit_sample"), "value", False)
    if not is_sample:
        return described or None
    reason = described.split("; used because ", 1)[1] if "; used because " in described else "source sample chosen"
    return (f"the 5,000-digit MNIST sample ({reason}), not the full 70,000-digit MNIST: "
            "accuracies are not comparable to published MNIST results")


def summarise(started: float) -> float:
    """Print the results; returns the training loops' seconds summed over the runs."""
    import dagster as dg

    from assets.analysis import accuracy_by_variant
    from pipelines.definitions import defs

    with dg.DagsterInstance.get() as instance:
        comparison = defs.load_asset_value("run_comparison", instance=instance)
        report = defs.load_asset_value("lecture_report", instance=instance)
        data = data_in_brief(instance)
    import pandas as pd

    runs = pd.DataFrame(comparison["runs"]).sort_values(RESULT_ORDER, kind="stable")
    print("\n=== results ===")
    if data:
        print(f"data: {data}")
    print(runs[["partition", "test_accuracy", "weights", "training_seconds", "epochs", "mlflow_run_id"]]
          .to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print("\ntest accuracy by model and data variant (mean and spread over seeds):")
    print(accuracy_by_variant(runs).to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    mlflow = MlflowTracking()
    print(f"\nfinished in {time.perf_counter() - started:.0f} s")
    print(f"figures and stored assets: {storage_dir()}")
    print(f"lecture report ({report['claims_passed']} of {report['claims_total']} claims hold): {report['path']}")
    link = file_url(report["path"])
    if link:
        print(f"  in a browser while make ui runs: {link}")
    print(f"MLflow store: {mlflow.resolved_uri()} (experiment '{mlflow.resolved_experiment()}')")
    print("open both UIs with: make ui  (Dagster on http://127.0.0.1:3000, MLflow on http://127.0.0.1:5000)")
    return float(runs["training_seconds"].fillna(0).sum())


def cancel_orphaned_backfills(api: DagsterApi) -> None:
    """Backfills of a `make run` that was killed: cancelled, or the daemon would carry them on beside ours."""
    for backfill in api.unfinished_backfills():
        pid = backfill["tags"].get(SUBMITTER_TAG)
        if backfill["tags"].get(TRIGGER_TAG) == "make run" and pid and not process_alive(int(pid)):
            if backfill_outcome(api, backfill["id"])[0] is not None:
                continue  # seen through, its Dagster stopped before marking it complete: the daemon marks it now
            api.cancel_backfill(backfill["id"])
            print(f"recovered: cancelled backfill {backfill['id']} of a make run that is gone (pid {pid})", flush=True)


def submit_and_follow(api: DagsterApi, chosen: list[Experiment], config: dict, submitted=lambda: None) -> str:
    """Submit the backfill, call `submitted()`, follow the backfill to its end; its id."""
    cancel_orphaned_backfills(api)
    backfill_id = api.launch_backfill(asset_names(), [e.key for e in chosen], config, title="make run",
                                      tags={TRIGGER_TAG: "make run", SUBMITTER_TAG: str(os.getpid())})
    submitted()
    print(f"backfill {backfill_id}: every asset over {len(chosen)} experiment partition(s); "
          f"follow it at {api.url}/runs/b/{backfill_id}", flush=True)
    try:
        status, runs = follow(api, backfill_id)
    except KeyboardInterrupt:
        print(f"\ninterrupted: cancelling backfill {backfill_id} (its runs are terminated)", file=sys.stderr, flush=True)
        api.cancel_backfill(backfill_id)
        raise
    failed = [r for r in runs if r.status != "SUCCESS"]
    if status != "COMPLETED_SUCCESS" or failed:
        raise SystemExit(f"backfill {backfill_id} ended {status} with {len(failed)} run(s) not successful; "
                         f"see {api.url}/runs/b/{backfill_id} (make ui)")
    return backfill_id


def recover(tracking: MlflowTracking) -> None:
    """End the runs a killed process left behind (they would hold the training pool for ever)."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        for dead in fail_dead_runs(instance, tracking):
            print(f"recovered: {dead.describe()}", flush=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> None:
    # SIGTERM (kill, a closed terminal) stops like Ctrl-C: the backfill cancelled, our Dagster stopped.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        run(argv)
    except KeyboardInterrupt:
        raise SystemExit("stopped")


def run(argv=None) -> None:
    args = parse_args(argv)
    use_profile()  # CONVLAB_PROFILE=server: the stores of `make services`
    home = ensure_dagster_home()
    chosen = selected_experiments(args)
    check_the_rest_is_stored(chosen)
    started = time.perf_counter()
    machine, keys, settings = run_history.this_machine(), tuple(e.key for e in chosen), work_settings(args)
    groups = stop_orphaned_run_dagster(home)
    if groups:
        print(f"recovered: stopped the Dagster (process groups {', '.join(map(str, groups))}) of a make run "
              "that is gone", flush=True)

    estimate = {}

    def prepare() -> None:
        recover(MlflowTracking())
        print(f"experiments ({len(chosen)}): {', '.join(e.key for e in chosen)}", flush=True)
        estimate["training"], estimate["at_once"], line = training_estimate(args, chosen)
        print(line, flush=True)
        print(run_history.estimate_total(convlab_home(), machine, keys, settings, estimate["training"]).line,
              flush=True)

    def remember(training_summed: float) -> None:  # only a make run that finished: the next one is told its time
        try:
            run_history.record(convlab_home(), run_history.PastRun(
                machine, keys, settings, estimate.get("training", 0.0), time.perf_counter() - started,
                run_history.finished_now(), training_summed / estimate.get("at_once", 1)))
        except OSError as error:  # the results are in: a time not kept must not fail the run
            print(f"this make run's time was not kept for the next estimate: {error}", file=sys.stderr)

    api = running_ui(home)
    if api is not None:
        prepare()
        print(f"submitting to the running Dagster of make ui: {api.url}", flush=True)
        submit_and_follow(api, chosen, run_config(args))
        remember(summarise(started))
    else:
        log = convlab_home() / "logs" / "dagster-run.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"starting Dagster (code server, webserver and daemon; log: {log})", flush=True)
        # every process it starts is recorded at once, so that the next make run can stop them if this one dies
        dagster = LocalDagster(env={**os.environ, "DAGSTER_HOME": str(home)}, log_path=log, daemon_later=True,
                               on_start=lambda groups: record_run_dagster(home, groups))
        try:
            dagster.start()
            prepare()  # while Dagster starts; its daemon, which would act on the runs recovered, comes later
            with dagster:
                submit_and_follow(dagster.api, chosen, run_config(args), submitted=dagster.start_daemon)
                # Every run has ended: nothing of ours is left to wind down (it stops in about 5 s;
                # now and then its webserver sat out the whole default grace). It stops while the
                # results are read and printed.
                stopping = threading.Thread(target=dagster.stop, kwargs={"grace": STOP_GRACE_SECONDS})
                stopping.start()
                try:
                    training_summed = summarise(started)
                finally:
                    stopping.join()
                remember(training_summed)
        finally:
            dagster.stop()


if __name__ == "__main__":
    main()
