"""How long earlier `make run`s took on this machine, so that the next one can say how long it will take.

The training estimate (conv_core.train.estimate_training_seconds) times steps
on an idle machine; a whole make run also evaluates, analyses, and shares two
CPUs among three trainings and an analysis, and on the machines measured it
took 2 to 3.5 times that estimate. What it really took is known once one make run
has finished, so each successful one appends a line to
`logs/make-run-times.jsonl` under CONVLAB_HOME, and the next one reads it back:
the same experiments and settings on the same machine give the total
directly; the same experiments on other settings (another data set, budget or
batch size) give it with its training part scaled by the training estimates.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "make-run-times.jsonl"


def history_path(home: Path) -> Path:
    return home / "logs" / FILE_NAME


def this_machine() -> str:
    """The CPU model and how many CPUs this process may use: what the times depend on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from conv_core.train import usable_cpus

    return f"{model} x{usable_cpus()}"


@dataclass(frozen=True)
class PastRun:
    machine: str
    experiments: tuple[str, ...]
    settings: dict  # the options that change the work: data, limits, schedule, precision, analyses
    training_estimate_s: float
    wall_s: float
    finished: str  # local time, "2026-12-04 21:40"
    training_wall_s: float = 0.0  # the training loops' seconds summed over the runs, over how many ran at once


@dataclass(frozen=True)
class TotalEstimate:
    seconds: float | None
    line: str


def record(home: Path, run: PastRun) -> None:
    path = history_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    cut_short = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as existing:
            existing.seek(-1, os.SEEK_END)
            cut_short = existing.read(1) != b"\n"
    with path.open("a") as out:  # after a line a killed make run left unfinished, on a line of its own
        out.write(("\n" if cut_short else "") + json.dumps({**asdict(run), "experiments": list(run.experiments)})
                  + "\n")


def past_runs(home: Path) -> list[PastRun]:
    """Every recorded run, oldest first; a line that cannot be read (a run killed mid-write) is skipped."""
    try:
        text = history_path(home).read_text()
    except (OSError, UnicodeDecodeError):  # none yet, or unreadable: no estimate, the run goes on
        return []
    runs = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            runs.append(PastRun(entry["machine"], tuple(entry["experiments"]), dict(entry["settings"]),
                                float(entry["training_estimate_s"]), float(entry["wall_s"]), str(entry["finished"]),
                                float(entry.get("training_wall_s", 0.0))))
        except (ValueError, KeyError, TypeError):
            continue
    return runs


def estimate_total(home: Path, machine: str, experiments: tuple[str, ...], settings: dict,
                   training_estimate_s: float) -> TotalEstimate:
    """The whole make run's wall time, from the latest like it that finished on this machine."""
    here = [run for run in past_runs(home) if run.machine == machine and run.experiments == experiments]
    same = [run for run in here if run.settings == settings]
    if same:
        last = same[-1]
        seconds = last.wall_s * _scale(training_estimate_s, last.training_estimate_s)
        return TotalEstimate(seconds, f"estimated total: {seconds / 60:.1f} min, from the same make run here on "
                                      f"{last.finished} ({last.wall_s / 60:.1f} min)")
    scalable = [run for run in here if run.training_estimate_s > 0]
    if scalable and training_estimate_s > 0:
        last = scalable[-1]
        seconds = scaled_total(last, training_estimate_s)
        return TotalEstimate(seconds, f"estimated total: {seconds / 60:.1f} min, its training scaled by the "
                                      f"training estimates from a make run of the same experiments on other "
                                      f"settings here on {last.finished} ({last.wall_s / 60:.1f} min for a "
                                      f"training estimate of {last.training_estimate_s / 60:.1f})")
    return TotalEstimate(None, "estimated total: known once one make run of these experiments has finished on "
                               "this machine (it is kept for the next)")


def scaled_total(then: PastRun, training_estimate_s: float) -> float:
    """`then`'s wall time with its training part grown or shrunk by the ratio of the training estimates, the rest
    (start-up, evaluation, the analyses, scheduling) kept: the analyses do not grow with the training data.
    A run recorded without its training seconds is scaled whole."""
    ratio = training_estimate_s / then.training_estimate_s
    training = min(then.training_wall_s, then.wall_s) if then.training_wall_s > 0 else then.wall_s
    return then.wall_s - training + training * ratio


def _scale(now: float, then: float) -> float:
    """The same work measured again: a busier machine at start-up shows in the step times, within reason."""
    if now <= 0 or then <= 0:
        return 1.0
    return min(max(now / then, 0.5), 2.0)


def finished_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M")
