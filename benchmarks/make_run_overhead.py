"""Orchestration overhead of `make run`: the share of its wall time in which no asset
computes (process starts, imports, Dagster's daemon and run queue, polling).

    python benchmarks/make_run_overhead.py [--experiments seed_cnn.plain.s0 mlp.plain.s0 ...|all]
        [--make-run-args "--epochs 3 ..."]

It runs `python -m pipelines.run` (what `make run` runs) on a tiny config (the
offline sample cut to 400 training and 200 test digits, 3 epochs) in a fresh
CONVLAB_HOME under a temporary folder, times it, then reads Dagster's event log
there: every step's execution (STEP_START to its success or failure) is
compute; the union of those intervals over all runs is the busy time, and the
rest of the wall time is overhead. The trained_model materialisations'
`training_seconds` are summed as well (the training loops alone), the CPU
time of the processes it ran is set against the CPUs' (what a faster
schedule could still win), and the steps' seconds are listed by step key.
A failed make run leaves its folder behind, named in the error.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conv_core.train import usable_cpus

REPO = Path(__file__).resolve().parents[1]
TINY = ["--source", "sample", "--train-limit", "400", "--test-limit", "200", "--epochs", "3",
        "--batch-size", "8", "--lr", "0.002"]
FEW = ["seed_cnn.plain.s0", "mlp.plain.s0", "seed_cnn.shifted.s0", "seed_cnn.infinite.s0"]


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one (start, end) interval."""
    covered, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    return covered


def step_intervals(home: Path) -> tuple[dict[str, list[tuple[float, float]]], float, list[tuple[float, float]]]:
    """(every step's execution intervals by step key, the summed training_seconds, every run's
    (created, ended)) from the store under home."""
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    import dagster as dg

    starts, intervals, training = {}, {}, 0.0
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records()
        lives = [(r.create_timestamp.timestamp(), r.end_time or r.create_timestamp.timestamp()) for r in runs]
        kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
                 dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.ASSET_MATERIALIZATION}
        for record in runs:
            for entry in instance.all_logs(record.dagster_run.run_id, of_type=kinds):
                event, key = entry.dagster_event, (record.dagster_run.run_id, entry.step_key)
                if event.event_type == dg.DagsterEventType.STEP_START:
                    starts[key] = entry.timestamp
                elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                    seconds = entry.asset_materialization.metadata.get("training_seconds")
                    training += float(seconds.value) if seconds is not None else 0.0
                elif key in starts:
                    intervals.setdefault(entry.step_key, []).append((starts.pop(key), entry.timestamp))
    return intervals, training, lives


def overhead_parts(began: float, ended: float, busy: list[tuple[float, float]],
                   lives: list[tuple[float, float]]) -> dict[str, float]:
    """Where the seconds in which no step computes went, from the run records alone:
    before the first run was created, between runs (no run exists: the daemon has yet to look and
    launch the next level), inside runs but outside steps (queue, process start, imports), after."""
    first, last = min(c for c, _ in lives), max(e for _, e in lives)
    some_run = union_seconds(lives)
    inside = union_seconds([(max(s, first), min(e, last)) for s, e in busy if e > first and s < last])
    return {"before the first run (start-up, submission, the daemon's first look)": first - began,
            "no run exists (the daemon's next look at a graph level)": (last - first) - some_run,
            "a run exists, no step computes (queue, process start, imports)": some_run - inside,
            "after the last run (summary, stopping Dagster)": ended - last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=FEW,
                        help="partition keys to run, or 'all' for the default experiment set")
    parser.add_argument("--make-run-args", default=" ".join(TINY), help="options for pipelines.run")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="an empty folder to run in and leave behind (its Dagster and MLflow stores, the "
                             "figures, the log), instead of a temporary one")
    args = parser.parse_args()
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"--keep {args.keep}: not empty")

    with tempfile.TemporaryDirectory(prefix="convlab-overhead-") as folder:
        home = args.keep.resolve() if args.keep else Path(folder) / "convlab"
        (home / "dagster").mkdir(parents=True)
        env = {k: v for k, v in os.environ.items()
               if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "CONVLAB_PROFILE")}
        env.update(CONVLAB_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), PYTHONUNBUFFERED="1")
        if args.experiments != ["all"]:
            env["CONVLAB_EXPERIMENTS"] = ",".join(args.experiments)
        command = [sys.executable, "-m", "pipelines.run", *shlex.split(args.make_run_args)]
        load_before = os.getloadavg()[0]
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.time()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        ended = time.time()
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = ended - began
        if done.returncode != 0:
            kept = home if args.keep else Path(shutil.move(str(home), tempfile.mkdtemp(prefix="convlab-failed-")))
            raise SystemExit(f"make run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n"
                             f"its stores and logs are kept in {kept} (DAGSTER_HOME={kept / 'dagster'} "
                             f"dagster-webserver shows the failed run)")
        estimate = next((line for line in done.stdout.splitlines() if line.startswith("estimated training")), None)
        by_step, training, lives = step_intervals(home)

    intervals = [interval for step in by_step.values() for interval in step]
    busy = union_seconds(intervals)
    # what the processes make run waited for used (Dagster's, and the run processes they reaped)
    cpu = {name: getattr(cpu_after, f"ru_{name}time") - getattr(cpu_before, f"ru_{name}time") for name in ("u", "s")}
    cpus = usable_cpus()
    print(f"make run {' '.join(shlex.split(args.make_run_args))}: {len(lives)} Dagster runs, "
          f"{len(intervals)} steps; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    if estimate:
        print(f"  its own line: {estimate}")
    print(f"wall time                          {wall:8.1f} s")
    print(f"some step computing (union)        {busy:8.1f} s")
    print(f"  of which training loops (summed) {training:8.1f} s")
    print(f"  steps' own seconds (summed)      {sum(end - start for start, end in intervals):8.1f} s")
    print(f"overhead: nothing computing        {wall - busy:8.1f} s = {(wall - busy) / wall:.0%} of the wall time")
    for part, seconds in overhead_parts(began, ended, intervals, lives).items():
        print(f"  {part:<66} {seconds:6.1f} s")
    print(f"CPU time used: {cpu['u']:.0f} s user + {cpu['s']:.0f} s system = "
          f"{(cpu['u'] + cpu['s']) / (wall * cpus):.0%} of {cpus} CPUs over the wall time")
    print("steps by step key: summed seconds (count), the slowest first")
    for step, spans in sorted(by_step.items(), key=lambda item: -sum(e - s for s, e in item[1])):
        print(f"  {step:<40} {sum(e - s for s, e in spans):8.1f} s ({len(spans)})")


if __name__ == "__main__":
    main()
