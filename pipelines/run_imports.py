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

import dagster._core.execution.api  # noqa: F401  (a run's steps, as the run worker executes them)
import dagster._grpc.impl  # noqa: F401
import mlflow  # noqa: F401
import mlflow.models  # noqa: F401
import mlflow.pyfunc  # noqa: F401
import mlflow.pytorch  # noqa: F401
import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
import torch._dynamo  # noqa: F401  (what torch.optim imports when its first optimizer is made)

try:
    import git  # noqa: F401  (MLflow records the source's commit with GitPython)
except ImportError:  # GitPython finds no git program: MLflow does without, and so does this
    pass
