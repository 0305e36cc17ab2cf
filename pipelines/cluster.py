"""The lab's Definitions on a cluster executor: steps on Celery workers, or each step a Kubernetes Job.

The same assets, checks, jobs, sensors and resources as `pipelines.definitions`;
only where a run's steps execute differs (there, in the run's own process).
Each is a code location of its own:

    dagster dev -m pipelines.cluster -a celery_defs   # steps queued on Redis, run by `dagster-celery` workers
    (Kubernetes) deploy/k8s/dagster-values.yaml serves `-m pipelines.cluster -a k8s_defs`

Workers and step pods share the run's stores: on one machine any profile, across
machines the server profile (PostgreSQL, the MLflow server) and a shared CONVLAB_HOME.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml

from pipelines.definitions import defs

CELERY_BROKER_VARIABLE = "CONVLAB_CELERY_BROKER"
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6379/0"
K8S_EXECUTOR_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "executor.yaml"


def celery_broker() -> str:
    """The broker's URL (read when the code location loads); results go back through the same Redis."""
    return os.environ.get(CELERY_BROKER_VARIABLE) or DEFAULT_CELERY_BROKER


def with_executor(executor: dg.ExecutorDefinition) -> dg.Definitions:
    return dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs, sensors=defs.sensors,
                          schedules=defs.schedules, resources=defs.resources, executor=executor)


def k8s_executor_config() -> dict:
    return yaml.safe_load(K8S_EXECUTOR_CONFIG.read_text())["execution"]["config"]


def _celery_executor() -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor

    return celery_executor.configured({"broker": celery_broker(), "backend": celery_broker()})


def _k8s_executor() -> dg.ExecutorDefinition:
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config())


celery_defs = with_executor(_celery_executor())
k8s_defs = with_executor(_k8s_executor())
