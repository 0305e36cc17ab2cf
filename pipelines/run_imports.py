"""What a run's steps import on first use, imported once by the code server's warm helper instead.

A run process forked from the helper finds `pipelines.definitions` imported,
but its first training step still pulled in some 2,600 modules more: MLflow
with its SQLAlchemy stores, model flavour and tracing packages (MLflow is
imported where it is used, so that the lab's definitions load without it),
and torch._dynamo, which torch's optimizers import when the first one is
built (with sympy beneath it). On a 2-CPU machine that was 5-9 s of every
training run, about 23 times in a `make run`. Imported here, in the helper,
each fork gets them for free. Nothing here computes, starts a thread or
opens a file that a fork would share: these are imports only (the helper
must never start OpenMP's threads, see pipelines.code_server).
"""

from __future__ import annotations

import contextlib
import importlib

FIRST_USE_MODULES = (
    "mlflow",
    "mlflow.models",
    "mlflow.pyfunc",
    "mlflow.pytorch",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.tracking.sqlalchemy_store",
    "torch._dynamo",  # what torch.optim imports when its first optimizer is made
    "dagster._core.execution.api",  # a run's steps, as the run worker executes them
    "dagster._grpc.impl",
    "git",  # MLflow records the source's commit with GitPython
)

# Each on its own: a module missing here (GitPython without a git program, a Dagster that moved a private
# module) only leaves that one to be imported at first use, as before.
for name in FIRST_USE_MODULES:
    with contextlib.suppress(ImportError):
        importlib.import_module(name)
