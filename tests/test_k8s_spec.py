"""The Kubernetes Job a training step would get from the dagster-k8s executor (no cluster needed).

Built the way the executor builds it (dagster_k8s.executor.K8sStepHandler):
the executor's settings of deploy/k8s/executor.yaml as a container context,
merged with the step's `dagster-k8s/config` op tag, rendered by
`construct_dagster_k8s_job`.
"""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg
import yaml

# What the K8sRunLauncher of Dagster's Helm chart hands every step job (the chart's names for a release
# `convlab`): where the instance's dagster.yaml is mounted from, and the database password's secret.
CHART_RUN_LAUNCHER = SimpleNamespace(job_image=None, dagster_home="/opt/dagster/dagster_home",
                                     instance_config_map="convlab-dagster-instance",
                                     postgres_password_secret="dagster-postgresql-secret")


def _step_job(op_tags: dict, step_key: str):
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    from pipelines.cluster import k8s_executor_config

    config = k8s_executor_config()
    executor_context = K8sContainerContext(
        image_pull_policy=config.get("image_pull_policy"), service_account_name=config.get("service_account_name"),
        env_vars=config.get("env_vars"),
        volume_mounts=config.get("volume_mounts"), volumes=config.get("volumes"), namespace=config.get("job_namespace"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config.get("step_k8s_config", {})))
    context = executor_context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op_tags)))
    job_config = context.get_k8s_job_config(config["job_image"], CHART_RUN_LAUNCHER)
    job = construct_dagster_k8s_job(job_config=job_config, args=["dagster", "api", "execute_step"],
                                    job_name=f"dagster-step-{step_key}", pod_name=f"dagster-step-{step_key}",
                                    component="step_worker", user_defined_k8s_config=context.run_k8s_config,
                                    labels={"dagster/op": step_key})
    return context, job.to_dict()


def _without_nulls(value):
    """The manifest as one would write it: the Kubernetes client's unset (None) fields left out."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _op_tags(asset_key: str) -> dict:
    from pipelines.cluster import k8s_defs

    return dict(k8s_defs.resolve_assets_def(asset_key).op.tags)


def test_a_training_step_pod_requests_one_gpu_with_the_deployment_image_env_and_limits():
    context, job = _step_job(_op_tags("trained_model"), "trained_model")
    pod = job["spec"]["template"]["spec"]
    print("\n" + yaml.safe_dump(_without_nulls({"metadata": job["spec"]["template"]["metadata"], "spec": pod}),
                                 sort_keys=False))
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/convlab/convlab:0.1.0"
    assert container["image_pull_policy"] == "IfNotPresent"
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["CONVLAB_PROFILE"] == "server" and env["CONVLAB_HOME"] == "/var/lib/convlab"
    assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")
    assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"  # the chart's instance, in PostgreSQL
    assert container["volume_mounts"][0]["mount_path"] == "/var/lib/convlab"
    assert pod["restart_policy"] == "Never" and pod["service_account_name"] == "convlab-dagster"
    assert context.namespace == "convlab"


def test_a_data_step_pod_gets_the_limits_but_no_gpu():
    _, job = _step_job(_op_tags("mnist"), "mnist")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    assert "nvidia.com/gpu" not in container["resources"]["requests"]


def test_the_cluster_code_locations_load_with_their_executors():
    from pipelines.cluster import celery_defs, k8s_defs

    for defs, name in ((celery_defs, "celery"), (k8s_defs, "k8s")):
        dg.Definitions.validate_loadable(defs)
        assert defs.executor.name == name
