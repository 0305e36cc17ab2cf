"""A training step as a torchrun job: data-parallel processes launched through Dagster Pipes.

The step (`trained_model` with `processes` > 1) saves the job (config and
tensors) to a temporary folder and runs

    python -m torch.distributed.run --standalone --nproc_per_node=N -m assets.torchrun_training JOB

under `dg.PipesSubprocessClient`. Every rank trains its slice of each global
batch (`conv_core.distributed`); rank 0 alone opens the Pipes session, so each
epoch's line reaches the step's Dagster log as it happens, and writes the
result beside the job. The step then logs that one result to its one MLflow
run, exactly as after a one-process training: one run for the whole job.
On a cluster the same command is the Job's command (deploy/k8s).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import dagster as dg
import torch

from conv_core.train import EpochStats, TrainConfig, TrainResult, train

RESULT_FILE = "result.pt"


def train_data_parallel(context: dg.AssetExecutionContext, processes: int, config: TrainConfig, mnist: dict,
                        checkpoint: Path, infinite_mode: str | None) -> TrainResult:
    """`train` over `processes` torchrun ranks; the result as one process would return it (model on the CPU)."""
    with tempfile.TemporaryDirectory(prefix="convlab-torchrun-") as folder:
        job = Path(folder) / "job.pt"
        torch.save({"config": config.as_dict(), "checkpoint": str(checkpoint), "infinite_mode": infinite_mode,
                    "normalization": mnist.get("normalization"),
                    **{k: mnist[k] for k in ("train_images", "train_labels", "validation_images",
                                             "validation_labels", "test_images", "test_labels")}}, job)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "assets.torchrun_training", str(job)]
        # One thread per rank: the ranks are the parallelism (two ranks of two threads on two cores wait on each other).
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        dg.PipesSubprocessClient().run(context=context, command=command, env=env)
        saved = torch.load(Path(folder) / RESULT_FILE, weights_only=True)
    from conv_core.models import build_model

    normalization = mnist.get("normalization")
    model = build_model(config.model, **({"normalization": tuple(normalization)} if normalization else {}))
    model.load_state_dict(saved["state_dict"])
    return TrainResult(model=model.eval(), history=[EpochStats(**h) for h in saved["history"]], config=config,
                       device=saved["device"], seconds=saved["seconds"], precision=saved["precision"])


def main(job_path: str) -> None:
    """One rank of the job: train its slices; rank 0 reports through Pipes and writes the result."""
    from assets.training import _epoch_data as epoch_data  # the step's own rule (imported here: it imports us)
    from conv_core.distributed import setup, teardown

    job = torch.load(job_path, weights_only=True)
    config = TrainConfig(**job["config"])
    world = setup(config.device)
    first = world is None or world.rank == 0
    pipes = contextlib.nullcontext()
    if first:
        from dagster_pipes import open_dagster_pipes

        pipes = open_dagster_pipes()
    try:
        with pipes as session:
            result = train(config, job["train_images"], job["train_labels"], job["validation_images"],
                           job["validation_labels"], checkpoint_path=job["checkpoint"], resume=True, threads=1,
                           world=world, normalization=job["normalization"],
                           epoch_data=epoch_data("infinite" if job["infinite_mode"] else "plain", job,
                                                 job["infinite_mode"]),
                           log=session.log.info if first else (lambda line: None))
            if first:
                torch.save({"state_dict": result.model.state_dict(), "history": [s.as_dict() for s in result.history],
                            "seconds": result.seconds, "device": result.device, "precision": result.precision,
                            "processes": world.size if world else 1}, Path(job_path).with_name(RESULT_FILE))
    finally:
        teardown()


if __name__ == "__main__":
    main(sys.argv[1])
