"""MLflow runs end FINISHED or FAILED, never stay RUNNING: the resource, a failing
training step materialised through Dagster, and the run-failure sensor. And what
the MLflow UI is given: the experiment's kind, a dataset input, metrics on the
logged model, analysis runs beside the training runs, the registry's champion,
and a logged model that checks what it is fed."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import torch

from conftest import TINY_MNIST, experiment_runs, tracking_client
from conv_core.experiments import Experiment
from conv_core.export import portable_model
from conv_core.models import build_model
from pipelines.resources.tracking import (
    CHAMPION_ALIAS, DAGSTER_RUN_TAG, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, MlflowTracking, flatten_params, model_id_of,
)


def test_flatten_params_dots_nested_keys_and_stringifies_values():
    flat = flatten_params({"config": {"lr": 0.004, "bf16": None, "model": "mlp"}, "versions": {"torch": "2"},
                           "seed": 0, "shape": [1, 28, 28]})
    assert flat == {"config.lr": "0.004", "config.bf16": "null", "config.model": "mlp", "versions.torch": "2",
                    "seed": "0", "shape": "[1, 28, 28]"}


def test_default_store_is_sqlite_under_convlab_home(convlab_home):
    tracking = MlflowTracking()
    assert tracking.resolved_uri() == f"sqlite:///{convlab_home / 'mlflow' / 'mlflow.db'}"
    assert tracking.artifact_location() == (convlab_home / "mlflow" / "artifacts").as_uri()


def test_start_run_ends_finished_or_failed(convlab_home):
    tracking = MlflowTracking()
    with tracking.start_run("ok", tags={"model": "mlp"}) as ok:
        ok.log_params({"config": {"epochs": 1}})
        ok.log_metrics({"train_loss": 1.0}, step=1)
    with pytest.raises(ValueError), tracking.start_run("broken") as broken:
        raise ValueError("training diverged")
    with pytest.raises(KeyboardInterrupt), tracking.start_run("interrupted") as interrupted:
        raise KeyboardInterrupt

    client = tracking_client(convlab_home)
    assert client.get_run(ok.run_id).info.status == "FINISHED"
    assert client.get_run(ok.run_id).data.params == {"config.epochs": "1"}
    assert client.get_run(broken.run_id).info.status == "FAILED"
    assert client.get_run(interrupted.run_id).info.status == "FAILED"
    experiment = client.get_experiment_by_name("convlab")
    assert experiment.artifact_location == (convlab_home / "mlflow" / "artifacts").as_uri()


def test_close_orphaned_runs_fails_only_the_dagster_runs_own(convlab_home):
    tracking = MlflowTracking()
    client = tracking.client()
    experiment = tracking.experiment_id()
    orphan = client.create_run(experiment, tags={DAGSTER_RUN_TAG: "dead-run"}).info.run_id
    finished = client.create_run(experiment, tags={DAGSTER_RUN_TAG: "dead-run"}).info.run_id
    client.set_terminated(finished, "FINISHED")
    other = client.create_run(experiment, tags={DAGSTER_RUN_TAG: "live-run"}).info.run_id

    assert tracking.close_orphaned_runs("dead-run") == [orphan]
    assert client.get_run(orphan).info.status == "FAILED"
    assert client.get_run(finished).info.status == "FINISHED"
    assert client.get_run(other).info.status == "RUNNING"
    assert tracking.close_orphaned_runs("dead-run") == []


@pytest.mark.slow
def test_failing_training_step_leaves_its_mlflow_run_failed_and_the_sensor_closes_orphans(convlab_home):
    from pipelines.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("full_pipeline")
    data = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("mnist")],
                                  run_config={"ops": {"mnist": {"config": TINY_MNIST}}})
    assert data.success

    # A learning rate this large makes the loss NaN at the second step (lr is
    # only checked to be positive and finite): conv_core raises
    # NonFiniteLossError inside the MLflow run.
    partition = "mlp.plain.s0"
    failed = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("trained_model")], partition_key=partition,
        run_config={"ops": {"trained_model": {"config": {"epochs": 1, "lr": 1e30}}}}, raise_on_error=False)
    assert not failed.success
    failures = [e for e in failed.all_events if e.is_step_failure]
    assert "NonFiniteLossError" in failures[0].step_failure_data.error.to_string()

    runs = experiment_runs(convlab_home)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FAILED"
    assert run.data.tags[DAGSTER_RUN_TAG] == failed.run_id
    assert run.data.tags["dagster.partition"] == partition
    assert run.data.params["lr"] == "1e+30"

    # A step process killed outright cannot end its run: the run-failure
    # sensor closes what the failed Dagster run left RUNNING.
    tracking = MlflowTracking()
    orphan = tracking.client().create_run(tracking.experiment_id(), tags={DAGSTER_RUN_TAG: failed.run_id})
    sensor = defs.resolve_sensor_def("report_failed_runs")
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=failed.get_run_failure_event(), dagster_instance=instance,
        dagster_run=failed.dagster_run, resources={"mlflow_tracking": tracking},
    ).for_run_failure()
    sensor(context)
    assert tracking.client().get_run(orphan.info.run_id).info.status == "FAILED"


def test_experiment_is_of_the_machine_learning_kind_even_when_made_before(convlab_home):
    tracking = MlflowTracking()
    client = tracking.client()
    made_earlier = client.create_experiment("older", artifact_location=tracking.artifact_location())
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(made_earlier).tags

    fresh = client.get_experiment(tracking.experiment_id())
    assert fresh.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    assert MlflowTracking(experiment_name="older").experiment_id() == made_earlier
    assert client.get_experiment(made_earlier).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_dataset_input_carries_name_digest_context_and_split_sizes(convlab_home):
    tracking = MlflowTracking()
    sha256 = "0123456789abcdef" * 4
    with tracking.start_run("with data") as run:
        ref = run.log_dataset("mnist-sample", sha256, source={"source": "sample"},
                              profile={"splits": {"train": 360, "validation": 40, "test": 200}})
    (logged,) = tracking.client().get_run(run.run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == (ref.name, ref.digest) == ("mnist-sample", sha256[:36])
    assert {tag.key: tag.value for tag in logged.tags} == {"mlflow.data.context": "training"}
    assert json.loads(logged.dataset.profile)["splits"] == {"train": 360, "validation": 40, "test": 200}
    assert json.loads(logged.dataset.source) == {"source": "sample"}


def _train_run_with_model(tracking: MlflowTracking, partition: str, validation_accuracy: float):
    """A training run with a (random-weight) logged model and its final metrics."""
    torch.manual_seed(0)
    experiment = Experiment.parse(partition)
    with tracking.training_run(experiment, "dagster-run", {"model": experiment.model}) as run:
        dataset = run.log_dataset("mnist-sample", "ab" * 32, source={"source": "sample"}, profile={})
        run.log_metrics({"validation_accuracy": validation_accuracy - 0.1}, step=1)
        run.log_metrics({"validation_accuracy": validation_accuracy}, step=2)
        run.log_metrics({"test_accuracy": 0.5}, step=2)
        model_uri = run.log_model(portable_model(build_model(experiment.model).eval()),
                                  input_example=torch.rand(2, 1, 28, 28).numpy())
        run.link_metrics_to_model(model_uri, ("validation_accuracy", "test_accuracy"), dataset)
    return run, model_uri


def test_logged_model_shows_final_metrics_and_run_history_gains_none(convlab_home):
    tracking = MlflowTracking()
    run, model_uri = _train_run_with_model(tracking, "mlp.plain.s0", 0.8)
    client = tracking.client()
    model_metrics = {m.key: m for m in client.get_logged_model(model_id_of(model_uri)).metrics}
    assert {k: m.value for k, m in model_metrics.items()} == {"validation_accuracy": 0.8, "test_accuracy": 0.5}
    assert model_metrics["validation_accuracy"].dataset_name == "mnist-sample"
    history = client.get_metric_history(run.run_id, "validation_accuracy")
    assert sorted((m.step, m.value) for m in history) == [(1, pytest.approx(0.7)), (2, 0.8)]


def test_champion_is_the_best_by_validation_accuracy_and_loads_as_documented(convlab_home):
    import mlflow

    tracking = MlflowTracking()
    first, first_uri = _train_run_with_model(tracking, "mlp.plain.s0", 0.8)
    second, second_uri = _train_run_with_model(tracking, "mlp.shifted.s0", 0.9)
    assert tracking.offer_champion("mlp", first_uri, first.run_id, 0.8, "data-a").promoted
    worse = tracking.offer_champion("mlp", first_uri, first.run_id, 0.75, "data-a")
    assert not worse.promoted and worse.champion_validation_accuracy == 0.8
    better = tracking.offer_champion("mlp", second_uri, second.run_id, 0.9, "data-a")
    assert better.promoted and better.uri == "models:/mlp@champion"
    client = tracking.client()
    assert client.get_model_version_by_alias("mlp", CHAMPION_ALIAS).run_id == second.run_id
    # On other data the champion's score says nothing: the newer model takes over, even with a lower one.
    assert tracking.offer_champion("mlp", first_uri, first.run_id, 0.5, "data-b").promoted
    assert client.get_model_version_by_alias("mlp", CHAMPION_ALIAS).run_id == first.run_id

    mlflow.set_tracking_uri(tracking.resolved_uri())
    model = mlflow.pytorch.load_model("models:/mlp@champion")
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(3, 28, 28)).shape == (3, 10)


def test_analysis_run_is_nested_under_what_it_explains_and_never_left_running(convlab_home):
    tracking = MlflowTracking()
    with tracking.start_run("seed_cnn/plain/s0") as cnn, tracking.start_run("mlp/plain/s0") as mlp:
        pass
    client = tracking.client()

    single = tracking.analysis_run("filter_figures", [cnn.run_id], "dagster-run")
    assert client.get_run(single.run_id).info.status == "FINISHED"  # nothing written yet, nothing left open
    single.log_metrics({"dh1_dx_minus_filter_max_abs": 0.0})
    logged = client.get_run(single.run_id)
    assert logged.info.run_name == "filter_figures of seed_cnn/plain/s0"
    assert logged.info.status == "FINISHED"
    assert logged.data.tags["mlflow.parentRunId"] == cnn.run_id
    assert logged.data.tags["convlab.kind"] == "analysis"
    assert logged.data.metrics == {"dh1_dx_minus_filter_max_abs": 0.0}
    assert client.get_run(cnn.run_id).data.metrics == {}  # the training run gains nothing

    both = tracking.analysis_run("representation_distances", [cnn.run_id, mlp.run_id])
    tags = client.get_run(both.run_id).data.tags
    assert json.loads(tags["convlab.explains"]) == [cnn.run_id, mlp.run_id]
    assert "mlflow.parentRunId" not in tags  # one parent only: it stands on its own
    with pytest.raises(Exception):
        both.log_text("x", "../outside.txt")  # MLflow refuses paths out of the run's artifacts
    assert client.get_run(both.run_id).info.status == "FAILED"


ACCEPTED_SHAPES = [(5, 28, 28), (5, 1, 28, 28), (0, 1, 28, 28)]
REFUSED_SHAPES = [(28, 28), (5, 28, 28, 1), (5, 3, 28, 28), (5, 1, 32, 32), (1, 1, 1, 28, 28)]


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return portable_model(build_model("seed_cnn").eval())


@pytest.mark.parametrize("shape", ACCEPTED_SHAPES)
def test_logged_classifier_accepts_batches_with_or_without_the_channel_axis(classifier, shape):
    images = torch.rand(shape)
    with torch.no_grad():
        logits = classifier(images)
        assert logits.shape == (shape[0], 10)
        if shape[0]:
            assert torch.equal(logits, classifier(images.reshape(shape[0], 28, 28)))
    assert classifier(torch.zeros(2, 28, 28)).shape == (2, 10)  # the bounds themselves are in range
    assert classifier(torch.ones(2, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("shape", REFUSED_SHAPES)
def test_logged_classifier_names_the_shapes_it_takes(classifier, shape):
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 28, 28\) or \(N, 1, 28, 28\)"):
        classifier(torch.rand(shape))


@pytest.mark.parametrize("images", [torch.rand(2, 28, 28) * 255, torch.rand(2, 28, 28) - 0.5,
                                    torch.full((2, 28, 28), 1.0001)], ids=["0-255", "negative", "just-above-1"])
def test_logged_classifier_refuses_pixels_outside_0_1_and_says_divide_by_255(classifier, images):
    with pytest.raises(ValueError, match=r"pixel values must lie in \[0, 1\].*divide 0-255 images by 255"):
        classifier(images)


def test_logged_classifier_refuses_integer_and_non_finite_pixels(classifier):
    with pytest.raises(ValueError, match=r"float pixels in \[0, 1\].*images.float\(\) / 255"):
        classifier(torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8))
    with pytest.raises(ValueError, match="finite"):
        classifier(torch.full((2, 28, 28), float("nan")))
